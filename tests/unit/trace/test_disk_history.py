from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.trace.disk_history import (
    build_disks,
    disk_summary_line,
    render_disk_table,
)

IMAGE = "sha256:" + "a" * 64
DIGEST_1 = "sha256:" + "1" * 64
DIGEST_2 = "sha256:" + "2" * 64


def disk(time, digest, name="hello", result="succeeded", path=None):
    record = {"kind": "disk", "id": f"d-{time}", "time": time, "name": name, "result": result, "image_id": IMAGE,
              "inputs_hash": "f" * 64, "image_inputs_hash": "e" * 64, "disk": path or f"/disks/{name}-ffff.qcow2",
              "user": "ci", "controller": "runner", "duration": 40.5}
    if result == "succeeded":
        record.update(disk_digest=digest, kernel_release="6.1.0-50-cloud-amd64")
    else:
        record.update(error="Installing the boot packages failed: no space")
    return record


def disk_verdict(time, digest, result="passed", failures=()):
    return {"kind": "disk_verdict", "id": f"v-{time}", "time": time, "disk_digest": digest, "result": result,
            "tests": {"total": 7, "passed": 7 - len(failures), "failed": len(failures), "errors": 0, "skipped": 0},
            "failures": [{"test": name, "message": "no"} for name in failures], "accel": "tcg",
            "timings": {"boot_to_ssh": 45.2}, "broken": None, "user": "qa", "controller": "lab"}


RECORDS = [
    disk("2026-01-01T00:00:00Z", DIGEST_1),
    disk_verdict("2026-01-01T00:01:00Z", DIGEST_1, result="failed", failures=["test_port"]),
    disk_verdict("2026-01-01T00:02:00Z", DIGEST_1),
    disk("2026-01-01T00:03:00Z", None, result="failed"),
    disk("2026-01-01T00:04:00Z", DIGEST_2, path="/disks/hello-2.qcow2"),
    disk("2026-01-01T00:05:00Z", DIGEST_1, name="api"),
    disk_verdict("2026-01-01T00:06:00Z", DIGEST_2 + "0", result="failed"),  # another disk's verdict
]


def test_disks_of_the_service_newest_first_with_what_went_into_them():
    disks = build_disks(RECORDS, "hello", existing={"/disks/hello-2.qcow2"})
    assert [entry["built"] for entry in disks] == ["2026-01-01T00:04:00Z", "2026-01-01T00:03:00Z",
                                                   "2026-01-01T00:00:00Z"]
    newest = disks[0]
    assert newest["disk_digest"] == DIGEST_2 and newest["image_id"] == IMAGE and newest["image"] == "a" * 12
    assert newest["inputs_hash"] == "f" * 64 and newest["kernel_release"] == "6.1.0-50-cloud-amd64"
    assert newest["disk"] == "/disks/hello-2.qcow2" and newest["exists"] is True
    assert newest["built_by"] == "ci@runner" and newest["ledger_id"] == "d-2026-01-01T00:04:00Z"
    assert disks[2]["exists"] is False


def test_the_verdict_is_the_newest_one_bound_to_the_disk_digest():
    newest, failed, first = build_disks(RECORDS, "hello", existing=set())
    assert first["verdict"]["result"] == "passed" and first["verdict"]["ledger_id"] == "v-2026-01-01T00:02:00Z"
    assert first["verdict"]["accel"] == "tcg" and first["verdict"]["boot_to_ssh"] == 45.2
    assert first["verdict"]["failures"] == 0 and first["verdict"]["by"] == "qa@lab"
    assert newest["verdict"]["result"] is None  # never booted; a verdict of a different digest does not count
    assert failed["result"] == "failed" and failed["disk_digest"] is None and failed["verdict"]["result"] is None
    assert failed["error"].startswith("Installing the boot packages failed")


def test_limit_keeps_the_newest_builds_and_other_names_are_left_out():
    assert [entry["disk_digest"] for entry in build_disks(RECORDS, "hello", set(), limit=1)] == [DIGEST_2]
    [api] = build_disks(RECORDS, "api", set())
    assert api["verdict"]["result"] == "passed"  # same digest as hello's first disk: the verdict is the disk's
    assert build_disks(RECORDS, "web", set()) == []


def test_the_table_names_each_disk_its_digest_kernel_and_verdict():
    disks = build_disks(RECORDS, "hello", existing={"/disks/hello-2.qcow2"})
    header, newest, failed, first = render_disk_table(disks)
    assert header.split()[:3] == ["BUILT", "RESULT", "IMAGE"]
    assert "2" * 12 in newest and "never booted" in newest and "hello-2.qcow2" in newest and "(gone)" not in newest
    assert failed.split()[2] == "failed" and "-" in failed.split()
    assert "passed 7/7 (tcg)" in first and "1" * 12 in first and "hello-ffff.qcow2 (gone)" in first
    assert disk_summary_line("hello", disks[:1], 3) == "hello: 3 VM disk build(s) (newest 1 shown)"
    assert disk_summary_line("hello", disks, 3) == "hello: 3 VM disk build(s)"
