"""immutable.infra.prune against a real Docker engine, after real rollouts through a real HAProxy."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import docker
import pytest
from rollout_support import remove_service, rollout_task, service_name
from support import RUN_ID, Playbooks, image_name, listed
from traceability_support import derive_image, haproxy, hello_baked_once, record_verified


@dataclass
class Fleet:
    service: str
    project: Playbooks
    ledger: str
    images: dict

    def prune(self, check: bool = False, **options) -> dict:
        task = {"name": "prune", "immutable.infra.prune": dict({"service": self.service}, **options)}
        return self.project.run([task], check=check, env={"IMMUTABLE_INFRA_LEDGER": self.ledger})["prune"]


@pytest.fixture(scope="module")
def fleet(docker_client, base_image, tmp_path_factory):
    """A service whose generations 1 and 2 are kept stopped and 3 is live, each from its own image, and
    images around them: an unused older one, one pinned by a tag, and a newer one never rolled out."""
    baked = hello_baked_once()
    ledger = str(tmp_path_factory.mktemp("prune-ledger") / "ledger.jsonl")
    repository = image_name("prune-hello")
    images = {"base": baked.images["2.0"]}
    for name in ("unused", "tagged", "gen1", "gen2", "gen3"):
        images[name] = derive_image(docker_client, images["base"], repository, name)
        record_verified(ledger, images[name])
    docker_client.api.tag(images["tagged"], repository, "pinned-release-1")
    time.sleep(1.1)  # the engine reports creation times in whole seconds; "newest" must be newest
    images["newest"] = derive_image(docker_client, images["base"], repository, "newest")
    service = service_name()
    with haproxy() as proxy:
        health = {"http_path": "/healthz", "timeout": 10, "interval": 0.2}
        run = baked.project.run([dict(rollout_task(service, images[name], proxy, replicas=1, keep_previous=3,
                                                   health=health), name=name) for name in ("gen1", "gen2", "gen3")],
                                env={"IMMUTABLE_INFRA_LEDGER": ledger})
        assert all(run[name]["changed"] for name in ("gen1", "gen2", "gen3")), run["gen3"].get("msg")
        yield Fleet(service, baked.project, ledger, images)
    remove_service(docker_client, service)


def containers(docker_client, service):
    found = listed(docker_client, label=f"immutable.infra.service={service}")
    return {container.name: container.status for container in found}


def image_exists(docker_client, image_id):
    try:
        docker_client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def names(result, kind, key="removed"):
    return sorted(entry["name"] for entry in result[key][kind])


def ids(result, kind, key="removed"):
    return {entry["id"] for entry in result[key][kind]}


def test_check_mode_shows_what_would_go_and_removes_nothing(fleet, docker_client):
    before = containers(docker_client, fleet.service)
    result = fleet.prune(check=True, builders=False)
    assert result["changed"] and result["msg"].startswith("would remove 1 hosts, 2 images"), result["msg"]
    assert names(result, "hosts") == [f"{fleet.service}-1-1"]
    assert ids(result, "images") == {fleet.images["unused"], fleet.images["gen1"]}
    assert len(result["removed"]["verdict_volumes"]) == 2
    kept = {entry["id"]: entry["reason"] for entry in result["kept"]["images"]}
    assert kept[fleet.images["gen2"]] == f"used by container {fleet.service}-2-1"
    assert kept[fleet.images["gen3"]] == f"used by container {fleet.service}-3-1"
    assert "newest 1" in kept[fleet.images["newest"]]
    assert kept[fleet.images["tagged"]] == "pinned by its tag " + image_name("prune-hello") + ":pinned-release-1"
    # The image they were made from belongs to another repository, which this service never ran.
    assert fleet.images["base"] not in kept and fleet.images["base"] not in ids(result, "images")
    assert containers(docker_client, fleet.service) == before
    assert all(image_exists(docker_client, image_id) for image_id in fleet.images.values())


def test_a_service_with_a_rollout_under_way_is_left_alone(fleet, docker_client):
    journal = docker_client.volumes.create(f"immutable-infra-rollout-{fleet.service}")
    try:
        result = fleet.prune(images=False, builders=False, keep_previous=0)
        assert not result["changed"] and result["removed"]["hosts"] == [], result["msg"]
        assert all("under way" in entry["reason"] for entry in result["kept"]["hosts"])
        docker_client.volumes.get(journal.name)  # the journal itself is never removed
    finally:
        journal.remove(force=True)
    assert len(containers(docker_client, fleet.service)) == 3


def test_prune_keeps_live_kept_pinned_and_newest_and_removes_the_rest(fleet, docker_client):
    pinned = fleet.images["gen1"].split(":")[1][:12]
    result = fleet.prune(builders=False, pinned=[pinned])
    assert result["changed"] and not result["skipped"], result["msg"]
    assert names(result, "hosts") == [f"{fleet.service}-1-1"]
    assert ids(result, "images") == {fleet.images["unused"]}
    assert names(result, "verdict_volumes") == ["immutable-infra-verdict-" + fleet.images["unused"].split(":")[1]]
    assert f"pinned option ({pinned})" in {entry["id"]: entry["reason"] for entry in result["kept"]["images"]}[
        fleet.images["gen1"]]
    assert all(entry["bytes"] is not None for entry in result["removed"]["hosts"] + result["removed"]["images"])
    assert result["freed_bytes"] == sum(entry["bytes"] for entry in result["removed"]["hosts"] +
                                        result["removed"]["images"])
    assert containers(docker_client, fleet.service) == {f"{fleet.service}-3-1": "running",
                                                        f"{fleet.service}-2-1": "exited"}
    assert not image_exists(docker_client, fleet.images["unused"])
    kept = ("base", "tagged", "gen1", "gen2", "gen3", "newest")
    assert all(image_exists(docker_client, fleet.images[name]) for name in kept)

    with open(fleet.ledger, encoding="utf-8") as handle:
        record = [json.loads(line) for line in handle if '"prune"' in line][-1]
    assert record["kind"] == "prune" and record["id"] == result["ledger_id"]
    assert record["removed"]["hosts"] == [f"{fleet.service}-1-1"] and record["service"] == fleet.service

    again = fleet.prune(builders=False, pinned=[pinned])
    assert not again["changed"] and again["msg"] == "nothing to prune"


def test_keep_previous_zero_never_touches_the_running_generation(fleet, docker_client):
    result = fleet.prune(builders=False, keep_previous=0, pinned=[fleet.images["gen1"]])
    assert names(result, "hosts") == [f"{fleet.service}-2-1"], result["msg"]
    assert ids(result, "images") == {fleet.images["gen2"]}
    assert containers(docker_client, fleet.service) == {f"{fleet.service}-3-1": "running"}
    assert [entry["reason"] for entry in result["kept"]["hosts"]] == ["generation 3 runs (live)"]


@pytest.fixture
def leftovers(docker_client, fleet):
    """A bake builder, a verify host, a failed bake's image and an orphaned verdict, all just made."""
    suffix = f"itest{RUN_ID}-{uuid.uuid4().hex[:6]}"
    base = fleet.images["base"]
    made = {
        "builders": docker_client.api.create_container(base, name=f"immutable-infra-bake-{suffix}")["Id"],
        "verify_hosts": docker_client.api.create_container(base, name=f"immutable-infra-verify-{suffix}",
                                                           labels={"immutable.infra.verifying": base})["Id"],
        "failed_images": derive_image(docker_client, base, image_name("prune-hello"), f"failed-{suffix}",
                                      labels={"immutable.infra.failed_bake": suffix}),
    }
    orphan = "sha256:" + uuid.uuid4().hex * 2
    made["verdict_volumes"] = docker_client.volumes.create(
        "immutable-infra-verdict-" + orphan.split(":")[1],
        labels={"immutable.infra.verdict": "passed", "immutable.infra.image_id": orphan}).name
    yield made
    for kind in ("builders", "verify_hosts"):
        docker_client.api.remove_container(made[kind], force=True)
    docker_client.images.remove(made["failed_images"], force=True)
    docker_client.volumes.get(made["verdict_volumes"]).remove(force=True)


def test_leftovers_go_only_once_older_than_min_age(fleet, docker_client, leftovers):
    options = {"images": False, "keep_previous": 100}
    would = fleet.prune(check=True, min_age=0, **options)
    for kind, object_id in leftovers.items():
        listed = ids(would, kind) | {entry["name"] for entry in would["removed"][kind]}
        assert object_id in listed, (kind, would["removed"][kind])

    fresh = fleet.prune(**options)  # default min_age: 600 s
    for kind in ("builders", "verify_hosts", "failed_images"):
        assert leftovers[kind] in ids(fresh, kind, key="kept"), (kind, fresh["kept"][kind])
        assert leftovers[kind] not in ids(fresh, kind)
    assert leftovers["verdict_volumes"] not in {entry["name"] for entry in fresh["removed"]["verdict_volumes"]}
    assert docker_client.containers.get(leftovers["builders"]) and docker_client.containers.get(leftovers["verify_hosts"])
    assert image_exists(docker_client, leftovers["failed_images"])
    docker_client.volumes.get(leftovers["verdict_volumes"])
