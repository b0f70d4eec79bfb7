"""Health gates polled together: many hosts' checks in rounds, first passes reported together, the first
failure raised with what was seen. Command checks through plain functions, no network."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, OutputEndedEarly
from ansible_collections.immutable.infra.plugins.plugin_utils.service.health import (
    HealthCheck,
    Target,
    wait_all_healthy,
    wait_healthy,
)

CUT = "The output of check in container 0123456789ab ended, but the command had not exited"
CHECK = HealthCheck(port=8000, command=("check",), timeout=5, interval=0.01, healthy_threshold=2)


def target(name, answers, problem=None):
    """A host whose command check answers from the list (0 passes; None: its output ends early), then passes."""
    remaining = list(answers)

    def run_command(command):
        answer = remaining.pop(0) if remaining else 0
        if answer is None:
            raise OutputEndedEarly(CUT)
        return answer, "seen"
    return Target(name, None, None, run_command, lambda: problem)


def test_every_host_passes_its_threshold_and_first_passes_of_a_round_come_together():
    rounds = []
    seconds = wait_all_healthy(CHECK, [target("a", []), target("b", []), target("c", [1, 1])], lambda line: None,
                               on_first_pass=lambda passed: rounds.append(sorted(t.name for t in passed)))
    assert sorted(seconds) == ["a", "b", "c"] and seconds["c"] > seconds["a"]  # c passed two rounds later
    assert rounds[0] == ["a", "b"] and ["c"] in rounds  # a and b passed in the first round, c later


def test_a_host_that_never_passes_fails_the_gates_with_its_last_result():
    slow = HealthCheck(port=8000, command=("check",), timeout=0.2, interval=0.01, healthy_threshold=1)
    with pytest.raises(InfraError, match="host b did not pass its command 'check' within 0.2 s"):
        wait_all_healthy(slow, [target("a", []), target("b", [1] * 1000)], lambda line: None)


def test_a_host_the_back_end_says_is_gone_fails_at_once():
    with pytest.raises(InfraError, match="host a failed its command 'check': its container was removed"):
        wait_all_healthy(CHECK, [target("a", [1, 1], problem="its container was removed")], lambda line: None)


def test_an_interruption_stops_the_wait():
    def interrupted():
        raise InfraError("interrupted")
    with pytest.raises(InfraError, match="interrupted"):
        wait_healthy(CHECK, target("a", [1] * 1000), lambda line: None, interrupted=interrupted)


def test_a_check_whose_output_ended_early_is_a_failed_check_and_is_tried_again():
    seconds = wait_all_healthy(CHECK, [target("a", [None, 0, None, 0, 0])], lambda line: None)
    assert seconds["a"] > 0
    one_pass = HealthCheck(port=8000, command=("check",), timeout=5, interval=0.01, healthy_threshold=1)
    assert one_pass.probe(target("b", [None]).run_command, None) == (False, CUT)
