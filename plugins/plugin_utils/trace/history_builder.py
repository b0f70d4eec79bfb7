# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A service's history, built: every revision from the ledger, cross-checked with what Docker holds now.

build_history() is pure: ledger records and plain observations of the engine (the service's
containers, the images and verdict volumes still there) in, revisions out. The History manager
(history.py) gathers those observations; render_table() and summary_line() put them in words.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import short_key_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import ImageProvenance, VerdictLabels
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import SUCCEEDED, service_revisions

GONE = "gone"


# provenance and verdicts ---------------------------------------------------------------------------
def provenance_from_image(image: ImageProvenance) -> dict[str, Any]:
    return {"source": "image", "name": image.name, "roles": image.roles, "git_commit": image.git_commit,
            "git_source": image.git_source, "git_dirty": image.git_dirty, "created": image.created,
            "baked_by": image.baked_by, "base": image.base}


def provenance_from_bake(record: dict[str, Any]) -> dict[str, Any]:
    return {"source": "ledger", "name": record.get("name"), "roles": list(record.get("roles") or []),
            "git_commit": record.get("git_commit"), "git_source": None, "git_dirty": record.get("git_dirty"),
            "created": record.get("time"), "baked_by": _who(record), "base": record.get("base_image_id")}


def provenance(image_labels: dict[str, str] | None, bake: dict[str, Any] | None) -> dict[str, Any]:
    """From the image's labels while the image exists, else from the ledger's bake record."""
    image = ImageProvenance.from_labels(image_labels)
    if image.inputs_hash:
        return provenance_from_image(image)
    if bake:
        return provenance_from_bake(bake)
    return {"source": None, "name": None, "roles": [], "git_commit": None, "git_source": None, "git_dirty": None,
            "created": None, "baked_by": None, "base": None}


def _test_counts(raw: Any) -> dict[str, int] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return {key: int(value) for key, value in raw.items() if isinstance(value, int)} if isinstance(raw, dict) else None


def verdict(volume: dict[str, str] | None, record: dict[str, Any] | None) -> dict[str, Any]:
    """The latest verdict of an image: the engine's verdict volume and the ledger's newest verdict record.

    The newer of the two wins; they are one verdict when the volume names the record.
    """
    from_volume = None
    engine = VerdictLabels.from_labels(volume)
    if engine.result:
        from_volume = {"result": engine.result, "time": engine.time, "tests": _test_counts(engine.tests),
                       "by": engine.verified_by, "failures": None, "ledger_id": engine.ledger_id, "source": "engine"}
    from_ledger = None
    if record:
        from_ledger = {"result": record.get("result"), "time": record.get("time"),
                       "tests": _test_counts(record.get("tests")), "by": _who(record),
                       "failures": len(record.get("failures") or []), "ledger_id": record.get("id"),
                       "source": "ledger"}
    if from_volume and from_ledger:
        if from_volume["ledger_id"] and from_volume["ledger_id"] == from_ledger["ledger_id"]:
            return dict(from_ledger, source="engine and ledger")
        return max(from_volume, from_ledger, key=lambda entry: entry["time"] or "")
    return from_volume or from_ledger or {"result": None, "time": None, "tests": None, "by": None,
                                          "failures": None, "ledger_id": None, "source": None}


def signers(rollout: dict[str, Any], bake: dict[str, Any] | None, verdict_record: dict[str, Any] | None
            ) -> dict[str, Any]:
    """Who signed a revision's image: the keys the rollout's trust gate accepted, else the keys its bake and
    its latest verdict were signed with (ledger records of signed bakes and verifies carry signed_by)."""
    trusted = rollout.get("trusted")
    if isinstance(trusted, dict) and trusted:
        return {"keys": list(dict.fromkeys(str(key) for key in trusted.values())), "checked": True}
    keys = [record.get("signed_by") for record in (bake, verdict_record) if record and record.get("signed_by")]
    return {"keys": list(dict.fromkeys(str(key) for key in keys)), "checked": False}


def signed_text(entry: dict[str, Any]) -> str:
    """'0123456789ab' (the short key IDs), '+' when the rollout's trust gate checked them; '-' when unsigned."""
    signed = entry.get("signed_by") or {}
    keys = ",".join(short_key_id(key) for key in signed.get("keys") or [])
    return f"{keys}{'+' if signed.get('checked') else ''}" if keys else "-"


def _who(record: dict[str, Any]) -> str | None:
    if not record.get("user") and not record.get("controller"):
        return None
    return f"{record.get('user') or '?'}@{record.get('controller') or '?'}"


