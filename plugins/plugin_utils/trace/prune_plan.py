# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of prune: what to remove, and nothing that is still needed.

plan_prune() is pure: plain observations of the engine (containers, images and volumes, as
`docker system df` reports them) and the options in, what to remove and what to keep, each with
its reason, out. The Prune manager (prune.py) observes and applies that plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import short_id, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    HostLabels,
    ImageProvenance,
    attestation_volume_image,
    builder_runs_until,
    is_builder,
    is_verify_host,
    journaled_service,
    locked_service,
    marks_failed_bake,
    pinning_tag,
    verdict_volume_image,
)

STOPPED_STATES = ("exited", "created", "dead")
KINDS = ("hosts", "images", "builders", "verify_hosts", "failed_images", "verdict_volumes", "leftovers")
HOST_NAME = re.compile(r"^(?P<service>.+)-(?P<generation>[0-9]+)-(?P<index>[0-9]+)$")


@dataclass(frozen=True)
class PruneOptions:
    service: str | None = None
    keep_previous: int = 1
    images: bool = True
    keep_images: int = 1
    pinned: tuple[str, ...] = ()
    builders: bool = True
    min_age: float = 600
    now: float = 0.0


@dataclass
class PrunePlan:
    remove: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    kept: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def add(self, kind: str, entry: dict[str, Any], reason: str, removing: bool) -> None:
        (self.remove if removing else self.kept)[kind].append(dict(entry, reason=reason))

    @property
    def empty(self) -> bool:
        return not any(self.remove.values())


def item(name: str, object_id: str, size: int | None = None, **details: Any) -> dict[str, Any]:
    return dict({"name": name, "id": object_id, "bytes": size}, **details)


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s"
    return f"{int(seconds // 60)} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _old_enough(created: float | None, options: PruneOptions) -> tuple[bool, str]:
    if created is None:
        return False, "its age is unknown"
    age = max(options.now - created, 0)
    return age >= options.min_age, f"created {age_text(age)} ago"


