# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout: observe hosts and balancer, plan (service/plan.py), and apply the plan as one
transaction (service/transaction.py): under the service's lock, after undoing an interrupted run and
reconciling the balancer, journaled, reverted on failure, recorded in the ledger."""

from __future__ import annotations

import re
import uuid
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.trust import TRUST_OPTION, require_trusted
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import BALANCER_OPTIONS, make_balancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import ImageProvenance, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import prefetch_git_state
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_hosts import DockerHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import (
    FLEET_ARGUMENT_SPEC,
    Fleet,
    find_image,
    open_fleet,
    require_fleet_verified,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.attestations import require_trusted_disk
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.task import VM_OPTIONS, check_kind, open_vm_hosts
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.backends import HostsManager
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import recently_live_generations
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.service_record import keep_service_record
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service import unmanaged
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostBackend, Placed
from ansible_collections.immutable.infra.plugins.plugin_utils.service.capacity import check_amount
from ansible_collections.immutable.infra.plugins.plugin_utils.service.health import HEALTH_OPTIONS, HealthCheck
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import unfinished_work
from ansible_collections.immutable.infra.plugins.plugin_utils.service.membership import Observation
from ansible_collections.immutable.infra.plugins.plugin_utils.service.options import SWAP_OPTIONS, check_swap_options
from ansible_collections.immutable.infra.plugins.plugin_utils.service.reconcile import plan_repair
from ansible_collections.immutable.infra.plugins.plugin_utils.service.record import require_balancer_known
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec, validate_service
from ansible_collections.immutable.infra.plugins.plugin_utils.service.steps import HostSteps
from ansible_collections.immutable.infra.plugins.plugin_utils.service.transaction import Change, Transaction
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import require_verified

CONTAINER_OPTIONS: dict[str, Any] = {
    "env": {"type": "dict", "default": {}},
    "read_only": {"type": "bool", "default": False},
    "cap_drop": {"type": "list", "elements": "str", "default": []},
    "memory": {"type": "str"},
    "networks": {"type": "list", "elements": "str", "default": []},
    "restart_policy": {"type": "str", "default": "unless-stopped",
                       "choices": ["no", "on-failure", "always", "unless-stopped"]},
    "labels": {"type": "dict", "default": {}},
}

ROLLOUT_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str", "required": True},
    "image": {"type": "str"},
    "disk": {"type": "str"},
    "replicas": {"type": "int", "required": True},
    "strategy": {"type": "str", "default": "rolling", "choices": list(rp.STRATEGIES)},
    "batch_size": {"type": "int"},
    "max_surge": {"type": "raw"},
    "max_unavailable": {"type": "raw", "default": 0},
    "canary": {"type": "dict", "default": {}, "options": {
        "replicas": {"type": "int", "default": 1},
        "seconds": {"type": "float", "default": 10},
    }},
    "port": {"type": "int", "required": True},
    "health": {"type": "dict", "default": {}, "options": HEALTH_OPTIONS},
    "balancer": {"type": "dict", "options": BALANCER_OPTIONS},
    "require_verified": {"type": "bool", "default": True},
    "trust": TRUST_OPTION,
    "keep_previous": {"type": "int", "default": 1},
    "container": {"type": "dict", "default": {}, "options": CONTAINER_OPTIONS},
    "vm": {"type": "dict", "default": {}, "options": VM_OPTIONS},
    **SWAP_OPTIONS,
    **FLEET_ARGUMENT_SPEC,
}


# Far beyond any real use, low enough that no plan, sleep or timestamp overflows.
LIMITS = {"replicas": 1000, "batch_size": 1000, "max_surge": 1000, "max_unavailable": 1000, "keep_previous": 100}
CANARY_LIMITS = {"replicas": 1000, "seconds": 86400}
MEMORY_PATTERN = re.compile(r"^[0-9]+[bkmgBKMG]?$")
NETWORK_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_limits(params: dict[str, Any]) -> None:
    """Refuses numbers beyond LIMITS and container settings the engine would refuse only mid-rollout."""
    check_swap_options(params)
    for name, limit in LIMITS.items():
        value = params.get(name)
        if isinstance(value, int) and value > limit:
            raise InfraError(f"{name} is {value}; at most {limit} is taken.")
    for name, limit in CANARY_LIMITS.items():
        value = (params.get("canary") or {}).get(name)
        if value is not None and value > limit:
            raise InfraError(f"canary.{name} is {value}; at most {limit} is taken.")
    container = params.get("container") or {}
    if container.get("memory") and not MEMORY_PATTERN.match(container["memory"]):
        raise InfraError(f"container.memory {container['memory']!r} is not a size such as 512m or 2g.")
    for network in container.get("networks") or []:
        if not NETWORK_PATTERN.match(network):
            raise InfraError(f"container.networks entry {network!r} is not a Docker network name.")


def refuse_container_settings(params: dict[str, Any]) -> None:
    """VM hosts are made from their disk and vm settings: container settings would be dropped unseen."""
    container = params.get("container") or {}
    given = [f"container.{name}" for name, option in CONTAINER_OPTIONS.items()
             if container.get(name) not in (option.get("default"), None)]
    given += [name for name in ("registry", "image_transfer")
              if params.get(name) not in (FLEET_ARGUMENT_SPEC[name].get("default"), None)]
    if given:
        raise InfraError(f"{', '.join(given)}: settings of containers (image:), which VM hosts (disk:) do not take "
                         f"(theirs come from vm); drop {'it' if len(given) == 1 else 'them'}.")


class Rollout(HostsManager):
    record_options = ("engines", "docker_host", "balancer", "addressing")

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        params = self.params
        self.service = validate_service(params["service"])
        if bool(params.get("image")) == bool(params.get("disk")):
            raise InfraError("Give the artifact to roll out: image (containers) or disk (VM hosts), one of them.")
        check_kind(params, self.engines)
        if self.on_vms:
            refuse_container_settings(params)
        if not 0 < params["port"] < 65536:
            raise InfraError(f"port must be between 1 and 65535, got {params['port']}.")
        check_limits(params)
        HealthCheck.from_options(params["health"], params["port"])  # refuses a bad health spec early
        self.desired_settings = dict(
            service=self.service, replicas=params["replicas"], strategy=params["strategy"],
            batch_size=params["batch_size"],
            max_surge=None if params["max_surge"] is None else check_amount("max_surge", params["max_surge"]),
            max_unavailable=check_amount("max_unavailable", params["max_unavailable"]),
            canary_replicas=params["canary"]["replicas"], canary_seconds=params["canary"]["seconds"],
            keep_previous=params["keep_previous"])
        rp.validate(rp.Desired(spec_hash="", **self.desired_settings))
        self.rollout_id = uuid.uuid4().hex[:12]
        prefetch_git_state(context.basedir)  # for the ledger record, while the engines are reached
        self.balancer = make_balancer(params["balancer"])
        self.record_fields: dict[str, Any] = {}
        self.down_at_start: dict[str, str] = {}  # engines down when the run began, whose share went to the others

    def open_backend(self) -> tuple[HostBackend, HostSpec]:
        """The hosts' back-end and the spec of the hosts to make, from the gated artifact."""
        if self.on_vms:
            backend, spec = open_vm_hosts(self.params, self.engines, self.service, self.context.basedir, self.progress)
            self.down_at_start = dict(backend.fleet.down)
            self.record_fields.update(disk=backend.artifact.path if backend.artifact else None,
                                      **require_trusted_disk(backend.stores(), backend.artifact, self.params["trust"],
                                                             self.context.basedir))
            return backend, spec
        fleet = open_fleet(self.params, self.engines, self.reach())
        self.down_at_start = dict(fleet.down)
        image = self._gated_image(fleet)
        self.record_fields.update(require_trusted(fleet.sources(), self.params["image"], image, self.params["trust"],
                                                  self.context.basedir))
        spec = HostSpec(self.service, image["Id"], self.params["port"], self.params["container"],
                        self.params["health"], ImageProvenance.from_labels(image_labels(image)).inputs_hash or "")
        return DockerHosts(fleet, self.service, spec.image_id, self.progress), spec

    def run(self) -> dict[str, Any]:
        backend, spec = self.open_backend()
        coordinator = backend.engine_names[0]
        backend.check_settings(spec)
        self.balancer.check()
        steps = HostSteps(backend, self.balancer, spec, backend.store(), self.progress, self.params["drain_timeout"],
                          self.params["stop_timeout"])
        steps.unlisted = sorted(self.down_at_start)  # their share goes to the others (place_down_share)
        tx = Transaction(steps, backend.store(), self.ledger(), self.context.basedir, self.params["lock_timeout"],
                         self.rollout_id)
        desired = rp.Desired(spec_hash=spec.spec_hash, **self.desired_settings)
        try:
            observation = steps.observe()
            require_balancer_known(self.service, self.balancer.tracks_membership,
                                   [host.labels for host in backend.hosts()])
            plan, placed = planned(backend, observation, desired)
            shipping = backend.plan_prepare(spec.image_id, [*placed.engines.values(), coordinator] if plan.changed else [])
            repair = plan_repair(observation.hosts, observation.exited())
            recorded = keep_service_record(backend.record_stores(), self.service, self.params, tx.ledger,
                                           self.context.basedir, check_mode=self.context.check_mode)
            if self.context.check_mode or not (plan.changed or observation.stale_servers or repair.steps
                                               or unfinished_work(tx.store, self.service)):
                # What a run would do first: repair the balancer, undo a run that did not finish (its journal).
                first = self.context.check_mode and (bool(repair.steps) or unfinished_work(tx.store, self.service))
                result = self._result(tx, plan, changed=plan.changed or first or bool(observation.stale_servers or recorded),
                                      placed=placed, shipping=shipping, observation=observation, recorded=recorded)
                if first:
                    result["msg"] += "; a run first repairs the balancer or undoes a run that did not finish"
                return result
            # Before the lock, which is a container made from the image on the coordinator: an image on an
            # engine changes nothing that runs, and a registry that is down stops the run before any change.
            backend.prepare(spec.image_id, list(placed.engines.values()) + [coordinator]
                            if plan.changed else [coordinator])
            with tx.locked():
                return self._locked_run(tx, backend, desired, recorded)
        finally:
            steps.close()

    def _gated_image(self, fleet: Fleet) -> dict[str, Any]:
        """The image's inspect data, refused unless its verdict passes (on its engine, or on the fleet's)."""
        if fleet.single:
            return require_verified(fleet.coordinator, self.params["image"], self.params["require_verified"])
        image = find_image(fleet, self.params["image"])
        if self.params["require_verified"]:
            require_fleet_verified(fleet, self.params["image"], image["Id"])
        return image

    def _locked_run(self, tx: Transaction, backend: HostBackend, desired: rp.Desired,
                    recorded: dict[str, Any]) -> dict[str, Any]:
        recovered = tx.recover()
        reconciled = tx.reconcile()
        observation = tx.observe()
        plan, placed = planned(backend, observation, desired,
                               recently_live_generations(tx.ledger.records(kind="rollout", service=self.service)
                                                         if tx.ledger else []))
        if not plan.changed:
            return self._result(tx, plan, changed=bool(recovered or reconciled or observation.stale_servers or recorded),
                                recovered=recovered, reconciled=reconciled, observation=observation, recorded=recorded)
        tx.steps.placement = dict(placed.engines)
        backend.prepare(tx.steps.spec.image_id, list(placed.engines.values()))
        spec = tx.steps.spec
        where = f" on {placed.counts_text()}" if placed.summary and backend.several else ""
        self.progress(f"{self.service}: {plan.kind} to generation {plan.generation} from {short_id(spec.image_id)} "
                      f"({self.params['strategy']}; {plan.reason}); {len(plan.steps)} steps{where}")
        engine_fields = {"engines": backend.engine_names, "placement": placed.engines} if backend.several else {}
        if self.down_at_start:
            engine_fields["unmanaged"] = self._unmanaged(tx, observation)
        if tx.ledger:
            tx.record = tx.ledger.new_record(
                "rollout", self.context.basedir, rollout=self.rollout_id, service=self.service,
                image_id=spec.image_id, inputs_hash=spec.inputs_hash, generation=plan.generation,
                kind_of_change=plan.kind, strategy=self.params["strategy"], replicas=self.params["replicas"],
                port=spec.port, live_before=plan.live_before, balancer=self.balancer.describe() or None,
                **engine_fields, **self.record_fields)
        tx.apply(Change(
            title=f"Rollout of {self.service} to generation {plan.generation}", activity="rollout",
            label=f"gen {plan.generation}", steps=plan.steps, records=observation.records,
            previous_live=plan.live_before, new_hosts=plan.new_hosts, live_after=plan.live_after,
            restored=plan.kind == "restore", placement=placed.engines if backend.several else None,
            generation=plan.generation))
        tx.succeed(added=plan.new_hosts, removed=plan.retired, live=plan.live_after)
        left, warning = retire_old_generations(tx, plan)
        result = self._result(tx, plan, changed=True, recovered=recovered, reconciled=reconciled,
                              stopping=sorted(tx.steps.stops.still_stopping), placed=placed, observation=observation,
                              recorded=recorded)
        if warning:
            result.update(deleted=[name for name in plan.removed if name not in left], warnings=[warning])
        return result

    def _result(self, tx: Transaction, plan: rp.Plan, changed: bool, recovered: str | None = None,
                stopping: list[str] | None = None, reconciled: dict[str, list[str]] | None = None,
                placed: Placed | None = None, shipping: dict[str, Any] | None = None,
                observation: Observation | None = None, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "changed": changed, "service": self.service, "generation": plan.generation,
            "image_id": tx.steps.spec.image_id, "kind": plan.kind, "reason": plan.reason, "added": plan.new_hosts,
            "removed": plan.retired, "deleted": plan.removed, "live": plan.live_after, "live_before": plan.live_before,
            "plan": [step.as_dict() for step in plan.steps], "duration": tx.duration(),
            "rollout_id": self.rollout_id, "stopping": stopping or [],
        }
        if plan.capacity:
            result["capacity"] = plan.capacity.as_dict()
        if recovered:
            result["recovered"] = recovered
        if reconciled:
            result["reconciled"] = reconciled
        if recorded:
            result["service_record"] = recorded
        if tx.backend.several:
            result.update(self._engine_result(tx, plan, placed or Placed(), shipping, observation))
        if self.down_at_start:
            result["unmanaged"] = self._unmanaged(tx, observation)
        if self.context.diff_mode:
            result["diff"] = {"before": "".join(f"{name}\n" for name in plan.live_before),
                              "after": "".join(f"{name}\n" for name in plan.live_after),
                              "before_header": f"{self.service} live hosts", "after_header": f"{self.service} live hosts"}
        verb = "would " if self.context.check_mode and plan.changed else ""
        result["msg"] = (f"{self.service}: {verb}{plan.kind} to generation {plan.generation} "
                         f"({len(plan.new_hosts)} added, {len(plan.retired)} removed)" if plan.changed
                         else f"{self.service}: generation {plan.generation} is live and up to date")
        return result

    def _unmanaged(self, tx: Transaction, observation: Observation | None) -> dict[str, Any]:
        """The hosts on engines down at the start that this run cannot manage (service/unmanaged.py)."""
        known = unmanaged.last_known_engines(tx.ledger.records(kind="rollout"), self.service) if tx.ledger else {}
        return unmanaged.report(self.down_at_start, known, observation.unmanaged_servers if observation else [])

    def _engine_result(self, tx: Transaction, plan: rp.Plan, placed: Placed, shipping: dict[str, Any] | None,
                       observation: Observation | None) -> dict[str, Any]:
        """Where each host runs (or will), per engine, and how the image got (or gets) there."""
        engine_of = {host.name: host.engine for host in observation.hosts} if observation else {}
        engine_of.update(placed.engines)
        hosts = {name: engine_of.get(name) for name in plan.live_after}
        steps = [dict(step, engines=[engine_of.get(name) for name in step["hosts"]])
                 for step in (step.as_dict() for step in plan.steps)]
        return {**tx.backend.describe(), "hosts": hosts, "placement": placed.summary, "plan": steps,
                "shipping": tx.backend.shipped or shipping}


