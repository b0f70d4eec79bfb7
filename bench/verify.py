"""The verify benchmark: what immutable.infra.verify costs beyond running the same tests by hand.

Every round measures, alternating, on the demo service's image and its testinfra tests:

verify     one immutable.infra.verify task (ansible-playbook with the profile_tasks callback): the task's
           wall time, and the time the action measured itself (task duration)
baseline   the same pytest-testinfra command against a container that is already running and listening,
           which is what a person would run by hand; starting and removing that container is not timed
overhead   verify task wall time - baseline: starting the throwaway host, waiting for its port, reading
           the JUnit report, the ledger record, the verdict on the engine and removing the host

Then two test files (two copies of the demo's tests) are verified with parallel: never and always, to
show when pytest-xdist pays for its workers. Every image and container made here is labelled and
removed at the end, however the benchmark ends.

Usage: .venv/bin/python bench/verify.py [--runs N] [--base IMAGE]   (or bench/run.py verify)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

try:
    from measure import BenchError
except ImportError:  # run on its own, without bench/run.py's helpers
    class BenchError(Exception):
        """A step of the benchmark failed; the message says which and shows the end of its output."""

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
DEMO = os.path.join(REPO_ROOT, "examples", "demo")
VENV_BIN = os.path.dirname(sys.executable)
COLLECTIONS_PATH = os.path.join(REPO_ROOT, ".build", "collections")
DEFAULT_BASE_IMAGE = os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm")
LABEL = "immutable-infra.bench"
TARGET_OVERHEAD = 1.5
PROFILE_LINE = re.compile(r"^(.*?) -+ (\d+\.\d+)s$")


def say(message: str) -> None:
    print(message, flush=True)


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def environment(workdir: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(PATH=os.pathsep.join([VENV_BIN, env.get("PATH", "/usr/bin:/bin")]), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, IMMUTABLE_INFRA_LEDGER=os.path.join(workdir, "ledger.jsonl"),
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    return env


def execute(command: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, str]:
    started = time.monotonic()
    process = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, check=False)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise BenchError(f"{' '.join(command[:4])} ... exited with code {process.returncode}:\n"
                         f"{process.stdout[-3000:]}")
    return wall, process.stdout


def playbook(workdir: str, name: str, tasks: list[dict[str, Any]]) -> str:
    """Writes a playbook whose tasks save their results to <name>-<n>.json; returns its path."""
    steps = []
    for index, task in enumerate(tasks):
        steps += [dict(task, register="out"), {"name": f"save {index}", "ansible.builtin.copy": {
            "content": "{{ out | to_json }}", "dest": os.path.join(workdir, f"{name}-{index}.json"), "mode": "0644"}}]
    path = os.path.join(workdir, f"{name}.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"name": name, "hosts": "localhost", "gather_facts": False, "tasks": steps}], handle)
    return path


def result_of(workdir: str, name: str, index: int = 0) -> dict[str, Any]:
    with open(os.path.join(workdir, f"{name}-{index}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def task_wall(output: str, task_name: str) -> float:
    """The wall time profile_tasks printed for a task."""
    for line in output.splitlines():
        match = PROFILE_LINE.match(line.strip())
        if match and match.group(1).strip() == task_name:
            return float(match.group(2))
    raise BenchError(f"profile_tasks printed no time for task '{task_name}'")


def bake(workdir: str, env: dict[str, str], base: str, run_id: str) -> str:
    config = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
              "exposed_ports": ["8000/tcp"], "labels": {LABEL: run_id}}
    path = playbook(workdir, "bake", [{"name": "bake", "immutable.infra.bake": {
        "name": f"bench-verify/{run_id}", "base": base, "roles": [os.path.join(DEMO, "roles", "hello")],
        "vars": {"bench_run": run_id}, "config": config}}])
    execute([os.path.join(VENV_BIN, "ansible-playbook"), path], env, cwd=workdir)
    return result_of(workdir, "bake")["image_id"]


def verify_round(workdir: str, env: dict[str, str], image_id: str, tests: list[str], name: str,
                 **options: Any) -> dict[str, Any]:
    path = playbook(workdir, name, [{"name": "verify", "immutable.infra.verify": dict(
        image=image_id, tests=tests, report_dir=os.path.join(workdir, "reports"), **options)}])
    wall, output = execute([os.path.join(VENV_BIN, "ansible-playbook"), path], env, cwd=workdir)
    result = result_of(workdir, name)
    if not result.get("passed"):
        raise BenchError(f"verify did not pass: {result.get('msg')}")
    return {"playbook": round(wall, 3), "task": task_wall(output, "verify"), "duration": result["duration"],
            "timings": result["timings"], "workers": result["workers"]}


def baseline_round(workdir: str, env: dict[str, str], image_id: str, tests: list[str], run_id: str) -> float:
    """The same pytest-testinfra command against a host that is already up; only pytest is timed."""
    container = subprocess.run(["docker", "run", "-d", "--label", f"{LABEL}={run_id}", image_id],
                               stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["docker", "exec", container, "python3", "-c",
                              "import socket; socket.create_connection(('127.0.0.1', 8000), 1)"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode:
            if time.monotonic() > deadline:
                raise BenchError("the baseline host never listened on port 8000")
            time.sleep(0.1)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                   f"--junitxml={os.path.join(workdir, 'baseline.xml')}", f"--hosts=docker://root@{container}",
                   "-q", *tests]
        wall, output = execute(command, env, cwd=DEMO)
        if " passed" not in output:
            raise BenchError(f"the baseline tests did not pass:\n{output[-2000:]}")
        return round(wall, 3)
    finally:
        subprocess.run(["docker", "rm", "-f", container], stdout=subprocess.DEVNULL, check=False)


def cleanup(run_id: str) -> None:
    """Removes the benchmark's containers, its image and the verdict recorded for that image."""
    def ids(kind: list[str]) -> list[str]:
        return sorted(set(subprocess.run(["docker", *kind, "--no-trunc", "--filter", f"label={LABEL}={run_id}"],
                                         stdout=subprocess.PIPE, text=True, check=False).stdout.split()))

    containers, images = ids(["ps", "-aq"]), ids(["images", "-q"])
    for command, names in (("rm", containers), ("rmi", images),
                           ("volume", [f"immutable-infra-verdict-{image.split(':', 1)[-1]}" for image in images])):
        if names:
            subprocess.run(["docker", command, *(["rm"] if command == "volume" else []), "-f", *names],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = {
        "verify task (wall)": [entry["verify"]["task"] for entry in rounds],
        "verify task (measured by the action)": [entry["verify"]["duration"] for entry in rounds],
        "ansible-playbook with the verify task": [entry["verify"]["playbook"] for entry in rounds],
        "pytest-testinfra on a running host": [entry["baseline"] for entry in rounds],
        "overhead = verify task - pytest": [round(entry["verify"]["task"] - entry["baseline"], 3) for entry in rounds],
        "  host start and port wait": [entry["verify"]["timings"].get("start", 0) for entry in rounds],
        "  pytest inside verify": [entry["verify"]["timings"].get("tests", 0) for entry in rounds],
        "  host removal": [entry["verify"]["timings"].get("cleanup", 0) for entry in rounds],
        "two files, parallel: never": [entry["serial"]["duration"] for entry in rounds],
        "two files, parallel: always (2 workers)": [entry["parallel"]["duration"] for entry in rounds],
    }
    return {key: stats(values) for key, values in keys.items()}


def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    summary = result["summary"]
    rows = [[key, value["median"], value["min"], value["max"]] for key, value in summary.items()]
    overhead = summary["overhead = verify task - pytest"]["median"]
    return [
        {"title": f"verify: seconds over {result['settings']['runs']} rounds (demo service, 5 testinfra tests)",
         "header": ["measurement", "median", "min", "max"], "rows": rows},
        {"title": "anchors", "header": ["anchor", "target", "measured (median)", "met"],
         "rows": [["verify overhead", f"< {TARGET_OVERHEAD} s", overhead, "yes" if overhead < TARGET_OVERHEAD else "no"]]},
    ]


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix="bench-verify-")
    env = environment(workdir)
    demo_tests = os.path.join(DEMO, "tests", "test_hello.py")
    pair = os.path.join(workdir, "pair")
    os.makedirs(pair)
    for name in ("test_hello_a.py", "test_hello_b.py"):
        shutil.copy(demo_tests, os.path.join(pair, name))
    result: dict[str, Any] = {"benchmark": "verify", "run_id": run_id,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"runs": args.runs, "base": args.base}, "cores": os.cpu_count(),
                              "rounds": []}
    say(f"verify: {args.runs} rounds, base {args.base}, run id {run_id}")
    try:
        image_id = bake(workdir, env, args.base, run_id)
        verify_round(workdir, env, image_id, [demo_tests], "warmup")  # page caches, Python byte code
        for index in range(args.runs):
            entry = {"verify": verify_round(workdir, env, image_id, [demo_tests], f"verify{index}"),
                     "baseline": baseline_round(workdir, env, image_id, [demo_tests], run_id),
                     "serial": verify_round(workdir, env, image_id, [pair], f"serial{index}", parallel="never"),
                     "parallel": verify_round(workdir, env, image_id, [pair], f"parallel{index}", parallel="always")}
            say(f"  round {index + 1}/{args.runs}: verify task {entry['verify']['task']:.2f} s, "
                f"pytest {entry['baseline']:.2f} s, overhead {entry['verify']['task'] - entry['baseline']:.2f} s; "
                f"two files {entry['serial']['duration']:.2f} s serial, {entry['parallel']['duration']:.2f} s parallel")
            result["rounds"].append(entry)
    finally:
        cleanup(run_id)
        shutil.rmtree(workdir, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["summary"] = summarize(result["rounds"])
    result["tables"] = tables(result)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:  # the interface bench/run.py calls
    return run_benchmark(args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base", default=DEFAULT_BASE_IMAGE)
    try:
        result = run(parser.parse_args())
    except BenchError as error:
        print(f"benchmark verify failed: {error}", file=sys.stderr)
        return 1
    for table in result["tables"]:
        say("\n" + table["title"])
        for row in [table["header"], *table["rows"]]:
            say("  ".join(str(cell).ljust(42 if index == 0 else 10) for index, cell in enumerate(row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
