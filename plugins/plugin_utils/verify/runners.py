# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runners of a verify: pytest-testinfra, idempotence and Molecule, each adding to one Verdict.

Testinfra runs against a test host: a throwaway container of an image (host.py) or a VM booted from
a disk (vm_host.py), which offer it the same face (HostUnderTest). Idempotence runs in a throwaway
container; a Molecule scenario makes its own instances from the image. Each runner records what it
found in the Verdict and its time in verdict.timings; the verify (manager.py) decides what runs and
records the verdict.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.play_runner import PlaySpec, run_play
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Guard
from ansible_collections.immutable.infra.plugins.plugin_utils.core.processes import run_streaming
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.host import Broken, ThrowawayHost

MOLECULE_DESTROY_TIMEOUT = 120
# Enabled units would run on a booted server, so the systemctl stand-in reports them active.
MARK_ENABLED_ACTIVE = f"""mkdir -p {builder.STAGE}/active
for unit in /etc/systemd/system/*.wants/*; do
  [ -e "$unit" ] || continue
  name=${{unit##*/}}; touch "{builder.STAGE}/active/${{name%.*}}"
done
"""


@dataclass
class Verdict:
    """Everything the parts of a verify found out, merged into one result."""

    tests: dict[str, int] = field(default_factory=verify_report.empty_counts)
    failures: list[dict[str, str]] = field(default_factory=list)
    passed_tests: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 0
    broken: Broken | None = None
    idempotence: dict[str, Any] | None = None
    molecule: dict[str, Any] | None = None
    host: dict[str, Any] | None = None  # the test host: container or VM (with its boot timeline)

    @property
    def passed(self) -> bool:
        return self.broken is None and not self.failures and self.tests["failed"] == 0 and self.tests["errors"] == 0

    def record_fields(self, report: str | None, test_files: list[str], duration: float) -> dict[str, Any]:
        """The verdict's fields in its ledger record, the same for an image and a disk."""
        broken = self.broken
        return {"result": "passed" if self.passed else "failed",
                "broken": {"reason": broken.reason, "exit_code": broken.exit_code} if broken else None,
                "tests": self.tests, "failures": self.failures[:50], "report": report, "test_files": test_files,
                "files": self.files, "workers": self.workers, "timings": self.timings, "host": self.host,
                "idempotence": self.idempotence, "molecule": self.molecule, "duration": duration}


class HostUnderTest(Protocol):
    """What testinfra's runner needs of the host it tests: a container (host.ThrowawayHost) or a VM
    (vm_host.VmHost)."""

    cleanup_seconds: float
    subject: str  # what its failure breaks: image, disk

    @property
    def client(self) -> DockerClient | None:
        """The engine a container runs on; None for a VM."""

    def started(self, guard: Guard) -> AbstractContextManager[Any]:
        ...

    def wait_ready(self, ports: list[int] | None, start_timeout: int, remaining: float) -> None:
        ...

    def check_running(self, when: str = ...) -> None:
        ...

    def pytest_target(self) -> list[str]:
        ...

    def test_environment(self) -> dict[str, str]:
        ...

    def timings(self) -> dict[str, float]:
        ...

    def details(self) -> dict[str, Any]:
        ...


@dataclass
class Scenario:
    directory: str
    name: str
    project_dir: str
    glob: str


def find_test_files(paths: list[str], basedir: str) -> tuple[list[str], list[str]]:
    """(the given paths made absolute, the test files they hold); a missing path is an error."""
    resolved, files = [], []
    for given in paths:
        path = os.path.normpath(os.path.join(basedir, os.path.expanduser(given)))
        if not os.path.exists(path):
            raise InfraError(f"Tests path '{given}' does not exist (looked for {path}); "
                             "give testinfra files or directories relative to the playbook.")
        resolved.append(path)
        if os.path.isfile(path):
            if not path.endswith(".py"):
                raise InfraError(f"Tests path '{given}' ({path}) is neither a directory nor a Python test file.")
            files.append(path)
            continue
        found = sorted(os.path.join(root, name) for root, dirs, names in os.walk(path) for name in names
                       if name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))
                       and "__pycache__" not in root)
        if not found:
            raise InfraError(f"Tests path '{given}' holds no test files (test_*.py or *_test.py).")
        files.extend(found)
    return resolved, sorted(set(files), key=files.index)


def locate_scenario(given: str, basedir: str) -> Scenario:
    """A Molecule scenario directory, and where Molecule must run to find it by name."""
    directory = os.path.normpath(os.path.join(basedir, os.path.expanduser(given)))
    if not os.path.isfile(os.path.join(directory, "molecule.yml")):
        raise InfraError(f"Molecule scenario '{given}' has no molecule.yml (looked in {directory}).")
    parent = os.path.dirname(directory)
    if os.path.basename(parent) != "molecule":
        raise InfraError(f"Molecule scenario '{given}' must be a directory molecule/<name> or "
                         "extensions/molecule/<name>, where Molecule finds scenarios.")
    grandparent = os.path.dirname(parent)
    if os.path.basename(grandparent) == "extensions":
        return Scenario(directory, os.path.basename(directory), os.path.dirname(grandparent),
                        "extensions/molecule/*/molecule.yml")
    return Scenario(directory, os.path.basename(directory), grandparent, "molecule/*/molecule.yml")


