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

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_NAME,
    attestation_volume_name,
    verdict_volume_name,
)
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
    remove_own_images(client)


def remove_own_images(client: docker.DockerClient) -> None:
    """Removes what this run baked or tagged (its images carry the run's prefix in their name label or tag,
    dangling ones included) and the verdicts and attestations recorded for them. Nothing else on the engine
    is touched: another run, or the demo, may be using it."""
    ours = {image["Id"] for image in client.api.images(filters={"label": LABEL_NAME})
            if (image.get("Labels") or {}).get(LABEL_NAME, "").startswith(IMAGE_PREFIX)}
    ours |= {image["Id"] for image in client.api.images(filters={"reference": f"{IMAGE_PREFIX}/*"})}
    left = ours
    while left:  # an image baked from another of ours goes first: its parent cannot go while it is there
        removed = {image_id for image_id in sorted(left) if _remove_image(client, image_id)}
        if not removed:
            break  # their children are not this run's: leave them, and their parents, to their owner
        left -= removed


def _remove_image(client: docker.DockerClient, image_id: str) -> bool:
    """Removes the image and its verdict and attestations; False while it still has a child image."""
    try:
        client.api.remove_image(image_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as error:
        if error.status_code == 409:
            return False
        raise
    for name in (verdict_volume_name(image_id), attestation_volume_name(image_id)):
        for volume in client.api.volumes(filters={"name": name}).get("Volumes") or []:
            client.api.remove_volume(volume["Name"], force=True)
    return True


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
