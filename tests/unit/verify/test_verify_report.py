from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.report import (
    choose_workers,
    clean_test_name,
    exposed_tcp_ports,
    failure_message,
    failure_report,
    image_roles,
    listening_ports,
    parse_junit,
    progress_line,
    run_failures,
    summary,
    verdict_summary,
)

HOST = "docker://6e1fd1a5a33332ea14f0cfe3bce387c72707145dea079337eeb61bc109c5fdf6"

# What pytest 9 writes with -o junit_family=xunit1 for testinfra tests (trimmed tracebacks).
XUNIT1 = f"""<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
 errors="1" failures="3" skipped="1" tests="8" time="0.658">
<testcase classname="test_x" name="test_os[{HOST}]" file="test_x.py" line="0" time="0.382" />
<testcase classname="sub.test_cls.TestWeb" name="test_a[{HOST}]" file="sub/test_cls.py" line="2" time="0.266" />
<testcase classname="sub.test_cls.TestWeb" name="test_port[{HOST}-80]" file="sub/test_cls.py" line="4" time="0.000" />
<testcase classname="sub.test_cls.TestWeb" name="test_port[{HOST}-443]" file="sub/test_cls.py" line="4" time="0.001">
<failure message="assert 443 == 80">port = 443
&gt;       assert port == 80
E       assert 443 == 80

sub/test_cls.py:7: AssertionError</failure></testcase>
<testcase classname="sub.test_cls" name="test_setup_error[{HOST}]" file="sub/test_cls.py" line="10" time="0.000">
<error message="failed on setup with &quot;RuntimeError: fixture exploded&quot;">@pytest.fixture
    def broken():
&gt;       raise RuntimeError("fixture exploded")
E       RuntimeError: fixture exploded

sub/test_cls.py:10: RuntimeError</error></testcase>
<testcase classname="sub.test_cls" name="test_skip[{HOST}]" file="sub/test_cls.py" line="12" time="0.000">
<skipped type="pytest.skip" message="not today">sub/test_cls.py:14: not today</skipped></testcase>
<testcase classname="sub.test_cls" name="test_plain[{HOST}]" file="sub/test_cls.py" line="14" time="0.065">
<failure message="AssertionError: assert False&#10; +  where False = &lt;file /nope&gt;.exists&#10; +    where &lt;file /nope&gt; = x">
E       AssertionError: assert False</failure></testcase>
<testcase classname="test_x" name="test_fail[{HOST}]" file="test_x.py" line="3" time="0.062">
<failure message="AssertionError: nope missing&#10;assert False&#10; +  where False = &lt;file /nope&gt;.exists">
E       AssertionError: nope missing</failure></testcase>
</testsuite></testsuites>"""

COLLECTION_ERROR = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest"
 errors="1" failures="0" skipped="0" tests="1"><testcase classname="" name="sub.test_bad" file="sub/test_bad.py"
 time="0.000"><error message="collection failure">ImportError while importing test module 'sub/test_bad.py'.
Traceback:
sub/test_bad.py:1: in &lt;module&gt;
    import nosuchmodule
E   ModuleNotFoundError: No module named 'nosuchmodule'</error></testcase></testsuite></testsuites>"""

# xunit2 (pytest's default) has no file attribute; a report from a scenario may be in either family.
XUNIT2 = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.test_default" name="test_user[ansible://web-1]" time="0.1" />
<testcase classname="tests.test_default" name="test_port[ansible://web-1]" time="0.2">
<failure message="AssertionError: port 80 closed">E AssertionError: port 80 closed</failure></testcase>
</testsuite></testsuites>"""


def test_counts_failures_and_files_of_a_testinfra_run():
    parsed = parse_junit(XUNIT1)
    assert parsed["tests"] == {"total": 8, "passed": 3, "failed": 3, "errors": 1, "skipped": 1}
    assert parsed["failures"] == [
        {"test": "sub/test_cls.py::TestWeb::test_port[443]", "message": "assert 443 == 80"},
        {"test": "sub/test_cls.py::test_setup_error", "message": "RuntimeError: fixture exploded"},
        {"test": "sub/test_cls.py::test_plain",
         "message": "AssertionError: assert False + where False = <file /nope>.exists"},
        {"test": "test_x.py::test_fail", "message": "AssertionError: nope missing"},
    ]
    assert parsed["files"] == [
        {"file": "test_x.py", "tests": 2, "failed": 1, "duration": 0.444},
        {"file": "sub/test_cls.py", "tests": 6, "failed": 3, "duration": 0.332},
    ]