def child_environment(client: DockerClient | None, extra: dict[str, str]) -> dict[str, str]:
    """The controller's environment, with the Docker CLI's variables of the client's engine (if any) and
    this Python's tools first on PATH (pytest, molecule, ansible)."""
    env = client.engine_environment(os.environ) if client is not None else dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of the user's test directories
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    env.update(extra)
    return env


class Runner:
    """What every runner shares: the verify's options, the play's directory, progress and the deadline."""

    def __init__(self, params: dict[str, Any], basedir: str, deadline: float, described: str,
                 progress: Callable[[str], None]) -> None:
        self.params = params
        self.basedir = basedir
        self.deadline = deadline
        self.described = described  # the image, as progress lines name it
        self.progress = progress

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def host(self, client: DockerClient, image: dict[str, Any]) -> ThrowawayHost:
        return ThrowawayHost(client, image, self.described, self.params["network"], self.progress,
                             self.params["exec_user"], self.params["keep_alive"])


class TestinfraRunner(Runner):
    """pytest-testinfra against a test host; the JUnit report gives the counts and failures."""

    __test__ = False  # not a pytest test class, whatever its name

    def run(self, host: HostUnderTest, environment: dict[str, str], paths: list[str], file_count: int, report: str,
            verdict: Verdict, guard: Guard) -> None:
        """environment: what the tests learn of the subject (IMMUTABLE_INFRA_IMAGE_ID, ...)."""
        begun = time.monotonic()
        try:
            with host.started(guard):
                host.wait_ready(self.params["wait_for_ports"], self.params["start_timeout"], self.remaining())
                verdict.timings["start"] = round(time.monotonic() - begun, 3)
                verdict.timings.update(host.timings())
                self._pytest(host, environment, paths, file_count, report, verdict)
                host.check_running()
        except Broken as broken:
            verdict.broken = broken
            # Test results from a host whose command died say nothing about the subject.
            verdict.failures = [{"test": "host", "message": f"the {host.subject} is broken: {broken.reason}"}]
        finally:
            verdict.timings.update(host.timings())
            verdict.timings["cleanup"] = host.cleanup_seconds
            verdict.host = host.details()

    def _pytest(self, host: HostUnderTest, environment: dict[str, str], paths: list[str], file_count: int, report: str,
                verdict: Verdict) -> None:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                   f"--junitxml={report}", *host.pytest_target(),
                   "-v", "-rN", "--tb=short", "--color=no", "-o", "console_output_style=classic"]
        if verdict.workers:
            command += ["-n", str(verdict.workers), "--dist", "loadfile"]
        command += [*self.params["pytest_args"], *paths]
        env = child_environment(host.client, {**environment, **host.test_environment()})
        self.progress(f"verify: running {file_count} test file(s)"
                      + (f" in {verdict.workers} parallel workers" if verdict.workers else ""))
        begun = time.monotonic()
        finished = run_streaming(command, self.basedir, env, self.remaining(), self._show_test_line)
        verdict.timings["tests"] = round(time.monotonic() - begun, 3)
        if finished.timed_out:
            verdict.failures.append({"test": "(timeout)", "message": f"the tests did not finish within the "
                                                                     f"verify_timeout of {self.params['verify_timeout']} s"})
            return
        if finished.returncode in (3, 4, 127) or not os.path.exists(report):
            raise InfraError(f"pytest could not run the tests (exit code {finished.returncode}):\n"
                             f"{finished.tail.strip()[-2500:]}")
        if finished.returncode == 5:
            raise InfraError(f"pytest collected no tests from {', '.join(self.params['tests'])}; "
                             "a verify without tests proves nothing.")
        with open(report, encoding="utf-8") as handle:
            parsed = verify_report.parse_junit(handle.read())
        verdict.tests, verdict.files = parsed["tests"], parsed["files"]
        verdict.failures.extend(parsed["failures"])
        verdict.failures.extend(verify_report.run_failures(finished.returncode, parsed["tests"], parsed["failures"],
                                                           finished.tail))
        verdict.passed_tests.extend(parsed["passed"])
        for entry in verdict.files:
            self.progress(f"verify: {entry['file']}: {entry['tests'] - entry['failed']}/{entry['tests']} passed, "
                          f"{entry['duration']:.2f} s")

    def _show_test_line(self, line: str) -> None:
        shown = verify_report.progress_line(line)
        if shown:
            self.progress(f"verify: {shown}")