# hosts -------------------------------------------------------------------------------------------
def service_hosts(containers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Host containers by service: labelled with a service and a generation, named <service>-<gen>-<n>."""
    hosts: dict[str, list[dict[str, Any]]] = {}
    for container in containers:
        host = HostLabels.from_labels(container.get("labels"))
        match = HOST_NAME.match(container["name"])
        if not host.service or not match or match.group("service") != host.service or host.generation is None:
            continue
        hosts.setdefault(host.service, []).append(dict(container, generation=host.generation))
    return hosts


def busy_services(containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, str]:
    """Services with a rollout under way: their lock or journal exists."""
    busy = {}
    for container in containers:
        service = locked_service(container["name"])
        if service is not None:
            busy[service] = f"its lock {container['name']} is held"
    for volume in volumes:
        service = journaled_service(volume["name"])
        if service is not None:
            busy.setdefault(service, f"its rollout journal {volume['name']} exists")
    return busy


def plan_hosts(plan: PrunePlan, hosts: list[dict[str, Any]], service: str, options: PruneOptions,
               busy: str | None) -> None:
    if busy:
        for host in hosts:
            plan.add("hosts", item(host["name"], host["id"]), f"a rollout of {service} is under way ({busy})", False)
        return
    generations: dict[int, list[dict[str, Any]]] = {}
    for host in hosts:
        generations.setdefault(host["generation"], []).append(host)
    live = {number for number, members in generations.items()
            if any(host.get("state") not in STOPPED_STATES for host in members)}
    stopped = sorted((number for number in generations if number not in live), reverse=True)
    kept = set(stopped[:options.keep_previous])
    for number in sorted(generations, reverse=True):
        for host in sorted(generations[number], key=lambda entry: entry["name"]):
            entry = item(host["name"], host["id"], host.get("size"), service=service, image_id=host.get("image_id"))
            if number in live:
                plan.add("hosts", entry, f"generation {number} runs (live)", False)
            elif number in kept:
                plan.add("hosts", entry,
                         f"generation {number} is kept stopped for rollback (keep_previous={options.keep_previous})",
                         False)
            else:
                plan.add("hosts", entry,
                         f"stopped generation {number} is older than the {len(kept)} kept for rollback "
                         f"(keep_previous={options.keep_previous})", True)


# builders, throwaway hosts, failed bakes ---------------------------------------------------------
def plan_leftover_containers(plan: PrunePlan, containers: list[dict[str, Any]], options: PruneOptions) -> None:
    for container in containers:
        name = container["name"]
        if is_builder(name):
            kind, what = "builders", "bake builder"
        elif is_verify_host(container.get("labels")):
            kind, what = "verify_hosts", "verify throwaway host"
        else:
            continue
        until = builder_runs_until(name) if kind == "builders" else None
        old, age = _old_enough(container.get("created"), options)
        if until is not None and until > options.now:
            plan.add(kind, item(name, container["id"]),
                     f"{what} {age}, whose bake may run until {utc_timestamp(until)} (its bake_timeout)", False)
        elif old:
            plan.add(kind, item(name, container["id"], container.get("size")), f"{what} left behind ({age})", True)
        else:
            plan.add(kind, item(name, container["id"]),
                     f"{what} {age}, younger than min_age ({options.min_age:g} s): its bake or verify may be running",
                     False)


def is_baked(image: dict[str, Any]) -> bool:
    """Baked by this collection: the image carries an inputs hash."""
    return bool(ImageProvenance.from_labels(image.get("labels")).inputs_hash)


def is_failed_bake(image: dict[str, Any]) -> bool:
    return marks_failed_bake(image.get("labels") or {}, image.get("tags") or [])


def plan_failed_images(plan: PrunePlan, images: list[dict[str, Any]], used: dict[str, str],
                       options: PruneOptions) -> None:
    for image in images:
        if not is_failed_bake(image):
            continue
        entry = item(image_name(image), image["id"], image.get("size"), tags=list(image.get("tags") or []))
        old, age = _old_enough(image.get("created"), options)
        if image["id"] in used:
            plan.add("failed_images", entry, f"used by container {used[image['id']]}", False)
        elif old:
            plan.add("failed_images", entry, f"builder kept from a failed bake ({age})", True)
        else:
            plan.add("failed_images", entry, f"{age}, younger than min_age ({options.min_age:g} s)", False)


# images ------------------------------------------------------------------------------------------
def image_name(image: dict[str, Any]) -> str:
    tags = image.get("tags") or []
    return tags[0] if tags else short_id(image["id"])


def repository(image: dict[str, Any]) -> str:
    named = ImageProvenance.from_labels(image.get("labels")).name
    if named:
        return named
    tags = image.get("tags") or []
    return tags[0].rsplit(":", 1)[0] if tags else "(untagged)"


def pin_reason(image: dict[str, Any], pinned: Iterable[str]) -> str | None:
    hex_id = image["id"].split(":", 1)[-1]
    for entry in pinned:
        bare = entry.split(":", 1)[-1] if entry.startswith("sha256:") else entry
        if (len(bare) >= 12 and re.fullmatch(r"[0-9a-f]+", bare) and hex_id.startswith(bare)) \
                or entry in (image.get("tags") or []):
            return f"pinned by the pinned option ({entry})"
    tag = pinning_tag(image.get("tags") or [])
    return f"pinned by its tag {tag}" if tag else None


def plan_images(plan: PrunePlan, images: list[dict[str, Any]], used: dict[str, str], options: PruneOptions,
                repositories: set[str] | None) -> None:
    """Baked images nothing uses, beyond the newest keep_images of their repository, unless pinned."""
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        if is_baked(image) and not is_failed_bake(image):
            by_repository.setdefault(repository(image), []).append(image)
    for name in sorted(by_repository):
        if repositories is not None and name not in repositories:
            continue
        newest_first = sorted(by_repository[name], key=lambda entry: entry.get("created") or 0, reverse=True)
        for position, image in enumerate(newest_first):
            entry = item(image_name(image), image["id"], image.get("size"), tags=list(image.get("tags") or []))
            pinned = pin_reason(image, options.pinned)
            if image["id"] in used:
                plan.add("images", entry, f"used by container {used[image['id']]}", False)
            elif pinned:
                plan.add("images", entry, pinned, False)
            elif position < options.keep_images:
                plan.add("images", entry, f"one of the newest {options.keep_images} of {name} (keep_images)", False)
            else:
                plan.add("images", entry, f"no container uses it and {options.keep_images} newer image(s) of {name} are kept", True)


def plan_verdict_volumes(plan: PrunePlan, volumes: list[dict[str, Any]], remaining_images: set[str],
                         removed_images: set[str], options: PruneOptions, orphans: bool) -> None:
    """Verdicts (and attestations) go with their image; those of images gone some other way go once older
    than min_age."""
    for volume in volumes:
        verdict_of = verdict_volume_image(volume["name"], volume.get("labels"))
        image_id = verdict_of or attestation_volume_image(volume["name"], volume.get("labels"))
        if image_id is None:
            continue
        what = "verdict" if verdict_of else "attestations"
        entry = item(volume["name"], volume["name"], image_id=image_id, with_image=image_id in removed_images)
        if image_id in removed_images:
            plan.add("verdict_volumes", entry, f"{what} of image {short_id(image_id)}, removed by this prune", True)
        elif orphans and image_id not in remaining_images:
            old, _age = _old_enough(volume.get("created"), options)
            if old:
                plan.add("verdict_volumes", entry, f"{what} of image {short_id(image_id)}, which no longer exists",
                         True)


# the plan ----------------------------------------------------------------------------------------
def service_repositories(records: Iterable[dict[str, Any]], service: str, images: list[dict[str, Any]],
                         containers: list[dict[str, Any]]) -> set[str]:
    """Repositories of the images a service ran: from its hosts' labels and its rollouts in the ledger."""
    hosts = [HostLabels.from_labels(container.get("labels")) for container in containers]
    image_ids = {host.image_id for host in hosts if host.service == service}
    names = set()
    for record in records:
        if record.get("kind") == "rollout" and record.get("service") == service:
            image_ids.add(record.get("image_id"))
    for record in records:
        if record.get("kind") == "bake" and record.get("image_id") in image_ids and record.get("name"):
            names.add(record["name"])
    names.update(repository(image) for image in images if image["id"] in image_ids)
    return names


def plan_prune(observed: dict[str, Any], options: PruneOptions) -> PrunePlan:
    """What to remove and keep on one engine, with reasons.

    observed: {"containers": [{"id", "name", "image_id", "state", "created" (epoch), "labels", "size"}],
    "images": [{"id", "tags", "labels", "created", "size"}], "volumes": [{"name", "labels", "created"}],
    "repositories": repositories in scope for images (None: all)}.
    """
    return plan_fleet_prune({"": observed}, options)[""]


def plan_fleet_prune(observed: dict[str, dict[str, Any]], options: PruneOptions) -> dict[str, PrunePlan]:
    """One plan per engine (engine name -> its observation as plan_prune takes it).

    Hosts are decided over the whole fleet, since a generation spans engines: it is live while any of its
    hosts runs on any engine, the kept generations are the fleet's newest stopped ones, and a service
    whose lock or journal exists on any engine is busy everywhere. Everything else is per engine: an
    image stays on an engine while a container there uses it (or it is pinned, or among the newest
    keep_images of its repository there), and a verdict goes with its image from that engine only.
    """
    plans = {engine: PrunePlan() for engine in observed}
    engine_of: dict[str, str] = {}
    everything: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for engine, seen in observed.items():
        for container in seen.get("containers") or []:
            engine_of[container["id"]] = engine
            everything.append(container)
        volumes += seen.get("volumes") or []
    fleet = PrunePlan()
    busy = busy_services(everything, volumes)
    for service, hosts in sorted(service_hosts(everything).items()):
        if options.service is None or service == options.service:
            plan_hosts(fleet, hosts, service, options, busy.get(service))
    for removing, entries in ((True, fleet.remove["hosts"]), (False, fleet.kept["hosts"])):
        for entry in entries:
            (plans[engine_of[entry["id"]]].remove if removing else plans[engine_of[entry["id"]]].kept)["hosts"].append(entry)
    for engine, seen in observed.items():
        plan_engine(plans[engine], seen, options)
    return plans


def plan_engine(plan: PrunePlan, observed: dict[str, Any], options: PruneOptions) -> None:
    """The per-engine part of a plan whose hosts are decided: leftovers, images and verdicts."""
    containers = observed.get("containers") or []
    images = observed.get("images") or []
    volumes = observed.get("volumes") or []
    if options.builders:
        plan_leftover_containers(plan, containers, options)
    leaving = {entry["id"] for kind in ("hosts", "builders", "verify_hosts") for entry in plan.remove[kind]}
    used: dict[str, str] = {}
    for container in containers:
        if container["id"] not in leaving and container.get("image_id"):
            used.setdefault(container["image_id"], container["name"])
    if options.images:
        plan_images(plan, images, used, options, observed.get("repositories"))
    if options.builders:
        plan_failed_images(plan, images, used, options)
    removed_images = {entry["id"] for kind in ("images", "failed_images") for entry in plan.remove[kind]}
    remaining = {image["id"] for image in images} - removed_images
    plan_verdict_volumes(plan, volumes, remaining, removed_images, options, orphans=options.builders)


# observing ---------------------------------------------------------------------------------------
def epoch_seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _writable_size(entry: dict[str, Any]) -> int | None:
    # The engine leaves SizeRw out when it is zero, but always sends SizeRootFs with sizes.
    if entry.get("SizeRw") is not None:
        return entry["SizeRw"]
    return 0 if entry.get("SizeRootFs") is not None else None


def observation_from_disk_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Plain observations from the engine's `docker system df` data."""
    containers = [{"id": entry["Id"], "name": (entry.get("Names") or ["/" + entry["Id"][:12]])[0].lstrip("/"),
                   "image_id": entry.get("ImageID"), "state": entry.get("State"), "created": epoch_seconds(entry.get("Created")),
                   "labels": entry.get("Labels") or {}, "size": _writable_size(entry)}
                  for entry in usage.get("Containers") or []]
    images = []
    for entry in usage.get("Images") or []:
        size, shared = entry.get("Size"), entry.get("SharedSize")
        images.append({"id": entry["Id"], "labels": entry.get("Labels") or {}, "created": epoch_seconds(entry.get("Created")),
                       "tags": [tag for tag in entry.get("RepoTags") or [] if tag != "<none>:<none>"],
                       "size": size - shared if isinstance(size, int) and isinstance(shared, int) and shared >= 0
                       else size})
    volumes = [{"name": entry["Name"], "labels": entry.get("Labels") or {}, "created": epoch_seconds(entry.get("CreatedAt"))}
               for entry in usage.get("Volumes") or []]
    return {"containers": containers, "images": images, "volumes": volumes}


def freed_bytes(removed: dict[str, list[dict[str, Any]]]) -> int:
    return sum(entry.get("bytes") or 0 for entries in removed.values() for entry in entries)


def summary(removed: dict[str, list[dict[str, Any]]], skipped: list[dict[str, Any]], freed: int,
            check_mode: bool) -> str:
    counts = [f"{len(entries)} {kind.replace('_', ' ')}" for kind, entries in removed.items() if entries]
    if not counts:
        text = "nothing to prune"
    else:
        text = f"{'would remove' if check_mode else 'removed'} {', '.join(counts)}"
        if freed:
            text += f"; {'would free' if check_mode else 'freed'} about {freed / 1e6:.1f} MB"
    if skipped:
        text += f"; skipped {len(skipped)}: " + "; ".join(f"{entry['name']}: {entry['reason']}" for entry in skipped)
    return text
