"""A Docker engine that stops answering is a sentence, not the HTTP library's traceback."""

from __future__ import annotations

import pytest
import requests
from docker.errors import NotFound

from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import EngineCalls, EngineUnreachable


class Api:
    base_url = "http+docker://localhost"

    def inspect_container(self, name):
        raise requests.exceptions.ConnectionError(("Connection aborted.", FileNotFoundError(2, "No such file or directory")))

    def remove_container(self, name):
        raise NotFound("gone")

    def version(self):
        return {"Version": "20.10"}


def test_a_lost_connection_names_the_engine():
    calls = EngineCalls(Api(), "unix:///var/run/docker.sock")
    with pytest.raises(EngineUnreachable) as lost:
        calls.inspect_container("web-1-1")
    assert lost.value.message.startswith("the Docker engine at unix:///var/run/docker.sock stopped answering")
    assert "No such file or directory" in lost.value.message


def test_engine_answers_and_api_errors_pass_through_unchanged():
    calls = EngineCalls(Api(), "unix:///var/run/docker.sock")
    assert calls.version() == {"Version": "20.10"} and calls.base_url == "http+docker://localhost"
    with pytest.raises(NotFound):
        calls.remove_container("web-1-1")
