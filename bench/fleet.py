"""The fleet scale benchmark: one service of 10, 50 and 100 hosts over 1, 2 and 4 engines of the rig,
replaced under steady load, three ways in the same run.

Two versions of the example hello service are baked and verified on the local engine
(bench/rollout-release.yml) and shipped to every rig engine (and their verdicts with them) before any
cell is measured, so the cells measure the rollout, not the transfer (bench/ship.py measures that).
Each rig engine gets a network of its own for the run (a /20 of 10.232.0.0/16 that no route of the
machine overlaps; dynamic addresses in the lower half, fixed ones in the upper). For every cell (hosts
H, engines K = the first K rig engines), a fresh HAProxy on 127.0.0.1 fronts two backends, both checked
with GET /healthz once a second:

ours   immutable.infra.rollout over the K engines (rolling, batch_size H/10, placement even), one
       ansible-playbook run: a first rollout of version A (not under load, timed as "first"), then the
       measured rollout to version B while scripts/steady_load.py sends LOAD_RATE requests per second
       through HAProxy; the backend has 2H+8 server-template slots
plain  a plain Ansible play over H inventory hosts, each assigned to an engine in turn, serial H/10,
       connection local, community.docker.docker_container (the engine's docker_host and TLS files
       from host variables) at a fixed address, then wait_for the port; HAProxy has H static servers.
       The hosts of version A are started with the SDK first (not measured), then the play replaces them
       with B under load; the time runs until HAProxy reports all H up (a play still running after
       PLAIN_LIMIT seconds is stopped and reported as not finished)
floor  the same H hosts of version B started with the Docker SDK, one thread per engine, each host
       until its first /healthz 200; no balancer, no load
replace  the least a replacement costs on the same engines (not an anchor): H hosts of version A started
       with the SDK first (not measured), then, one thread per engine, each host of B started until its
       first 200 and one host of A stopped (sent to a stopping thread of that engine, so the next start
       does not wait for it); until every host of B answered and every host of A exited. No balancer, no
       load: what ours does to the engines, without what it does to keep every request served

The share of the machine's CPU that was busy while each approach ran is recorded with it (/proc/stat):
on one machine the engines share its cores, so a cell whose floor keeps them busy cannot go faster by
spreading hosts over more engines.

Controller memory is the peak resident memory of the ansible-playbook process and all its children
(the forks), sampled every 0.2 s from /proc. Cells run smallest first; after each cell the results so
far are written to bench/results/fleet-partial.json. Every container and network made here carries
the label immutable-infra.bench=<run id> and is removed at the end, however the benchmark ends.
The 4-engine cells need the rig's fourth engine: the benchmark starts it (IMMUTABLE_INFRA_RIG_ENGINES=4
scripts/engines.py up) and writes the three-engine rig.json back at the end.

Environment: IMMUTABLE_INFRA_BENCH_FLEET_HOSTS (default 10,50,100), IMMUTABLE_INFRA_BENCH_FLEET_ENGINES
(default 1,2,4), or IMMUTABLE_INFRA_BENCH_FLEET_CELLS for chosen cells (e.g. 10x1,50x4,100x4: hosts x
engines, in that order), IMMUTABLE_INFRA_BENCH_FLEET_ROUNDS (default 1; --runs is not used: one round of the
full matrix takes long enough on two cores).

Usage: .venv/bin/python bench/run.py fleet [--base IMAGE]   (or bench/fleet.py)
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, NotFound
from measure import (
    BENCH_DIR,
    COLLECTIONS_PATH,
    LABEL_KEY,
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    Timed,
    bench_env,
    busy_share,
    cpu_jiffies,
    ensure_base_image,
    ensure_collection_link,
    first_200,
    floor_in_threads,
    free_port,
    machine_busy,
    machine_facts,
    play_results,
    remove_labelled,
    routed_subnets,
    run_checked,
    say,
    servers_up,
    start_haproxy_process,
    stop_haproxy,
)

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "integration"))
sys.path.insert(0, COLLECTIONS_PATH)

from steady_load import SteadyLoad  # pylint: disable=wrong-import-position

ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
DEMO = os.path.join(REPO_ROOT, "examples", "demo")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

PORT = 8000
VERSIONS = ("1.0", "2.0")
LOAD_RATE = 100.0
LOAD_LEAD_IN = 1.0
LOAD_TAIL = 0.5
UP_TIMEOUT = 300.0
# Every 100 ms (the tests' setting) over 200+ servers is 2,000 checks a second, which alone saturates
# two cores at 100 hosts; once a second is still twice HAProxy's default rate.
SERVER_CHECK = "inter 1s rise 1 fall 2"
# The plain play at 100 hosts takes longer than the rest of a cell together: it is stopped there and
# reported as not finished, with the requests it failed until then.
PLAIN_LIMIT = float(os.environ.get("IMMUTABLE_INFRA_BENCH_FLEET_PLAIN_LIMIT", "900"))
SAMPLE_EVERY = 0.2
# The plain play is the slowest part of every cell; IMMUTABLE_INFRA_BENCH_FLEET_APPROACHES=ours,floor leaves it out.
SURGE = os.environ.get("IMMUTABLE_INFRA_BENCH_FLEET_SURGE", "")
APPROACHES = tuple(os.environ.get("IMMUTABLE_INFRA_BENCH_FLEET_APPROACHES", "ours,plain,floor,replace").split(","))


def _numbers(variable: str, default: str) -> list[int]:
    return [int(part) for part in os.environ.get(variable, default).split(",") if part.strip()]


@dataclass
class Bench:
    run_id: str
    base: str
    workdir: str
    engines: list[dict[str, Any]] = field(default_factory=list)  # the rig's engines, from rig.json
    clients: dict[str, docker.DockerClient] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # version -> image ID
    haproxy: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def network(self) -> str:
        return f"bench-fleet-{self.run_id}"

    @property
    def runtime_api(self) -> str:
        return os.path.join(self.workdir, "admin.sock")

    subnets: list[ipaddress.IPv4Network] = field(default_factory=list)  # per engine, free of routed ones

    def subnet(self, position: int) -> ipaddress.IPv4Network:
        return self.subnets[position]

    def fixed_ip(self, position: int, index: int) -> str:
        return str(self.subnet(position)[8 * 256 + 10 + index])

    def shipped_tag(self, version: str) -> str:
        return "immutable-infra/shipped:sha256-" + self.images[version].split(":", 1)[1]

    def url(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.ports[backend]}/"

    def ansible_env(self) -> dict[str, str]:
        collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or COLLECTIONS_PATH
        return bench_env({"ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                          "IMMUTABLE_INFRA_LEDGER": os.path.join(self.workdir, "ledger.jsonl"),
                          "ANSIBLE_FORKS": "10", "ANSIBLE_HOST_KEY_CHECKING": "False"})


# the rig ------------------------------------------------------------------------------------------
def rig_up(count: int) -> dict[str, Any]:
    env = dict(os.environ, IMMUTABLE_INFRA_RIG_ENGINES=str(count))
    run_checked([sys.executable, os.path.join(REPO_ROOT, "scripts", "engines.py"), "up"], env=env)
    from engines_support import rig_description  # pylint: disable=import-outside-toplevel
    description = rig_description(engines=None)
    if description is None or len(description["engines"]) < count:
        raise BenchError(f"the rig did not come up with {count} engines")
    return description


def sdk_client(engine: dict[str, Any]) -> docker.DockerClient:
    """The Docker SDK client of a rig engine, made by the collection's client (which keeps
    REQUESTS_CA_BUNDLE from replacing the engine's CA)."""
    from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import (  # pylint: disable=import-outside-toplevel
        DockerClient,
        Endpoint,
        TLSConfig,
    )
    tls = engine.get("tls")
    return DockerClient(Endpoint(engine["docker_host"], TLSConfig(ca_path=tls["ca_cert"], client_cert=tls["client_cert"],
                                                                  client_key=tls["client_key"]) if tls else None)).sdk


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """count /20s of 10.232.0.0/16 that no route of this machine overlaps (another engine's bridge there
    would take the benchmark's traffic)."""
    routed = routed_subnets()
    free = [subnet for subnet in ipaddress.ip_network("10.232.0.0/16").subnets(new_prefix=20)
            if not any(subnet.overlaps(other) for other in routed)]
    if len(free) < count:
        raise BenchError(f"fewer than {count} /20 subnets of 10.232.0.0/16 are free of routes on this machine")
    return free[:count]


