from __future__ import annotations

import json

from ansible_collections.immutable.infra.plugins.plugin_utils.trace.history import merge_observations
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.history_builder import build_history, render_table

IMAGE_A = "sha256:" + "a" * 64
IMAGE_B = "sha256:" + "b" * 64
IMAGE_C = "sha256:" + "c" * 64


def bake(time, image_id, name="acme/web", commit="1111111111aa"):
    return {"kind": "bake", "time": time, "image_id": image_id, "name": name, "result": "succeeded",
            "roles": ["hello"], "git_commit": commit, "git_dirty": False, "user": "ci", "controller": "runner",
            "base_image_id": "sha256:base", "inputs_hash": image_id[7:15]}


def verdict_record(time, image_id, result="passed", record_id=None, failures=()):
    return {"kind": "verdict", "id": record_id or f"v-{time}", "time": time, "image_id": image_id, "result": result,
            "tests": {"total": 4, "passed": 4 - len(failures), "failed": len(failures), "errors": 0, "skipped": 0},
            "failures": [{"test": name, "message": "no"} for name in failures], "user": "qa", "controller": "lab"}


def rollout(time, image_id, generation, result="succeeded", service="web", kind="rollout", live_before=(),
            replicas=2, commit="2222222222bb"):
    record = {"kind": "rollout", "service": service, "time": time, "image_id": image_id, "generation": generation,
              "kind_of_change": kind, "strategy": "rolling", "replicas": replicas, "live_before": list(live_before),
              "user": "alice", "controller": "ops", "git_commit": commit, "inputs_hash": image_id[7:15],
              "rollout": f"r{generation}", "result": result, "finished": time.replace(":00Z", ":30Z")}
    new = [f"{service}-{generation}-{index}" for index in range(1, replicas + 1)]
    if result == "succeeded":
        record.update(added=new, removed=list(live_before), live=new)
    else:
        record.update(live=list(live_before), error="web-3-1 failed its HTTP check")
    return record


GEN1 = ["web-1-1", "web-1-2"]
GEN2 = ["web-2-1", "web-2-2"]
RECORDS = [
    bake("2026-01-01T00:00:00Z", IMAGE_A), verdict_record("2026-01-01T00:01:00Z", IMAGE_A),
    rollout("2026-01-01T00:02:00Z", IMAGE_A, 1),
    bake("2026-01-01T00:03:00Z", IMAGE_B), verdict_record("2026-01-01T00:04:00Z", IMAGE_B, record_id="vb"),
    rollout("2026-01-01T00:05:00Z", IMAGE_B, 2, live_before=GEN1),
    bake("2026-01-01T00:06:00Z", IMAGE_C), verdict_record("2026-01-01T00:07:00Z", IMAGE_C),
    rollout("2026-01-01T00:08:00Z", IMAGE_C, 3, result="rolled back", live_before=GEN2),
    rollout("2026-01-01T00:09:00Z", IMAGE_A, 9, service="api"),
]
OBSERVED = {
    "containers": {"web-2-1": {"state": "running"}, "web-2-2": {"state": "running"},
                   "web-1-1": {"state": "exited"}, "web-1-2": {"state": "exited"}},
    "images": {IMAGE_B: {"immutable.infra.inputs_hash": "bbbb", "immutable.infra.name": "acme/web",
                         "immutable.infra.roles": "hello,acme.web.app@1.4.0",
                         "org.opencontainers.image.revision": "3333333333cc",
                         "org.opencontainers.image.source": "https://git.example.com/acme/ops.git",
                         "org.opencontainers.image.created": "2026-01-01T00:03:30Z",
                         "immutable.infra.baked_by": "ci@runner", "immutable.infra.git_dirty": "false"},
               IMAGE_C: {"immutable.infra.inputs_hash": "cccc", "immutable.infra.name": "acme/web"}},
    "verdicts": {IMAGE_B: {"immutable.infra.verdict": "passed", "immutable.infra.time": "2026-01-01T00:04:00Z",
                           "immutable.infra.ledger_id": "vb", "immutable.infra.tests": json.dumps({"total": 4})},
                 IMAGE_C: {"immutable.infra.verdict": "failed", "immutable.infra.time": "2026-01-01T00:09:30Z",
                           "immutable.infra.tests": json.dumps({"total": 4, "passed": 3, "failed": 1})}},
}


def by_number(history):
    return {entry["revision"]: entry for entry in history["revisions"]}


