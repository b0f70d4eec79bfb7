"""Removes every VM host of a service on this machine's hypervisor, with its storage and address, and prints
their names: the demo starts its story from nothing (a real fleet keeps its VMs for rollback).
Usage: python remove_vm_service.py SERVICE (with the collection on ANSIBLE_COLLECTIONS_PATH)."""

from __future__ import annotations

import os
import sys

for path in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep):
    if path:
        sys.path.append(path)

from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines  # noqa: E402
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import open_vm_fleet  # noqa: E402
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.hosts import VmHosts  # noqa: E402
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostRecord  # noqa: E402


def main(service: str) -> None:
    fleet = open_vm_fleet(parse_engines([{"name": "default", "libvirt_uri": "qemu:///system"}]))
    backend = VmHosts(fleet, service)
    for host in backend.hosts():
        backend.remove(HostRecord(host.name, host.host_id, engine=host.engine))
        print(host.name)


if __name__ == "__main__":
    main(sys.argv[1])