def _latest_by_image(records: Iterable[dict[str, Any]], kind: str, result: str | None = None,
                     key: str = "image_id") -> dict[str, dict]:
    """The newest record of a kind per artifact: per image ID, or per disk digest (key="disk_digest")."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("kind") != kind or not record.get(key):
            continue
        if result and record.get("result") != result:
            continue
        known = latest.get(record[key])
        if known is None or (record.get("time") or "") >= (known.get("time") or ""):
            latest[record[key]] = record
    return latest


# hosts -------------------------------------------------------------------------------------------
def own_hosts(record: dict[str, Any], service: str) -> tuple[list[str], bool]:
    """The hosts a revision brought in, and whether they were derived rather than recorded.

    A rollout that did not succeed records no host list; its hosts were <service>-<generation>-1..replicas.
    """
    if record.get("added") is not None or record.get("result") == SUCCEEDED:
        return list(record.get("added") or []), False
    if record.get("kind_of_change") == "rollout" and record.get("generation") and record.get("replicas"):
        return [f"{service}-{record['generation']}-{index}" for index in range(1, int(record["replicas"]) + 1)], True
    return [], False


def host_states(names: Iterable[str], containers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    states = []
    for name in names:
        container = containers.get(name)
        states.append({"host": name, "exists": container is not None,
                       "state": (container.get("state") or "unknown") if container else GONE,
                       "engine": container.get("engine") if container else None})
    return states


def engine_counts(states: list[dict[str, Any]]) -> dict[str, int]:
    """How many of a revision's hosts still exist on each engine, in the order first seen."""
    counts: dict[str, int] = {}
    for entry in states:
        if entry.get("engine"):
            counts[entry["engine"]] = counts.get(entry["engine"], 0) + 1
    return counts


def summarize_states(states: list[dict[str, Any]]) -> str:
    """'3 running', '2 exited, 1 gone', or '-' without hosts."""
    if not states:
        return "-"
    counts: dict[str, int] = {}
    for entry in states:
        counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    return ", ".join(f"{count} {state}" for state, count in counts.items())


def live_revision(revisions: list[dict[str, Any]], running: set[str]) -> int | None:
    """The newest successful revision whose live hosts all run now."""
    for record in reversed(revisions):
        live = set(record.get("live") or [])
        if record.get("result") == SUCCEEDED and live and live <= running:
            return record["revision"]
    return None


# the builder -------------------------------------------------------------------------------------
def build_history(records: list[dict[str, Any]], service: str, observed: dict[str, Any],
                  limit: int | None = None) -> dict[str, Any]:
    """Revisions of service, newest first, from ledger records and what the engine holds.

    observed: {"containers": {name: {"state", "image_id", "generation", "engine"}}, "images": {image_id:
    labels} for the images that exist, "image_engines": {image_id: [engines that hold it]}, "verdicts":
    {image_id: verdict volume labels (the newest of any engine)}}.
    """
    containers = observed.get("containers") or {}
    images = observed.get("images") or {}
    volumes = observed.get("verdicts") or {}
    image_engines = observed.get("image_engines") or {}
    bakes = _latest_by_image(records, "bake", result=SUCCEEDED)
    # A VM service's revisions name their disk's digest where a container service's name an image ID.
    verdict_records = {**_latest_by_image(records, "disk_verdict", key="disk_digest"),
                       **_latest_by_image(records, "verdict")}
    revisions = service_revisions(records, service)
    running = {name for name, container in containers.items() if container.get("state") == "running"}
    live_number = live_revision(revisions, running)

    entries = []
    for record in reversed(revisions):
        image_id = record.get("image_id") or ""
        added, derived = own_hosts(record, service)
        added_states = host_states(added, containers)
        removed_states = host_states(record.get("removed") or [], containers)
        entries.append({
            "revision": record["revision"], "generation": record.get("generation"), "image_id": image_id,
            "image": short_id(image_id) if image_id else None, "image_exists": image_id in images,
            "image_engines": list(image_engines.get(image_id) or []),
            "inputs_hash": record.get("inputs_hash") or ImageProvenance.from_labels(images.get(image_id)).inputs_hash,
            "provenance": provenance(images.get(image_id), bakes.get(image_id)),
            "verdict": verdict(volumes.get(image_id), verdict_records.get(image_id)),
            "signed_by": signers(record, bakes.get(image_id), verdict_records.get(image_id)),
            "rolled_out_by": _who(record), "git_commit": record.get("git_commit"), "git_dirty": record.get("git_dirty"),
            "rollout_id": record.get("rollout"), "started": record.get("time"), "finished": record.get("finished"),
            "duration": record.get("duration"), "result": record.get("result"),
            "kind_of_change": record.get("kind_of_change"), "rollback_to": record.get("rollback_to_revision"),
            "strategy": record.get("strategy"),
            "replicas": record.get("replicas"), "error": record.get("error"),
            "added": added_states, "hosts_derived": derived, "removed": removed_states,
            "live_hosts": list(record.get("live") or []), "live_before": list(record.get("live_before") or []),
            "stopping": list(record.get("stopping") or []),
            "hosts": summarize_states(added_states), "engines": engine_counts(added_states),
            "hosts_gone": bool(added_states) and all(entry["state"] == GONE for entry in added_states),
            "live": record["revision"] == live_number,
        })
    if limit is not None:
        entries = entries[:limit]
    live_hosts = next((entry.get("live") or [] for entry in revisions if entry["revision"] == live_number), [])
    return {"revisions": entries, "live_revision": live_number, "running": sorted(running),
            "unrecorded": sorted(running - set(live_hosts)), "total": len(revisions)}


