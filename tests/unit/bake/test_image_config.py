"""Image config beyond the basics: volumes, stop signal and HEALTHCHECK, validated and committed."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import plan as bake_plan
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError


@pytest.mark.parametrize("given, stored", [("SIGTERM", "SIGTERM"), ("quit", "SIGQUIT"), ("9", "9"),
                                           ("SIGRTMIN+3", "SIGRTMIN+3"), ("winch", "SIGWINCH")])
def test_stop_signal_is_stored_as_docker_stores_it(given, stored):
    assert bake_plan.normalize_config({"stop_signal": given}) == {"stop_signal": stored}


@pytest.mark.parametrize("given", ["SIGFOO", "0", "99", "TERM!", ""])
def test_bad_stop_signal_is_refused(given):
    with pytest.raises(InfraError, match="stop_signal"):
        bake_plan.normalize_config({"stop_signal": given})


def test_volumes_are_sorted_unique_absolute_paths():
    assert bake_plan.normalize_config({"volumes": ["/var/lib/mysql/", "/data", "/data"]}) == \
        {"volumes": ["/data", "/var/lib/mysql"]}


@pytest.mark.parametrize("path", ["var/lib/mysql", "/srv:/data", "/srv/../etc"])
def test_bad_volumes_are_refused(path):
    with pytest.raises(InfraError, match="config.volumes entry"):
        bake_plan.normalize_config({"volumes": [path]})


@pytest.mark.parametrize("test, command", [
    (["curl", "-f", "http://localhost/"], ["CMD", "curl", "-f", "http://localhost/"]),
    (["CMD-SHELL", "pg_isready"], ["CMD-SHELL", "pg_isready"]),
    ("redis-cli ping | grep PONG", ["CMD-SHELL", "redis-cli ping | grep PONG"]),
    (["NONE"], ["NONE"]),
    ("none", ["NONE"]),
])
def test_healthcheck_test_forms(test, command):
    assert bake_plan.normalize_healthcheck({"test": test}) == {"test": command}


@pytest.mark.parametrize("value, nanoseconds", [(30, 30_000_000_000), ("30s", 30_000_000_000),
                                                ("1m30s", 90_000_000_000), ("500ms", 500_000_000),
                                                ("1h", 3_600_000_000_000), ("2.5", 2_500_000_000), (0, 0)])
def test_healthcheck_durations(value, nanoseconds):
    assert bake_plan.normalize_healthcheck({"test": ["true"], "interval": value})["interval"] == nanoseconds


@pytest.mark.parametrize("healthcheck, message", [
    ({}, "needs test"),
    ({"test": []}, "test is empty"),
    ({"test": ["CMD"]}, "names no command"),
    ({"test": ["true"], "interval": "soon"}, "interval 'soon' is not a duration"),
    ({"test": ["true"], "timeout": "10us"}, "timeout '10us' is not a duration"),
    ({"test": ["true"], "start_period": 0.0001}, "at least 1ms"),
    ({"test": ["true"], "retries": -1}, "retries"),
    ({"test": ["true"], "interval": True}, "interval must be a duration"),
])
def test_bad_healthcheck_is_refused(healthcheck, message):
    with pytest.raises(InfraError, match=message):
        bake_plan.normalize_config({"healthcheck": healthcheck})


def test_commit_config_carries_volumes_signal_and_healthcheck():
    user = bake_plan.normalize_config({"volumes": ["/var/lib/mysql"], "stop_signal": "QUIT", "healthcheck": {
        "test": ["mysqladmin", "ping"], "interval": "5s", "timeout": "2s", "start_period": "30s", "retries": 5}})
    config = bake_plan.commit_config({"Volumes": {"/data": {}}}, user, {})
    assert config["Volumes"] == {"/data": {}, "/var/lib/mysql": {}}
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {"Test": ["CMD", "mysqladmin", "ping"], "Interval": 5_000_000_000,
                                     "Timeout": 2_000_000_000, "StartPeriod": 30_000_000_000, "Retries": 5}


def test_commit_config_inherits_signal_and_healthcheck_from_the_base():
    base = {"StopSignal": "SIGINT", "Healthcheck": {"Test": ["CMD", "true"]}}
    config = bake_plan.commit_config(base, {}, {})
    assert config["StopSignal"] == "SIGINT" and config["Healthcheck"] == {"Test": ["CMD", "true"]}
    assert config["Volumes"] is None
