# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A service's hosts: what they are (labels), what runs now (observe), and carrying out plan steps.

Rollouts, rollbacks and drift healing all observe the same way and apply the same steps. A service
runs on one or more engines (a fleet of one is the engine named "default"): observe lists them all
at once and every host carries its engine, so each step goes to the engine its host runs on.
Records that belong to the service rather than to a host (stops still under way) live on the first
engine, the coordinator.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.adapter import HAProxyBalancer, NoBalancer
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy import Server
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, canonical_json, sha256_hex
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import never_interrupted
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_SERVICE, HostLabels, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import (
    DockerClient,
    EngineUnreachable,
    container_address,
    published_port,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.health import (
    HealthCheck,
    container_problem,
    run_for_each,
    wait_healthy,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.stopping import PendingStops, deadline_text

# A DNS label that may also hold '_': how people name services (Compose, Kubernetes, HAProxy all take '-').
SERVICE_PATTERN = re.compile(r"^[a-z]([a-z0-9_-]{0,61}[a-z0-9])?$")
SERVICE_MAX_LENGTH = 63
STOP_ANSWER_WAIT = 1.0  # seconds a stop is waited for before it is left to the engine
STOP_SLACK = 2.0  # seconds beyond stop_timeout by which the engine will have killed a host
DEFAULT_ENGINE = "default"  # the engine of a fleet of one (docker_host), as engines/declaration.py names it
ADDRESSING = ("container", "published")


def validate_service(service: object) -> str:
    text = service if isinstance(service, str) else ""
    if not SERVICE_PATTERN.fullmatch(text) or len(text) > SERVICE_MAX_LENGTH:
        shown = repr(service)[:80]
        raise InfraError(f"service {shown} must start with a lower-case letter, end with a letter or digit and hold "
                         f"only lower-case letters, digits, '-' and '_' (at most {SERVICE_MAX_LENGTH}); it names "
                         "hosts, inventory groups and balancer servers.")
    return text


@dataclass(frozen=True)
class HostSpec:
    """Everything a host of a service is made from. Hosts carry it in labels, so a later rollback or
    heal can make more of them without being told again."""

    service: str
    image_id: str
    port: int
    container: dict[str, Any]
    health: dict[str, Any]
    inputs_hash: str = ""

    @property
    def spec_hash(self) -> str:
        return sha256_hex(canonical_json({"image_id": self.image_id, "port": self.port, "container": self.container}))

    @property
    def network(self) -> str | None:
        return (self.container.get("networks") or [None])[0]

    def labels(self, generation: int, index: int, rollout_id: str, engine: str | None = None) -> dict[str, str]:
        labels = {str(key): str(value) for key, value in (self.container.get("labels") or {}).items()}
        labels.update(HostLabels(
            service=self.service, generation=generation, index=index, image_id=self.image_id,
            spec_hash=self.spec_hash, rollout=rollout_id, port=self.port, inputs_hash=self.inputs_hash,
            spec={"port": self.port, "container": self.container, "health": self.health},
            engine=engine).to_labels())
        return labels

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> HostSpec | None:
        """The spec a host was made from, or None for containers made another way."""
        host = HostLabels.from_labels(labels)
        if host.service is None or host.image_id is None or host.spec is None:
            return None
        try:
            return cls(host.service, host.image_id, int(host.spec["port"]), host.spec["container"],
                       host.spec["health"], host.inputs_hash or "")
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class HostRecord:
    """A host as the executor knows it: its container, address and balancer server."""

    name: str
    container_id: str
    address: str | None = None
    server: str | None = None
    stopping: bool = False  # its stop was sent and the engine is still finishing it (see stopping.py)
    status: str = ""  # the container's state: running, exited, created...
    engine: str = DEFAULT_ENGINE  # the engine it runs on
    port: int | None = None  # where the address answers for the service's port (a published port, or it)


@dataclass
class Observation:
    hosts: list[rp.Host] = field(default_factory=list)
    records: dict[str, HostRecord] = field(default_factory=dict)
    stale_servers: list[str] = field(default_factory=list)  # balancer servers of ours pointing at no running host

    def live(self) -> list[str]:
        return [host.name for host in self.hosts if host.live]


def match_servers(endpoints: dict[str, tuple[str, int]], servers: list[Server]) -> tuple[dict[str, Server], list[str]]:
    """Which server is each running host's (host name -> its address and port), and which servers are
    stale: pointing at no running host, or a second server at a host's address. A server belongs to
    the host at its address whatever its name (addresses are reused); among several, the one named
    like the host wins, then one taking traffic."""
    by_endpoint: dict[tuple[str, int], list[Server]] = {}
    for server in servers:
        by_endpoint.setdefault((server.address, server.port), []).append(server)
    matched: dict[str, Server] = {}
    duplicates: list[Server] = []
    for name, endpoint in endpoints.items():
        candidates = by_endpoint.pop(endpoint, [])
        if not candidates:
            continue
        candidates.sort(key=lambda server: (server.name != name, ADMIN_PREFERENCE.get(server.admin_state, 9),
                                            server.name))
        matched[name] = candidates[0]
        duplicates += candidates[1:]
    stale = sorted(server.name for group in [*by_endpoint.values(), duplicates] for server in group)
    return matched, stale


ADMIN_PREFERENCE = {"ready": 0, "drain": 1, "maint": 2}


class ServiceHosts:
    """Observes a service's hosts and balancer membership, and applies plan steps to them."""

    def __init__(self, clients: DockerClient | Mapping[str, DockerClient], balancer: HAProxyBalancer | NoBalancer,
                 spec: HostSpec, progress: Callable[[str], None], drain_timeout: float = 30, stop_timeout: int = 10,
                 addressing: str = "container", addresses: Mapping[str, str | None] | None = None,
                 binds: Mapping[str, str] | None = None) -> None:
        """clients: one engine, or engine name -> client in declaration order (the first coordinates).
        addressing: container (the balancer and the health check use the container's address on its
        network) or published (the port is published on the engine's machine, whose address is
        addresses[engine], 127.0.0.1 when it has none, and bound there to binds[engine])."""
        self.clients = dict(clients) if isinstance(clients, Mapping) else {DEFAULT_ENGINE: clients}
        if not self.clients:
            raise InfraError("a service needs at least one engine.")
        if addressing not in ADDRESSING:
            raise InfraError(f"addressing {addressing!r} is not one of {', '.join(ADDRESSING)}.")
        self.client = next(iter(self.clients.values()))  # the coordinator
        self.addressing = addressing
        self.addresses = dict(addresses or {})
        self.binds = dict(binds or {})
        self.placement: dict[str, str] = {}  # host to create -> its engine (the first engine otherwise)
        self.down: dict[str, str] = {}  # engines that stopped answering during this run -> why
        self.balancer = balancer
        self.spec = spec
        self.service = spec.service
        self.progress = progress
        self.drain_timeout = drain_timeout
        self.stop_timeout = stop_timeout
        self.health = HealthCheck.from_options(spec.health, spec.port)
        self.host_pattern = re.compile(rf"^{re.escape(self.service)}-[0-9]+-[0-9]+$")
        self.generation = 0
        self.rollout_id = ""
        self.check_interrupted: Callable[[], None] = never_interrupted
        self.pending_stops = PendingStops(self.client, self.service)
        self.still_stopping: dict[str, float] = {}  # hosts this run left for the engine to finish stopping
        self.doing: rp.Step | None = None  # the step under way, for errors that stop the whole run
        self.before_stop: Callable[[list[str]], None] | None = None  # notes a stop before it is sent
        self.wait_allowance: Callable[[], float] | None = None  # how long a drain may still wait, if limited
        self._background = ThreadPoolExecutor(max_workers=16)
        self._stopping: list[tuple[str, Future]] = []
        self._creating: dict[str, Future] = {}
        self._registering: dict[str, Future] = {}
        self._draining: set[str] = set()

    def close(self) -> None:
        self._finish_background_work()
        self._background.shutdown(wait=True)

    # engines ------------------------------------------------------------------------------------
    @property
    def multi_engine(self) -> bool:
        return len(self.clients) > 1

    def engine_client(self, engine: str) -> DockerClient:
        return self.clients[engine]

    def client_of(self, record: HostRecord) -> DockerClient:
        return self.clients.get(record.engine) or self.client

    def where(self, name: str, records: Mapping[str, HostRecord] | None = None) -> str:
        """The engine of a host: where it runs (records), else where it is placed, else the first."""
        record = (records or {}).get(name)
        if record is not None:
            return record.engine
        return self.placement.get(name) or next(iter(self.clients))

    def mark_unreachable(self, error: EngineUnreachable) -> str | None:
        """Notes the engine an EngineUnreachable came from, so that observing skips it; its name."""
        where = error.details.get("engine")
        for name, client in self.clients.items():
            if client.where == where:
                self.down[name] = error.message
                return name
        return None

    def _list_containers(self) -> list[tuple[str, dict[str, Any]]]:
        """(engine, container) of the service on every reachable engine, listed in parallel."""
        engines = [name for name in self.clients if name not in self.down]

        def listing(engine: str) -> list[dict[str, Any]]:
            return self.clients[engine].containers_with_labels({LABEL_SERVICE: self.service}, inspect=False)
        if len(engines) == 1:
            return [(engines[0], container) for container in listing(engines[0])]
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            listed = list(pool.map(listing, engines))
        return [(engine, container) for engine, containers in zip(engines, listed, strict=True)
                for container in containers]

    def endpoint(self, inspected: dict[str, Any], engine: str, port: int | None = None) -> tuple[str | None, int]:
        """Where the balancer and the health check reach a host: (address, port), per addressing."""
        port = port or self.spec.port
        if self.addressing == "published":
            published = published_port(inspected, port)
            return (self.addresses.get(engine) or "127.0.0.1", published) if published else (None, port)
        return container_address(inspected, self.spec.network), port

    # observe ------------------------------------------------------------------------------------
    def observe(self) -> Observation:
        containers = self._list_containers()
        servers = self.balancer.members(lambda name: bool(self.host_pattern.match(name)))
        pending = self.pending_stops.read()
        observation = Observation()
        endpoints: dict[str, tuple[str, int]] = {}
        found: list[tuple[str, dict[str, Any], HostLabels, bool, bool]] = []
        for engine, inspected in containers:
            host = HostLabels.from_labels(image_labels(inspected))
            name = inspected["Name"].lstrip("/")
            if not self.host_pattern.match(name) or host.generation is None:
                continue
            if any(name == seen[1]["Name"].lstrip("/") for seen in found):
                self.progress(f"{self.service}: a second container named {name} runs on engine {engine}; "
                              "it is left alone")
                continue
            # A host whose stop the engine is still finishing counts as stopped: it left the balancer.
            stopping = name in pending and bool((inspected.get("State") or {}).get("Running"))
            running = bool((inspected.get("State") or {}).get("Running")) and not stopping
            if running:
                address, port = self.endpoint(inspected, engine, host.port)
                if address:
                    endpoints[name] = (address, port)
            found.append((engine, inspected, host, running, stopping))
        matched, observation.stale_servers = match_servers(endpoints, servers)
        for engine, inspected, host, running, stopping in found:
            name = inspected["Name"].lstrip("/")
            server = matched.get(name)
            balancer_state = server.admin_state if server else None
            if isinstance(self.balancer, NoBalancer) and running:
                balancer_state = "ready"
            observation.hosts.append(rp.Host(name, host.generation or 0, host.index or 0, host.spec_hash or "",
                                             running, balancer_state, engine))
            endpoint = endpoints.get(name)
            observation.records[name] = HostRecord(name, inspected["Id"], endpoint[0] if endpoint else None,
                                                   server.name if server else None, stopping,
                                                   str((inspected.get("State") or {}).get("Status") or ""),
                                                   engine=engine, port=endpoint[1] if endpoint else None)
        return observation

    def settle_stops(self, observation: Observation) -> None:
        """Forgets recorded stops that have finished (the host exited or is gone), so that a host started
        again later by hand is not taken for one still stopping."""
        pending = self.pending_stops.read()
        finished = [name for name in pending if not (name in observation.records and observation.records[name].stopping)]
        if finished:
            self._forget_stops(finished)

    def detach_stale(self, observation: Observation) -> None:
        for server in observation.stale_servers:
            self.progress(f"{self.service}: taking stale server {server} out of the balancer")
            self.balancer.detach(server)

    def ensure_membership(self, live: list[str], what: str) -> None:
        """After the steps: every server of the service is a live host at its current address (or a free
        slot), and every live host has a server taking traffic. Stale servers are taken out; a live host
        without its server fails the task, naming it."""
        observation = self.observe()
        self.detach_stale(observation)
        if isinstance(self.balancer, NoBalancer):
            return
        by_name = {host.name: host for host in observation.hosts}
        missing = [name for name in live if not (name in by_name and by_name[name].live)]
        if missing:
            states = ", ".join(f"{name} ({self._membership(by_name.get(name))})" for name in missing)
            raise InfraError(f"after the {what}, {len(missing)} live host(s) of {self.service} are not taking traffic "
                             f"in {self.balancer.name}: {states}.", hosts=missing)

    @staticmethod
    def _membership(host: rp.Host | None) -> str:
        if host is None:
            return "its container is gone"
        if not host.running:
            return "not running"
        return f"server in {host.balancer_state}" if host.balancer_state else "no server"

    # apply --------------------------------------------------------------------------------------
    def apply(self, steps: list[rp.Step], records: dict[str, HostRecord], what: str,
              interrupted: Callable[[], None] = never_interrupted) -> None:
        """Carries out the steps in order; `what` names the work in progress lines. interrupted() is
        called before each step and health check, and raises to stop the steps there."""
        self.check_interrupted = interrupted
        try:
            for position, step in enumerate(steps):
                self.check_interrupted()
                if step.batch > 1 and steps[position - 1].batch != step.batch:
                    self._keep_serving(records)
                self.progress(f"{self.service} {what}: {self.describe(step, records)}")
                self.doing = step
                getattr(self, f"_step_{step.action}")(list(step.hosts), records, step)
                if step.action == rp.START:
                    self._create_ahead(steps[position + 1:])
        finally:
            self.check_interrupted = never_interrupted
            self._finish_background_work()

    def describe(self, step: rp.Step, records: Mapping[str, HostRecord] | None = None) -> str:
        """The step as progress lines say it: with each host's engine when there is more than one."""
        if not self.multi_engine:
            return step.describe()
        return rp.Step(step.action, tuple(f"{name} on {self.where(name, records)}" for name in step.hosts),
                       step.batch, step.seconds).describe()

    def _create_ahead(self, steps: list[rp.Step]) -> None:
        """Creates (not starts) the next batch's hosts while this batch is gated and swapped: a created
        container uses no capacity, and the next batch then only has to start it."""
        upcoming = next((step for step in steps if step.action == rp.START), None)
        for name in upcoming.hosts if upcoming else ():
            self._creating[name] = self._background.submit(self._create, name)

    def _create(self, name: str) -> str:
        container = self.spec.container
        _service, generation, index = rp.parse_host_name(name)
        options: dict[str, Any] = {"read_only": container.get("read_only", False),
                                   "cap_drop": container.get("cap_drop") or None,
                                   "restart_policy": {"Name": container.get("restart_policy", "unless-stopped")}}
        if container.get("memory"):
            options["mem_limit"] = container["memory"]
        environment = {str(key): str(value) for key, value in (container.get("env") or {}).items()}
        engine = self.where(name)
        if self.addressing == "published":
            options["publish"] = (self.spec.port, self.binds.get(engine) or "127.0.0.1")
        labels = self.spec.labels(generation, index, self.rollout_id, engine if self.multi_engine else None)
        return self.clients[engine].create_container(self.spec.image_id, name, labels, environment,
                                                     container.get("networks") or [], **options)

    def _step_start(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            creating = self._creating.pop(name, None)
            container_id = creating.result() if creating else self._create(name)
            records[name] = HostRecord(name, container_id, engine=self.where(name))
            try:
                self.client_of(records[name]).start(container_id)
            finally:
                self._refresh_address(records[name])

    def _step_start_stopped(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        finishing = [name for name in names if records[name].stopping or self._stop_under_way(name)]
        if finishing:
            # Out of the balancer and drained already, so the stop the engine is finishing loses nothing
            # if it ends now: killed, the host can be started again at once instead of after stop_timeout.
            self.progress(f"{self.service}: finishing the stop of {', '.join(finishing)} before starting it again")
            run_for_each(finishing, lambda name: self._finish_stop(records[name]))
        self._forget_stops(names)  # running again, these hosts are no longer stopping, whoever sent the stop
        for name in names:
            self.client_of(records[name]).start(records[name].container_id)
            records[name].stopping = False
            self._refresh_address(records[name])

    def _stop_under_way(self, name: str) -> bool:
        return any(stopping_name == name and not future.done() for stopping_name, future in self._stopping)

    def _finish_stop(self, record: HostRecord) -> None:
        self.client_of(record).kill(record.container_id)
        if not self.client_of(record).wait_exited(record.container_id, max(5.0, float(self.stop_timeout))):
            raise InfraError(f"host {record.name} did not exit after SIGKILL, so it cannot be started again.",
                             host=record.name)

    def _refresh_address(self, record: HostRecord) -> None:
        inspected = self.client_of(record).container(record.container_id) or {}
        record.address, record.port = self.endpoint(inspected, record.engine)

    def _step_wait_healthy(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        def gate(name: str) -> None:
            record = records[name]
            # After the first passing check the host is registered with the balancer (no traffic yet),
            # so HAProxy's own check runs while the gate waits for the remaining passes.
            seconds = wait_healthy(self.client_of(record), self.health, name, record.container_id, record.address,
                                   self.progress, on_first_pass=lambda: self._register_ahead(record),
                                   interrupted=self.check_interrupted, port=record.port)
            self.progress(f"{self.service}: {name} is healthy after {seconds:.1f} s ({self.health.describe()})")
        try:
            run_for_each(names, gate)
        finally:
            self._finish_registrations(records)

    def _register_ahead(self, record: HostRecord) -> None:
        if record.address and record.name not in self._registering:
            self._registering[record.name] = self._background.submit(
                self.balancer.register, record.name, record.address, record.port or self.spec.port)

    def _finish_registrations(self, records: dict[str, HostRecord]) -> None:
        """Notes the server of each host registered ahead; a failed registration is retried by the add step."""
        for name, registering in self._registering.items():
            if not registering.exception():
                records[name].server = registering.result()
        self._registering = {}

    def _step_add(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        def add(name: str) -> None:
            record = records[name]
            if not record.address:
                where = ("no published port" if self.addressing == "published"
                         else f"no address on network {self.spec.network or 'bridge'}")
                raise InfraError(f"host {name} has {where}.", host=name)
            port = record.port or self.spec.port
            if not record.server:
                record.server = self.balancer.register(name, record.address, port)
            try:
                record.server = self.balancer.activate(record.server, name, record.address, port)
            except InfraError:
                record.server = None  # activate took it out of the balancer again
                raise
        run_for_each(names, add)

    def _step_observe(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        deadline = time.monotonic() + step.seconds
        while time.monotonic() < deadline:
            self.check_interrupted()
            for name in names:
                record = records[name]
                client = self.client_of(record)
                problem = container_problem(client, record.container_id)
                passed, seen = (False, problem) if problem else self.health.probe(client, record.container_id,
                                                                                  record.address, record.port)
                if not passed:
                    raise InfraError(f"canary {name} failed its {self.health.describe()} while observed: {seen}.",
                                     host=name)
            time.sleep(self.health.interval)

    def _set_state(self, names: list[str], records: dict[str, HostRecord], state: str) -> None:
        for name in names:
            server = records[name].server
            if server:
                self.balancer.set_state(server, state)

    def _step_drain(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        self._draining.update(names)
        self._set_state(names, records, "drain")

    def _step_ready(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        self._draining.difference_update(names)
        self._set_state(names, records, "ready")

    def _keep_serving(self, records: dict[str, HostRecord]) -> None:
        """Before each batch after the first: the hosts this run counts as taking traffic whose server the
        balancer lost (an HAProxy restarted without its server state) are registered and let in again, so
        such a balancer is repaired within a batch rather than after the last one."""
        serving = {record.server: record for name, record in records.items()
                   if record.server and record.address and name not in self._draining}
        lost = self.balancer.lost({server: (record.address or "", record.port or self.spec.port)
                                   for server, record in serving.items()}) if serving else []
        names = [serving[server].name for server in lost]
        if not names:
            return
        for name in names:
            self.progress(f"{self.service}: {name} lost its server in {self.balancer.name}; registering it again")
            records[name].server = None
        self._step_add(names, records, rp.Step(rp.ADD, tuple(names)))

    def _step_wait_drained(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        timeout = self.drain_timeout if self.wait_allowance is None else min(self.drain_timeout, self.wait_allowance())
        why = (f"drain_timeout ({self.drain_timeout:g} s)" if timeout == self.drain_timeout else
               f"{timeout:.0f} s, all the lease of the lock left for it while the lock cannot be renewed")

        def drained(name: str) -> None:
            server = records[name].server
            if server and not self.balancer.wait_drained(server, timeout):
                self.progress(f"{self.service}: {name} still had sessions after {why}; taking it out anyway")
        run_for_each(names, drained)

    def _step_detach(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        for name in names:
            server = records[name].server
            if server:
                self.balancer.detach(server)
                records[name].server = None

    def _step_stop(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        """The hosts are drained and out of the balancer, so nothing waits for them to exit: the stop is
        sent and, for a service that ignores SIGTERM, left to the engine, which kills the host after
        stop_timeout. They are recorded as stopping first, so any run meanwhile sees them as stopped;
        and in the journal (before_stop), so a recovery after this controller dies knows it too."""
        if self.before_stop:
            self.before_stop(names)
        deadline = time.time() + self.stop_timeout + STOP_SLACK
        self.pending_stops.write(dict(self.pending_stops.read(), **{name: deadline for name in names}))
        for name in names:
            self._stopping.append((name, self._background.submit(
                self.client_of(records[name]).request_stop, records[name].container_id, self.stop_timeout,
                STOP_ANSWER_WAIT)))

    def _finish_background_work(self) -> None:
        """Collects the stops and creations still under way. A stop that the engine has not finished after
        STOP_ANSWER_WAIT stays recorded as pending (the engine finishes it); the others are forgotten.
        A host created ahead for a batch that never ran stays as a created container of the new
        generation, which a revert removes like its other hosts."""
        stopped = []
        for name, stopping in self._stopping:
            error = stopping.exception()
            if error:
                self.progress(f"{self.service}: {name} is out of the balancer but did not stop: {error}")
            elif stopping.result():
                stopped.append(name)
            else:
                deadline = self.pending_stops.read().get(name, time.time() + self.stop_timeout)
                self.still_stopping[name] = deadline
                self.progress(f"{self.service}: {name} is drained and out of the balancer but ignores SIGTERM; "
                              f"the engine kills it at {deadline_text(deadline)} (stop_timeout {self.stop_timeout} s)")
        if self._stopping:
            self._forget_stops(stopped)
        for name, creating in self._creating.items():
            if creating.exception():
                self.progress(f"{self.service}: creating {name} ahead failed: {creating.exception()}")
        self._stopping, self._creating = [], {}

    def _forget_stops(self, names: list[str]) -> None:
        pending = self.pending_stops.read()
        if any(name in pending for name in names):
            self.pending_stops.write({name: deadline for name, deadline in pending.items() if name not in names})
        for name in names:
            self.still_stopping.pop(name, None)

    def _step_remove(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        run_for_each([name for name in names if name in records],
                     lambda name: self.client_of(records[name]).remove_container(records[name].container_id))
        self._forget_stops(names)
