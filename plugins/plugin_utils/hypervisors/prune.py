# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prune on hypervisors: what a hypervisor holds, observed in the shape prune's planner takes
(trace/prune_plan.py), plus what VM hosts leave behind when their making or removal is cut short.

Domains are the containers (hosts, and the never-started lock markers), disks copied into the pool
are the images (by digest, named after their disk), the store's records are the volumes (journals,
verdicts). Leftovers are overlays and seeds of no domain, copies of disks that no record names
(an upload cut short) and address reservations of no domain; they are removed once older than
min_age, a host's under its service's lock like the hosts themselves.
"""

from __future__ import annotations

import json
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_INPUTS_HASH, LABEL_NAME, OCI_CREATED
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import DEFAULT_VM_NETWORK
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import pool as pools
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import vm
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.disk import (
    DISK_RECORD_PREFIX,
    LABEL_DISK_MANIFEST,
    LABEL_DISK_RECORD,
    LABEL_DISK_VOLUME,
    boot_volumes,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import host_of_volume, status_of
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.network import (
    Reservation,
    dhcp_name,
    reservations,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.site import Site
from ansible_collections.immutable.infra.plugins.plugin_utils.service.plan import parse_host_name


def _volumes(site: Site, pool: Any | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for volume in site.hypervisor.call("list a pool's volumes", pool.listAllVolumes, 0) if pool is not None else []:
        xml = site.hypervisor.find("read a volume", volume.XMLDesc, 0)
        info = site.hypervisor.find("read a volume", volume.info)
        found.append({"name": volume.name(), "created": pools.changed_time(xml) if xml else None,
                      "bytes": info[2] if info else None})
    return found


def hosts_of(site: Site) -> list[dict[str, Any]]:
    """The site's VMs as prune's planner takes an engine's containers."""
    containers = []
    for domain in site.hypervisor.call("list the domains", site.hypervisor.conn.listAllDomains, 0):
        labels = vm.labels_of(site, domain)
        if labels.get("immutable.infra.engine") not in (site.name, None):
            continue  # a host of the same hypervisor reached under another engine name
        state = site.hypervisor.find("read a domain's state", domain.state)
        if state is not None:
            containers.append({"id": domain.UUIDString(), "name": domain.name(), "labels": labels, "created": None,
                               "image_id": labels.get("immutable.infra.image_id"), "state": status_of(*state[:2])[1],
                               "size": None})
    return containers


def observe(site: Site) -> dict[str, Any]:
    """The hypervisor as prune's planner sees an engine, and the volumes and reservations it has."""
    containers = hosts_of(site)
    records = []
    for volume in _volumes(site, site.store.readable_pool()):
        labels = site.store.get(volume["name"]) or {}
        records.append({"name": volume["name"], "labels": labels, "created": volume["created"]})
    host_volumes = _volumes(site, site.readable_pool())
    sizes = {entry["name"]: entry["bytes"] for entry in host_volumes}
    images = [disk_image(record, sizes) for record in records if record["name"].startswith(DISK_RECORD_PREFIX)]
    return {"containers": containers, "images": [image for image in images if image],
            "volumes": [record for record in records if not record["name"].startswith(DISK_RECORD_PREFIX)],
            "host_volumes": host_volumes,
            # Reservations are looked at on the collection's own network only: another network's are not ours.
            "reservations": existing_reservations(site) if site.engine.network == DEFAULT_VM_NETWORK and
            host_volumes else []}


def existing_reservations(site: Site) -> list[Reservation]:
    """The network's reservations, read only: a network that is missing has none (prune, check mode included,
    never makes or starts one, as site.network would)."""
    hypervisor, name = site.hypervisor, site.engine.network
    found = hypervisor.find(f"look up network {name}", hypervisor.conn.networkLookupByName, name)
    return reservations(hypervisor.call(f"read network {name}", found.XMLDesc, 0)) if found is not None else []


def disk_image(record: dict[str, Any], sizes: dict[str, int | None]) -> dict[str, Any] | None:
    """A disk copied to the hypervisor as an image of prune's planner: its digest, its disk name as its
    repository, its inputs hash (so it counts as made by the collection)."""
    labels = record["labels"]
    digest = labels.get(LABEL_DISK_RECORD)
    if not digest:
        return None
    try:
        manifest = json.loads(labels.get(LABEL_DISK_MANIFEST) or "{}")
    except ValueError:
        manifest = {}
    name = str(manifest.get("name") or "disk")
    return {"id": digest, "tags": [f"{name}:{short_id(digest)}"], "created": record["created"],
            "size": sizes.get(labels.get(LABEL_DISK_VOLUME, "")), "volume": labels.get(LABEL_DISK_VOLUME),
            "boot_volumes": list(boot_volumes(labels).values()), "record": record["name"],
            "labels": {LABEL_INPUTS_HASH: str(manifest.get("inputs_hash") or digest), LABEL_NAME: name,
                       OCI_CREATED: str(manifest.get("created") or "")}}


def plan_leftovers(observed: dict[str, Any], min_age: float, now: float) -> list[dict[str, Any]]:
    """Overlays and seeds of no domain, disk copies no record names, reservations of no domain (pure)."""
    domains = {container["name"] for container in observed["containers"]}
    recorded = {name for image in observed["images"] for name in [image.get("volume"), *image.get("boot_volumes", [])]}
    leftovers = []
    for volume in observed["host_volumes"]:
        host = host_of_volume(volume["name"])
        artifact = volume["name"].startswith(("disk.", "kernel.", "initrd."))
        orphan = (host is not None and host not in domains) or (artifact and volume["name"] not in recorded)
        if not orphan:
            continue
        age = now - volume["created"] if volume["created"] is not None else 0.0
        if age >= min_age:
            what = f"storage of host {host}, which no longer exists" if host else "a copy of a disk no record names"
            leftovers.append({"name": volume["name"], "id": volume["name"], "bytes": volume["bytes"], "kind": "volume",
                              "host": host, "reason": f"{what} (an interrupted run's, {age:.0f} s old)"})
    names = {dhcp_name(name) for name in domains}
    for entry in observed["reservations"]:
        if entry.name not in names and _host_name(entry.name):
            leftovers.append({"name": f"{entry.name} ({entry.address})", "id": entry.address, "bytes": None,
                              "kind": "reservation", "host": entry.name,
                              "reason": "an address reserved for a host that no longer exists"})
    return leftovers


def _host_name(name: str) -> bool:
    try:
        parse_host_name(name)
        return True
    except ValueError:
        return False


def remove_leftover(site: Site, entry: dict[str, Any]) -> None:
    if entry["kind"] == "volume":
        pools.delete_volume(site.hypervisor, site.pool, entry["id"])
    else:
        site.network.release(entry["host"], entry["id"])


def remove_disk(site: Site, entry: dict[str, Any], image: dict[str, Any]) -> None:
    """A disk copy goes with its record (the record first: without it the copy is never used again)."""
    site.store.remove(image["record"])
    for volume in [image.get("volume"), *image.get("boot_volumes", [])]:
        if volume:
            pools.delete_volume(site.hypervisor, site.pool, volume)
