"""How many Docker API calls a rollout makes per host, counted on the way to the engine.

The example hello service is baked and verified as versions 1.0 and 2.0 (bench/rollout-release.yml) on
the local engine. A proxy in this process listens on a unix socket in a temporary directory, forwards
every connection to the engine's own socket and counts the HTTP requests that pass through it by method
and path (IDs and names replaced by {id}). Then `immutable.infra.rollout`, reaching the engine through
that socket (DOCKER_HOST=unix://...), runs three times in `ansible-playbook` with HAProxy's runtime API
as its balancer, each counted apart:

first     the first rollout of HOSTS hosts of 1.0 (none before)
rolling   the rolling replacement of those hosts by 2.0, batch_size 1 (the rollout benchmark's settings)
unchanged the same task again: nothing to do

Each run is reported as calls in all, calls per host it started, and by kind. Calls per host times the
cost per call of an engine kind (bench/ssh_engine.py) is what that kind adds to a rollout. Each run is also
timed whole, beside an ansible-playbook with one debug task: what a task costs outside its own rollout.

Usage: .venv/bin/python bench/api_calls.py [--hosts N]   (or bench/run.py api_calls)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import tempfile
import threading
import uuid
from typing import Any

import docker
from docker.errors import NotFound
from measure import (
    BENCH_DIR,
    COLLECTIONS_PATH,
    LABEL_KEY,
    VENV_BIN,
    BenchError,
    bench_env,
    ensure_collection_link,
    free_port,
    machine_facts,
    play_results,
    remove_labelled,
    run_timed,
    say,
    start_haproxy_process,
    stop_haproxy,
)

ENGINE_SOCKET = "/var/run/docker.sock"
HOSTS = 10
DEMO = os.path.join(os.path.dirname(BENCH_DIR), "examples", "demo")
VARIABLE_PART = re.compile(r"/(containers|images|volumes|networks|exec)/(?!json|create|prune|load|search)[^/]+")


def call_kind(method: str, path: str) -> str:
    """'POST /containers/{id}/start' from 'POST /v1.41/containers/abc.../start'."""
    path = VARIABLE_PART.sub(r"/\1/{id}", re.sub(r"^/v\d+\.\d+", "", path))
    return f"{method} {path}"


class CountingProxy:
    """A unix socket that forwards every connection to the engine's socket and counts the requests on it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        if not self.ready.wait(10):
            raise BenchError("the counting proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def take(self) -> collections.Counter[str]:
        with self.lock:
            counted, self.counts = self.counts, collections.Counter()
        return counted

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_unix_server(self._connection, path=self.path))
        self.ready.set()
        self.loop.run_forever()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(ENGINE_SOCKET)
        await asyncio.gather(self._pipe(client_reader, engine_writer, count=True),
                             self._pipe(engine_reader, client_writer, count=False), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        requests = RequestCounter(self) if count else None
        try:
            while data := await reader.read(65536):
                if requests:
                    requests.feed(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


class RequestCounter:
    """Finds the requests in one connection's bytes to the engine: each head up to its blank line, then
    Content-Length bytes of body. A hijacked connection (an exec's or attach's raw stream) or a chunked
    body is not read further; the request that began it is counted."""

    def __init__(self, proxy: CountingProxy) -> None:
        self.proxy = proxy
        self.buffer = b""
        self.body_left = 0
        self.raw = False

    def feed(self, data: bytes) -> None:
        if self.raw:
            return
        self.buffer += data
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.body_left -= taken
                self.buffer = self.buffer[taken:]
                if self.body_left:
                    return
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            self.count(head)
            if self.raw:
                return

    def count(self, head: str) -> None:
        lines = head.split("\r\n")
        method, path = lines[0].split(" ")[:2]
        with self.proxy.lock:
            self.proxy.counts[call_kind(method, path.split("?")[0])] += 1
        headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip() for line in lines[1:] if ":" in line}
        self.body_left = int(headers.get("content-length") or 0)
        self.raw = "upgrade" in headers or headers.get("transfer-encoding") == "chunked"


def release(workdir: str, run_id: str, base: str, env: dict[str, str]) -> dict[str, str]:
    extra_vars = {"bench_image": f"bench-calls-{run_id}/hello", "bench_base": base, "bench_label": run_id,
                  "bench_roles_dir": os.path.join(DEMO, "roles"), "bench_versions": ["1.0", "2.0"],
                  "bench_tests": os.path.join(DEMO, "tests", "test_hello.py"),
                  "bench_report_dir": os.path.join(workdir, "reports")}
    timed = run_timed([os.path.join(VENV_BIN, "ansible-playbook"), os.path.join(BENCH_DIR, "rollout-release.yml"),
                       "-e", json.dumps(extra_vars)], env=env, cwd=workdir)
    results = play_results(timed)
    if timed.returncode != 0 or any(result.get("failed") for result in results):
        raise BenchError(f"baking or verifying hello failed:\n{timed.tail()}")
    return {baked["item"]: baked["image_id"] for baked in results[0]["results"]}


def haproxy(workdir: str, hosts: int) -> tuple[Any, str]:
    runtime_api = os.path.join(workdir, "admin.sock")
    config = os.path.join(workdir, "haproxy.cfg")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write("\n".join([
            "global", f"    stats socket {runtime_api} mode 600 level admin", "", "defaults", "    mode http",
            "    timeout connect 1s", "    timeout client 10s", "    timeout server 10s", "    timeout check 1s", "",
            "frontend fe_hello", f"    bind 127.0.0.1:{free_port()}", "    default_backend hello", "",
            "backend hello", "    option httpchk GET /healthz", "    default-server inter 100ms rise 1 fall 2",
            f"    server-template slot 1-{2 * hosts + 2} parked.invalid:80 check disabled init-addr last,0.0.0.0", ""]))
    return start_haproxy_process(config, runtime_api, os.path.join(workdir, "haproxy.log")), runtime_api


def one_task_play(workdir: str, env: dict[str, str], task: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The task's result and the whole ansible-playbook's seconds."""
    path = os.path.join(workdir, "play.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"name": "calls", "hosts": "localhost", "gather_facts": False,
                    "tasks": [dict(task, name="The task")]}], handle)
    timed = run_timed([os.path.join(VENV_BIN, "ansible-playbook"), path], env=env, cwd=workdir)
    result = play_results(timed)[0]
    if timed.returncode != 0 or result.get("failed"):
        raise BenchError(f"the task failed: {result.get('msg')}\n{timed.tail()}")
    return result, round(timed.wall, 2)


def counted_run(proxy: CountingProxy, name: str, played: tuple[dict[str, Any], float]) -> dict[str, Any]:
    result, wall = played
    counts = proxy.take()
    total = sum(counts.values())
    started = len(result.get("added") or [])
    per_host = round(total / started, 2) if started else "-"
    say(f"  {name}: {total} calls, {per_host} per host started ({started}), changed {result.get('changed')}, "
        f"task {result.get('duration')} s, ansible-playbook {wall} s")
    return {"calls": total, "hosts_started": started, "per_host": per_host, "changed": result.get("changed"),
            "duration": result.get("duration"), "wall": wall, "by_kind": dict(counts.most_common())}


def cleanup(run_id: str, service: str, images: dict[str, str], haproxy_process: Any) -> None:
    stop_haproxy(haproxy_process)
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": f"immutable.infra.service={service}"}):
        container.remove(force=True)
    for container in client.containers.list(all=True, filters={"name": f"immutable-infra-lock-{service}"}):
        container.remove(force=True)
    remove_labelled(run_id)
    names = [f"immutable-infra-{kind}-{service}" for kind in ("rollout", "service", "stopping")]
    names += [f"immutable-infra-verdict-{image.split(':', 1)[-1]}" for image in images.values()]
    for name in names:
        try:
            client.volumes.get(name).remove(force=True)
        except NotFound:
            pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_collection_link()
    hosts = getattr(args, "hosts", HOSTS)
    run_id = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix="bench-calls-")
    service = f"calls{run_id[:6]}"
    env = bench_env({"ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH") or COLLECTIONS_PATH,
                     "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                     "IMMUTABLE_INFRA_LEDGER": os.path.join(workdir, "ledger.jsonl")})
    images: dict[str, str] = {}
    haproxy_process = None
    say(f"api_calls benchmark {run_id}: {hosts} hosts, work in {workdir}")
    try:
        images = release(workdir, run_id, args.base, env)
        haproxy_process, runtime_api = haproxy(workdir, hosts)
        counted_env = dict(env, DOCKER_HOST=f"unix://{os.path.join(workdir, 'engine.sock')}")
        runs = {}
        with CountingProxy(os.path.join(workdir, "engine.sock")) as proxy:
            for name, version in (("first", "1.0"), ("rolling", "2.0"), ("unchanged", "2.0")):
                task = {"service": service, "image": images[version], "replicas": hosts, "strategy": "rolling",
                        "batch_size": 1, "port": 8000, "health": {"http_path": "/healthz", "interval": 0.1},
                        "container": {"labels": {LABEL_KEY: run_id}},
                        "balancer": {"runtime_api": runtime_api, "backend": "hello"}}
                proxy.take()
                runs[name] = counted_run(proxy, name, one_task_play(workdir, counted_env,
                                                                    {"immutable.infra.rollout": task}))
        _result, debug_wall = one_task_play(workdir, env, {"ansible.builtin.debug": {"msg": "nothing"}})
        say(f"  ansible-playbook with one debug task: {debug_wall} s")
    finally:
        cleanup(run_id, service, images, haproxy_process)
    return {"machine": machine_facts(), "hosts": hosts, "runs": runs, "debug_wall": debug_wall,
            "tables": [table(runs), times_table(runs, debug_wall)]}


def table(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kinds = sorted({kind for counted in runs.values() for kind in counted["by_kind"]},
                   key=lambda kind: -runs["rolling"]["by_kind"].get(kind, 0))
    rows = [[kind, *(counted["by_kind"].get(kind, 0) for counted in runs.values())] for kind in kinds]
    rows.append(["all calls", *(counted["calls"] for counted in runs.values())])
    rows.append(["per host started", *(counted["per_host"] for counted in runs.values())])
    return {"title": "Docker API calls of a rollout, by kind", "header": ["call", *runs], "rows": rows}


def times_table(runs: dict[str, dict[str, Any]], debug_wall: float) -> dict[str, Any]:
    """Where a run's seconds go: the task's own duration (from its transaction's start), and the rest of
    ansible-playbook beyond what one debug task takes (loading the module, reaching the engine, the gates)."""
    rows = [[name, counted["wall"], counted["duration"], round(counted["wall"] - (counted["duration"] or 0), 2),
             round(counted["wall"] - (counted["duration"] or 0) - debug_wall, 2)] for name, counted in runs.items()]
    return {"title": f"seconds of each run (ansible-playbook with one debug task: {debug_wall} s)",
            "header": ["run", "ansible-playbook", "task duration", "outside the duration", "beyond a debug task"],
            "rows": rows}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=int, default=HOSTS)
    parser.add_argument("--base", default="immutable-infra/base:bookworm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
