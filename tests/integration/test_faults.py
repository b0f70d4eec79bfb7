"""Fault trials under steady load: simultaneous controllers, killed controllers, hosts killed behind the
rollout's back. Each trial ends with the whole end state checked (hosts, balancer servers = live
hosts, no orphans, no lock, no lease, no journal) and 0 failed requests.

The short form runs in `make test`; `make faults` sets IMMUTABLE_INFRA_FAULTS=long for the long one
(more pairs and kills). Results are written up in docs/design/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial

import docker
import pytest
from engines_support import rig_description
from haproxy_support import restart_forgetting_servers
from rollout_support import IGNORING_SIGTERM, SteadyLoad, rollout_task
from support import listed, remove_listed, skip_unless_required
from test_rollout import in_balancer, kill_controller

pytestmark = pytest.mark.faults
LONG = os.environ.get("IMMUTABLE_INFRA_FAULTS") == "long"
PAIRS = 20 if LONG else 3
KILLS = 20 if LONG else 3
ROLLBACK_KILLS = 20
HEAL_KILLS = 20 if LONG else 1
MANY = 10 ** 6  # requests: the load is bounded by time in these trials
# make test has a time budget: these trials run in the long form only
long_only = pytest.mark.skipif(not LONG, reason="in the long fault suite only (make faults)")
GATE = """
import os, sys, time
open(sys.argv[1], "w").close()
deadline = time.time() + 120
while not os.path.exists(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.002)
"""


@pytest.fixture(scope="module")
def hello(shared_hello):
    return shared_hello({"1.0": {}, "2.0": {}})


@pytest.fixture(scope="module")
def stubborn(shared_hello):
    """Versions whose server ignores SIGTERM, so every stop takes the whole stop_timeout and is still under
    way in the engine when a controller dies right after sending it."""
    return shared_hello(dict.fromkeys(("1.0", "2.0"), IGNORING_SIGTERM))


def assert_consistent(docker_client, proxy, service, live):
    """The end state every trial must reach: exactly `live` runs and is in the balancer at its address,
    other hosts are kept stopped (never half-made), and no lock, lease or journal is left.
    docker_client: the engine the service runs on."""
    def hosts():
        return listed(docker_client, label=f"immutable.infra.service={service}")

    # Retired hosts left their balancer first; the engine may still be stopping those that ignore
    # SIGTERM (they are recorded as stopping), for stop_timeout at most.
    def only_live_run():
        return sorted(c.name for c in hosts() if c.status == "running") == sorted(live)

    wait_until(only_live_run, 15, f"exactly {sorted(live)} running")
    containers = hosts()
    orphans = [f"{container.name} ({container.status})" for container in containers
               if container.status not in ("running", "exited")]
    assert not orphans, f"hosts neither live nor kept: {orphans}"
    addresses = {container.address for container in containers if container.name in live}
    members = in_balancer(proxy)
    assert {address for address, _state in members.values()} == addresses, members
    assert all(state == "ready" for _address, state in members.values()), members
    assert len(members) == len(live), members
    assert not lock_of(docker_client, service)
    # (immutable-infra-stopping-<service> may remain: hosts the engine is still stopping, which is not a fault)
    for prefix in ("immutable-infra-rollout-", "immutable-infra-lease-", "immutable-infra-stopnote-"):
        assert not docker_client.volumes.list(filters={"name": f"{prefix}{service}"}), f"{prefix}{service}* left"


def lock_of(client, service):
    """The service's lock container(s), listed without inspecting (a lock may go between list and inspect)."""
    return client.api.containers(all=True, filters={"name": f"immutable-infra-lock-{service}"})


def playbook_with_gate(directory, task, ready, go, result_path):
    """A playbook that waits at a gate (ready file written, go file awaited), runs the task and saves its
    result, so two controllers reach the task at the same moment."""
    path = os.path.join(directory, f"gated-{time.monotonic_ns()}.yml")
    tasks = [{"name": "gate", "ansible.builtin.command": {"argv": [sys.executable, "-c", GATE, ready, go]}},
             dict(task, register="outcome", ignore_errors=True),
             {"name": "save", "ansible.builtin.copy": {"content": "{{ outcome | to_json }}", "dest": result_path,
                                                       "mode": "0644"}}]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], handle)
    return path


