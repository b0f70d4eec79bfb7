# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Making, stopping and removing one VM host on a hypervisor.

Order matters when a controller can die at any moment: a host is made address first, then its
domain, then its storage, so everything it holds can be found from its domain (or, for an address
reserved just before, from its name when that host is made again); it is removed the other way
round, its domain last, so a removal cut short leaves a domain that the next removal finishes.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import pool as pools
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import (
    ERR_OPERATION_INVALID,
    binding,
    error_code,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.disk import (
    LABEL_DISK_VOLUME,
    disk_record_name,
    from_record,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import (
    LABEL_ADDRESS,
    LABEL_MAC,
    METADATA_URI,
    DomainSpec,
    domain_xml,
    labels_from_metadata,
    new_mac,
    overlay_volume,
    seed_volume,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.site import Site
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.qemu import seed_archive
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec

POLL_SECONDS = 0.2
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CONSOLE_LOG = "/var/log/libvirt/qemu/{name}-console.log"


def vm_settings(spec: HostSpec) -> dict[str, Any]:
    """The VM part of a spec (HostSpec.container holds the back-end's settings): memory, vcpus, user, keys."""
    return spec.container


def make(site: Site, name: str, spec: HostSpec, labels: dict[str, str], accel: str) -> str:
    """Defines the host's domain with its overlay and seed; returns the domain's UUID."""
    hypervisor = site.hypervisor
    record = site.disk_record(spec.image_id) or {}
    disk = pools.volume(hypervisor, site.pool, record.get(LABEL_DISK_VOLUME, "")) if record else None
    if disk is None:
        raise InfraError(f"The disk {spec.image_id[:19]} of {name} is not on hypervisor {site.name} (its record "
                         f"{disk_record_name(spec.image_id)} is missing); roll it out again with disk: set to its file.")
    clear_leftovers(site, name)
    settings = vm_settings(spec)
    mac = new_mac()
    address = site.network.reserve(name, mac)
    labels = dict(labels, **{LABEL_ADDRESS: address, LABEL_MAC: mac})
    booted, recorded = site.boot_paths(record), from_record(spec.image_id, record)
    xml = domain_xml(DomainSpec(
        name=name, labels=labels, memory_mib=int(settings.get("memory") or 1024), vcpus=int(settings.get("vcpus") or 1),
        accel=accel, pool=pools.HOSTS_POOL, overlay=overlay_volume(name), seed=seed_volume(name),
        network=site.network.name, mac=mac, console_log=CONSOLE_LOG.format(name=name), kernel=booted.get("kernel"),
        initrd=booted.get("initrd"), cmdline=recorded.boot.get("command_line") if booted else None))
    domain = hypervisor.call(f"define {name}", hypervisor.conn.defineXML, xml)
    disk_format = recorded.disk_format
    capacity = hypervisor.call(f"read the size of the disk of {name}", disk.info)[1]
    pools.create_volume(hypervisor, site.pool, overlay_volume(name), capacity, "qcow2",
                        backing=(hypervisor.call("read the disk's path", disk.path), disk_format))
    seed = seed_archive(name.replace("_", "-"), list(settings.get("authorized_keys") or []))
    made = pools.create_volume(hypervisor, site.pool, seed_volume(name), len(seed))
    if made is not None:
        pools.upload_bytes(hypervisor, made, seed, f"the seed of {name}")
    return str(domain.UUIDString())


def clear_leftovers(site: Site, name: str) -> None:
    """What a host of this name left when its making or removal was cut short: its volumes and reservation.
    Only called for a host that has no domain."""
    pools.delete_volume(site.hypervisor, site.pool, overlay_volume(name))
    pools.delete_volume(site.hypervisor, site.pool, seed_volume(name))
    site.network.release(name)


def domain_of(site: Site, host_id: str) -> Any | None:
    """The domain by its UUID (a host's ID), or by its name."""
    conn = site.hypervisor.conn
    if UUID_PATTERN.match(host_id):
        return site.hypervisor.find(f"look up domain {host_id}", conn.lookupByUUIDString, host_id)
    return site.hypervisor.find(f"look up domain {host_id}", conn.lookupByName, host_id)


def labels_of(site: Site, domain: Any) -> dict[str, str]:
    return labels_from_metadata(site.hypervisor.find("read a domain's labels", domain.metadata,
                                                     binding().VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI, 0))


def start(site: Site, domain: Any, name: str) -> None:
    state = site.hypervisor.call(f"read the state of {name}", domain.state)[0]
    libvirt = binding()
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        site.hypervisor.call(f"resume {name}", domain.resume)
    elif not site.hypervisor.call(f"read the state of {name}", domain.isActive):
        site.hypervisor.call(f"start {name}", domain.create)


def running(site: Site, domain: Any, name: str) -> bool:
    return bool(site.hypervisor.call(f"read the state of {name}", domain.isActive))


def shut_down(site: Site, domain: Any, name: str) -> None:
    """Presses the VM's ACPI power button; the guest powers off when it handles it."""
    libvirt = binding()
    try:
        domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as error:
        if error_code(error) != ERR_OPERATION_INVALID:  # not running (any more)
            raise site.hypervisor.failure(f"shut {name} down", error) from None


def destroy(site: Site, domain: Any, name: str) -> None:
    """Stops the VM at once (the guest is not asked)."""
    libvirt = binding()
    try:
        domain.destroy()
    except libvirt.libvirtError as error:
        if error_code(error) != ERR_OPERATION_INVALID:
            raise site.hypervisor.failure(f"destroy {name}", error) from None


def wait_shut_off(site: Site, domain: Any, name: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(site, domain, name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def remove(site: Site, domain: Any | None, name: str) -> None:
    """Destroys the VM and removes its overlay, seed, address and domain (the domain last)."""
    address = labels_of(site, domain).get(LABEL_ADDRESS) if domain is not None else None
    if domain is not None and running(site, domain, name):
        destroy(site, domain, name)
    pools.delete_volume(site.hypervisor, site.pool, overlay_volume(name))
    pools.delete_volume(site.hypervisor, site.pool, seed_volume(name))
    site.network.release(name, address)
    if domain is not None:
        libvirt = binding()
        try:
            domain.undefine()
        except libvirt.libvirtError as error:
            if domain_of(site, domain.UUIDString()) is not None:
                raise site.hypervisor.failure(f"remove {name}", error) from None
