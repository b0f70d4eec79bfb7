# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prune: remove what is no longer needed, and nothing that is.

Prune observes every engine of the fleet, plans with plan_fleet_prune() (prune_plan.py) and applies
that plan engine by engine, checking each host again under the service's lock (on the coordinator,
the first declared engine).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import ENGINES_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_store import DockerStore
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.backends import HostsManager
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import ServiceLock
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import validate_service
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.prune_plan import (
    KINDS,
    STOPPED_STATES,
    PruneOptions,
    PrunePlan,
    epoch_seconds,
    freed_bytes,
    is_baked,
    observation_from_disk_usage,
    plan_fleet_prune,
    service_repositories,
    summary,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.vm_prune import VmPruner

PRUNE_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str"},
    "keep_previous": {"type": "int", "default": 1},
    "images": {"type": "bool", "default": True},
    "keep_images": {"type": "int", "default": 1},
    "pinned": {"type": "list", "elements": "str", "default": []},
    "builders": {"type": "bool", "default": True},
    "min_age": {"type": "int", "default": 600},
    **ENGINES_ARGUMENT_SPEC,
}


def merged(plans: dict[str, PrunePlan], part: str, several: bool) -> dict[str, list[dict[str, Any]]]:
    """The remove or kept part of every engine's plan as one, each entry naming its engine when the
    fleet has several."""
    whole: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for engine, plan in plans.items():
        for kind, entries in getattr(plan, part).items():
            whole[kind] += [dict(entry, engine=engine) if several else entry for entry in entries]
    return whole