def simultaneous(directory, tasks):
    """Runs each task in its own ansible-playbook, all released from a gate at once; returns their results."""
    go = os.path.join(directory, f"go-{time.monotonic_ns()}")
    runs = []
    for number, task in enumerate(tasks):
        ready, result = os.path.join(directory, f"{os.path.basename(go)}-ready-{number}"), \
            os.path.join(directory, f"{os.path.basename(go)}-result-{number}.json")
        playbook = playbook_with_gate(directory, task, ready, go, result)
        process = subprocess.Popen([sys.executable, "-m", "ansible.cli.playbook", playbook], cwd=directory,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs.append((ready, result, process))
    deadline = time.monotonic() + 120
    while not all(os.path.exists(ready) for ready, _result, _process in runs):
        assert time.monotonic() < deadline, "the controllers never reached the gate"
        time.sleep(0.01)
    open(go, "w", encoding="utf-8").close()
    outputs = [process.communicate(timeout=300)[0] for _ready, _result, process in runs]
    results = []
    for (_ready, result, _process), output in zip(runs, outputs, strict=True):
        assert os.path.exists(result), output[-3000:]
        with open(result, encoding="utf-8") as handle:
            results.append(json.load(handle))
    return results, outputs


def test_two_controllers_starting_together_never_both_proceed(docker_client, hello, service, proxy, tmp_path,
                                                              project):
    slow = {"http_path": "/healthz", "timeout": 20, "interval": 0.3, "healthy_threshold": 3}
    first = project.run([rollout_task(service, hello["1.0"], proxy, replicas=2, health=slow)])["rollout"]
    assert first["changed"], first.get("msg")
    live = first["live"]
    with SteadyLoad(proxy.url(), rate=40, max_seconds=60 * PAIRS, max_requests=MANY) as load:
        for pair in range(PAIRS):
            image = hello["2.0" if pair % 2 == 0 else "1.0"]
            task = rollout_task(service, image, proxy, replicas=2, health=slow)
            results, outputs = simultaneous(str(tmp_path), [task, task])
            proceeded = [result for result in results if not result.get("failed")]
            refused = [result for result in results if result.get("failed")]
            assert len(proceeded) == 1 and len(refused) == 1, (pair, [r.get("msg") for r in results], outputs)
            winner, loser = proceeded[0], refused[0]
            assert winner["changed"], winner.get("msg")
            assert f"Another rollout of service {service} is in progress (rollout {winner['rollout_id']} by " in \
                loser["msg"], loser["msg"]
            assert "None" not in loser["msg"], loser["msg"]
            assert all(f"{service}-" not in line for line in outputs[results.index(loser)].splitlines()
                       if ": batch " in line), "the refused controller printed plan steps"
            live = winner["live"]
            assert_consistent(docker_client, proxy, service, live)
        time.sleep(0.3)
    summary = load.summary()
    print(f"{PAIRS} pairs: {PAIRS} refused with the holder named; load {summary}")
    assert summary["failed"] == 0, summary


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def background(directory, task):
    path = os.path.join(directory, f"background-{time.monotonic_ns()}.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}], handle)
    return subprocess.Popen([sys.executable, "-m", "ansible.cli.playbook", path], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_controller_killed_mid_rollout_leaves_nothing_a_rerun_cannot_undo(docker_client, stubborn, service, proxy,
                                                                            tmp_path, project):
    """Whole-controller SIGKILLs at random points of a rollout of hosts that ignore SIGTERM (so stops
    the dead controller sent are still under way); the first kill lands right after a stop was sent."""
    health = {"http_path": "/healthz", "timeout": 20, "interval": 0.2, "healthy_threshold": 2}
    options = {"health": health, "stop_timeout": 4, "drain_timeout": 2}
    live = project.run([rollout_task(service, stubborn["1.0"], proxy, **options)])["rollout"]["live"]
    chooser = random.Random(int(os.environ.get("IMMUTABLE_INFRA_FAULTS_SEED", "10")))
    recovered = 0
    with SteadyLoad(proxy.url(), rate=40, max_seconds=90 * KILLS, max_requests=MANY) as load:
        for trial in range(KILLS):
            target = stubborn["2.0" if trial % 2 == 0 else "1.0"]
            task = rollout_task(service, target, proxy, **options)
            process = background(str(tmp_path), task)
            if trial == 0:
                wait_until(lambda: docker_client.volumes.list(filters={"name": f"immutable-infra-stopnote-{service}"}),
                           120, "the first stop")
            else:
                wait_until(lambda: lock_of(docker_client, service), 120, "the lock")
                time.sleep(chooser.uniform(0, 8))
            kill_controller(process.pid)
            process.wait()
            if trial == 0:  # a journal is left: check mode says a run undoes it first
                checked = project.run([task], check=True)["rollout"]
                assert checked["changed"] and "undoes a run that did not finish" in checked["msg"], checked.get("msg")
            rerun = project.run([task])["rollout"]
            assert not rerun.get("failed"), rerun.get("msg")
            recovered += bool(rerun.get("recovered"))
            assert len(rerun["live"]) == 3
            live = rerun["live"]
            assert_consistent(docker_client, proxy, service, live)
        time.sleep(0.3)
    summary = load.summary()
    print(f"{KILLS} controller kills, {recovered} recovered from the journal; load {summary}")
    assert recovered >= 1
    assert summary["failed"] == 0, summary


def test_the_stale_stop_of_a_dead_controller_never_lands_after_the_recovery(docker_client, stubborn, service, proxy,
                                                                            tmp_path, project):
    health = {"http_path": "/healthz", "timeout": 20, "interval": 0.2}
    options = {"health": health, "stop_timeout": 6, "drain_timeout": 2, "replicas": 2}
    first = project.run([rollout_task(service, stubborn["1.0"], proxy, **options)])["rollout"]
    process = background(str(tmp_path), rollout_task(service, stubborn["2.0"], proxy, **options))
    wait_until(lambda: docker_client.volumes.list(filters={"name": f"immutable-infra-stopnote-{service}"}), 120,
               "the first stop")
    kill_controller(process.pid)
    process.wait()
    with SteadyLoad(proxy.url(), rate=40, max_seconds=60) as load:
        recovery = project.run([rollout_task(service, stubborn["1.0"], proxy, **options)])["rollout"]
        time.sleep(8)  # longer than the dead controller's stop could still take
    assert not recovery.get("failed"), recovery.get("msg")
    assert recovery.get("recovered") and recovery["live"] == first["live"], recovery
    assert_consistent(docker_client, proxy, service, first["live"])
    assert load.summary()["failed"] == 0, load.summary()


def drift_task(service, proxy, heal=False):
    return {"name": "drift", "immutable.infra.drift": {
        "service": service, "heal": heal, "balancer": {"runtime_api": proxy.runtime_api, "backend": "web"}}}


def test_hosts_that_moved_or_died_behind_the_rollouts_back_are_reconciled_first(docker_client, hello, service, proxy,
                                                                                project, base_image):
    """A host given a new address (as an engine restart without live-restore does) is registered again, not
    replaced; a live host killed with `docker kill` is removed and replaced; drift reports both first."""
    first = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]
    moved, killed = docker_client.containers.get(first["live"][0]), docker_client.containers.get(first["live"][1])
    bridge = docker_client.networks.get("bridge")
    old_address = moved.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    bridge.disconnect(moved)
    # The engine hands a freed address out again first: a placeholder takes it, so the host gets a new one.
    placeholder = docker_client.containers.run(base_image.id, ["sleep", "600"], detach=True,
                                               name=f"{service}-placeholder", labels={"test": service})
    try:
        bridge.connect(moved)
    finally:
        placeholder.remove(force=True)
    moved.reload()
    assert moved.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] != old_address
    killed.kill()

    report = project.run([drift_task(service, proxy)])["drift"]
    assert not report["changed"], report
    assert f"{moved.name} runs but is not in the balancer" in report["balancer_mismatch"], report
    assert f"{killed.name} of the live generation has exited" in report["balancer_mismatch"], report
    assert any("points at no running host" in problem for problem in report["balancer_mismatch"]), report
    assert "the balancer does not match the hosts" in report["msg"]

    with SteadyLoad(proxy.url(), rate=40, max_seconds=60) as load:
        repaired = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]
        time.sleep(0.3)
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["reconciled"]["registered"] == [moved.name], repaired
    assert repaired["reconciled"]["removed"] == [killed.name], repaired
    assert repaired["kind"] == "scale" and repaired["added"] == [f"{service}-1-4"], repaired
    assert sorted(repaired["live"]) == sorted([first["live"][0], first["live"][2], f"{service}-1-4"])
    assert_consistent(docker_client, proxy, service, repaired["live"])
    assert load.summary()["failed"] == 0, load.summary()
    assert project.run([drift_task(service, proxy)])["drift"]["balancer_mismatch"] == []
    records = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    record = [entry for entry in records if entry.get("kind") == "reconcile" and entry.get("service") == service][-1]
    assert record["result"] == "succeeded" and record["registered"] == [moved.name]


