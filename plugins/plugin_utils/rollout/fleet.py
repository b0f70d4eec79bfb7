# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet as an inventory: service hosts from Docker labels, grouped by service, liveness, generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient, container_address
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_SERVICE,
    HostLabels,
    image_labels,
    shown_provenance,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.drift_plan import host_drift, recorded_hosts


def group_prefix(service: str) -> str:
    """The service's name as Ansible group names take it: '-' is not valid there, so it becomes '_'
    (as Ansible's own inventory plugins sanitise group names). 'web-api' -> 'web_api', whose groups are
    web_api, web_api_live, web_api_gen_<n> and web_api_drifted. Host names keep the '-'."""
    return service.replace("-", "_")


@dataclass
class FleetHost:
    name: str
    groups: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)


def fleet_host(inspected: dict[str, Any], provenance_labels: dict[str, str], docker_host: str | None) -> FleetHost | None:
    """One container as an inventory host, or None when it is not a host of a service."""
    host = HostLabels.from_labels(image_labels(inspected))
    service, generation = host.service, host.generation
    if not service:
        return None
    name = inspected["Name"].lstrip("/")
    running = bool((inspected.get("State") or {}).get("Running"))
    group = group_prefix(service)
    groups = [group]
    if generation is not None:  # made by a rollout; a container that only carries the service label is not live
        groups += [f"{group}_gen_{generation}"] + ([f"{group}_live"] if running else [])
    variables: dict[str, Any] = {
        "ansible_connection": "community.docker.docker",
        "ansible_host": name,
        "ansible_user": "root",  # images often run their service as a user with no home for Ansible's temp files
        "immutable_infra": {
            "service": service,
            "generation": generation,
            "image_id": host.image_id or inspected.get("Image"),
            "rollout": host.rollout,
            "state": (inspected.get("State") or {}).get("Status"),
            "address": container_address(inspected) if running else None,
            "container_id": inspected["Id"],
            "provenance": shown_provenance(provenance_labels),
        },
    }
    if docker_host:
        # The CLI connection reads ansible_docker_host as the container's name; the engine goes in -H.
        variables["ansible_docker_extra_args"] = f"-H {docker_host}"
    return FleetHost(name, groups, variables)


def list_fleet(docker_host: str | None, services: list[str], include_stopped: bool, drift: bool = False,
               writable_paths: list[str] | None = None, ledger_path: str | None = None) -> list[FleetHost]:
    client = DockerClient(docker_host)
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
        host = fleet_host(inspected, image_labels(images[image_id]), docker_host)
        if host and service and drift and host.variables["immutable_infra"]["state"] == "running":
            if service not in recorded:
                recorded[service] = recorded_hosts(Ledger(ledger_path or default_ledger_path()).records(service=service))
            reasons = host_drift(inspected, images[image_id] or None, client.changes(inspected["Id"]),
                                 writable_paths or [], recorded[service])
            host.variables["immutable_infra"]["drift"] = reasons
            if reasons:
                host.groups.append(f"{group_prefix(service)}_drifted")
        if host:
            hosts.append(host)
    return sorted(hosts, key=lambda host: host.name)
