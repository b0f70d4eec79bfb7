"""An in-memory host back-end, store and balancer: the seam (service/backend.py, store.py, balancer/base.py)
implemented with dicts, for the transaction's and planner's unit tests. No Docker, no network."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Arrival, Member, Outcome
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable, InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import FoundHost, HostRecord, Placed
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import Entry


class MemoryStore:
    where = "memory"

    def __init__(self) -> None:
        self.clock = 1_000_000.0
        self.markers: dict[str, Entry] = {}
        self.records: dict[str, Entry] = {}
        self._ids = itertools.count(1)

    def create_marker(self, name: str, labels: dict[str, str]) -> str | None:
        if name in self.markers:
            return None
        self.markers[name] = Entry(name, f"marker-{next(self._ids)}", self.clock, dict(labels))
        return self.markers[name].id

    def marker(self, name: str) -> Entry | None:
        return self.markers.get(name)

    def remove_marker(self, marker_id: str) -> None:
        self.markers = {name: entry for name, entry in self.markers.items() if entry.id != marker_id}

    def put(self, name: str, labels: dict[str, str]) -> None:
        self.records.setdefault(name, Entry(name, name, self.clock, dict(labels)))

    def replace(self, name: str, labels: dict[str, str]) -> None:
        self.records[name] = Entry(name, name, self.clock, dict(labels))

    def get(self, name: str) -> dict[str, str] | None:
        return dict(self.records[name].labels) if name in self.records else None

    def find(self, label: str, value: str) -> list[Entry]:
        return [entry for entry in self.records.values() if entry.labels.get(label) == value]

    def remove(self, name: str) -> None:
        self.records.pop(name, None)

    def now(self) -> float:
        return self.clock


@dataclass
class MemoryHost:
    engine: str
    host_id: str
    labels: dict[str, str]
    running: bool = False
    status: str = "created"
    address: str | None = None
    healthy: bool = True


@dataclass
class MemoryBackend:
    """Hosts of one service on named engines; `unhealthy` names hosts whose health command fails."""

    service: str
    engines: list[str] = field(default_factory=lambda: ["one"])
    store_: MemoryStore = field(default_factory=MemoryStore)
    hosts_: dict[str, MemoryHost] = field(default_factory=dict)
    unhealthy: set[str] = field(default_factory=set)
    lost_engines: set[str] = field(default_factory=set)
    machines: dict[str, str] = field(default_factory=dict)  # engine -> its machine (its own name otherwise)
    down: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    port: int = 8000
    _addresses: Any = field(default_factory=lambda: itertools.count(2))

    @property
    def engine_names(self) -> list[str]:
        return list(self.engines)

    @property
    def several(self) -> bool:
        return len(self.engines) > 1

    def machine_of(self, engine: str) -> str:
        return self.machines.get(engine, engine)

    def store(self) -> MemoryStore:
        return self.store_

    def _reach(self, engine: str) -> None:
        if engine in self.lost_engines:
            raise EngineUnreachable(f"engine {engine} stopped answering", engine=engine)

    def hosts(self, include_stopped: bool = True) -> list[FoundHost]:
        for engine in self.engines:
            if engine not in self.down:
                self._reach(engine)
        return [FoundHost(name, host.engine, host.host_id, host.labels, host.running, host.status,
                          (host.address, self.port) if host.running and host.address else None)
                for name, host in sorted(self.hosts_.items())
                if host.engine not in self.down and (include_stopped or host.running)]

    def place(self, plan: rp.Plan, observed: list[rp.Host]) -> Placed:
        engine_of = {host.name: host.engine for host in observed}
        return Placed({name: engine_of.get(name) or self.engines[int(name.rsplit("-", 1)[1]) % len(self.engines)]
                       for name in plan.new_hosts})

    def prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        return None

    def create(self, name: str, engine: str, spec: HostSpec, rollout_id: str, balancer: str | None = None) -> str:
        self._reach(engine)
        if name in self.hosts_:
            raise InfraError(f"A host named {name} already exists.")
        _service, generation, index = rp.parse_host_name(name)
        self.hosts_[name] = MemoryHost(engine, f"id-{name}", spec.labels(generation, index, rollout_id, None, balancer))
        self.calls.append(("create", name))
        return f"id-{name}"

    def _host(self, record: HostRecord) -> MemoryHost:
        self._reach(record.engine)
        return self.hosts_[record.name]

    def start(self, host: HostRecord) -> None:
        found = self._host(host)
        found.running, found.status = True, "running"
        found.address = found.address or f"10.0.0.{next(self._addresses)}"
        self.calls.append(("start", host.name))

    def endpoint(self, host: HostRecord) -> tuple[str | None, int]:
        found = self.hosts_.get(host.name)
        return (found.address if found and found.running else None), self.port

    def request_stop(self, host: HostRecord, timeout: int, answer_wait: float) -> bool:
        self.stop(host, timeout)
        return True

    def stop(self, host: HostRecord, timeout: int) -> None:
        found = self._host(host)
        found.running, found.status = False, "exited"
        self.calls.append(("stop", host.name))

    def kill(self, host: HostRecord) -> None:
        self.stop(host, 0)

    def wait_exited(self, host: HostRecord, timeout: float) -> bool:
        return not self._host(host).running

    def remove(self, host: HostRecord) -> None:
        self._reach(host.engine)
        self.hosts_.pop(host.name, None)
        self.calls.append(("remove", host.name))

    def run_command(self, host: HostRecord, command: list[str]) -> tuple[int, str]:
        return (1, "unhealthy") if host.name in self.unhealthy else (0, "ok")

    def problem(self, host: HostRecord) -> str | None:
        found = self.hosts_.get(host.name)
        return None if found and found.running else "it is not running"

    def mark_unreachable(self, error: EngineUnreachable) -> str | None:
        engine = error.details.get("engine")
        if engine in self.engines:
            self.down[engine] = error.message
            return engine
        return None

    def answers_again(self, error: EngineUnreachable) -> bool:
        return error.details.get("engine") in self.engines and error.details.get("engine") not in self.lost_engines

    def close(self) -> None:
        return None

    def live_hosts(self) -> list[str]:
        return sorted(name for name, host in self.hosts_.items() if host.running)


class MemoryBalancer:
    name = "memory backend web"
    tracks_membership = True

    def __init__(self) -> None:
        self.servers: dict[str, Member] = {}
        self.exchanges: list[tuple[str, int]] = []  # (call, servers) of the *_all kind: one exchange each

    def check(self) -> None:
        return None

    def members(self, is_ours: Callable[[str], bool]) -> list[Member]:
        return [server for name, server in sorted(self.servers.items()) if is_ours(name)]

    def lost(self, expected: Mapping[str, tuple[str, int]]) -> list[str]:
        return [name for name in expected if name not in self.servers]

    def register(self, host: str, address: str, port: int) -> str:
        self.servers[host] = Member(host, address, port, "drain")
        return host

    def activate(self, server: str, host: str, address: str, port: int) -> str:
        self.servers[server] = Member(server, address, port, "ready")
        return server

    def set_state(self, server: str, state: str) -> None:
        found = self.servers[server]
        self.servers[server] = Member(found.name, found.address, found.port, state)

    def wait_drained(self, server: str, timeout: float) -> bool:
        return True

    def detach(self, server: str) -> None:
        self.servers.pop(server, None)

    def register_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        self.exchanges.append(("register_all", len(arrivals)))
        return [self.register(arrival.host, arrival.address, arrival.port) for arrival in arrivals]

    def activate_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        self.exchanges.append(("activate_all", len(arrivals)))
        return [self.activate(arrival.server or arrival.host, arrival.host, arrival.address, arrival.port)
                for arrival in arrivals]

    def set_states(self, servers: Sequence[str], state: str) -> None:
        self.exchanges.append(("set_states", len(servers)))
        for server in servers:
            self.set_state(server, state)

    def wait_all_drained(self, servers: Sequence[str], timeout: float) -> list[str]:
        return []

    def detach_all(self, servers: Sequence[str]) -> None:
        self.exchanges.append(("detach_all", len(servers)))
        for server in servers:
            self.detach(server)

    def describe(self) -> dict[str, Any]:
        return {"type": "memory", "backend": "web"}

    def ready(self) -> list[str]:
        return sorted(name for name, server in self.servers.items() if server.admin_state == "ready")
