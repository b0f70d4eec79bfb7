# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VM hosts as an inventory: the domains of services on every hypervisor, grouped as container hosts
are (engines/inventory.py), each reached over SSH at the address its network reserved for it, as the
user and with the key its rollout was given.

A retired VM is out of the balancer before its guest has powered off, which takes seconds: a VM the
service's pending stops name (service/stopping.py, on the first hypervisor) is not in <service>_live,
and SSH gives up on a VM that stops answering mid-command instead of waiting for ever."""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_SERVICE, STOPPING_PREFIX, HostLabels
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.inventory import (
    FleetHost,
    engine_group,
    group_prefix,
    merge_engines,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import vm
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import LABEL_ADDRESS, status_of
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import open_vm_fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.site import Site
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.ssh import VM_SSH_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.stopping import PendingStops


def vm_host(name: str, labels: dict[str, str], running: bool, status: str, engine: Engine,
            domain_id: str) -> FleetHost | None:
    """One domain as an inventory host (running: running and not being stopped), or None when it is not a
    host of a service."""
    """One domain as an inventory host, or None when it is not a host of a service."""
    host = HostLabels.from_labels(labels)
    if not host.service:
        return None
    group = group_prefix(host.service)
    groups = [group, engine_group(engine.name)]
    if host.generation is not None:
        groups += [f"{group}_gen_{host.generation}"] + ([f"{group}_live"] if running else [])
    spec = HostSpec.from_labels(labels)
    settings = spec.container if spec else {}
    variables: dict[str, Any] = {
        "ansible_connection": "ssh",
        "ansible_host": labels.get(LABEL_ADDRESS),
        "ansible_user": settings.get("user") or "root",
        # A VM's host keys are made at its first boot and its address is reused by later hosts (ssh.py).
        "ansible_ssh_common_args": shlex.join(VM_SSH_OPTIONS),
        "ansible_python_interpreter": "/usr/bin/python3",
        "immutable_infra": {
            "service": host.service, "engine": engine.name, "hypervisor": engine.libvirt_uri,
            "generation": host.generation, "disk_digest": host.image_id, "image_id": host.image_id,
            "rollout": host.rollout, "state": status, "address": labels.get(LABEL_ADDRESS) if running else None,
            "domain_uuid": domain_id,
        },
    }
    if settings.get("ssh_key"):
        variables["ansible_ssh_private_key_file"] = settings["ssh_key"]
    return FleetHost(name, groups, variables)


def site_hosts(site: Site, services: list[str], include_stopped: bool, stopping: dict[str, set[str]]) -> list[FleetHost]:
    """The service hosts on one hypervisor (its domains labelled with that hypervisor's name). stopping: the
    hosts of each service whose stop is still finishing."""
    found = []
    for domain in site.hypervisor.call("list the domains", site.hypervisor.conn.listAllDomains, 0):
        labels = vm.labels_of(site, domain)
        service = labels.get(LABEL_SERVICE)
        if not service or (services and service not in services) or labels.get("immutable.infra.engine") != site.name:
            continue
        state = site.hypervisor.find("read a domain's state", domain.state)
        if state is None:
            continue
        running, status = status_of(*state[:2])
        if running and domain.name() in stopping.get(service, set()):
            running, status = False, "stopping"
        host = vm_host(domain.name(), labels, running, status, site.engine, domain.UUIDString())
        if host and (running or include_stopped):
            found.append(host)
    return found


def list_vms(engines: list[Engine], services: list[str], include_stopped: bool) -> tuple[list[FleetHost], list[str]]:
    """Every service host on every hypervisor (in parallel), and warnings. A hypervisor that does not answer
    fails the listing, as an engine does."""
    fleet = open_vm_fleet(engines)
    try:
        coordinator = fleet.site(fleet.coordinator_name).store
        names = services or sorted({name.removeprefix(STOPPING_PREFIX) for name in coordinator.names(STOPPING_PREFIX)})
        stopping = {service: set(PendingStops(coordinator, service).read()) for service in names}
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            listed = list(pool.map(lambda site: site_hosts(site, services, include_stopped, stopping),
                                   fleet.sites.values()))
    finally:
        fleet.close()
    return merge_engines(dict(zip(fleet.sites, listed, strict=True)))
