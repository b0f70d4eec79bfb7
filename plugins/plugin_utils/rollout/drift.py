# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift: find the hosts that differ from what was rolled out (the back-end's probe), and heal them by
replacement.

Healing never edits a host: it replaces the host with a fresh one from the same verified image,
through the balancer, one host at a time, as one transaction (service/transaction.py).
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import (
    BALANCER_OPTIONS,
    Balancer,
    make_balancer,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import ENGINES_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_drift import recorded_hosts
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_hosts import DockerHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import ADDRESSING, open_fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.hosts import VmHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.backends import HostsManager
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.drift_plan import plan_replacement, plan_stray_removals
from ansible_collections.immutable.infra.plugins.plugin_utils.service import membership
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostRecord
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import unfinished_work
from ansible_collections.immutable.infra.plugins.plugin_utils.service.options import SWAP_OPTIONS, check_swap_options
from ansible_collections.immutable.infra.plugins.plugin_utils.service.reconcile import plan_repair, problems
from ansible_collections.immutable.infra.plugins.plugin_utils.service.record import require_balancer_known
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec, validate_service
from ansible_collections.immutable.infra.plugins.plugin_utils.service.steps import HostSteps
from ansible_collections.immutable.infra.plugins.plugin_utils.service.stopping import PendingStops
from ansible_collections.immutable.infra.plugins.plugin_utils.service.transaction import Change, Transaction
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext

DRIFT_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str", "required": True},
    "heal": {"type": "bool", "default": False},
    "writable_paths": {"type": "list", "elements": "str", "default": []},
    "balancer": {"type": "dict", "options": BALANCER_OPTIONS},
    **SWAP_OPTIONS,
    **ENGINES_ARGUMENT_SPEC,
    "addressing": {"type": "str", "choices": list(ADDRESSING)},
}


