from __future__ import annotations

import shlex

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import (
    DEFAULT_ENGINE,
    engines_from_group,
    is_loopback,
    parse_engine,
    parse_engines,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.manager import group_resolved

TLS = {"ca_cert": "/etc/ii/ca.pem", "client_cert": "/etc/ii/cert.pem", "client_key": "/etc/ii/key.pem"}


def test_no_engines_is_the_default_engine_alone():
    [engine] = parse_engines(None)
    assert (engine.name, engine.docker_host, engine.tls) == (DEFAULT_ENGINE, None, None)
    assert engine.connection_variables() == {}


def test_docker_host_is_a_fleet_of_one():
    [engine] = parse_engines(None, "unix:///run/other.sock")
    assert (engine.name, engine.docker_host, engine.scheme, engine.address) == (
        DEFAULT_ENGINE, "unix:///run/other.sock", "unix", None)


def test_engines_and_docker_host_together_are_refused():
    with pytest.raises(InfraError, match="either engines or docker_host"):
        parse_engines([{"name": "a", "docker_host": "unix:///a.sock"}], "unix:///b.sock")


def test_three_schemes_are_accepted_in_declaration_order():
    engines = parse_engines([
        {"name": "local", "docker_host": "unix:///var/run/docker.sock"},
        {"name": "web-2", "docker_host": "tcp://10.0.0.5:2376", "tls": TLS, "weight": 2, "max_hosts": 10},
        {"name": "web-3", "docker_host": "ssh://deploy@10.0.0.6:2222"},
    ])
    assert [engine.name for engine in engines] == ["local", "web-2", "web-3"]
    assert [engine.scheme for engine in engines] == ["unix", "tcp", "ssh"]
    assert engines[1].tls is not None and engines[1].tls.client_key == "/etc/ii/key.pem"
    assert (engines[1].weight, engines[1].max_hosts, engines[1].address) == (2, 10, "10.0.0.5")
    assert engines[2].address == "10.0.0.6"


def test_plain_tcp_to_another_machine_is_refused_with_a_sentence():
    with pytest.raises(InfraError, match=r"plain TCP to another machine.*allow_insecure: true"):
        parse_engine({"name": "far", "docker_host": "tcp://10.0.0.5:2375"})
    with pytest.raises(InfraError, match="plain TCP"):
        parse_engine({"name": "far", "docker_host": "tcp://engines.example.org:2375"})


def test_plain_tcp_is_allowed_on_loopback_or_when_said_explicitly():
    assert parse_engine({"name": "here", "docker_host": "tcp://127.0.0.1:2375"}).tls is None
    assert parse_engine({"name": "here6", "docker_host": "tcp://[::1]:2375"}).tls is None
    engine = parse_engine({"name": "far", "docker_host": "tcp://10.0.0.5:2375", "allow_insecure": True})
    assert engine.allow_insecure


@pytest.mark.parametrize(("raw", "message"), [
    ({"name": "Bad Name", "docker_host": "unix:///a"}, "Engine name 'Bad Name' is not valid"),
    ({"name": "a"}, r"docker_host \(a Docker engine\) or libvirt_uri \(a hypervisor\) is required"),
    ({"name": "a", "docker_host": "http://10.0.0.5:2375"}, "must start with unix://, tcp:// or ssh://"),
    ({"name": "a", "docker_host": "tcp://:2376", "tls": TLS}, "needs a host name"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:port", "tls": TLS}, "numeric port"),
    ({"name": "a", "docker_host": "unix://"}, "names no socket path"),
    ({"name": "a", "docker_host": "ssh://10.0.0.5", "tls": TLS}, "tls applies to tcp:// engines only"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": {"ca_cert": "/ca", "client_cert": "/c"}},
     "both client_cert and client_key"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": {"client_cert": "/c", "client_key": "/k"}},
     "tls.verify needs tls.ca_cert"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": dict(TLS, cert="/x")}, "unknown option"),
    ({"name": "a", "docker_host": "unix:///a", "weight": -1}, "weight must be a whole number"),
    ({"name": "a", "docker_host": "unix:///a", "max_hosts": "3"}, "max_hosts must be a whole number"),
    ({"name": "a", "docker_host": "unix:///a", "zone": "x"}, "unknown option"),
    ({"name": "a", "docker_host": "ssh://web1", "advertise_address": "web1.lan"}, "advertise_address 'web1.lan' is not an IP"),
])
def test_bad_declarations_say_what_to_change(raw, message):
    with pytest.raises(InfraError, match=message):
        parse_engine(raw)


def test_duplicates_and_an_unplaceable_fleet_are_refused():
    with pytest.raises(InfraError, match="used twice"):
        parse_engines([{"name": "a", "docker_host": "unix:///a"}, {"name": "a", "docker_host": "unix:///b"}])
    with pytest.raises(InfraError, match="are the same engine"):
        parse_engines([{"name": "a", "docker_host": "unix:///a"}, {"name": "b", "docker_host": "unix:///a"}])
    with pytest.raises(InfraError, match="no host can be placed"):
        parse_engines([{"name": "a", "docker_host": "unix:///a", "weight": 0},
                       {"name": "b", "docker_host": "unix:///b", "max_hosts": 0}])
    with pytest.raises(InfraError, match="engines is empty"):
        parse_engines([])


def test_tls_verify_false_needs_no_ca():
    engine = parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376",
                           "tls": {"client_cert": "/c", "client_key": "/k", "verify": False}})
    assert engine.tls is not None and not engine.tls.verify


def test_connection_variables_reach_the_engine_through_the_docker_cli():
    engine = parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": TLS})
    arguments = shlex.split(engine.connection_variables()["ansible_docker_extra_args"])
    assert arguments == ["--host", "tcp://10.0.0.5:2376", "--tlsverify", "--tlscacert=/etc/ii/ca.pem",
                         "--tlscert=/etc/ii/cert.pem", "--tlskey=/etc/ii/key.pem"]
    assert "ansible_docker_host" not in engine.connection_variables()  # that is the container's name there


def test_inventory_group_of_engine_hosts_becomes_engines():
    groups = {"engines": ["Web1", "web2"], "empty": []}
    hostvars = {"Web1": {"docker_host": "tcp://10.0.0.5:2376", "docker_tls": TLS, "engine_weight": 2},
                "web2": {"docker_host": "ssh://deploy@10.0.0.6", "engine_max_hosts": 4, "ansible_host": "x"}}
    declared = engines_from_group("engines", groups, hostvars)
    engines = parse_engines(declared)
    assert [(engine.name, engine.weight, engine.max_hosts) for engine in engines] == [("web1", 2, None), ("web2", 1, 4)]
    assert engines[0].tls is not None
    with pytest.raises(InfraError, match="group nope .* does not exist"):
        engines_from_group("nope", groups, hostvars)
    with pytest.raises(InfraError, match="has no hosts"):
        engines_from_group("empty", groups, hostvars)
    with pytest.raises(InfraError, match="Engine host web3 in group engines has no docker_host"):
        engines_from_group("engines", {"engines": ["web3"]}, {"web3": {}})


@pytest.mark.parametrize(("raw", "address", "bind"), [
    ({"docker_host": "unix:///run/docker.sock"}, None, "127.0.0.1"),
    ({"docker_host": "tcp://10.0.0.5:2376", "tls": TLS}, "10.0.0.5", "10.0.0.5"),
    ({"docker_host": "ssh://deploy@web1.example.com"}, "web1.example.com", "0.0.0.0"),
    # Reached for management at one address, by the balancer at another (a NAT, another network).
    ({"docker_host": "tcp://203.0.113.5:2376", "tls": TLS, "advertise_address": "10.0.0.5"}, "10.0.0.5", "0.0.0.0"),
])
def test_an_engine_is_reached_at_its_advertised_address_else_its_machine(raw, address, bind):
    engine = parse_engine(dict(raw, name="a"))
    assert (engine.address, engine.bind_address) == (address, bind)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("localhost", True), ("10.0.0.1", False), ("example.org", False),
                                                (None, False)])
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_a_task_names_its_engines_one_way():
    task_vars = {"groups": {"engines": ["e1"]}, "hostvars": {"e1": {"docker_host": "unix:///e1.sock"}}}

    def engines_of(params):
        resolved = group_resolved(params, task_vars)
        return parse_engines(resolved.get("engines"), resolved.get("docker_host"))
    assert [engine.name for engine in engines_of({"engines_group": "engines"})] == ["e1"]
    assert engines_of({"docker_host": "unix:///x.sock"})[0].docker_host == "unix:///x.sock"
    assert engines_of({})[0].name == DEFAULT_ENGINE
    with pytest.raises(InfraError, match="either engines or engines_group"):
        engines_of({"engines": [], "engines_group": "engines"})
    with pytest.raises(InfraError, match="either engines or docker_host"):
        engines_of({"engines_group": "engines", "docker_host": "unix:///x.sock"})
