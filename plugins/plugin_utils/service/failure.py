# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A change that failed: reverted, or left for the next run when this run can no longer change the
fleet safely, and always recorded in the ledger and said in one sentence (an InfraError).

- Any failure: the previous hosts are put back and the new ones taken away (Transaction.revert).
- An engine stopped answering, over several engines: every other engine is put back now; the journal
  stays on the coordinator, so the next run undoes the change on the lost engine too. When the lost
  engine is the coordinator, the lock can no longer be renewed, but no other controller can take it
  over before its lease lapses: the revert goes on while the lease has time left.
- The lock was lost, or the only engine stopped answering: nothing is reverted by this run; the
  journal stays for the next run (or the lock's new holder), which undoes the change first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    EngineUnreachable,
    InfraError,
    utc_timestamp,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import never_interrupted
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import LockLost

if TYPE_CHECKING:
    from ansible_collections.immutable.infra.plugins.plugin_utils.service.transaction import Change, Transaction


def fail(tx: Transaction, change: Change, error: InfraError) -> NoReturn:
    unreachable = error if isinstance(error, EngineUnreachable) and not answers_again(tx, error) else None
    if unreachable and tx.backend.several:
        lost = tx.backend.mark_unreachable(unreachable)
        if lost:
            revert_the_others(tx, change, error, lost)
    if unreachable or isinstance(error, LockLost):
        abandon(tx, change, error)
    tx.progress(f"{tx.service}: {error.message} Reverting to {', '.join(change.previous_live) or 'nothing'}.")
    try:
        tx.revert(change.previous_live, change.new_hosts, keep_new=change.restored)
    except EngineUnreachable as lost_error:
        lost = tx.backend.mark_unreachable(lost_error) if tx.backend.several else None
        if not lost:
            raise revert_failed(tx, change, error, lost_error) from None
        revert_the_others(tx, change, lost_error, lost)
    except InfraError as revert_error:
        raise revert_failed(tx, change, error, revert_error) from None
    tx.journal.clear()
    unrecorded = record_failure(tx, dict(tx.record, result=change.failed_result, error=error.message,
                                         live=change.previous_live, finished=utc_timestamp(), duration=tx.duration(),
                                         **tx.steps.stops.ledger_fields()))
    raise InfraError(change.reverted_message(error.message) + unrecorded, host=error.details.get("host"), rolled_back=True,
                     live=change.previous_live, generation=change.generation, duration=tx.duration()) from None


def answers_again(tx: Transaction, error: EngineUnreachable) -> bool:
    """A lost connection to an engine that runs on (a broken SSH tunnel, a restarted daemon) is no lost
    engine: when it answers on a new connection, the change is reverted there like any other failure."""
    if not tx.backend.answers_again(error):
        return False
    tx.progress(f"{tx.service}: the engine that stopped answering answers again on a new connection")
    return True


def _where(tx: Transaction) -> str:
    doing = tx.steps.doing
    return f"during batch {doing.batch}" if doing and doing.batch else "mid-way"


def record_failure(tx: Transaction, record: dict[str, Any]) -> str:
    """Writes a failure's ledger record. A ledger that cannot take it (a full disk) must not hide what
    happened to the fleet: what it said is returned, to be added to the failure's sentence."""
    try:
        tx._append(record)
    except InfraError as error:
        return f" The ledger did not take this run's record: {error.message}"
    return ""


def revert_failed(tx: Transaction, change: Change, error: InfraError, revert_error: InfraError) -> InfraError:
    unrecorded = record_failure(tx, dict(tx.record, result="failed", error=error.message,
                                         revert_error=revert_error.message, finished=utc_timestamp(),
                                         duration=tx.duration()))
    return InfraError(f"{change.title} failed: {error.message} Reverting also failed: {revert_error.message} The next "
                      f"run puts the previous hosts back first.{unrecorded}", host=error.details.get("host"))


def revert_the_others(tx: Transaction, change: Change, error: InfraError, lost: str) -> NoReturn:
    """An engine stopped answering: every other engine is put back on the previous hosts now (the lost
    engine's servers leave the balancer: nothing answers there). Raises the sentence saying so."""
    coordinator = tx.backend.engine_names[0]
    holder, within = ((", which holds the lock and journal,",
                       f" within the {max(tx.lock.lease_left(), 0):.0f} s its lease keeps other controllers out")
                      if lost == coordinator else ("", ""))
    tx.progress(f"{tx.service}: engine {lost}{holder} stopped answering {_where(tx)}; reverting every other engine "
                f"to {', '.join(change.previous_live) or 'nothing'}{within}")
    try:
        _revert_while_engines_answer(tx, change)
    except InfraError as revert_error:
        unrecorded = record_failure(tx, dict(tx.record, result="failed", error=error.message,
                                             revert_error=revert_error.message, engines_down=sorted(tx.backend.down),
                                             finished=utc_timestamp(), duration=tx.duration()))
        raise InfraError(f"{change.title} failed: engine {lost} stopped answering {_where(tx)} ({error.message}). "
                         f"Reverting the other engines also failed: {revert_error.message} The next run puts the "
                         f"previous hosts back first.{unrecorded}", engines_down=sorted(tx.backend.down), rolled_back=False,
                         journal_left=True) from None
    live = [name for name in change.previous_live if tx.steps.where(name) not in tx.backend.down]
    unrecorded = record_failure(tx, dict(tx.record, result="rolled back", error=error.message, live=live,
                                         engines_down=sorted(tx.backend.down), finished=utc_timestamp(),
                                         duration=tx.duration(), **tx.steps.stops.ledger_fields()))
    down = ", ".join(sorted(tx.backend.down))
    left = (f"the lock and journal stay on {coordinator}, so the next run, once {down} answer(s) again, takes "
            "the lock over (another controller waits for its lease to lapse) and puts their hosts back first"
            if coordinator in tx.backend.down else
            f"the journal stays on {coordinator}, so the next run, once {down} answer(s) again, puts their "
            "hosts back first")
    raise InfraError(f"{change.title} failed: engine {lost} stopped answering {_where(tx)} ({error.message}). Every "
                     f"other engine is back on the previous generation (live: {', '.join(live) or 'nothing'}); "
                     f"{left}.{unrecorded}", rolled_back=True, engines_down=sorted(tx.backend.down), live=live, journal_left=True,
                     generation=change.generation, duration=tx.duration()) from None


def _revert_while_engines_answer(tx: Transaction, change: Change) -> None:
    """Reverts on the engines that answer; another engine lost meanwhile is marked down and the rest
    reverted again. With the coordinator down, its records are kept in memory and each step must start
    within the lease."""
    for _attempt in tx.backend.engine_names:
        interrupted = never_interrupted
        if tx.backend.engine_names[0] in tx.backend.down:
            tx.steps.before_stop = None  # the journal cannot take notes; it already names the new hosts
            tx.steps.stops.pending.offline = True
            tx.steps.wait_allowance = tx.lock.wait_allowance
            interrupted = tx.lock.check_lease
        try:
            tx.revert(change.previous_live, change.new_hosts, keep_new=change.restored, interrupted=interrupted)
            return
        except EngineUnreachable as again:
            if tx.backend.mark_unreachable(again) is None:
                raise
    raise InfraError(f"engines {', '.join(sorted(tx.backend.down))} stopped answering one after the other")


def abandon(tx: Transaction, change: Change, error: InfraError) -> NoReturn:
    """Stops without reverting when this run can no longer change the fleet safely: the engine stopped
    answering, or another controller holds the lock now. The journal stays for the next run (or the
    new holder), which undoes the change before anything else."""
    doing = tx.steps.doing
    where = f"during batch {doing.batch}" if doing and doing.batch else (
        f"during '{doing.describe()}'" if doing else "before its first step")
    if isinstance(error, EngineUnreachable):
        message = (f"{change.title} stopped: {error.message} {where}; nothing could be reverted. The lock and "
                   "journal are left in the engine; the next run of this rollout (or a rollback) puts the previous "
                   "hosts back first.")
    else:
        message = (f"{change.title} stopped {where}: {error.message} Nothing was reverted by this run: the lock's "
                   "new holder undoes it from the journal.")
    message += record_failure(tx, dict(tx.record, result="failed", error=error.message, finished=utc_timestamp(),
                                       duration=tx.duration()))
    raise InfraError(message, host=error.details.get("host"), rolled_back=False, journal_left=True,
                     generation=change.generation) from None
