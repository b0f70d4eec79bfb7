# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lets cleanup run when the user presses Ctrl-C or the controller is told to stop.

Ansible's worker processes die on SIGINT/SIGTERM without unwinding, which would leave containers
behind. Inside interruptible() the first such signal raises Interrupted instead, so finally blocks
remove what was started. Cleanup wrapped in guard.shield() is never cut short: a signal arriving
during it is held back and raised when the shielded block ends. Later signals are ignored.

With deferred=True the signal only marks the guard, and the work raises Interrupted itself where it
calls guard.check(): for work that runs in several threads, which must all stop at a step or check
rather than wherever the main thread happens to be.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(InfraError):
    """The run was stopped by a signal; what it started has been removed."""


class Guard:
    def __init__(self, what: str, deferred: bool = False) -> None:
        self.what = what
        self.deferred = deferred
        self.received: int | None = None
        self.raised = False
        self.shielding = 0
        self.parent = os.getppid()
        self.orphaned = False

    def error(self) -> Interrupted:
        if self.orphaned:
            return Interrupted(f"{self.what} was stopped because the process that started it (pid {self.parent}, "
                               "ansible-playbook) is gone.")
        name = signal.Signals(self.received or signal.SIGINT).name
        if self.deferred:
            return Interrupted(f"{self.what} was interrupted by {name}.")
        return Interrupted(f"{self.what} was interrupted by {name}; what it had started was removed.")

    def handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            return
        self.received = signum
        if not self.shielding and not self.deferred:
            self.raised = True
            raise self.error()

    def check(self) -> None:
        """Raises Interrupted once a signal was received, in every thread that asks, so that parallel
        work stops too. Also when the parent process died: ansible-core's workers call setsid(), so a
        SIGKILL of ansible-playbook's process group (a cancelled CI job) does not reach them, and without
        this one would go on changing the fleet after its command is gone."""
        if self.received is None and os.getppid() != self.parent:
            self.orphaned = True
            self.received = signal.SIGHUP
        if self.received is not None:
            raise self.error()

    @contextmanager
    def shield(self) -> Iterator[None]:
        """A block that signals do not interrupt; a signal received meanwhile is raised after it."""
        self.shielding += 1
        try:
            yield
        finally:
            self.shielding -= 1
        if self.received is not None and not self.raised and not self.shielding:
            self.raised = True
            raise self.error()


def never_interrupted() -> None:
    """The check of work that nothing interrupts (see Guard.check)."""


@contextmanager
def interruptible(what: str, deferred: bool = False) -> Iterator[Guard]:
    guard = Guard(what, deferred)
    if threading.current_thread() is not threading.main_thread():
        yield guard  # signal handlers can only be set in the main thread
        return
    previous = {number: signal.signal(number, guard.handle) for number in SIGNALS}
    try:
        yield guard
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
