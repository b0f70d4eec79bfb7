"""ansible-playbook's signal handler waits for the workers still putting things back (core/interrupts.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ansible_collections.immutable.infra.plugins.plugin_utils.core import interrupts

WORKER = """
import os, signal, sys, time
path = sys.argv[1]
def stop(signum, frame):
    time.sleep(0.3)  # the revert
    os.remove(path)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
open(path + ".ready", "w").close()
time.sleep(30)
"""


def test_the_handler_passes_the_signal_on_and_returns_once_the_worker_has_put_things_back(tmp_path, monkeypatch):
    note = tmp_path / "note"
    note.write_text("rollout of web\n", encoding="utf-8")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(note)])
    deadline = time.monotonic() + 30
    while not (tmp_path / "note.ready").exists():
        assert time.monotonic() < deadline and worker.poll() is None, "the worker never got ready"
        time.sleep(0.01)
    monkeypatch.setattr(interrupts, "worker_notes", lambda controller: {worker.pid: ("rollout of web", str(note))})
    calls, said = [], []
    handler = interrupts.waiting_handler(lambda signum, frame: calls.append(signum), said.append)
    handler(signal.SIGINT, None)
    assert not note.exists() and calls == [signal.SIGINT]  # ansible's own handler ran after the revert
    assert worker.wait(5) == 0
    assert "waiting while it puts things back" in said[0] and "rollout of web" in said[0]


def test_a_worker_leaves_a_note_only_inside_an_ansible_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(interrupts, "NOTES_DIR", str(tmp_path))
    with interrupts.interruptible("rollout of web", deferred=True):
        assert not os.listdir(tmp_path)  # pytest is no Ansible worker
    monkeypatch.setattr(interrupts, "in_ansible_worker", lambda: True)
    with interrupts.interruptible("rollout of web", deferred=True):
        note = tmp_path / str(os.getppid()) / str(os.getpid())
        interrupts.note_progress("revert: add web-1-1")
        assert interrupts.worker_notes(os.getppid()) == {os.getpid(): ("rollout of web", str(note))}
        assert note.read_text(encoding="utf-8").splitlines()[0] == "rollout of web"
        assert note.read_text(encoding="utf-8").endswith("revert: add web-1-1\n")
    assert not note.exists() and not note.parent.exists()


def test_without_workers_in_a_block_the_signal_is_handled_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(interrupts, "NOTES_DIR", str(tmp_path))
    calls, said = [], []
    interrupts.waiting_handler(lambda signum, frame: calls.append(signum), said.append)(signal.SIGTERM, None)
    assert calls == [signal.SIGTERM] and said == []


def test_only_ansible_playbooks_own_handler_is_wrapped(monkeypatch):
    class TaskQueueManager:  # the name ansible-core's class has
        def handler(self, signum, frame):
            pass

    other = TaskQueueManager.handler.__get__(object())
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, TaskQueueManager().handler)
        signal.signal(signal.SIGTERM, other)
        interrupts.hold_signals_for_workers(lambda message: None)
        assert getattr(signal.getsignal(signal.SIGINT), "holds_for_workers", False)
        assert signal.getsignal(signal.SIGTERM) is other
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
