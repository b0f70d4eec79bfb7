"""Helpers for rollout tests: baked hello images, verdicts, service clean-up and playbook tasks."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid

import docker
import pytest
from haproxy_support import BackendConfig
from support import BASE_IMAGE, REPO_ROOT, Playbooks, image_name

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

from steady_load import SteadyLoad  # pylint: disable=wrong-import-position

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict

DEMO_DIR = os.path.join(REPO_ROOT, "examples", "demo")
HELLO_CONFIG = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
                "exposed_ports": ["8000/tcp"]}

IGNORING_SIGTERM = {"hello_ignore_sigterm": True}  # docker stop waits stop_timeout, then kills

__all__ = [
    "BACKEND",
    "HELLO_CONFIG",
    "IGNORING_SIGTERM",
    "SharedHello",
    "SteadyLoad",
    "bake_hello_images",
    "proxy",
    "remove_service",
    "rollout_task",
    "service",
    "service_name",
]
BACKEND = BackendConfig("web", slots=12, health_path="/healthz")


def bake_hello_images(versions: dict[str, dict], verified: bool = True, config: dict | None = None) -> dict[str, str]:
    """Bakes the example hello role once per version (vars per version); returns image IDs by version.
    config: the image config (HELLO_CONFIG by default)."""
    project_dir = tempfile.mkdtemp(prefix="hello-project-")
    os.symlink(os.path.join(DEMO_DIR, "roles"), os.path.join(project_dir, "roles"))
    project = Playbooks(project_dir)
    name = image_name("hello")
    tasks = [{"name": version, "immutable.infra.bake": {
        "name": name, "base": BASE_IMAGE, "roles": ["hello"], "config": config or HELLO_CONFIG,
        "vars": dict(variables, hello_version=version, test_nonce=uuid.uuid4().hex)}}
        for version, variables in versions.items()]
    run = project.run(tasks)
    images = {}
    client = DockerClient()
    for version in versions:
        result = run[version]
        if result.get("failed"):
            pytest.fail(f"baking hello {version} failed: {result['msg']}")
        images[version] = result["image_id"]
        if verified:
            record_verdict(client, result["image_id"], True, {"time": "test", "reference": result["image_id"]})
    return images


class SharedHello:
    """Verified hello images shared by every test module of a session: a version with the same vars and
    config is baked once (its first user bakes it) and read by the others. Modules that need an image
    nobody else may touch (a failed verdict, none at all, one they delete) bake their own."""

    def __init__(self, client: DockerClient):
        self._client = client
        self._baked: dict[str, str] = {}

    def __call__(self, versions: dict[str, dict], config: dict | None = None) -> dict[str, str]:
        def key(version: str) -> str:
            return json.dumps([version, versions[version], config or HELLO_CONFIG], sort_keys=True)

        missing = {version: variables for version, variables in versions.items()
                   if key(version) not in self._baked or self._client.image(self._baked[key(version)]) is None}
        if missing:
            for version, image_id in bake_hello_images(missing, config=config).items():
                self._baked[key(version)] = image_id
        return {version: self._baked[key(version)] for version in versions}


@pytest.fixture
def service(docker_client):
    """A service name of its own for the test; its hosts, lock and journal are removed afterwards."""
    name = service_name()
    yield name
    remove_service(docker_client, name)


@pytest.fixture
def proxy(start_haproxy):
    """A real HAProxy with a `web` backend of template slots checking /healthz."""
    return start_haproxy(BACKEND)


def service_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def remove_service(client: docker.DockerClient, service: str) -> None:
    """Removes every host, lock and journal of the service."""
    for container in client.containers.list(all=True, filters={"label": f"immutable.infra.service={service}"}):
        container.remove(force=True)
    for container in client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{service}"}):
        container.remove(force=True)
    for prefix in ("immutable-infra-rollout-", "immutable-infra-stopping-", "immutable-infra-lease-",
                   "immutable-infra-stopnote-", "immutable-infra-service-"):
        for volume in client.volumes.list(filters={"name": f"{prefix}{service}"}):
            volume.remove(force=True)


def rollout_task(service: str, image: str, proxy, backend: str = "web", **options) -> dict:
    arguments = {"service": service, "image": image, "replicas": 3, "port": 8000,
                 "health": {"http_path": "/healthz", "timeout": 20, "interval": 0.2},
                 "drain_timeout": 10, "stop_timeout": 5,
                 "balancer": {"runtime_api": proxy.runtime_api, "backend": backend}}
    arguments.update(options)
    return {"name": "rollout", "immutable.infra.rollout": arguments}