def create_networks(bench: Bench) -> None:
    bench.subnets = free_subnets(len(bench.engines))
    for position, engine in enumerate(bench.engines):
        subnet = bench.subnet(position)
        pool = docker.types.IPAMPool(subnet=str(subnet), iprange=str(next(subnet.subnets(1))),
                                     gateway=str(subnet[1]))
        bench.clients[engine["name"]].networks.create(bench.network, driver="bridge", labels={LABEL_KEY: bench.run_id},
                                                      ipam=docker.types.IPAMConfig(pool_configs=[pool]))


def ship_images(bench: Bench, description: dict[str, Any]) -> None:
    """Both versions to every rig engine (stream), with their verdicts; not part of any cell's time."""
    from engines_support import rig_engines  # pylint: disable=import-outside-toplevel

    from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
    from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import connect_engines, image_presence
    from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import plan_shipping, ship_image
    from ansible_collections.immutable.infra.plugins.plugin_utils.engines.verdicts import copy_verdict

    reached = connect_engines(rig_engines(description)).require_all()
    clients = {"local": DockerClient(None), **reached}
    for version, image_id in bench.images.items():
        plan = plan_shipping(image_id, image_presence(clients, image_id), list(reached), None, "stream")
        shipped = ship_image(plan, clients, None)
        copy_verdict(clients, image_id, list(reached))
        say(f"shipped hello {version} to {', '.join(reached)} in {shipped.seconds:.1f} s")


