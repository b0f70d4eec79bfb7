"""Integration fixtures: a real Docker engine, the local base image and real ansible-playbook runs, and
for every module the fixtures of haproxy_support (a real HAProxy, HTTP backends) and rollout_support
(a service of its own, an HAProxy in front of it).

Nothing here skips: without an engine or base image the tests fail and say how to set them up.
"""

from __future__ import annotations

import docker
import pytest
from haproxy_support import start_haproxy, start_http_backend
from rollout_support import SharedHello, proxy, service
from support import BASE_IMAGE, IMAGE_PREFIX, Playbooks

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

__all__ = ["proxy", "service", "start_haproxy", "start_http_backend"]  # fixtures for every module


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker engine is reachable ({error}); run 'make setup' first")
    yield client
    removed = set()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(IMAGE_PREFIX):
                client.images.remove(tag, force=True)
                removed.add(image.id)
    client.images.prune(filters={"dangling": True})
    # Verdicts and attestations recorded for this run's images (verify, bake with signing_key) go with them.
    for volume in client.volumes.list(filters={"label": "immutable.infra.image_id"}):
        if volume.name.startswith(("immutable-infra-verdict-", "immutable-infra-attestations-")) and \
                (volume.attrs.get("Labels") or {}).get("immutable.infra.image_id") in removed:
            volume.remove(force=True)


@pytest.fixture(scope="session")
def base_image(docker_client):
    try:
        return docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {BASE_IMAGE} is missing; run 'make setup' first")


@pytest.fixture(scope="session")
def shared_hello(docker_client, base_image):
    """Verified hello images by version, baked once per session for every module that only reads them."""
    return SharedHello(DockerClient())


@pytest.fixture
def project(tmp_path):
    return Playbooks(str(tmp_path))
