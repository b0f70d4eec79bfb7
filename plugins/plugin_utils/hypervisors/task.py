# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a module needs to work on VM hosts: the options that say so, the hypervisors reached, the disk
resolved and gated, and the spec every host of the rollout is made from."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import disk as disks
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import VmFleet, open_vm_fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.hosts import VmHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.ssh import public_key
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec

LOCAL_HYPERVISOR = {"name": "default", "libvirt_uri": "qemu:///system"}  # the engines of a disk rollout naming none
VM_OPTIONS: dict[str, Any] = {
    "memory": {"type": "int", "default": 1024},
    "vcpus": {"type": "int", "default": 2},
    "ssh_key": {"type": "path"},
    "user": {"type": "str", "default": "root"},
}
VM_DEFAULTS = {name: option.get("default") for name, option in VM_OPTIONS.items()}
VM_LIMITS = {"memory": (128, 1024 * 1024), "vcpus": (1, 256)}


def on_hypervisors(engines: list[Engine]) -> bool:
    return bool(engines) and engines[0].hypervisor


def check_kind(params: Mapping[str, Any], engines: list[Engine]) -> None:
    """Refuses an artifact or settings of the other kind of host, before anything is reached."""
    vms = on_hypervisors(engines)
    if vms and params.get("image"):
        raise InfraError("VM hosts are made from a disk (disk: the file immutable.infra.disk built, or its digest), not "
                         "from an image; give disk instead of image.")
    if not vms and params.get("disk"):
        raise InfraError("disk rolls out VM hosts, which run on hypervisors: declare them in engines with libvirt_uri "
                         "(or leave engines and docker_host out to use qemu:///system on this machine).")
    vm = params.get("vm") or {}
    if not vms and any(vm.get(name, default) != default for name, default in VM_DEFAULTS.items()):
        raise InfraError("vm applies to VM hosts (disk:); containers take their settings from container.")


def vm_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The vm option as the hosts' spec holds it, with the public key of ssh_key for the seed."""
    vm = {name: (params.get("vm") or {}).get(name, default) for name, default in VM_DEFAULTS.items()}
    for name, (lowest, highest) in VM_LIMITS.items():
        if not lowest <= int(vm[name]) <= highest:
            raise InfraError(f"vm.{name} is {vm[name]}; it must be between {lowest} and {highest}"
                             f"{' MiB' if name == 'memory' else ''}.")
    keys = []
    if vm["ssh_key"]:
        if not os.path.isfile(vm["ssh_key"]):
            raise InfraError(f"vm.ssh_key {vm['ssh_key']} does not exist; give the path of the private key the hosts "
                             "are reached with (its public key goes into each VM at its first boot).")
        key = public_key(vm["ssh_key"])
        if not key:
            raise InfraError(f"vm.ssh_key {vm['ssh_key']}: no public key beside it ({vm['ssh_key']}.pub) and ssh-keygen "
                             "could not derive one; give a private key without a passphrase.")
        keys.append(key)
    return dict(vm, authorized_keys=keys)


def gated_disk(fleet: VmFleet, given: str, basedir: str, require_verified: bool) -> disks.DiskArtifact:
    """The disk, refused unless its newest verdict passed and its file is still the one its manifest describes."""
    artifact = disks.resolve(given, basedir)
    if artifact.path is None:  # named by digest: what a hypervisor recorded when the disk was copied there
        found = next(((name, labels) for name, labels in
                      ((name, site.disk_record(given)) for name, site in fleet.sites.items()) if labels), None)
        if found is None:
            raise InfraError(f"Disk {given[:19]} is on none of the hypervisors ({', '.join(fleet.sites)}); give disk: as "
                             "the path of the disk file built by immutable.infra.disk.")
        artifact = disks.from_record(given, found[1])
    if require_verified:
        disks.require_disk_verified(artifact, {f"hypervisor {name}": site.verdict(artifact.digest)
                                               for name, site in fleet.sites.items()})
    disks.require_unchanged(artifact)
    return artifact


def open_vm_hosts(params: Mapping[str, Any], engines: list[Engine], service: str, basedir: str,
                  progress: Callable[[str], None]) -> tuple[VmHosts, HostSpec]:
    """The back-end of a rollout of VM hosts and the spec of its hosts (what the gate let through)."""
    fleet = open_vm_fleet(engines, bool(params.get("place_down_share")))
    artifact = gated_disk(fleet, params["disk"], basedir, params.get("require_verified", True))
    spec = HostSpec(service, artifact.digest, params["port"], vm_settings(params), params["health"],
                    str(artifact.manifest.get("inputs_hash") or ""))
    return VmHosts(fleet, service, artifact, progress), spec


def rollback_disk(fleet: VmFleet, target: Mapping[str, Any]) -> str:
    """The disk of the revision rolled back to, as a rollout takes it: its file while that still holds the same
    disk (so it can be copied where it is missing), else its digest when a hypervisor holds a copy."""
    digest, path = str(target["image_id"]), target.get("disk")
    if path and os.path.isfile(str(path)):
        try:
            if disks.resolve(str(path), "/").digest == digest:
                return str(path)
        except InfraError:
            pass  # its manifest is gone or another disk's now
    if any(site.disk_record(digest) for site in fleet.sites.values()):
        return digest
    raise InfraError(f"The disk of revision {target['revision']} ({short_id(digest)}) is on none of the hypervisors "
                     f"and its file ({path or 'not recorded'}) no longer holds it, so it cannot be rolled back to; "
                     "build it again with immutable.infra.disk from the same image and roll it out, or pick another "
                     "revision.", revision=target["revision"])
