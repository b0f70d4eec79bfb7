"""no_log values are found wherever the spec puts them, so an action's result can be masked."""

from __future__ import annotations

from ansible.module_utils.common.parameters import remove_values

from ansible_collections.immutable.infra.plugins.plugin_utils.core.options import secret_values
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import FLEET_ARGUMENT_SPEC


def test_the_registry_password_is_a_secret_and_nothing_else_is():
    params = {"registry": {"address": "127.0.0.1:5000", "username": "ci", "password": "s3cret"},
              "engines": [{"name": "web1", "docker_host": "unix:///run/docker.sock"}]}
    assert secret_values(params, FLEET_ARGUMENT_SPEC) == {"s3cret"}
    assert secret_values({"registry": {"address": "127.0.0.1:5000"}}, FLEET_ARGUMENT_SPEC) == set()


def test_secrets_in_list_elements_and_their_masking():
    spec = {"sources": {"type": "list", "elements": "dict", "options": {"token": {"type": "str", "no_log": True}}}}
    params = {"sources": [{"token": "one"}, {"token": None}, {"token": "two"}]}
    assert secret_values(params, spec) == {"one", "two"}
    masked = remove_values({"msg": "pull with one failed", "sources": params["sources"]}, secret_values(params, spec))
    assert "one" not in masked["msg"] and "two" not in str(masked["sources"])
