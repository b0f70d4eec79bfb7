# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verify: prove an image in a throwaway host, and bind the verdict to its image ID.

A host is started from the exact image ID, pytest-testinfra runs against it through the docker
backend, and the JUnit report decides the verdict. Optionally the bake's roles are applied again in a
second host (idempotence) and a user's Molecule scenario runs against the image. Every host is removed
whatever happens, Ctrl-C included. The verdict goes to the ledger and to the engine (verdicts.py),
where the rollout gate reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.play_runner import PlaySpec, run_play
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import CollectionIndex, RoleResolver
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    LABEL_INPUTS_HASH,
    LABEL_PREFIX,
    InfraError,
    short_id,
    utc_timestamp,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Guard, interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.core.processes import run_streaming
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import (
    VERDICT_LABEL,
    record_verdict,
    verdict_for,
)

HOST_NAME_PREFIX = "immutable-infra-verify-"
LABEL_VERIFYING = LABEL_PREFIX + "verifying"
MOLECULE_DESTROY_TIMEOUT = 120
POLL_SECONDS = 0.05
# Enabled units would run on a booted server, so the systemctl stand-in reports them active.
MARK_ENABLED_ACTIVE = f"""mkdir -p {builder.STAGE}/active
for unit in /etc/systemd/system/*.wants/*; do
  [ -e "$unit" ] || continue
  name=${{unit##*/}}; touch "{builder.STAGE}/active/${{name%.*}}"
done
"""

MAX_SECONDS = 7 * 86400

VERIFY_ARGUMENT_SPEC: dict[str, Any] = {
    "image": {"type": "str", "required": True},
    "tests": {"type": "list", "elements": "path", "default": []},
    "molecule_scenario": {"type": "path"},
    "molecule_image_env": {"type": "str", "default": "MOLECULE_IMAGE"},
    "idempotence": {"type": "bool", "default": False},
    "roles": {"type": "list", "elements": "str"},
    "vars": {"type": "dict", "default": {}},
    "timeout": {"type": "int", "default": 300},
    "start_timeout": {"type": "int", "default": 30},
    "wait_for_ports": {"type": "list", "elements": "int"},
    "keep_alive": {"type": "bool", "default": False},
    "exec_user": {"type": "str", "default": "root"},
    "parallel": {"type": "str", "default": "auto", "choices": ["auto", "always", "never"]},
    "pytest_args": {"type": "list", "elements": "str", "default": []},
    "report_dir": {"type": "path"},
    "network": {"type": "str"},
    "python_interpreter": {"type": "str", "default": "/usr/bin/python3"},
    "become_method": {"type": "str", "default": "su"},
    "docker_host": {"type": "str"},
    "ledger": {"type": "path"},
}


@dataclass
class VerifyContext:
    """Where the calling play runs: its directory and how Ansible resolves roles for it."""

    basedir: str
    roles_path: list[str] = field(default_factory=list)
    collections_path: list[str] = field(default_factory=list)
    play_collections: list[str] = field(default_factory=list)
    check_mode: bool = False
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass
class Scenario:
    directory: str
    name: str
    project_dir: str
    glob: str


@dataclass
class Broken(Exception):
    """The image's command exited, or its host never became ready: the image is broken."""

    reason: str
    exit_code: int | None = None
    logs: str = ""


