"""The rollout benchmark: 10 hosts of the example hello service replaced under steady load, six ways.

Two versions of the hello role are baked with immutable.infra.bake and verified with
immutable.infra.verify (bench/rollout-release.yml). One HAProxy on 127.0.0.1 fronts five fleets of
10 hosts each, one backend and one frontend per fleet, all checked with GET /healthz every 100 ms
(rise 1, fall 2). Every round, each approach replaces its 10 hosts running version A with 10 running
version B (A and B swap every round) while scripts/steady_load.py sends LOAD_RATE requests per
second to that approach's frontend and counts the ones that fail:

rolling     immutable.infra.rollout, strategy rolling, batch_size 1, health GET /healthz every 0.1 s,
            defaults otherwise, in a real ansible-playbook run (bench/rollout-ours.yml); the backend
            has 20 server-template slots as docs/haproxy.md describes
blue_green  the same with strategy blue_green
wrk         the same rolling rollout in a fleet of its own, under Debian's wrk instead of the steady load:
            WRK_CONNECTIONS keep-alive connections through HAProxy, each sending its next request as soon
            as the last is answered (what the service can take); wrk runs WRK_STEADY seconds before the
            swap (steady state) and again from 1 s before the swap to 0.5 s after it, and the two p99
            latencies, socket errors and non-2xx answers are compared
compose     Debian's docker-compose (v1): 10 services at fixed addresses on a user-defined network,
            the image tag switched, `docker-compose up -d --force-recreate`; 10 static HAProxy servers
loop        a naive playbook (bench/rollout-loop.yml): serial 1 over 10 inventory hosts,
            community.docker.docker_container recreate at the same fixed address, then wait_for the
            port; 10 static HAProxy servers
loop_stop1  the same loop with stop_timeout: 1 (Docker kills the old container after 1 s, not 10 s)
floor       10 fresh containers of the new image started one after another with the Docker SDK, each
            followed by polling its /healthz every 20 ms until the first 200 (the load goes to the
            rolling fleet meanwhile); they are removed afterwards, not timed
wrk_floor   the floor again under wrk on the wrk fleet, with the removal of its 10 containers inside the
            wrk window: the engine starts and stops as many containers as the rollout does, none of them
            in the balancer. Not an approach: it shows what that engine work alone does to the wrk fleet's
            p99 on this machine, beside what the swap does

For compose and the loops the time runs until HAProxy reports all 10 servers up again. The order
of the approaches rotates by one place per round. Every container, image, volume and network made
here carries the name prefix bench- (rollout hosts: bench_) or the
label immutable-infra.bench=<run id>, and is removed at the end with the HAProxy process, however
the benchmark ends.

Usage: .venv/bin/python bench/run.py rollout [--runs N] [--base IMAGE]
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from measure import (
    BENCH_DIR,
    COLLECTIONS_PATH,
    HAPROXY,
    LABEL_KEY,
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    Timed,
    WrkLoad,
    bench_env,
    command_version,
    ensure_base_image,
    ensure_collection_link,
    ensure_debian_package,
    first_200,
    free_port,
    machine_busy,
    machine_facts,
    marks_from_lines,
    phases,
    play_results,
    remove_labelled,
    retry_cleanup,
    routed_subnets,
    run_checked,
    run_timed,
    say,
    server_stats,
    servers_up,
    start_haproxy_process,
    stop_haproxy,
    summary,
)

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

from steady_load import SteadyLoad  # pylint: disable=wrong-import-position

ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
DEMO = os.path.join(REPO_ROOT, "examples", "demo")

REPLICAS = 10
PORT = 8000
VERSIONS = ("1.0", "2.0")
SLOTS = 2 * REPLICAS
SERVER_CHECK = "inter 100ms rise 1 fall 2"
LOAD_RATE = 150.0
LOAD_LEAD_IN = 1.0  # seconds of load before an approach starts
LOAD_TAIL = 0.5  # and after it is done
UP_TIMEOUT = 120.0
HEALTH_TIMEOUT = 60.0
FLOOR_POLL = 0.02
APPROACHES = ("rolling", "blue_green", "wrk", "compose", "loop", "loop_stop1", "floor", "wrk_floor")
UNDER_WRK = ("wrk", "wrk_floor")
BACKENDS = ("rolling", "blue_green", "wrk", "compose", "loop", "loop_stop1")
LOOPS = {"loop": None, "loop_stop1": 1}  # the naive loop, and the same with docker_container's stop_timeout: 1
OURS = ("rolling", "blue_green", "wrk")
SERVICES = {"rolling": "rolling", "blue_green": "bg", "wrk": "wrk"}
STRATEGY = {"rolling": "rolling", "blue_green": "blue_green", "wrk": "rolling"}
WRK_CONNECTIONS = 16
WRK_STEADY = 5.0
STATIC = {"compose": 11, "loop": 31, "loop_stop1": 51}  # first host address of each static fleet in the benchmark's /24
OURS_PATTERNS = {"ledger record, journal": r": rollout to generation \d+", "step": r" gen \d+: batch \d+: (\w+) ",
                 "retention, ledger, lock": r"removing hosts beyond keep_previous", "end": r"^\{$"}
LOOP_PATTERNS = {"next host": r"^PLAY \[", "task": r"^TASK \[(.+?)\]", "end": r"^PLAY RECAP"}
STEP_ACTIONS = ("start", "wait_healthy", "add", "drain", "wait_drained", "detach", "stop")
OURS_PHASES = ("playbook start-up", "gate, observe, lock, plan", "ledger record, journal", *STEP_ACTIONS,
               "wait for the last stops", "retention, ledger, lock")
LOOP_PHASES = ("start-up", "next host", "Recreate the container", "Wait until the port answers", "end")


@dataclass
class Bench:
    """One benchmark run: its names, its network, its images and its HAProxy."""

    run_id: str
    base: str
    workdir: str
    subnet: str = ""
    images: dict[str, str] = field(default_factory=dict)  # version -> image ID
    ports: dict[str, int] = field(default_factory=dict)  # backend -> frontend port
    haproxy: subprocess.Popen | None = None

    @property
    def prefix(self) -> str:
        return f"bench-rollout-{self.run_id}"

    @property
    def network(self) -> str:
        return self.prefix

    @property
    def repository(self) -> str:
        return f"{self.prefix}/hello"

    @property
    def runtime_api(self) -> str:
        return os.path.join(self.workdir, "admin.sock")

    def service(self, approach: str) -> str:
        return f"bench_{self.run_id}_{SERVICES[approach]}"

    def tag(self, version: str) -> str:
        return f"{self.repository}:{version}"

    def static_ip(self, approach: str, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet)[STATIC[approach] + index - 1])

    def url(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.ports[backend]}/"

    def ansible_env(self) -> dict[str, str]:
        collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or COLLECTIONS_PATH
        return bench_env({"ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                          "IMMUTABLE_INFRA_LEDGER": os.path.join(self.workdir, "ledger.jsonl")})


# set-up ------------------------------------------------------------------------------------------
def ensure_prerequisites(base: str) -> None:
    ensure_base_image(base)
    if not os.path.exists(HAPROXY):
        raise BenchError("haproxy is not installed; run 'make setup' (or apt-get install haproxy)")
    if not os.environ.get("ANSIBLE_COLLECTIONS_PATH"):
        ensure_collection_link()
    ensure_debian_package("docker-compose", "docker-compose")
    ensure_debian_package("wrk", "wrk")


def used_subnets(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """The engine's networks and every subnet the host routes: a bridge on a subnet another engine's
    bridge holds would send the benchmark's traffic to the wrong one."""
    subnets = routed_subnets()
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet") and ":" not in config["Subnet"]:
                subnets.append(ipaddress.ip_network(config["Subnet"]))
    return subnets


