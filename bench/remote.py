"""One service of 12 hosts over the local engine and a second engine, against the same hosts on the local
engine alone: does a second engine make a rolling rollout faster, and how far is each from its floor?

Two versions of the example hello service are baked and verified on the local engine
(bench/rollout-release.yml) and shipped to the second engine with their verdicts before anything is
measured. Each engine gets a network of its own. One HAProxy on 127.0.0.1 fronts the two services, each
with a backend of its own (2H+8 server-template slots, checked with GET /healthz once a second). Each
round, in turn:

one    immutable.infra.rollout of HOSTS hosts on the local engine alone, rolling, batch_size BATCH,
       under steady load (scripts/steady_load.py, LOAD_RATE requests/s through HAProxy), in
       ansible-playbook; measured: the whole command and the task's own duration
two    the same over the local engine and the second one (placement even: every batch takes half its
       hosts from each engine), in a service of its own
floor  for each of the two, the same hosts of the new version started with the Docker SDK, one thread per
       engine, each host until its first /healthz 200; no balancer, no load

The second engine is the rig's first engine (TLS on loopback, make engines) unless
IMMUTABLE_INFRA_BENCH_REMOTE names another as JSON ({"name", "docker_host", "tls": {...} or null,
"addressing": "container" or "published"}), e.g. an ssh:// engine on another address (published: its
hosts are reached at that address). Every container, image and network made here carries the label
immutable-infra.bench=<run id> and is removed at the end.

Usage: .venv/bin/python bench/run.py remote [--runs N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import uuid
from typing import Any

import docker
from docker.errors import APIError
from fleet import (
    PORT,
    SERVER_CHECK,
    VERSIONS,
    Bench,
    cleanup,
    create_networks,
    play_results,
    playbook,
    release,
    remove_containers,
    rig_up,
    sdk_client,
    ship_images,
    under_load,
    write_yaml,
)
from measure import (
    LABEL_KEY,
    BenchError,
    ensure_base_image,
    ensure_collection_link,
    first_200,
    floor_in_threads,
    free_port,
    machine_busy,
    say,
    start_haproxy_process,
)

HOSTS = 12
BATCH = 4
LOCAL = {"name": "local", "docker_host": "unix:///var/run/docker.sock", "tls": None, "addressing": "container"}


def second_engine(description: dict[str, Any]) -> dict[str, Any]:
    given = os.environ.get("IMMUTABLE_INFRA_BENCH_REMOTE")
    if given:
        return dict({"tls": None, "addressing": "container"}, **json.loads(given))
    return dict(description["engines"][0], addressing="container")


def task_engines(engines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: engine[key] for key in ("name", "docker_host", "tls") if engine.get(key)} for engine in engines]


def ours(bench: Bench, engines: list[dict[str, Any]], version: str, service: str) -> dict[str, Any]:
    task = {"name": "Rollout", "immutable.infra.rollout": {
        "service": service, "image": bench.images[version], "replicas": HOSTS, "strategy": "rolling",
        "batch_size": BATCH, "port": PORT, "health": {"http_path": "/healthz", "interval": 0.1},
        "container": {"networks": [bench.network], "labels": {LABEL_KEY: bench.run_id}},
        "balancer": {"runtime_api": bench.runtime_api, "backend": backend_of(engines)},
        "engines": task_engines(engines), "addressing": engines[-1]["addressing"], "lock_timeout": 600}}
    play = {"name": "ours", "hosts": "localhost", "gather_facts": False, "tasks": [task]}
    path = write_yaml(bench, "remote.yml", [play])
    timed = playbook(bench, path, [])
    result = play_results(timed)[0]
    if timed.returncode != 0 or result.get("failed") or not result.get("changed"):
        raise BenchError(f"the rollout of {service} to {version} failed: {result.get('msg')}\n{timed.tail()}")
    return {"wall": round(timed.wall, 2), "task": result.get("duration"), "peak_mb": round(timed.peak_rss / 1e6)}


def backend_of(engines: list[dict[str, Any]]) -> str:
    return "one" if len(engines) == 1 else "two"


def start_balancer(bench: Bench) -> None:
    bench.ports = {"one": free_port(), "two": free_port()}
    lines = ["global", f"    stats socket {bench.runtime_api} mode 600 level admin", "    stats timeout 10s", "",
             "defaults", "    mode http", "    timeout connect 1s", "    timeout client 10s", "    timeout server 10s",
             "    timeout check 1s", "    option redispatch", "    retries 3", ""]
    for backend, port in bench.ports.items():
        lines += [f"frontend fe_{backend}", f"    bind 127.0.0.1:{port}", f"    default_backend {backend}", "",
                  f"backend {backend}", "    balance roundrobin", "    option httpchk GET /healthz",
                  "    http-check expect status 200", f"    default-server {SERVER_CHECK}",
                  f"    server-template slot 1-{2 * HOSTS + 8} parked.invalid:80 check disabled init-addr last,0.0.0.0",
                  ""]
    config = os.path.join(bench.workdir, "haproxy.cfg")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    bench.haproxy = start_haproxy_process(config, bench.runtime_api, os.path.join(bench.workdir, "haproxy.log"))


def host_address(container: Any, engine: dict[str, Any], network: str) -> tuple[str, int]:
    container.reload()
    if engine["addressing"] == "published":
        port = container.attrs["NetworkSettings"]["Ports"][f"{PORT}/tcp"][0]["HostPort"]
        return engine.get("address") or "127.0.0.1", int(port)
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"], PORT


def floor(bench: Bench, engines: list[dict[str, Any]], version: str, round_number: int) -> dict[str, Any]:
    """The hosts of a cell started with the SDK, one thread per engine, each until its first 200."""
    errors: list[str] = []

    def start_share(engine: dict[str, Any], count: int) -> None:
        client = bench.clients[engine["name"]]
        publish = {f"{PORT}/tcp": (engine.get("bind") or "127.0.0.1", None)} if engine["addressing"] == "published" else None
        try:
            for index in range(count):
                image = bench.images[version] if engine is LOCAL else bench.shipped_tag(version)  # baked here
                container = client.containers.run(image, detach=True,
                                                  name=f"floor-{bench.run_id}-{round_number}-{engine['name']}-{index}",
                                                  labels={LABEL_KEY: bench.run_id}, network=bench.network,
                                                  ports=publish)
                first_200(*host_address(container, engine, bench.network))
        except (APIError, BenchError) as error:
            errors.append(f"{engine['name']}: {error}")

    shares = [HOSTS // len(engines) + (1 if position < HOSTS % len(engines) else 0) for position in range(len(engines))]
    return floor_in_threads([functools.partial(start_share, engine, count)
                             for engine, count in zip(engines, shares, strict=True)], errors)


def remove_floor(bench: Bench) -> None:
    for client in bench.clients.values():
        for container in client.containers.list(all=True, filters={"name": f"floor-{bench.run_id}"}):
            container.remove(force=True)


def measure_round(bench: Bench, cells: dict[str, list[dict[str, Any]]], round_number: int) -> dict[str, Any]:
    version = VERSIONS[(round_number - 1) % 2]  # round 1 replaces the first fleet (VERSIONS[1])
    measured: dict[str, Any] = {"round": round_number, "to": version}
    for cell, engines in cells.items():
        busy = machine_busy()
        measured[cell] = dict(under_load(bench, backend_of(engines), lambda engines=engines, cell=cell: ours(
            bench, engines, version, f"rm{bench.run_id[:6]}-{cell}")), busy=busy)
        measured[f"{cell}_floor"] = floor(bench, engines, version, round_number)
        remove_floor(bench)
        say(f"  round {round_number}: {cell} engine(s) {measured[cell]['wall']} s (task {measured[cell]['task']} s), "
            f"{measured[cell]['failed']} of {measured[cell]['sent']} failed; floor {measured[f'{cell}_floor']['wall']} s "
            f"(load average {busy['load']}, {busy['vms']} VMs)")
    return measured


def summary_table(rounds: list[dict[str, Any]], second: str) -> dict[str, Any]:
    rows = []
    for cell in ("one", "two"):
        wall = statistics.median(entry[cell]["wall"] for entry in rounds)
        task = statistics.median(entry[cell]["task"] for entry in rounds)
        low = statistics.median(entry[f"{cell}_floor"]["wall"] for entry in rounds)
        rows.append([f"{HOSTS} hosts on {'local' if cell == 'one' else 'local + ' + second}", f"{wall:.2f}",
                     f"{task:.2f}", f"{low:.2f}", f"{wall / low:.2f}x", f"{task / low:.2f}x",
                     sum(entry[cell]["failed"] for entry in rounds), sum(entry[cell]["sent"] for entry in rounds)])
    two_over_one = statistics.median(entry["two"]["wall"] / entry["one"]["wall"] for entry in rounds)
    rows.append(["two engines / one engine (median of the rounds' ratios)", f"{two_over_one:.2f}x", "", "", "", "",
                 "", ""])
    return {"title": f"{HOSTS} hosts, batches of {BATCH}, rolling under steady load: medians over {len(rounds)} rounds",
            "header": ["cell", "ours s", "task s", "floor s", "ours / floor", "task / floor", "failed", "sent"],
            "rows": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_collection_link()
    ensure_base_image(args.base)
    description = rig_up(3)
    remote = second_engine(description)
    bench = Bench(uuid.uuid4().hex[:8], args.base, tempfile.mkdtemp(prefix="bench-remote-"))
    bench.engines = [LOCAL, remote]
    result: dict[str, Any] = {"machine": machine_busy(), "second_engine": {key: remote.get(key) for key in
                                                                           ("name", "docker_host", "addressing")},
                              "rounds": []}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        bench.clients = {engine["name"]: sdk_client(engine) if engine.get("tls") else
                         docker.DockerClient(base_url=engine["docker_host"]) for engine in bench.engines}
        say(f"remote benchmark {bench.run_id}: {HOSTS} hosts on local, then on local + {remote['name']} "
            f"({remote['docker_host']}); work in {bench.workdir}")
        release(bench)
        ship_images(bench, dict(description, engines=[remote]))
        create_networks(bench)
        start_balancer(bench)
        cells = {"one": [LOCAL], "two": [LOCAL, remote]}
        for cell, engines in cells.items():
            ours(bench, engines, VERSIONS[1], f"rm{bench.run_id[:6]}-{cell}")  # the fleet the rounds replace
        for round_number in range(1, args.runs + 1):
            result["rounds"].append(measure_round(bench, cells, round_number))
    finally:
        remove_containers(bench)
        cleanup(bench)
    result["tables"] = [summary_table(result["rounds"], remote["name"])]
    return result


if __name__ == "__main__":
    from run import main
    sys.exit(main(["remote", *sys.argv[1:]]))
