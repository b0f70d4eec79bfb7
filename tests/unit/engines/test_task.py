from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.manager import FleetManager, group_resolved
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext

TASK_VARS = {"groups": {"docker_engines": ["Rig1", "rig2"]},
             "hostvars": {"Rig1": {"docker_host": "tcp://127.0.0.1:23751", "engine_weight": 2},
                          "rig2": {"docker_host": "unix:///run/rig2.sock"}}}


def test_an_engines_group_becomes_the_engines_it_declares():
    params = group_resolved({"engines": None, "engines_group": "docker_engines", "docker_host": None}, TASK_VARS)
    assert params["engines_group"] is None
    assert params["engines"] == [{"name": "rig1", "docker_host": "tcp://127.0.0.1:23751", "weight": 2},
                                 {"name": "rig2", "docker_host": "unix:///run/rig2.sock"}]
    manager = FleetManager(dict(params, ledger=None), TaskContext(basedir="."))
    assert [engine.name for engine in manager.engines] == ["rig1", "rig2"] and manager.several


def test_engines_and_engines_group_together_are_refused():
    with pytest.raises(InfraError, match="either engines or engines_group"):
        group_resolved({"engines": [], "engines_group": "docker_engines"}, TASK_VARS)
    with pytest.raises(InfraError, match="group nowhere .* does not exist"):
        group_resolved({"engines": None, "engines_group": "nowhere"}, TASK_VARS)


def test_without_engines_the_docker_host_is_a_fleet_of_one():
    manager = FleetManager({"engines": None, "docker_host": "unix:///run/other.sock", "ledger": None},
                           TaskContext(basedir="."))
    assert [(engine.name, engine.docker_host) for engine in manager.engines] == [("default", "unix:///run/other.sock")]
    assert not manager.several
    with pytest.raises(InfraError, match="either engines or docker_host"):
        FleetManager({"engines": [{"name": "a", "docker_host": "unix:///a.sock"}], "docker_host": "unix:///b.sock",
                      "ledger": None}, TaskContext(basedir="."))