def create_network(bench: Bench, client: docker.DockerClient) -> None:
    """A bridge network with a /24 of its own: fixed addresses low, addresses Docker hands out high."""
    used = used_subnets(client)
    for third in range(0, 256):
        subnet = ipaddress.ip_network(f"10.231.{third}.0/24")
        if any(subnet.overlaps(other) for other in used):
            continue
        pool = docker.types.IPAMPool(subnet=str(subnet), iprange=str(ipaddress.ip_network(f"10.231.{third}.128/25")))
        try:
            client.networks.create(bench.network, driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                                   labels={LABEL_KEY: bench.run_id})
        except APIError as error:
            if "overlap" in str(error):
                continue
            raise BenchError(f"docker could not create network {bench.network}: {error}") from None
        bench.subnet = str(subnet)
        return
    raise BenchError("no free /24 in 10.231.0.0/16 for the benchmark's network")


def release(bench: Bench) -> None:
    """Bakes and verifies both versions; tags them <repository>:<version> for compose and the loop."""
    extra_vars = {"bench_image": bench.repository, "bench_base": bench.base, "bench_label": bench.run_id,
                  "bench_roles_dir": os.path.join(DEMO, "roles"), "bench_versions": list(VERSIONS),
                  "bench_tests": os.path.join(DEMO, "tests", "test_hello.py"),
                  "bench_report_dir": os.path.join(bench.workdir, "reports")}
    timed = run_timed([ANSIBLE_PLAYBOOK, os.path.join(BENCH_DIR, "rollout-release.yml"), "-e", json.dumps(extra_vars)],
                      env=bench.ansible_env(), cwd=BENCH_DIR)
    results = play_results(timed)
    if timed.returncode != 0 or any(result.get("failed") for result in results):
        raise BenchError(f"baking or verifying hello failed:\n{timed.tail()}")
    for baked in results[0]["results"]:
        bench.images[baked["item"]] = baked["image_id"]
        run_checked(["docker", "tag", baked["image_id"], bench.tag(baked["item"])])
    for verified in results[1]["results"]:
        if not verified.get("passed"):
            raise BenchError(f"verify did not pass for {verified.get('image_id')}: {verified.get('msg')}")


