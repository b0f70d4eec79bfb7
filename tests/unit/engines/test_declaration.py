from __future__ import annotations

import shlex

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import (
    DEFAULT_ENGINE,
    cores_of,
    engines_from_group,
    is_loopback,
    parse_engine,
    parse_engines,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.manager import group_resolved

TLS = {"validate_certs": True, "ca_path": "/etc/ii/ca.pem", "client_cert": "/etc/ii/cert.pem",
       "client_key": "/etc/ii/key.pem"}
# The form engine entries had before they took community.docker's names; still read.
OLDER_TLS = {"tls": {"ca_cert": "/etc/ii/ca.pem", "client_cert": "/etc/ii/cert.pem", "client_key": "/etc/ii/key.pem"}}


def test_no_engines_is_the_default_engine_alone():
    [engine] = parse_engines(None)
    assert (engine.name, engine.docker_host, engine.tls) == (DEFAULT_ENGINE, "unix:///var/run/docker.sock", None)
    assert engine.connection_variables() == {}


def test_docker_host_is_a_fleet_of_one():
    [engine] = parse_engines(None, {"docker_host": "unix:///run/other.sock"})
    assert (engine.name, engine.docker_host, engine.scheme, engine.address) == (
        DEFAULT_ENGINE, "unix:///run/other.sock", "unix", None)


def test_the_fleet_of_one_takes_the_task_connection_options_and_the_docker_cli_environment():
    environ = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/etc/ii"}
    [engine] = parse_engines(None, {}, environ)
    assert (engine.docker_host, engine.tls.validate_certs, engine.tls.client_key) == (
        "tcp://127.0.0.1:2376", True, "/etc/ii/key.pem")
    [engine] = parse_engines(None, {"docker_host": "tcp://127.0.0.1:2376", "tls": True, "timeout": 5}, {})
    assert (engine.tls.validate_certs, engine.tls.ca_path, engine.endpoint.timeout) == (False, None, 5)
    with pytest.raises(InfraError, match="plain TCP to another machine"):
        parse_engines(None, {"docker_host": "tcp://10.0.0.5:2375"}, {})


def test_engines_and_docker_host_together_are_refused():
    with pytest.raises(InfraError, match="either engines or docker_host"):
        parse_engines([{"name": "a", "docker_host": "unix:///a.sock"}], {"docker_host": "unix:///b.sock"})


def test_three_schemes_are_accepted_in_declaration_order():
    engines = parse_engines([
        {"name": "local", "docker_host": "unix:///var/run/docker.sock"},
        {"name": "web-2", "docker_host": "tcp://10.0.0.5:2376", **TLS, "weight": 2, "max_hosts": 10},
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
    ({"name": "a", "docker_host": "tcp://:2376", **TLS}, "needs a host name"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:port", **TLS}, "numeric port"),
    ({"name": "a", "docker_host": "unix://"}, "names no socket path"),
    ({"name": "a", "docker_host": "ssh://10.0.0.5", **TLS}, "TLS applies to tcp:// engines only"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "validate_certs": True, "ca_path": "/ca",
      "client_cert": "/c"}, "client_cert and client_key go together"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "validate_certs": True, "client_cert": "/c",
      "client_key": "/k"}, "validate_certs needs ca_path"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "ca_path": "/ca"}, "ca_path are used only over TLS"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "validate_certs": "maybe?", "ca_path": "/ca"},
     "must be true or false"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "timeout": 0, **TLS}, "timeout must be a whole number"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": {"ca_cert": "/ca", "client_cert": "/c"}},
     "client_cert and client_key go together"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": {"client_cert": "/c", "client_key": "/k"}},
     "validate_certs needs ca_path"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": dict(OLDER_TLS["tls"], cert="/x")}, "unknown option"),
    ({"name": "a", "docker_host": "tcp://10.0.0.5:2376", **OLDER_TLS, "ca_path": "/other"}, "both in tls and beside"),
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


def test_tls_without_checking_the_engine_needs_no_ca():
    engine = parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376", "tls": True, "client_cert": "/c",
                           "client_key": "/k"})
    assert engine.tls is not None and not engine.tls.validate_certs
    older = parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376",
                          "tls": {"client_cert": "/c", "client_key": "/k", "verify": False}})
    assert older.tls == engine.tls


def test_the_older_tls_form_reads_as_the_new_names():
    older = parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376", **OLDER_TLS})
    assert older.endpoint == parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376", **TLS}).endpoint


