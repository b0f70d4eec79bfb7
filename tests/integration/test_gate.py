"""The rollout gate, require_verified(), against verdicts recorded on a real Docker engine."""

from __future__ import annotations

import uuid

import docker
import pytest
from support import BASE_IMAGE, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import (
    record_verdict,
    require_verified,
    verdict_volume_name,
)


@pytest.fixture(scope="module")
def client():
    return DockerClient()


@pytest.fixture
def make_image(docker_client, base_image):
    """Commits a distinct, tiny image (a new label on the base image) under a reference of this test run."""
    made = []

    def make(reference: str) -> str:
        container = docker_client.containers.create(BASE_IMAGE, command=["true"])
        try:
            repository, tag = reference.rsplit(":", 1)
            image = container.commit(repository=repository, tag=tag,
                                     conf={"Labels": {"immutable.infra.test": uuid.uuid4().hex}})
        finally:
            container.remove(force=True)
        made.append(image.id)
        return image.id

    yield make
    for image_id in made:  # a moved tag leaves its old image untagged, out of reach of the session cleanup
        for volume in docker_client.volumes.list(filters={"name": verdict_volume_name(image_id)}):
            volume.remove(force=True)
        try:
            docker_client.images.remove(image_id, force=True)
        except docker.errors.NotFound:
            pass


def passed(client, image_id, reference):
    record_verdict(client, image_id, True, {"time": "2030-01-02T03:04:05Z", "reference": reference,
                                            "tests": '{"total": 3}', "ledger_id": uuid.uuid4().hex})


def test_unverified_image_is_refused(client, make_image):
    reference = image_name("gate-unverified") + ":1"
    image_id = make_image(reference)
    with pytest.raises(InfraError, match="has no passing verdict") as refused:
        require_verified(client, reference)
    assert short_id(image_id) in refused.value.message and "require_verified: false" in refused.value.message
    with pytest.raises(InfraError, match=f"^Image {image_id} has no passing verdict"):
        require_verified(client, image_id)


def test_failed_verdict_is_refused_with_its_time(client, make_image):
    reference = image_name("gate-failed") + ":1"
    image_id = make_image(reference)
    record_verdict(client, image_id, False, {"time": "2030-01-02T03:04:05Z", "reference": reference})
    with pytest.raises(InfraError, match="failed verification at 2030-01-02T03:04:05Z"):
        require_verified(client, reference)


def test_passing_verdict_is_accepted_by_reference_and_by_id(client, make_image):
    reference = image_name("gate-passed") + ":1"
    image_id = make_image(reference)
    passed(client, image_id, reference)
    assert require_verified(client, reference)["Id"] == image_id
    assert require_verified(client, image_id)["Id"] == image_id


def test_a_later_failed_verdict_replaces_a_passing_one(client, make_image):
    reference = image_name("gate-regressed") + ":1"
    image_id = make_image(reference)
    passed(client, image_id, reference)
    record_verdict(client, image_id, False, {"time": "2030-02-03T04:05:06Z", "reference": reference})
    with pytest.raises(InfraError, match="failed verification at 2030-02-03T04:05:06Z"):
        require_verified(client, image_id)


def test_moved_tag_is_refused_and_explained(client, make_image):
    reference = image_name("gate-moved") + ":release"
    verified_id = make_image(reference)
    passed(client, verified_id, reference)
    assert require_verified(client, reference)["Id"] == verified_id
    moved_id = make_image(reference)  # the same tag now names another image
    assert moved_id != verified_id
    with pytest.raises(InfraError) as refused:
        require_verified(client, reference)
    message = refused.value.message
    assert f"(now {short_id(moved_id)}) has no passing verdict" in message
    assert f"verified when it pointed to {short_id(verified_id)}, but it has moved since" in message
    assert require_verified(client, verified_id)["Id"] == verified_id  # the verified image itself still passes


def test_require_false_accepts_an_unverified_image(client, make_image):
    reference = image_name("gate-optional") + ":1"
    image_id = make_image(reference)
    assert require_verified(client, reference, require=False)["Id"] == image_id


def test_missing_image_is_an_error_even_when_not_required(client, base_image):
    for required in (True, False):
        with pytest.raises(InfraError, match="Image 'immutable-infra/no-such-image:1' is not in the Docker engine"):
            require_verified(client, "immutable-infra/no-such-image:1", require=required)
