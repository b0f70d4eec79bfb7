# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure functions that turn what a verify observed into a verdict: JUnit XML, listening ports, messages."""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import ImageProvenance

MESSAGE_LIMIT = 500
# Messages pytest writes for a whole category rather than for the test; the traceback says more.
GENERIC_MESSAGES = {"", "collection failure", "failed on setup", "failed on teardown"}
TCP_LISTEN = "0A"
# testinfra adds the host to every test id, e.g. test_os[ansible://web-1] or test_port[docker://0123abcd-80].
ONLY_HOST_PARAMETER = re.compile(r"\[[a-z][a-z-]*://[^\]]*\]$")
HOST_PARAMETER = re.compile(r"-?docker://[^\]\-]*-?")  # container IDs have no dashes, so this is unambiguous


def empty_counts() -> dict[str, int]:
    return {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}


def clean_test_name(name: str) -> str:
    """A test's name without testinfra's host parameter: test_port[docker://0123-80] -> test_port[80]."""
    if "[" not in name:
        return name
    base, params = name.split("[", 1)
    params = HOST_PARAMETER.sub(lambda match: "-" if match.group(0).startswith("-") and match.group(0).endswith("-")
                                else "", params)
    if params in ("]", ""):
        return base
    return ONLY_HOST_PARAMETER.sub("", f"{base}[{params}")


