# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A service's history: gather what the ledger and Docker hold, then build it (history_builder.py).

History only observes; it never changes anything.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_SERVICE,
    HostLabels,
    ImageProvenance,
    image_labels,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import ENGINES_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.verdicts import newest
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.disk import from_record
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.hosts import VmHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.backends import HostsManager
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import service_revisions
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import validate_service
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.disk_history import (
    build_disks,
    disk_records,
    disk_summary_line,
    render_disk_table,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.history_builder import (
    build_history,
    render_record_changes,
    render_table,
    service_record_changes,
    summary_line,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import verdict_for

HISTORY_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str", "required": True},
    "limit": {"type": "int"},
    **ENGINES_ARGUMENT_SPEC,
}


def merge_observations(observed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One observation of the fleet from each engine's (engine name -> observation, in declaration
    order): containers tagged with their engine (the first engine's wins a name found twice), each
    image's labels and the engines holding it, and each image's newest verdict of any engine."""
    containers: dict[str, dict[str, Any]] = {}
    images: dict[str, dict[str, str]] = {}
    image_engines: dict[str, list[str]] = {}
    verdicts: dict[str, dict[str, dict[str, str] | None]] = {}
    for engine, seen in observed.items():
        for name, container in seen["containers"].items():
            containers.setdefault(name, dict(container, engine=engine))
        for image_id, labels in seen["images"].items():
            images.setdefault(image_id, labels)
            image_engines.setdefault(image_id, []).append(engine)
        for image_id, labels in seen["verdicts"].items():
            verdicts.setdefault(image_id, {})[engine] = labels
    newest_verdicts = {}
    for image_id, records in verdicts.items():
        found = newest(records)
        if found:
            newest_verdicts[image_id] = found[1]
    return {"containers": containers, "images": images, "image_engines": image_engines, "verdicts": newest_verdicts}


def disk_provenance_labels(manifest: dict[str, Any], bake: dict[str, Any] | None) -> dict[str, str]:
    """Provenance labels of a disk, as an image's would read: the bake of the image it was built from (from the
    ledger, when it has the record), with the disk's own inputs hash and build time."""
    bake = bake or {}
    who = f"{bake.get('user') or '?'}@{bake.get('controller') or '?'}" if bake else None
    return ImageProvenance(name=str(bake.get("name") or manifest.get("name") or "") or None,
                           inputs_hash=str(manifest.get("inputs_hash") or "") or None,
                           roles=list(bake.get("roles") or []), base=bake.get("base_image_id"), baked_by=who,
                           created=manifest.get("created"), git_commit=bake.get("git_commit"),
                           git_dirty=bake.get("git_dirty")).to_labels()


def vm_observations(backend: VmHosts, disk_digests: set[str], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each hypervisor's observation as merge_observations() takes an engine's: its VM hosts of the service, the
    disks it holds (with the provenance of the image each was built from) and their verdicts."""
    bakes = {record["image_id"]: record for record in records
             if record.get("kind") == "bake" and record.get("result") == "succeeded" and record.get("image_id")}
    observed: dict[str, dict[str, Any]] = {engine: {"containers": {}, "images": {}, "verdicts": {}}
                                           for engine in backend.fleet.sites}
    for host in backend.hosts():
        labels = HostLabels.from_labels(host.labels)
        observed[host.engine]["containers"][host.name] = {"state": host.status, "image_id": labels.image_id,
                                                          "generation": labels.generation}
    for engine, site in backend.fleet.sites.items():
        for digest in sorted(disk_digests):
            record = site.disk_record(digest)
            if record is not None:
                manifest = from_record(digest, record).manifest
                observed[engine]["images"][digest] = disk_provenance_labels(manifest, bakes.get(manifest.get("image_id")))
            verdict = site.verdict(digest)
            if verdict is not None:
                observed[engine]["verdicts"][digest] = verdict
    return observed


class History(HostsManager):
    record_options = ("engines", "docker_host")

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.service = validate_service(params["service"])
        if params.get("limit") is not None and params["limit"] < 1:
            raise InfraError(f"limit must be at least 1, got {params['limit']}; leave it out to list every revision.")

    def observe(self, client: DockerClient, image_ids: set[str]) -> dict[str, Any]:
        containers = {}
        for inspected in client.containers_with_labels({LABEL_SERVICE: self.service}):
            host = HostLabels.from_labels(image_labels(inspected))
            containers[inspected["Name"].lstrip("/")] = {
                "state": (inspected.get("State") or {}).get("Status"), "image_id": host.image_id,
                "generation": host.generation}
        images, verdicts = {}, {}
        for image_id in sorted(image_ids):
            image = client.image(image_id)
            if image is not None and image["Id"] == image_id:
                images[image_id] = image_labels(image)
            volume = verdict_for(client, image_id)
            if volume is not None:
                verdicts[image_id] = volume
        return {"containers": containers, "images": images, "verdicts": verdicts}

    def run(self) -> dict[str, Any]:
        ledger = self.ledger()
        records = list(ledger.records())
        image_ids = {record["image_id"] for record in service_revisions(records, self.service) if record.get("image_id")}
        if self.on_vms:
            observed = vm_observations(self.vm_hosts(self.service), image_ids, records)
        else:
            clients = self.clients()
            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                observed = dict(zip(clients, pool.map(lambda client: self.observe(client, image_ids), clients.values()),
                                    strict=True))
        history = build_history(records, self.service, merge_observations(observed), self.params.get("limit"))
        table = [summary_line(self.service, history, len(history["revisions"]))]
        if history["revisions"]:
            table += render_table(history["revisions"], engines=self.several)
        built = disk_records(records, self.service)
        existing = {record["disk"] for record in built if record.get("disk") and os.path.isfile(record["disk"])}
        disks = build_disks(records, self.service, existing, self.params.get("limit"))
        if disks:
            table += [disk_summary_line(self.service, disks, len(built))] + render_disk_table(disks)
        record_changes = service_record_changes(records, self.service)
        moves = record_changes[1:]  # the first is where the service started out
        if moves:
            table += [f"{self.service}: where it runs changed {len(moves)} time(s)"] + render_record_changes(moves)
        return {"changed": False, "service": self.service, "ledger": ledger.path, "revisions": history["revisions"],
                "disks": disks, "service_record_changes": record_changes,
                "live_revision": history["live_revision"], "running": history["running"],
                "unrecorded": history["unrecorded"], "table": table, "msg": table, "warnings": ledger.warnings}