class Drift(HostsManager):
    record_options = ("engines", "docker_host", "balancer", "addressing")

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        params = self.params
        self.service = validate_service(params["service"])
        for path in params["writable_paths"]:
            if not path.startswith("/") or ".." in path.split("/"):
                raise InfraError(f"writable_paths entry '{path}' must be an absolute path without '..'.")
        check_swap_options(params)
        self.balancer: Balancer = make_balancer(params["balancer"])
        self._backend: DockerHosts | VmHosts | None = None
        if params["heal"] and not context.check_mode and not self.balancer.tracks_membership:
            self.progress(f"{self.service}: no balancer given or recorded; hosts are replaced without balancer changes")

    def backend(self) -> DockerHosts | VmHosts:
        if self._backend is None and self.on_vms:
            self._backend = self.vm_hosts(self.service)
        elif self._backend is None:
            self.clients()  # every engine must answer: an engine that is down is named
            self._backend = DockerHosts(open_fleet(self.params, self.engines, self.reach()), self.service,
                                        progress=self.progress)
        return self._backend

    def detect(self) -> list[dict[str, Any]]:
        """The drifted hosts of every engine, by engine then name."""
        recorded = recorded_hosts(self.ledger().records(service=self.service))
        return self.backend().drifted(self.params["writable_paths"], recorded)

    def balancer_mismatch(self) -> list[str]:
        """How the balancer differs from the hosts (servers at no running host, running hosts it lost,
        live hosts that exited); empty without a balancer."""
        if not self.balancer.tracks_membership:
            return []
        backend = self.backend()
        observation = membership.observe(backend, self.balancer, PendingStops(backend.store(), self.service).read(),
                                         self.progress)
        return problems(plan_repair(observation.hosts, observation.exited()), observation.stale_servers)

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        if self.params["heal"] and self.balancer.tracks_membership:
            self.balancer.check()  # a wrong balancer is said before anything else
        drifted = self.detect()
        mismatch = self.balancer_mismatch()
        result: dict[str, Any] = {"changed": False, "service": self.service, "drifted": drifted, "healed": [],
                                  "removed": [], "balancer_mismatch": mismatch}
        for entry in drifted:
            where = f" on {entry['engine']}" if self.several else ""
            self.progress(f"{self.service}: {entry['host']}{where} drifted: {'; '.join(entry['reasons'])}")
        for problem in mismatch:
            self.progress(f"{self.service}: the balancer does not match the hosts: {problem}")
        # An interrupted rollout or heal left its journal or lock: a heal undoes it first, even with no drift.
        unfinished = self.params["heal"] and unfinished_work(self.backend().store(), self.service)
        if not (drifted or mismatch or unfinished) or not self.params["heal"]:
            result["msg"] = (f"{self.service}: {len(drifted)} drifted host(s): "
                             + ", ".join(entry["host"] for entry in drifted) if drifted
                             else f"{self.service}: no host has drifted")
            if mismatch:
                result["msg"] += f"; the balancer does not match the hosts: {'; '.join(mismatch)}"
            return result
        if self.context.check_mode:
            return dict(result, changed=True, msg=f"{self.service}: would replace {len(drifted)} drifted host(s)"
                        + (" and reconcile the balancer" if mismatch else ""))
        healed, removed, reconciled = self._heal(drifted)
        return dict(result, changed=True, healed=healed, removed=removed, reconciled=reconciled,
                    duration=round(time.monotonic() - started, 3),
                    msg=f"{self.service}: replaced {len(healed)} drifted host(s), removed {len(removed)}"
                    + ("; reconciled the balancer with the hosts" if reconciled else ""))

    def _specs(self) -> dict[str, tuple[str, HostSpec | None]]:
        """Host name -> (its engine, the spec it was made from, None for a container no rollout made)."""
        return {host.name: (host.engine, HostSpec.from_labels(host.labels)) for host in self.backend().hosts()}

    def _heal(self, drifted: list[dict[str, Any]]
              ) -> tuple[list[dict[str, str]], list[str], dict[str, list[str]] | None]:
        backend = self.backend()
        found = self._specs()
        require_balancer_known(self.service, self.balancer.tracks_membership,
                               [host.labels for host in backend.hosts()])
        names = {entry["host"] for entry in drifted}
        any_spec = next((spec for name, (_engine, spec) in sorted(found.items()) if spec and name in names), None) \
            or next((spec for _engine, spec in found.values() if spec), None)
        if any_spec is None:
            if drifted:
                raise InfraError(f"None of the drifted hosts of {self.service} was made by a rollout, so none can be "
                                 "replaced from its spec; remove them, or roll the service out again.")
            return [], [], None
        if isinstance(backend, DockerHosts):
            backend.marker_image = any_spec.image_id
        steps = HostSteps(backend, self.balancer, any_spec, backend.store(), self.progress,
                          self.params["drain_timeout"], self.params["stop_timeout"])
        tx = Transaction(steps, backend.store(), self.ledger(), self.context.basedir, self.params["lock_timeout"],
                         uuid.uuid4().hex[:12])
        try:
            with tx.locked():
                if tx.recover():
                    drifted = [entry for entry in self.detect() if entry["host"] in names]
                reconciled = tx.reconcile()
                if not drifted:
                    return [], [], reconciled
                healed, removed = self._replace(tx, drifted, self._specs())
                return healed, removed, reconciled
        finally:
            steps.close()

    def _replace(self, tx: Transaction, drifted: list[dict[str, Any]],
                 found: dict[str, tuple[str, HostSpec | None]]) -> tuple[list[dict[str, str]], list[str]]:
        """Replaces the drifted hosts one at a time, each on the engine it ran on and from the spec it was
        made from, then removes the strays (containers no rollout made); one heal record in the ledger."""
        engine_of = {entry["host"]: entry["engine"] for entry in drifted}
        groups: dict[str, tuple[HostSpec, list[str]]] = {}
        for name in sorted(engine_of):
            spec = found.get(name, ("", None))[1]
            if spec:
                groups.setdefault(spec.spec_hash, (spec, []))[1].append(name)
        strays = sorted(name for name in engine_of if not found.get(name, ("", None))[1])
        healed: list[dict[str, str]] = []
        tx.record = tx.ledger.new_record("heal", self.context.basedir, rollout=tx.rollout_id, service=self.service,
                                         replaced=healed, removed=[]) if tx.ledger else {}
        for spec, names in groups.values():
            tx.steps.use_spec(spec)
            self._replace_group(tx, names, engine_of, healed)
        self._remove_strays(tx, strays, engine_of, healed)
        tx.succeed(added=[entry["replacement"] for entry in healed], replaced=healed, removed=strays)
        return healed, strays

    def _replace_group(self, tx: Transaction, names: list[str], engine_of: dict[str, str],
                       healed: list[dict[str, str]]) -> None:
        """Each replacement is a change of its own, journaled first, so the next run undoes (or keeps) one a
        SIGKILL cut short; one that fails is undone: the drifted host stays in service, its fresh host goes."""
        observation = tx.steps.observe()
        live_now = observation.live()
        taken = {(host.generation, host.index) for host in observation.hosts}
        for number, old in enumerate(names, start=1):
            generation = rp.parse_host_name(old)[1]
            index = max(index for gen, index in taken if gen == generation) + 1
            taken.add((generation, index))
            new = rp.host_name(self.service, generation, index)
            tx.steps.placement[new] = engine_of[old]
            tx.apply(Change(
                title=f"Replacing drifted host {old}", activity="heal", label="heal",
                steps=plan_replacement(old, new, number), records=observation.records, previous_live=live_now,
                new_hosts=[new], placement={new: engine_of[old]} if self.several else None, replaced={old: new},
                generation=generation, failed_result="failed",
                reverted=partial(replacement_undone, old, new)))
            healed.append({"host": old, "replacement": new})
            live_now = [new if name == old else name for name in live_now]

    def _remove_strays(self, tx: Transaction, strays: list[str], engine_of: dict[str, str],
                       healed: list[dict[str, str]]) -> None:
        """Takes the strays out (through the balancer when they are in it), then checks every server of the
        service is a live host: the replacements have theirs, the hosts they replaced none."""
        observation = tx.steps.observe()
        tx.steps.apply(plan_stray_removals([(name, observation.records[name].server is not None)
                                            for name in strays if name in observation.records]),
                       observation.records, "heal")
        for name in strays:
            if name not in observation.records:  # named unlike the service's hosts, so never in the balancer
                self.backend().remove(HostRecord(name, name, engine=engine_of[name]))
        replaced = {entry["host"]: entry["replacement"] for entry in healed}
        live = [replaced.get(name, name) for name in observation.live() if name not in strays]
        tx.steps.ensure_membership(live + [new for new in replaced.values() if new not in live], "heal")


def replacement_undone(old: str, new: str, error: str) -> str:
    return f"Replacing drifted host {old} failed: {error} {old} is in service again and {new} was removed."
