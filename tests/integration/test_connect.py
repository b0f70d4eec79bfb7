"""bake, verify and rollout reach an engine of each kind the way Docker users reach it: mutual TLS configured
only through DOCKER_HOST, DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (with a REQUESTS_CA_BUNDLE that does not
hold the engine's CA), and ssh:// to an engine in a container (one SSH connection per task). The machine's
own socket is what every other test uses. A rollout over both engines as engine entries, each with its own
connection options, ships a signed image to both, passes the trust gate on each and starts every engine's
share with that engine's own connection."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import replace

import pytest
from connect_support import SSH_ENGINE, reach, remove_ssh_user
from rollout_support import BACKEND, DEMO_DIR, HELLO_CONFIG, remove_service, rollout_task, service_name
from support import BASE_IMAGE, Playbooks, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    EngineUnreachable,
    InfraError,
    OutputEndedEarly,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_NAME,
    attestation_volume_name,
    verdict_volume_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import resolve_endpoint

pytestmark = pytest.mark.rig


@pytest.fixture(scope="module")
def engine(request, docker_client, base_image):
    """The engine of the kind the test is parametrized with (indirect)."""
    reached = reach(request.param, DockerClient())
    yield reached
    reached.client.close()
    if reached.ssh_user:
        remove_ssh_user(SSH_ENGINE, reached.ssh_user)


@pytest.fixture
def hello_project():
    project_dir = tempfile.mkdtemp(prefix="connect-")
    os.symlink(os.path.join(DEMO_DIR, "roles"), os.path.join(project_dir, "roles"))
    return Playbooks(project_dir)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status


@pytest.mark.parametrize("engine", ["tls", "ssh"], indirect=True)
def test_bake_verify_and_rollout_reach_the_engine(engine, hello_project, start_haproxy):
    name, service, local = image_name(f"connect-{engine.kind}"), service_name(), DockerClient()
    bake = {"name": "bake", "immutable.infra.bake": {
        "name": name, "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG,
        "vars": {"hello_version": "1.0", "test_nonce": uuid.uuid4().hex}}}
    began = time.time()
    baked = hello_project.run([bake], env=engine.environment)["bake"]
    assert baked.get("changed") and not baked.get("failed"), baked.get("msg")
    image_id = baked["image_id"]
    try:
        assert engine.client.image(image_id) is not None
        assert not local.images_with_label(LABEL_NAME, name), "the image was baked on the controller's socket"
        proxy = start_haproxy(BACKEND)
        published = {"addressing": "published"} if engine.address else {}
        run = hello_project.run([
            {"name": "verify", "immutable.infra.verify": {
                "image": image_id, "tests": [os.path.join(DEMO_DIR, "tests", "test_hello.py")]}},
            rollout_task(service, image_id, proxy, replicas=2, **published),
        ], env=engine.environment)
        if engine.ssh_user:  # one SSH connection per task: its play, testinfra and every call went through it
            assert engine.ssh_logins(began) == 3
        assert run["verify"].get("passed"), run["verify"].get("msg")
        assert run["rollout"].get("changed"), run["rollout"].get("msg")
        hosts = engine.client.api.containers(filters={"label": f"immutable.infra.service={service}",
                                                      "status": "running"})
        assert sorted(host["Names"][0].lstrip("/") for host in hosts) == sorted(run["rollout"]["live"])
        assert _get(proxy.url(path="/healthz")) == 200
    finally:
        remove_service(engine.client.sdk, service)
        engine.client.remove_volume(verdict_volume_name(image_id))
        engine.client.api.remove_image(image_id, force=True)


@pytest.mark.parametrize("engine", ["tls"], indirect=True)
def test_the_engine_ca_is_the_only_one_trusted_for_it(engine):
    endpoint = resolve_endpoint({}, engine.environment)
    # The controller's CA bundle in place of the engine's CA: the engine is not trusted.
    others = replace(endpoint, timeout=10, tls=replace(endpoint.tls, ca_path=engine.environment["REQUESTS_CA_BUNDLE"]))
    with pytest.raises(InfraError, match=r"Cannot reach the Docker engine .*CERTIFICATE_VERIFY_FAILED.*ca_path"):
        DockerClient(others)


@pytest.mark.parametrize("engine", ["ssh"], indirect=True)
def test_an_ssh_engine_keeps_one_connection_for_every_call(engine):
    relay = engine.client.relay
    opened = relay.channels
    for _call in range(40):
        engine.client.api.info()
    assert relay.channels - opened <= 1, "calls opened new channels instead of keeping their connection"
    assert not relay.failures


@pytest.mark.parametrize("engine", ["ssh"], indirect=True)
def test_a_lost_ssh_connection_is_made_again_for_the_next_call(engine, docker_client, monkeypatch):
    """sshd ends this run's connection (as a network outage or a restart of sshd would) while the engine's
    machine refuses new logins: the next call fails with why; once logins work again, calls go through on a
    new connection of the same client."""
    monkeypatch.setenv("HOME", engine.environment["HOME"])  # the task's: where its SSH keys and known hosts are
    relay, ssh_engine = engine.client.relay, docker_client.containers.get(SSH_ENGINE)
    keys = f"/home/{engine.ssh_user}/.ssh/authorized_keys"
    engine.client.api.info()
    made, since = relay.connections, time.time()
    ssh_engine.exec_run(["sh", "-c", f"mv {keys} {keys}.off && pkill -f 'sshd: {engine.ssh_user}'"])
    try:
        deadline = time.monotonic() + 10
        while relay.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not relay.connected, "the relay did not see its SSH connection end"
        with pytest.raises(EngineUnreachable, match="a new SSH connection failed: SSH to .* refused the controller's keys"):
            engine.client.api.info()
    finally:
        ssh_engine.exec_run(["mv", f"{keys}.off", keys])
    for _call in range(5):
        assert engine.client.api.info()["ID"]
    assert relay.connected and relay.connections == made + 1 and relay.no_channel == ""
    assert engine.ssh_logins(since) == 1


@pytest.mark.parametrize("engine", ["ssh"], indirect=True)
def test_a_command_whose_output_a_lost_connection_cut_short_is_an_error_not_an_exit_code(engine, docker_client,
                                                                                         monkeypatch):
    """sshd ends the connection while a command runs in a container: the output that arrived is not taken
    for all of it, with an exit code of None; the next command runs on a new connection."""
    monkeypatch.setenv("HOME", engine.environment["HOME"])
    host = engine.client.sdk.containers.run(BASE_IMAGE, ["sleep", "120"], detach=True,
                                            name=f"connect-exec-{uuid.uuid4().hex[:8]}")
    cut = threading.Timer(1.0, docker_client.containers.get(SSH_ENGINE).exec_run,
                          [["pkill", "-f", f"sshd: {engine.ssh_user}"]])
    try:
        cut.start()
        began = time.monotonic()
        with pytest.raises(OutputEndedEarly, match=r"ended, but the command had not exited 2 s later: the connection "
                                                   r"to the engine was lost .*'begun'$"):
            engine.client.exec(host.id, ["sh", "-c", "echo begun; sleep 10; echo done"])
        assert time.monotonic() - began < 8, "the command's end was waited for instead of the cut being seen"
        assert engine.client.exec(host.id, ["echo", "again"]) == (0, "again\n")
    finally:
        cut.cancel()
        host.remove(force=True)


@pytest.fixture(scope="module")
def tls_and_ssh(docker_client, base_image):
    """Both kinds of engine at once, for a fleet declared with engine entries."""
    local = DockerClient()
    reached = {kind: reach(kind, local) for kind in ("tls", "ssh")}
    yield reached
    for engine in reached.values():
        engine.client.close()
    remove_ssh_user(SSH_ENGINE, reached["ssh"].ssh_user)


def engine_entries(reached) -> list[dict]:
    """The engines option: each entry says how it is reached, with nothing from the environment."""
    tls = resolve_endpoint({}, reached["tls"].environment)
    ssh = resolve_endpoint({}, reached["ssh"].environment)
    return [{"name": "tls", "docker_host": tls.docker_host, "validate_certs": True, "ca_path": tls.tls.ca_path,
             "client_cert": tls.tls.client_cert, "client_key": tls.tls.client_key},
            {"name": "ssh", "docker_host": ssh.docker_host}]


def test_a_signed_image_rolls_out_over_a_tls_and_an_ssh_engine_entry_each_on_its_own_connection(
        tls_and_ssh, hello_project, start_haproxy):
    for name, text in zip(("release.key", "release.pub"), new_key_pair(), strict=True):
        with open(os.path.join(hello_project.project, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    private, public = "release.key", "release.pub"
    name, service = image_name("connect-fleet"), service_name()
    baked = hello_project.run([{"name": "bake", "immutable.infra.bake": {
        "name": name, "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG, "signing_key": private,
        "vars": {"hello_version": "1.0", "test_nonce": uuid.uuid4().hex}}}])["bake"]
    assert baked.get("signed_by") and not baked.get("failed"), baked.get("msg")
    image_id, proxy, ssh = baked["image_id"], start_haproxy(BACKEND), tls_and_ssh["ssh"]
    verified = hello_project.run([{"name": "verify", "immutable.infra.verify": {
        "image": image_id, "signing_key": private,
        "tests": [os.path.join(DEMO_DIR, "tests", "test_hello.py")]}}])["verify"]
    assert verified.get("passed"), verified.get("msg")
    began = time.time()
    try:
        # Only the SSH client's home (its key and known hosts) comes from the environment.
        rolled = hello_project.run([rollout_task(
            service, image_id, proxy, replicas=2, engines=engine_entries(tls_and_ssh), addressing="published",
            image_transfer="stream", trust={"keys": [public]})], env={"HOME": ssh.environment["HOME"]})["rollout"]
        assert rolled.get("changed") and not rolled.get("failed"), rolled.get("msg")
        assert ssh.ssh_logins(began) == 1, "the ssh:// engine was reached over more than the task's one connection"
        for kind, engine in tls_and_ssh.items():
            hosts = engine.client.api.containers(filters={"label": f"immutable.infra.service={service}",
                                                          "status": "running"})
            assert [host["ImageID"] for host in hosts] == [image_id], f"the {kind} engine runs {hosts}"
            assert engine.client.volume_labels(attestation_volume_name(image_id)) is not None, \
                f"no attestations on the {kind} engine"
        assert _get(proxy.url(path="/healthz")) == 200
    finally:
        for engine in tls_and_ssh.values():
            remove_service(engine.client.sdk, service)
            for volume in (verdict_volume_name(image_id), attestation_volume_name(image_id)):
                engine.client.remove_volume(volume)
            engine.client.api.remove_image(image_id, force=True)
