# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker back-end of the host seam (service/backend.py): a service's hosts are containers on one
or more Docker engines (a fleet, fleet.py).

Every host carries its engine; each call goes to the engine its host runs on. Listing the service
is one call per engine, all engines at once. Where the balancer and the health check reach a host
depends on the fleet's addressing: the container's address on its network, or a port published on
its engine's machine.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    EngineUnreachable,
    InfraError,
    answers_within,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_SERVICE, HostLabels, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import (
    DockerClient,
    container_address,
    published_port,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import cores_of
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_drift import host_drift
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_store import DockerStore
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import Fleet, place_hosts, plan_ship, ship
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import FoundHost, HostRecord, Placed
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec


class DockerHosts:
    def __init__(self, fleet: Fleet, service: str, marker_image: str = "",
                 progress: Callable[[str], None] | None = None) -> None:
        """marker_image: an image on the coordinator that the lock's marker container is made from."""
        self.fleet = fleet
        self.service = service
        self.marker_image = marker_image
        self.progress = progress or (lambda message: None)
        self.down: dict[str, str] = dict(fleet.down)
        self.shipped: dict[str, Any] | None = None  # how the image reached the engines, when it had to
        fleet.endpoint_addresses()  # a host name in docker_host is resolved when the task starts

    # the engines --------------------------------------------------------------------------------
    @property
    def engine_names(self) -> list[str]:
        return [engine.name for engine in self.fleet.engines]

    @property
    def several(self) -> bool:
        return not self.fleet.single

    def machine_of(self, engine: str) -> str:
        return cores_of(self.fleet.engines, engine)

    def client(self, engine: str) -> DockerClient:
        return self.fleet.clients.get(engine) or self.fleet.coordinator

    def store(self) -> DockerStore:
        return DockerStore(self.fleet.coordinator, self.marker_image)

    def record_stores(self) -> list[DockerStore]:
        local = [self.fleet.local] if self.fleet.local else []
        return [DockerStore(client, "") for client in [*self.fleet.clients.values(), *local]]

    def describe(self) -> dict[str, Any]:
        return {"engines": self.fleet.describe(), "addressing": self.fleet.addressing}

    def _engine_of(self, error: EngineUnreachable) -> str | None:
        """The engine the error came from, by name."""
        return next((name for name, client in self.fleet.clients.items()
                     if client.where == error.details.get("engine")), None)

    def mark_unreachable(self, error: EngineUnreachable) -> str | None:
        name = self._engine_of(error)
        if name is not None:
            self.down[name] = error.message
        return name

    def answers_again(self, error: EngineUnreachable) -> bool:
        name = self._engine_of(error)
        return name is not None and answers_within(self.fleet.clients[name].api.info)

    def close(self) -> None:
        return None

    # observe ------------------------------------------------------------------------------------
    def containers(self, include_stopped: bool = True, inspect: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """(engine, container) of the service on every engine that answers, listed in parallel."""
        engines = [name for name in self.fleet.clients if name not in self.down]

        def listing(engine: str) -> list[dict[str, Any]]:
            return self.fleet.clients[engine].containers_with_labels({LABEL_SERVICE: self.service},
                                                                     include_stopped=include_stopped, inspect=inspect)
        if len(engines) == 1:
            return [(engines[0], container) for container in listing(engines[0])]
        with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
            listed = list(pool.map(listing, engines))
        return [(engine, container) for engine, containers in zip(engines, listed, strict=True)
                for container in containers]

    def hosts(self, include_stopped: bool = True) -> list[FoundHost]:
        found = []
        for engine, inspected in self.containers(include_stopped):
            labels = image_labels(inspected)
            state = inspected.get("State") or {}
            running = bool(state.get("Running"))
            spec = HostSpec.from_labels(labels)
            address, port = self._endpoint(inspected, engine, HostLabels.from_labels(labels).port,
                                           spec.network if spec else None)
            found.append(FoundHost(inspected["Name"].lstrip("/"), engine, inspected["Id"], labels, running,
                                   str(state.get("Status") or ""), (address, port) if address and running else None))
        return found

    def _endpoint(self, inspected: dict[str, Any], engine: str, port: int | None,
                  network: str | None) -> tuple[str | None, int]:
        """Where the balancer and the health check reach a host: (address, port), per addressing."""
        port = port or 0
        if self.fleet.addressing == "published":
            published = published_port(inspected, port)
            address = self.fleet.endpoint_addresses().get(engine) or "127.0.0.1"
            return (address, published) if published else (None, port)
        return container_address(inspected, network), port

    def endpoint(self, host: HostRecord) -> tuple[str | None, int]:
        inspected = self.client(host.engine).container(host.host_id) or {}
        labels = image_labels(inspected)
        spec = HostSpec.from_labels(labels)
        return self._endpoint(inspected, host.engine, HostLabels.from_labels(labels).port,
                              spec.network if spec else None)

    # the artifact -------------------------------------------------------------------------------
    def place(self, plan: rp.Plan, observed: list[rp.Host]) -> Placed:
        placed, placement = place_hosts(self.fleet, plan, observed)
        return Placed(placed, placement.as_dict() if placement else None)

    def plan_prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        planned = plan_ship(self.fleet, artifact, engines)
        return planned.as_dict() if planned else None

    def prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        shipped = ship(self.fleet, plan_ship(self.fleet, artifact, engines), self.progress)
        if shipped is not None and shipped["method"] != "none":
            self.shipped = shipped
        return shipped

    # hosts --------------------------------------------------------------------------------------
    def create(self, name: str, engine: str, spec: HostSpec, rollout_id: str, balancer: str | None = None) -> str:
        container = spec.container
        _service, generation, index = rp.parse_host_name(name)
        options: dict[str, Any] = {"read_only": container.get("read_only", False),
                                   "cap_drop": container.get("cap_drop") or None,
                                   "restart_policy": {"Name": container.get("restart_policy", "unless-stopped")}}
        if container.get("memory"):
            options["mem_limit"] = container["memory"]
        environment = {str(key): str(value) for key, value in (container.get("env") or {}).items()}
        if self.fleet.addressing == "published":
            options["publish"] = (spec.port, self.fleet.bind_addresses().get(engine) or "127.0.0.1")
        labels = spec.labels(generation, index, rollout_id, engine if self.several else None, balancer)
        return self.client(engine).create_container(spec.image_id, name, labels, environment,
                                                    container.get("networks") or [], **options)

    def start(self, host: HostRecord) -> None:
        self.client(host.engine).start(host.host_id)

    def request_stop(self, host: HostRecord, timeout: int, answer_wait: float) -> bool:
        return self.client(host.engine).request_stop(host.host_id, timeout, answer_wait)

    def stop(self, host: HostRecord, timeout: int) -> None:
        self.client(host.engine).stop(host.host_id, timeout)

    def kill(self, host: HostRecord) -> None:
        self.client(host.engine).kill(host.host_id)

    def wait_exited(self, host: HostRecord, timeout: float) -> bool:
        return self.client(host.engine).wait_exited(host.host_id, timeout)

    def remove(self, host: HostRecord) -> None:
        self.client(host.engine).remove_container(host.host_id)

    def run_command(self, host: HostRecord, command: list[str]) -> tuple[int, str]:
        return self.client(host.engine).exec(host.host_id, command)

    def problem(self, host: HostRecord) -> str | None:
        client = self.client(host.engine)
        inspected = client.container(host.host_id)
        if inspected is None:
            return "its container was removed"
        state = inspected.get("State") or {}
        if state.get("Running") and not state.get("Restarting") and not inspected.get("RestartCount"):
            return None
        logs = client.logs(host.host_id, tail=5).strip().replace("\n", " | ")
        restarted = state.get("Restarting") or inspected.get("RestartCount")
        return (f"its container {'restarted' if restarted else 'stopped'} with exit code {state.get('ExitCode')}"
                + (f" (last output: {logs[-300:]})" if logs else ""))

    def drifted(self, writable_paths: list[str], recorded: dict[str, list[str]] | None) -> list[dict[str, Any]]:
        """The running hosts that differ from what was rolled out (docker_drift.py), every engine looked at
        in parallel: host, engine, reasons, and whether a rollout recorded its spec. By host name."""
        images: dict[tuple[str, str], dict[str, Any] | None] = {}
        drifted = []
        for engine, container in self.containers(include_stopped=False, inspect=True):
            client = self.client(engine)
            labels = image_labels(container)
            image_id = HostLabels.from_labels(labels).image_id or ""
            if (engine, image_id) not in images:
                images[engine, image_id] = client.image(image_id) if image_id else None
            reasons = host_drift(container, images[engine, image_id], client.changes(container["Id"]),
                                 writable_paths, recorded)
            if reasons:
                drifted.append({"host": container["Name"].lstrip("/"), "engine": engine, "reasons": reasons,
                                "recorded": HostSpec.from_labels(labels) is not None})
        order = self.engine_names
        return sorted(drifted, key=lambda entry: (order.index(entry["engine"]), entry["host"]))

    def check_settings(self, spec: HostSpec) -> None:
        """Refuses settings every engine would refuse only mid-rollout: a network that does not exist."""
        for network in spec.container.get("networks") or []:
            for name, client in self.fleet.clients.items():
                if not client.network_exists(network):
                    where = f" on engine {name}" if self.several else ""
                    raise InfraError(f"The Docker network {network} (container.networks) does not exist{where}; "
                                     "create it first, or leave it out to use the engine's default bridge.")