@dataclass
class Verdict:
    """Everything the parts of a verify found out, merged into one result."""

    tests: dict[str, int] = field(default_factory=verify_report.empty_counts)
    failures: list[dict[str, str]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 0
    broken: Broken | None = None
    idempotence: dict[str, Any] | None = None
    molecule: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.broken is None and not self.failures and self.tests["failed"] == 0 and self.tests["errors"] == 0


@dataclass
class Plan:
    """What a verify will do, resolved and checked before anything starts."""

    client: DockerClient
    image: dict[str, Any]
    paths: list[str]
    files: list[str]
    scenario: Scenario | None
    roles: list[str]
    replay: PlaySpec | None
    ledger: Ledger
    workers: int
    previous: str | None


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


def child_environment(docker_host: str | None, extra: dict[str, str]) -> dict[str, str]:
    """The controller's environment, with this Python's tools first on PATH (pytest, molecule, ansible)."""
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of the user's test directories
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    env.update(extra)
    return env


class Verifier:
    def __init__(self, params: dict[str, Any], context: VerifyContext,
                 progress: Callable[[str], None] = lambda message: None) -> None:
        self.params = params
        self.context = context
        self.progress = progress
        for option in ("timeout", "start_timeout"):
            if params[option] <= 0:
                raise InfraError(f"{option} must be a positive number of seconds.")
            if params[option] > MAX_SECONDS:
                raise InfraError(f"{option} is {params[option]} s; at most {MAX_SECONDS} s (a week) is taken.")
        for port in params.get("wait_for_ports") or []:
            if not 0 < port < 65536:
                raise InfraError(f"wait_for_ports entry {port} is not a TCP port number (1-65535).")
        if not params["tests"] and not params["molecule_scenario"] and not params["idempotence"]:
            raise InfraError("Nothing to verify: give tests, a molecule_scenario, or idempotence: true.")
        self.deadline = 0.0

    # run -----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.deadline = started + self.params["timeout"]
        plan = self._plan()
        image_id = plan.image["Id"]
        result: dict[str, Any] = {"image": self.params["image"], "image_id": image_id, "test_files": plan.files,
                                  "workers": plan.workers, "idempotence_roles": plan.roles,
                                  "molecule_scenario": plan.scenario.directory if plan.scenario else None}
        if self.context.check_mode:
            return dict(result, changed=False, passed=None, would_verify=True, previous_verdict=plan.previous,
                        duration=round(time.monotonic() - started, 3), msg=self._would(plan))

        report = self._report_path(plan.ledger, image_id)
        verdict = Verdict(workers=plan.workers)
        with interruptible(f"verify of {self._describe(image_id)}") as guard:
            if plan.files:
                self._tests(plan.client, plan.image, plan.paths, len(plan.files), report, verdict, guard)
            if plan.replay and verdict.broken is None:
                self._idempotence(plan.client, plan.image, plan.roles, plan.replay, verdict, guard)
            if plan.scenario and verdict.broken is None:
                self._molecule(plan.scenario, image_id, report, verdict)
        duration = round(time.monotonic() - started, 3)
        verdict.timings["total"] = duration
        report_or_none = report if plan.files else None
        record = self._record(plan, verdict, report_or_none, duration)
        result.update(
            changed=plan.previous != record["result"], passed=verdict.passed, broken=verdict.broken is not None,
            tests=verdict.tests, failures=verdict.failures, files=verdict.files, timings=verdict.timings,
            duration=duration, report=report_or_none, idempotence=verdict.idempotence, molecule=verdict.molecule,
            ledger=plan.ledger.path, ledger_id=record["id"])
        return dict(result, **self._outcome_message(image_id, verdict, duration, report_or_none))

    def _plan(self) -> Plan:
        """Everything checked and resolved before any host starts, so bad input starts nothing."""
        paths, files = find_test_files(self.params["tests"], self.context.basedir)
        scenario = locate_scenario(self.params["molecule_scenario"], self.context.basedir) \
            if self.params["molecule_scenario"] else None
        if files and not shutil.which("docker", path=child_environment(None, {})["PATH"]):
            raise InfraError("testinfra's docker backend needs the docker command on the controller; "
                             "install the Docker CLI (Debian: docker.io or docker-ce-cli).")
        client = DockerClient(self.params["docker_host"])
        image = client.image(self.params["image"])
        if image is None:
            raise InfraError(f"Image '{self.params['image']}' is not in the Docker engine; bake it "
                             "(immutable.infra.bake) or give an image ID that exists.")
        roles = self._idempotence_roles(image) if self.params["idempotence"] else []
        ledger = Ledger(self.params["ledger"] or default_ledger_path())
        workers = verify_report.choose_workers(len(files), self.context.cores, self.params["parallel"],
                                               self._last_durations(ledger, files))
        return Plan(client=client, image=image, paths=paths, files=files, scenario=scenario, roles=roles,
                    replay=self._replay_spec(roles) if roles else None, ledger=ledger, workers=workers,
                    previous=(verdict_for(client, image["Id"]) or {}).get(VERDICT_LABEL))

    def _would(self, plan: Plan) -> str:
        return (f"would verify {self._describe(plan.image['Id'])} with {len(plan.files)} test file(s)"
                + (f", Molecule scenario {plan.scenario.name}" if plan.scenario else "")
                + (f", idempotence of {', '.join(plan.roles)}" if plan.roles else ""))

    def _describe(self, image_id: str) -> str:
        given = self.params["image"]
        return short_id(image_id) if given == image_id else f"{given} ({short_id(image_id)})"

    def _remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def _outcome_message(self, image_id: str, verdict: Verdict, duration: float, report: str | None) -> dict[str, Any]:
        where = f" Report: {report}" if report else ""
        if verdict.broken is not None:
            broken = verdict.broken
            logs = f"\nLast log lines:\n{broken.logs.rstrip()}" if broken.logs.strip() else ""
            return {"failed": True, "msg": f"Image {self._describe(image_id)} is broken: {broken.reason}.{logs}"}
        what_ran = verify_report.verdict_summary(verdict.tests, verdict.molecule, verdict.idempotence)
        if not verdict.passed:
            message = verify_report.failure_report(self._describe(image_id), what_ran, verdict.failures)
            return {"failed": True, "msg": message + (f"\n{where.strip()}" if where else "")}
        return {"msg": f"Image {self._describe(image_id)} passed verification ({what_ran}) in {duration:.1f} s.{where}"}

    # tests ---------------------------------------------------------------------------------------
    def _tests(self, client: DockerClient, image: dict[str, Any], paths: list[str], file_count: int, report: str,
               verdict: Verdict, guard: Guard) -> None:
        begun = time.monotonic()
        name = self._host_name(image["Id"])
        host_id = None
        try:
            host_id = self._start_host(client, image, name)
            self._wait_ready(client, host_id, image)
            verdict.timings["start"] = round(time.monotonic() - begun, 3)
            self._run_pytest(host_id, image["Id"], paths, file_count, report, verdict)
            self._check_running(client, host_id)
        except Broken as broken:
            verdict.broken = broken
            # Test results from a host whose command died say nothing about the image.
            verdict.failures = [{"test": "host", "message": f"the image is broken: {broken.reason}"}]
        finally:
            cleanup = time.monotonic()
            with guard.shield():
                client.remove_container(host_id or name)  # by name: a signal may come before the ID is known
            verdict.timings["cleanup"] = round(time.monotonic() - cleanup, 3)

    @staticmethod
    def _host_name(image_id: str) -> str:
        return f"{HOST_NAME_PREFIX}{short_id(image_id)}-{uuid.uuid4().hex[:6]}"

    def _start_host(self, client: DockerClient, image: dict[str, Any], name: str, keep_alive: bool = False) -> str:
        config = image.get("Config") or {}
        keep_alive = keep_alive or self.params["keep_alive"] or not (config.get("Cmd") or config.get("Entrypoint"))
        self.progress(f"verify: starting host {name} from {self._describe(image['Id'])}"
                      + (" (keep-alive)" if keep_alive else ""))
        return client.run_detached(image["Id"], name, {LABEL_VERIFYING: image["Id"]},
                                   entrypoint=builder.KEEP_ALIVE if keep_alive else None,
                                   command=[] if keep_alive else None, user="root" if keep_alive else None,
                                   networks=[self.params["network"]] if self.params["network"] else None)

    def _check_running(self, client: DockerClient, host_id: str, when: str = "while the tests ran") -> None:
        state = (client.container(host_id) or {}).get("State") or {}
        if not state.get("Running"):
            code = state.get("ExitCode")
            raise Broken(f"its command exited with code {code} {when}", code, client.logs(host_id))

    def _wait_ready(self, client: DockerClient, host_id: str, image: dict[str, Any]) -> None:
        """Waits until the host listens on the ports to wait for; fails fast when its command exits."""
        ports = self.params["wait_for_ports"]
        if ports is None:
            ports = verify_report.exposed_tcp_ports(image.get("Config") or {})
        self._check_running(client, host_id, "before the tests started")
        if not ports:
            return
        self.progress(f"verify: waiting for port(s) {', '.join(map(str, ports))}")
        deadline = time.monotonic() + min(self.params["start_timeout"], self._remaining())
        while True:
            try:
                output = client.exec(host_id, ["cat", "/proc/net/tcp", "/proc/net/tcp6"])[1]
            except InfraError:
                output = ""  # the host is stopping; the check below says why
            if set(ports) <= verify_report.listening_ports(output):
                return
            self._check_running(client, host_id, "before the tests started")
            if time.monotonic() > deadline:
                missing = sorted(set(ports) - verify_report.listening_ports(output))
                raise Broken(f"it did not listen on port(s) {', '.join(map(str, missing))} within "
                             f"{self.params['start_timeout']} s (set wait_for_ports or start_timeout)",
                             None, client.logs(host_id))
            time.sleep(POLL_SECONDS)

    def _run_pytest(self, host_id: str, image_id: str, paths: list[str], file_count: int, report: str,
                    verdict: Verdict) -> None:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                   f"--junitxml={report}", f"--hosts=docker://{self.params['exec_user']}@{host_id}",
                   "-v", "-rN", "--tb=short", "--color=no", "-o", "console_output_style=classic"]
        if verdict.workers:
            command += ["-n", str(verdict.workers), "--dist", "loadfile"]
        command += [*self.params["pytest_args"], *paths]
        env = child_environment(self.params["docker_host"], {"IMMUTABLE_INFRA_IMAGE_ID": image_id,
                                                             "IMMUTABLE_INFRA_HOST": host_id})
        self.progress(f"verify: running {file_count} test file(s)"
                      + (f" in {verdict.workers} parallel workers" if verdict.workers else ""))
        begun = time.monotonic()
        finished = run_streaming(command, self.context.basedir, env, self._remaining(), self._show_test_line)
        verdict.timings["tests"] = round(time.monotonic() - begun, 3)
        if finished.timed_out:
            verdict.failures.append({"test": "(timeout)", "message": f"the tests did not finish within the "
                                                                     f"timeout of {self.params['timeout']} s"})
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
        for entry in verdict.files:
            self.progress(f"verify: {entry['file']}: {entry['tests'] - entry['failed']}/{entry['tests']} passed, "
                          f"{entry['duration']:.2f} s")

    def _show_test_line(self, line: str) -> None:
        shown = verify_report.progress_line(line)
        if shown:
            self.progress(f"verify: {shown}")

    # idempotence ---------------------------------------------------------------------------------
    def _idempotence_roles(self, image: dict[str, Any]) -> list[str]:
        roles = self.params["roles"] or verify_report.image_roles((image.get("Config") or {}).get("Labels") or {})
        if not roles:
            raise InfraError(f"Image {self.params['image']} carries no immutable.infra.roles label (it was not "
                             "baked by immutable.infra.bake); give the roles to apply again in roles.")
        return roles

    def _replay_spec(self, roles: list[str]) -> PlaySpec:
        """The play that applies the roles again, resolved as the bake resolved them."""
        collections = CollectionIndex(self.context.collections_path)
        resolver = RoleResolver(self.context.basedir, self.context.roles_path, collections,
                                self.context.play_collections)
        requested = resolver.resolve(roles)[0]
        return PlaySpec(
            container_id="", host_name="verify",
            roles=[role.path if role.given_as_path else role.name for role in requested],
            variables=self.params["vars"], roles_path=resolver.search_dirs, collections_path=collections.paths,
            python_interpreter=self.params["python_interpreter"], become_method=self.params["become_method"],
            docker_host=self.params["docker_host"])

    def _idempotence(self, client: DockerClient, image: dict[str, Any], roles: list[str], spec: PlaySpec,
                     verdict: Verdict, guard: Guard) -> None:
        begun = time.monotonic()
        name = self._host_name(image["Id"])
        host_id = None
        try:
            host_id = self._start_host(client, image, name, keep_alive=True)
            builder.prepare(client, host_id)
            client.exec(host_id, ["/bin/sh", "-c", MARK_ENABLED_ACTIVE])
            self.progress(f"verify: applying {', '.join(roles)} again; nothing may report changed")
            spec.container_id, spec.timeout = host_id, max(int(self._remaining()), 1)
            play = run_play(spec, self._show_event)
        finally:
            with guard.shield():
                client.remove_container(host_id or name)
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

    # molecule ------------------------------------------------------------------------------------
    def _molecule(self, scenario: Scenario, image_id: str, report: str, verdict: Verdict) -> None:
        begun = time.monotonic()
        log, junit = os.path.splitext(report)[0] + ".molecule.log", os.path.splitext(report)[0] + ".molecule.xml"
        # The scenario's testinfra verifier runs pytest, which reads PYTEST_ADDOPTS: its tests get a JUnit report too.
        addopts = f"{os.environ.get('PYTEST_ADDOPTS', '')} --junitxml={junit} -o junit_family=xunit1".strip()
        env = child_environment(self.params["docker_host"], {
            self.params["molecule_image_env"]: image_id, "IMMUTABLE_INFRA_IMAGE_ID": image_id,
            "MOLECULE_GLOB": scenario.glob, "PYTEST_ADDOPTS": addopts, "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"})
        self.progress(f"verify: molecule test -s {scenario.name} with {self.params['molecule_image_env']}="
                      f"{short_id(image_id)}")
        command = [sys.executable, "-m", "molecule", "test", "-s", scenario.name]
        finished = None
        try:
            finished = run_streaming(command, scenario.project_dir, env, self._remaining(), self._show_molecule_line,
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
        if not passed and not parsed["failures"]:
            why = (f"did not finish within the timeout of {self.params['timeout']} s" if finished.timed_out
                   else f"failed (exit code {finished.returncode})")
            tail = "\n".join(finished.tail.strip().splitlines()[-15:])
            verdict.failures.append({"test": f"molecule {scenario.name}",
                                     "message": f"molecule test {why}; log: {log}\n{tail}"})

    def _show_molecule_line(self, line: str) -> None:
        if "➜" in line or "Executing" in line or "Running" in line:
            self.progress("verify: molecule: " + line.strip()[:200])

    # verdict -------------------------------------------------------------------------------------
    def _report_path(self, ledger: Ledger, image_id: str) -> str:
        directory = self.params["report_dir"] or os.path.join(os.path.dirname(ledger.path), "reports")
        directory = os.path.normpath(os.path.join(self.context.basedir, os.path.expanduser(directory)))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise InfraError(f"Cannot create the report directory {directory}: {error.strerror}; "
                             "set report_dir to a writable path.") from None
        stamp = utc_timestamp().replace(":", "").replace("-", "")
        return os.path.join(directory, f"verify-{short_id(image_id)}-{stamp}-{uuid.uuid4().hex[:6]}.xml")

    def _last_durations(self, ledger: Ledger, files: list[str]) -> list[float] | None:
        if len(files) < 2 or self.params["parallel"] != "auto":
            return None
        last = None
        for record in ledger.records(kind="verdict"):
            if record.get("test_files") == files and record.get("files"):
                last = record
        return [float(entry.get("duration") or 0) for entry in last["files"]] if last else None

    def _record(self, plan: Plan, verdict: Verdict, report: str | None, duration: float) -> dict[str, Any]:
        image_id = plan.image["Id"]
        inputs_hash = ((plan.image.get("Config") or {}).get("Labels") or {}).get(LABEL_INPUTS_HASH)
        broken = verdict.broken
        record = plan.ledger.new_record(
            "verdict", self.context.basedir, image=self.params["image"], image_id=image_id, inputs_hash=inputs_hash,
            result="passed" if verdict.passed else "failed",
            broken={"reason": broken.reason, "exit_code": broken.exit_code} if broken else None,
            tests=verdict.tests, failures=verdict.failures[:50], report=report, test_files=plan.files,
            files=verdict.files, workers=verdict.workers, idempotence=verdict.idempotence,
            molecule=verdict.molecule, duration=duration)
        plan.ledger.append(record)
        record_verdict(plan.client, image_id, verdict.passed, {
            "time": record["time"], "reference": self.params["image"], "ledger_id": record["id"],
            "tests": json.dumps(verdict.tests, sort_keys=True), "inputs_hash": inputs_hash or "",
            "verified_by": controller_identity(), "report": report or "", "duration": duration,
            "broken": "true" if broken else "false"})
        return record
