# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM disks of a service in its history: every disk build the ledger holds, with its verdict.

build_disks() is pure: ledger records and which disk files exist now in, entries out. A disk belongs
to a service when it was built with the service's name (immutable.infra.disk's name). Its verdict is
the newest disk verdict bound to its digest, so a verdict of an earlier disk of the same inputs
never counts for a rebuilt one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import short_id

DISK_KIND = "disk"
DISK_VERDICT_KIND = "disk_verdict"


def disk_records(records: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The disk build records of name, in the order written."""
    return [record for record in records if record.get("kind") == DISK_KIND and record.get("name") == name]


def latest_disk_verdicts(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest disk verdict record of each disk digest."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        digest = record.get("disk_digest")
        if record.get("kind") != DISK_VERDICT_KIND or not digest:
            continue
        known = latest.get(digest)
        if known is None or (record.get("time") or "") >= (known.get("time") or ""):
            latest[digest] = record
    return latest


def _who(record: dict[str, Any]) -> str | None:
    if not record.get("user") and not record.get("controller"):
        return None
    return f"{record.get('user') or '?'}@{record.get('controller') or '?'}"


def disk_verdict(record: dict[str, Any] | None) -> dict[str, Any]:
    if not record:
        return {"result": None, "time": None, "tests": None, "by": None, "failures": None, "accel": None,
                "boot_to_ssh": None, "ledger_id": None, "broken": None}
    return {"result": record.get("result"), "time": record.get("time"), "tests": record.get("tests"),
            "by": _who(record), "failures": len(record.get("failures") or []),
            # The VM's accelerator is in its host record; records before there was one had it at the top.
            "accel": (record.get("host") or {}).get("accel") or record.get("accel"),
            "boot_to_ssh": (record.get("timings") or {}).get("boot_to_ssh"), "ledger_id": record.get("id"),
            "broken": (record.get("broken") or {}).get("reason")}


def build_disks(records: list[dict[str, Any]], name: str, existing: set[str],
                limit: int | None = None) -> list[dict[str, Any]]:
    """The disk builds of name, newest first; existing holds the disk paths that are files now."""
    verdicts = latest_disk_verdicts(records)
    entries = []
    for record in reversed(disk_records(records, name)):
        digest = record.get("disk_digest")
        image_id = record.get("image_id") or ""
        entries.append({
            "built": record.get("time"), "result": record.get("result"), "disk": record.get("disk"),
            "exists": record.get("disk") in existing, "disk_digest": digest, "inputs_hash": record.get("inputs_hash"),
            "image_id": image_id or None, "image": short_id(image_id) if image_id else None,
            "image_inputs_hash": record.get("image_inputs_hash"), "kernel_release": record.get("kernel_release"),
            "duration": record.get("duration"), "built_by": _who(record), "git_commit": record.get("git_commit"),
            "error": record.get("error"), "ledger_id": record.get("id"),
            "verdict": disk_verdict(verdicts.get(digest) if digest else None),
        })
    return entries[:limit] if limit is not None else entries


DISK_COLUMNS = ("BUILT", "RESULT", "IMAGE", "DISK DIGEST", "KERNEL", "VERDICT", "DISK")


def disk_verdict_text(verdict: dict[str, Any]) -> str:
    result = verdict.get("result")
    if not result:
        return "never booted"
    tests = verdict.get("tests") or {}
    counts = f" {tests.get('passed', 0)}/{tests['total']}" if tests.get("total") else ""
    return f"{result}{counts}" + (f" ({verdict['accel']})" if verdict.get("accel") else "")


def disk_row(entry: dict[str, Any]) -> tuple[str, ...]:
    built = (entry.get("built") or "").replace("T", " ").rstrip("Z")
    digest = entry.get("disk_digest") or ""
    path = entry.get("disk") or "-"
    shown = os.path.basename(path) + ("" if entry.get("exists") else " (gone)") if path != "-" else path
    return (built or "-", entry.get("result") or "-", entry.get("image") or "-",
            short_id(digest) if digest else "-", entry.get("kernel_release") or "-",
            disk_verdict_text(entry["verdict"]), shown)


def render_disk_table(entries: list[dict[str, Any]]) -> list[str]:
    rows = [DISK_COLUMNS] + [disk_row(entry) for entry in entries]
    widths = [max(len(row[column]) for row in rows) for column in range(len(DISK_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in rows]


def disk_summary_line(name: str, entries: list[dict[str, Any]], total: int) -> str:
    more = f" (newest {len(entries)} shown)" if len(entries) < total else ""
    return f"{name}: {total} VM disk build(s){more}"