def test_a_cancelled_job_stops_its_worker_which_reverts_instead_of_finishing(docker_client, hello, service, proxy,
                                                                             tmp_path, project):
    """SIGKILL of ansible-playbook's process group (a CI cancel) does not reach the action's worker, which
    ansible-core puts in a session of its own; the worker notices its parent is gone and reverts."""
    slow = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 6}
    live = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]["live"]
    process = background(str(tmp_path), rollout_task(service, hello["2.0"], proxy, health=slow))
    wait_until(lambda: docker_client.api.containers(filters={"name": f"^{service}-2-1$", "status": "running"}), 120,
               "the first new host")
    with SteadyLoad(proxy.url(), rate=40, max_seconds=60) as load:
        os.killpg(process.pid, 9)
        process.wait()
        wait_until(lambda: not lock_of(docker_client, service), 30, "the orphaned worker's revert")
    assert_consistent(docker_client, proxy, service, live)
    assert not [name for name in (c.name for c in docker_client.containers.list(
        all=True, filters={"label": f"immutable.infra.service={service}"})) if name.startswith(f"{service}-2-")]
    records = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    record = [entry for entry in records if entry.get("kind") == "rollout" and entry.get("service") == service][-1]
    assert record["result"] == "rolled back" and "is gone" in record["error"], record
    assert load.summary()["failed"] == 0, load.summary()


