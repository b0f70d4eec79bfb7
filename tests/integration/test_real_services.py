"""A service as a new user brings it: a hyphenated name, a program that ignores SIGTERM, a stock HAProxy config.

The stock backend has `server-template slot 1-N 127.0.0.1:9 check disabled` placeholders, `option httpchk`
and HAProxy's default check timing (inter 2s, rise 2, fall 3). Everything runs for real: Docker, HAProxy,
ansible-playbook, under steady load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from haproxy_support import BackendConfig
from rollout_support import DEMO_DIR, IGNORING_SIGTERM, SteadyLoad, remove_service, rollout_task
from support import listed
from test_rollout import run_in_background, wait_for_container

STOP_TIMEOUT = 30  # long, so that waiting for a host that ignores SIGTERM would show in every duration


@pytest.fixture(scope="module")
def stubborn(shared_hello):
    """hello versions that ignore SIGTERM (docker stop waits stop_timeout, then kills them)."""
    return shared_hello(dict.fromkeys(("1.0", "2.0"), IGNORING_SIGTERM))


@pytest.fixture
def web_api(docker_client):
    name = f"web-api-{uuid.uuid4().hex[:6]}"
    yield name
    remove_service(docker_client, name)


@pytest.fixture
def stock(start_haproxy):
    return start_haproxy(BackendConfig("web", slots=20, health_path="/healthz", stock=True))


def servers(proxy):
    """[(name, address, port, admin state, operational state)] of every server of the backend."""
    rows = []
    for line in proxy.command("show servers state web").splitlines()[2:]:
        fields = line.split()
        if len(fields) > 18:
            admin = int(fields[6])
            rows.append((fields[3], fields[4], int(fields[18]),
                         "maint" if admin & 0x23 else "drain" if admin & 0x18 else "ready", int(fields[5])))
    return rows


def address(docker_client, name):
    return docker_client.containers.get(name).attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]


def assert_balancer_is_the_hosts(docker_client, proxy, live):
    """Each server is a live host at its current address, ready and up, or a free slot in maintenance."""
    taking_part = [row for row in servers(proxy) if row[3] != "maint"]
    assert sorted((row[1], row[2]) for row in taking_part) == sorted((address(docker_client, name), 8000)
                                                                     for name in live), servers(proxy)
    assert all(row[3] == "ready" and row[4] == 2 for row in taking_part), taking_part
    assert all(row[0].startswith("slot") for row in servers(proxy)), "a dynamic server was added: slots ran out"


def running(docker_client, service):
    found = listed(docker_client, all=False, label=f"immutable.infra.service={service}")
    return sorted(container.name for container in found)


def warnings(output):
    """Warnings other than ansible-playbook's own about running with no inventory."""
    return [line for line in output.splitlines() if "[WARNING]" in line and "localhost" not in line]


def task(module, name=None, **arguments):
    return {"name": name or module, f"immutable.infra.{module}": arguments}


def balancer(proxy):
    return {"runtime_api": proxy.runtime_api, "backend": "web"}


