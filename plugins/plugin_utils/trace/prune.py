# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prune: remove what is no longer needed, and nothing that is.

Prune observes the engine, plans with plan_prune() (prune_plan.py) and applies that plan, checking
each host again under the service's lock.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.core.task import Manager, TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.hosts import validate_service
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.lock import ServiceLock
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.prune_plan import (
    KINDS,
    STOPPED_STATES,
    PruneOptions,
    PrunePlan,
    epoch_seconds,
    freed_bytes,
    is_baked,
    observation_from_disk_usage,
    plan_prune,
    service_repositories,
    summary,
)

PRUNE_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str"},
    "keep_previous": {"type": "int", "default": 1},
    "images": {"type": "bool", "default": True},
    "keep_images": {"type": "int", "default": 1},
    "pinned": {"type": "list", "elements": "str", "default": []},
    "builders": {"type": "bool", "default": True},
    "min_age": {"type": "int", "default": 600},
}


class Prune(Manager):
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

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        client = self.client()
        ledger = self.ledger()
        observed = observation_from_disk_usage(client.disk_usage())
        self._precise_creation_times(client, observed["images"])
        if self.params.get("service"):
            observed["repositories"] = service_repositories(ledger.records(), self.params["service"],
                                                            observed["images"], observed["containers"])
        plan = plan_prune(observed, self.options())
        removed = plan.remove
        if not self.context.check_mode and not plan.empty:
            removed = self.apply(client, plan)
        changed = any(removed.values())
        result: dict[str, Any] = {"changed": changed, "service": self.params.get("service"), "removed": removed,
                                  "kept": plan.kept, "skipped": self.skipped, "freed_bytes": freed_bytes(removed),
                                  "warnings": ledger.warnings}
        if changed and not self.context.check_mode:
            record = ledger.new_record(
                "prune", self.context.basedir, service=self.params.get("service"),
                removed={kind: [entry["name"] for entry in entries] for kind, entries in removed.items() if entries},
                freed_bytes=result["freed_bytes"], keep_previous=self.params["keep_previous"],
                keep_images=self.params["keep_images"], min_age=self.params["min_age"],
                duration=round(time.monotonic() - started, 3))
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
    def apply(self, client: DockerClient, plan: PrunePlan) -> dict[str, list[dict[str, Any]]]:
        done: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        by_service: dict[str, list[dict[str, Any]]] = {}
        for entry in plan.remove["hosts"]:
            by_service.setdefault(entry["name"].rsplit("-", 2)[0], []).append(entry)
        for service, hosts in sorted(by_service.items()):
            done["hosts"] += self._remove_hosts(client, service, hosts)
        for kind in ("builders", "verify_hosts"):
            for entry in plan.remove[kind]:
                self.progress(f"prune: removing {entry['name']} ({entry['reason']})")
                client.remove_container(entry["id"])
                done[kind].append(entry)
        gone_images = set()
        for kind in ("images", "failed_images"):
            for entry in plan.remove[kind]:
                if self._remove_image(client, entry):
                    done[kind].append(entry)
                    gone_images.add(entry["id"])
        for entry in plan.remove["verdict_volumes"]:
            if entry["with_image"] and entry["image_id"] not in gone_images:
                continue  # its image stayed after all
            client.remove_volume(entry["name"])
            done["verdict_volumes"].append(entry)
        return done

    def _remove_hosts(self, client: DockerClient, service: str, hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Under the service's lock, so no rollout starts a kept generation while its hosts go."""
        lock = ServiceLock(client, service, hosts[0]["image_id"] or hosts[0]["id"], f"prune-{uuid.uuid4().hex[:8]}",
                           600, self.progress)
        try:
            lock.acquire()
        except InfraError as error:
            self.skipped += [dict(entry, reason=error.message) for entry in hosts]
            return []
        removed = []
        try:
            for entry in hosts:
                state = ((client.container(entry["id"]) or {}).get("State") or {}).get("Status")
                if state is None:
                    continue
                if state not in STOPPED_STATES:
                    self.skipped.append(dict(entry, reason=f"it is {state} now; a running host is never removed"))
                    continue
                self.progress(f"prune: removing host {entry['name']} ({entry['reason']})")
                client.remove_container(entry["id"])
                removed.append(entry)
        finally:
            lock.release()
        return removed

    def _remove_image(self, client: DockerClient, entry: dict[str, Any]) -> bool:
        self.progress(f"prune: removing image {entry['name']} ({entry['reason']})")
        try:
            for reference in entry.get("tags") or [entry["id"]]:
                client.remove_image(reference)
        except InfraError as error:
            if not error.details.get("conflict"):
                raise
            self.skipped.append(dict(entry, reason=error.message))
            return False
        if client.image(entry["id"]) is not None:
            self.skipped.append(dict(entry, reason="Docker kept the image after its tags were removed (another "
                                                   "image is built on it)"))
            return False
        return True
