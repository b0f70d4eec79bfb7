"""The fleet inventory's pure parts: a container on an engine as a host, and every engine's hosts as one."""

from __future__ import annotations

import shlex

from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.inventory import (
    FleetHost,
    engine_group,
    fleet_host,
    merge_engines,
)

TLS = {"ca_cert": "/etc/ii/ca.pem", "client_cert": "/etc/ii/cert.pem", "client_key": "/etc/ii/key.pem"}
ENGINES = parse_engines([{"name": "rig-1", "docker_host": "tcp://127.0.0.1:23751", "tls": TLS},
                         {"name": "local", "docker_host": "unix:///var/run/docker.sock"}])


def container(name, generation="3", running=True):
    return {"Name": "/" + name, "Id": "c" * 64, "Image": "sha256:" + "a" * 64,
            "State": {"Running": running, "Status": "running" if running else "exited"},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.231.1.5"}}},
            "Config": {"Labels": {"immutable.infra.service": "web-api", "immutable.infra.generation": generation,
                                  "immutable.infra.index": "1", "immutable.infra.image_id": "sha256:" + "a" * 64}}}


def test_a_host_on_a_tls_engine_names_it_in_its_groups_variables_and_connection():
    host = fleet_host(container("web-api-3-1"), {}, ENGINES[0])
    assert host.groups == ["web_api", "engine_rig_1", "web_api_gen_3", "web_api_live"]
    assert host.variables["immutable_infra"]["engine"] == "rig-1"
    assert host.variables["ansible_connection"] == "community.docker.docker"
    assert host.variables["ansible_host"] == "web-api-3-1"
    arguments = shlex.split(host.variables["ansible_docker_extra_args"])
    assert arguments == ["--host", "tcp://127.0.0.1:23751", "--tlsverify", "--tlscacert=/etc/ii/ca.pem",
                         "--tlscert=/etc/ii/cert.pem", "--tlskey=/etc/ii/key.pem"]


def test_a_host_on_the_default_engine_needs_no_engine_arguments():
    [default] = parse_engines(None)
    host = fleet_host(container("web-api-3-1", running=False), {}, default)
    assert "ansible_docker_extra_args" not in host.variables
    assert host.groups == ["web_api", "engine_default", "web_api_gen_3"]  # stopped: not live


def test_engine_groups_are_valid_group_names():
    assert engine_group("rig.eu-1") == "engine_rig_eu_1"


def test_engines_merge_sorted_and_a_name_on_two_engines_keeps_both():
    found = {"rig-1": [FleetHost("web-3-2"), FleetHost("web-3-1")], "local": [FleetHost("web-3-1"), FleetHost("web-3-3")]}
    hosts, warnings = merge_engines(found)
    assert [host.name for host in hosts] == ["web-3-1", "web-3-1@local", "web-3-2", "web-3-3"]
    assert warnings == ["host web-3-1 exists on engines rig-1 and local; the one on local is listed as web-3-1@local"]
