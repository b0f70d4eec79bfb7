# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way a service's hosts change: rollout, rollback and heal all go through a Transaction.

Under the service's lock (a lease in the coordinator's store), a transaction first undoes a change
whose controller died (from the journal it left), then makes the balancer match the hosts again
(reconcile.py), and only then applies the caller's change: journaled before its first step, applied
step by step (Ctrl-C and a lost lock stop it at the next step), reverted on failure, and recorded
in the ledger whatever happens. When an engine stops answering mid-change, every other engine is
put back and the journal stays for the next run (failure.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible, never_interrupted
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostRecord
from ansible_collections.immutable.infra.plugins.plugin_utils.service.failure import fail
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import Journal, ServiceLock
from ansible_collections.immutable.infra.plugins.plugin_utils.service.membership import Observation
from ansible_collections.immutable.infra.plugins.plugin_utils.service.reconcile import plan_repair
from ansible_collections.immutable.infra.plugins.plugin_utils.service.steps import HostSteps
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore


@dataclass
class Change:
    """One change of a service's hosts: its steps, and what a revert puts back (previous_live) and takes
    away (new_hosts). replaced: for a heal, drifted host -> its replacement."""

    title: str  # "Rollout of web to generation 3": how errors name it
    activity: str  # "rollout": how progress lines and the interrupt handler name it
    label: str  # "gen 3": the prefix of its progress lines
    steps: list[rp.Step]
    records: dict[str, HostRecord]
    previous_live: list[str]
    new_hosts: list[str]
    live_after: list[str] | None = None  # when set, the balancer must hold exactly these once the steps are done
    restored: bool = False  # the new hosts are a kept generation: a revert stops them instead of removing them
    placement: dict[str, str] | None = None  # new host -> engine, journaled over several engines
    replaced: dict[str, str] = field(default_factory=dict)
    generation: int | None = None
    failed_result: str = "rolled back"  # the ledger's result when the change failed and was reverted
    reverted: Callable[[str], str] | None = None  # the sentence of a change that failed and was reverted

    def reverted_message(self, error: str) -> str:
        if self.reverted:
            return self.reverted(error)
        kept = ", ".join(self.previous_live) or "no host (this was the first rollout)"
        return (f"{self.title} failed and was rolled back: {error} Live again: {kept}; the new hosts were "
                f"{'stopped' if self.restored else 'removed'}.")


class Transaction:
    def __init__(self, steps: HostSteps, store: ServiceStore, ledger: Ledger | None, basedir: str | None,
                 lock_timeout: int, rollout_id: str) -> None:
        self.steps = steps
        self.backend = steps.backend
        self.service = steps.service
        self.progress = steps.progress
        self.store = store
        self.ledger = ledger
        self.basedir = basedir
        self.journal = Journal(store, self.service)
        self.lock = ServiceLock(store, self.service, rollout_id, lock_timeout, self.progress)
        self.rollout_id = rollout_id
        self.record: dict[str, Any] = {}  # the ledger record of the change under way
        self.started = time.monotonic()
        steps.rollout_id = rollout_id

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.lock.holding():
            yield

    def duration(self) -> float:
        return round(time.monotonic() - self.started, 3)

    # before the change ----------------------------------------------------------------------------
    def recover(self) -> str | None:
        """Undoes a change whose controller died, from the journal it left; returns its ID."""
        unfinished = self.journal.read()
        if not unfinished:
            return None
        unreachable = sorted({engine for engine in unfinished.get("placement", {}).values()
                              if engine in self.backend.down or engine not in self.backend.engine_names})
        if unreachable:
            raise InfraError(f"Rollout {unfinished['rollout']} of {self.service} did not finish and started hosts on "
                             f"engine(s) {', '.join(unreachable)}, which cannot be reached now; bring them back (or "
                             "declare them again in engines) so that this run can undo it there first. Nothing was "
                             "changed.", engines_down=unreachable)
        previous, new = kept_replacements(unfinished, set(self.steps.observe().records))
        what = "heal" if unfinished["replaced"] else "rollout"
        self.progress(f"{self.service}: {what} {unfinished['rollout']} (started {unfinished['started']}) did not "
                      f"finish; putting {', '.join(previous) or 'nothing'} back first")
        self._finish_stale_stops(unfinished)
        self.revert(previous, new, unfinished["restored"])
        self.journal.clear()
        return str(unfinished["rollout"])

    def _finish_stale_stops(self, unfinished: dict[str, Any]) -> None:
        """A stop the dead run sent may still be under way in the engine (a service that ignores SIGTERM is
        killed only after stop_timeout), and would take a host down after the recovery put it back. So the
        previous hosts the journal says were being stopped are stopped for good first (a stop of our own
        returns once the engine's stop is done), and the revert then starts them again."""
        observation = self.steps.observe()
        suspects = [host.name for host in observation.hosts
                    if host.name in unfinished["stopping"] and host.name in unfinished["previous_live"] and host.running]
        if not suspects:
            return
        self.progress(f"{self.service}: {', '.join(suspects)} may still be stopping on the interrupted run's order; "
                      "letting that stop finish before starting them again")
        for name in suspects:
            server = observation.records[name].server
            if server:
                self.steps.balancer.detach(server)
        for name in suspects:
            self.backend.stop(observation.records[name], unfinished["stop_timeout"])

    def reconcile(self) -> dict[str, list[str]] | None:
        """Makes the balancer match the live generation's hosts again (see reconcile.py); reports and records
        what it repaired, or returns None when nothing needed it."""
        observation = self.steps.observe()
        detached = list(observation.stale_servers)
        self.steps.detach_stale(observation)
        repair = plan_repair(observation.hosts, observation.exited())
        if not (detached or repair.steps):
            return None
        for line in repair.describe(detached):
            self.progress(f"{self.service}: reconcile: {line}")
        record = self.ledger.new_record("reconcile", self.basedir, service=self.service, detached=detached,
                                        registered=repair.registered, removed=repair.removed) if self.ledger else {}
        try:
            self.steps.apply(repair.steps, observation.records, "reconcile")
        except InfraError as error:
            self._append(dict(record, result="failed", error=error.message, finished=utc_timestamp()))
            raise InfraError(f"Reconciling {self.service} before anything else failed: {error.message}",
                             host=error.details.get("host")) from None
        self._append(dict(record, result="succeeded", finished=utc_timestamp()))
        return {"detached": detached, "registered": repair.registered, "removed": repair.removed}

    def observe(self) -> Observation:
        """What runs now, once finished stops are forgotten and stale servers taken out: what a plan starts from."""
        observation = self.steps.observe()
        self.steps.stops.settle(observation.records)
        self.steps.detach_stale(observation)
        return observation

    # the change -----------------------------------------------------------------------------------
    def apply(self, change: Change) -> None:
        """Journals the change, applies its steps and, when it set live_after, checks the balancer holds
        exactly those hosts. On failure the change is reverted (or, when this run can no longer change
        the fleet safely, left to the next run), the ledger record gets its result and the error says
        what is live now."""
        self.journal.write(self.rollout_id, change.previous_live, change.new_hosts, self.steps.spec.image_id,
                           restored=change.restored, stop_timeout=self.steps.stop_timeout,
                           placement=change.placement, replaced=change.replaced)
        # Ctrl-C (or SIGTERM) reaches this action through ansible-playbook, which exits without waiting
        # for it. It stops the change at the next step or health check, and the change is reverted like
        # after any failure.
        with interruptible(f"{change.activity} of {self.service}", deferred=True) as guard:
            def interrupted() -> None:
                guard.check()
                self.lock.check()
            self.steps.before_stop = self.journal.note_stopping
            try:
                self.steps.apply(change.steps, change.records, change.label, interrupted=interrupted)
                if change.live_after is not None:
                    # What the world changed meanwhile (a balancer reloaded without its servers) is
                    # repaired, not taken for a failed change.
                    self.reconcile()
                    self.steps.ensure_membership(change.live_after, f"{change.activity} of {self.service}")
            except InfraError as error:
                fail(self, change, error)
            finally:
                self.steps.before_stop = None
        self.lock.check()

    def succeed(self, **fields: Any) -> None:
        """The change is done: the journal goes and the ledger record says so."""
        self.journal.clear()
        self._append(dict(self.record, result="succeeded", **fields, finished=utc_timestamp(),
                          duration=self.duration(), **self.steps.stops.ledger_fields()))

    def revert(self, previous_live: list[str], new_hosts: list[str], keep_new: bool = False,
               interrupted: Callable[[], None] = never_interrupted) -> None:
        """Puts previous_live back and takes new_hosts away, from what runs now; the balancer then holds
        exactly the previous hosts that still exist. interrupted() is called before each step."""
        observation = self.steps.observe()
        self.steps.detach_stale(observation)  # e.g. the server of a new host that crashed after it was registered
        self.steps.apply(rp.plan_revert(observation.hosts, previous_live, new_hosts, keep_new), observation.records,
                         "revert", interrupted)
        self.steps.ensure_membership([name for name in previous_live if name in observation.records], "revert")

    def _append(self, record: dict[str, Any]) -> None:
        if self.ledger and record:
            self.ledger.append(record)


def kept_replacements(unfinished: dict[str, Any], present: set[str]) -> tuple[list[str], list[str]]:
    """(hosts to put back, hosts to take away) of an unfinished journal. A heal that got as far as removing
    the drifted host keeps its replacement: it is live in the drifted host's place."""
    previous, new = list(unfinished["previous_live"]), list(unfinished["new_hosts"])
    for old, fresh in unfinished["replaced"].items():
        if old not in present and fresh in present:
            previous = [fresh if name == old else name for name in previous]
            new = [name for name in new if name != fresh]
    return previous, new
