# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors and small helpers every part of the collection shares (label keys: labels.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

SHORT_HASH_LENGTH = 12


class InfraError(Exception):
    """An expected failure: its message is a sentence the user can act on."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class EngineUnreachable(InfraError):
    """An engine (a Docker engine, a hypervisor) stopped answering during a call: it restarted, died, or
    its socket went away. details["engine"] says how it was reached."""


ANSWER_AGAIN_SECONDS = 5.0  # how long an engine that stopped answering is given to answer on a new connection


def answers_within(call: Callable[[], object], seconds: float = ANSWER_AGAIN_SECONDS) -> bool:
    """Whether call() returns, without raising, within seconds; one that takes longer runs on in a daemon
    thread of its own, whose outcome nobody reads."""
    outcome: queue.Queue[bool] = queue.Queue()

    def run() -> None:
        try:
            call()
            outcome.put(True)
        except Exception:  # any failure: the engine did not answer
            outcome.put(False)
    threading.Thread(target=run, daemon=True).start()
    try:
        return outcome.get(timeout=seconds)
    except queue.Empty:
        return False


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data gives equal text whatever its dict order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def env_dict(entries: list[str] | None) -> dict[str, str]:
    """["KEY=value", ...] as the engine lists a container's environment -> {"KEY": "value"}."""
    return dict(entry.partition("=")[::2] for entry in entries or [])


def short_id(image_id: str) -> str:
    """sha256:abcdef... -> abcdef012345 (the form docker prints)."""
    return image_id.split(":", 1)[-1][:SHORT_HASH_LENGTH]


def utc_timestamp(epoch: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if epoch is None else epoch))


def parse_rfc3339(text: str) -> float:
    """RFC 3339 time as the Docker engine writes it (nanoseconds, Z or an offset) -> epoch seconds."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", (text or "").strip())
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    offset = match.group(3) or "Z"
    stamp = datetime.datetime.fromisoformat(match.group(1) + ("+00:00" if offset == "Z" else offset))
    return stamp.timestamp() + float(match.group(2) or 0)