# HAProxy ------------------------------------------------------------------------------------------
def backend_lines(bench: Bench, backend: str) -> list[str]:
    lines = [f"frontend fe_{backend}", f"    bind 127.0.0.1:{bench.ports[backend]}", f"    default_backend {backend}",
             "", f"backend {backend}", "    balance roundrobin", "    option httpchk GET /healthz",
             "    http-check expect status 200", f"    default-server {SERVER_CHECK}"]
    if backend in OURS:
        lines.append(f"    server-template slot 1-{SLOTS} parked.invalid:80 check disabled init-addr last,0.0.0.0")
    else:
        lines += [f"    server {backend}{index} {bench.static_ip(backend, index)}:{PORT} check"
                  for index in range(1, REPLICAS + 1)]
    return lines + [""]


def haproxy_config(bench: Bench) -> str:
    lines = ["global", f"    stats socket {bench.runtime_api} mode 600 level admin", "    stats timeout 10s",
             f"    server-state-file {bench.workdir}/server-state", "",
             "defaults", "    load-server-state-from-file global", "    mode http", "    timeout connect 1s",
             "    timeout client 10s", "    timeout server 10s", "    timeout check 1s", "    option redispatch",
             "    retries 3", ""]
    for backend in BACKENDS:
        lines += backend_lines(bench, backend)
    return "\n".join(lines)


def start_haproxy(bench: Bench) -> None:
    bench.ports = {backend: free_port() for backend in BACKENDS}
    config = os.path.join(bench.workdir, "haproxy.cfg")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(haproxy_config(bench))
    bench.haproxy = start_haproxy_process(config, bench.runtime_api, os.path.join(bench.workdir, "haproxy.log"))


def check_downs(bench: Bench, backend: str) -> int:
    """How many times HAProxy's checks have marked a server of the backend down so far."""
    return sum(int(row.get("chkdown") or 0) for row in server_stats(bench.runtime_api, backend))