class IdempotenceRunner(Runner):
    """Applies the image's roles again in a throwaway host: nothing may report changed."""

    def run(self, client: DockerClient, image: dict[str, Any], roles: list[str], spec: PlaySpec, verdict: Verdict,
            guard: Guard) -> None:
        begun = time.monotonic()
        host = self.host(client, image)
        with host.started(guard, keep_alive=True):
            builder.prepare(client, host.container_id)
            client.exec(host.container_id, ["/bin/sh", "-c", MARK_ENABLED_ACTIVE])
            self.progress(f"verify: applying {', '.join(roles)} again; nothing may report changed")
            spec.container_id, spec.engine, spec.timeout = host.container_id, client, max(int(self.remaining()), 1)
            play = run_play(spec, self._show_event)
        verdict.timings["idempotence"] = round(time.monotonic() - begun, 3)
        verdict.idempotence = {"roles": roles, "passed": play.succeeded and not play.changed_tasks,
                               "changed_tasks": play.changed_tasks}
        if not play.succeeded:
            verdict.failures.append({"test": "idempotence", "message": "applying the roles again failed: "
                                                                       + play.failure_message()[:1500]})
        for task in play.changed_tasks:
            verdict.failures.append({"test": f"idempotence: {task}",
                                     "message": "reported changed when the roles were applied to the image again"})

    def _show_event(self, event: dict[str, Any]) -> None:
        if event["event"] == "result" and event.get("changed"):
            self.progress(f"verify: idempotence: changed: {event.get('task')}")
        elif event["event"] == "result" and event.get("status") in ("failed", "unreachable"):
            self.progress(f"verify: idempotence: {event.get('status')}: {event.get('task')}: "
                          f"{event.get('msg', '')}"[:400])


class MoleculeRunner(Runner):
    """`molecule test` of a user's scenario, with the image under test in its image variable."""

    def run(self, client: DockerClient, scenario: Scenario, image_id: str, report: str, verdict: Verdict) -> None:
        begun = time.monotonic()
        log, junit = os.path.splitext(report)[0] + ".molecule.log", os.path.splitext(report)[0] + ".molecule.xml"
        # The scenario's testinfra verifier runs pytest, which reads PYTEST_ADDOPTS: its tests get a JUnit report too.
        addopts = f"{os.environ.get('PYTEST_ADDOPTS', '')} --junitxml={junit} -o junit_family=xunit1".strip()
        env = child_environment(client, {
            self.params["molecule_image_env"]: image_id, "IMMUTABLE_INFRA_IMAGE_ID": image_id,
            "MOLECULE_GLOB": scenario.glob, "PYTEST_ADDOPTS": addopts, "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"})
        self.progress(f"verify: molecule test -s {scenario.name} with {self.params['molecule_image_env']}="
                      f"{short_id(image_id)}")
        command = [sys.executable, "-m", "molecule", "test", "-s", scenario.name]
        finished = None
        try:
            finished = run_streaming(command, scenario.project_dir, env, self.remaining(), self._show_molecule_line,
                                     log_path=log)
        finally:
            if finished is None or finished.timed_out:
                # Killed half-way: the scenario's own destroy did not run.
                run_streaming([sys.executable, "-m", "molecule", "destroy", "-s", scenario.name], scenario.project_dir,
                              env, MOLECULE_DESTROY_TIMEOUT)
        seconds = round(time.monotonic() - begun, 3)
        verdict.timings["molecule"] = seconds
        passed = finished.returncode == 0 and not finished.timed_out
        parsed: dict[str, Any] = {"tests": verify_report.empty_counts(), "failures": []}
        if os.path.exists(junit):
            with open(junit, encoding="utf-8") as handle:
                parsed = verify_report.parse_junit(handle.read())
        verdict.molecule = {"scenario": scenario.name, "directory": scenario.directory, "passed": passed,
                            "tests": parsed["tests"], "log": log, "report": junit if os.path.exists(junit) else None,
                            "duration": seconds}
        verdict.failures.extend({"test": f"molecule {scenario.name}: {failure['test']}", "message": failure["message"]}
                                for failure in parsed["failures"])
        verdict.passed_tests.extend(f"molecule {scenario.name}: {test}" for test in parsed.get("passed") or [])
        if not passed and not parsed["failures"]:
            why = (f"did not finish within the verify_timeout of {self.params['verify_timeout']} s" if finished.timed_out
                   else f"failed (exit code {finished.returncode})")
            tail = "\n".join(finished.tail.strip().splitlines()[-15:])
            verdict.failures.append({"test": f"molecule {scenario.name}",
                                     "message": f"molecule test {why}; log: {log}\n{tail}"})

    def _show_molecule_line(self, line: str) -> None:
        if "➜" in line or "Executing" in line or "Running" in line:
            self.progress("verify: molecule: " + line.strip()[:200])


def report_path(report_dir: str | None, ledger_path: str, basedir: str, what: str) -> str:
    """A new JUnit report file for one verify of `what`, in report_dir (default: reports/ beside the ledger)."""
    directory = report_dir or os.path.join(os.path.dirname(ledger_path), "reports")
    directory = os.path.normpath(os.path.join(basedir, os.path.expanduser(directory)))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise InfraError(f"Cannot create the report directory {directory}: {error.strerror}; "
                         "set report_dir to a writable path.") from None
    stamp = utc_timestamp().replace(":", "").replace("-", "")
    return os.path.join(directory, f"verify-{what}-{stamp}-{uuid.uuid4().hex[:6]}.xml")