# rendering ---------------------------------------------------------------------------------------
TABLE_COLUMNS = ("REV", "STARTED", "RESULT", "CHANGE", "GEN", "IMAGE", "VERDICT", "BY", "COMMIT", "HOSTS")


def verdict_text(entry: dict[str, Any]) -> str:
    result = entry.get("result")
    if not result:
        return "never verified"
    tests = entry.get("tests") or {}
    if tests.get("total"):
        return f"{result} {tests.get('passed', 0)}/{tests['total']}"
    return result


def change_text(entry: dict[str, Any]) -> str:
    change = entry.get("kind_of_change") or "-"
    return f"{change} (rollback to {entry['rollback_to']})" if entry.get("rollback_to") else change


def table_row(entry: dict[str, Any]) -> tuple[str, ...]:
    started = (entry.get("started") or "").replace("T", " ").rstrip("Z")
    return (f"{'*' if entry['live'] else ' '}{entry['revision']}", started or "-", entry.get("result") or "-",
            change_text(entry), str(entry.get("generation") or "-"), entry.get("image") or "-",
            verdict_text(entry["verdict"]), entry.get("rolled_out_by") or "-",
            (entry.get("git_commit") or "-")[:10], entry["hosts"])


def engines_text(entry: dict[str, Any]) -> str:
    """'rig1 2, rig2 1': where a revision's hosts that still exist are; '-' when none do."""
    return ", ".join(f"{engine} {count}" for engine, count in (entry.get("engines") or {}).items()) or "-"


def render_table(revisions: list[dict[str, Any]], engines: bool = False) -> list[str]:
    """Fixed-width lines: a header and one row per revision; '*' marks the live revision. With engines
    (a fleet of several), an ENGINES column says how many hosts of each revision are on each engine; when
    any revision's image was signed, a SIGNED column names the keys (docs/attestations.md)."""
    signed = any((entry.get("signed_by") or {}).get("keys") for entry in revisions)
    header = TABLE_COLUMNS + (("SIGNED",) if signed else ()) + (("ENGINES",) if engines else ())
    rows = [header] + [table_row(entry) + ((signed_text(entry),) if signed else ())
                       + ((engines_text(entry),) if engines else ()) for entry in revisions]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in rows]


def summary_line(service: str, history: dict[str, Any], shown: int) -> str:
    total = history["total"]
    if not total:
        return f"{service}: the ledger has no rollout of this service"
    live = f"revision {history['live_revision']} is live" if history["live_revision"] else "no revision is live"
    more = f" (newest {shown} shown)" if shown < total else ""
    unrecorded = f"; running hosts no revision names: {', '.join(history['unrecorded'])}" if history["unrecorded"] else ""
    return f"{service}: {total} revision(s){more}; {live}{unrecorded}"


# the service record --------------------------------------------------------------------------------
def service_record_changes(records: Iterable[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    """Each change of where the service runs (its record: engines, balancer, addressing), oldest first."""
    changes = [{"time": record.get("time"), "by": _who(record), "changes": record.get("changes") or {}}
               for record in records if record.get("kind") == "service" and record.get("service") == service]
    return sorted(changes, key=lambda entry: entry["time"] or "")


def _shown_option(value: Any) -> str:
    """An option of the record in a few words: a balancer by kind, runtime API and backend; engines by name."""
    if isinstance(value, dict) and value.get("backend"):
        return f"{value.get('type')} {value.get('runtime_api')} backend {value['backend']}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return ", ".join(str(entry.get("name")) if isinstance(entry, dict) else str(entry) for entry in value)
    return "-" if value is None else str(value)


def render_record_changes(changes: list[dict[str, Any]]) -> list[str]:
    """One line per change of the service record: when, by whom, each option before -> after."""
    return [f"{entry['time'] or '?'} {entry['by'] or '?'}: " + "; ".join(
        f"{name} {_shown_option(change.get('before'))} -> {_shown_option(change.get('after'))}"
        for name, change in sorted(entry["changes"].items())) for entry in changes]