def test_web_api_end_to_end_behind_a_stock_balancer_with_a_service_that_ignores_sigterm(
        project, docker_client, stubborn, web_api, stock, tmp_path):
    service = web_api
    # verify, with the demo's testinfra suite, as a user would before rolling out
    verified = project.run([task("verify", name=f"verify {version}", image=stubborn[version],
                                 tests=[os.path.join(DEMO_DIR, "tests", "test_hello.py")]) for version in ("1.0", "2.0")])
    assert all(verified[f"verify {version}"]["passed"] for version in ("1.0", "2.0")), verified.results

    # the first rollout through the role, as docs/rollout.md shows it
    arguments = rollout_task(service, stubborn["1.0"], stock)["immutable.infra.rollout"]
    first = project.run([{"name": "role", "ansible.builtin.include_role": {"name": "immutable.infra.rollout"}, "vars": {
        "rollout_service": service, "rollout_image": stubborn["1.0"], "rollout_replicas": 3, "rollout_port": 8000,
        "rollout_health": arguments["health"], "rollout_balancer": arguments["balancer"]}},
        {"name": "rollout", "ansible.builtin.debug": {"var": "rollout_result"}}])
    result = first["rollout"]["rollout_result"]
    assert result["changed"] and result["live"] == [f"{service}-1-{index}" for index in (1, 2, 3)], result.get("msg")
    assert not warnings(first.output), warnings(first.output)
    assert_balancer_is_the_hosts(docker_client, stock, result["live"])
    again = project.run([rollout_task(service, stubborn["1.0"], stock, stop_timeout=STOP_TIMEOUT)])["rollout"]
    assert not again["changed"] and again["kind"] == "noop", again["msg"]  # the 17 placeholders are free slots

    with SteadyLoad(stock.url(), rate=100, max_seconds=120) as load:
        second = project.run([rollout_task(service, stubborn["2.0"], stock, stop_timeout=STOP_TIMEOUT)])["rollout"]
        time.sleep(0.3)
    assert load.summary()["failed"] == 0, load.summary()
    assert second["changed"] and second["live"] == [f"{service}-2-{index}" for index in (1, 2, 3)], second["msg"]
    # Nothing waited for the old hosts to give up on SIGTERM: they are out and drained, the engine kills them.
    assert second["duration"] < STOP_TIMEOUT, second["duration"]
    assert second["stopping"] == result["live"]
    assert_balancer_is_the_hosts(docker_client, stock, second["live"])
    # While the engine is still stopping them, they count as stopped: a repeat run has nothing to do.
    assert running(docker_client, service) == sorted(result["live"] + second["live"])
    repeat = project.run([rollout_task(service, stubborn["2.0"], stock, stop_timeout=STOP_TIMEOUT)])["rollout"]
    assert not repeat["changed"] and repeat["kind"] == "noop", repeat["msg"]
    history = project.run([task("history", service=service)])["history"]
    assert history["revisions"][0]["stopping"] == result["live"]

    # inventory: groups with '_' for '-', hosts with their own names
    config = tmp_path / "inventory.fleet.yml"
    config.write_text(f"plugin: immutable.infra.fleet\nservices: [{service}]\n")
    inventory = json.loads(subprocess.run([sys.executable, "-m", "ansible.cli.inventory", "-i", str(config), "--list"],
                                          stdout=subprocess.PIPE, text=True, check=True).stdout)
    group = service.replace("-", "_")
    assert sorted(inventory[f"{group}_live"]["hosts"]) == sorted(result["live"] + second["live"])
    assert sorted(inventory[f"{group}_gen_2"]["hosts"]) == second["live"]

    # drift and heal: the replacement gets a server and the drifted host's server goes
    tampered = f"{service}-2-2"
    docker_client.containers.get(tampered).exec_run(["touch", "/etc/hotfix"], user="root")
    with SteadyLoad(stock.url(), rate=100, max_seconds=120) as load:
        healed = project.run([task("drift", service=service, heal=True, balancer=balancer(stock),
                                   stop_timeout=STOP_TIMEOUT)])["drift"]
        time.sleep(0.3)
    assert load.summary()["failed"] == 0, load.summary()
    assert healed["healed"] == [{"host": tampered, "replacement": f"{service}-2-4"}], healed.get("msg")
    live = [f"{service}-2-1", f"{service}-2-3", f"{service}-2-4"]
    assert_balancer_is_the_hosts(docker_client, stock, live)
    assert not project.run([rollout_task(service, stubborn["2.0"], stock, stop_timeout=STOP_TIMEOUT)])["rollout"]["changed"]

    # rollback to revision 1, whose hosts the engine may still be stopping: they are finished and started again
    with SteadyLoad(stock.url(), rate=100, max_seconds=120) as load:
        back = project.run([task("rollback", service=service, revision=1, balancer=balancer(stock),
                                 stop_timeout=STOP_TIMEOUT)])["rollback"]
        time.sleep(0.3)
    assert load.summary()["failed"] == 0, load.summary()
    assert back["changed"] and back["fast_path"] and back["live"] == result["live"], back.get("msg")
    assert back["duration"] < STOP_TIMEOUT, back["duration"]
    assert_balancer_is_the_hosts(docker_client, stock, back["live"])
    # the healed generation 2 is the one kept now, 2-4 drained and stopped like its peers
    assert sorted(back["removed"]) == live
    assert not project.run([task("rollback", service=service, revision=1, balancer=balancer(stock))])["rollback"]["changed"]


def test_a_stock_backend_serves_a_service_forever_by_reusing_its_slots(
        project, docker_client, stubborn, web_api, start_haproxy):
    """5 slots, 2 replicas, 6 rollouts: never more than 3 slots taken, never a dynamic server."""
    proxy = start_haproxy(BackendConfig("web", slots=5, health_path="/healthz", stock=True))
    for round_number in range(6):
        version = ("1.0", "2.0")[round_number % 2]
        # The first round lets only HAProxy's own (stock, slow) checks decide when traffic starts.
        trust = {} if round_number else {"balancer": dict(balancer(proxy), trust_gate=False)}
        result = project.run([rollout_task(web_api, stubborn[version], proxy, replicas=2, stop_timeout=1,
                                           container={"labels": {"round": str(round_number)}}, **trust)])["rollout"]
        assert result["changed"] and result["generation"] == round_number + 1, result.get("msg")
        assert_balancer_is_the_hosts(docker_client, proxy, result["live"])
        assert len([row for row in servers(proxy) if row[3] != "maint"]) == 2


def test_a_revert_does_not_wait_for_the_stop_of_the_host_it_puts_back(project, docker_client, stubborn, web_api,
                                                                      stock, tmp_path):
    """Batch 1 swapped (its old host ignores SIGTERM), batch 2's new host dies in its gate: the revert puts
    the first old host back at once instead of after stop_timeout, and drops no request."""
    live = project.run([rollout_task(web_api, stubborn["1.0"], stock, stop_timeout=STOP_TIMEOUT)])["rollout"]["live"]
    slow = {"http_path": "/healthz", "timeout": 30, "interval": 0.5, "healthy_threshold": 6}
    with SteadyLoad(stock.url(), rate=100, max_seconds=120) as load:
        started = time.monotonic()
        process = run_in_background(str(tmp_path), rollout_task(web_api, stubborn["2.0"], stock, health=slow,
                                                                stop_timeout=STOP_TIMEOUT))
        wait_for_container(docker_client, f"{web_api}-2-2")
        docker_client.containers.get(f"{web_api}-2-2").kill()
        output = process.communicate(timeout=120)[0]
        took = time.monotonic() - started
        time.sleep(0.3)
    assert process.returncode != 0 and "rolled back" in output, output[-2000:]
    assert f"finishing the stop of {web_api}-1-1 before starting it again" in output
    assert took < STOP_TIMEOUT, took
    assert load.summary()["failed"] == 0, load.summary()
    assert running(docker_client, web_api) == live
    assert_balancer_is_the_hosts(docker_client, stock, live)