def rollback_task(service, proxy, **options):
    arguments = {"service": service, "balancer": {"runtime_api": proxy.runtime_api, "backend": "web"},
                 "drain_timeout": 2, "stop_timeout": 4}
    arguments.update(options)
    return {"name": "rollback", "immutable.infra.rollback": arguments}


def service_hosts(client, service):
    return listed(client, label=f"immutable.infra.service={service}")


@long_only
def test_a_controller_killed_mid_rollback_leaves_nothing_a_rerun_cannot_undo(docker_client, stubborn, service, proxy,
                                                                             tmp_path, project):
    """Whole-controller SIGKILLs at random points of a rollback (a restore of the kept generation, to revision 1
    and 2 in turn); the rerun of the same rollback undoes it from the journal and finishes it."""
    health = {"http_path": "/healthz", "timeout": 20, "interval": 0.2, "healthy_threshold": 2}
    options = {"health": health, "stop_timeout": 4, "drain_timeout": 2}
    for version in ("1.0", "2.0"):
        project.run([rollout_task(service, stubborn[version], proxy, **options)])
    chooser = random.Random(int(os.environ.get("IMMUTABLE_INFRA_FAULTS_SEED", "10")) + 1)
    recovered = 0
    with SteadyLoad(proxy.url(), rate=40, max_seconds=90 * ROLLBACK_KILLS, max_requests=MANY) as load:
        for trial in range(ROLLBACK_KILLS):
            revision = 1 + trial % 2  # revision 1 rolled out 1.0, revision 2 rolled out 2.0
            task = rollback_task(service, proxy, revision=revision)
            process = background(str(tmp_path), task)
            wait_until(lambda: lock_of(docker_client, service), 120, "the lock")
            time.sleep(chooser.uniform(0, 4))
            kill_controller(process.pid)
            process.wait()
            rerun = project.run([task])["rollback"]
            assert not rerun.get("failed"), rerun.get("msg")
            recovered += bool(rerun.get("recovered"))
            images = {c.name: c.image for c in service_hosts(docker_client, service)}
            assert len(rerun["live"]) == 3, rerun
            assert {images[name] for name in rerun["live"]} == {stubborn[f"{revision}.0"]}, (rerun["live"], images)
            assert_consistent(docker_client, proxy, service, rerun["live"])
        time.sleep(0.3)
    summary = load.summary()
    print(f"{ROLLBACK_KILLS} rollback kills, {recovered} recovered from the journal; load {summary}")
    assert summary["failed"] == 0, summary


