"""The bake benchmark: the same nginx role baked four ways, alternated round by round.

cold    immutable.infra.bake with a new nonce var, so the inputs hash is new and the image is built
warm    the same bake again, unchanged: the image is found by its inputs hash (cache hit)
floor   docker run + plain ansible-playbook over community.docker.docker + docker commit + docker rm
packer  Packer's docker builder (pull: false, commit: true) with its ansible provisioner

Every container and image made here carries the label immutable-infra.bench=<run id> and is removed
after each round and when the benchmark ends, however it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from measure import (
    BENCH_DIR,
    COLLECTIONS_PATH,
    LABEL_KEY,
    VENV_BIN,
    BenchError,
    Timed,
    bench_env,
    command_version,
    ensure_base_image,
    ensure_collection_link,
    ensure_debian_package,
    machine_facts,
    marks_from_lines,
    phases,
    remove_labelled,
    retry_cleanup,
    run_checked,
    run_timed,
    say,
    summary,
)

ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
BAKE_PLAYBOOK = os.path.join(BENCH_DIR, "bake-nginx.yml")
SITE_PLAYBOOK = os.path.join(BENCH_DIR, "site.yml")
PACKER_TEMPLATE = os.path.join(BENCH_DIR, "packer-nginx.json")

HEAVY_APPROACHES = ("cold", "floor", "packer")
PLAY_PATTERNS = {"task": r"(?:TASK|RUNNING HANDLER) \[(.+?)\]", "finish": r"PLAY RECAP"}
BAKE_PATTERNS = {"task": r"^bake \S+: (?:task|handler) (.+?)\s*$", "builder start": r"^baking ",
                 "finish": r"^committing "}
MEASUREMENTS = (
    ("cold", "wall", "(a) cold bake: ansible-playbook"),
    ("cold", "task", "(a) cold bake: task duration"),
    ("warm", "wall", "(b) warm bake: ansible-playbook"),
    ("warm", "task", "(b) warm bake: task duration"),
    ("floor", "wall", "(c) floor: run + ansible-playbook + commit + rm"),
    ("packer", "wall", "(d) packer build"),
)
PHASE_APPROACHES = ("cold", "floor", "packer")


@dataclass
class Bench:
    """One benchmark run: its id (image names, labels) and the settings every approach shares."""

    run_id: str
    base: str
    ledger_dir: str

    @property
    def image_repository(self) -> str:
        return f"bench-{self.run_id}"

    def bake_env(self) -> dict[str, str]:
        return bench_env({"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS_PATH, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                          "IMMUTABLE_INFRA_LEDGER": os.path.join(self.ledger_dir, "ledger.jsonl")})


# set-up ------------------------------------------------------------------------------------------
def round_order(round_index: int) -> list[str]:
    """The heavy approaches rotate by one place per round; the warm bake follows its cold bake."""
    shift = round_index % len(HEAVY_APPROACHES)
    order: list[str] = []
    for approach in HEAVY_APPROACHES[shift:] + HEAVY_APPROACHES[:shift]:
        order.append(approach)
        if approach == "cold":
            order.append("warm")
    return order


# the approaches ----------------------------------------------------------------------------------
def bake_result(timed: Timed) -> dict[str, Any]:
    """The bake task's result from the ansible.posix.json output of the bake playbook."""
    lines = [line for _offset, line in timed.lines]
    try:
        report = json.loads("".join(lines[lines.index("{\n"):]))
        return report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise BenchError(f"no bake result in the output of ansible-playbook:\n{timed.tail()}") from None


def run_bake(bench: Bench, nonce: str) -> tuple[Timed, dict[str, Any]]:
    extra_vars = {"bench_image": f"{bench.image_repository}/nginx", "bench_base": bench.base,
                  "bench_label": bench.run_id, "bench_nonce": nonce}
    timed = run_timed([ANSIBLE_PLAYBOOK, BAKE_PLAYBOOK, "-e", json.dumps(extra_vars)], env=bench.bake_env(),
                      cwd=BENCH_DIR)
    result = bake_result(timed)
    if timed.returncode != 0 or result.get("failed"):
        raise BenchError(f"the bake failed: {result.get('msg')}\n{timed.tail()}")
    return timed, result


