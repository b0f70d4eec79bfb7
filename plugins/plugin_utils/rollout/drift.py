# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift: find the hosts that differ from what was rolled out (drift_plan.py), and heal them by replacement.

Healing never edits a host: it replaces the host with a fresh one from the same verified image,
through the balancer, one host at a time.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.adapter import BALANCER_OPTIONS, make_balancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_SERVICE, HostLabels, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import ENGINES_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.task import FleetManager
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.drift_plan import (
    host_drift,
    plan_replacement,
    plan_stray_removals,
    recorded_hosts,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.fleet_engines import default_addressing, host_endpoints
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.hosts import (
    ADDRESSING,
    HostSpec,
    ServiceHosts,
    validate_service,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.lock import (
    Journal,
    LockLost,
    ServiceLock,
    unfinished_work,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.manager import (
    LIMITS,
    exited_hosts,
    reconcile,
    recover_interrupted,
    revert,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.reconcile import plan_repair, problems
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext

DRIFT_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str", "required": True},
    "heal": {"type": "bool", "default": False},
    "writable_paths": {"type": "list", "elements": "str", "default": []},
    "balancer": {"type": "dict", "options": BALANCER_OPTIONS},
    "drain_timeout": {"type": "float", "default": 30},
    "stop_timeout": {"type": "int", "default": 10},
    "lock_timeout": {"type": "int", "default": 60},
    **ENGINES_ARGUMENT_SPEC,
    "addressing": {"type": "str", "choices": list(ADDRESSING)},
}


class Drift(FleetManager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.service = validate_service(params["service"])
        for path in params["writable_paths"]:
            if not path.startswith("/") or ".." in path.split("/"):
                raise InfraError(f"writable_paths entry '{path}' must be an absolute path without '..'.")
        for name in ("drain_timeout", "stop_timeout", "lock_timeout"):
            if not 0 <= params[name] <= LIMITS[name]:
                raise InfraError(f"{name} is {params[name]}; it must be between 0 and {LIMITS[name]}.")
        self.lock: ServiceLock | None = None
        if params["heal"] and not context.check_mode and not params["balancer"]:
            self.progress(f"{self.service}: no balancer given; hosts are replaced without balancer changes")

    def detect(self) -> list[dict[str, Any]]:
        """The drifted hosts of every engine (each engine looked at in parallel), by engine then name."""
        recorded = recorded_hosts(self.ledger().records(service=self.service))
        clients = self.clients()
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            found = pool.map(lambda name: self.detect_on(name, clients[name], recorded), clients)
        return [entry for entries in found for entry in entries]

    def detect_on(self, engine: str, client: DockerClient, recorded: dict[str, list[str]] | None
                  ) -> list[dict[str, Any]]:
        images: dict[str, dict[str, Any] | None] = {}
        drifted = []
        for container in client.containers_with_labels({LABEL_SERVICE: self.service}, include_stopped=False):
            labels = image_labels(container)
            image_id = HostLabels.from_labels(labels).image_id or ""
            if image_id not in images:
                images[image_id] = client.image(image_id) if image_id else None
            reasons = host_drift(container, images[image_id], client.changes(container["Id"]),
                                 self.params["writable_paths"], recorded)
            if reasons:
                drifted.append({"host": container["Name"].lstrip("/"), "engine": engine, "reasons": reasons,
                                "recorded": HostSpec.from_labels(labels) is not None})
        return sorted(drifted, key=lambda entry: entry["host"])

    def _service_hosts(self, balancer: Any) -> ServiceHosts | None:
        """The service's hosts on every engine as rollouts see them, made with the spec of any of its hosts."""
        for client in self.clients().values():
            for container in client.containers_with_labels({LABEL_SERVICE: self.service}, inspect=False):
                spec = HostSpec.from_labels(container["Config"].get("Labels") or {})
                if spec:
                    return self._hosts_of(balancer, spec)
        return None

    def _hosts_of(self, balancer: Any, spec: HostSpec) -> ServiceHosts:
        """The service's hosts, reached as its rollouts reach them (addressing, with the same default)."""
        addressing = self.params.get("addressing") or default_addressing(self.engines)
        return ServiceHosts(self.clients(), balancer, spec, self.progress, self.params["drain_timeout"],
                            self.params["stop_timeout"], **host_endpoints(self.engines, addressing))

    def balancer_mismatch(self) -> list[str]:
        """How the balancer differs from the hosts (servers at no running host, running hosts it lost,
        live hosts that exited); empty without a balancer."""
        if not self.params["balancer"]:
            return []
        balancer = make_balancer(self.params["balancer"])
        balancer.check()
        hosts = self._service_hosts(balancer)
        if hosts is None:
            return []
        try:
            observation = hosts.observe()
            return problems(plan_repair(observation.hosts, exited_hosts(observation)), observation.stale_servers)
        finally:
            hosts.close()

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        client = self.client()
        if self.params["heal"] and self.params["balancer"]:
            make_balancer(self.params["balancer"]).check()  # a wrong balancer is said before anything else
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
        unfinished = self.params["heal"] and unfinished_work(client, self.service)
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
        healed, removed, reconciled = self._heal(client, drifted)
        return dict(result, changed=True, healed=healed, removed=removed, reconciled=reconciled,
                    duration=round(time.monotonic() - started, 3),
                    msg=f"{self.service}: replaced {len(healed)} drifted host(s), removed {len(removed)}"
                    + ("; reconciled the balancer with the hosts" if reconciled else ""))

    def _heal(self, client: DockerClient, drifted: list[dict[str, Any]]
              ) -> tuple[list[dict[str, str]], list[str], dict[str, list[str]] | None]:
        balancer = make_balancer(self.params["balancer"])
        balancer.check()
        reconciled = None
        if not drifted:
            hosts = self._service_hosts(balancer)
            if hosts is None:
                return [], [], None
            lock = ServiceLock(client, self.service, hosts.spec.image_id, uuid.uuid4().hex[:12],
                               self.params["lock_timeout"], self.progress)
            lock.acquire()
            try:
                recover_interrupted(hosts, Journal(client, self.service))
                reconciled = reconcile(hosts, self.ledger(), self.context.basedir)
            finally:
                lock.release()
                hosts.close()
            return [], [], reconciled
        engine_of = {entry["host"]: entry["engine"] for entry in drifted}
        inspected = {}
        for engine in sorted(set(engine_of.values())):
            for container in self.clients()[engine].containers_with_labels({LABEL_SERVICE: self.service}):
                name = container["Name"].lstrip("/")
                if engine_of.get(name) == engine:
                    inspected[name] = container
        specs = {name: HostSpec.from_labels(inspected[name]["Config"].get("Labels") or {}) for name in engine_of}
        any_spec = next((spec for spec in specs.values() if spec), None)
        if any_spec is None:
            raise InfraError(f"None of the drifted hosts of {self.service} was made by a rollout, so none can be "
                             "replaced from its spec; remove them, or roll the service out again.")
        rollout_id = uuid.uuid4().hex[:12]
        lock = ServiceLock(client, self.service, any_spec.image_id, rollout_id, self.params["lock_timeout"],
                           self.progress)
        lock.acquire()
        self.lock = lock
        try:
            hosts = self._hosts_of(balancer, any_spec)
            try:
                if recover_interrupted(hosts, Journal(client, self.service)):
                    drifted = [entry for entry in self.detect() if entry["host"] in engine_of]
                reconciled = reconcile(hosts, self.ledger(), self.context.basedir)
            finally:
                hosts.close()
            specs = {name: spec for name, spec in specs.items() if any(entry["host"] == name for entry in drifted)}
            healed, removed = self._replace(engine_of, balancer, specs, rollout_id)
            return healed, removed, reconciled
        finally:
            lock.release()

    def _replace(self, engine_of: dict[str, str], balancer, specs: dict[str, HostSpec | None],
                 rollout_id: str) -> tuple[list[dict[str, str]], list[str]]:
        ledger = self.ledger()
        record = ledger.new_record("heal", self.context.basedir, rollout=rollout_id, service=self.service)
        groups: dict[str, tuple[HostSpec, list[str]]] = {}
        for name, spec in sorted(specs.items()):
            if spec:
                groups.setdefault(spec.spec_hash, (spec, []))[1].append(name)
        strays = sorted(name for name, spec in specs.items() if spec is None)
        healed: list[dict[str, str]] = []
        removed: list[str] = []
        try:
            for spec, names in groups.values():
                self._replace_group(engine_of, balancer, spec, names, strays, rollout_id, healed)
                removed, strays = removed + strays, []
        except InfraError as error:
            ledger.append(dict(record, result="failed", error=error.message, replaced=healed, removed=removed,
                               finished=utc_timestamp()))
            raise
        ledger.append(dict(record, result="succeeded", added=[entry["replacement"] for entry in healed],
                           replaced=healed, removed=removed, finished=utc_timestamp()))
        return healed, removed

    def _replace_group(self, engine_of: dict[str, str], balancer, spec: HostSpec, names: list[str],
                       strays: list[str], rollout_id: str, healed: list[dict[str, str]]) -> None:
        """Replaces the drifted hosts made from one spec one at a time, each on the engine it ran on, adding
        each to healed, then removes the strays. A replacement that fails (or is interrupted) is undone: the
        drifted host stays in service and its fresh host is removed. Each replacement is journaled first (on
        the coordinator), so the next run undoes (or keeps) one a SIGKILL cut short."""
        hosts = self._hosts_of(balancer, spec)
        hosts.rollout_id = rollout_id
        journal = Journal(self.client(), self.service)
        try:
            observation = hosts.observe()
            live_now = observation.live()
            taken = {(host.generation, host.index) for host in observation.hosts}
            with interruptible(f"heal of {self.service}", deferred=True) as guard:
                def interrupted() -> None:
                    guard.check()
                    if self.lock:
                        self.lock.check()

                for number, old in enumerate(names, start=1):
                    generation = rp.parse_host_name(old)[1]
                    index = max(index for gen, index in taken if gen == generation) + 1
                    taken.add((generation, index))
                    new = rp.host_name(self.service, generation, index)
                    hosts.placement[new] = engine_of[old]
                    journal.write(rollout_id, live_now, [new], spec.image_id, stop_timeout=hosts.stop_timeout,
                                  placement={new: engine_of[old]} if self.several else None, replaced={old: new})
                    try:
                        hosts.apply(plan_replacement(old, new, number), observation.records, "heal",
                                    interrupted=interrupted)
                    except LockLost:
                        raise
                    except InfraError as error:
                        self.progress(f"{self.service}: {error.message} Putting {old} back.")
                        revert(hosts, live_now, [new])
                        journal.clear()
                        raise InfraError(f"Replacing drifted host {old} failed: {error.message} {old} is in service "
                                         f"again and {new} was removed.", host=error.details.get("host")) from None
                    healed.append({"host": old, "replacement": new})
                    live_now = [new if name == old else name for name in live_now]
            observed_strays = [(name, observation.records[name].server is not None)
                               for name in strays if name in observation.records]
            hosts.apply(plan_stray_removals(observed_strays), observation.records, "heal")
            for name in strays:
                if name not in observation.records:  # named unlike the service's hosts, so never in the balancer
                    self.clients()[engine_of[name]].remove_container(name)
            # The replacements are members like any other: each has its server, the hosts it replaced none.
            replaced = {entry["host"]: entry["replacement"] for entry in healed}
            live = [replaced.get(name, name) for name in observation.live() if name not in strays]
            hosts.ensure_membership(live + [new for new in replaced.values() if new not in live], "heal")
            journal.clear()
        finally:
            hosts.close()