def test_revisions_are_the_service_rollouts_newest_first():
    history = build_history(RECORDS, "web", OBSERVED)
    assert [entry["revision"] for entry in history["revisions"]] == [3, 2, 1]
    assert [entry["result"] for entry in history["revisions"]] == ["rolled back", "succeeded", "succeeded"]
    assert [entry["image_id"] for entry in history["revisions"]] == [IMAGE_C, IMAGE_B, IMAGE_A]
    first = by_number(history)[1]
    assert first["rolled_out_by"] == "alice@ops" and first["git_commit"] == "2222222222bb"
    assert (first["started"], first["finished"]) == ("2026-01-01T00:02:00Z", "2026-01-01T00:02:30Z")
    assert build_history(RECORDS, "web", OBSERVED, limit=1)["revisions"][0]["revision"] == 3


def test_hosts_are_cross_checked_and_the_running_revision_is_live():
    history = by_number(build_history(RECORDS, "web", OBSERVED))
    assert history[2]["live"] and not history[1]["live"] and not history[3]["live"]
    assert history[2]["added"] == [{"host": "web-2-1", "exists": True, "state": "running", "engine": None},
                                   {"host": "web-2-2", "exists": True, "state": "running", "engine": None}]
    assert history[2]["removed"][0] == {"host": "web-1-1", "exists": True, "state": "exited", "engine": None}
    assert history[1]["hosts"] == "2 exited" and not history[1]["hosts_gone"]
    # A rolled-back rollout records no host list: its hosts follow from generation and replicas, and are gone.
    assert history[3]["hosts_derived"] and history[3]["hosts_gone"] and history[3]["hosts"] == "2 gone"
    assert [entry["host"] for entry in history[3]["added"]] == ["web-3-1", "web-3-2"]


def test_no_revision_is_live_when_its_hosts_do_not_all_run():
    observed = dict(OBSERVED, containers={"web-2-1": {"state": "running"}, "web-2-2": {"state": "exited"},
                                          "web-9-9": {"state": "running"}})
    history = build_history(RECORDS, "web", observed)
    assert history["live_revision"] is None and not any(entry["live"] for entry in history["revisions"])
    assert history["unrecorded"] == ["web-2-1", "web-9-9"]


def test_provenance_comes_from_labels_while_the_image_exists_else_from_the_bake_record():
    history = by_number(build_history(RECORDS, "web", OBSERVED))
    labels = history[2]["provenance"]
    assert labels["source"] == "image" and labels["roles"] == ["hello", "acme.web.app@1.4.0"]
    assert (labels["git_commit"], labels["git_source"]) == ("3333333333cc", "https://git.example.com/acme/ops.git")
    assert labels["created"] == "2026-01-01T00:03:30Z" and labels["git_dirty"] is False
    gone = history[1]["provenance"]
    assert not history[1]["image_exists"] and gone["source"] == "ledger"
    assert (gone["git_commit"], gone["roles"], gone["baked_by"]) == ("1111111111aa", ["hello"], "ci@runner")
    unknown = build_history([rollout("2026-01-01T00:00:00Z", IMAGE_A, 1)], "web", {})["revisions"][0]
    assert unknown["provenance"]["source"] is None and unknown["verdict"]["result"] is None


def test_verdicts_join_the_engine_and_the_ledger_and_the_newer_wins():
    history = by_number(build_history(RECORDS, "web", OBSERVED))
    assert history[2]["verdict"]["source"] == "engine and ledger" and history[2]["verdict"]["result"] == "passed"
    assert history[2]["verdict"]["tests"]["passed"] == 4 and history[2]["verdict"]["by"] == "qa@lab"
    # The engine holds a newer verdict for C than the ledger read here (another controller's ledger).
    assert history[3]["verdict"]["result"] == "failed" and history[3]["verdict"]["source"] == "engine"
    assert history[1]["verdict"]["source"] == "ledger" and history[1]["verdict"]["result"] == "passed"


def test_latest_ledger_verdict_counts():
    records = RECORDS + [verdict_record("2026-01-02T00:00:00Z", IMAGE_A, "failed", failures=["test_port"])]
    entry = by_number(build_history(records, "web", OBSERVED))[1]
    assert entry["verdict"]["result"] == "failed" and entry["verdict"]["failures"] == 1


def test_table_is_fixed_width_with_one_row_per_revision():
    history = build_history(RECORDS, "web", OBSERVED)
    table = render_table(history["revisions"])
    assert table[0].split() == ["REV", "STARTED", "RESULT", "CHANGE", "GEN", "IMAGE", "VERDICT", "BY", "COMMIT",
                                "HOSTS"]
    assert len(table) == 4
    assert table[1].startswith(" 3") and table[2].startswith("*2") and "rolled back" in table[1]
    assert "failed 3/4" in table[1] and "passed 4/4" in table[2] and "2 gone" in table[1]
    column = table[0].index("IMAGE")
    assert [line[column:column + 12] for line in table[1:]] == ["c" * 12, "b" * 12, "a" * 12]


