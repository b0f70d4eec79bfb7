# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet as an inventory: service hosts from Docker labels on every engine, grouped by service,
liveness, generation and engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_SERVICE,
    HostLabels,
    image_labels,
    shown_provenance,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient, container_address
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import connect_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine, parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_drift import host_drift, recorded_hosts


def group_prefix(service: str) -> str:
    """The service's name as Ansible group names take it: '-' is not valid there, so it becomes '_'
    (as Ansible's own inventory plugins sanitise group names). 'web-api' -> 'web_api', whose groups are
    web_api, web_api_live, web_api_gen_<n> and web_api_drifted. Host names keep the '-'."""
    return service.replace("-", "_")


def engine_group(engine: str) -> str:
    """The group of an engine's hosts: engine_<name>, with the '-' and '.' engine names may hold as '_'."""
    return "engine_" + engine.replace("-", "_").replace(".", "_")


@dataclass
class FleetHost:
    name: str
    groups: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)


def fleet_host(inspected: dict[str, Any], provenance_labels: dict[str, str], engine: Engine) -> FleetHost | None:
    """One container on an engine as an inventory host, or None when it is not a host of a service."""
    host = HostLabels.from_labels(image_labels(inspected))
    service, generation = host.service, host.generation
    if not service:
        return None
    name = inspected["Name"].lstrip("/")
    running = bool((inspected.get("State") or {}).get("Running"))
    group = group_prefix(service)
    groups = [group, engine_group(engine.name)]
    if generation is not None:  # made by a rollout; a container that only carries the service label is not live
        groups += [f"{group}_gen_{generation}"] + ([f"{group}_live"] if running else [])
    variables: dict[str, Any] = {
        "ansible_connection": "community.docker.docker",
        "ansible_host": name,
        "ansible_user": "root",  # images often run their service as a user with no home for Ansible's temp files
        "immutable_infra": {
            "service": service,
            "engine": engine.name,
            "generation": generation,
            "image_id": host.image_id or inspected.get("Image"),
            "rollout": host.rollout,
            "state": (inspected.get("State") or {}).get("Status"),
            "address": container_address(inspected) if running else None,
            "container_id": inspected["Id"],
            "provenance": shown_provenance(provenance_labels),
        },
    }
    # The CLI connection reads ansible_docker_host as the container's name; the engine (and its TLS
    # files) go in the CLI's global options.
    variables.update(engine.connection_variables())
    return FleetHost(name, groups, variables)


def engine_hosts(engine: Engine, client: DockerClient, services: Sequence[str], include_stopped: bool, drift: bool,
                 writable_paths: list[str], ledger_path: str | None) -> list[FleetHost]:
    """The service hosts on one engine."""
    images: dict[str, dict[str, Any]] = {}
    recorded: dict[str, dict[str, list[str]] | None] = {}
    hosts = []
    for inspected in client.containers_with_labels({LABEL_SERVICE: None}, include_stopped=include_stopped):
        service = HostLabels.from_labels(image_labels(inspected)).service
        if services and service not in services:
            continue
        image_id = inspected.get("Image", "")
        if image_id not in images:
            images[image_id] = client.image(image_id) or {}
        host = fleet_host(inspected, image_labels(images[image_id]), engine)
        if host and service and drift and host.variables["immutable_infra"]["state"] == "running":
            if service not in recorded:
                recorded[service] = recorded_hosts(Ledger(ledger_path or default_ledger_path()).records(service=service))
            reasons = host_drift(inspected, images[image_id] or None, client.changes(inspected["Id"]),
                                 writable_paths, recorded[service])
            host.variables["immutable_infra"]["drift"] = reasons
            if reasons:
                host.groups.append(f"{group_prefix(service)}_drifted")
        if host:
            hosts.append(host)
    return hosts


def merge_engines(found: dict[str, list[FleetHost]]) -> tuple[list[FleetHost], list[str]]:
    """The hosts of every engine as one inventory, sorted by name. Rollouts name hosts uniquely across
    a fleet; a name found on a second engine (made by hand, or by two fleets sharing an engine) is listed
    as <name>@<engine> so neither hides the other, with a warning."""
    hosts: list[FleetHost] = []
    seen: dict[str, str] = {}
    warnings = []
    for engine, engine_hosts_found in found.items():
        for host in engine_hosts_found:
            if host.name in seen:
                warnings.append(f"host {host.name} exists on engines {seen[host.name]} and {engine}; "
                                f"the one on {engine} is listed as {host.name}@{engine}")
                host = FleetHost(f"{host.name}@{engine}", host.groups, host.variables)
            else:
                seen[host.name] = engine
            hosts.append(host)
    return sorted(hosts, key=lambda host: host.name), warnings


def list_fleet(engines: list[Engine] | None, services: list[str], include_stopped: bool, drift: bool = False,
               writable_paths: list[str] | None = None, ledger_path: str | None = None
               ) -> tuple[list[FleetHost], list[str]]:
    """Every service host on every engine (in parallel), and warnings. An engine that does not answer
    fails the whole listing: an inventory missing one engine's hosts would look like a smaller fleet."""
    engines = engines or parse_engines(None, environ=os.environ)
    if len(engines) == 1:
        clients = {engines[0].name: DockerClient(engines[0].endpoint)}
    else:
        reached = connect_engines(engines)
        if reached.down:  # the listing fails: the engines that answered are not kept connected
            reached.close()
        clients = reached.require_all()

    def listed(engine: Engine) -> list[FleetHost]:
        return engine_hosts(engine, clients[engine.name], services, include_stopped, drift, writable_paths or [],
                            ledger_path)

    try:
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            found = dict(zip((engine.name for engine in engines), pool.map(listed, engines), strict=True))
    finally:
        for client in clients.values():
            client.close()
    return merge_engines(found)
