"""A verdict from what the tests reported, the same for an image and a disk: failed unless the host
booted (or started) and every test passed; and the verdict a disk's manifest carries.

The end-to-end case (a failing test against a booted VM) is in the long VM suite, make test-vm.
"""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, signed_key_ids
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import load_signing_key, new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import read_sidecars
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.host import Broken
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.report import failure_report, parse_junit
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.runners import Verdict
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.subjects import DiskSubject, manifest_verdict

# What pytest writes with -o junit_family=xunit1 for testinfra tests run over SSH against the VM.
ONE_FAILING = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
 errors="0" failures="1" skipped="0" tests="2" time="1.204">
<testcase classname="test_hello" name="test_serves[ssh://vm]" file="test_hello.py" line="3" time="0.811" />
<testcase classname="test_wrong" name="test_hostname_is_web[ssh://vm]" file="test_wrong.py" line="0" time="0.393">
<failure message="AssertionError: assert 'hello' == 'web'">host = &lt;testinfra.host.Host ssh://vm&gt;
&gt;       assert host.check_output('hostname') == 'web'
E       AssertionError: assert 'hello' == 'web'

test_wrong.py:2: AssertionError</failure></testcase>
</testsuite></testsuites>"""
ALL_PASSING = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
 errors="0" failures="0" skipped="0" tests="1" time="0.811">
<testcase classname="test_hello" name="test_serves[ssh://vm]" file="test_hello.py" line="3" time="0.811" />
</testsuite></testsuites>"""


def verdict_of(xml: str, broken: Broken | None = None) -> Verdict:
    parsed = parse_junit(xml)
    return Verdict(tests=parsed["tests"], failures=parsed["failures"], files=parsed["files"], broken=broken)


def test_a_failing_test_fails_the_verdict_and_is_named():
    verdict = verdict_of(ONE_FAILING)
    assert verdict.passed is False
    message = failure_report("hello-0123.qcow2", "tests: 1 passed, 1 failed", verdict.failures, kind="Disk")
    assert message.startswith("Disk hello-0123.qcow2 failed verification")
    assert "test_hostname_is_web" in message and "'hello' == 'web'" in message


def test_passing_tests_pass_only_a_host_that_booted():
    assert verdict_of(ALL_PASSING).passed is True
    assert verdict_of(ALL_PASSING, Broken("the VM did not answer on SSH within 9 s (boot_timeout)")).passed is False


@pytest.mark.parametrize("counts", [{"failed": 0, "errors": 1}, {"failed": 2, "errors": 0}])
def test_errors_and_failures_counted_without_details_still_fail(counts):
    assert Verdict(tests=dict(total=3, passed=1, skipped=0, **counts)).passed is False


def test_a_timeout_fails_the_verdict():
    verdict = Verdict(failures=[{"test": "(timeout)", "message": "the tests did not finish within the timeout of 9 s"}])
    assert verdict.passed is False


def test_an_image_and_a_disk_verdict_have_one_record_shape():
    container = verdict_of(ALL_PASSING)
    container.host = {"kind": "container", "image_id": "sha256:" + "a" * 64}
    vm = verdict_of(ONE_FAILING, Broken("qemu exited with code 1 while the tests ran", 1, "panic"))
    vm.host = {"kind": "vm", "accel": "tcg", "cpus": 2, "memory": 1024, "boot": "direct", "timeline": {}}
    image_fields = container.record_fields("/r/a.xml", ["t.py"], 3.2)
    disk_fields = vm.record_fields("/r/b.xml", ["t.py"], 14.0)
    assert image_fields.keys() == disk_fields.keys()
    assert image_fields["result"] == "passed" and image_fields["broken"] is None
    assert disk_fields["result"] == "failed" and disk_fields["broken"] == {
        "reason": "qemu exited with code 1 while the tests ran", "exit_code": 1}


def test_the_manifest_carries_the_ledger_result_bound_to_the_digest(tmp_path):
    verdict = verdict_of(ONE_FAILING)
    verdict.host, verdict.timings = {"kind": "vm", "accel": "tcg"}, {"boot_to_ssh": 9.5, "total": 18.0}
    digest = "sha256:" + "d" * 64
    record = Ledger(str(tmp_path / "ledger.jsonl")).new_record(
        "disk_verdict", disk="hello.qcow2", disk_digest=digest, **verdict.record_fields("/tmp/report.xml", [], 18.0))
    found = manifest_verdict(record)
    assert found["result"] == "failed" and found["disk_digest"] == digest
    assert found["ledger_id"] == record["id"] and found["time"] == record["time"]
    assert found["tests"] == {"total": 2, "passed": 1, "failed": 1, "errors": 0, "skipped": 0}
    assert found["accel"] == "tcg" and found["boot_to_ssh"] == 9.5 and "@" in found["verified_by"]


def test_a_signed_disk_verify_writes_its_test_result_beside_the_disk_bound_to_its_digest(tmp_path):
    test_file = tmp_path / "test_hello.py"
    test_file.write_text("def test_serves(host):\n    pass\n")
    disk = tmp_path / "hello-0123.qcow2"
    disk.write_bytes(b"not booted here")
    digest = "sha256:" + "d" * 64
    subject = DiskSubject(str(disk), str(tmp_path / "hello-0123.json"), {"disk": disk.name}, digest)
    verdict = verdict_of(ONE_FAILING)
    verdict.host = {"kind": "vm", "accel": "tcg"}
    record = Ledger(str(tmp_path / "ledger.jsonl")).new_record(
        "disk_verdict", **verdict.record_fields(None, [str(test_file)], 18.0))
    assert subject.attest(None, record, verdict, str(tmp_path)) == {}  # no signing_key, nothing signed
    key = load_signing_key(new_key_pair()[0], None, str(tmp_path))
    signed = subject.attest(key, record, verdict, str(tmp_path))
    assert signed["signed_by"] == key.keyid and list(signed["attestations"]) == ["test_result"]
    envelope = read_sidecars(str(disk)).envelopes["test_result"]
    assert signed_key_ids(envelope) == [key.keyid]
    statement = envelope_statement(envelope)
    assert statement["subject"] == [{"name": disk.name, "digest": {"sha256": "d" * 64}}]
    predicate = statement["predicate"]
    assert predicate["result"] == "FAILED" and predicate["failedTests"] == ["test_wrong.py::test_hostname_is_web"]
    assert predicate["configuration"][0]["name"] == "test_hello.py"
    where = predicate["configuration"][-1]["annotations"]
    assert where["host"] == "vm" and where["accel"] == "tcg" and where["ledger_id"] == record["id"]
