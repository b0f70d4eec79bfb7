# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout: observe hosts and balancer, plan (rollout_plan), apply step by step, revert on failure."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.trust import TRUST_OPTION, require_trusted
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.adapter import BALANCER_OPTIONS, make_balancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import EngineUnreachable
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible, never_interrupted
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import ImageProvenance, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.task import TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.placement import Placement
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import ShipPlan
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.task import FleetManager
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.fleet_engines import (
    FLEET_ARGUMENT_SPEC,
    Fleet,
    find_image,
    open_fleet,
    place_hosts,
    plan_ship,
    require_fleet_verified,
    ship,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.health import HEALTH_OPTIONS, HealthCheck, run_for_each
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.hosts import (
    HostSpec,
    Observation,
    ServiceHosts,
    validate_service,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.lock import (
    Journal,
    LockLost,
    ServiceLock,
    unfinished_work,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.reconcile import plan_repair
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import recently_live_generations
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import require_verified

CONTAINER_OPTIONS = {
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
    "image": {"type": "str", "required": True},
    "replicas": {"type": "int", "required": True},
    "strategy": {"type": "str", "default": "rolling", "choices": list(rp.STRATEGIES)},
    "batch_size": {"type": "int", "default": 1},
    "max_surge": {"type": "int"},
    "max_unavailable": {"type": "int", "default": 0},
    "canary": {"type": "dict", "default": {}, "options": {
        "replicas": {"type": "int", "default": 1},
        "seconds": {"type": "float", "default": 10},
    }},
    "port": {"type": "int", "required": True},
    "health": {"type": "dict", "default": {}, "options": HEALTH_OPTIONS},
    "drain_timeout": {"type": "float", "default": 30},
    "stop_timeout": {"type": "int", "default": 10},
    "balancer": {"type": "dict", "options": BALANCER_OPTIONS},
    "require_verified": {"type": "bool", "default": True},
    "trust": TRUST_OPTION,
    "keep_previous": {"type": "int", "default": 1},
    "container": {"type": "dict", "default": {}, "options": CONTAINER_OPTIONS},
    "lock_timeout": {"type": "int", "default": 60},
    **FLEET_ARGUMENT_SPEC,
}


# Far beyond any real use, low enough that no plan, sleep or timestamp overflows.
LIMITS = {"replicas": 1000, "batch_size": 1000, "max_surge": 1000, "max_unavailable": 1000,
          "keep_previous": 100, "drain_timeout": 86400, "stop_timeout": 3600, "lock_timeout": 7 * 86400}
CANARY_LIMITS = {"replicas": 1000, "seconds": 86400}
MEMORY_PATTERN = re.compile(r"^[0-9]+[bkmgBKMG]?$")
NETWORK_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_limits(params: dict[str, Any]) -> None:
    """Refuses numbers beyond LIMITS and container settings the engine would refuse only mid-rollout."""
    for name, limit in LIMITS.items():
        if name in params and params[name] is not None and params[name] > limit:
            raise InfraError(f"{name} is {params[name]}; at most {limit} is taken.")
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


class Rollout(FleetManager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.service = validate_service(params["service"])
        if not 0 < params["port"] < 65536:
            raise InfraError(f"port must be between 1 and 65535, got {params['port']}.")
        if params["drain_timeout"] < 0 or params["stop_timeout"] < 0 or params["lock_timeout"] <= 0:
            raise InfraError("drain_timeout and stop_timeout cannot be negative, and lock_timeout must be positive.")
        check_limits(params)
        HealthCheck.from_options(params["health"], params["port"])  # refuses a bad health spec early
        self.desired_settings = dict(
            service=self.service, replicas=params["replicas"], strategy=params["strategy"],
            batch_size=params["batch_size"], max_surge=params["max_surge"], max_unavailable=params["max_unavailable"],
            canary_replicas=params["canary"]["replicas"], canary_seconds=params["canary"]["seconds"],
            keep_previous=params["keep_previous"])
        rp.validate(rp.Desired(spec_hash="", **self.desired_settings))
        self.rollout_id = uuid.uuid4().hex[:12]
        self.balancer = make_balancer(params["balancer"])
        self.record_fields: dict[str, Any] = {}
        self.fleet = Fleet([], {})
        self.shipped: dict[str, Any] | None = None

    # run ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        fleet = self.fleet = open_fleet(self.params, self.engines, self.reach())
        image = self._gated_image(fleet)
        self.record_fields.update(require_trusted(fleet.sources(), self.params["image"], image, self.params["trust"],
                                                  self.context.basedir))
        for network in self.params["container"]["networks"]:
            for name, client in fleet.clients.items():
                if not client.network_exists(network):
                    where = f" on engine {name}" if not fleet.single else ""
                    raise InfraError(f"The Docker network {network} (container.networks) does not exist{where}; "
                                     "create it first, or leave it out to use the engine's default bridge.")
        provenance = ImageProvenance.from_labels(image_labels(image))
        self.balancer.check()
        spec = HostSpec(self.service, image["Id"], self.params["port"], self.params["container"],
                        self.params["health"], provenance.inputs_hash or "")
        coordinator = fleet.coordinator
        hosts = ServiceHosts(fleet.clients, self.balancer, spec, self.progress, self.params["drain_timeout"],
                             self.params["stop_timeout"], **fleet.host_endpoints())
        hosts.down.update(fleet.down)
        hosts.rollout_id = self.rollout_id
        desired = rp.Desired(spec_hash=spec.spec_hash, **self.desired_settings)
        journal = Journal(coordinator, self.service)
        try:
            observation = hosts.observe()
            plan = rp.plan_rollout(observation.hosts, desired)
            placed, placement = place_hosts(fleet, plan, observation)
            shipping = plan_ship(fleet, spec.image_id, [*placed.values(), fleet.coordinator_name]
                                 if plan.changed else [])
            repair = plan_repair(observation.hosts, exited_hosts(observation))
            if self.context.check_mode or not (plan.changed or observation.stale_servers or repair.steps
                                               or unfinished_work(coordinator, self.service)):
                return self._result(plan, spec, started, changed=plan.changed or bool(observation.stale_servers),
                                    placed=placed, placement=placement, shipping=shipping, observation=observation)
            # Before the lock, which is a container made from the image on the coordinator: an image on an
            # engine changes nothing that runs, and a registry that is down stops the run before any change.
            self.shipped = ship(fleet, shipping if plan.changed else plan_ship(fleet, spec.image_id,
                                                                               [fleet.coordinator_name]),
                                self.progress)
            lock = ServiceLock(coordinator, self.service, spec.image_id, self.rollout_id, self.params["lock_timeout"],
                               self.progress)
            lock.acquire()
            try:
                return self._locked_run(hosts, desired, journal, started, lock)
            finally:
                lock.release()
        finally:
            hosts.close()

    def _gated_image(self, fleet: Fleet) -> dict[str, Any]:
        """The image's inspect data, refused unless its verdict passes (on its engine, or on the fleet's)."""
        if fleet.single:
            return require_verified(fleet.coordinator, self.params["image"], self.params["require_verified"])
        image = find_image(fleet, self.params["image"])
        if self.params["require_verified"]:
            require_fleet_verified(fleet, self.params["image"], image["Id"])
        return image

    def _locked_run(self, hosts: ServiceHosts, desired: rp.Desired, journal: Journal, started: float,
                    lock: ServiceLock) -> dict[str, Any]:
        recovered = recover_interrupted(hosts, journal)
        ledger = self.ledger()
        reconciled = reconcile(hosts, ledger, self.context.basedir)
        observation = hosts.observe()
        hosts.settle_stops(observation)
        hosts.detach_stale(observation)
        plan = rp.plan_rollout(observation.hosts, desired,
                               recently_live_generations(ledger.records(kind="rollout", service=self.service)))
        if not plan.changed:
            return self._result(plan, hosts.spec, started,
                                changed=bool(recovered or reconciled or observation.stale_servers),
                                recovered=recovered, reconciled=reconciled, observation=observation)
        fleet = self.fleet
        placed, placement = place_hosts(fleet, plan, observation)
        hosts.placement = dict(placed)
        shipped = ship(fleet, plan_ship(fleet, hosts.spec.image_id, list(placed.values())), self.progress)
        self.shipped = self.shipped if shipped is None or shipped["method"] == "none" else shipped
        hosts.generation = plan.generation
        where = (f" on {', '.join(f'{name} {count}' for name, count in placement.counts.items())}"
                 if placement and not fleet.single else "")
        self.progress(f"{self.service}: {plan.kind} to generation {plan.generation} from "
                      f"{short_id(hosts.spec.image_id)} ({self.params['strategy']}; {plan.reason}); "
                      f"{len(plan.steps)} steps{where}")
        engine_fields = {} if fleet.single else {"engines": [engine.name for engine in fleet.engines],
                                                 "placement": placed}
        record = ledger.new_record(
            "rollout", self.context.basedir, rollout=self.rollout_id, service=self.service,
            image_id=hosts.spec.image_id, inputs_hash=hosts.spec.inputs_hash, generation=plan.generation,
            kind_of_change=plan.kind, strategy=self.params["strategy"], replicas=self.params["replicas"],
            port=hosts.spec.port, live_before=plan.live_before, **engine_fields, **self.record_fields)
        journal.write(self.rollout_id, plan.live_before, plan.new_hosts, hosts.spec.image_id,
                      restored=plan.kind == "restore", stop_timeout=hosts.stop_timeout,
                      placement=None if fleet.single else placed)
        # Ctrl-C (or SIGTERM) reaches this action through ansible-playbook, which exits without waiting
        # for it. It stops the rollout at the next step or health check, and the fleet is reverted like
        # after any failure; once the last batch is in, the rollout finishes instead.
        with interruptible(f"rollout of {self.service}", deferred=True) as guard:
            def interrupted() -> None:
                guard.check()
                lock.check()
            hosts.before_stop = journal.note_stopping
            try:
                hosts.apply(plan.steps, observation.records, f"gen {plan.generation}", interrupted=interrupted)
                # What the world changed meanwhile (an HAProxy reloaded without its servers) is repaired,
                # not taken for a failed rollout.
                reconcile(hosts, ledger, self.context.basedir)
                hosts.ensure_membership(plan.live_after, f"rollout of {self.service}")
            except InfraError as error:
                self._fail(hosts, error, plan, journal, ledger, record, started, lock)
            finally:
                hosts.before_stop = None
            lock.check()
            retire_old_generations(hosts, plan)
            journal.clear()
            ledger.append(dict(record, result="succeeded", added=plan.new_hosts, removed=plan.retired,
                               live=plan.live_after, finished=utc_timestamp(),
                               duration=round(time.monotonic() - started, 3), **stopping_fields(hosts)))
        return self._result(plan, hosts.spec, started, changed=True, recovered=recovered, reconciled=reconciled,
                            stopping=sorted(hosts.still_stopping), placed=placed, placement=placement,
                            observation=observation)

    def _fail(self, hosts: ServiceHosts, error: InfraError, plan: rp.Plan, journal: Journal, ledger: Ledger,
              record: dict[str, Any], started: float, lock: ServiceLock) -> None:
        if isinstance(error, EngineUnreachable) and hosts.multi_engine:
            lost = hosts.mark_unreachable(error)
            if lost:
                self._revert_the_others(hosts, error, lost, plan, ledger, record, started, lock)
        if isinstance(error, (LockLost, EngineUnreachable)):
            self._abandon(hosts, error, plan, ledger, record, started)
        self.progress(f"{self.service}: {error.message} Reverting to {', '.join(plan.live_before) or 'nothing'}.")
        try:
            revert(hosts, plan.live_before, plan.new_hosts, keep_new=plan.kind == "restore")
        except EngineUnreachable as lost_error:
            lost = hosts.mark_unreachable(lost_error) if hosts.multi_engine else None
            if not lost:
                raise self._revert_failed(error, lost_error, plan, ledger, record, started) from None
            self._revert_the_others(hosts, lost_error, lost, plan, ledger, record, started, lock)
        except InfraError as revert_error:
            raise self._revert_failed(error, revert_error, plan, ledger, record, started) from None
        journal.clear()
        ledger.append(dict(record, result="rolled back", error=error.message, live=plan.live_before,
                           finished=utc_timestamp(), duration=round(time.monotonic() - started, 3),
                           **stopping_fields(hosts)))
        kept = ", ".join(plan.live_before) or "no host (this was the first rollout)"
        raise InfraError(f"Rollout of {self.service} to generation {plan.generation} failed and was rolled back: "
                         f"{error.message} Live again: {kept}; the new hosts were "
                         f"{'stopped' if plan.kind == 'restore' else 'removed'}.",
                         host=error.details.get("host"), rolled_back=True, live=plan.live_before,
                         generation=plan.generation, duration=round(time.monotonic() - started, 3)) from None

    def _revert_failed(self, error: InfraError, revert_error: InfraError, plan: rp.Plan, ledger: Ledger,
                       record: dict[str, Any], started: float) -> InfraError:
        ledger.append(dict(record, result="failed", error=error.message, revert_error=revert_error.message,
                           finished=utc_timestamp(), duration=round(time.monotonic() - started, 3)))
        return InfraError(f"Rollout of {self.service} to generation {plan.generation} failed: {error.message} "
                          f"Reverting also failed: {revert_error.message} The next run of this rollout puts "
                          "the previous hosts back first.", host=error.details.get("host"))

    def _revert_the_others(self, hosts: ServiceHosts, error: InfraError, lost: str, plan: rp.Plan, ledger: Ledger,
                           record: dict[str, Any], started: float, lock: ServiceLock) -> None:
        """An engine stopped answering: every other engine is put back on the previous generation now (the
        lost engine's servers leave the balancer: nothing answers there), and the journal stays on the
        coordinator, so the next run undoes the rollout on the lost engine too.

        When the lost engine is the coordinator, the lock can no longer be renewed, but no other
        controller can take it over before its lease lapses: the revert goes on while the lease has time
        left (lock.check_lease before each step, and a drain cut short to what the lease allows), with the
        stops it sends kept in memory only."""
        coordinator = self.fleet.coordinator_name
        where = f"during batch {hosts.doing.batch}" if hosts.doing and hosts.doing.batch else "mid-way"
        holder, within = ((", which holds the lock and journal,",
                           f" within the {max(lock.lease_left(), 0):.0f} s its lease keeps other controllers out")
                          if lost == coordinator else ("", ""))
        self.progress(f"{self.service}: engine {lost}{holder} stopped answering {where}; reverting every other engine "
                      f"to {', '.join(plan.live_before) or 'nothing'}{within}")
        duration = round(time.monotonic() - started, 3)
        try:
            for _attempt in hosts.clients:  # another engine lost during the revert: revert the rest again
                interrupted = never_interrupted
                if coordinator in hosts.down:
                    hosts.before_stop = None  # the journal cannot take notes; it already names the new hosts
                    hosts.pending_stops.offline = True
                    hosts.wait_allowance = lock.wait_allowance
                    interrupted = lock.check_lease
                try:
                    revert(hosts, plan.live_before, plan.new_hosts, keep_new=plan.kind == "restore",
                           interrupted=interrupted)
                    break
                except EngineUnreachable as again:
                    if hosts.mark_unreachable(again) is None:
                        raise
            else:
                raise InfraError(f"engines {', '.join(sorted(hosts.down))} stopped answering one after the other")
        except InfraError as revert_error:
            ledger.append(dict(record, result="failed", error=error.message, revert_error=revert_error.message,
                               engines_down=sorted(hosts.down), finished=utc_timestamp(), duration=duration))
            raise InfraError(f"Rollout of {self.service} to generation {plan.generation} failed: engine {lost} stopped "
                             f"answering {where} ({error.message}). Reverting the other engines also failed: "
                             f"{revert_error.message} The next run of this rollout puts the previous hosts back first.",
                             engines_down=sorted(hosts.down), rolled_back=False, journal_left=True) from None
        live = [name for name in plan.live_before if hosts.where(name) not in hosts.down]
        ledger.append(dict(record, result="rolled back", error=error.message, live=live, engines_down=sorted(hosts.down),
                           finished=utc_timestamp(), duration=round(time.monotonic() - started, 3),
                           **stopping_fields(hosts)))
        down = ", ".join(sorted(hosts.down))
        left = (f"the lock and journal stay on {coordinator}, so the next run, once {down} answer(s) again, takes "
                "the lock over (another controller waits for its lease to lapse) and puts their hosts back first"
                if coordinator in hosts.down else
                f"the journal stays on {coordinator}, so the next run, once {down} answer(s) again, puts their "
                "hosts back first")
        raise InfraError(f"Rollout of {self.service} to generation {plan.generation} failed: engine {lost} stopped "
                         f"answering {where} ({error.message}). Every other engine is back on the previous generation "
                         f"(live: {', '.join(live) or 'nothing'}); {left}.",
                         rolled_back=True, engines_down=sorted(hosts.down), live=live, journal_left=True,
                         generation=plan.generation, duration=round(time.monotonic() - started, 3)) from None

    def _abandon(self, hosts: ServiceHosts, error: InfraError, plan: rp.Plan, ledger: Ledger, record: dict[str, Any],
                 started: float) -> None:
        """Stops without reverting when this run can no longer change the fleet safely: the engine stopped
        answering, or another controller holds the lock now. The journal stays for the next run (or the
        new holder), which undoes the rollout before anything else."""
        where = f"during batch {hosts.doing.batch}" if hosts.doing and hosts.doing.batch else (
            f"during '{hosts.doing.describe()}'" if hosts.doing else "before its first step")
        if isinstance(error, EngineUnreachable):
            message = (f"Rollout of {self.service} to generation {plan.generation} stopped: {error.message} {where}; "
                       "nothing could be reverted. The lock and journal are left in the engine; the next run of "
                       "this rollout (or a rollback) puts the previous hosts back first.")
        else:
            message = (f"Rollout of {self.service} to generation {plan.generation} stopped {where}: {error.message} "
                       "Nothing was reverted by this run: the lock's new holder undoes it from the journal.")
        try:
            ledger.append(dict(record, result="failed", error=error.message, finished=utc_timestamp(),
                               duration=round(time.monotonic() - started, 3)))
        except OSError:
            pass
        raise InfraError(message, host=error.details.get("host"), rolled_back=False, journal_left=True,
                         generation=plan.generation) from None

    # result -------------------------------------------------------------------------------------
    def _result(self, plan: rp.Plan, spec: HostSpec, started: float, changed: bool,
                recovered: str | None = None, stopping: list[str] | None = None,
                reconciled: dict[str, list[str]] | None = None, placed: dict[str, str] | None = None,
                placement: Placement | None = None, shipping: ShipPlan | None = None,
                observation: Observation | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "changed": changed, "service": self.service, "generation": plan.generation, "image_id": spec.image_id,
            "kind": plan.kind, "reason": plan.reason, "added": plan.new_hosts, "removed": plan.retired,
            "deleted": plan.removed, "live": plan.live_after, "live_before": plan.live_before,
            "plan": [step.as_dict() for step in plan.steps], "duration": round(time.monotonic() - started, 3),
            "rollout_id": self.rollout_id, "stopping": stopping or [],
        }
        if recovered:
            result["recovered"] = recovered
        if reconciled:
            result["reconciled"] = reconciled
        if not self.fleet.single:
            result.update(self._engine_result(plan, placed or {}, placement, shipping, observation))
        if self.context.diff_mode:
            result["diff"] = {"before": "".join(f"{name}\n" for name in plan.live_before),
                              "after": "".join(f"{name}\n" for name in plan.live_after),
                              "before_header": f"{self.service} live hosts", "after_header": f"{self.service} live hosts"}
        verb = "would " if self.context.check_mode and plan.changed else ""
        result["msg"] = (f"{self.service}: {verb}{plan.kind} to generation {plan.generation} "
                         f"({len(plan.new_hosts)} added, {len(plan.retired)} removed)" if plan.changed
                         else f"{self.service}: generation {plan.generation} is live and up to date")
        return result

    def _engine_result(self, plan: rp.Plan, placed: dict[str, str], placement: Placement | None,
                       shipping: ShipPlan | None, observation: Observation | None) -> dict[str, Any]:
        """Where each host runs (or will), per engine, and how the image got (or gets) there."""
        engine_of = {host.name: host.engine for host in observation.hosts} if observation else {}
        engine_of.update(placed)
        hosts = {name: engine_of.get(name) for name in plan.live_after}
        steps = [dict(step, engines=[engine_of.get(name) for name in step["hosts"]])
                 for step in (step.as_dict() for step in plan.steps)]
        return {"engines": self.fleet.describe(), "addressing": self.fleet.addressing, "hosts": hosts,
                "placement": placement.as_dict() if placement else None, "plan": steps,
                "shipping": self.shipped or (shipping.as_dict() if shipping else None)}


def stopping_fields(hosts: ServiceHosts) -> dict[str, Any]:
    """For the ledger: hosts out of the balancer whose stop the engine was still finishing at the end."""
    if not hosts.still_stopping:
        return {}
    return {"stopping": sorted(hosts.still_stopping),
            "stopped_by": utc_timestamp(max(hosts.still_stopping.values()))}


def revert(hosts: ServiceHosts, previous_live: list[str], new_hosts: list[str], keep_new: bool = False,
           interrupted: Callable[[], None] = never_interrupted) -> None:
    """Puts previous_live back and takes new_hosts away, from what runs now; the balancer then holds
    exactly the previous hosts that still exist. interrupted() is called before each step."""
    observation = hosts.observe()
    hosts.detach_stale(observation)  # e.g. the server of a new host that crashed after it was registered
    hosts.apply(rp.plan_revert(observation.hosts, previous_live, new_hosts, keep_new), observation.records, "revert",
                interrupted)
    hosts.ensure_membership([name for name in previous_live if name in observation.records], "revert")


def exited_hosts(observation: Observation) -> set[str]:
    return {name for name, record in observation.records.items() if record.status in ("exited", "dead")}


def reconcile(hosts: ServiceHosts, ledger: Ledger | None, basedir: str | None = None) -> dict[str, list[str]] | None:
    """Makes the balancer match the live generation's hosts again (see reconcile.py); reports and records
    what it repaired, or returns None when nothing needed it. Runs under the service's lock."""
    observation = hosts.observe()
    detached = list(observation.stale_servers)
    hosts.detach_stale(observation)
    repair = plan_repair(observation.hosts, exited_hosts(observation))
    if not (detached or repair.steps):
        return None
    for line in repair.describe(detached):
        hosts.progress(f"{hosts.service}: reconcile: {line}")
    record = ledger.new_record("reconcile", basedir, service=hosts.service, detached=detached,
                               registered=repair.registered, removed=repair.removed) if ledger else None
    try:
        hosts.apply(repair.steps, observation.records, "reconcile")
    except InfraError as error:
        if ledger and record:
            ledger.append(dict(record, result="failed", error=error.message, finished=utc_timestamp()))
        raise InfraError(f"Reconciling {hosts.service} before anything else failed: {error.message}",
                         host=error.details.get("host")) from None
    if ledger and record:
        ledger.append(dict(record, result="succeeded", finished=utc_timestamp()))
    return {"detached": detached, "registered": repair.registered, "removed": repair.removed}


def recover_interrupted(hosts: ServiceHosts, journal: Journal) -> str | None:
    """Undoes a rollout whose controller died, from the journal it left; returns its ID."""
    unfinished = journal.read()
    if not unfinished:
        return None
    unreachable = sorted({engine for engine in unfinished.get("placement", {}).values()
                          if engine in hosts.down or engine not in hosts.clients})
    if unreachable:
        raise InfraError(f"Rollout {unfinished['rollout']} of {hosts.service} did not finish and started hosts on "
                         f"engine(s) {', '.join(unreachable)}, which cannot be reached now; bring them back (or "
                         "declare them again in engines) so that this run can undo it there first. Nothing was changed.",
                         engines_down=unreachable)
    previous, new = kept_replacements(unfinished, set(hosts.observe().records))
    what = "heal" if unfinished["replaced"] else "rollout"
    hosts.progress(f"{hosts.service}: {what} {unfinished['rollout']} (started {unfinished['started']}) did not "
                   f"finish; putting {', '.join(previous) or 'nothing'} back first")
    finish_stale_stops(hosts, unfinished)
    revert(hosts, previous, new, unfinished["restored"])
    journal.clear()
    return unfinished["rollout"]


def kept_replacements(unfinished: dict[str, Any], present: set[str]) -> tuple[list[str], list[str]]:
    """(hosts to put back, hosts to take away) of an unfinished journal. A heal that got as far as removing
    the drifted host keeps its replacement: it is live in the drifted host's place."""
    previous, new = list(unfinished["previous_live"]), list(unfinished["new_hosts"])
    for old, fresh in unfinished["replaced"].items():
        if old not in present and fresh in present:
            previous = [fresh if name == old else name for name in previous]
            new = [name for name in new if name != fresh]
    return previous, new


def finish_stale_stops(hosts: ServiceHosts, unfinished: dict[str, Any]) -> None:
    """A stop the dead run sent may still be under way in the engine (a service that ignores SIGTERM is
    killed only after stop_timeout), and would take a host down after the recovery put it back. So the
    previous hosts the journal says were being stopped are stopped for good first (a stop of our own
    returns once the engine's stop is done), and the revert then starts them again."""
    observation = hosts.observe()
    suspects = [host.name for host in observation.hosts
                if host.name in unfinished["stopping"] and host.name in unfinished["previous_live"] and host.running]
    if not suspects:
        return
    hosts.progress(f"{hosts.service}: {', '.join(suspects)} may still be stopping on the interrupted run's order; "
                   "letting that stop finish before starting them again")
    for name in suspects:
        server = observation.records[name].server
        if server:
            hosts.balancer.detach(server)
    run_for_each(suspects, lambda name: hosts.client_of(observation.records[name]).stop(
        observation.records[name].container_id, unfinished["stop_timeout"]))


def retire_old_generations(hosts: ServiceHosts, plan: rp.Plan) -> None:
    """Removes the hosts of generations beyond keep_previous once a rollout has succeeded."""
    live = set(plan.live_after)
    observation = hosts.observe()
    doomed = [name for name in plan.removed if name in observation.records and name not in live]
    if doomed:
        hosts.progress(f"{hosts.service}: removing hosts beyond keep_previous: {', '.join(doomed)}")
        hosts.apply([rp.Step(rp.REMOVE, tuple(doomed))], observation.records, "retention")
