# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rollout per service at a time, and a journal that lets the next run undo an interrupted one.

The lock is a marker in the service's store (store.py; a never-started container on a Docker engine)
named after the service. Creating a marker whose name is taken fails atomically, so of two
controllers using the same store only one creates it; that is the only step that grants the lock. The
marker's labels name its holder.

The lock is a lease. Its holder renews it from a background thread while it works: every
renewal creates a record `immutable-infra-lease-<service>-<token>-<epoch>` (then removes the one
before), so a reader sees the time of the last renewal as the store's own creation time of the
newest lease record (the lock marker's creation time before the first renewal). Labels cannot
change, and creating a new object never leaves a moment without one, which rewriting would.
All times come from the store's clock, so controllers with skewed clocks agree.

A lock is taken over only with proof that its holder is gone: its lease was not renewed for
lock_timeout seconds, or it was taken on this controller by a process that no longer exists (pid and
process start time). A lock that cannot be read yet (being created or removed right now) is read
again, never removed. A takeover removes the lock by its marker ID, so it can never remove the
lock a third controller has just taken. A holder that finds its lock gone or replaced stops touching
the fleet at its next step (LockLost), and leaves the undo to the new holder.

The journal is a record labelled with the hosts that were live before the rollout and the hosts it
adds; it exists only while a rollout is under way. Hosts the rollout is about to stop are added to it
as separate records, so a later recovery knows which hosts may still have a stop under way.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    JOURNAL_PREFIX,
    LABEL_CONTROLLER,
    LABEL_EPOCH,
    LABEL_JOURNAL,
    LABEL_LEASE,
    LABEL_LEASE_SECONDS,
    LABEL_LOCK,
    LABEL_LOCK_TOKEN,
    LABEL_OWNER,
    LABEL_PID,
    LABEL_PID_START,
    LABEL_ROLLOUT,
    LABEL_STARTED,
    LABEL_STOP_NOTE,
    LEASE_PREFIX,
    LOCK_PREFIX,
    STOP_NOTE_PREFIX,
    JournalLabels,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_user
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import Entry, ServiceStore

UNREADABLE_RETRY_SECONDS = 5.0   # how long a lock that exists but cannot be read yet is read again
RENEWALS_PER_LEASE = 6           # a lease of 60 s is renewed every 10 s
CLOCK_MARGIN = 1.0               # a store's creation times may have whole seconds
LEASE_MARGIN = 5.0               # seconds of lease a step needs left to start while the lock cannot be renewed


def process_start(pid: int) -> str | None:
    """The start time of a process on this machine (clock ticks since boot), or None when it does not exist
    or has exited (a zombie that nobody reaped yet, e.g. under a container's PID 1 that reaps nothing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its marker and lease records say."""

    marker_id: str
    token: str
    owner: str
    controller: str
    pid: int
    pid_start: str
    rollout: str
    started: str
    lease_seconds: float
    last_renewal: float   # the store's time

    def describe(self) -> str:
        return f"rollout {self.rollout} by {self.owner}@{self.controller}, pid {self.pid}, started {self.started}"


def holder_of(marker: Entry, leases: list[Entry]) -> Holder | None:
    """The holder named by the lock marker's labels and its newest lease; None when they cannot be read."""
    labels = marker.labels
    token = labels.get(LABEL_LOCK_TOKEN)
    pid = labels.get(LABEL_PID, "")
    try:
        renewals = [marker.created] + [lease.created for lease in leases if lease.labels.get(LABEL_LOCK_TOKEN) == token]
        if None in renewals:
            return None
        lease_seconds = float(labels[LABEL_LEASE_SECONDS])
        return Holder(marker.id, token or "", labels[LABEL_OWNER], labels[LABEL_CONTROLLER],
                      int(pid) if pid.isdigit() else 0, labels.get(LABEL_PID_START, ""),
                      labels.get(LABEL_ROLLOUT, "?"), labels.get(LABEL_STARTED, "?"),
                      lease_seconds, max(moment for moment in renewals if moment is not None))
    except (KeyError, ValueError, TypeError):
        return None


def takeover_reason(holder: Holder, store_now: float, this_controller: str,
                    start_of: Callable[[int], str | None] = process_start) -> str | None:
    """Why the holder is provably gone, or None while it may still be working."""
    if holder.controller == this_controller and holder.pid:
        start = start_of(holder.pid)
        if start is None or (holder.pid_start and start != holder.pid_start):
            return f"its process {holder.pid} on this controller is gone"
    silent = store_now - holder.last_renewal
    if silent > holder.lease_seconds + CLOCK_MARGIN:
        return f"its lease was last renewed {silent:.0f} s ago (it lapses after {holder.lease_seconds:g} s)"
    return None


class LockLost(InfraError):
    """The lock was taken over (or vanished) while its holder worked: the holder must stop touching the fleet."""


class ServiceLock:
    def __init__(self, store: ServiceStore, service: str, rollout_id: str, timeout: int,
                 progress: Callable[[str], None]) -> None:
        self.store = store
        self.name = LOCK_PREFIX + service
        self.service = service
        self.rollout_id = rollout_id
        self.lease_seconds = float(timeout)
        self.progress = progress
        self.token = uuid.uuid4().hex[:16]
        self.marker_id: str | None = None
        self.lost: str | None = None
        self._epoch = 0
        self._renewed_at = 0.0  # monotonic time the last renewal that succeeded began
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.marker_id is not None

    def _labels(self) -> dict[str, str]:
        return {LABEL_LOCK: self.service, LABEL_LOCK_TOKEN: self.token, LABEL_OWNER: controller_user(),
                LABEL_CONTROLLER: socket.gethostname(), LABEL_PID: str(os.getpid()),
                LABEL_PID_START: process_start(os.getpid()) or "", LABEL_ROLLOUT: self.rollout_id,
                LABEL_STARTED: utc_timestamp(), LABEL_LEASE_SECONDS: f"{self.lease_seconds:g}"}

    def _leases(self) -> list[Entry]:
        return self.store.find(LABEL_LEASE, self.service)

    def _refusal(self, holder: Holder | None) -> InfraError:
        if holder is None:
            return InfraError(
                f"Another rollout of service {self.service} is taking or releasing its lock right now ("
                f"{self.name} exists but could not be read within {UNREADABLE_RETRY_SECONDS:g} s); run again in "
                "a moment.")
        try:
            ago = f"{self.store.now() - holder.last_renewal:.0f} s ago"
        except (InfraError, ValueError):
            ago = "recently"
        return InfraError(
            f"Another rollout of service {self.service} is in progress ({holder.describe()}); its lease was renewed "
            f"{ago} and lapses {holder.lease_seconds:g} s after its last renewal. Wait for it to finish; if that "
            f"controller is gone, the next run takes the lock over once the lease lapses (or remove "
            f"{self.name} on {self.store.where}).", holder=holder.describe())

    def acquire(self) -> None:
        readable_by = time.monotonic() + UNREADABLE_RETRY_SECONDS
        took_over = False
        while True:
            attempted_at = time.monotonic()
            created = self.store.create_marker(self.name, self._labels())
            if created:
                self.marker_id, self._renewed_at = created, attempted_at
                for lease in self._leases():  # left by a holder whose lock was removed by hand
                    if lease.labels.get(LABEL_LOCK_TOKEN) != self.token:
                        self.store.remove(lease.name)
                self._start_renewing()
                return
            marker = self.store.marker(self.name)
            holder = holder_of(marker, self._leases()) if marker else None
            if holder is None:
                # Name taken but no readable lock: another controller is creating or removing it right now.
                if time.monotonic() < readable_by:
                    time.sleep(0.05 + random.random() * 0.1)
                    continue
                raise self._refusal(None)
            reason = None if took_over else takeover_reason(holder, self.store.now(), socket.gethostname())
            if reason is None:
                raise self._refusal(holder)
            self.progress(f"taking over the lock of service {self.service} from {holder.describe()}: {reason}")
            self._remove_leases(holder.token)
            self.store.remove_marker(holder.marker_id)  # by ID: a lock taken meanwhile stays
            took_over = True

    def _remove_leases(self, token: str) -> None:
        for lease in self._leases():
            if token and lease.labels.get(LABEL_LOCK_TOKEN) == token:
                self.store.remove(lease.name)

    # the lease ----------------------------------------------------------------------------------
    def _start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew_until_released, name=f"lease-{self.service}", daemon=True)
        self._renewer.start()

    def _renew_until_released(self) -> None:
        interval = max(0.5, self.lease_seconds / RENEWALS_PER_LEASE)
        last_renewed = time.monotonic()
        while not self._stop.wait(interval):
            try:
                self.renew()
                last_renewed = time.monotonic()
            except LockLost as error:
                self.lost = error.message
                return
            except Exception as error:  # pylint: disable=broad-exception-caught  # any failure: try again
                if time.monotonic() - last_renewed > self.lease_seconds:
                    reason = error.message if isinstance(error, InfraError) else f"{type(error).__name__}: {error}"
                    self.lost = (f"the lock of service {self.service} could not be renewed for "
                                 f"{self.lease_seconds:g} s ({reason}), so another controller may hold it now")
                    return

    def renew(self) -> None:
        """Extends the lease by one more lease_seconds from now; LockLost when the lock is no longer ours."""
        marker = self.store.marker(self.name)
        if marker is None or marker.id != self.marker_id:
            holder = holder_of(marker, self._leases()) if marker else None
            raise LockLost(f"the lock of service {self.service} was "
                           + (f"taken over by {holder.describe()}" if holder else "removed") + " while this run worked")
        previous = f"{LEASE_PREFIX}{self.service}-{self.token}-{self._epoch}"
        self._epoch += 1
        attempted_at = time.monotonic()
        self.store.put(f"{LEASE_PREFIX}{self.service}-{self.token}-{self._epoch}",
                       {LABEL_LEASE: self.service, LABEL_LOCK_TOKEN: self.token, LABEL_EPOCH: str(self._epoch)})
        self._renewed_at = attempted_at
        if self._epoch > 1:
            self.store.remove(previous)

    def check(self) -> None:
        """Raises LockLost once the lease could not be kept: the caller must stop changing the fleet. That is
        also when the lease ran out while a renewal was still under way (an engine that stopped answering
        holds a call for up to its timeout, longer than a lease)."""
        if self.lost:
            raise LockLost(f"{self.lost}; this run stopped here and left the rest to the next run.")
        if self.held and self.lease_left() <= 0:
            raise LockLost(f"the lease of the lock of service {self.service} ran out {-self.lease_left():.0f} s ago "
                           "while its renewal got no answer, so another controller may hold it now; this run stopped "
                           "here and left the rest to the next run.")

    def lease_left(self) -> float:
        """Seconds before another controller could take the lock over, whatever happens to the engine that
        holds it: the store dates the last renewal no earlier than the moment this run began it."""
        return self._renewed_at + self.lease_seconds - time.monotonic()

    def wait_allowance(self) -> float:
        """While the lock cannot be renewed: how long a wait inside a step (a drain) may still take, so that
        the steps after it can still start within the lease."""
        return max(self.lease_left() - 2 * LEASE_MARGIN, 0.0)

    def check_lease(self) -> None:
        """While the lock cannot be renewed (its engine is down): LockLost once too little of the lease is
        left to start another step, so no step of this run overlaps a new holder's."""
        self.check()
        left = self.lease_left()
        if left < LEASE_MARGIN:
            raise LockLost(f"the lease of the lock of service {self.service} runs out in {max(left, 0):.0f} s and "
                           "cannot be renewed while its engine is down; this run stopped here and left the rest "
                           "to the next run.")

    @contextmanager
    def holding(self) -> Iterator[None]:
        """The lock for the length of a block: acquired first, released whatever happens in it (or in the
        rest of acquiring it, once it is taken)."""
        try:
            self.acquire()
        except BaseException:
            self.release()
            raise
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Stops renewing and removes the lock (by ID: never another controller's). When the engine does not
        answer, the lock stays; the next run takes it over (this process is gone by then, or the lease lapses)."""
        self._stop.set()
        if self._renewer:
            self._renewer.join()
            self._renewer = None
        if not self.held:
            return
        try:
            self._remove_leases(self.token)
            self.store.remove_marker(self.marker_id or "")
        except InfraError as error:
            self.progress(f"{self.service}: the lock {self.name} could not be released ({error.message}); the next "
                          "run takes it over")
        self.marker_id = None


def unfinished_work(store: ServiceStore, service: str) -> bool:
    """A journal or a lock is left: a run must take the lock (over) and undo or finish it, even with
    nothing else to do."""
    return Journal(store, service).read() is not None or store.marker(LOCK_PREFIX + service) is not None


class Journal:
    """What an unfinished rollout changed, so that a later run can put the service back first."""

    def __init__(self, store: ServiceStore, service: str) -> None:
        self.store = store
        self.service = service
        self.name = JOURNAL_PREFIX + service
        self._stops = 0

    def write(self, rollout_id: str, previous_live: list[str], new_hosts: list[str], image_id: str,
              restored: bool = False, stop_timeout: int = 10, placement: dict[str, str] | None = None,
              replaced: dict[str, str] | None = None) -> None:
        """Replaces any journal of the service; JournalLabels says what each field means."""
        self.clear()
        journal = JournalLabels(rollout=rollout_id, previous_live=previous_live, new_hosts=new_hosts,
                                image_id=image_id, restored=restored, started=utc_timestamp(),
                                placement=placement or {}, replaced=replaced or {}, stop_timeout=stop_timeout)
        self.store.put(self.name, {**journal.to_labels(), LABEL_JOURNAL: self.service})

    def note_stopping(self, hosts: list[str]) -> None:
        """Records, before the stop is sent, hosts whose stop the engine may still be carrying out if this
        controller dies. Each note is a record of its own: creating one is atomic, rewriting would not be."""
        self._stops += 1
        self.store.put(f"{STOP_NOTE_PREFIX}{self.service}-{self._stops}",
                       {LABEL_JOURNAL: self.service, LABEL_STOP_NOTE: ",".join(hosts)})

    def read(self) -> dict[str, Any] | None:
        labels = self.store.get(self.name)
        if labels is None:
            return None
        stopping = sorted({name for note in self.store.find(LABEL_JOURNAL, self.service)
                           for name in (note.labels.get(LABEL_STOP_NOTE) or "").split(",") if name})
        return dict(asdict(JournalLabels.from_labels(labels)), stopping=stopping)

    def clear(self) -> None:
        """The journal first, its stop notes after: a journal is never read without the notes written for it
        (a note left by a clear cut short belongs to no journal and goes with the next clear)."""
        self.store.remove(self.name)
        for note in self.store.find(LABEL_JOURNAL, self.service):
            self.store.remove(note.name)
        self._stops = 0
