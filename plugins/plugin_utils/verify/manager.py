# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verify: prove an image in throwaway hosts, and bind the verdict to its image ID.

The verify checks and resolves everything first (its Plan), then runs pytest-testinfra against a host
started from the exact image ID, optionally applies the bake's roles again in a second host
(idempotence) and runs a user's Molecule scenario against the image (runners.py). Every host is
removed whatever happens, Ctrl-C included (host.py). The verdict goes to the ledger and to the engine
(verdicts.py), where the rollout gate reads it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import (
    SIGNING_OPTIONS,
    VerifyRun,
    attest_test_result,
    signing_key_from,
    verdict_tests,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import record_summary, store_image_attestations
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.play_runner import PlaySpec
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import CollectionIndex, RoleResolver
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_ROLES,
    ImageProvenance,
    VerdictLabels,
    image_labels,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.runners import (
    IdempotenceRunner,
    MoleculeRunner,
    Runner,
    Scenario,
    TestinfraRunner,
    Verdict,
    child_environment,
    find_test_files,
    locate_scenario,
    report_path,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict, verdict_for

AnyRunner = TypeVar("AnyRunner", bound=Runner)

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
    **SIGNING_OPTIONS,
}


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


class Verifier(Manager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
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
        self.signer = signing_key_from(params, context.basedir)

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
                self._runner(TestinfraRunner, image_id).run(plan.client, plan.image, plan.paths, len(plan.files),
                                                            report, verdict, guard)
            if plan.replay and verdict.broken is None:
                self._runner(IdempotenceRunner, image_id).run(plan.client, plan.image, plan.roles, plan.replay,
                                                              verdict, guard)
            if plan.scenario and verdict.broken is None:
                self._runner(MoleculeRunner, image_id).run(plan.scenario, image_id, report, verdict)
        duration = round(time.monotonic() - started, 3)
        verdict.timings["total"] = duration
        report_or_none = report if plan.files else None
        record = self._record(plan, verdict, report_or_none, duration)
        result.update(
            changed=plan.previous != record["result"], passed=verdict.passed, broken=verdict.broken is not None,
            tests=verdict.tests, failures=verdict.failures, files=verdict.files, timings=verdict.timings,
            duration=duration, report=report_or_none, idempotence=verdict.idempotence, molecule=verdict.molecule,
            ledger=plan.ledger.path, ledger_id=record["id"], signed_by=record.get("signed_by"))
        return dict(result, **self._outcome_message(image_id, verdict, duration, report_or_none))

    def _plan(self) -> Plan:
        """Everything checked and resolved before any host starts, so bad input starts nothing."""
        paths, files = find_test_files(self.params["tests"], self.context.basedir)
        scenario = locate_scenario(self.params["molecule_scenario"], self.context.basedir) \
            if self.params["molecule_scenario"] else None
        if files and not shutil.which("docker", path=child_environment(None, {})["PATH"]):
            raise InfraError("testinfra's docker backend needs the docker command on the controller; "
                             "install the Docker CLI (Debian: docker.io or docker-ce-cli).")
        client = self.client()
        image = client.image(self.params["image"])
        if image is None:
            raise InfraError(f"Image '{self.params['image']}' is not in the Docker engine; bake it "
                             "(immutable.infra.bake) or give an image ID that exists.")
        roles = self._idempotence_roles(image) if self.params["idempotence"] else []
        ledger = self.ledger()
        workers = verify_report.choose_workers(len(files), self.context.cores, self.params["parallel"],
                                               self._last_durations(ledger, files))
        return Plan(client=client, image=image, paths=paths, files=files, scenario=scenario, roles=roles,
                    replay=self._replay_spec(roles) if roles else None, ledger=ledger, workers=workers,
                    previous=VerdictLabels.from_labels(verdict_for(client, image["Id"])).result)

    def _would(self, plan: Plan) -> str:
        return (f"would verify {self._describe(plan.image['Id'])} with {len(plan.files)} test file(s)"
                + (f", Molecule scenario {plan.scenario.name}" if plan.scenario else "")
                + (f", idempotence of {', '.join(plan.roles)}" if plan.roles else ""))

    def _runner(self, kind: type[AnyRunner], image_id: str) -> AnyRunner:
        return kind(self.params, self.context.basedir, self.deadline, self._describe(image_id), self.progress)

    def _describe(self, image_id: str) -> str:
        given = self.params["image"]
        return short_id(image_id) if given == image_id else f"{given} ({short_id(image_id)})"

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

    def _idempotence_roles(self, image: dict[str, Any]) -> list[str]:
        roles = self.params["roles"] or verify_report.image_roles(image_labels(image))
        if not roles:
            raise InfraError(f"Image {self.params['image']} carries no {LABEL_ROLES} label (it was not "
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

    # recording -----------------------------------------------------------------------------------
    def _report_path(self, ledger: Ledger, image_id: str) -> str:
        return report_path(self.params["report_dir"], ledger.path, self.context.basedir, short_id(image_id))

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
        inputs_hash = ImageProvenance.from_labels(image_labels(plan.image)).inputs_hash
        broken = verdict.broken
        record = plan.ledger.new_record(
            "verdict", self.context.basedir, image=self.params["image"], image_id=image_id, inputs_hash=inputs_hash,
            result="passed" if verdict.passed else "failed",
            broken={"reason": broken.reason, "exit_code": broken.exit_code} if broken else None,
            tests=verdict.tests, failures=verdict.failures[:50], report=report, test_files=plan.files,
            files=verdict.files, workers=verdict.workers, idempotence=verdict.idempotence,
            molecule=verdict.molecule, duration=duration)
        signed = self._attest(plan, verdict, record)
        plan.ledger.append(dict(record, **signed))
        record_verdict(plan.client, image_id, verdict.passed, {
            "time": record["time"], "reference": self.params["image"], "ledger_id": record["id"],
            "tests": json.dumps(verdict.tests, sort_keys=True), "inputs_hash": inputs_hash or "",
            "verified_by": controller_identity(), "report": report or "", "duration": duration,
            "broken": "true" if broken else "false"})
        return dict(record, **signed)

    def _attest(self, plan: Plan, verdict: Verdict, record: dict[str, Any]) -> dict[str, Any]:
        """With signing_key: the signed test result, bound to the image ID and kept beside the image."""
        if self.signer is None:
            return {}
        passed, failed = verdict_tests(verdict.passed_tests, verdict.failures, verdict.idempotence, verdict.molecule)
        where = {"host": "container", "engine": plan.client.where, "controller": controller_identity(),
                 "time": record["time"], "ledger_id": record["id"]}
        found = attest_test_result(self.signer, self.params["image"], plan.image["Id"],
                                   VerifyRun(verdict.passed, plan.files, self.context.basedir, passed, failed, where))
        store_image_attestations(plan.client, plan.image["Id"], found)
        return {"attestations": record_summary(found), "signed_by": self.signer.keyid}
