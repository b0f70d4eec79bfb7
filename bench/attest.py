"""The signing benchmark: what signed provenance and an SBOM add to a cold bake of the nginx role.

plain   immutable.infra.bake of bench/roles/nginx with a new nonce var (a cold bake), no signing_key
signed  the same with signing_key: a key in cosign's encrypted format (scrypt, as cosign writes it), so
        the bake also lists dpkg's and Python's packages in the builder, builds the CycloneDX SBOM and the
        SLSA provenance, signs both and stores them beside the image on the engine

Both are cold bakes with their own nonce, in an order that alternates round by round; the ratio
signed / plain is taken within each round and its median reported, next to the ratio of the medians.
On a shared machine two cold bakes differ by more than signing costs, so the signed bake also reports
its own signing time (attest_duration: opening the key, listing the packages, making, signing and
storing the statements), divided by the plain bake's task duration of the same round.
Images and their attestation volumes are removed after each round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from bake import ANSIBLE_PLAYBOOK, BAKE_PLAYBOOK, Bench, bake_result
from measure import (
    BENCH_DIR,
    COLLECTIONS_PATH,
    BenchError,
    ensure_base_image,
    ensure_collection_link,
    machine_facts,
    remove_labelled,
    retry_cleanup,
    run_timed,
    say,
    summary,
)

sys.path.insert(0, COLLECTIONS_PATH)

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import new_key_pair  # pylint: disable=wrong-import-position
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import attestation_volume_name  # pylint: disable=wrong-import-position
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient  # pylint: disable=wrong-import-position

ANCHOR = 1.10  # signing may add at most 10 % to a cold bake
PASSWORD = "bench password"
APPROACHES = ("plain", "signed")


def signed_bake(bench: Bench, key_path: str | None) -> dict[str, Any]:
    extra_vars = {"bench_image": f"{bench.image_repository}/nginx", "bench_base": bench.base,
                  "bench_label": bench.run_id, "bench_nonce": uuid.uuid4().hex}
    if key_path:
        extra_vars.update(bench_signing_key=key_path, bench_signing_password=PASSWORD)
    timed = run_timed([ANSIBLE_PLAYBOOK, BAKE_PLAYBOOK, "-e", json.dumps(extra_vars)], env=bench.bake_env(),
                      cwd=BENCH_DIR)
    result = bake_result(timed)
    if timed.returncode != 0 or result.get("failed") or result.get("cache_hit"):
        raise BenchError(f"the cold bake failed or hit the cache: {result.get('msg')}\n{timed.tail()}")
    if bool(key_path) != bool(result.get("signed_by")):
        raise BenchError(f"the bake was {'not ' if key_path else ''}signed: {result.get('msg')}")
    return {"wall": round(timed.wall, 3), "task": result["duration"], "image_id": result["image_id"],
            "attest": result.get("attest_duration", 0.0)}


def measure_round(bench: Bench, key_path: str, round_index: int, runs: int) -> dict[str, Any]:
    order = list(APPROACHES if round_index % 2 == 0 else reversed(APPROACHES))
    measured: dict[str, Any] = {"round": round_index + 1, "order": order}
    for approach in order:
        load = os.getloadavg()[0]
        measured[approach] = dict(signed_bake(bench, key_path if approach == "signed" else None),
                                  load_before=round(load, 2))
        say(f"  round {round_index + 1}/{runs}: {approach} {measured[approach]['wall']:.2f} s "
            f"(task {measured[approach]['task']:.2f} s, load {load:.2f})")
    client = DockerClient(None)
    for approach in APPROACHES:
        client.remove_volume(attestation_volume_name(measured[approach]["image_id"]))
    retry_cleanup(lambda: remove_labelled(bench.run_id))
    return measured


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    stats = {f"{approach}.{key}": summary(measured[approach][key] for measured in rounds)
             for approach in APPROACHES for key in ("wall", "task")}
    by_round = {key: [round(measured["signed"][key] / measured["plain"][key], 3) for measured in rounds]
                for key in ("wall", "task")}
    stats["signed.attest"] = summary(measured["signed"]["attest"] for measured in rounds)
    by_round["attest"] = [round(measured["signed"]["attest"] / measured["plain"]["task"], 4) for measured in rounds]
    return {"stats": stats, "per_round_ratios": by_round,
            "ratios": {key: round(stats[f"signed.{key}"]["median"] / stats[f"plain.{key}"]["median"], 3)
                       for key in ("wall", "task")},
            "median_round_ratio": {key: round(statistics.median(values), 4) for key, values in by_round.items()}}


def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    summary_ = result["summary"]
    rows = [[f"{approach} cold bake: {what}", f"{summary_['stats'][f'{approach}.{key}']['median']:.2f}",
             f"{summary_['stats'][f'{approach}.{key}']['min']:.2f}", f"{summary_['stats'][f'{approach}.{key}']['max']:.2f}"]
            for approach in APPROACHES for key, what in (("wall", "ansible-playbook"), ("task", "task duration"))]
    attest = summary_["stats"]["signed.attest"]
    rows.append(["signed bake: of which signing (attest_duration)", f"{attest['median']:.3f}", f"{attest['min']:.3f}",
                 f"{attest['max']:.3f}"])
    measured = summary_["median_round_ratio"]["wall"]
    anchor = [["signed / plain (wall, median of the rounds' ratios)", f"<= {ANCHOR:.2f}", f"{measured:.3f}",
               "yes" if measured <= ANCHOR else "NO"],
              ["signed / plain (task duration)", "-", f"{summary_['median_round_ratio']['task']:.3f}", "-"],
              ["signing's own time / plain task duration", f"<= {ANCHOR - 1:.2f}",
               f"{summary_['median_round_ratio']['attest']:.4f}",
               "yes" if summary_["median_round_ratio"]["attest"] <= ANCHOR - 1 else "NO"]]
    return [{"title": f"attest: seconds over {result['settings']['runs']} rounds",
             "header": ["measurement", "median", "min", "max"], "rows": rows},
            {"title": "anchor", "header": ["anchor", "target", "measured", "met"], "rows": anchor}]


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_collection_link()
    ensure_base_image(args.base)
    bench = Bench(run_id=uuid.uuid4().hex[:8], base=args.base, ledger_dir=tempfile.mkdtemp(prefix="bench-ledger-"))
    key_path = os.path.join(bench.ledger_dir, "cosign.key")
    with open(key_path, "w", encoding="utf-8") as handle:
        handle.write(new_key_pair(PASSWORD)[0])
    result: dict[str, Any] = {"benchmark": "attest", "run_id": bench.run_id,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"runs": args.runs, "base": args.base}, "machine": machine_facts(),
                              "rounds": []}
    say(f"attest: {args.runs} rounds of a plain and a signed cold bake, run id {bench.run_id}")
    try:
        for round_index in range(args.runs):
            result["rounds"].append(measure_round(bench, key_path, round_index, args.runs))
    finally:
        retry_cleanup(lambda: remove_labelled(bench.run_id))
        shutil.rmtree(bench.ledger_dir, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["summary"] = summarize(result["rounds"])
    result["tables"] = tables(result)
    return result
