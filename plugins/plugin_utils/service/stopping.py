# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stops the back-end is still finishing: hosts out of the balancer whose service ignores SIGTERM.

A retired host is stopped only once it is drained and out of the balancer, so nothing waits for it
to exit: the stop is sent, and the engine kills the host when its stop_timeout runs out. Until then
the host still runs. This record in the service's store (one label per host with the time by which
the engine will have killed it) is how every run and every controller tells such a host from a stray
one: a host listed here counts as stopped, so it stays in its kept generation instead of being
removed, and a run that needs it back finishes the stop first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    InfraError,
    in_daemon_thread,
    utc_timestamp,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    stopping_hosts,
    stopping_labels,
    stopping_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostBackend, HostRecord
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore


class PendingStops:
    def __init__(self, store: ServiceStore, service: str) -> None:
        self.store = store
        self.service = service
        self.name = stopping_name(service)
        self.known: dict[str, float] = {}  # as last read or written
        self.offline = False  # the engine holding the record is down: keep it in memory only

    def read(self) -> dict[str, float]:
        """Host name -> epoch by which the engine will have killed it."""
        if not self.offline:
            self.known = stopping_hosts(self.store.get(self.name))
        return dict(self.known)

    def write(self, pending: dict[str, float]) -> None:
        """Records exactly these hosts; no record at all when there is none."""
        if not self.offline:
            if not pending:
                if self.store.get(self.name) is not None:
                    self.store.remove(self.name)
            else:
                self.store.replace(self.name, stopping_labels(self.service, pending))
        self.known = dict(pending)


def deadline_text(deadline: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(deadline))


STOP_ANSWER_WAIT = 1.0  # seconds a stop is waited for before it is left to the engine
STOP_SLACK = 2.0  # seconds beyond stop_timeout by which the engine will have killed a host


class Stops:
    """The stops a change sends: noted in the pending-stops record before they go out, sent in the
    background (a drained host out of the balancer holds nothing up), and collected at the end of the
    steps. A stop the engine has not finished after STOP_ANSWER_WAIT stays recorded as pending (the
    engine finishes it); the others are forgotten.

    Collecting does not wait for a stop the engine has not answered yet (the last batch's, sent a moment
    before): the host is drained, out of the balancer and recorded as stopping, so waiting would only
    tidy the record. It stays recorded as stopping until a later collect or run sees it stopped. Each
    stop waits for its answer in a daemon thread of its own, so a task never waits for one at its end."""

    def __init__(self, backend: HostBackend, store: ServiceStore, stop_timeout: int,
                 progress: Callable[[str], None]) -> None:
        self.backend = backend
        self.service = backend.service
        self.pending = PendingStops(store, backend.service)
        self.stop_timeout = stop_timeout
        self.progress = progress
        self.still_stopping: dict[str, float] = {}  # hosts this run left for the engine to finish stopping
        self._sent: list[tuple[str, Future]] = []

    def send(self, records: list[HostRecord]) -> None:
        deadline = time.time() + self.stop_timeout + STOP_SLACK
        self.pending.write(dict(self.pending.read(), **{record.name: deadline for record in records}))
        for record in records:
            self._sent.append((record.name, in_daemon_thread(self.backend.request_stop, record, self.stop_timeout,
                                                             STOP_ANSWER_WAIT)))

    def finish(self, record: HostRecord) -> None:
        """Ends a stop the engine is still carrying out at once (the host is out of the balancer already)."""
        self.backend.kill(record)
        if not self.backend.wait_exited(record, max(5.0, float(self.stop_timeout))):
            raise InfraError(f"host {record.name} did not exit after SIGKILL, so it cannot be started again.",
                             host=record.name)

    def under_way(self, name: str) -> bool:
        return any(sent == name and not future.done() for sent, future in self._sent)

    def collect(self) -> None:
        stopped = []
        for name, stopping in self._sent:
            if not stopping.done():
                self.still_stopping[name] = self.pending.known.get(name, time.time() + self.stop_timeout)
                continue
            error = stopping.exception()
            if error:
                self.progress(f"{self.service}: {name} is out of the balancer but did not stop: {error}")
            elif stopping.result():
                stopped.append(name)
            else:
                deadline = self.pending.read().get(name, time.time() + self.stop_timeout)
                self.still_stopping[name] = deadline
                self.progress(f"{self.service}: {name} is drained and out of the balancer and still shutting down; "
                              f"its engine stops it at {deadline_text(deadline)} at the latest (stop_timeout "
                              f"{self.stop_timeout} s)")
        if stopped:
            self.forget(stopped)
        self._sent = [(name, stopping) for name, stopping in self._sent if not stopping.done()]

    def forget(self, names: list[str]) -> None:
        """These hosts are no longer stopping (stopped, started again or removed), whoever sent the stop."""
        pending = self.pending.read()
        if any(name in pending for name in names):
            self.pending.write({name: deadline for name, deadline in pending.items() if name not in names})
        for name in names:
            self.still_stopping.pop(name, None)

    def settle(self, records: dict[str, HostRecord]) -> None:
        """Forgets recorded stops that have finished (the host exited or is gone), so that a host started
        again later by hand is not taken for one still stopping."""
        finished = [name for name in self.pending.read() if not (name in records and records[name].stopping)]
        if finished:
            self.forget(finished)

    def ledger_fields(self) -> dict[str, object]:
        """For the ledger: hosts out of the balancer whose stop the engine was still finishing at the end."""
        if not self.still_stopping:
            return {}
        return {"stopping": sorted(self.still_stopping), "stopped_by": utc_timestamp(max(self.still_stopping.values()))}