def progress_line(line: str) -> str | None:
    """A pytest -v result line without the host parameter, or None for other output."""
    words = line.split()
    if not any(word in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS") for word in words):
        return None
    return " ".join(clean_test_name(word) if "[" in word else word for word in words)


def case_id(case: ElementTree.Element) -> str:
    """file::Class::name of a JUnit test case (xunit1 has the file), without testinfra's host parameter."""
    name = clean_test_name(case.get("name") or "?")
    classname = case.get("classname") or ""
    path = case.get("file") or ""
    if not path:
        return f"{classname}::{name}" if classname else name
    module = path[:-3].replace("/", ".") if path.endswith(".py") else path.replace("/", ".")
    if not classname and name == module:
        return path  # a file that could not be collected
    owner = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
    return "::".join(part for part in (path, owner.replace(".", "::"), name) if part)


def failure_message(message: str, text: str) -> str:
    """The line a user needs: the assertion message and pytest's first explanation of it."""
    lines = [" ".join(line.split()) for line in (message or "").splitlines() if line.strip()]
    if lines and lines[0].lower() not in GENERIC_MESSAGES and not lines[0].lower().startswith("failed on setup with"):
        chosen = [lines[0]] + [line for line in lines[1:2] if line.startswith("+")]
        return " ".join(chosen)[:MESSAGE_LIMIT]
    explained = [line[1:].strip() for line in (text or "").splitlines() if line.startswith("E ")]
    if explained:
        return " ".join(explained[:2])[:MESSAGE_LIMIT]
    if lines:
        return " ".join(lines[:2])[:MESSAGE_LIMIT]
    tail = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return (tail[-1] if tail else "no message")[:MESSAGE_LIMIT]


def parse_junit(xml_text: str) -> dict[str, Any]:
    """Counts, failures, per-file times and the passed tests' ids from a pytest JUnit XML report
    (xunit1 or xunit2)."""
    try:
        root = ElementTree.fromstring(xml_text)
    except ElementTree.ParseError as error:
        raise InfraError(f"The JUnit report of the tests is not valid XML ({error}); pytest probably "
                         "stopped before it finished writing it.") from None
    counts = empty_counts()
    failures: list[dict[str, str]] = []
    passed: list[str] = []
    files: dict[str, dict[str, Any]] = {}
    for case in root.iter("testcase"):
        if not case.get("name"):  # what a pytest stopped mid-run leaves for the test it was in: no test
            continue
        identifier = case_id(case)
        outcome = _outcome(case)
        counts["total"] += 1
        counts[outcome] += 1
        path = case.get("file") or identifier.split("::", 1)[0]
        entry = files.setdefault(path, {"file": path, "tests": 0, "failed": 0, "duration": 0.0})
        entry["tests"] += 1
        entry["duration"] = round(entry["duration"] + _seconds(case.get("time")), 3)
        if outcome == "passed":
            passed.append(identifier)
        if outcome in ("failed", "errors"):
            entry["failed"] += 1
            element = case.find("failure") if outcome == "failed" else case.find("error")
            if element is None:
                element = case.find("error")
            failures.append({"test": identifier, "message": failure_message(
                element.get("message", "") if element is not None else "",
                element.text or "" if element is not None else "")})
    return {"tests": counts, "failures": failures, "files": list(files.values()), "passed": passed}


def run_failures(returncode: int, tests: dict[str, int], failures: list[dict[str, str]], tail: str
                 ) -> list[dict[str, str]]:
    """What pytest's exit says beyond its report: a run that stopped before every test ran (exit code 2:
    interrupted, pytest.exit, a collection error), a failure the report does not hold, or a run in which no
    test passed (all skipped) proves nothing, so each is a failure of the verify."""
    said = tail.strip()[-1500:]
    if returncode not in (0, 1):
        return [{"test": "(pytest)", "message": f"pytest stopped before every test ran (exit code {returncode}): {said}"}]
    if returncode == 1 and not failures:
        return [{"test": "(pytest)", "message": f"pytest failed (exit code 1) with no failing test in its report: {said}"}]
    if tests["passed"] == 0 and not failures:
        return [{"test": "(pytest)", "message": f"no test passed ({tests['skipped']} skipped of {tests['total']}); a "
                                                "verify without a passing test proves nothing"}]
    return []


def _outcome(case: ElementTree.Element) -> str:
    # A test that failed and then errored in teardown has both elements; a failure is the stronger news.
    if case.find("failure") is not None:
        return "failed"
    if case.find("error") is not None:
        return "errors"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def _seconds(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def listening_ports(proc_net_tcp: str) -> set[int]:
    """TCP ports in LISTEN state in the text of /proc/net/tcp and /proc/net/tcp6."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1] or fields[3] != TCP_LISTEN:
            continue
        try:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except ValueError:
            continue
    return ports


def exposed_tcp_ports(image_config: dict[str, Any]) -> list[int]:
    """The TCP ports an image's config exposes, like 8000 for '8000/tcp'."""
    ports = []
    for spec in (image_config.get("ExposedPorts") or {}):
        number, protocol = ([*spec.split("/", 1), "tcp"])[:2]
        if protocol == "tcp" and number.isdigit():
            ports.append(int(number))
    return sorted(ports)


def image_roles(labels: dict[str, str]) -> list[str]:
    """Role names from an image's provenance labels, without their versions."""
    return ImageProvenance.from_labels(labels).role_names


def summary(counts: dict[str, int]) -> str:
    parts = [f"{counts['passed']} passed"]
    parts += [f"{counts[key]} {key}" for key in ("failed", "errors", "skipped") if counts[key]]
    return ", ".join(parts)


def verdict_summary(counts: dict[str, int], molecule: dict[str, Any] | None = None,
                    idempotence: dict[str, Any] | None = None) -> str:
    """'4 passed, 1 failed; Molecule web: 3 passed; idempotence: 2 tasks changed' for what ran."""
    parts = [f"tests: {summary(counts)}"] if counts["total"] else []
    if molecule:
        ran = molecule.get("tests") or empty_counts()
        parts.append(f"Molecule {molecule['scenario']}: " + (summary(ran) if ran["total"] else
                                                             "passed" if molecule.get("passed") else "failed"))
    if idempotence:
        changed = len(idempotence.get("changed_tasks") or [])
        parts.append("idempotence: " + (f"{changed} task(s) changed" if changed else
                                        "no changes" if idempotence.get("passed") else "the roles failed"))
    return "; ".join(parts)


def failure_report(name: str, what_ran: str, failures: list[dict[str, str]], limit: int = 20,
                   kind: str = "Image") -> str:
    """The task message of a failed verdict of an image or a disk (kind): one line per failing test with
    its assertion message."""
    lines = [f"{kind} {name} failed verification ({what_ran}):"]
    lines += [f"  - {failure['test']}: {failure['message']}" for failure in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"  ... and {len(failures) - limit} more (see the report)")
    return "\n".join(lines)


PARALLEL_THRESHOLD = 1.0  # seconds of test time a second worker must save to pay for its start-up


def choose_workers(file_count: int, cores: int, mode: str, last_durations: list[float] | None = None) -> int:
    """How many pytest-xdist workers to use; 0 runs the tests in one process.

    auto runs several files in parallel unless the last verify of the same files showed that all but
    the slowest file took less than PARALLEL_THRESHOLD, when one process finishes sooner.
    """
    if mode == "never" or file_count < 2 or cores < 2:
        return 0
    workers = min(file_count, cores)
    if mode == "always" or not last_durations:
        return workers
    return workers if sum(last_durations) - max(last_durations) >= PARALLEL_THRESHOLD else 0