def test_a_module_that_cannot_be_imported_is_an_error_named_by_its_file():
    parsed = parse_junit(COLLECTION_ERROR)
    assert parsed["tests"] == {"total": 1, "passed": 0, "failed": 0, "errors": 1, "skipped": 0}
    assert parsed["failures"] == [{"test": "sub/test_bad.py",
                                   "message": "ModuleNotFoundError: No module named 'nosuchmodule'"}]


def test_xunit2_reports_are_read_too():
    parsed = parse_junit(XUNIT2)
    assert parsed["tests"]["total"] == 2 and parsed["tests"]["failed"] == 1
    assert parsed["failures"] == [{"test": "tests.test_default::test_port", "message": "AssertionError: port 80 closed"}]
    assert parsed["passed"] == ["tests.test_default::test_user"]


def test_empty_report_counts_nothing():
    parsed = parse_junit('<testsuites><testsuite name="pytest" tests="0"/></testsuites>')
    assert parsed == {"tests": {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0},
                      "failures": [], "files": [], "passed": []}


def test_a_truncated_report_is_a_clear_error():
    with pytest.raises(InfraError, match="not valid XML"):
        parse_junit(XUNIT1[:300])


@pytest.mark.parametrize("name, expected", [
    (f"test_os[{HOST}]", "test_os"),
    (f"test_port[{HOST}-80]", "test_port[80]"),
    (f"test_port[80-{HOST}]", "test_port[80]"),
    (f"test_pair[1-{HOST}-2]", "test_pair[1-2]"),
    ("docker://root@abc", "docker://root@abc"),
    ("test_user[ansible://web-1]", "test_user"),
    ("test_plain", "test_plain"),
    ("test_value[a-b]", "test_value[a-b]"),
])
def test_names_lose_the_host_parameter_only(name, expected):
    assert clean_test_name(name) == expected


@pytest.mark.parametrize("message, text, expected", [
    ("AssertionError: nope missing\nassert False", "", "AssertionError: nope missing"),
    ("assert False\n +  where False = <file /x>.exists\n +    where deeper", "", "assert False + where False = <file /x>.exists"),
    ("collection failure", "Traceback\nE   ImportError: no module x\nE   more", "ImportError: no module x more"),
    ('failed on setup with "RuntimeError: boom"', "E       RuntimeError: boom", "RuntimeError: boom"),
    ("", "", "no message"),
    ("", "last line only", "last line only"),
    ("x" * 900, "", "x" * 500),
])
def test_failure_message_is_the_line_a_user_needs(message, text, expected):
    assert failure_message(message, text) == expected


def test_progress_lines_are_result_lines_without_the_host():
    assert progress_line(f"tests/test_web.py::test_os[{HOST}] PASSED") == "tests/test_web.py::test_os PASSED"
    assert progress_line(f"[gw1] FAILED tests/test_web.py::test_port[{HOST}-80]") == \
        "[gw1] FAILED tests/test_web.py::test_port[80]"
    assert progress_line("collected 3 items") is None
    assert progress_line("") is None


