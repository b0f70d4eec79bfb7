# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prune on hypervisors: observe each one as prune's planner takes an engine (hypervisors/prune.py),
then remove what the plan says. Hosts, and the leftovers a host's making or removal left, go under
their service's lock, each host checked again first (a running host is never removed); disks go with
their records and verdicts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import verdict_volume_image
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import prune as vm_prune
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import vm
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import status_of
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import VmFleet
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import ServiceLock
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.prune_plan import (
    KINDS,
    STOPPED_STATES,
    PruneOptions,
    PrunePlan,
)


class VmPruner:
    def __init__(self, fleet: VmFleet, progress: Callable[[str], None], skipped: list[dict[str, Any]],
                 several: bool) -> None:
        self.fleet = fleet
        self.progress = progress
        self.skipped = skipped
        self.several = several
        self.observed: dict[str, dict[str, Any]] = {}

    def observe(self) -> dict[str, dict[str, Any]]:
        sites = self.fleet.sites
        with ThreadPoolExecutor(max_workers=max(1, len(sites))) as pool:
            self.observed = dict(zip(sites, pool.map(vm_prune.observe, sites.values()), strict=True))
        return self.observed

    def plan_leftovers(self, plans: dict[str, PrunePlan], observed: dict[str, dict[str, Any]],
                       options: PruneOptions) -> None:
        for engine, seen in observed.items():
            for entry in vm_prune.plan_leftovers(seen, options.min_age, options.now):
                plans[engine].remove["leftovers"].append(entry)

    def _tag(self, entry: dict[str, Any], engine: str) -> dict[str, Any]:
        return dict(entry, engine=engine) if self.several else entry

    def apply(self, plans: dict[str, PrunePlan]) -> dict[str, list[dict[str, Any]]]:
        done: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        by_service: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for engine, plan in plans.items():
            for kind in ("hosts", "leftovers"):
                for entry in plan.remove[kind]:
                    host = entry["name"] if kind == "hosts" else entry.get("host") or ""
                    by_service.setdefault(host.rsplit("-", 2)[0], []).append((kind, engine, entry))
        for service, entries in sorted(by_service.items()):
            for kind, engine, entry in self._under_lock(service, entries):
                done[kind].append(self._tag(entry, engine))
        for engine, plan in plans.items():
            self._remove_disks(engine, plan, done)
        return done

    def _remove_disks(self, engine: str, plan: PrunePlan, done: dict[str, list[dict[str, Any]]]) -> None:
        """The plan's disks no VM uses now (a host the plan counted as removed may have been kept: its service
        was locked, or it runs again), and the verdicts of disks that are gone."""
        site = self.fleet.site(engine)
        images = {image["id"]: image for image in self.observed[engine]["images"]}
        in_use = {host["image_id"] for host in vm_prune.hosts_of(site)}
        for entry in plan.remove["images"]:
            if entry["id"] in in_use:
                self.skipped.append(self._tag(dict(entry, reason="a VM made from it is still there"), engine))
                continue
            self.progress(f"prune: removing disk {entry['name']} from {engine} ({entry['reason']})")
            vm_prune.remove_disk(site, entry, images[entry["id"]])
            done["images"].append(self._tag(entry, engine))
        labels = {record["name"]: record["labels"] for record in self.observed[engine]["volumes"]}
        for entry in plan.remove["verdict_volumes"]:
            if verdict_volume_image(entry["name"], labels.get(entry["name"])) in in_use:
                continue
            site.store.remove(entry["name"])
            done["verdict_volumes"].append(self._tag(entry, engine))

    def _under_lock(self, service: str, entries: list[tuple[str, str, dict[str, Any]]]
                    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Removes a service's hosts and leftovers under its lock; what was removed."""
        lock = ServiceLock(self.fleet.site(self.fleet.coordinator_name).store, service,
                           f"prune-{uuid.uuid4().hex[:8]}", 600, self.progress)
        try:
            lock.acquire()
        except InfraError as error:
            self.skipped += [self._tag(dict(entry, reason=error.message), engine) for _kind, engine, entry in entries]
            return []
        removed = []
        try:
            for kind, engine, entry in entries:
                if self._remove(kind, engine, entry):
                    removed.append((kind, engine, entry))
        finally:
            lock.release()
        return removed

    def _remove(self, kind: str, engine: str, entry: dict[str, Any]) -> bool:
        site = self.fleet.site(engine)
        where = f" from {engine}" if self.several else ""
        if kind == "leftovers":
            self.progress(f"prune: removing {entry['name']}{where} ({entry['reason']})")
            vm_prune.remove_leftover(site, entry)
            return True
        domain = vm.domain_of(site, entry["id"])
        state = site.hypervisor.find("read a domain's state", domain.state) if domain is not None else None
        if state is None:
            return False
        status = status_of(*state[:2])[1]
        if status not in STOPPED_STATES:
            self.skipped.append(self._tag(dict(entry, reason=f"it is {status} now; a running host is never removed"),
                                          engine))
            return False
        self.progress(f"prune: removing host {entry['name']}{where} ({entry['reason']})")
        vm.remove(site, domain, entry["name"])
        return True