def wait_all_up(bench: Bench, backend: str) -> float:
    """Seconds until HAProxy reports all REPLICAS servers of the backend UP (polled every 50 ms)."""
    started = time.monotonic()
    while servers_up(bench.runtime_api, backend) < REPLICAS:
        if time.monotonic() - started > UP_TIMEOUT:
            raise BenchError(f"HAProxy did not report {REPLICAS} servers of {backend} up within {UP_TIMEOUT:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


# the approaches ----------------------------------------------------------------------------------
def ours(bench: Bench, fleet: str, version: str, round_label: str) -> dict[str, Any]:
    """One immutable.infra.rollout of the fleet in ansible-playbook; every round's hosts carry the round in a
    label, so each round starts new hosts instead of restarting the generation kept stopped for rollback."""
    strategy = STRATEGY[fleet]
    extra_vars = {"bench_service": bench.service(fleet), "bench_image": bench.images[version],
                  "bench_strategy": strategy, "bench_network": bench.network, "bench_runtime_api": bench.runtime_api,
                  "bench_backend": fleet, "bench_labels": {LABEL_KEY: bench.run_id, f"{LABEL_KEY}.round": round_label}}
    timed = run_timed([ANSIBLE_PLAYBOOK, os.path.join(BENCH_DIR, "rollout-ours.yml"), "-e", json.dumps(extra_vars)],
                      env=bench.ansible_env(), cwd=BENCH_DIR)
    result = play_results(timed)[0]
    if timed.returncode != 0 or result.get("failed") or not result.get("changed"):
        raise BenchError(f"the {fleet} rollout to {version} failed: {result.get('msg')}\n{timed.tail()}")
    up = servers_up(bench.runtime_api, fleet)
    if up != REPLICAS:
        raise BenchError(f"after the {fleet} rollout HAProxy reports {up} servers up, not {REPLICAS}")
    return {"wall": round(timed.wall, 3), "task": result["duration"], "generation": result["generation"],
            "phases": ours_phases(timed, result["duration"]), "batches": batch_times(timed),
            "progress": [f"{offset:7.3f} {line.rstrip()}" for offset, line in timed.lines if " gen " in line
                         or "healthy after" in line or "keep_previous" in line]}


def ours_phases(timed: Timed, duration: float) -> dict[str, float]:
    """Seconds per phase of a rollout playbook: ansible-playbook's start-up, the task until it prints its
    plan, from there to the first step, each kind of step (all batches together), then what follows the
    last step. The task starts `duration` (its own measure) before its result is printed. The last step
    only hands the old host to a background stop, so what follows it is waiting for the stops, then
    (after the retention line, when old generations are removed) the journal, the ledger and the lock."""
    marks = marks_from_lines(timed, OURS_PATTERNS)
    steps = [index for index, (label, _seconds) in enumerate(marks) if label in STEP_ACTIONS]
    if steps:
        marks[steps[-1]] = ("wait for the last stops", marks[steps[-1]][1])
    end = next((seconds for label, seconds in marks if label == "end"), timed.wall)
    task_start = max(0.0, min(end - duration, marks[0][1] if marks else end))
    return phases([("playbook start-up", 0.0), ("gate, observe, lock, plan", task_start)] + marks, timed.wall)


def batch_times(timed: Timed) -> list[float]:
    """Seconds from the first step of each batch to the first step of the next (the last one to its stop step)."""
    starts: dict[int, float] = {}
    last = 0.0
    for offset, line in timed.lines:
        if " gen " in line and ": batch " in line:
            number = int(line.split(": batch ", 1)[1].split(":", 1)[0])
            starts.setdefault(number, offset)
            last = offset
    ordered = [starts[number] for number in sorted(starts)] + [last]
    return [round(after - before, 3) for before, after in itertools.pairwise(ordered)]


def compose_file(bench: Bench) -> str:
    services = {f"hello{index}": {
        "image": f"{bench.repository}:${{HELLO_VERSION}}", "container_name": f"{bench.prefix}-compose-{index}",
        "labels": {LABEL_KEY: bench.run_id},
        "networks": {"bench": {"ipv4_address": bench.static_ip("compose", index)}}}
        for index in range(1, REPLICAS + 1)}
    path = os.path.join(bench.workdir, "docker-compose.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"version": "2.4", "services": services,
                   "networks": {"bench": {"external": True, "name": bench.network}}}, handle, indent=2)
    return path


def compose(bench: Bench, version: str, force: bool = True) -> dict[str, Any]:
    command = ["docker-compose", "-f", os.path.join(bench.workdir, "docker-compose.yml"), "-p", bench.prefix,
               "up", "-d", *(["--force-recreate"] if force else [])]
    return naive(bench, "compose", command, bench_env({"HELLO_VERSION": version}))[0]


def loop_inventory(bench: Bench, approach: str) -> str:
    hosts = {f"{bench.prefix}-{approach}-{index}": {"bench_container": f"{bench.prefix}-{approach}-{index}",
                                                    "bench_ip": bench.static_ip(approach, index)}
             for index in range(1, REPLICAS + 1)}
    path = os.path.join(bench.workdir, f"{approach}-inventory.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"bench_loop": {"hosts": hosts, "vars": {
            "ansible_connection": "local", "ansible_python_interpreter": os.path.join(VENV_BIN, "python")}}}, handle)
    return path


def loop(bench: Bench, approach: str, version: str) -> dict[str, Any]:
    extra_vars: dict[str, Any] = {"bench_image": bench.tag(version), "bench_network": bench.network,
                                  "bench_label": bench.run_id}
    if LOOPS[approach] is not None:
        extra_vars["bench_stop_timeout"] = LOOPS[approach]
    command = [ANSIBLE_PLAYBOOK, "-i", os.path.join(bench.workdir, f"{approach}-inventory.yml"),
               os.path.join(BENCH_DIR, "rollout-loop.yml"), "-e", json.dumps(extra_vars)]
    env = bench.ansible_env()
    env.pop("ANSIBLE_STDOUT_CALLBACK")
    measured, timed = naive(bench, approach, command, env)
    marks = [("start-up", 0.0)] + marks_from_lines(timed, LOOP_PATTERNS)
    return dict(measured, phases=phases(marks, timed.wall))