def test_listening_ports_come_from_proc_net_tcp_and_tcp6():
    proc = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1 0000 100 0 0 10 0
   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000 20 4 30 10 -1
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:0 0 0
"""
    assert listening_ports(proc) == {8000, 443}
    assert listening_ports("") == set()
    assert listening_ports("garbage\n 0: nonsense:ZZZZ 0:0 0A\n") == set()


def test_exposed_tcp_ports_of_an_image_config():
    assert exposed_tcp_ports({"ExposedPorts": {"8000/tcp": {}, "53/udp": {}, "80": {}}}) == [80, 8000]
    assert exposed_tcp_ports({"ExposedPorts": None}) == []
    assert exposed_tcp_ports({}) == []


def test_image_roles_without_versions():
    assert image_roles({"immutable.infra.roles": "common,web,acme.tools.stamp@1.2.0"}) == \
        ["common", "web", "acme.tools.stamp"]
    assert image_roles({}) == []


@pytest.mark.parametrize("files, cores, mode, history, expected", [
    (1, 4, "auto", None, 0),
    (3, 1, "always", None, 0),
    (3, 2, "auto", None, 2),
    (2, 8, "auto", None, 2),
    (3, 2, "never", None, 0),
    (3, 2, "always", [0.1, 0.1, 0.1], 2),
    (3, 2, "auto", [0.2, 0.3, 0.4], 0),   # one process is sooner: the others add only 0.5 s
    (3, 2, "auto", [2.0, 0.5, 1.0], 2),
])
def test_workers(files, cores, mode, history, expected):
    assert choose_workers(files, cores, mode, history) == expected


def test_failure_report_names_each_failing_test():
    counts = {"total": 5, "passed": 3, "failed": 1, "errors": 1, "skipped": 0}
    failures = [{"test": "tests/test_web.py::test_port", "message": "AssertionError: port 80 closed"},
                {"test": "tests/test_web.py::test_tls", "message": "RuntimeError: no cert"}]
    assert failure_report("acme/web:1 (0123456789ab)", verdict_summary(counts), failures) == (
        "Image acme/web:1 (0123456789ab) failed verification (tests: 3 passed, 1 failed, 1 errors):\n"
        "  - tests/test_web.py::test_port: AssertionError: port 80 closed\n"
        "  - tests/test_web.py::test_tls: RuntimeError: no cert")
    many = [{"test": f"t{number}", "message": "m"} for number in range(25)]
    assert failure_report("x", "tests: 3 passed", many).endswith("... and 5 more (see the report)")
    assert summary({"total": 2, "passed": 2, "failed": 0, "errors": 0, "skipped": 0}) == "2 passed"


def test_verdict_summary_says_what_ran():
    counts = {"total": 5, "passed": 4, "failed": 1, "errors": 0, "skipped": 0}
    none = {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    molecule = {"scenario": "web", "passed": False, "tests": {"total": 3, "passed": 3, "failed": 0, "errors": 0,
                                                              "skipped": 0}}
    assert verdict_summary(counts) == "tests: 4 passed, 1 failed"
    assert verdict_summary(none, molecule, {"passed": False, "changed_tasks": ["a", "b"]}) == \
        "Molecule web: 3 passed; idempotence: 2 task(s) changed"
    assert verdict_summary(none, {"scenario": "web", "passed": False}, {"passed": True, "changed_tasks": []}) == \
        "Molecule web: failed; idempotence: no changes"
    assert verdict_summary(none, None, {"passed": False, "changed_tasks": []}) == "idempotence: the roles failed"


STOPPED = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="2">
<testcase classname="test_web" file="test_web.py" name="test_first" time="0.1"/>
<testcase time="0.0"/>
</testsuite></testsuites>"""


def test_a_run_stopped_mid_way_counts_only_the_tests_that_ran_and_fails_the_verify():
    parsed = parse_junit(STOPPED)
    assert parsed["tests"]["total"] == parsed["tests"]["passed"] == 1 and parsed["passed"] == ["test_web.py::test_first"]
    assert run_failures(2, parsed["tests"], parsed["failures"], "!!! _pytest.outcomes.Exit: stop !!!") == [
        {"test": "(pytest)", "message": "pytest stopped before every test ran (exit code 2): "
                                        "!!! _pytest.outcomes.Exit: stop !!!"}]


def test_a_run_with_no_passing_test_or_an_unreported_failure_fails_and_a_clean_one_does_not():
    skipped = {"total": 2, "passed": 0, "failed": 0, "errors": 0, "skipped": 2}
    assert run_failures(0, skipped, [], "")[0]["message"].startswith("no test passed (2 skipped of 2)")
    passed = dict(skipped, passed=2, skipped=0)
    assert run_failures(1, passed, [], "INTERNALERROR")[0]["message"].startswith("pytest failed (exit code 1) with no")
    assert run_failures(0, passed, [], "") == []
    failing = [{"test": "test_web.py::test_first", "message": "assert 1 == 2"}]
    assert run_failures(1, dict(passed, passed=1, failed=1), failing, "") == []
