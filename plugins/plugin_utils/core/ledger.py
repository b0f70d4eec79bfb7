# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger: an append-only JSON Lines file with one record per bake, verdict and rollout.

Appends take a POSIX record lock (fcntl.lockf, which also works on NFS) and write each record in
one write() call, so concurrent writers on one or several controllers never interleave. A torn last
line, left by a controller killed mid-write, is terminated before the next append and skipped, with
a warning, when the ledger is read.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_user, git_state

LEDGER_ENV = "IMMUTABLE_INFRA_LEDGER"
DEFAULT_LEDGER = "~/.local/share/immutable-infra/ledger.jsonl"
FORMAT_VERSION = 1


def default_path() -> str:
    return os.path.expanduser(os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)


@dataclass
class Ledger:
    path: str = field(default_factory=default_path)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = os.path.abspath(os.path.expanduser(self.path))

    def new_record(self, kind: str, basedir: str | None = None, **fields: Any) -> dict[str, Any]:
        """A record with who, where and when filled in; fields add the kind-specific data."""
        git = git_state(basedir) if basedir else {}
        record = {"v": FORMAT_VERSION, "id": uuid.uuid4().hex, "kind": kind, "time": utc_timestamp(),
                  "user": controller_user(), "controller": socket.gethostname(),
                  "git_commit": git.get("commit"), "git_dirty": git.get("dirty")}
        record.update(fields)
        return record

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise InfraError(f"Cannot open the ledger {self.path}: {error.strerror}; "
                             f"set the ledger option or {LEDGER_ENV} to a writable path.") from None
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX)
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a torn line so this record stands on its own
            view = memoryview(line)
            while view:  # a write may take only part of it (a nearly full disk raises on the next one)
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        except OSError as error:
            raise InfraError(f"Cannot write to the ledger {self.path}: {error.strerror}.") from None
        finally:
            os.close(descriptor)  # also releases the lock
        return record

    def records(self, **match: Any) -> Iterator[dict[str, Any]]:
        """Records in the order written, optionally only those whose fields equal match."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    if not isinstance(record, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self.warnings.append(f"ledger {self.path} line {number} is damaged (probably a write cut "
                                         "short) and was skipped")
                    continue
                if all(record.get(key) == value for key, value in match.items()):
                    yield record
