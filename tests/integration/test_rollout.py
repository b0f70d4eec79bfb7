"""immutable.infra.rollout against a real Docker engine and a real HAProxy, under steady load."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from haproxy_support import BackendConfig
from rollout_support import SteadyLoad, bake_hello_images, rollout_task
from support import containers_created, listed


@pytest.fixture(scope="module")
def hello(shared_hello):
    """Three verified versions of the example service; 3.0 answers /healthz with 503."""
    return shared_hello({"1.0": {}, "2.0": {}, "3.0": {"hello_healthy": False}})


def hosts(docker_client, service, running=None):
    containers = listed(docker_client, label=f"immutable.infra.service={service}")
    return sorted(container.name for container in containers
                  if running is None or (container.status == "running") == running)


def in_balancer(proxy):
    """{server name: (address, admin state)} of the servers that take part (not free slots)."""
    members = {}
    for line in proxy.command("show servers state web").splitlines()[2:]:
        fields = line.split()
        if len(fields) > 6 and fields[4] != "0.0.0.0":
            admin = int(fields[6])
            members[fields[3]] = (fields[4], "maint" if admin & 0x23 else "drain" if admin & 0x18 else "ready")
    return members


def assert_balancer_matches(docker_client, proxy, live):
    addresses = set()
    for name in live:
        container = docker_client.containers.get(name)
        addresses.add(container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"])
    members = in_balancer(proxy)
    assert {address for address, _state in members.values()} == addresses
    assert all(state == "ready" for _address, state in members.values())


def test_rolling_rollout_under_load_drops_nothing(project, docker_client, hello, service, proxy):
    first = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]
    assert first["changed"] and first["generation"] == 1, first.get("msg")
    assert first["live"] == [f"{service}-1-{index}" for index in (1, 2, 3)]

    with SteadyLoad(proxy.url(), rate=150, max_seconds=120) as load:
        second = project.run([rollout_task(service, hello["2.0"], proxy)])["rollout"]
        time.sleep(0.5)
    summary = load.summary()
    assert second["changed"] and second["generation"] == 2, second.get("msg")
    assert second["added"] == [f"{service}-2-{index}" for index in (1, 2, 3)]
    assert second["removed"] == first["live"] and second["live"] == second["added"]
    assert summary["failed"] == 0 and summary["sent"] > 100, summary
    assert set(summary["answers_by_version"]) == {"1.0", "2.0"}
    assert hosts(docker_client, service, running=True) == second["live"]
    assert hosts(docker_client, service, running=False) == first["live"]  # kept for rollback
    assert_balancer_matches(docker_client, proxy, second["live"])

    steps = [step["text"] for step in second["plan"]]
    assert steps.index(f"batch 1: add {service}-2-1") < steps.index(f"batch 1: drain {service}-1-1") \
        < steps.index(f"batch 1: wait_drained {service}-1-1") < steps.index(f"batch 1: stop {service}-1-1")

    ledger = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    record = [entry for entry in ledger if entry.get("kind") == "rollout" and entry.get("service") == service][-1]
    assert (record["result"], record["generation"], record["image_id"]) == ("succeeded", 2, hello["2.0"])

    # The same image and spec again changes nothing and starts nothing.
    since = time.time()
    again = project.run([rollout_task(service, hello["2.0"], proxy)])["rollout"]
    assert not again["changed"] and again["kind"] == "noop" and again["live"] == second["live"]
    assert not containers_created(docker_client, since, (f"{service}-", f"immutable-infra-lock-{service}"))


@pytest.mark.parametrize("strategy, options", [("blue_green", {}), ("canary", {"canary": {"seconds": 2}})])
def test_blue_green_and_canary_under_load(project, docker_client, hello, service, proxy, strategy, options):
    project.run([rollout_task(service, hello["1.0"], proxy, replicas=2)])
    with SteadyLoad(proxy.url(), rate=150, max_seconds=120) as load:
        result = project.run([rollout_task(service, hello["2.0"], proxy, replicas=2, strategy=strategy,
                                           **options)])["rollout"]
        time.sleep(0.5)
    assert result["changed"] and result["live"] == [f"{service}-2-1", f"{service}-2-2"], result.get("msg")
    assert load.summary()["failed"] == 0, load.summary()
    actions = [step["action"] for step in result["plan"]]
    if strategy == "blue_green":
        assert actions == ["start", "wait_healthy", "add", "drain", "wait_drained", "detach", "stop"]
    else:
        assert actions.index("observe") < actions.index("drain")
    assert_balancer_matches(docker_client, proxy, result["live"])


def test_check_mode_and_diff_show_the_plan_and_touch_nothing(project, docker_client, hello, service, proxy):
    project.run([rollout_task(service, hello["1.0"], proxy, replicas=2)])
    before = hosts(docker_client, service)
    result = project.run([rollout_task(service, hello["2.0"], proxy, replicas=2)], check=True,
                         extra_args=["--diff"])["rollout"]
    assert result["changed"] and result["generation"] == 2
    assert result["diff"]["before"] == f"{service}-1-1\n{service}-1-2\n"
    assert result["diff"]["after"] == f"{service}-2-1\n{service}-2-2\n"
    assert result["plan"][0]["text"] == f"batch 1: start {service}-2-1"
    assert hosts(docker_client, service) == before
    assert not docker_client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{service}"})


def test_unhealthy_image_rolls_back_by_itself_without_dropping_requests(project, docker_client, hello, service,
                                                                        proxy):
    live = project.run([rollout_task(service, hello["2.0"], proxy)])["rollout"]["live"]
    with SteadyLoad(proxy.url(), rate=150, max_seconds=120) as load:
        result = project.run([rollout_task(service, hello["3.0"], proxy, health={
            "http_path": "/healthz", "timeout": 3, "interval": 0.2})])["rollout"]
        time.sleep(0.5)
    assert result["failed"] and result["rolled_back"]
    assert f"host {service}-2-1 did not pass its http check GET /healthz" in result["msg"]
    assert "HTTP 503" in result["msg"] and result["host"] == f"{service}-2-1"
    assert load.summary()["failed"] == 0, load.summary()
    assert hosts(docker_client, service, running=True) == live
    assert not [name for name in hosts(docker_client, service) if name.startswith(f"{service}-2-")] or \
        hosts(docker_client, service) == live
    assert_balancer_matches(docker_client, proxy, live)


def test_dynamic_servers_and_scaling(project, docker_client, hello, service, start_haproxy):
    proxy = start_haproxy(BackendConfig("web", slots=0, health_path="/healthz"))
    project.run([rollout_task(service, hello["1.0"], proxy, replicas=2)])
    with SteadyLoad(proxy.url(), rate=100, max_seconds=120) as load:
        grown = project.run([rollout_task(service, hello["1.0"], proxy, replicas=4, batch_size=2)])["rollout"]
        shrunk = project.run([rollout_task(service, hello["1.0"], proxy, replicas=1)])["rollout"]
        time.sleep(0.3)
    assert grown["kind"] == "scale" and grown["added"] == [f"{service}-1-3", f"{service}-1-4"]
    assert shrunk["kind"] == "scale" and shrunk["live"] == [f"{service}-1-1"]
    assert hosts(docker_client, service) == [f"{service}-1-1"]
    assert load.summary()["failed"] == 0, load.summary()
    assert set(in_balancer(proxy)) == {f"{service}-1-1"}


def run_in_background(project_dir, task):
    """Starts ansible-playbook with one task in its own process group; returns the process."""
    playbook = os.path.join(project_dir, f"background-{time.monotonic_ns()}.yml")
    with open(playbook, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}], handle)
    return subprocess.Popen([sys.executable, "-m", "ansible.cli.playbook", playbook], cwd=project_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_controller(pid):
    """SIGKILL an ansible-playbook and all its descendants, as a crash of the controller would.

    Ansible's workers start sessions of their own, so killing the process group is not enough.
    """
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    doomed, pending = [], [pid]
    while pending:
        current = pending.pop()
        doomed.append(current)
        pending.extend(children.get(current, []))
    for victim in doomed:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_container(docker_client, name, timeout=60):
    """Waits until the host runs (hosts of the next batch are created ahead, but started in turn)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker_client.containers.list(filters={"name": f"^{name}$", "status": "running"}):
            return
        time.sleep(0.05)
    pytest.fail(f"{name} did not start within {timeout} s")