def planned(backend: HostBackend, observation: Observation, desired: rp.Desired,
            recently_live: list[int] | None = None) -> tuple[rp.Plan, Placed]:
    """The plan and where its new hosts go. Placement needs the plan's hosts; the plan's batches need
    their engines (each batch takes hosts from every engine, percentages are per engine): planned again
    once placed, with the same hosts."""
    plan = rp.plan_rollout(observation.hosts, desired, recently_live or [])
    placed = backend.place(plan, observation.hosts)
    if plan.changed and placed.engines:
        plan = rp.plan_rollout(observation.hosts, desired, recently_live or [], placement=placed.engines)
    return plan, placed


def retire_old_generations(tx: Transaction, plan: rp.Plan) -> tuple[list[str], str | None]:
    """Removes the hosts of generations beyond keep_previous once a rollout has succeeded (its journal is gone
    by then, so a failure here cannot make the next run undo the rollout). Removing them changes nothing live:
    a failure is a warning, not a failed rollout. Returns the hosts left and the warning."""
    live = set(plan.live_after)
    observation = tx.steps.observe()
    doomed = [name for name in plan.removed if name in observation.records and name not in live]
    if not doomed:
        return [], None
    tx.progress(f"{tx.service}: removing hosts beyond keep_previous: {', '.join(doomed)}")
    try:
        tx.steps.apply([rp.Step(rp.REMOVE, tuple(doomed))], observation.records, "retention")
    except InfraError as error:
        left = [name for name in doomed if name in tx.steps.observe().records]
        warning = (f"generation {plan.generation} of {tx.service} is live, but {', '.join(left) or 'some hosts'} "
                   f"beyond keep_previous could not be removed ({error.message}); they stay stopped, and the next "
                   "rollout removes them.")
        tx.progress(f"{tx.service}: {warning}")
        return left, warning
    return [], None
