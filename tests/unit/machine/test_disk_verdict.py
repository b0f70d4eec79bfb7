"""A disk's verdict from what its tests reported: failed unless it booted and every test passed.

The end-to-end case (a failing test against a booted VM) is in the long VM suite, make test-vm.
"""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.verify import manifest_verdict, verdict_passed
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.report import failure_report, parse_junit

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


def test_a_failing_test_fails_the_verdict_and_is_named():
    outcome = parse_junit(ONE_FAILING)
    assert verdict_passed(outcome, broken=False) is False
    message = failure_report("hello-0123.qcow2", "tests: 1 passed, 1 failed", outcome["failures"], kind="Disk")
    assert message.startswith("Disk hello-0123.qcow2 failed verification")
    assert "test_hostname_is_web" in message and "'hello' == 'web'" in message


def test_passing_tests_pass_only_a_disk_that_booted():
    outcome = parse_junit(ALL_PASSING)
    assert outcome["tests"]["passed"] == 1 and outcome["tests"]["failed"] == 0
    assert verdict_passed(outcome, broken=False) is True
    assert verdict_passed(outcome, broken=True) is False


@pytest.mark.parametrize("counts", [{"failed": 0, "errors": 1}, {"failed": 2, "errors": 0}])
def test_errors_and_failures_counted_without_details_still_fail(counts):
    outcome = {"tests": dict(total=3, passed=1, skipped=0, **counts), "failures": []}
    assert verdict_passed(outcome, broken=False) is False


def test_a_timeout_fails_the_verdict():
    outcome = {"tests": {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0},
               "failures": [{"test": "(timeout)", "message": "the tests did not finish within the timeout of 9 s"}]}
    assert verdict_passed(outcome, broken=False) is False


def test_the_manifest_carries_the_ledger_result_bound_to_the_digest(tmp_path):
    outcome = parse_junit(ONE_FAILING)
    digest = "sha256:" + "d" * 64
    record = Ledger(str(tmp_path / "ledger.jsonl")).new_record(
        "disk_verdict", disk="hello.qcow2", disk_digest=digest, result="failed", accel="tcg",
        report="/tmp/report.xml", tests=outcome["tests"], timings={"boot_to_ssh": 41.5, "total": 60.0})
    verdict = manifest_verdict(record)
    assert verdict["result"] == "failed" and verdict["disk_digest"] == digest
    assert verdict["ledger_id"] == record["id"] and verdict["time"] == record["time"]
    assert verdict["tests"] == {"total": 2, "passed": 1, "failed": 1, "errors": 0, "skipped": 0}
    assert verdict["accel"] == "tcg" and verdict["boot_to_ssh"] == 41.5 and "@" in verdict["verified_by"]