def cold_bake(bench: Bench, nonce: str) -> dict[str, Any]:
    timed, result = run_bake(bench, nonce)
    if result.get("cache_hit") or not result.get("changed"):
        raise BenchError(f"the cold bake was a cache hit: {result.get('msg')}")
    marks = [("start-up", 0.0)] + marks_from_lines(timed, BAKE_PATTERNS)
    return {"wall": round(timed.wall, 3), "task": result["duration"], "image": result["image"],
            "image_id": result["image_id"], "phases": phases(marks, timed.wall)}


def warm_bake(bench: Bench, nonce: str) -> dict[str, Any]:
    timed, result = run_bake(bench, nonce)
    if not result.get("cache_hit") or result.get("changed"):
        raise BenchError(f"the warm bake was not a cache hit: {result.get('msg')}")
    return {"wall": round(timed.wall, 3), "task": result["duration"], "image_id": result["image_id"]}


def floor(bench: Bench, round_index: int) -> dict[str, Any]:
    container = f"bench-{bench.run_id}-floor-{round_index}"
    label = f"{LABEL_KEY}={bench.run_id}"
    started = time.monotonic()
    run_checked(["docker", "run", "-d", "--name", container, "--label", label, bench.base, "sleep", "infinity"])
    play_offset = time.monotonic() - started
    play = run_checked([ANSIBLE_PLAYBOOK, "-i", f"{container},", "-c", "community.docker.docker", SITE_PLAYBOOK],
                       env=bench_env(), cwd=BENCH_DIR)
    image = f"{bench.image_repository}/floor:{round_index}"
    committed = run_checked(["docker", "commit", "--change", f"LABEL {label}", container, image])
    run_checked(["docker", "rm", "-f", container])
    wall = time.monotonic() - started
    marks = [("start-up", 0.0)] + marks_from_lines(play, PLAY_PATTERNS, offset=play_offset)
    return {"wall": round(wall, 3), "image_id": committed.stdout.strip(), "phases": phases(marks, wall)}


def packer(bench: Bench, round_index: int) -> dict[str, Any]:
    variables = {"base_image": bench.base, "container_name": f"bench-{bench.run_id}-packer-{round_index}",
                 "label": f"{LABEL_KEY}={bench.run_id}", "ansible_playbook": ANSIBLE_PLAYBOOK}
    command = ["packer", "build", "-machine-readable"]
    for key, value in variables.items():
        command += ["-var", f"{key}={value}"]
    timed = run_checked(command + [PACKER_TEMPLATE], env=bench_env({"CHECKPOINT_DISABLE": "1", "PACKER_LOG": "0"}),
                        cwd=BENCH_DIR)
    artifacts = [line.strip().rsplit(",", 1)[-1] for _offset, line in timed.lines if ",artifact,0,id," in line]
    marks = [("start-up", 0.0)] + marks_from_lines(timed, PLAY_PATTERNS)
    return {"wall": round(timed.wall, 3), "image_id": artifacts[0] if artifacts else None,
            "phases": phases(marks, timed.wall)}


def measure_round(bench: Bench, round_index: int, runs: int) -> dict[str, Any]:
    nonce = uuid.uuid4().hex
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "cold": lambda: cold_bake(bench, nonce), "warm": lambda: warm_bake(bench, nonce),
        "floor": lambda: floor(bench, round_index), "packer": lambda: packer(bench, round_index)}
    order = round_order(round_index)
    measured: dict[str, Any] = {"round": round_index + 1, "order": order}
    for approach in order:
        load = os.getloadavg()[0]
        say(f"  round {round_index + 1}/{runs}: {approach} (load average {load:.2f}) ...")
        measured[approach] = dict(steps[approach](), load_before=round(load, 2))
        task = f" (task {measured[approach]['task']:.3f} s)" if "task" in measured[approach] else ""
        say(f"  round {round_index + 1}/{runs}: {approach} {measured[approach]['wall']:.2f} s{task}")
    retry_cleanup(lambda: remove_labelled(bench.run_id))
    return measured


