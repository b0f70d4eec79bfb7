"""answers_within: a probe of an engine that stopped answering, bounded in time."""

from __future__ import annotations

import threading
import time

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, answers_within


def test_a_call_that_returns_answers_and_one_that_raises_does_not():
    assert answers_within(lambda: None, 5)

    def refused() -> None:
        raise InfraError("the engine refused the connection")
    assert not answers_within(refused, 5)


def test_a_call_that_hangs_does_not_answer_and_is_not_waited_for():
    release = threading.Event()
    started = time.monotonic()
    assert not answers_within(lambda: release.wait(30), 0.2)
    assert time.monotonic() - started < 20, "the 30 s call was waited for"
    release.set()
