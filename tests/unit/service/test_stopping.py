"""Stops sent in the background: recorded as pending first, and collected without waiting for an engine
that has not answered yet."""

from __future__ import annotations

import threading
import time

from memory_backend import MemoryBackend

from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostRecord
from ansible_collections.immutable.infra.plugins.plugin_utils.service.stopping import Stops


class SlowToAnswer(MemoryBackend):
    """request_stop answers only once `answer` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.answer = threading.Event()

    def request_stop(self, host: HostRecord, timeout: int, answer_wait: float) -> bool:
        assert self.answer.wait(10)
        return True


def test_collecting_does_not_wait_for_a_stop_the_engine_has_not_answered():
    backend = SlowToAnswer("web")
    lines: list[str] = []
    stops = Stops(backend, backend.store(), 10, lines.append)
    record = HostRecord("web-1-1", "id-web-1-1")
    stops.send([record])
    assert "web-1-1" in stops.pending.read()  # recorded before the stop went out

    stops.collect()  # returns although the engine has not answered
    assert stops.under_way("web-1-1") and "web-1-1" in stops.still_stopping
    assert "web-1-1" in stops.pending.read() and stops.ledger_fields()["stopping"] == ["web-1-1"]

    backend.answer.set()
    deadline = time.monotonic() + 30
    while stops.under_way("web-1-1"):
        assert time.monotonic() < deadline, "the stop was not seen to finish"
        threading.Event().wait(0.01)
    stops.collect()  # now it has stopped: forgotten
    assert not stops.still_stopping and stops.pending.read() == {} and not lines