# the report --------------------------------------------------------------------------------------
def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    stats = {f"{approach}.{key}": summary(measured[approach][key] for measured in rounds)
             for approach, key, _title in MEASUREMENTS}
    floor_median = stats["floor.wall"]["median"]
    ratios = {f"{key}/floor": round(value["median"] / floor_median, 3) for key, value in stats.items()}
    per_round = {f"{approach}.{key}/floor": [round(measured[approach][key] / measured["floor"]["wall"], 3)
                                             for measured in rounds]
                 for approach, key, _title in MEASUREMENTS}
    phase_medians = {approach: {label: summary(measured[approach]["phases"].get(label, 0.0) for measured in rounds)
                                ["median"] for label in rounds[0][approach]["phases"]}
                     for approach in PHASE_APPROACHES}
    return {"stats": stats, "ratios": ratios, "per_round_ratios": per_round, "phase_medians": phase_medians}


def times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


def measurement_table(result: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for approach, key, title in MEASUREMENTS:
        stat = result["summary"]["stats"][f"{approach}.{key}"]
        ratio = result["summary"]["ratios"][f"{approach}.{key}/floor"]
        paired = statistics.median(result["summary"]["per_round_ratios"][f"{approach}.{key}/floor"])
        rows.append([title, f"{stat['median']:.3f}", f"{stat['min']:.3f}", f"{stat['max']:.3f}", times(ratio),
                     times(paired)])
    return {"title": f"bake: seconds over {result['settings']['runs']} rounds",
            "header": ["measurement", "median", "min", "max", "/ floor", "/ floor by round"], "rows": rows}


def phase_table(result: dict[str, Any]) -> dict[str, Any]:
    medians = result["summary"]["phase_medians"]
    labels: list[str] = []
    for approach in PHASE_APPROACHES:
        labels += [label for label in medians[approach] if label not in labels]
    rows = [[label] + [f"{medians[approach][label]:.2f}" if label in medians[approach] else "-"
                       for approach in PHASE_APPROACHES] for label in labels]
    rows.append(["total (median wall)"] + [f"{result['summary']['stats'][f'{approach}.wall']['median']:.2f}"
                                           for approach in PHASE_APPROACHES])
    return {"title": "where the time goes: median seconds per phase",
            "header": ["phase", "(a) cold bake", "(c) floor", "(d) packer"], "rows": rows}


def anchor_table(result: dict[str, Any]) -> dict[str, Any]:
    stats, ratios = result["summary"]["stats"], result["summary"]["ratios"]
    checks = [
        ("warm bake task", "<= 1 s", f"{stats['warm.task']['median']:.3f} s", stats["warm.task"]["median"] <= 1.0),
        ("cold bake", "<= 0.85x floor", f"{ratios['cold.wall/floor']:.2f}x", ratios["cold.wall/floor"] <= 0.85),
        ("packer", "1.15x floor seen before", f"{ratios['packer.wall/floor']:.2f}x", None),
    ]
    rows = [[name, target, measured, "-" if met is None else ("yes" if met else "NO")]
            for name, target, measured, met in checks]
    return {"title": "anchors", "header": ["anchor", "target", "measured (median)", "met"], "rows": rows}


def versions() -> dict[str, str]:
    return {"packer": command_version(["packer", "version"])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Bakes the nginx role four ways for args.runs rounds; returns raw rounds, summary and tables."""
    ensure_debian_package("packer", "packer")
    ensure_collection_link()
    ensure_base_image(args.base)
    bench = Bench(run_id=uuid.uuid4().hex[:8], base=args.base, ledger_dir=tempfile.mkdtemp(prefix="bench-ledger-"))
    result: dict[str, Any] = {"benchmark": "bake", "run_id": bench.run_id,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"runs": args.runs, "base": args.base},
                              "machine": dict(machine_facts(), **versions()), "rounds": []}
    say(f"bake: {args.runs} rounds, base {args.base}, run id {bench.run_id}")
    try:
        for round_index in range(args.runs):
            result["rounds"].append(measure_round(bench, round_index, args.runs))
    finally:
        removed = retry_cleanup(lambda: remove_labelled(bench.run_id))
        shutil.rmtree(bench.ledger_dir, ignore_errors=True)
        if removed:
            say(f"  removed {removed} containers and images left by the benchmark")
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["summary"] = summarize(result["rounds"])
    result["tables"] = [measurement_table(result), phase_table(result), anchor_table(result)]
    return result
