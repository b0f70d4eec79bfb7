# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout: observe hosts and balancer, plan (rollout_plan), apply step by step, revert on failure."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.immutable.infra.plugins.plugin_utils import rollout_plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer import BALANCER_OPTIONS, NoBalancer, make_balancer
from ansible_collections.immutable.infra.plugins.plugin_utils.common import (
    LABEL_GENERATION, LABEL_IMAGE_ID, LABEL_INPUTS_HASH, LABEL_PREFIX, LABEL_SERVICE, InfraError, canonical_json,
    sha256_hex, short_id,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker_client import DockerClient, container_address
from ansible_collections.immutable.infra.plugins.plugin_utils.health import (
    HEALTH_OPTIONS, HealthCheck, container_problem, run_for_each, wait_healthy,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.ledger import Ledger, default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.lock import Journal, ServiceLock
from ansible_collections.immutable.infra.plugins.plugin_utils.verdicts import require_verified

LABEL_INDEX = LABEL_PREFIX + "index"
LABEL_SPEC_HASH = LABEL_PREFIX + "spec_hash"
LABEL_ROLLOUT = LABEL_PREFIX + "rollout"
LABEL_PORT = LABEL_PREFIX + "port"
SERVICE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

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
    "keep_previous": {"type": "int", "default": 1},
    "container": {"type": "dict", "default": {}, "options": CONTAINER_OPTIONS},
    "lock_timeout": {"type": "int", "default": 3600},
    "docker_host": {"type": "str"},
    "ledger": {"type": "path"},
}


@dataclass
class HostRecord:
    """A host of the service as the executor knows it."""

    name: str
    container_id: str
    address: str | None = None
    server: str | None = None


@dataclass
class RolloutContext:
    basedir: str
    check_mode: bool = False
    diff_mode: bool = False


@dataclass
class Observation:
    hosts: list[rp.Host] = field(default_factory=list)
    records: dict[str, HostRecord] = field(default_factory=dict)
    stale_servers: list[str] = field(default_factory=list)  # balancer servers of ours pointing at no running host


class Rollout:
    def __init__(self, params: dict[str, Any], context: RolloutContext,
                 progress: Callable[[str], None] = lambda message: None) -> None:
        self.params = params
        self.context = context
        self.progress = progress
        self.service = params["service"]
        if not SERVICE_PATTERN.match(self.service):
            raise InfraError(f"service '{self.service}' must start with a lower-case letter and hold only lower-case "
                             "letters, digits and '_' (at most 40); it names hosts, groups and balancer servers.")
        if not 0 < params["port"] < 65536:
            raise InfraError(f"port must be between 1 and 65535, got {params['port']}.")
        if params["drain_timeout"] < 0 or params["stop_timeout"] < 0 or params["lock_timeout"] <= 0:
            raise InfraError("drain_timeout and stop_timeout cannot be negative, and lock_timeout must be positive.")
        self.health = HealthCheck.from_options(params["health"], params["port"])
        self.desired_settings = dict(
            service=self.service, replicas=params["replicas"], strategy=params["strategy"],
            batch_size=params["batch_size"], max_surge=params["max_surge"], max_unavailable=params["max_unavailable"],
            canary_replicas=params["canary"]["replicas"], canary_seconds=params["canary"]["seconds"],
            keep_previous=params["keep_previous"])
        rp.validate(rp.Desired(spec_hash="", **self.desired_settings))
        self.container = params["container"]
        self.network = (self.container["networks"] or [None])[0]
        self.rollout_id = uuid.uuid4().hex[:12]
        self.host_pattern = re.compile(rf"^{re.escape(self.service)}-[0-9]+-[0-9]+$")
        self.client: DockerClient | None = None
        self.balancer = make_balancer(params["balancer"])
        self.generation = 0
        self._stopper = ThreadPoolExecutor(max_workers=4)
        self._stopping: list[tuple[str, Future]] = []

    # run ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.client = DockerClient(self.params["docker_host"])
        image = require_verified(self.client, self.params["image"], self.params["require_verified"])
        self.image_id = image["Id"]
        self.image_labels = (image.get("Config") or {}).get("Labels") or {}
        self.balancer.check()
        desired = rp.Desired(spec_hash=self._spec_hash(), **self.desired_settings)

        observation = self._observe()
        plan = rp.plan_rollout(observation.hosts, desired)
        journal = Journal(self.client, self.service)
        if self.context.check_mode or not (plan.changed or observation.stale_servers or journal.read()):
            return self._result(plan, started, changed=plan.changed or bool(observation.stale_servers))

        lock = ServiceLock(self.client, self.service, self.image_id, self.rollout_id, self.params["lock_timeout"],
                           self.progress)
        lock.acquire()
        try:
            recovered = self._recover_interrupted(journal)
            observation = self._observe()
            self._detach_stale(observation)
            plan = rp.plan_rollout(observation.hosts, desired)
            if not plan.changed:
                return self._result(plan, started, changed=bool(recovered or observation.stale_servers),
                                    recovered=recovered)
            self.generation = plan.generation
            self._announce(plan)
            ledger = Ledger(self.params["ledger"] or default_ledger_path())
            record = ledger.new_record("rollout", self.context.basedir, rollout=self.rollout_id, service=self.service,
                                       image_id=self.image_id, inputs_hash=self.image_labels.get(LABEL_INPUTS_HASH),
                                       generation=plan.generation, strategy=self.params["strategy"],
                                       replicas=self.params["replicas"], live_before=plan.live_before)
            journal.write(self.rollout_id, plan.live_before, plan.new_hosts, self.image_id)
            try:
                self._apply(plan.steps, observation.records)
            except InfraError as error:
                self._fail(error, plan, journal, ledger, record, started)
            self._retire_old_generations(plan)
            journal.clear()
            duration = round(time.monotonic() - started, 3)
            ledger.append(dict(record, result="succeeded", added=plan.new_hosts, removed=plan.retired,
                               live=plan.live_after, duration=duration))
            return self._result(plan, started, changed=True, recovered=recovered)
        finally:
            lock.release()
            self._stopper.shutdown(wait=True)

    def _fail(self, error: InfraError, plan: rp.Plan, journal: Journal, ledger: Ledger, record: dict[str, Any],
              started: float) -> None:
        self.progress(f"rollout {self.service}: {error.message} Reverting to {', '.join(plan.live_before) or 'nothing'}.")
        try:
            self._revert(plan.live_before, plan.new_hosts)
        except InfraError as revert_error:
            ledger.append(dict(record, result="failed", error=error.message, revert_error=revert_error.message,
                               duration=round(time.monotonic() - started, 3)))
            raise InfraError(f"Rollout of {self.service} to generation {plan.generation} failed: {error.message} "
                             f"Reverting also failed: {revert_error.message} The next run of this rollout puts "
                             "the previous hosts back first.", host=error.details.get("host")) from None
        journal.clear()
        ledger.append(dict(record, result="rolled back", error=error.message, live=plan.live_before,
                           duration=round(time.monotonic() - started, 3)))
        kept = ", ".join(plan.live_before) or "no host (this was the first rollout)"
        raise InfraError(f"Rollout of {self.service} to generation {plan.generation} failed and was rolled back: "
                         f"{error.message} Live again: {kept}; the new hosts were removed.",
                         host=error.details.get("host"), rolled_back=True, live=plan.live_before,
                         generation=plan.generation, duration=round(time.monotonic() - started, 3)) from None

    # observe ------------------------------------------------------------------------------------
    def _spec_hash(self) -> str:
        spec = {"image_id": self.image_id, "port": self.params["port"], "container": self.container}
        return sha256_hex(canonical_json(spec))

    def _observe(self) -> Observation:
        containers = self.client.containers_with_labels({LABEL_SERVICE: self.service})
        servers = self.balancer.members(self.host_pattern.match)
        by_address = {(server.address, server.port): server for server in servers}
        by_name = {server.name: server for server in servers}
        observation = Observation()
        for inspected in containers:
            labels = inspected["Config"].get("Labels") or {}
            name = inspected["Name"].lstrip("/")
            if not self.host_pattern.match(name) or LABEL_GENERATION not in labels:
                continue
            running = bool((inspected.get("State") or {}).get("Running"))
            address = container_address(inspected, self.network) if running else None
            server = by_address.pop((address, self.params["port"]), None) if address else None
            if server is None and name in by_name and (by_name[name].address, by_name[name].port) in by_address:
                server = by_address.pop((by_name[name].address, by_name[name].port))
            balancer_state = server.admin_state if server else None
            if isinstance(self.balancer, NoBalancer) and running:
                balancer_state = "ready"
            observation.hosts.append(rp.Host(name, int(labels[LABEL_GENERATION]), int(labels.get(LABEL_INDEX, 0)),
                                             labels.get(LABEL_SPEC_HASH, ""), running, balancer_state))
            observation.records[name] = HostRecord(name, inspected["Id"], address, server.name if server else None)
        observation.stale_servers = [server.name for server in by_address.values()]
        return observation

    def _detach_stale(self, observation: Observation) -> None:
        for server in observation.stale_servers:
            self.progress(f"rollout {self.service}: taking stale server {server} out of the balancer")
            self.balancer.detach(server)

    # apply --------------------------------------------------------------------------------------
    def _announce(self, plan: rp.Plan) -> None:
        self.progress(f"rollout {self.service}: generation {plan.generation} from {short_id(self.image_id)} "
                      f"({plan.kind}, {self.params['strategy']}; {plan.reason}); {len(plan.steps)} steps")

    def _apply(self, steps: list[rp.Step], records: dict[str, HostRecord], prefix: str = "") -> None:
        try:
            for step in steps:
                self.progress(f"rollout {self.service} {prefix or f'gen {self.generation}'}: {step.describe()}")
                getattr(self, f"_step_{step.action}")(list(step.hosts), records, step)
        finally:
            self._finish_stops()

    def _step_start(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            index = int(name.rsplit("-", 1)[1])
            labels = dict(self.container["labels"])
            labels.update({LABEL_SERVICE: self.service, LABEL_GENERATION: str(self.generation),
                           LABEL_INDEX: str(index), LABEL_IMAGE_ID: self.image_id, LABEL_SPEC_HASH: self._spec_hash(),
                           LABEL_ROLLOUT: self.rollout_id, LABEL_PORT: str(self.params["port"]),
                           LABEL_INPUTS_HASH: self.image_labels.get(LABEL_INPUTS_HASH, "")})
            options: dict[str, Any] = {"read_only": self.container["read_only"],
                                       "cap_drop": self.container["cap_drop"] or None,
                                       "restart_policy": {"Name": self.container["restart_policy"]}}
            if self.container["memory"]:
                options["mem_limit"] = self.container["memory"]
            container_id = self.client.create_container(self.image_id, name, labels,
                                                        {str(key): str(value) for key, value in self.container["env"].items()},
                                                        self.container["networks"], **options)
            records[name] = HostRecord(name, container_id)
            try:
                self.client.start(container_id)
            finally:
                self._refresh_address(records[name])

    def _step_start_stopped(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            self.client.start(records[name].container_id)
            self._refresh_address(records[name])

    def _refresh_address(self, record: HostRecord) -> None:
        inspected = self.client.container(record.container_id) or {}
        record.address = container_address(inspected, self.network)

    def _step_wait_healthy(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        def gate(name: str) -> None:
            record = records[name]
            seconds = wait_healthy(self.client, self.health, name, record.container_id, record.address,
                                   self.progress)
            self.progress(f"rollout {self.service}: {name} is healthy after {seconds:.1f} s ({self.health.describe()})")
        run_for_each(names, gate)

    def _step_add(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        def add(name: str) -> None:
            record = records[name]
            if not record.address:
                raise InfraError(f"host {name} has no address on network {self.network or 'bridge'}.", host=name)
            record.server = self.balancer.add(name, record.address, self.params["port"])
        run_for_each(names, add)

    def _step_observe(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        deadline = time.monotonic() + step.seconds
        while time.monotonic() < deadline:
            for name in names:
                record = records[name]
                problem = container_problem(self.client, record.container_id)
                passed, seen = (False, problem) if problem else self.health.probe(self.client, record.container_id,
                                                                                  record.address)
                if not passed:
                    raise InfraError(f"canary {name} failed its {self.health.describe()} while observed: {seen}.",
                                     host=name)
            time.sleep(self.health.interval)

    def _step_drain(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            if records[name].server:
                self.balancer.set_state(records[name].server, "drain")

    def _step_ready(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            if records[name].server:
                self.balancer.set_state(records[name].server, "ready")

    def _step_wait_drained(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        def drained(name: str) -> None:
            server = records[name].server
            if server and not self.balancer.wait_drained(server, self.params["drain_timeout"]):
                self.progress(f"rollout {self.service}: {name} still had sessions after drain_timeout "
                              f"({self.params['drain_timeout']:g} s); taking it out anyway")
        run_for_each(names, drained)

    def _step_detach(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            if records[name].server:
                self.balancer.detach(records[name].server)
                records[name].server = None

    def _step_stop(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        # The hosts are out of the balancer already, so the next batch need not wait for them to exit.
        for name in names:
            self._stopping.append((name, self._stopper.submit(self.client.stop, records[name].container_id,
                                                              self.params["stop_timeout"])))

    def _finish_stops(self) -> None:
        for name, stopping in self._stopping:
            error = stopping.exception()
            if error:
                self.progress(f"rollout {self.service}: {name} is out of the balancer but did not stop: {error}")
        self._stopping = []

    def _step_remove(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            if name in records:
                self.client.remove_container(records[name].container_id)

    # failure and recovery -----------------------------------------------------------------------
    def _revert(self, previous_live: list[str], new_hosts: list[str]) -> None:
        observation = self._observe()
        self._apply(rp.plan_revert(observation.hosts, previous_live, new_hosts), observation.records, "revert")

    def _recover_interrupted(self, journal: Journal) -> str | None:
        unfinished = journal.read()
        if not unfinished:
            return None
        self.progress(f"rollout {self.service}: rollout {unfinished['rollout']} (started {unfinished['started']}) "
                      f"did not finish; putting {', '.join(unfinished['previous_live']) or 'nothing'} back first")
        self._revert(unfinished["previous_live"], unfinished["new_hosts"])
        journal.clear()
        return unfinished["rollout"]

    def _retire_old_generations(self, plan: rp.Plan) -> None:
        live = set(plan.live_after)
        observation = self._observe()
        doomed = [name for name in plan.removed if name in observation.records and name not in live]
        if doomed:
            self.progress(f"rollout {self.service}: removing hosts beyond keep_previous: {', '.join(doomed)}")
            self._step_remove(doomed, observation.records, rp.Step(rp.REMOVE, tuple(doomed)))

    # result -------------------------------------------------------------------------------------
    def _result(self, plan: rp.Plan, started: float, changed: bool, recovered: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "changed": changed, "service": self.service, "generation": plan.generation, "image_id": self.image_id,
            "kind": plan.kind, "reason": plan.reason, "added": plan.new_hosts, "removed": plan.retired,
            "deleted": plan.removed, "live": plan.live_after, "live_before": plan.live_before,
            "plan": [step.as_dict() for step in plan.steps], "duration": round(time.monotonic() - started, 3),
            "rollout_id": self.rollout_id,
        }
        if recovered:
            result["recovered"] = recovered
        if self.context.diff_mode:
            result["diff"] = {"before": "".join(f"{name}\n" for name in plan.live_before),
                              "after": "".join(f"{name}\n" for name in plan.live_after),
                              "before_header": f"{self.service} live hosts", "after_header": f"{self.service} live hosts"}
        verb = "would " if self.context.check_mode and plan.changed else ""
        result["msg"] = (f"{self.service}: {verb}{plan.kind} to generation {plan.generation} "
                         f"({len(plan.new_hosts)} added, {len(plan.retired)} removed)" if plan.changed
                         else f"{self.service}: generation {plan.generation} is live and up to date")
        return result