def drift_into(client, name):
    client.containers.get(name).exec_run(["sh", "-c", "echo changed-in-place > /etc/hello/drifted"], user="root")


def test_a_controller_killed_mid_heal_leaves_nothing_behind(docker_client, hello, service, proxy, tmp_path, project):
    """Whole-controller SIGKILLs at random points of a heal; the heal's journal lets the rerun undo the
    replacement (or keep it, once the drifted host is gone): 3 live hosts, none drifted, nothing left."""
    options = {"drain_timeout": 2, "stop_timeout": 2}
    live = project.run([rollout_task(service, hello["1.0"], proxy, **options)])["rollout"]["live"]
    heal = dict(drift_task(service, proxy, heal=True))
    heal["immutable.infra.drift"] = dict(heal["immutable.infra.drift"], **options)
    chooser = random.Random(int(os.environ.get("IMMUTABLE_INFRA_FAULTS_SEED", "10")) + 2)
    recovered = 0
    with SteadyLoad(proxy.url(), rate=40, max_seconds=90 * HEAL_KILLS, max_requests=MANY) as load:
        for trial in range(HEAL_KILLS):
            drift_into(docker_client, live[trial % len(live)])
            process = background(str(tmp_path), heal)
            wait_until(lambda: lock_of(docker_client, service), 120, "the lock")
            time.sleep(chooser.uniform(0, 4))
            kill_controller(process.pid)
            process.wait()
            rerun = project.run([heal])
            report = rerun["drift"]
            assert not report.get("failed"), report.get("msg")
            recovered += "did not finish" in rerun.output
            running = sorted(c.name for c in service_hosts(docker_client, service) if c.status == "running")
            assert len(running) == 3, running
            assert_consistent(docker_client, proxy, service, running)
            after = project.run([drift_task(service, proxy)])["drift"]
            assert after["drifted"] == [] and after["balancer_mismatch"] == [], after
            live = running
        time.sleep(0.3)
    summary = load.summary()
    print(f"{HEAL_KILLS} heal kills, {recovered} undone or kept from the heal's journal; load {summary}")
    assert summary["failed"] == 0, summary


def test_haproxy_reloaded_mid_rollout_drops_nothing_and_the_rollout_finishes(docker_client, hello, service, proxy,
                                                                             tmp_path, project):
    """HAProxy reloaded the way a service manager does it (servers saved to its server-state file, the new
    process takes the sockets over) once in each batch of a rollout. A change the rollout made between the
    save and the new process starting is lost with the old process: the rollout registers such a host again
    (when it lets it in, before its next batch, and in its check at the end), so it finishes by itself."""
    slow = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 4}
    project.run([rollout_task(service, hello["1.0"], proxy)])
    with SteadyLoad(proxy.url(), rate=40, max_seconds=120, max_requests=MANY) as during:
        process = background(str(tmp_path), rollout_task(service, hello["2.0"], proxy, health=slow))
        reloads = []
        for index in (1, 2, 3):
            wait_until(partial(docker_client.api.containers, all=True, filters={"name": f"^{service}-2-{index}$"}),
                       120, f"new host {index}")
            # A slow reload: the state is saved as the new host is created, and the new process starts a
            # second later, after the host was registered and before the gate lets it in.
            proxy.save_server_state()
            time.sleep(1)
            proxy.reload_in_place(save_state=False)
            reloads.append(time.monotonic())
        output = process.communicate(timeout=300)[0]
        finished = time.monotonic()
    print(f"haproxy reloaded {len(reloads)} times mid-rollout; the rollout finished {finished - reloads[-1]:.1f} s "
          f"after the last reload; load {during.summary()}")
    print("\n".join(line for line in output.splitlines() if "lost its server" in line or "reconcile" in line))
    assert process.returncode == 0, output[-3000:]
    assert_consistent(docker_client, proxy, service, [f"{service}-2-{index}" for index in (1, 2, 3)])
    assert during.summary()["failed"] == 0, during.summary()