def release(bench: Bench) -> None:
    extra_vars = {"bench_image": f"bench-fleet-{bench.run_id}/hello", "bench_base": bench.base,
                  "bench_label": bench.run_id, "bench_roles_dir": os.path.join(DEMO, "roles"),
                  "bench_versions": list(VERSIONS), "bench_tests": os.path.join(DEMO, "tests", "test_hello.py"),
                  "bench_report_dir": os.path.join(bench.workdir, "reports")}
    timed = playbook(bench, os.path.join(BENCH_DIR, "rollout-release.yml"), ["-e", json.dumps(extra_vars)])
    results = play_results(timed)
    if timed.returncode != 0 or any(result.get("failed") for result in results):
        raise BenchError(f"baking or verifying hello failed:\n{timed.tail()}")
    for baked in results[0]["results"]:
        bench.images[baked["item"]] = baked["image_id"]


# running plays, with the controller's memory -------------------------------------------------------
def tree_rss(root: int) -> int:
    """Resident memory in bytes of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", encoding="utf-8") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def playbook(bench: Bench, path: str, arguments: list[str], limit: float | None = None) -> Timed:
    """ansible-playbook to its end (or killed after limit seconds: returncode -9), with its output lines
    and the peak memory of its process tree."""
    lines: list[tuple[float, str]] = []
    peak = [0]
    command = [ANSIBLE_PLAYBOOK, path, *arguments]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        started = time.monotonic()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                              env=bench.ansible_env(), cwd=bench.workdir, text=True, bufsize=1,
                              start_new_session=True) as process:
            done = threading.Event()
            killer = threading.Timer(limit or 0, lambda: done.is_set() or os.killpg(process.pid, signal.SIGKILL))
            killer.daemon = True
            if limit:
                killer.start()

            def sample() -> None:
                while not done.wait(SAMPLE_EVERY):
                    peak[0] = max(peak[0], tree_rss(process.pid))
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for line in process.stdout or []:
                lines.append((time.monotonic() - started, line))
            returncode = process.wait()
            done.set()
            killer.cancel()
            sampler.join()
        stderr.seek(0)
        timed = Timed(command, returncode, time.monotonic() - started, lines, stderr.read())
    timed.peak_rss = peak[0]  # type: ignore[attr-defined]
    return timed


def write_yaml(bench: Bench, name: str, data: Any) -> str:
    path = os.path.join(bench.workdir, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)  # JSON is YAML
    return path


# HAProxy ------------------------------------------------------------------------------------------
def start_haproxy(bench: Bench, hosts: int, plain: list[str]) -> None:
    stop_haproxy(bench.haproxy)
    bench.ports = {"ours": free_port(), "plain": free_port()}
    lines = ["global", f"    stats socket {bench.runtime_api} mode 600 level admin", "    stats timeout 10s",
             "    maxconn 4000", "", "defaults", "    mode http", "    timeout connect 1s", "    timeout client 10s",
             "    timeout server 10s", "    timeout check 1s", "    option redispatch", "    retries 3", ""]
    for backend in ("ours", "plain"):
        lines += [f"frontend fe_{backend}", f"    bind 127.0.0.1:{bench.ports[backend]}",
                  f"    default_backend {backend}", "", f"backend {backend}", "    balance roundrobin",
                  "    option httpchk GET /healthz", "    http-check expect status 200",
                  f"    default-server {SERVER_CHECK}"]
        if backend == "ours":
            lines.append(f"    server-template slot 1-{2 * hosts + 8} parked.invalid:80 check disabled "
                         "init-addr last,0.0.0.0")
        else:
            lines += [f"    server plain{index} {address}:{PORT} check" for index, address in enumerate(plain, 1)]
        lines.append("")
    config = os.path.join(bench.workdir, "haproxy.cfg")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    bench.haproxy = start_haproxy_process(config, bench.runtime_api, os.path.join(bench.workdir, "haproxy.log"))


def wait_all_up(bench: Bench, backend: str, hosts: int) -> None:
    started = time.monotonic()
    while servers_up(bench.runtime_api, backend) < hosts:
        if time.monotonic() - started > UP_TIMEOUT:
            raise BenchError(f"HAProxy did not report {hosts} servers of {backend} up within {UP_TIMEOUT:g} s")
        time.sleep(0.05)


def under_load(bench: Bench, backend: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    with SteadyLoad(bench.url(backend), rate=LOAD_RATE, max_seconds=1800, max_requests=200000) as load:
        time.sleep(LOAD_LEAD_IN)
        before = cpu_jiffies()
        measured = action()
        cpu_busy = busy_share(before)
        time.sleep(LOAD_TAIL)
    counted = load.summary()
    return dict(measured, sent=counted["sent"], failed=counted["failed"], errors=counted["errors"], cpu_busy=cpu_busy)


# the approaches -------------------------------------------------------------------------------------
def capacity_options(hosts: int) -> dict[str, Any]:
    """How many hosts ours replaces at once: max_surge (IMMUTABLE_INFRA_BENCH_FLEET_SURGE, a count or a
    percentage) when set, else batches of H/10 like the plain play's serial."""
    return {"max_surge": SURGE} if SURGE else {"batch_size": batch(hosts)}


