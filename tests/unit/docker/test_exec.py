"""A command run in a container: its exit code once the engine reports it exited, which may come a moment
after its output ends, and a clear error when it does not come at all."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import OutputEndedEarly
from ansible_collections.immutable.infra.plugins.plugin_utils.docker import containers
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.containers import Containers


class Api:
    """An engine whose exec inspections answer from the list, the last one for ever."""

    def __init__(self, inspections):
        self.inspections = list(inspections)
        self.inspected = 0

    def exec_create(self, container, command, user):
        return {"Id": "exec-1"}

    def exec_start(self, exec_id):
        return b"half of it"

    def exec_inspect(self, exec_id):
        self.inspected += 1
        return self.inspections.pop(0) if len(self.inspections) > 1 else self.inspections[0]


class Client(Containers):
    def __init__(self, api):
        self.api = api


def test_the_exit_code_reported_with_the_end_of_the_output():
    api = Api([{"Running": False, "ExitCode": 3}])
    assert Client(api).exec("0123456789abcdef", ["check"]) == (3, "half of it")
    assert api.inspected == 1


def test_an_exit_reported_a_moment_after_the_output_ended_is_waited_for():
    api = Api([{"Running": True, "ExitCode": None}, {"Running": False, "ExitCode": None}, {"Running": False, "ExitCode": 0}])
    assert Client(api).exec("0123456789abcdef", ["check"]) == (0, "half of it")
    assert api.inspected == 3


def test_a_command_still_running_after_its_output_ended_is_an_error_not_an_exit_code(monkeypatch):
    monkeypatch.setattr(containers, "EXIT_WAIT", 0.1)
    with pytest.raises(OutputEndedEarly, match=r"^The output of check in container 0123456789ab ended, but the command "
                                               r"had not exited 0.1 s later: the connection to the engine was lost.*"
                                               r"'half of it'$"):
        Client(Api([{"Running": True, "ExitCode": None}])).exec("0123456789abcdef", ["check"])