@long_only
def test_haproxy_restarted_without_its_servers_mid_rollout_is_reconciled(docker_client, hello, service, proxy,
                                                                         tmp_path, project):
    """HAProxy started afresh from its config (no server state) while a rollout runs: every server the
    rollout and the ones before it registered is gone. The rollout, or the next run, registers the live hosts
    again; requests fail only until then."""
    slow = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 6}
    project.run([rollout_task(service, hello["1.0"], proxy)])
    task = rollout_task(service, hello["2.0"], proxy, health=slow)
    with SteadyLoad(proxy.url(), rate=40, max_seconds=120, max_requests=MANY) as during:
        process = background(str(tmp_path), task)
        wait_until(lambda: docker_client.api.containers(filters={"name": f"^{service}-2-1$", "status": "running"}),
                   120, "the first new host")
        restarted = time.monotonic()
        restart_forgetting_servers(proxy)
        output = process.communicate(timeout=300)[0]
        first_ended = time.monotonic()
        repaired = project.run([task])["rollout"]
        repaired_after = time.monotonic() - restarted
    assert not repaired.get("failed"), (repaired.get("msg"), output[-3000:])
    assert_consistent(docker_client, proxy, service, repaired["live"])
    with SteadyLoad(proxy.url(), rate=40, max_seconds=60, max_requests=MANY) as after:
        time.sleep(5)
    print(f"haproxy restart mid-rollout: first run {'failed' if 'FAILED' in output else 'finished'} "
          f"{first_ended - restarted:.1f} s after the restart; repaired {repaired_after:.1f} s after it "
          f"(reconciled: {repaired.get('reconciled')}, recovered: {repaired.get('recovered')}); "
          f"load during {during.summary()}, after {after.summary()}")
    print("\n".join(line for line in output.splitlines() if service in line and ("fail" in line or "revert" in line)))
    assert after.summary()["failed"] == 0, after.summary()
    assert sorted(repaired["live"]) == [f"{service}-2-{index}" for index in (1, 2, 3)], repaired


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM] if LONG else [signal.SIGINT],
                         ids=lambda number: signal.Signals(number).name)
def test_an_interrupted_rollout_shows_its_revert_and_returns_only_when_it_is_done(docker_client, hello, service, proxy,
                                                                                  tmp_path, project, signum):
    """Ctrl-C (SIGINT to ansible-playbook's process group, as a terminal sends it) or SIGTERM (to
    ansible-playbook alone, as `kill` or a CI runner sends it) mid-rollout: the command prints the revert and
    returns only once it is done; nothing of the rollout goes on after that."""
    slow = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 8}
    live = project.run([rollout_task(service, hello["1.0"], proxy)])["rollout"]["live"]
    with SteadyLoad(proxy.url(), rate=40, max_seconds=120, max_requests=MANY) as load:
        process = background(str(tmp_path), rollout_task(service, hello["2.0"], proxy, health=slow))
        wait_until(lambda: docker_client.api.containers(filters={"name": f"^{service}-2-1$", "status": "running"}),
                   120, "the first new host")
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        signalled = time.monotonic()
        output = process.communicate(timeout=300)[0]
        returned = time.monotonic() - signalled
        # at the moment the command returned, the revert is over: nothing left to finish
        leftovers = [c.name for c in service_hosts(docker_client, service) if c.name.startswith(f"{service}-2-")]
        lock = lock_of(docker_client, service)
    assert "waiting while it puts things back" in output, output[-3000:]
    assert "Reverting to" in output, output[-3000:]
    assert not leftovers and not lock, (leftovers, lock, output[-3000:])
    assert not os.path.exists(f"/tmp/immutable-infra-workers/{process.pid}"), "a worker is still inside its block"
    assert_consistent(docker_client, proxy, service, live)
    print(f"{signal.Signals(signum).name}: the command returned {returned:.1f} s after the signal, revert done; "
          f"load {load.summary()}; it printed:")
    print("\n".join(line for line in output.splitlines() if service in line or "User interrupted" in line))
    assert load.summary()["failed"] == 0, load.summary()


# engine restarts: on a rig engine (make engines), never on the machine's own engine, which others use ---------------
RIG_ENGINE = "rig1"