def naive(bench: Bench, backend: str, command: list[str], env: dict[str, str]) -> tuple[dict[str, Any], Timed]:
    """Runs a naive rollout command, then waits until HAProxy reports all its servers up again."""
    downs = check_downs(bench, backend)
    timed = run_checked(command, env=env, cwd=bench.workdir)
    until_up = wait_all_up(bench, backend)
    return {"command": round(timed.wall, 3), "until_up": round(until_up, 3), "wall": round(timed.wall + until_up, 3),
            "check_downs": check_downs(bench, backend) - downs}, timed


def floor(bench: Bench, version: str, round_label: str) -> dict[str, Any]:
    """Starts REPLICAS containers of the version one after another, each until its first /healthz 200."""
    client = docker.from_env()
    started_seconds, healthy_seconds = [], []
    names = [f"{bench.prefix}-floor-{round_label}-{index}" for index in range(1, REPLICAS + 1)]
    try:
        started = time.monotonic()
        for name in names:
            host_started = time.monotonic()
            container = client.containers.run(bench.images[version], detach=True, name=name,
                                              labels={LABEL_KEY: bench.run_id}, network=bench.network)
            container.reload()
            address = container.attrs["NetworkSettings"]["Networks"][bench.network]["IPAddress"]
            running = time.monotonic()
            first_200(address, PORT, HEALTH_TIMEOUT, FLOOR_POLL)
            started_seconds.append(running - host_started)
            healthy_seconds.append(time.monotonic() - running)
        wall = time.monotonic() - started
    finally:
        for name in names:
            try:
                client.containers.get(name).remove(force=True)
            except NotFound:
                pass
    return {"wall": round(wall, 3), "create_start": round(sum(started_seconds), 3),
            "until_200": round(sum(healthy_seconds), 3)}


