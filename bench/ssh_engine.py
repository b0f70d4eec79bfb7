"""The ssh:// benchmark: what one Docker API call costs on an engine reached over SSH, kept against
starting SSH again for each call, with the local socket as the anchor.

Every round runs the same calls, a task's usual mix, four ways in an order rotated by one place per round:
local     the machine's own engine through its unix socket (the anchor)
relay     the ssh:// engine (scripts/ssh_engine.py) through the collection's client: one SSH connection
          for the client, a channel running `docker system dial-stdio` per HTTP connection
per-call  the same engine through the Docker SDK with use_ssh_client=True, which runs the system `ssh`
          (OpenSSH, with the engine's key and known_hosts) for every request
sdk       the same engine through the Docker SDK's own paramiko transport (its default for ssh://)

The calls: `info`, `inspect_image` of the base, `containers` with a label filter and an exec of `true`
in a running container (create, start, inspect: three calls, the start a hijacked stream), repeated
--calls times. Each approach connects first (its time is reported apart) and its container is made and
removed outside the timing.

Usage: .venv/bin/python bench/ssh_engine.py [--runs N] [--calls N]   (or bench/run.py ssh_engine)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from measure import REPO_ROOT, BenchError, ensure_collection_link, machine_facts, say

CALLS_PER_ROUND = 6  # info, inspect_image, containers, exec create + start + inspect


def _ssh_engine() -> dict:
    process = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "ssh_engine.py"), "up"],
                             capture_output=True, text=True, check=False)
    if process.returncode != 0:
        raise BenchError(f"the ssh:// engine did not start: {process.stdout[-500:]}{process.stderr[-500:]}")
    rig_dir = os.environ.get("IMMUTABLE_INFRA_RIG_DIR", "/var/lib/immutable-infra/rig")
    with open(os.path.join(rig_dir, "ssh-engine.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _ssh_wrapper(home: str) -> str:
    """A directory with an `ssh` that is OpenSSH with the engine's key and known_hosts (OpenSSH reads the
    home directory of the user, not HOME)."""
    directory = tempfile.mkdtemp(prefix="bench-ssh-")
    config = os.path.join(directory, "config")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"IdentityFile {home}/.ssh/id_ed25519\nUserKnownHostsFile {home}/.ssh/known_hosts\n"
                     "BatchMode yes\n")
    wrapper = os.path.join(directory, "ssh")
    with open(wrapper, "w", encoding="utf-8") as handle:
        handle.write(f'#!/bin/sh\necho call >> {directory}/calls\nexec /usr/bin/ssh -F {config} "$@"\n')
    os.chmod(wrapper, 0o755)
    return directory


class Approach:
    """One way to reach an engine: calls through a low-level SDK client, and a container to exec in."""

    def __init__(self, name: str, api: Any, image: str, closer: Callable[[], None]) -> None:
        self.name, self.api, self.closer = name, api, closer
        self.image = image
        self.container = api.create_container(image, command=["sleep", "600"], name=f"bench-ssh-{uuid.uuid4().hex[:8]}",
                                              labels={"immutable-infra.bench": "ssh"})["Id"]
        api.start(self.container)

    def calls(self, count: int) -> None:
        for _round in range(count):
            self.api.info()
            self.api.inspect_image(self.image)
            self.api.containers(filters={"label": "immutable-infra.bench=ssh"})
            execution = self.api.exec_create(self.container, ["true"])
            self.api.exec_start(execution["Id"])
            assert self.api.exec_inspect(execution["Id"])["ExitCode"] == 0

    def close(self) -> None:
        self.api.remove_container(self.container, force=True)
        self.closer()


def _connect(name: str, described: dict, wrapper: str, base: str) -> tuple[Approach, float, Any]:
    import docker

    from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
    from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import Endpoint

    began = time.monotonic()
    if name == "local":
        client = DockerClient()
        connected = time.monotonic() - began
        return Approach(name, client.sdk.api, base, client.close), connected, None
    if name == "relay":
        client = DockerClient(Endpoint(described["docker_host"]))
        connected = time.monotonic() - began
        return Approach(name, client.sdk.api, base, client.close), connected, client.relay
    sdk = docker.APIClient(base_url=described["docker_host"], use_ssh_client=name == "per-call", timeout=60)
    connected = time.monotonic() - began
    return Approach(name, sdk, base, sdk.close), connected, None


def run(args: argparse.Namespace) -> dict:
    ensure_collection_link()
    sys.path.insert(0, os.path.join(REPO_ROOT, ".build", "collections"))
    described = _ssh_engine()
    wrapper = _ssh_wrapper(described["home"])
    os.environ["HOME"] = described["home"]  # paramiko (the relay and the SDK's own) reads ~/.ssh there
    os.environ["PATH"] = f"{wrapper}{os.pathsep}{os.environ['PATH']}"  # the SDK's per-call ssh
    calls = getattr(args, "calls", 10)
    names = ["local", "relay", "per-call", "sdk"]
    results: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "connect": []} for name in names}
    notes: dict[str, Any] = {}
    for round_index in range(args.runs):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            try:
                approach, connected, relay = _connect(name, described, wrapper, args.base)
            except Exception as error:  # an approach that cannot connect is reported, not fatal
                notes[name] = f"could not connect: {type(error).__name__}: {error}"[:300]
                continue
            began = time.monotonic()
            try:
                approach.calls(calls)
                results[name]["seconds"].append(time.monotonic() - began)
                results[name]["connect"].append(connected)
            except Exception as error:
                notes[name] = f"failed after {time.monotonic() - began:.1f} s: {type(error).__name__}: {error}"[:300]
            finally:
                if relay is not None:
                    notes["relay"] = {"ssh_connections": relay.connections, "channels": relay.channels,
                                      "most_open": relay.most_open}
                approach.close()
            say(f"round {round_index + 1}: {name} done")
    calls_file = os.path.join(wrapper, "calls")
    if os.path.exists(calls_file):
        with open(calls_file, encoding="utf-8") as handle:
            notes["per-call ssh processes"] = len(handle.readlines())
    return _report(results, notes, calls, args.runs)


def _report(results: dict[str, dict[str, list[float]]], notes: dict[str, Any], calls: int, runs: int) -> dict:
    total_calls = calls * CALLS_PER_ROUND
    anchor = statistics.median(results["local"]["seconds"]) / total_calls
    rows = []
    for name, measured in results.items():
        if not measured["seconds"]:
            rows.append([name, "-", "-", "-", "-", str(notes.get(name, ""))])
            continue
        per_call = statistics.median(measured["seconds"]) / total_calls
        rows.append([name, f"{statistics.median(measured['connect']):.3f}", f"{per_call * 1000:.1f}",
                     f"{min(measured['seconds']) / total_calls * 1000:.1f}", f"{per_call / anchor:.1f}x",
                     str(notes.get(name, ""))[:120]])
    return {"machine": machine_facts(), "calls_per_round": total_calls, "runs": runs, "results": results,
            "notes": notes, "tables": [{
                "title": f"ssh:// engine: {total_calls} calls a round (median of {runs} rounds)",
                "header": ["approach", "connect s", "ms/call", "min ms/call", "/ local", "notes"], "rows": rows}]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=10, help="repetitions of the call mix per round (default: 10)")


def main(argv: list[str]) -> None:
    from measure import DEFAULT_BASE_IMAGE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", default=DEFAULT_BASE_IMAGE)
    add_arguments(parser)
    report = run(parser.parse_args(argv))
    for table in report["tables"]:
        print(table["title"])
        for row in [table["header"], *table["rows"]]:
            print(" | ".join(str(cell) for cell in row))


if __name__ == "__main__":
    main(sys.argv[1:])