def test_a_host_killed_mid_rollout_is_reported_and_reverted(project, docker_client, hello, service, proxy, tmp_path):
    live = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]["live"]
    slow_health = {"http_path": "/healthz", "timeout": 30, "interval": 0.5, "healthy_threshold": 6}
    process = run_in_background(str(tmp_path), rollout_task(service, hello["2.0"], proxy, health=slow_health))
    wait_for_container(docker_client, f"{service}-2-2")
    docker_client.containers.get(f"{service}-2-2").kill()
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0
    assert f"host {service}-2-2 failed its http check GET /healthz" in output
    assert "exit code 137" in output and "rolled back" in output
    assert hosts(docker_client, service, running=True) == live
    assert_balancer_matches(docker_client, proxy, live)


def test_killed_controller_then_rerun_converges(project, docker_client, hello, service, proxy, tmp_path):
    first = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]
    slow_health = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 4}
    task = rollout_task(service, hello["2.0"], proxy, health=slow_health)
    process = run_in_background(str(tmp_path), task)
    wait_for_container(docker_client, f"{service}-2-2")
    kill_controller(process.pid)
    process.wait()

    # The dead controller left its lock and journal behind; its process is gone, so the lock is stale.
    assert docker_client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{service}"})
    assert docker_client.volumes.list(filters={"name": f"immutable-infra-rollout-{service}"})
    rerun = project.run([task])["rollout"]
    assert rerun["changed"] and rerun.get("recovered"), rerun.get("msg")
    assert rerun["live"] == [f"{service}-2-{index}" for index in (1, 2, 3)]
    assert hosts(docker_client, service, running=True) == rerun["live"]
    assert hosts(docker_client, service, running=False) == first["live"]
    assert_balancer_matches(docker_client, proxy, rerun["live"])
    assert not docker_client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{service}"})
    assert not docker_client.volumes.list(filters={"name": f"immutable-infra-rollout-{service}"})


