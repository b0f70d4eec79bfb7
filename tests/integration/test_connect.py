"""bake, verify and rollout reach an engine of each kind the way Docker users reach it: mutual TLS configured
only through DOCKER_HOST, DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (with a REQUESTS_CA_BUNDLE that does not
hold the engine's CA), and ssh:// to an engine in a container (one SSH connection per task). The machine's
own socket is what every other test uses."""

from __future__ import annotations

import os
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace

import pytest
from connect_support import SSH_ENGINE, reach, remove_ssh_user
from rollout_support import BACKEND, DEMO_DIR, HELLO_CONFIG, remove_service, rollout_task, service_name
from support import BASE_IMAGE, Playbooks, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_NAME, verdict_volume_name
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
