"""The interrupt guard: a worker whose ansible-playbook is gone stops like an interrupted one."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Guard, Interrupted


def test_a_guard_passes_while_its_parent_lives_and_stops_once_it_is_gone():
    guard = Guard("rollout of web", deferred=True)
    guard.check()
    guard.parent = -1  # as if ansible-playbook had died and the worker was adopted by another process
    with pytest.raises(Interrupted) as stopped:
        guard.check()
    assert "the process that started it (pid -1, ansible-playbook) is gone" in stopped.value.message
    with pytest.raises(Interrupted):
        guard.check()  # every thread that asks stops too
