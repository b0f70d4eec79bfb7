# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet as an inventory: service hosts from Docker labels, grouped by service, liveness, generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    LABEL_GENERATION,
    LABEL_IMAGE_ID,
    LABEL_PREFIX,
    LABEL_SERVICE,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient, container_address
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.drift import host_drift, recorded_hosts

PROVENANCE_PREFIXES = ("org.opencontainers.image.", LABEL_PREFIX)
HIDDEN_IMAGE_LABELS = (LABEL_PREFIX + "inputs",)


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


def fleet_host(inspected: dict[str, Any], image_labels: dict[str, str], docker_host: str | None) -> FleetHost | None:
    """One container as an inventory host, or None when it is not a host of a service."""
    labels = inspected["Config"].get("Labels") or {}
    service, generation = labels.get(LABEL_SERVICE), labels.get(LABEL_GENERATION, "")
    if not service:
        return None
    name = inspected["Name"].lstrip("/")
    running = bool((inspected.get("State") or {}).get("Running"))
    group = group_prefix(service)
    groups = [group]
    if generation.isdigit():  # made by a rollout; a container that only carries the service label is not live
        groups += [f"{group}_gen_{generation}"] + ([f"{group}_live"] if running else [])
    variables: dict[str, Any] = {
        "ansible_connection": "community.docker.docker",
        "ansible_host": name,
        "ansible_user": "root",  # images often run their service as a user with no home for Ansible's temp files
        "immutable_infra": {
            "service": service,
            "generation": int(generation) if generation.isdigit() else None,
            "image_id": labels.get(LABEL_IMAGE_ID) or inspected.get("Image"),
            "rollout": labels.get(LABEL_PREFIX + "rollout"),
            "state": (inspected.get("State") or {}).get("Status"),
            "address": container_address(inspected) if running else None,
            "container_id": inspected["Id"],
            "provenance": {key: value for key, value in image_labels.items()
                           if key.startswith(PROVENANCE_PREFIXES) and key not in HIDDEN_IMAGE_LABELS},
        },
    }
    if docker_host:
        variables["ansible_docker_host"] = docker_host
    return FleetHost(name, groups, variables)


def list_fleet(docker_host: str | None, services: list[str], include_stopped: bool, drift: bool = False,
               writable_paths: list[str] | None = None, ledger_path: str | None = None) -> list[FleetHost]:
    client = DockerClient(docker_host)
    images: dict[str, dict[str, Any]] = {}
    recorded: dict[str, dict[str, list[str]] | None] = {}
    hosts = []
    for inspected in client.containers_with_labels({LABEL_SERVICE: None}, include_stopped=include_stopped):
        labels = inspected["Config"].get("Labels") or {}
        if services and labels.get(LABEL_SERVICE) not in services:
            continue
        image_id = inspected.get("Image", "")
        if image_id not in images:
            images[image_id] = client.image(image_id) or {}
        host = fleet_host(inspected, (images[image_id].get("Config") or {}).get("Labels") or {}, docker_host)
        if host and drift and host.variables["immutable_infra"]["state"] == "running":
            service = labels[LABEL_SERVICE]
            if service not in recorded:
                recorded[service] = recorded_hosts(Ledger(ledger_path or default_ledger_path()), service)
            reasons = host_drift(inspected, images[image_id] or None, client.changes(inspected["Id"]),
                                 writable_paths or [], recorded[service])
            host.variables["immutable_infra"]["drift"] = reasons
            if reasons:
                host.groups.append(f"{group_prefix(service)}_drifted")
        if host:
            hosts.append(host)
    return sorted(hosts, key=lambda host: host.name)
