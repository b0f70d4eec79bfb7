"""immutable.infra.rollback and immutable.infra.drift against real Docker and HAProxy, under steady load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from rollout_support import SteadyLoad, bake_hello_images, rollout_task
from support import listed
from test_rollout import assert_balancer_matches, in_balancer


@pytest.fixture(scope="module")
def hello(shared_hello):
    return shared_hello({"1.0": {}, "2.0": {}, "2.1": {}})


def balancer(proxy):
    return {"runtime_api": proxy.runtime_api, "backend": "web"}


def running(docker_client, service):
    found = listed(docker_client, all=False, label=f"immutable.infra.service={service}")
    return sorted(container.name for container in found)


def test_rollback_to_revision_1_of_3_starts_its_kept_hosts_without_dropping_requests(
        project, docker_client, hello, service, proxy):
    for version in ("1.0", "2.0", "2.1"):
        result = project.run([rollout_task(service, hello[version], proxy, keep_previous=2)])["rollout"]
        assert result["changed"], result.get("msg")
    with SteadyLoad(proxy.url(), rate=150, max_seconds=60) as load:
        back = project.run([{"name": "rollback", "immutable.infra.rollback": {
            "service": service, "revision": 1, "balancer": balancer(proxy),
            "health": {"http_path": "/healthz", "interval": 0.2}}}])["rollback"]
        time.sleep(0.3)
    assert back["changed"] and back["revision"] == 1 and back["fast_path"], back.get("msg")
    assert back["target_image_id"] == hello["1.0"] and back["kind"] == "restore"
    assert back["live"] == [f"{service}-1-{index}" for index in (1, 2, 3)]
    assert running(docker_client, service) == back["live"]
    assert load.summary()["failed"] == 0, load.summary()
    print(f"rollback to revision 1 of 3 took {back['duration']} s")

    ledger = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    record = [entry for entry in ledger if entry.get("service") == service][-1]
    assert record["rollback_to_revision"] == 1 and record["result"] == "succeeded"


def test_rollback_defaults_to_the_previous_success_and_refuses_a_missing_image(
        project, docker_client, hello, service, proxy, base_image):
    doomed = bake_hello_images({"0.9": {}})["0.9"]
    for image in (doomed, hello["1.0"], hello["2.0"]):
        project.run([rollout_task(service, image, proxy, replicas=2)])
    back = project.run([{"name": "rollback", "immutable.infra.rollback": {
        "service": service, "balancer": balancer(proxy)}}])["rollback"]
    assert back["changed"] and back["revision"] == 2 and back["target_image_id"] == hello["1.0"], back.get("msg")
    assert back["fast_path"]
    again = project.run([{"name": "rollback", "immutable.infra.rollback": {
        "service": service, "balancer": balancer(proxy)}}])["rollback"]
    assert not again["changed"] and again["revision"] == 4 and again["live"] == back["live"], again.get("msg")

    for container in docker_client.containers.list(all=True, filters={"ancestor": doomed}):
        container.remove(force=True)
    docker_client.images.remove(doomed, force=True)
    missing = project.run([{"name": "rollback", "immutable.infra.rollback": {
        "service": service, "revision": 1, "balancer": balancer(proxy)}}])["rollback"]
    assert missing["failed"] and "The image of revision 1" in missing["msg"]
    assert "no longer exists" in missing["msg"]
    assert running(docker_client, service) == back["live"]


def fleet_groups(tmp_path, service):
    config = tmp_path / "drift.fleet.yml"
    config.write_text(f"plugin: immutable.infra.fleet\nservices: [{service}]\ndrift: true\n")
    output = subprocess.run([sys.executable, "-m", "ansible.cli.inventory", "-i", str(config), "--list"],
                            capture_output=True, text=True, check=True).stdout
    inventory = json.loads(output)
    return {group: sorted(data.get("hosts", [])) for group, data in inventory.items() if group != "_meta"}


def drift_task(service, proxy=None, **options):
    arguments = dict(service=service, **options)
    if proxy:
        arguments["balancer"] = balancer(proxy)
    return {"name": "drift", "immutable.infra.drift": arguments}


def test_a_file_written_with_docker_exec_is_drift_and_heal_replaces_the_host_under_load(
        project, docker_client, hello, service, proxy, tmp_path):
    project.run([rollout_task(service, hello["1.0"], proxy)])
    assert not project.run([drift_task(service)])["drift"]["drifted"]
    tampered = f"{service}-1-2"
    write_files = ["sh", "-c", "echo fix > /etc/hotfix; echo log > /var/log/x"]
    docker_client.containers.get(tampered).exec_run(write_files, user="root")

    found = project.run([drift_task(service)])["drift"]
    assert [entry["host"] for entry in found["drifted"]] == [tampered]
    assert found["drifted"][0]["reasons"] == ["filesystem: added /etc/hotfix"]
    assert fleet_groups(tmp_path, service)[f"{service}_drifted"] == [tampered]

    planned = project.run([drift_task(service, proxy, heal=True)], check=True)["drift"]
    assert planned["changed"] and not planned["healed"]
    assert tampered in running(docker_client, service)

    with SteadyLoad(proxy.url(), rate=150, max_seconds=60) as load:
        healed = project.run([drift_task(service, proxy, heal=True)])["drift"]
        time.sleep(0.3)
    assert healed["healed"] == [{"host": tampered, "replacement": f"{service}-1-4"}], healed.get("msg")
    assert load.summary()["failed"] == 0, load.summary()
    assert running(docker_client, service) == [f"{service}-1-1", f"{service}-1-3", f"{service}-1-4"]
    assert not project.run([drift_task(service)])["drift"]["drifted"]
    records = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    assert [record["kind"] for record in records if record.get("service") == service][-1] == "heal"
    # A later rollout of the same image and spec sees nothing to do: the heal kept the fleet as recorded.
    assert not project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]["changed"]


def test_a_replacement_that_fails_is_undone_and_the_drifted_host_stays_in_service(
        project, docker_client, hello, service, proxy):
    slow_health = {"http_path": "/healthz", "timeout": 30, "interval": 0.5, "healthy_threshold": 6}
    live = project.run([rollout_task(service, hello["1.0"], proxy, health=slow_health)])["rollout"]["live"]
    tampered, replacement = f"{service}-1-2", f"{service}-1-4"
    docker_client.containers.get(tampered).exec_run(["touch", "/etc/hotfix"], user="root")

    outcome = {}
    heal = threading.Thread(target=lambda: outcome.update(
        project.run([drift_task(service, proxy, heal=True)])["drift"]))
    with SteadyLoad(proxy.url(), rate=100, max_seconds=120) as load:
        heal.start()
        deadline = time.monotonic() + 60
        while not docker_client.containers.list(filters={"name": f"^{replacement}$", "status": "running"}):
            assert time.monotonic() < deadline and heal.is_alive(), "the replacement never started"
            time.sleep(0.05)
        docker_client.containers.get(replacement).kill()  # while it is still being health-checked
        heal.join(timeout=120)
    assert outcome["failed"] and f"Replacing drifted host {tampered} failed: host {replacement} failed" \
        in outcome["msg"], outcome.get("msg")
    assert f"{tampered} is in service again and {replacement} was removed." in outcome["msg"]
    assert load.summary()["failed"] == 0, load.summary()
    assert running(docker_client, service) == sorted(live)
    assert not docker_client.containers.list(all=True, filters={"name": f"^{replacement}$"})
    members = {address for address, _state in in_balancer(proxy).values()}
    assert members == {docker_client.containers.get(name).attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
                       for name in live}
    records = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    heal_record = [record for record in records if record.get("service") == service][-1]
    assert (heal_record["kind"], heal_record["result"], heal_record["replaced"]) == ("heal", "failed", [])


def test_a_changed_env_and_a_container_started_by_hand_are_drift(project, docker_client, hello, service, proxy):
    project.run([rollout_task(service, hello["1.0"], proxy, replicas=2)])
    original = docker_client.containers.get(f"{service}-1-1")
    labels = original.labels
    original.remove(force=True)
    docker_client.containers.run(hello["1.0"], name=f"{service}-1-1", labels=labels, environment={"DEBUG": "1"},
                                 detach=True)
    docker_client.containers.run(hello["1.0"], name=f"{service}-manual", detach=True,
                                 labels={"immutable.infra.service": service})

    found = {entry["host"]: entry["reasons"] for entry in project.run([drift_task(service)])["drift"]["drifted"]}
    assert found[f"{service}-1-1"] == ["env DEBUG added"]
    assert found[f"{service}-manual"] == [
        "carries the service's label but was not made by a rollout (no generation or spec labels)"]

    healed = project.run([drift_task(service, proxy, heal=True)])["drift"]
    assert healed["healed"] == [{"host": f"{service}-1-1", "replacement": f"{service}-1-3"}], healed.get("msg")
    assert healed["removed"] == [f"{service}-manual"]
    assert running(docker_client, service) == [f"{service}-1-2", f"{service}-1-3"]
    assert not project.run([drift_task(service)])["drift"]["drifted"]


def test_heal_and_rollback_given_only_the_service_keep_the_balancer_true(project, docker_client, hello, service, proxy):
    """The service record: the rollout was told the balancer; drift with heal and rollback are told only the
    service's name (and a revision), and find the balancer, the engine and the addressing themselves."""
    for version in ("1.0", "2.0"):
        project.run([rollout_task(service, hello[version], proxy)])
    tampered = f"{service}-2-2"
    docker_client.containers.get(tampered).exec_run(["touch", "/etc/hotfix"], user="root")
    with SteadyLoad(proxy.url(), rate=100, max_seconds=60) as load:
        healed = project.run([drift_task(service, heal=True)])["drift"]
        time.sleep(0.3)
    assert healed["healed"] == [{"host": tampered, "replacement": f"{service}-2-4"}], healed.get("msg")
    assert load.summary()["failed"] == 0, load.summary()
    live = [f"{service}-2-1", f"{service}-2-3", f"{service}-2-4"]
    assert running(docker_client, service) == live
    assert_balancer_matches(docker_client, proxy, live)

    with SteadyLoad(proxy.url(), rate=100, max_seconds=60) as load:
        back = project.run([{"name": "rollback", "immutable.infra.rollback": {"service": service, "revision": 1}}])
        time.sleep(0.3)
    back = back["rollback"]
    assert back["changed"] and back["revision"] == 1 and back["fast_path"], back.get("msg")
    assert load.summary()["failed"] == 0, load.summary()
    assert running(docker_client, service) == back["live"] == [f"{service}-1-{index}" for index in (1, 2, 3)]
    assert_balancer_matches(docker_client, proxy, back["live"])
    history = project.run([{"name": "history", "immutable.infra.history": {"service": service}}])["history"]
    assert history["live_revision"] == 3 and len(history["service_record_changes"]) == 1


def test_a_change_without_its_balancer_is_refused_when_the_service_has_no_record(
        project, docker_client, hello, service, proxy):
    project.run([rollout_task(service, hello["1.0"], proxy, replicas=2)])
    docker_client.volumes.get(f"immutable-infra-service-{service}").remove()
    docker_client.containers.get(f"{service}-1-2").exec_run(["touch", "/etc/hotfix"], user="root")
    refused = project.run([drift_task(service, heal=True)])["drift"]
    assert refused["failed"] and "no balancer is given" in refused["msg"] and "Nothing was changed" in refused["msg"]
    assert running(docker_client, service) == [f"{service}-1-1", f"{service}-1-2"]
    assert_balancer_matches(docker_client, proxy, [f"{service}-1-1", f"{service}-1-2"])