def under_load(bench: Bench, backend: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs the action while steady load goes to the backend's frontend; adds what the load counted."""
    with SteadyLoad(bench.url(backend), rate=LOAD_RATE, max_seconds=600, max_requests=90000) as load:
        time.sleep(LOAD_LEAD_IN)
        measured = action()
        time.sleep(LOAD_TAIL)
    counted = load.summary()
    return dict(measured, sent=counted["sent"], failed=counted["failed"], errors=counted["errors"],
                answers=counted["answers_by_version"])


def under_wrk(bench: Bench, backend: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """wrk on the backend's frontend for WRK_STEADY seconds (steady state), then again around the action;
    the two runs' p99 latencies, socket errors and non-2xx answers."""
    with WrkLoad(bench.url(backend), bench.workdir, WRK_CONNECTIONS) as steady:
        time.sleep(WRK_STEADY)
    with WrkLoad(bench.url(backend), bench.workdir, WRK_CONNECTIONS) as swap:
        time.sleep(LOAD_LEAD_IN)
        measured = action()
        time.sleep(LOAD_TAIL)
    before, during = steady.summary(), swap.summary()
    failed = during["socket_errors"] + during["status"]
    errors = [f"{key} {during[key]}" for key in ("connect", "read", "write", "timeout", "status") if during[key]]
    return dict(measured, sent=during["requests"], failed=failed, errors=errors, answers={}, steady=before,
                swap=during, p99_ratio=round(during["p99_ms"] / before["p99_ms"], 2) if before["p99_ms"] else None)


# rounds ------------------------------------------------------------------------------------------
def prepare(bench: Bench) -> None:
    """Every fleet runs VERSIONS[0]; HAProxy reports all of their servers up."""
    for fleet in OURS:
        say(f"  first rollout of the {fleet} fleet ({VERSIONS[0]})")
        ours(bench, fleet, VERSIONS[0], "0")
    say("  compose fleet and naive loop fleets")
    compose_file(bench)
    compose(bench, VERSIONS[0], force=False)
    for approach in LOOPS:
        loop_inventory(bench, approach)
        loop(bench, approach, VERSIONS[0])
    say("  warm-up of the floor")
    floor(bench, VERSIONS[0], "warmup")


def round_order(round_index: int) -> list[str]:
    shift = round_index % len(APPROACHES)
    return list(APPROACHES[shift:] + APPROACHES[:shift])


def measure_round(bench: Bench, round_index: int, runs: int) -> dict[str, Any]:
    source, target = (VERSIONS if round_index % 2 == 0 else VERSIONS[::-1])
    label = str(round_index + 1)
    steps: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "rolling": ("rolling", lambda: ours(bench, "rolling", target, label)),
        "blue_green": ("blue_green", lambda: ours(bench, "blue_green", target, label)),
        "wrk": ("wrk", lambda: ours(bench, "wrk", target, label)),
        "compose": ("compose", lambda: compose(bench, target)),
        "loop": ("loop", lambda: loop(bench, "loop", target)),
        "loop_stop1": ("loop_stop1", lambda: loop(bench, "loop_stop1", target)),
        "floor": ("rolling", lambda: floor(bench, target, label)),
        "wrk_floor": ("wrk", lambda: floor(bench, target, f"{label}w")),
    }
    order = round_order(round_index)
    measured: dict[str, Any] = {"round": round_index + 1, "from": source, "to": target, "order": order}
    for approach in order:
        busy = machine_busy()
        load_average = busy["load"]
        backend, action = steps[approach]
        load = under_wrk if approach in UNDER_WRK else under_load
        measured[approach] = dict(load(bench, backend, action), load_before=round(load_average, 2), vms=busy["vms"])
        entry = measured[approach]
        task = f" (task {entry['task']:.2f} s)" if "task" in entry else ""
        say(f"  round {round_index + 1}/{runs}: {approach} {source} -> {target} {entry['wall']:.2f} s{task}, "
            f"{entry['sent']} requests, {entry['failed']} failed (load average {load_average:.2f})")
    return measured


# the report --------------------------------------------------------------------------------------
MEASUREMENTS = (
    ("rolling", "wall", "(a) ours, rolling: ansible-playbook"),
    ("rolling", "task", "(a) ours, rolling: task duration"),
    ("blue_green", "wall", "(a) ours, blue_green: ansible-playbook"),
    ("blue_green", "task", "(a) ours, blue_green: task duration"),
    ("wrk", "wall", "(a') ours, rolling under wrk: ansible-playbook"),
    ("wrk", "task", "(a') ours, rolling under wrk: task duration"),
    ("compose", "command", "(b) docker-compose up -d --force-recreate"),
    ("compose", "wall", "(b) ... until HAProxy has all 10 up"),
    ("loop", "command", "(c) naive Ansible loop: ansible-playbook"),
    ("loop", "wall", "(c) ... until HAProxy has all 10 up"),
    ("loop_stop1", "command", "(c') the loop with stop_timeout: 1"),
    ("loop_stop1", "wall", "(c') ... until HAProxy has all 10 up"),
    ("floor", "wall", "(d) floor: 10 x (start, first 200)"),
    ("floor", "create_start", "(d) of which create + start + inspect"),
    ("floor", "until_200", "(d) of which until the first 200"),
    ("wrk_floor", "wall", "(d') the floor under wrk, its containers removed inside the window"),
)
PHASE_SETS = {"rolling": OURS_PHASES, "blue_green": OURS_PHASES, "wrk": OURS_PHASES, "loop": LOOP_PHASES,
              "loop_stop1": LOOP_PHASES}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    stats = {f"{approach}.{key}": summary(measured[approach][key] for measured in rounds)
             for approach, key, _title in MEASUREMENTS}
    floor_median, loop_median = stats["floor.wall"]["median"], stats["loop.wall"]["median"]
    ratios = {f"{key}/floor": round(stats[key]["median"] / floor_median, 3) for key in stats}
    ratios.update({f"{key}/loop": round(stats[key]["median"] / loop_median, 3) for key in stats})
    per_round = {f"{approach}.{key}/{other}": [round(measured[approach][key] / measured[other]["wall"], 3)
                                               for measured in rounds]
                 for approach, key, other in (("rolling", "task", "floor"), ("rolling", "wall", "floor"),
                                              ("rolling", "wall", "loop"), ("blue_green", "wall", "floor"))}
    load = {approach: {"sent": [measured[approach]["sent"] for measured in rounds],
                       "failed": [measured[approach]["failed"] for measured in rounds],
                       "errors": sorted({error for measured in rounds for error in measured[approach]["errors"]}),
                       "load_average": summary(measured[approach]["load_before"] for measured in rounds)["median"]}
            for approach in APPROACHES}
    phase_medians = {approach: {label: summary(measured[approach]["phases"].get(label, 0.0)
                                               for measured in rounds)["median"] for label in labels}
                     for approach, labels in PHASE_SETS.items()}
    batches = [summary(measured["rolling"]["batches"][index] for measured in rounds)["median"]
               for index in range(REPLICAS)]
    return {"stats": stats, "ratios": ratios, "per_round_ratios": per_round, "load": load,
            "phase_medians": phase_medians, "rolling_batches": batches}


def measurement_table(result: dict[str, Any]) -> dict[str, Any]:
    summarized = result["summary"]
    rows, shown = [], set()
    for approach, key, title in MEASUREMENTS:
        stat = summarized["stats"][f"{approach}.{key}"]
        load = summarized["load"][approach]
        requests = ["-", "-"] if approach in shown else [sum(load["sent"]), sum(load["failed"])]
        shown.add(approach)
        rows.append([title, f"{stat['median']:.2f}", f"{stat['min']:.2f}", f"{stat['max']:.2f}",
                     f"{summarized['ratios'][f'{approach}.{key}/floor']:.2f}x",
                     f"{summarized['ratios'][f'{approach}.{key}/loop']:.2f}x", *requests])
    return {"title": f"rollout: seconds over {result['settings']['runs']} rounds, {REPLICAS} replicas, "
                     f"{LOAD_RATE:g} req/s through HAProxy (sent and failed: all rounds together)",
            "header": ["measurement", "median", "min", "max", "/ floor", "/ loop", "sent", "failed"], "rows": rows}


def requests_table(result: dict[str, Any]) -> dict[str, Any]:
    load = result["summary"]["load"]
    rows = [[approach, " ".join(str(sent) for sent in load[approach]["sent"]),
             " ".join(str(failed) for failed in load[approach]["failed"]), ", ".join(load[approach]["errors"]) or "-",
             f"{load[approach]['load_average']:.1f}"] for approach in APPROACHES]
    return {"title": "requests per round (load on the approach's own frontend; the floor's goes to the rolling fleet)",
            "header": ["approach", "sent", "failed", "errors seen", "load average"], "rows": rows}


def phase_table(result: dict[str, Any]) -> dict[str, Any]:
    medians = result["summary"]["phase_medians"]
    rows = [[label, f"{medians['rolling'][label]:.2f}",
             f"{medians['rolling'][label] / REPLICAS:.3f}" if label in STEP_ACTIONS else "-",
             f"{medians['blue_green'][label]:.2f}"] for label in OURS_PHASES]
    rows.append(["each batch, first step to the next batch's", " ".join(
        f"{seconds:.2f}" for seconds in result["summary"]["rolling_batches"]), "-", "-"])
    return {"title": "(a) where ours spends its time: median seconds per phase of the ansible-playbook run",
            "header": ["phase", "rolling", "per batch", "blue_green"], "rows": rows}


def loop_table(result: dict[str, Any]) -> dict[str, Any]:
    medians = result["summary"]["phase_medians"]
    rows = [[label] + [f"{medians[approach][label]:.2f}" for approach in LOOPS] +
            [f"{medians[approach][label] / REPLICAS:.3f}" if label not in ("start-up", "end") else "-"
             for approach in LOOPS] for label in LOOP_PHASES]
    return {"title": "(c) where the naive loops spend their time: median seconds per phase",
            "header": ["phase", "(c) loop", "(c') stop_timeout 1", "(c) per host", "(c') per host"], "rows": rows}


def wrk_table(result: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for measured in result["rounds"]:
        for approach, what in (("wrk", "rolling rollout"), ("wrk_floor", "floor's starts and removals")):
            if approach not in measured:
                continue
            steady, swap = measured[approach]["steady"], measured[approach]["swap"]
            rows.append([measured["round"], what, f"{steady['rate']:.0f}", f"{steady['p50_ms']:.2f}",
                         f"{steady['p99_ms']:.2f}", f"{swap['rate']:.0f}", f"{swap['p50_ms']:.2f}",
                         f"{swap['p99_ms']:.2f}", f"{swap['max_ms']:.1f}", f"{measured[approach]['p99_ratio']:.2f}x",
                         swap["requests"], swap["socket_errors"], swap["status"]])
    return {"title": f"(a') the rolling rollout under wrk ({WRK_CONNECTIONS} keep-alive connections through HAProxy): "
                     f"steady state ({WRK_STEADY:g} s before) and during the swap; (d') the same around the floor",
            "header": ["round", "during", "steady req/s", "steady p50 ms", "steady p99 ms", "req/s", "p50 ms",
                       "p99 ms", "max ms", "p99 / steady", "requests", "socket errors", "non-2xx"],
            "rows": rows}


def anchor_table(result: dict[str, Any]) -> dict[str, Any]:
    summarized = result["summary"]
    ratios, failed = summarized["ratios"], summarized["load"]
    ours_failed = sum(failed["rolling"]["failed"]) + sum(failed["blue_green"]["failed"])
    wrk = [measured["wrk"] for measured in result["rounds"]]
    wrk_failed = sum(entry["failed"] for entry in wrk)
    worst_p99 = max(entry["p99_ratio"] or 0 for entry in wrk)
    checks = [
        ("ours drops no request (every round)", "0", str(ours_failed), ours_failed == 0),
        ("under wrk: socket errors + non-2xx (every round)", "0", str(wrk_failed), wrk_failed == 0),
        ("under wrk: p99 during the swap / steady (worst round)", "<= 2x", f"{worst_p99:.2f}x", worst_p99 <= 2),
        ("rolling task duration / floor", "<= 1.3x", f"{ratios['rolling.task/floor']:.2f}x",
         ratios["rolling.task/floor"] <= 1.3),
        ("rolling ansible-playbook / floor", "<= 1.5x", f"{ratios['rolling.wall/floor']:.2f}x",
         ratios["rolling.wall/floor"] <= 1.5),
        ("rolling ansible-playbook / naive loop", "<= 0.5x", f"{ratios['rolling.wall/loop']:.2f}x",
         ratios["rolling.wall/loop"] <= 0.5),
    ]
    return {"title": "anchors", "header": ["anchor", "target", "measured (median)", "met"],
            "rows": [[name, target, measured, "yes" if met else "NO"] for name, target, measured, met in checks]}


# clean-up ----------------------------------------------------------------------------------------
def cleanup(bench: Bench) -> None:
    """Removes the HAProxy process, containers, images, volumes and network this run made."""
    stop_haproxy(bench.haproxy)
    client = docker.from_env()
    for fleet in OURS:
        for container in client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{bench.service(fleet)}"}):
            container.remove(force=True)
    for container in client.containers.list(all=True, filters={"name": bench.prefix}):
        container.remove(force=True)
    removed = retry_cleanup(lambda: remove_labelled(bench.run_id))
    volumes = [f"immutable-infra-{kind}-{bench.service(fleet)}" for fleet in OURS
               for kind in ("rollout", "service", "stopping")]
    volumes += [f"immutable-infra-verdict-{image.split(':', 1)[-1]}" for image in bench.images.values()]
    for name in volumes:
        try:
            client.volumes.get(name).remove(force=True)
        except NotFound:
            pass
    for network in client.networks.list(filters={"label": f"{LABEL_KEY}={bench.run_id}"}):
        remove_network(network)
    if removed:
        say(f"  removed {removed} containers and images, the network and HAProxy")


def remove_network(network) -> None:
    """Removes the benchmark's network. The engine may still list endpoints of containers it has just
    removed, so it is tried again for a few seconds; a network it keeps refusing is reported, not fatal."""
    for attempt in range(10):
        try:
            network.remove()
            return
        except APIError as error:
            if attempt == 9:
                say(f"  could not remove network {network.name}: {error.explanation}; remove it later with "
                    f"'docker network rm {network.name}'")
            time.sleep(0.5)


def versions() -> dict[str, str]:
    return {"docker-compose": command_version(["docker-compose", "version", "--short"]),
            "haproxy": command_version([HAPROXY, "-v"])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Replaces 10 hello hosts five ways for args.runs rounds; returns raw rounds, summary and tables."""
    ensure_prerequisites(args.base)
    bench = Bench(run_id=uuid.uuid4().hex[:8], base=args.base, workdir=tempfile.mkdtemp(prefix="bench-rollout-"))
    result: dict[str, Any] = {"benchmark": "rollout", "run_id": bench.run_id,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"runs": args.runs, "base": args.base, "replicas": REPLICAS,
                                           "load_rate": LOAD_RATE, "server_check": SERVER_CHECK},
                              "machine": dict(machine_facts(), **versions()), "rounds": []}
    say(f"rollout: {args.runs} rounds, {REPLICAS} replicas, base {args.base}, run id {bench.run_id}")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # a timeout or kill still cleans up
    try:
        client = docker.from_env()
        create_network(bench, client)
        say(f"  baking and verifying hello {' and '.join(VERSIONS)}")
        release(bench)
        start_haproxy(bench)
        prepare(bench)
        for round_index in range(args.runs):
            result["rounds"].append(measure_round(bench, round_index, args.runs))
    except DockerException as error:
        raise BenchError(f"the Docker engine refused a step: {error}") from None
    finally:
        cleanup(bench)
        shutil.rmtree(bench.workdir, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["summary"] = summarize(result["rounds"])
    result["tables"] = [measurement_table(result), requests_table(result), wrk_table(result), phase_table(result),
                        loop_table(result), anchor_table(result)]
    return result