@pytest.fixture
def rig():
    """(scripts/engines.py's engine, a client of it) for the rig engine the engine-restart trials restart; it is
    left up (with live-restore) whatever the trial did."""
    import engines as rig_script  # scripts/engines.py  pylint: disable=import-outside-toplevel,import-error

    description = rig_description()
    if description is None:
        skip_unless_required("the engine rig is not up; run 'make engines'")
    engine = next((engine for engine in rig_script.engines() if engine.name == RIG_ENGINE), None)
    if engine is None:
        skip_unless_required(f"the rig has no engine {RIG_ENGINE}")
    rig_script.start_engine(engine)
    client = docker.DockerClient(base_url=f"unix://{engine.socket}", timeout=120)
    yield rig_script, engine, client
    rig_script.start_engine(engine)


@pytest.fixture
def rig_hello(rig, hello, docker_client):
    """The hello images on the rig engine (same IDs)."""
    _script, _engine, client = rig
    for image_id in hello.values():
        try:
            client.images.get(image_id)
        except docker.errors.ImageNotFound:
            client.images.load(docker_client.images.get(image_id).save())
    yield hello
    for image_id in hello.values():
        remove_listed(client, ancestor=image_id)
        client.images.remove(image_id, force=True)


@pytest.fixture
def rig_service(rig):
    from rollout_support import remove_service  # pylint: disable=import-outside-toplevel

    name = f"e{os.urandom(4).hex()}"
    yield name
    remove_service(rig[2], name)


def restart_engine(rig_script, engine, live_restore=True, down_for=0.0):
    """Stops the rig engine (SIGTERM, as systemctl restart does) and starts it again, down_for seconds later;
    returns the seconds it was down. live_restore=False turns live-restore off first (dockerd reloads it on
    SIGHUP)."""
    if not live_restore:
        with open(os.path.join(engine.home, "daemon.json"), "w", encoding="utf-8") as handle:
            handle.write('{"live-restore": false}\n')
        with open(engine.pidfile, encoding="ascii") as handle:
            os.kill(int(handle.read().strip()), signal.SIGHUP)
        client = docker.DockerClient(base_url=f"unix://{engine.socket}")
        wait_until(lambda: not client.info()["LiveRestoreEnabled"], 10, "live-restore off")
    stopped = time.monotonic()
    rig_script.stop_engine(engine)
    time.sleep(down_for)
    rig_script.start_engine(engine)  # with live-restore again
    return time.monotonic() - stopped


def rig_task(task, engine):
    """The task against the rig engine; the images there carry no verdict (it is recorded on the main engine)."""
    module = next(key for key in task if key.startswith("immutable.infra."))
    arguments = dict(task[module], docker_host=f"unix://{engine.socket}")
    if module == "immutable.infra.rollout":
        arguments["require_verified"] = False
    return dict(task, **{module: arguments})


def kept_generation(client, service, generation):
    return sorted(c.name for c in service_hosts(client, service) if c.name.startswith(f"{service}-{generation}-"))


def test_an_idle_engine_restart_with_live_restore_drops_nothing(rig, rig_hello, rig_service, proxy, project):
    script, engine, client = rig
    for version in ("1.0", "2.0"):
        live = project.run([rig_task(rollout_task(rig_service, rig_hello[version], proxy), engine)])["rollout"]
        assert not live.get("failed"), live.get("msg")
    kept = kept_generation(client, rig_service, 1)
    with SteadyLoad(proxy.url(), rate=40, max_seconds=120, max_requests=MANY) as load:
        down = restart_engine(script, engine)
        time.sleep(2)
    report = project.run([rig_task(drift_task(rig_service, proxy), engine)])["drift"]
    again = project.run([rig_task(rollout_task(rig_service, rig_hello["2.0"], proxy), engine)])["rollout"]
    print(f"idle engine restart with live-restore: engine down {down:.1f} s; load {load.summary()}")
    assert load.summary()["failed"] == 0, load.summary()
    assert report["balancer_mismatch"] == [], report
    assert not again["changed"] and again["live"] == live["live"], again
    assert kept_generation(client, rig_service, 1) == kept
    assert_consistent(client, proxy, rig_service, live["live"])