def test_ctrl_c_mid_rollout_reverts_the_fleet_at_once(project, docker_client, hello, service, proxy, tmp_path):
    live = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]["live"]
    slow_health = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 6}
    process = run_in_background(str(tmp_path), rollout_task(service, hello["2.0"], proxy, health=slow_health))
    wait_for_container(docker_client, f"{service}-2-2")  # the first batch is swapped, the second is gated
    lock = {"name": f"immutable-infra-lock-{service}"}
    with SteadyLoad(proxy.url(), rate=50, max_seconds=120) as load:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends ansible-playbook
        process.communicate(timeout=120)
        # ansible-playbook passes the signal to its worker and waits while it reverts and lets go of the lock.
        deadline = time.monotonic() + 60
        while docker_client.containers.list(all=True, filters=lock):
            assert time.monotonic() < deadline, "the interrupted rollout never finished reverting"
            time.sleep(0.1)
    summary = load.summary()
    assert process.returncode != 0
    assert hosts(docker_client, service, running=True) == live
    assert_balancer_matches(docker_client, proxy, live)
    assert not [name for name in hosts(docker_client, service, running=False) if name.startswith(f"{service}-2-")]
    assert not docker_client.volumes.list(filters={"name": f"immutable-infra-rollout-{service}"})  # journal
    assert summary["failed"] == 0 and summary["sent"] > 0, summary
    ledger = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    record = [entry for entry in ledger if entry.get("kind") == "rollout" and entry.get("service") == service][-1]
    assert record["result"] == "rolled back" and record["generation"] == 2
    assert record["error"] in (f"rollout of {service} was interrupted by {name}." for name in ("SIGINT", "SIGTERM"))


def test_a_second_rollout_of_the_same_service_is_refused(project, docker_client, hello, service, proxy, tmp_path):
    project.run([rollout_task(service, hello["1.0"], proxy, replicas=1)])
    slow_health = {"http_path": "/healthz", "timeout": 30, "interval": 0.5, "healthy_threshold": 8}
    process = run_in_background(str(tmp_path), rollout_task(service, hello["2.0"], proxy, replicas=1,
                                                            health=slow_health))
    wait_for_container(docker_client, f"{service}-2-1")
    second = project.run([rollout_task(service, hello["2.0"], proxy, replicas=1)])["rollout"]
    process.communicate(timeout=120)
    assert second["failed"] and f"Another rollout of service {service} is in progress" in second["msg"]
    assert f"@{socket.gethostname()}, pid " in second["msg"] and "its lease was renewed" in second["msg"]
    assert process.returncode == 0


@pytest.mark.parametrize("change, message", [
    ({"balancer": {"backend": "nope"}}, "has no backend named nope; its backends are: web"),
    ({"balancer": {"runtime_api": "/nonexistent/admin.sock"}}, "Cannot reach the HAProxy runtime API at /nonexistent"),
    ({"replicas": 0}, "replicas must be at least 1"),
    ({"replicas": -3}, "replicas must be at least 1"),
    ({"service": "Web-1"}, "must start with a lower-case letter"),
    ({"port": 70000}, "port must be between 1 and 65535"),
    ({"strategy": "big_bang"}, "value of strategy must be one of"),
])
def test_bad_input_is_refused_before_anything_is_touched(project, docker_client, hello, service, proxy, change,
                                                         message):
    task = rollout_task(service, hello["1.0"], proxy)
    arguments = task["immutable.infra.rollout"]
    for key, value in change.items():
        if isinstance(value, dict):
            arguments[key] = dict(arguments[key], **value)
        else:
            arguments[key] = value
    since = time.time()
    result = project.run([task])["rollout"]
    assert result["failed"] and message in result["msg"], result["msg"]
    assert not containers_created(docker_client, since, (f"{service}-", f"immutable-infra-lock-{service}"))
    assert not in_balancer(proxy)


def test_unverified_image_and_port_not_listening(project, docker_client, hello, service, proxy, base_image):
    unverified = bake_hello_images({"4.0": {}}, verified=False)["4.0"]
    refused = project.run([rollout_task(service, unverified, proxy)])["rollout"]
    assert refused["failed"] and "has no passing verdict" in refused["msg"]
    assert not hosts(docker_client, service)

    wrong_port = project.run([rollout_task(service, hello["1.0"], proxy, port=9999, replicas=1,
                                           health={"tcp": True, "timeout": 2, "interval": 0.2})])["rollout"]
    assert wrong_port["failed"] and "did not pass its tcp check on port 9999 within 2 s" in wrong_port["msg"]
    assert not hosts(docker_client, service) and not in_balancer(proxy)
