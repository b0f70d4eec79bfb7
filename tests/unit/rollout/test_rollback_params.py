"""The rollout a rollback starts is given every option of the rollback task, how its engines are reached
included, with what the revision's hosts were made with; a rollout of VM hosts refuses container settings."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import CONNECTION_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.manager import (
    CONTAINER_OPTIONS,
    refuse_container_settings,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.rollback import ROLLBACK_ARGUMENT_SPEC, Rollback
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import SHARED_OPTIONS

TLS = {"docker_host": "tcp://10.0.0.5:2376", "tls": None, "validate_certs": True, "ca_path": "/etc/engine/ca.pem",
       "client_cert": "/etc/engine/cert.pem", "client_key": "/etc/engine/key.pem", "timeout": 90}


def test_the_rollout_of_a_rollback_reaches_the_engine_as_the_rollback_does():
    rollback = Rollback.__new__(Rollback)
    rollback.params = {**{key: None for key in {**ROLLBACK_ARGUMENT_SPEC, **SHARED_OPTIONS}}, "service": "web",
                       "revision": 2, "batch_size": 1, "ledger": "/srv/ledger", **TLS}
    rollback.engines = parse_engines(None, rollback.params, {})
    spec = HostSpec("web", "sha256:" + "a" * 64, 8000, {"networks": ["web"]}, {"http_path": "/healthz"})
    params = rollback._rollout_params({"image_id": spec.image_id, "replicas": 3}, spec)
    assert {key: params[key] for key in CONNECTION_OPTIONS} == TLS
    assert params["ledger"] == "/srv/ledger" and "revision" not in params
    assert (params["image"], params["replicas"], params["port"], params["health"]) == (
        spec.image_id, 3, 8000, {"http_path": "/healthz"})


def test_vm_hosts_take_no_container_settings_but_a_task_that_leaves_them_at_their_defaults_is_fine():
    defaults = {name: option.get("default") for name, option in CONTAINER_OPTIONS.items()}
    refuse_container_settings({"disk": "web.qcow2", "container": {}, "image_transfer": "auto"})
    refuse_container_settings({"disk": "web.qcow2", "container": defaults, "registry": None})
    with pytest.raises(InfraError, match=r"^container.env, container.networks, registry: settings of containers "
                                         r"\(image:\), which VM hosts \(disk:\) do not take .*; drop them\.$"):
        refuse_container_settings({"disk": "web.qcow2", "container": dict(defaults, env={"A": "1"}, networks=["web"]),
                                   "registry": {"url": "registry.test"}})