def test_connection_variables_reach_the_engine_through_the_docker_cli():
    engine = parse_engine({"name": "a", "docker_host": "tcp://10.0.0.5:2376", **TLS})
    arguments = shlex.split(engine.connection_variables()["ansible_docker_extra_args"])
    assert arguments == ["--host", "tcp://10.0.0.5:2376", "--tlsverify", "--tlscacert=/etc/ii/ca.pem",
                         "--tlscert=/etc/ii/cert.pem", "--tlskey=/etc/ii/key.pem"]
    assert "ansible_docker_host" not in engine.connection_variables()  # that is the container's name there


def test_inventory_group_of_engine_hosts_becomes_engines():
    groups = {"engines": ["Web1", "web2"], "empty": []}
    hostvars = {"Web1": {"docker_host": "tcp://10.0.0.5:2376", "docker_validate_certs": True,
                         "docker_ca_path": "/etc/ii/ca.pem", "docker_client_cert": "/etc/ii/cert.pem",
                         "docker_client_key": "/etc/ii/key.pem", "engine_weight": 2},
                "web2": {"docker_host": "ssh://deploy@10.0.0.6", "engine_max_hosts": 4, "ansible_host": "x"},
                "web3": {"docker_host": "tcp://10.0.0.7:2376", "docker_tls": OLDER_TLS["tls"]}}
    declared = engines_from_group("engines", dict(groups, engines=["Web1", "web2", "web3"]), hostvars)
    engines = parse_engines(declared)
    assert [(engine.name, engine.weight, engine.max_hosts) for engine in engines] == [
        ("web1", 2, None), ("web2", 1, 4), ("web3", 1, None)]
    assert engines[0].tls is not None and engines[0].tls == engines[2].tls
    with pytest.raises(InfraError, match="group nope .* does not exist"):
        engines_from_group("nope", groups, hostvars)
    with pytest.raises(InfraError, match="has no hosts"):
        engines_from_group("empty", groups, hostvars)
    with pytest.raises(InfraError, match="Engine host web3 in group engines has no docker_host"):
        engines_from_group("engines", {"engines": ["web3"]}, {"web3": {}})


@pytest.mark.parametrize(("raw", "address", "bind"), [
    ({"docker_host": "unix:///run/docker.sock"}, None, "127.0.0.1"),
    ({"docker_host": "tcp://10.0.0.5:2376", **TLS}, "10.0.0.5", "10.0.0.5"),
    ({"docker_host": "ssh://deploy@web1.example.com"}, "web1.example.com", "0.0.0.0"),
    # Reached for management at one address, by the balancer at another (a NAT, another network).
    ({"docker_host": "tcp://203.0.113.5:2376", **TLS, "advertise_address": "10.0.0.5"}, "10.0.0.5", "0.0.0.0"),
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
        return parse_engines(resolved.get("engines"), resolved)
    assert [engine.name for engine in engines_of({"engines_group": "engines"})] == ["e1"]
    assert engines_of({"docker_host": "unix:///x.sock"})[0].docker_host == "unix:///x.sock"
    assert engines_of({})[0].name == DEFAULT_ENGINE
    with pytest.raises(InfraError, match="either engines or engines_group"):
        engines_of({"engines": [], "engines_group": "engines"})
    with pytest.raises(InfraError, match="either engines or docker_host"):
        engines_of({"engines_group": "engines", "docker_host": "unix:///x.sock"})


def test_engines_on_this_machine_share_its_cores_and_others_have_their_own():
    engines = parse_engines([{"name": "local", "docker_host": "unix:///run/docker.sock"},
                             {"name": "rig", "docker_host": "tcp://127.0.0.1:23751", **TLS},
                             {"name": "web1", "docker_host": "ssh://deploy@web1.example.com"},
                             {"name": "web1-tls", "docker_host": "tcp://web1.example.com:2376", **TLS}])
    assert [cores_of(engines, engine.name) for engine in engines] == ["", "", "web1.example.com", "web1.example.com"]
    assert cores_of(engines, "nowhere") == ""
    hypervisors = parse_engines([{"name": "hv", "libvirt_uri": "qemu:///system"},
                                 {"name": "hv2", "libvirt_uri": "qemu+ssh://deploy@10.0.0.5/system"}])
    assert [cores_of(hypervisors, engine.name) for engine in hypervisors] == ["", "10.0.0.5"]