def test_a_rollback_names_the_revision_it_put_back():
    records = RECORDS + [dict(rollout("2026-01-01T00:10:00Z", IMAGE_A, 1, kind="restore", live_before=GEN2),
                              added=GEN1, live=GEN1, rollback_to_revision=1)]
    observed = dict(OBSERVED, containers={"web-1-1": {"state": "running"}, "web-1-2": {"state": "running"}})
    history = build_history(records, "web", observed)
    newest = history["revisions"][0]
    assert (newest["revision"], newest["rollback_to"], newest["live"]) == (4, 1, True)
    assert not by_number(history)[1]["live"]  # the same hosts, but revision 4 is the newer one
    assert "restore (rollback to 1)" in render_table(history["revisions"])[1]


def test_a_service_without_rollouts_has_no_revisions():
    history = build_history(RECORDS, "db", OBSERVED)
    assert history["revisions"] == [] and history["live_revision"] is None


def test_over_several_engines_each_host_names_its_engine_and_each_revision_where_its_hosts_are():
    observed = merge_observations({
        "rig1": {"containers": {"web-2-1": {"state": "running"}, "web-1-1": {"state": "exited"}},
                 "images": {IMAGE_B: OBSERVED["images"][IMAGE_B]}, "verdicts": {}},
        "rig2": {"containers": {"web-2-2": {"state": "running"}, "web-1-2": {"state": "exited"}},
                 "images": {IMAGE_B: OBSERVED["images"][IMAGE_B], IMAGE_C: OBSERVED["images"][IMAGE_C]},
                 "verdicts": {IMAGE_B: OBSERVED["verdicts"][IMAGE_B]}},
    })
    history = build_history(RECORDS, "web", observed)
    revisions = by_number(history)
    assert history["live_revision"] == 2
    placed = [(entry["host"], entry["engine"]) for entry in revisions[2]["added"]]
    assert placed == [("web-2-1", "rig1"), ("web-2-2", "rig2")]
    assert revisions[2]["engines"] == {"rig1": 1, "rig2": 1} and revisions[3]["engines"] == {}
    assert revisions[2]["image_engines"] == ["rig1", "rig2"] and revisions[3]["image_engines"] == ["rig2"]
    assert revisions[1]["image_engines"] == [] and not revisions[1]["image_exists"]
    assert revisions[2]["verdict"]["result"] == "passed"  # the record is on rig2 only; it holds fleet-wide
    table = render_table(history["revisions"], engines=True)
    assert table[0].split()[-1] == "ENGINES"
    assert table[2].endswith("rig1 1, rig2 1") and table[1].endswith("-")
    assert "ENGINES" not in render_table(history["revisions"])[0]


def test_the_newest_verdict_of_any_engine_is_the_fleet_verdict():
    older = {"immutable.infra.verdict": "passed", "immutable.infra.time": "2026-01-01T00:04:00Z"}
    newer = {"immutable.infra.verdict": "failed", "immutable.infra.time": "2026-01-01T00:10:00Z"}
    empty = {"containers": {}, "images": {}, "verdicts": {}}
    merged = merge_observations({"rig1": dict(empty, verdicts={IMAGE_B: older}),
                                 "rig2": dict(empty, verdicts={IMAGE_B: newer}), "rig3": empty})
    assert merged["verdicts"] == {IMAGE_B: newer}


def test_a_host_name_on_two_engines_is_taken_from_the_first_declared():
    merged = merge_observations({"rig1": {"containers": {"web-2-1": {"state": "running"}}, "images": {}, "verdicts": {}},
                                 "rig2": {"containers": {"web-2-1": {"state": "exited"}}, "images": {}, "verdicts": {}}})
    assert merged["containers"] == {"web-2-1": {"state": "running", "engine": "rig1"}}


def test_who_signed_each_revision_is_shown_when_any_image_was_signed():
    key_a, key_b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    records = [dict(record, signed_by=key_a) if record["kind"] == "bake" and record["image_id"] == IMAGE_A else record
               for record in RECORDS]
    records = [dict(record, trusted={"provenance": key_b, "sbom": key_b, "test_result": key_b})
               if record["kind"] == "rollout" and record["image_id"] == IMAGE_B else record for record in records]
    history = by_number(build_history(records, "web", OBSERVED))
    assert history[1]["signed_by"] == {"keys": [key_a], "checked": False}
    assert history[2]["signed_by"] == {"keys": [key_b], "checked": True}
    assert history[3]["signed_by"] == {"keys": [], "checked": False}
    table = render_table(build_history(records, "web", OBSERVED)["revisions"])
    column = table[0].index("SIGNED")
    assert [line[column:].split()[0] for line in table[1:]] == ["-", "2" * 12 + "+", "1" * 12]
    assert "SIGNED" not in render_table(build_history(RECORDS, "web", OBSERVED)["revisions"])[0]
