"""A service as a new user brings it, behind a stock HAProxy, against a tidy one behind the tuned config.

Two fleets of 3 replicas of the example hello service, under steady load, one HAProxy on 127.0.0.1:

tuned   hello that exits at once on SIGTERM, behind the backend docs/haproxy.md recommends
        (slots parked at 0.0.0.0, default-server inter 1s downinter 200ms fastinter 200ms rise 2 fall 2)
stock   hello that ignores SIGTERM (as many programs run as PID 1 do), behind a stock backend:
        `server-template slot 1-20 127.0.0.1:9 check disabled`, option httpchk GET /healthz, HAProxy's
        default check timing (inter 2s, rise 2, fall 3)

Each round: (1) the tuned fleet rolls out the other version, (2) the stock fleet rolls out version 2.0,
(3) the stock fleet rolls back to its previous revision, whose hosts are kept (and, since its service
ignores SIGTERM and the rollout did not wait, still being stopped by the engine). Every rollout is one
immutable.infra.rollout (rollback: immutable.infra.rollback) task in ansible-playbook with the
module's defaults (health GET /healthz every 0.5 s, healthy_threshold 2, stop_timeout 10), timed
as the whole command and as the task's own duration. scripts/steady_load.py sends LOAD_RATE requests
per second to the fleet's frontend meanwhile and counts the ones that fail.

The images are baked with immutable.infra.bake; their verdicts are recorded directly (the rollout
benchmark verifies for real; verification is not what is measured here). Names: bench-stock-<run>
and service names bench_<run>_tuned / _stock (no '-', so the code before hyphenated names can run it).

Usage: .venv/bin/python bench/stock.py [--runs N] [--collections PATH]   (under the heavy lock)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial

import docker
from measure import (
    COLLECTIONS_PATH,
    LABEL_KEY,
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    bench_env,
    free_port,
    run_timed,
    say,
    start_haproxy_process,
    stop_haproxy,
    summary,
)

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
sys.path.insert(0, COLLECTIONS_PATH)

from steady_load import SteadyLoad

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict

ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
DEMO = os.path.join(REPO_ROOT, "examples", "demo")
REPLICAS = 3
LOAD_RATE = 100.0
KEEP = 10  # every generation stays, so each rollback restores the kept one whatever retention would pick
HELLO_CONFIG = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
                "exposed_ports": ["8000/tcp"]}
BACKENDS = {
    "tuned": ["    default-server inter 1s downinter 200ms fastinter 200ms rise 2 fall 2",
              "    server-template slot 1-20 parked.invalid:80 check disabled init-addr last,0.0.0.0"],
    "stock": ["    server-template slot 1-20 127.0.0.1:9 check disabled"],
}


def start_haproxy(workdir: str, ports: dict[str, int]) -> subprocess.Popen:
    lines = ["global", f"    stats socket {workdir}/admin.sock mode 600 level admin", "", "defaults", "    mode http",
             "    timeout connect 1s", "    timeout client 10s", "    timeout server 10s", "    timeout check 1s",
             "    option redispatch", "    retries 3"]
    for name, backend in BACKENDS.items():
        lines += ["", f"frontend fe_{name}", f"    bind 127.0.0.1:{ports[name]}", f"    default_backend {name}", "",
                  f"backend {name}", "    balance roundrobin", "    option httpchk GET /healthz",
                  "    http-check expect status 200", *backend]
    config = os.path.join(workdir, "haproxy.cfg")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return start_haproxy_process(config, f"{workdir}/admin.sock", os.path.join(workdir, "haproxy.log"))


def playbook(workdir: str, name: str, tasks: list[dict], env: dict[str, str]) -> tuple[float, dict]:
    """Runs one play; returns the command's wall time and the last task's result."""
    path = os.path.join(workdir, f"{name}.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], handle)
    timed = run_timed([ANSIBLE_PLAYBOOK, path], env=env, cwd=workdir)
    lines = [line for _offset, line in timed.lines]
    try:
        report = json.loads("".join(lines[lines.index("{\n"):]))
        results = [task["hosts"]["localhost"] for task in report["plays"][0]["tasks"]]
    except (ValueError, KeyError, IndexError):
        raise BenchError(f"no results from {name}:\n{timed.tail()}") from None
    if timed.returncode != 0 or any(result.get("failed") for result in results):
        raise BenchError(f"{name} failed: {[result.get('msg') for result in results]}")
    return timed.wall, results[-1]


def bake(workdir: str, run_id: str, env: dict[str, str]) -> dict[str, str]:
    os.symlink(os.path.join(DEMO, "roles"), os.path.join(workdir, "roles"))
    images = {}
    tasks = [{"name": f"{kind} {version}", "immutable.infra.bake": {
        "name": f"bench-stock-{run_id}/hello",
        "base": os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm"),
        "roles": ["hello"], "config": dict(HELLO_CONFIG, labels={LABEL_KEY: run_id}),
        "vars": {"hello_version": version, "hello_ignore_sigterm": kind == "stock", "bench_run": run_id}}}
        for kind in BACKENDS for version in ("1.0", "2.0")]
    path = os.path.join(workdir, "bake.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], handle)
    timed = run_timed([ANSIBLE_PLAYBOOK, path], env=env, cwd=workdir)
    lines = [line for _offset, line in timed.lines]
    report = json.loads("".join(lines[lines.index("{\n"):]))
    client = DockerClient()
    for task in report["plays"][0]["tasks"]:
        result = task["hosts"]["localhost"]
        if result.get("failed"):
            raise BenchError(f"bake failed: {result.get('msg')}")
        images[task["task"]["name"]] = result["image_id"]
        record_verdict(client, result["image_id"], True, {"time": "bench", "reference": result["image_id"]})
    return images


def rollout(service: str, image: str, runtime_api: str, backend: str, label: str) -> dict:
    return {"name": "rollout", "immutable.infra.rollout": {
        "service": service, "image": image, "replicas": REPLICAS, "port": 8000, "health": {"http_path": "/healthz"},
        "keep_previous": KEEP,
        "container": {"labels": {LABEL_KEY: label.split(":", maxsplit=1)[0], f"{LABEL_KEY}.round": label}},
        "balancer": {"runtime_api": runtime_api, "backend": backend}}}


def under_load(url: str, action) -> dict:
    with SteadyLoad(url, rate=LOAD_RATE, max_seconds=300, max_requests=40000) as load:
        time.sleep(0.5)
        wall, result = action()
        time.sleep(0.3)
    counted = load.summary()
    return {"wall": round(wall, 3), "task": result.get("duration"), "kind": result.get("kind"),
            "sent": counted["sent"], "failed": counted["failed"], "errors": counted["errors"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--collections", default=os.environ.get("ANSIBLE_COLLECTIONS_PATH") or COLLECTIONS_PATH,
                        help="ANSIBLE_COLLECTIONS_PATH holding the immutable.infra to measure")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix="bench-stock-")
    env = bench_env({"ANSIBLE_COLLECTIONS_PATH": args.collections, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                     "IMMUTABLE_INFRA_LEDGER": os.path.join(workdir, "ledger.jsonl")})
    services = {kind: f"bench_{run_id}_{kind}" for kind in BACKENDS}
    ports = {kind: free_port() for kind in BACKENDS}
    runtime_api = os.path.join(workdir, "admin.sock")
    haproxy = None
    rounds = []
    try:
        say(f"stock: baking (run {run_id}, collections {args.collections})")
        images = bake(workdir, run_id, env)
        haproxy = start_haproxy(workdir, ports)
        for kind in BACKENDS:
            playbook(workdir, f"first-{kind}", [rollout(services[kind], images[f"{kind} 1.0"], runtime_api, kind,
                                                        f"{run_id}:0")], env)
        for number in range(1, args.runs + 1):
            tuned_version = ("2.0", "1.0")[(number - 1) % 2]
            measured = {"round": number}
            tuned = rollout(services["tuned"], images[f"tuned {tuned_version}"], runtime_api, "tuned",
                            f"{run_id}:{number}")
            stock = rollout(services["stock"], images["stock 2.0"], runtime_api, "stock", f"{run_id}:{number}")
            back = {"name": "rollback", "immutable.infra.rollback": {
                "service": services["stock"], "keep_previous": KEEP,
                "balancer": {"runtime_api": runtime_api, "backend": "stock"}}}
            measured["tuned rollout"] = under_load(f"http://127.0.0.1:{ports['tuned']}/",
                                                   partial(playbook, workdir, f"tuned-{number}", [tuned], env))
            measured["stock rollout"] = under_load(f"http://127.0.0.1:{ports['stock']}/",
                                                   partial(playbook, workdir, f"stock-{number}", [stock], env))
            measured["stock rollback"] = under_load(f"http://127.0.0.1:{ports['stock']}/",
                                                    partial(playbook, workdir, f"rollback-{number}", [back], env))
            timings = [f"{name} {entry['wall']:.2f} s (task {entry['task']}, {entry['failed']}/{entry['sent']} failed)"
                       for name, entry in measured.items() if name != "round"]
            say(f"  round {number}: " + ", ".join(timings))
            rounds.append(measured)
    finally:
        stop_haproxy(haproxy)
        client = docker.from_env()
        for container in client.containers.list(all=True, filters={"label": LABEL_KEY}):
            if container.labels.get(LABEL_KEY) == run_id:
                container.remove(force=True)
        for name in services.values():
            for container in client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{name}"}):
                container.remove(force=True)
            for prefix in ("immutable-infra-rollout-", "immutable-infra-stopping-"):
                for volume in client.volumes.list(filters={"name": prefix + name}):
                    volume.remove(force=True)
        for image in client.images.list(filters={"label": f"{LABEL_KEY}={run_id}"}):
            for volume in client.volumes.list(filters={"label": f"immutable.infra.image_id={image.id}"}):
                volume.remove(force=True)
            client.images.remove(image.id, force=True)
        shutil.rmtree(workdir, ignore_errors=True)
    table = {}
    for name in ("tuned rollout", "stock rollout", "stock rollback"):
        table[name] = {"wall": summary(entry[name]["wall"] for entry in rounds),
                       "task": summary(entry[name]["task"] for entry in rounds),
                       "sent": sum(entry[name]["sent"] for entry in rounds),
                       "failed": sum(entry[name]["failed"] for entry in rounds),
                       "kinds": sorted({entry[name]["kind"] for entry in rounds})}
    ratio = table["stock rollout"]["task"]["median"] / table["tuned rollout"]["task"]["median"]
    print(json.dumps({"rounds": rounds, "summary": table, "stock/tuned task": round(ratio, 3)}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        say(f"stock: {error}")
        sys.exit(1)
