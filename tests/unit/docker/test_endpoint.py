"""The connection options settle as community.docker and the Docker CLI settle them."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import (
    DEFAULT_DOCKER_HOST,
    DEFAULT_TIMEOUT,
    TLSConfig,
    cert_directory,
    cli_environment,
    resolve_endpoint,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.ssh import ssh_target

CLI_TLS = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/etc/engine"}


def test_nothing_set_is_the_default_socket():
    endpoint = resolve_endpoint({}, {})
    assert (endpoint.docker_host, endpoint.tls, endpoint.timeout) == (DEFAULT_DOCKER_HOST, None, DEFAULT_TIMEOUT)


def test_the_docker_cli_variables_configure_mutual_tls():
    endpoint = resolve_endpoint({}, CLI_TLS)
    assert endpoint.docker_host == "tcp://127.0.0.1:2376"
    assert endpoint.tls == TLSConfig(validate_certs=True, ca_path="/etc/engine/ca.pem",
                                     client_cert="/etc/engine/cert.pem", client_key="/etc/engine/key.pem")


def test_options_win_over_the_environment():
    endpoint = resolve_endpoint({"docker_host": "tcp://127.0.0.1:3376", "ca_path": "/mine/ca.pem", "timeout": 7},
                                dict(CLI_TLS, DOCKER_TIMEOUT="30"))
    assert (endpoint.docker_host, endpoint.tls.ca_path, endpoint.tls.client_cert, endpoint.timeout) == (
        "tcp://127.0.0.1:3376", "/mine/ca.pem", "/etc/engine/cert.pem", 7)
    assert resolve_endpoint({"validate_certs": False}, CLI_TLS).tls is None


@pytest.mark.parametrize(("value", "verify"), [
    ("1", True), ("yes", True), ("anything", True), ("0", None), ("false", None), ("", None)])
def test_docker_tls_verify_is_read_as_the_cli_reads_it(value, verify):
    tls = resolve_endpoint({}, dict(CLI_TLS, DOCKER_TLS_VERIFY=value)).tls
    assert (tls.validate_certs if tls else None) == verify


def test_tls_from_the_environment_without_a_cert_path_looks_in_the_home_docker_directory():
    tls = resolve_endpoint({}, {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1",
                                "HOME": "/home/deploy"}).tls
    assert tls.ca_path == "/home/deploy/.docker/ca.pem"


def test_tls_without_checking_the_engine():
    tls = resolve_endpoint({"docker_host": "tcp://127.0.0.1:2376", "tls": True}, {}).tls
    assert tls == TLSConfig(validate_certs=False)
    assert resolve_endpoint({}, {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS": "1"}).tls == tls


def test_tls_variables_of_the_environment_do_not_apply_to_a_socket_or_ssh():
    assert resolve_endpoint({"docker_host": "unix:///run/docker.sock"}, CLI_TLS).tls is None
    assert resolve_endpoint({"docker_host": "ssh://deploy@10.0.0.5"}, CLI_TLS).tls is None


@pytest.mark.parametrize(("options", "message"), [
    ({"docker_host": "ssh://deploy@10.0.0.5", "validate_certs": True, "ca_path": "/ca"},
     "TLS applies to tcp:// engines only"),
    ({"docker_host": "tcp://10.0.0.5:2376", "validate_certs": True}, "validate_certs needs ca_path"),
    ({"docker_host": "tcp://10.0.0.5:2376", "tls": True, "client_cert": "/c"}, "client_cert and client_key go"),
    ({"docker_host": "tcp://10.0.0.5:2376", "client_cert": "/c", "client_key": "/k"}, "used only over TLS"),
    ({"docker_host": "http://10.0.0.5:2375"}, "must start with unix://, tcp:// or ssh://"),
    ({"docker_host": "ssh://"}, "needs a host name"),
    ({"timeout": 0}, "timeout must be a whole number of seconds above 0"),
])
def test_bad_options_say_what_to_change(options, message):
    with pytest.raises(InfraError, match=message):
        resolve_endpoint(options, {})


def test_a_bad_environment_is_named_as_the_source():
    with pytest.raises(InfraError, match=r"timeout \(from DOCKER_TIMEOUT\) must be"):
        resolve_endpoint({}, {"DOCKER_TIMEOUT": "soon"})
    with pytest.raises(InfraError, match=r"validate_certs \(from DOCKER_TLS_VERIFY\) needs ca_path"):
        resolve_endpoint({}, {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1"})


def test_a_child_gets_the_engine_variables_and_loses_those_of_another_engine():
    base = {"PATH": "/usr/bin", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/old", "DOCKER_CONTEXT": "prod"}
    assert cli_environment(base, "unix:///tmp/relay/docker.sock", None, None) == {
        "PATH": "/usr/bin", "DOCKER_HOST": "unix:///tmp/relay/docker.sock"}
    tls = TLSConfig(validate_certs=True, ca_path="/etc/engine/ca.pem")
    bundle = {"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
    assert cli_environment(bundle, "tcp://127.0.0.1:2376", tls, "/etc/engine") == {
        "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/etc/engine"}
    assert cli_environment(bundle, "unix:///run/docker.sock", None, None) == dict(
        bundle, DOCKER_HOST="unix:///run/docker.sock")
    assert cli_environment({}, "tcp://127.0.0.1:2376", TLSConfig(validate_certs=False), None) == {
        "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS": "1"}


def test_tls_files_named_as_the_cli_expects_are_used_in_place():
    assert cert_directory(TLSConfig(ca_path="/e/ca.pem", client_cert="/e/cert.pem", client_key="/e/key.pem")) == "/e"
    assert cert_directory(TLSConfig(ca_path="/e/engine-ca.pem")) is None
    assert cert_directory(TLSConfig(ca_path="/e/ca.pem", client_cert="/f/cert.pem", client_key="/f/key.pem")) is None


def test_an_ssh_url_is_completed_by_the_ssh_config_entry():
    config = {"hostname": "10.0.0.5", "port": "2222", "user": "deploy", "identityfile": ["~/.ssh/engine"]}
    target = ssh_target("ssh://web1", config)
    assert (target["hostname"], target["port"], target["username"]) == ("10.0.0.5", 2222, "deploy")
    assert target["key_filename"][0].endswith("/.ssh/engine")
    assert ssh_target("ssh://root@web1:2200", config)["port"] == 2200
    assert ssh_target("ssh://root@web1:2200", config)["username"] == "root"
    assert ssh_target("ssh://web1", {}) == {"hostname": "web1", "port": 22, "username": None}
