"""The corpus benchmark: each Galaxy role of ../shared/roles baked cold, against the floor for the same role.

cold    immutable.infra.bake of the role, unmodified, at the defaults, with a new nonce var (a new inputs hash)
floor   docker run + plain ansible-playbook over community.docker.docker with the same role and vars + docker
        commit + docker rm

The two alternate in order round by round. The roles are read where they are (never copied). Every
container and image made carries the label immutable-infra.bench=<run id> and is removed after each
round and when the benchmark ends.
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
from typing import Any

from measure import (
    COLLECTIONS_PATH,
    LABEL_KEY,
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    bench_env,
    ensure_base_image,
    ensure_collection_link,
    machine_facts,
    remove_labelled,
    retry_cleanup,
    run_timed,
    say,
    summary,
)

ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
CORPUS = os.path.normpath(os.environ.get("IMMUTABLE_INFRA_CORPUS", os.path.join(REPO_ROOT, "..", "shared", "roles")))
ROLES = ("geerlingguy.nginx", "geerlingguy.apache", "geerlingguy.redis", "geerlingguy.mysql", "geerlingguy.php")
# The role's documented variables for a database and its user, the same in both approaches.
ROLE_VARS = {"geerlingguy.mysql": {"mysql_databases": [{"name": "shop"}], "mysql_users": [
    {"name": "shop", "host": "%", "password": "shop-secret", "priv": "shop.*:ALL"}]}}


def corpus_dir() -> str:
    if os.path.isdir(CORPUS):
        return CORPUS
    common = run_timed(["git", "-C", REPO_ROOT, "rev-parse", "--path-format=absolute", "--git-common-dir"])
    beside_main = os.path.normpath(os.path.join(os.path.dirname(common.stdout.strip()), "..", "shared", "roles"))
    if os.path.isdir(beside_main):
        return beside_main
    raise BenchError(f"the roles corpus is not at {CORPUS}; set IMMUTABLE_INFRA_CORPUS to its folder")


def write(path: str, content: Any) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
    return path


def cold_bake(workdir: str, corpus: str, run_id: str, base: str, role: str) -> dict[str, Any]:
    task = {"name": "bake", "immutable.infra.bake": {
        "name": f"bench-{run_id}/{role.split('.', 1)[1]}", "base": base, "roles": [role],
        "vars": dict(ROLE_VARS.get(role, {}), bench_nonce=uuid.uuid4().hex),
        "config": {"labels": {LABEL_KEY: run_id}}}}
    playbook = write(os.path.join(workdir, "bake.json"), [{"hosts": "localhost", "gather_facts": False,
                                                          "tasks": [task]}])
    env = bench_env({"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS_PATH, "ANSIBLE_ROLES_PATH": corpus,
                     "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                     "IMMUTABLE_INFRA_LEDGER": os.path.join(workdir, "ledger.jsonl")})
    timed = run_timed([ANSIBLE_PLAYBOOK, playbook], env=env, cwd=workdir)
    try:
        report = json.loads(timed.stdout[timed.stdout.index("{"):])
        result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        return {"wall": round(timed.wall, 3), "ok": False, "error": timed.tail(600)}
    if result.get("failed") or result.get("cache_hit"):
        return {"wall": round(timed.wall, 3), "ok": False, "error": str(result.get("msg"))[:600]}
    return {"wall": round(timed.wall, 3), "task": result["duration"], "ok": True}


def floor(workdir: str, corpus: str, run_id: str, base: str, role: str, round_index: int) -> dict[str, Any]:
    container = f"bench-{run_id}-floor-{round_index}-{role.split('.', 1)[1]}"
    label = f"{LABEL_KEY}={run_id}"
    site = write(os.path.join(workdir, "site.json"), [{"hosts": "all", "vars": ROLE_VARS.get(role, {}),
                                                      "roles": [role]}])
    env = bench_env({"ANSIBLE_ROLES_PATH": corpus})
    started = time.monotonic()
    steps = [["docker", "run", "-d", "--name", container, "--label", label, base, "sleep", "infinity"],
             [ANSIBLE_PLAYBOOK, "-i", f"{container},", "-c", "community.docker.docker", site],
             ["docker", "commit", "--change", f"LABEL {label}", container, f"bench-{run_id}/floor:{round_index}"]]
    error = None
    for command in steps:
        timed = run_timed(command, env=env, cwd=workdir)
        if timed.returncode != 0:
            failed = [line for _offset, line in timed.lines if "fatal:" in line or "FAILED" in line]
            error = (" ".join(failed) or timed.tail(600))[:600]
            break
    run_timed(["docker", "rm", "-f", container])
    return {"wall": round(time.monotonic() - started, 3), "ok": error is None, "error": error}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Bakes each corpus role cold and runs the floor for it, args.runs rounds; returns rounds and tables."""
    ensure_collection_link()
    ensure_base_image(args.base)
    corpus = corpus_dir()
    run_id = uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix="bench-corpus-")
    result: dict[str, Any] = {"benchmark": "corpus", "run_id": run_id, "corpus": corpus,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"runs": args.runs, "base": args.base}, "machine": machine_facts(),
                              "rounds": []}
    say(f"corpus: {args.runs} rounds of {len(ROLES)} roles, base {args.base}, run id {run_id}")
    try:
        for round_index in range(args.runs):
            measured: dict[str, Any] = {"round": round_index + 1}
            for role in ROLES:
                order = ["cold", "floor"] if round_index % 2 == 0 else ["floor", "cold"]
                measured[role] = {}
                for approach in order:
                    say(f"  round {round_index + 1}/{args.runs}: {role} {approach} ...")
                    measured[role][approach] = (cold_bake(workdir, corpus, run_id, args.base, role)
                                                if approach == "cold" else
                                                floor(workdir, corpus, run_id, args.base, role, round_index))
                    outcome = measured[role][approach]
                    say(f"  round {round_index + 1}/{args.runs}: {role} {approach} {outcome['wall']:.2f} s"
                        + ("" if outcome["ok"] else f" FAILED: {outcome['error'][:200]}"))
                retry_cleanup(lambda: remove_labelled(run_id))
            result["rounds"].append(measured)
    finally:
        retry_cleanup(lambda: remove_labelled(run_id))
        shutil.rmtree(workdir, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["tables"] = [corpus_table(result)]
    return result


def corpus_table(result: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for role in ROLES:
        cells = []
        for approach in ("cold", "floor"):
            outcomes = [measured[role][approach] for measured in result["rounds"]]
            good = [outcome["wall"] for outcome in outcomes if outcome["ok"]]
            cells.append(f"{summary(good)['median']:.2f}" if good else "failed")
            cells.append(f"{len(good)}/{len(outcomes)}")
        ratios = [measured[role]["cold"]["wall"] / measured[role]["floor"]["wall"] for measured in result["rounds"]
                  if measured[role]["cold"]["ok"] and measured[role]["floor"]["ok"]]
        rows.append([role, cells[0], cells[1], cells[2], cells[3],
                     f"{statistics.median(ratios):.2f}x" if ratios else "-"])
    return {"title": f"corpus: cold bake against the floor, median seconds over {result['settings']['runs']} rounds",
            "header": ["role", "cold bake", "ok", "floor", "ok", "bake / floor by round"], "rows": rows}
