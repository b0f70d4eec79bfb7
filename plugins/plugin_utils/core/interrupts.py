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

In the foreground. ansible-playbook does not wait for its workers: on Ctrl-C or SIGTERM it passes the
signal on and exits at once, so a worker's revert would go on after the command returned, with no one
showing it. So while an interruptible block runs in an Ansible worker, it leaves a note (a file named
after the worker's PID, in a directory named after ansible-playbook's PID, holding the block's progress
lines), and hold_signals_for_workers(), installed in ansible-playbook itself, makes its signal handler
pass the signal to those workers first and wait until their blocks have ended (their progress lines
reach the terminal through Ansible's own result queue meanwhile). A second Ctrl-C stops the waiting and
says how to follow the worker. A SIGKILL of ansible-playbook leaves no chance to wait: the journal is
what covers that.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NOTES_DIR = os.path.join(tempfile.gettempdir(), "immutable-infra-workers")
WORKER_EXIT_SECONDS = 5.0   # after its block ended, how long a worker may take to hand its result over


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
    note = _leave_note(what)
    try:
        yield guard
    finally:
        _remove_note(note)
        for number, old in previous.items():
            signal.signal(number, old)


# in the foreground: the worker's side ---------------------------------------------------------------
_NOTE: dict[str, str] = {}   # "path": the note of the block running in this worker


def in_ansible_worker() -> bool:
    return multiprocessing.parent_process() is not None


def _leave_note(what: str) -> str | None:
    if not in_ansible_worker() or _NOTE:
        return None
    directory = os.path.join(NOTES_DIR, str(os.getppid()))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, str(os.getpid()))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{what}\n")
    except OSError:
        return None
    _NOTE["path"] = path
    return path


def _remove_note(path: str | None) -> None:
    if path is None:
        return
    _NOTE.clear()
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))  # unless another worker's note is in it
    except OSError:
        pass


def note_progress(message: str) -> None:
    """Adds a progress line to the note of the block running now (if any), for `tail -f` after the command."""
    if _NOTE:
        try:
            with open(_NOTE["path"], "a", encoding="utf-8") as handle:
                handle.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        except OSError:
            pass


# in the foreground: ansible-playbook's side ---------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def worker_notes(controller: int) -> dict[int, tuple[str, str]]:
    """{worker PID: (what it runs, path of its note)} of this controller's workers inside a block."""
    directory = os.path.join(NOTES_DIR, str(controller))
    notes = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                what = handle.readline().strip()
        except OSError:
            continue
        if name.isdigit() and _alive(int(name)):
            notes[int(name)] = (what, path)
    return notes


def waiting_handler(original: Callable, say: Callable[[str], None]) -> Callable:
    waiting: list[dict[int, tuple[str, str]]] = []

    def handler(signum: int, frame: object) -> None:
        if waiting:  # a second signal while waiting: stop waiting, say how to follow
            for pid, (what, path) in waiting[0].items():
                if _alive(pid):
                    say(f"Not waiting any more: the {what} goes on in process {pid} until it has put things back; "
                        f"follow it with: tail --pid={pid} -f {path}")
            original(signum, frame)
            return
        notes = worker_notes(os.getpid())
        if notes:
            waiting.append(notes)
            name = signal.Signals(signum).name
            for pid, (what, _path) in notes.items():
                say(f"{name}: stopping the {what} (process {pid}) and waiting while it puts things back; "
                    "press Ctrl-C again to stop waiting")
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
            while any(_alive(pid) and os.path.exists(path) for pid, (_what, path) in notes.items()):
                time.sleep(0.1)
            deadline = time.monotonic() + WORKER_EXIT_SECONDS  # its result, through Ansible's queue
            while any(_alive(pid) for pid in notes) and time.monotonic() < deadline:
                time.sleep(0.1)
            waiting.clear()
        original(signum, frame)

    handler.holds_for_workers = True  # type: ignore[attr-defined]
    return handler


def hold_signals_for_workers(say: Callable[[str], None]) -> None:
    """In ansible-playbook's own process: its SIGINT and SIGTERM handlers (ansible-core's task queue
    manager's, which pass the signal on and exit at once) first wait for the workers inside a block."""
    if in_ansible_worker() or threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(number)
        owner = getattr(current, "__self__", None)
        if callable(current) and type(owner).__name__ == "TaskQueueManager":
            signal.signal(number, waiting_handler(current, say))