class Prune(HostsManager):
    record_options = ("engines", "docker_host")

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        if params.get("service") is not None:
            validate_service(params["service"])
        for key in ("keep_previous", "keep_images", "min_age"):
            if params[key] < 0:
                raise InfraError(f"{key} cannot be negative, got {params[key]}.")
        self.skipped: list[dict[str, Any]] = []

    def options(self) -> PruneOptions:
        return PruneOptions(service=self.params.get("service"), keep_previous=self.params["keep_previous"],
                            images=self.params["images"], keep_images=self.params["keep_images"],
                            pinned=tuple(self.params["pinned"] or ()), builders=self.params["builders"],
                            min_age=self.params["min_age"], now=time.time())

    def observe(self, client: DockerClient) -> dict[str, Any]:
        observed = observation_from_disk_usage(client.disk_usage())
        self._precise_creation_times(client, observed["images"])
        return observed

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        ledger = self.ledger()
        apply: Callable[[dict[str, PrunePlan]], dict[str, list[dict[str, Any]]]]
        if self.on_vms:
            pruner = VmPruner(self.vm_fleet(), self.progress, self.skipped, self.several)
            observed, apply = pruner.observe(), pruner.apply
        else:
            clients = self.clients()
            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                observed = dict(zip(clients, pool.map(self.observe, clients.values()), strict=True))
            apply = partial(self.apply, clients)
        if self.params.get("service"):
            # The service's repositories are the fleet's: an engine may hold an image its hosts no longer use.
            repositories = service_repositories(
                ledger.records(), self.params["service"], [image for seen in observed.values() for image in seen["images"]],
                [container for seen in observed.values() for container in seen["containers"]])
            for seen in observed.values():
                seen["repositories"] = repositories
        plans = plan_fleet_prune(observed, self.options())
        if self.on_vms and self.params["builders"]:
            pruner.plan_leftovers(plans, observed, self.options())
        removed = merged(plans, "remove", self.several)
        if not self.context.check_mode and not all(plan.empty for plan in plans.values()):
            removed = apply(plans)
        changed = any(removed.values())
        result: dict[str, Any] = {"changed": changed, "service": self.params.get("service"), "removed": removed,
                                  "kept": merged(plans, "kept", self.several), "skipped": self.skipped,
                                  "freed_bytes": freed_bytes(removed), "warnings": ledger.warnings}
        if changed and not self.context.check_mode:
            record = ledger.new_record(
                "prune", self.context.basedir, service=self.params.get("service"),
                removed={kind: [entry["name"] for entry in entries] for kind, entries in removed.items() if entries},
                freed_bytes=result["freed_bytes"], keep_previous=self.params["keep_previous"],
                keep_images=self.params["keep_images"], min_age=self.params["min_age"],
                duration=round(time.monotonic() - started, 3))
            if self.several:
                record["engines"] = {engine: sorted({entry["name"] for entries in removed.values() for entry in entries
                                                     if entry.get("engine") == engine}) for engine in observed}
            ledger.append(record)
            result.update(ledger=ledger.path, ledger_id=record["id"])
        result["msg"] = summary(removed, self.skipped, result["freed_bytes"], self.context.check_mode)
        return result

    @staticmethod
    def _precise_creation_times(client: DockerClient, images: list[dict[str, Any]]) -> None:
        # Disk usage dates images in whole seconds; two bakes in one second need inspect's precision
        # to tell which is the newest.
        for image in images:
            if is_baked(image):
                image["created"] = epoch_seconds((client.image(image["id"]) or {}).get("Created")) or image["created"]

    # apply ---------------------------------------------------------------------------------------
    def apply(self, clients: dict[str, DockerClient], plans: dict[str, PrunePlan]) -> dict[str, list[dict[str, Any]]]:
        done: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        tag = (lambda entry, engine: dict(entry, engine=engine)) if self.several else (lambda entry, engine: entry)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for engine, plan in plans.items():
            for entry in plan.remove["hosts"]:
                by_service.setdefault(entry["name"].rsplit("-", 2)[0], []).append(dict(entry, engine=engine))
        for service, hosts in sorted(by_service.items()):
            done["hosts"] += [tag({key: value for key, value in entry.items() if key != "engine"}, entry["engine"])
                              for entry in self._remove_hosts(clients, service, hosts)]
        for engine, plan in plans.items():
            client = clients[engine]
            where = f" on {engine}" if self.several else ""
            for kind in ("builders", "verify_hosts"):
                for entry in plan.remove[kind]:
                    self.progress(f"prune: removing {entry['name']}{where} ({entry['reason']})")
                    client.remove_container(entry["id"])
                    done[kind].append(tag(entry, engine))
            gone_images = set()
            for kind in ("images", "failed_images"):
                for entry in plan.remove[kind]:
                    if self._remove_image(client, entry, where):
                        done[kind].append(tag(entry, engine))
                        gone_images.add(entry["id"])
            for entry in plan.remove["verdict_volumes"]:
                if entry["with_image"] and entry["image_id"] not in gone_images:
                    continue  # its image stayed after all
                client.remove_volume(entry["name"])
                done["verdict_volumes"].append(tag(entry, engine))
        return done

    def _remove_hosts(self, clients: dict[str, DockerClient], service: str,
                      hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Under the service's lock (on the coordinator), so no rollout starts a kept generation while its
        hosts go. Each host is removed through its own engine."""
        lock = ServiceLock(DockerStore(self.client(), hosts[0]["image_id"] or hosts[0]["id"]), service,
                           f"prune-{uuid.uuid4().hex[:8]}", 600, self.progress)
        try:
            lock.acquire()
        except InfraError as error:
            self.skipped += [self._shown(dict(entry, reason=error.message)) for entry in hosts]
            return []
        removed = []
        try:
            for entry in hosts:
                client = clients[entry["engine"]]
                state = ((client.container(entry["id"]) or {}).get("State") or {}).get("Status")
                if state is None:
                    continue
                if state not in STOPPED_STATES:
                    self.skipped.append(self._shown(dict(entry, reason=f"it is {state} now; a running host is never "
                                                                       "removed")))
                    continue
                where = f" on {entry['engine']}" if self.several else ""
                self.progress(f"prune: removing host {entry['name']}{where} ({entry['reason']})")
                client.remove_container(entry["id"])
                removed.append(entry)
        finally:
            lock.release()
        return removed

    def _shown(self, entry: dict[str, Any]) -> dict[str, Any]:
        return entry if self.several else {key: value for key, value in entry.items() if key != "engine"}

    def _remove_image(self, client: DockerClient, entry: dict[str, Any], where: str = "") -> bool:
        self.progress(f"prune: removing image {entry['name']}{where} ({entry['reason']})")
        try:
            for reference in entry.get("tags") or [entry["id"]]:
                client.remove_image(reference)
        except InfraError as error:
            if not error.details.get("conflict"):
                raise
            self.skipped.append(dict(entry, reason=error.message))
            return False
        remaining = client.image(entry["id"])
        if remaining is not None and not remaining.get("RepoTags"):
            # An image pulled by digest (shipped through a registry) keeps that reference after its tags go.
            try:
                for reference in remaining.get("RepoDigests") or []:
                    client.remove_image(reference)
            except InfraError as error:
                if not error.details.get("conflict"):
                    raise
            remaining = client.image(entry["id"])
        if remaining is not None:
            self.skipped.append(dict(entry, reason="Docker kept the image after its tags were removed (another "
                                                   "image is built on it)"))
            return False
        return True