@long_only
def test_an_idle_engine_restart_without_live_restore_is_repaired_by_the_next_run(rig, rig_hello, rig_service, proxy,
                                                                                 project):
    """Without live-restore the engine stops every host and starts them again at startup (restart policy),
    perhaps at new addresses: requests fail from the stop until the next run, which re-registers the healthy
    hosts it finds instead of replacing them, and keeps the kept generation."""
    script, engine, client = rig
    for version in ("1.0", "2.0"):
        live = project.run([rig_task(rollout_task(rig_service, rig_hello[version], proxy), engine)])["rollout"]
    kept = kept_generation(client, rig_service, 1)
    with SteadyLoad(proxy.url(), rate=40, max_seconds=120, max_requests=MANY) as during:
        down = restart_engine(script, engine, live_restore=False)
        wait_until(lambda: sorted(c.name for c in service_hosts(client, rig_service) if c.status == "running")
                   == sorted(live["live"]), 60, "the hosts started again by the engine")
        report = project.run([rig_task(drift_task(rig_service, proxy), engine)])["drift"]
        repaired_at = time.monotonic()
        repaired = project.run([rig_task(rollout_task(rig_service, rig_hello["2.0"], proxy), engine)])["rollout"]
        repair_seconds = time.monotonic() - repaired_at
    with SteadyLoad(proxy.url(), rate=40, max_seconds=60, max_requests=MANY) as after:
        time.sleep(5)
    print(f"idle engine restart without live-restore: engine down {down:.1f} s; drift reported "
          f"{report['balancer_mismatch']}; the next rollout re-registered {repaired.get('reconciled')} in "
          f"{repair_seconds:.1f} s; load until then {during.summary()}, after {after.summary()}")
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["live"] == live["live"] and repaired["added"] == [], repaired  # re-registered, not replaced
    # the hosts the engine started at a new address are registered again (one may get its old address back)
    assert set((repaired.get("reconciled") or {}).get("registered", [])) <= set(live["live"]), repaired
    assert kept_generation(client, rig_service, 1) == kept
    assert_consistent(client, proxy, rig_service, live["live"])
    assert after.summary()["failed"] == 0, after.summary()


@long_only
def test_an_engine_restart_mid_rollout_with_live_restore_drops_nothing_and_the_next_run_recovers(
        rig, rig_hello, rig_service, proxy, tmp_path, project):
    script, engine, client = rig
    slow = {"http_path": "/healthz", "timeout": 30, "interval": 0.3, "healthy_threshold": 6}
    first = project.run([rig_task(rollout_task(rig_service, rig_hello["1.0"], proxy), engine)])["rollout"]
    task = rig_task(rollout_task(rig_service, rig_hello["2.0"], proxy, health=slow), engine)
    with SteadyLoad(proxy.url(), rate=40, max_seconds=180, max_requests=MANY) as load:
        process = background(str(tmp_path), task)
        wait_until(lambda: client.api.containers(filters={"name": f"^{rig_service}-2-1$", "status": "running"}),
                   120, "the first new host")
        down = restart_engine(script, engine, down_for=5)  # longer than the gate: the rollout's next call fails
        output = process.communicate(timeout=300)[0]
        rerun = project.run([task])["rollout"]
        time.sleep(0.5)
    print(f"engine restart mid-rollout with live-restore: engine down {down:.1f} s; the rollout "
          f"{'stopped' if 'stopped answering' in output else 'went on'}; rerun recovered={rerun.get('recovered')}; "
          f"load {load.summary()}")
    print("\n".join(line for line in output.splitlines() if "stopped answering" in line))
    # a sentence, not a raw exception ("Task failed: ('Connection aborted.', ...)" before)
    assert "Task failed: (" not in output and "Traceback" not in output, output[-3000:]
    if "FAILED" in output:  # stopped for the next run, or reverted at once when the engine answered again in time
        assert "stopped answering" in output and ("the next run" in output or (
            "answers again on a new connection" in output and "was rolled back" in output)), output[-3000:]
    assert not rerun.get("failed"), rerun.get("msg")
    images = {c.name: c.image for c in service_hosts(client, rig_service)}
    assert len(rerun["live"]) == 3 and {images[name] for name in rerun["live"]} == {rig_hello["2.0"]}, rerun
    assert_consistent(client, proxy, rig_service, rerun["live"])
    assert kept_generation(client, rig_service, 1) == sorted(first["live"])
    assert load.summary()["failed"] == 0, load.summary()
