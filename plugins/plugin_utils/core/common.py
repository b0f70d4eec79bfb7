# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors and small helpers every part of the collection shares (label keys: labels.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

SHORT_HASH_LENGTH = 12
T = TypeVar("T")


class InfraError(Exception):
    """An expected failure: its message is a sentence the user can act on."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class EngineUnreachable(InfraError):
    """An engine (a Docker engine, a hypervisor) stopped answering during a call: it restarted, died, or
    its socket went away. details["engine"] says how it was reached."""


class OutputEndedEarly(InfraError):
    """A command run inside a host stopped sending output before its engine reported it exited: the
    connection carrying the output was lost, or the command closed its output and went on running. Its
    exit code is not known and its output may be cut short."""


ANSWER_AGAIN_SECONDS = 5.0  # how long an engine that stopped answering is given to answer on a new connection


def in_daemon_thread(function: Callable[..., T], *args: Any) -> Future[T]:
    """Runs function in a daemon thread of its own; its outcome as a Future. A process may end before it
    does (nothing waits for such a thread at exit)."""
    outcome: Future[T] = Future()

    def run() -> None:
        if outcome.set_running_or_notify_cancel():
            try:
                outcome.set_result(function(*args))
            except BaseException as error:  # handed to whoever reads the outcome
                outcome.set_exception(error)
    threading.Thread(target=run, daemon=True).start()
    return outcome


def answers_within(call: Callable[[], object], seconds: float = ANSWER_AGAIN_SECONDS) -> bool:
    """Whether call() returns, without raising, within seconds; one that takes longer runs on in its daemon
    thread (in_daemon_thread), whose outcome nobody reads."""
    try:
        in_daemon_thread(call).result(timeout=seconds)
    except Exception:  # it failed, or it did not answer in time (TimeoutError)
        return False
    return True


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