def batch(hosts: int) -> int:
    return max(1, hosts // 10)


def engines_option(bench: Bench, count: int) -> list[dict[str, Any]]:
    return [{"name": engine["name"], "docker_host": engine["docker_host"], "tls": engine["tls"]}
            for engine in bench.engines[:count]]


def ours(bench: Bench, hosts: int, count: int, version: str, service: str) -> dict[str, Any]:
    task = {"name": "Rollout", "immutable.infra.rollout": {
        "service": service, "image": bench.images[version], "replicas": hosts, "strategy": "rolling",
        **capacity_options(hosts), "port": PORT, "health": {"http_path": "/healthz", "interval": 0.1},
        "container": {"networks": [bench.network], "labels": {LABEL_KEY: bench.run_id}},
        "balancer": {"runtime_api": bench.runtime_api, "backend": "ours"},
        "engines": engines_option(bench, count), "lock_timeout": 600}}
    path = write_yaml(bench, "ours.yml", [{"name": "ours", "hosts": "localhost", "gather_facts": False, "tasks": [task]}])
    timed = playbook(bench, path, [])
    result = play_results(timed)[0]
    if timed.returncode != 0 or result.get("failed") or not result.get("changed"):
        raise BenchError(f"the rollout of {hosts} hosts over {count} engines to {version} failed: "
                         f"{result.get('msg')}\n{timed.tail()}")
    return {"wall": round(timed.wall, 2), "task": result.get("duration"), "peak_mb": round(timed.peak_rss / 1e6),
            "engines": placement_counts(result),
            "progress": [f"{offset:7.3f} {line.rstrip()}"[:300] for offset, line in timed.lines if " gen " in line]}


def placement_counts(result: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for engine in (result.get("placement") or {}).get("assignments", {}).values():
        counts[engine] = counts.get(engine, 0) + 1
    return counts


def plain_inventory(bench: Bench, hosts: int, count: int) -> tuple[str, dict[str, dict[str, Any]], list[str]]:
    members, addresses = {}, []
    for index in range(1, hosts + 1):
        position = (index - 1) % count
        engine = bench.engines[position]
        address = bench.fixed_ip(position, index)
        addresses.append(address)
        members[f"plain-{bench.run_id}-{index}"] = {
            "engine_host": engine["docker_host"], "engine_ca": engine["tls"]["ca_cert"],
            "engine_cert": engine["tls"]["client_cert"], "engine_key": engine["tls"]["client_key"],
            "fixed_ip": address, "engine_name": engine["name"]}
    inventory = {"fleet": {"hosts": members, "vars": {"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable}}}
    return write_yaml(bench, "plain-inventory.yml", inventory), members, addresses


def plain(bench: Bench, hosts: int, inventory: str, version: str) -> dict[str, Any]:
    # REQUESTS_CA_BUNDLE would replace each engine's CA in the SDK under community.docker: cleared.
    play = [{"name": "plain", "hosts": "fleet", "gather_facts": False, "serial": batch(hosts),
             "environment": {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}, "tasks": [
        {"name": "Recreate the container", "community.docker.docker_container": {
            "docker_host": "{{ engine_host }}", "tls": True, "validate_certs": True, "ca_path": "{{ engine_ca }}",
            "client_cert": "{{ engine_cert }}", "client_key": "{{ engine_key }}", "name": "{{ inventory_hostname }}",
            "image": bench.shipped_tag(version), "state": "started", "restart_policy": "unless-stopped",
            "labels": {LABEL_KEY: bench.run_id}, "networks_cli_compatible": True, "network_mode": bench.network,
            "networks": [{"name": bench.network, "ipv4_address": "{{ fixed_ip }}"}], "comparisons": {"image": "strict"},
            "pull": "never"}},
        {"name": "Wait until the port answers", "ansible.builtin.wait_for": {
            "host": "{{ fixed_ip }}", "port": PORT, "timeout": 60}}]}]
    path = write_yaml(bench, "plain.yml", play)
    timed = playbook(bench, path, ["-i", inventory], limit=PLAIN_LIMIT)
    if timed.returncode == -signal.SIGKILL:
        return {"wall": round(timed.wall, 2), "peak_mb": round(timed.peak_rss / 1e6), "unfinished": True}
    if timed.returncode != 0:
        raise BenchError(f"the plain play to {version} failed:\n{timed.tail()}")
    wait_all_up(bench, "plain", hosts)
    return {"wall": round(timed.wall, 2), "peak_mb": round(timed.peak_rss / 1e6)}


def plain_first(bench: Bench, inventory: dict[str, dict[str, Any]], version: str) -> None:
    """The plain play's hosts of the first version, started with the SDK (not measured): the play then
    replaces every one of them, as it would replace a release of its own."""
    for name, variables in inventory.items():
        client = bench.clients[variables["engine_name"]]
        container = client.containers.create(bench.shipped_tag(version), name=name, labels={LABEL_KEY: bench.run_id},
                                             restart_policy={"Name": "unless-stopped"})
        client.networks.get(bench.network).connect(container, ipv4_address=variables["fixed_ip"])
        client.networks.get("bridge").disconnect(container)
        container.start()


def hosts_by_engine(bench: Bench, hosts: int, count: int, tag: str) -> dict[str, list[str]]:
    """The names of H hosts of the SDK approaches, each engine's in turn: engine -> names."""
    by_engine: dict[str, list[str]] = {}
    for index in range(1, hosts + 1):
        by_engine.setdefault(bench.engines[(index - 1) % count]["name"], []).append(
            f"{tag}-{bench.run_id}-{hosts}-{count}-{index}")
    return by_engine


def floor(bench: Bench, hosts: int, count: int, version: str, tag: str = "floor",
          retiring: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Each engine's hosts started one after another by a thread of that engine, each until its first
    200. retiring: engine -> hosts to stop, one after each start, by a stopping thread of that engine."""
    by_engine = hosts_by_engine(bench, hosts, count, tag)
    errors: list[str] = []

    def start_all(engine: str) -> None:
        client = bench.clients[engine]
        old = list((retiring or {}).get(engine, []))
        stopping = ThreadPoolExecutor(max_workers=1)
        stops = []
        try:
            for name in by_engine[engine]:
                container = client.containers.run(bench.shipped_tag(version), detach=True, name=name,
                                                  labels={LABEL_KEY: bench.run_id}, network=bench.network)
                container.reload()
                first_200(container.attrs["NetworkSettings"]["Networks"][bench.network]["IPAddress"], PORT)
                if old:
                    stops.append(stopping.submit(client.api.stop, old.pop(0), timeout=10))
        except (APIError, BenchError) as error:
            errors.append(f"{engine}: {error}")
        finally:
            stopping.shutdown(wait=True)
        errors.extend(f"{engine}: {stop.exception()}" for stop in stops if stop.exception())

    before = cpu_jiffies()
    return dict(floor_in_threads([functools.partial(start_all, engine) for engine in by_engine], errors),
                cpu_busy=busy_share(before))


def replacement_floor(bench: Bench, hosts: int, count: int) -> dict[str, Any]:
    """H hosts of the first version started (not measured), then replaced by H of the second (floor with
    retiring)."""
    floor(bench, hosts, count, VERSIONS[0], tag="old")
    return floor(bench, hosts, count, VERSIONS[1], tag="new", retiring=hosts_by_engine(bench, hosts, count, "old"))


# cells ------------------------------------------------------------------------------------------
def remove_containers(bench: Bench) -> None:
    for client in bench.clients.values():
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_KEY}={bench.run_id}"}):
            try:
                container.remove(force=True)
            except (NotFound, APIError):
                pass


def measure_cell(bench: Bench, hosts: int, count: int, round_number: int) -> dict[str, Any]:
    """The floors first, then ours, then the plain play. Every timed part follows an untimed one on the
    same engines (the replacement floor's first hosts, an untimed floor, ours' first rollout, the plain
    play's first hosts),
    so none is timed while the engines still clean up after the containers removed before it."""
    service = f"bf{bench.run_id[:6]}-{hosts}-{count}-{round_number}"
    inventory, members, addresses = plain_inventory(bench, hosts, count)
    start_haproxy(bench, hosts, addresses)
    cell: dict[str, Any] = {"hosts": hosts, "engines": count, "round": round_number}
    try:
        if "replace" in APPROACHES:
            cell["replace"] = dict(replacement_floor(bench, hosts, count), busy=machine_busy())
            say(f"  replacement floor: {cell['replace']['wall']} s, CPU {cell['replace']['cpu_busy']} % busy")
            remove_containers(bench)
        floor(bench, hosts, count, VERSIONS[0], tag="warm")  # not timed: the engines' clean-up of the above
        busy = machine_busy()
        cell["floor"] = dict(floor(bench, hosts, count, VERSIONS[1]), busy=busy)
        say(f"  floor: {cell['floor']['wall']} s, CPU {cell['floor']['cpu_busy']} % busy (load average "
            f"{busy['load']}, {busy['vms']} VMs running)")
        remove_containers(bench)
        first = ours(bench, hosts, count, VERSIONS[0], service)
        say(f"  ours first rollout: {first['wall']} s, placement {first['engines']}")
        busy = machine_busy()
        cell["ours"] = under_load(bench, "ours", lambda: ours(bench, hosts, count, VERSIONS[1], service))
        cell["ours"].update(first=first["wall"], busy=busy)
        say(f"  ours under load: {cell['ours']['wall']} s, {cell['ours']['failed']} of {cell['ours']['sent']} failed, "
            f"{cell['ours']['peak_mb']} MB, CPU {cell['ours']['cpu_busy']} % busy (load average {busy['load']}, "
            f"{busy['vms']} VMs running)")
        remove_containers(bench)
        if "plain" in APPROACHES:
            plain_first(bench, members, VERSIONS[0])
            wait_all_up(bench, "plain", hosts)
            cell["plain"] = under_load(bench, "plain", lambda: plain(bench, hosts, inventory, VERSIONS[1]))
            say(f"  plain under load: {cell['plain']['wall']} s"
                f"{' (stopped: not finished)' if cell['plain'].get('unfinished') else ''}, "
                f"{cell['plain']['failed']} of {cell['plain']['sent']} failed, {cell['plain']['peak_mb']} MB")
    finally:
        remove_containers(bench)
    return cell


def cleanup(bench: Bench) -> None:
    """Everything the run made: HAProxy, hosts, networks, the images shipped to each engine, and the
    release and its verdicts on the local engine."""
    stop_haproxy(bench.haproxy)
    remove_containers(bench)
    labelled = {"label": f"{LABEL_KEY}={bench.run_id}"}
    for client in bench.clients.values():
        for network in client.networks.list(filters=labelled):
            try:
                network.remove()
            except (NotFound, APIError):
                pass
        for image in client.images.list(filters=labelled):
            try:
                client.images.remove(image.id, force=True)
            except (NotFound, APIError):
                pass
        for volume in client.volumes.list(filters={"name": "immutable-infra-"}):
            if bench.run_id[:6] in volume.name:  # the stores of this run's services (bf..., rm...): records, stops
                volume.remove(force=True)
    local = docker.from_env()
    for image_id in bench.images.values():
        for volume in local.volumes.list(filters={"label": f"immutable.infra.image_id={image_id}"}):
            volume.remove(force=True)
    remove_labelled(bench.run_id)


# tables -------------------------------------------------------------------------------------------
def plain_time(plain_cell: dict[str, Any], hosts: int = 1) -> str:
    """The plain play's seconds (per host), with '>' when it was stopped at PLAIN_LIMIT."""
    if "wall" not in plain_cell:
        return "-"
    return f"{'>' if plain_cell.get('unfinished') else ''}{plain_cell['wall'] / hosts:.2f}"


def ratio(value: Any, floor_cell: dict[str, Any]) -> str:
    return f"{value / floor_cell['wall']:.2f}" if isinstance(value, (int, float)) and floor_cell.get("wall") else "-"


def result_table(cells: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for cell in cells:
        ours_cell, plain_cell, floor_cell = cell.get("ours") or {}, cell.get("plain") or {}, cell.get("floor") or {}
        replace_cell = cell.get("replace") or {}
        rows.append([cell["hosts"], cell["engines"], ours_cell.get("wall", "-"), ours_cell.get("task", "-"),
                     ours_cell.get("failed", "-"), ours_cell.get("sent", "-"), ours_cell.get("peak_mb", "-"),
                     plain_time(plain_cell), plain_cell.get("failed", "-"), plain_cell.get("peak_mb", "-"),
                     floor_cell.get("wall", "-"), replace_cell.get("wall", "-"), ratio(ours_cell.get("wall"), floor_cell),
                     ratio(ours_cell.get("task"), floor_cell), ratio(ours_cell.get("wall"), replace_cell),
                     "/".join(str(part.get("cpu_busy", "-")) for part in (ours_cell, floor_cell, replace_cell))])
    return {"title": f"fleet rollout under load ({LOAD_RATE:g} requests/s through HAProxy), one round per cell; "
                     f"ours: {capacity_text()}",
            "header": ["hosts", "engines", "ours s", "ours task s", "ours failed", "ours sent", "ours MB", "plain s",
                       "plain failed", "plain MB", "floor s", "replace s", "ours / floor", "task / floor",
                       "ours / replace", "CPU busy % ours/floor/replace"], "rows": rows}


def capacity_text() -> str:
    return f"max_surge {SURGE}" if SURGE else "batch_size H/10"


def anchor_table(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets: every cell at most 1.3x its floor with nothing failed; 100 hosts on 4 engines at most
    0.5x the time on 1; controller memory within 1.2x of 151 MB (the measurement before per-engine work)."""
    rows = []
    for cell in cells:
        ours_cell, floor_cell = cell.get("ours") or {}, cell.get("floor") or {}
        if "wall" in ours_cell and floor_cell.get("wall"):
            wall, task = ours_cell["wall"] / floor_cell["wall"], (ours_cell.get("task") or 0) / floor_cell["wall"]
            rows.append([f"{cell['hosts']}x{cell['engines']}: ours / floor, 0 failed", "<= 1.3x",
                         f"{wall:.2f}x (task {task:.2f}x), {ours_cell.get('failed')} failed",
                         "yes" if wall <= 1.3 and ours_cell.get("failed") == 0 else "NO"])
    by_engines = {cell["engines"]: cell for cell in cells if cell["hosts"] == 100 and (cell.get("ours") or {}).get("wall")}
    if 1 in by_engines and 4 in by_engines:
        ours_ratio = by_engines[4]["ours"]["wall"] / by_engines[1]["ours"]["wall"]
        floor_ratio = by_engines[4]["floor"]["wall"] / by_engines[1]["floor"]["wall"]
        rows.append(["100 hosts: 4 engines / 1 engine", "<= 0.5x", f"{ours_ratio:.2f}x (floor {floor_ratio:.2f}x)",
                     "yes" if ours_ratio <= 0.5 else "NO"])
    peaks = [(cell["ours"]["peak_mb"], f"{cell['hosts']}x{cell['engines']}") for cell in cells if cell.get("ours")]
    if 4 in by_engines:
        peak, (most, where) = by_engines[4]["ours"]["peak_mb"], max(peaks)
        rows.append(["controller memory, 100 hosts x 4 engines", "<= 181 MB (1.2 x 151)",
                     f"{peak} MB (largest cell: {most} MB, {where})", "yes" if peak <= 181 else "NO"])
    return {"title": "anchors", "header": ["anchor", "target", "measured", "met"], "rows": rows}


def growth_table(cells: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for count in sorted({cell["engines"] for cell in cells}):
        mine = sorted((cell for cell in cells if cell["engines"] == count and cell.get("ours")), key=lambda c: c["hosts"])
        if not mine:
            continue
        smallest = mine[0]
        for cell in mine:
            scale = cell["hosts"] / smallest["hosts"]
            rows.append([count, cell["hosts"], f"{cell['ours']['wall'] / cell['hosts']:.2f}",
                         f"{cell['ours']['wall'] / smallest['ours']['wall']:.1f}x for {scale:g}x hosts",
                         f"{cell['ours']['peak_mb'] / max(1, smallest['ours']['peak_mb']):.2f}x",
                         plain_time(cell.get("plain") or {}, cell["hosts"]),
                         f"{cell['floor']['wall'] / cell['hosts']:.2f}" if cell.get("floor") else "-"])
    return {"title": "growth against the smallest fleet of the same engines",
            "header": ["engines", "hosts", "ours s/host", "ours time", "ours memory", "plain s/host", "floor s/host"],
            "rows": rows}


def save_partial(result: dict[str, Any]) -> None:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "fleet-partial.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_collection_link()
    ensure_base_image(args.base)
    hosts_list = _numbers("IMMUTABLE_INFRA_BENCH_FLEET_HOSTS", "10,50,100")
    counts = _numbers("IMMUTABLE_INFRA_BENCH_FLEET_ENGINES", "1,2,4")
    cells = [(hosts, count) for hosts in hosts_list for count in counts]
    if os.environ.get("IMMUTABLE_INFRA_BENCH_FLEET_CELLS"):
        cells = [tuple(int(part) for part in cell.split("x")) for cell in  # type: ignore[misc]
                 os.environ["IMMUTABLE_INFRA_BENCH_FLEET_CELLS"].split(",") if cell.strip()]
        counts = sorted({count for _hosts, count in cells})
    rounds = int(os.environ.get("IMMUTABLE_INFRA_BENCH_FLEET_ROUNDS", "1"))
    needed = max(counts)
    bench = Bench(uuid.uuid4().hex[:8], args.base, tempfile.mkdtemp(prefix="bench-fleet-"))
    description = rig_up(max(3, needed))
    result: dict[str, Any] = {"machine": machine_facts(), "hosts": hosts_list, "engines": counts, "cells": []}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # a timeout or kill still cleans up
    try:
        bench.engines = description["engines"][:needed]
        bench.clients = {engine["name"]: sdk_client(engine) for engine in bench.engines}
        say(f"fleet benchmark {bench.run_id}: cells {', '.join(f'{hosts}x{count}' for hosts, count in cells)}, "
            f"{', '.join(engine['name'] for engine in bench.engines)}; work in {bench.workdir}")
        release(bench)
        ship_images(bench, dict(description, engines=bench.engines))
        create_networks(bench)
        for round_number in range(1, rounds + 1):
            for hosts, count in cells:
                say(f"cell: {hosts} hosts over {count} engine(s), round {round_number}")
                try:
                    result["cells"].append(measure_cell(bench, hosts, count, round_number))
                except (BenchError, docker.errors.DockerException, OSError) as error:  # an engine lost mid-cell
                    say(f"  cell failed: {error}"[:2000])
                    result["cells"].append({"hosts": hosts, "engines": count, "round": round_number,
                                            "error": str(error)[:2000]})
                save_partial(result)
    finally:
        cleanup(bench)
        if needed > 3:
            rig_up(3)  # rig.json back to the three engines the tests and the demo use
    measured = [cell for cell in result["cells"] if "error" not in cell]
    result["tables"] = [result_table(measured), growth_table(measured), anchor_table(measured)]
    return result


if __name__ == "__main__":
    from run import main
    sys.exit(main(["fleet", *sys.argv[1:]]))
