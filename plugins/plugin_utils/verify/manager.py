# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verify: prove an image in a throwaway container, or a disk in a VM booted from it, and bind
the verdict to what was proved (subjects.py).

The verify checks and resolves everything first (its Plan), then runs pytest-testinfra against a test
host: a container started from the exact image ID (host.py), or a VM booted from the disk whose
digest was checked (vm_host.py). For an image it optionally applies the bake's roles again in a
second container (idempotence) and runs a user's Molecule scenario (runners.py). Every host is
removed whatever happens, Ctrl-C included. The verdict, of one shape for both, goes to the ledger
and to where the gate reads it: the engine for an image, the manifest for a disk.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import SIGNING_OPTIONS, signing_key_from
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.play_runner import PlaySpec
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import CollectionIndex, RoleResolver
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_ROLES, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import assemble, boot, qemu
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.manager import locate, read_manifest
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.runners import (
    HostUnderTest,
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
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.subjects import (
    DiskSubject,
    ImageSubject,
    last_durations,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.vm_host import VmOptions

AnyRunner = TypeVar("AnyRunner", bound=Runner)

MAX_SECONDS = 7 * 86400

VERIFY_ARGUMENT_SPEC: dict[str, Any] = {
    "image": {"type": "str"},
    "disk": {"type": "path"},
    "tests": {"type": "list", "elements": "path", "default": []},
    "molecule_scenario": {"type": "path"},
    "molecule_image_env": {"type": "str", "default": "MOLECULE_IMAGE"},
    "idempotence": {"type": "bool", "default": False},
    "roles": {"type": "list", "elements": "str"},
    "vars": {"type": "dict", "default": {}},
    "verify_timeout": {"type": "int", "default": 300},
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
    "accel": {"type": "str", "default": "auto", "choices": ["auto", "kvm", "tcg"]},
    "memory": {"type": "int", "default": 1024},
    "cpus": {"type": "int"},
    "boot": {"type": "str", "default": "auto", "choices": list(boot.BOOT_PATHS)},
    "boot_timeout": {"type": "int", "default": 300},
    **SIGNING_OPTIONS,
}
# Options of an image's verify that a disk's cannot honour, and the reverse, with their defaults.
CONTAINER_ONLY = {name: VERIFY_ARGUMENT_SPEC[name].get("default")
                  for name in ("molecule_scenario", "idempotence", "roles", "keep_alive", "network")}
DISK_ONLY = {name: VERIFY_ARGUMENT_SPEC[name].get("default") for name in ("accel", "memory", "cpus", "boot", "boot_timeout")}


@dataclass
class Plan:
    """What a verify will do, resolved and checked before anything starts."""

    subject: ImageSubject | DiskSubject
    paths: list[str]
    files: list[str]
    scenario: Scenario | None
    roles: list[str]
    replay: PlaySpec | None
    ledger: Ledger
    workers: int
    previous: str | None
    vm: VmOptions | None = None


class Verifier(Manager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        if bool(params["image"]) == bool(params["disk"]):
            raise InfraError("Give either image or disk to verify, not both." if params["image"] else
                             "Give the image to verify (image), or a disk built by immutable.infra.disk (disk).")
        for option in ("verify_timeout", "start_timeout", *(("boot_timeout", "memory") if params["disk"] else ())):
            if params[option] <= 0:
                raise InfraError(f"{option} must be a positive number.")
            if params[option] > MAX_SECONDS and option != "memory":
                raise InfraError(f"{option} is {params[option]} s; at most {MAX_SECONDS} s (a week) is taken.")
        for port in params.get("wait_for_ports") or []:
            if not 0 < port < 65536:
                raise InfraError(f"wait_for_ports entry {port} is not a TCP port number (1-65535).")
        other_kind, applies = ((CONTAINER_ONLY, "images, not to disks; drop it when verifying disk") if params["disk"]
                               else (DISK_ONLY, "disks (the VM a disk boots), not to images; drop it when verifying image"))
        for option, default in other_kind.items():
            if params.get(option) not in (default, None, []):
                raise InfraError(f"{option} applies to {applies}.")
        if params["disk"] and not params["tests"]:
            raise InfraError("Nothing to verify: give tests to run against the booted disk.")
        if not params["disk"] and not (params["tests"] or params["molecule_scenario"] or params["idempotence"]):
            raise InfraError("Nothing to verify: give tests, a molecule_scenario, or idempotence: true.")
        self.deadline = 0.0
        self.signer = signing_key_from(params, context.basedir)

    # run -----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.deadline = started + self.params["verify_timeout"]
        plan = self._plan()
        subject = plan.subject
        result: dict[str, Any] = dict(subject.result_fields(), test_files=plan.files, workers=plan.workers,
                                      idempotence_roles=plan.roles,
                                      molecule_scenario=plan.scenario.directory if plan.scenario else None)
        if self.context.check_mode:
            # A real run records a verdict; with none yet, that is a change whatever the result.
            return dict(result, changed=plan.previous is None, passed=None, would_verify=True,
                        previous_verdict=plan.previous,
                        duration=round(time.monotonic() - started, 3), msg=self._would(plan))
        report = report_path(self.params["report_dir"], plan.ledger.path, self.context.basedir, subject.report_name())
        verdict = Verdict(workers=plan.workers)
        with interruptible(f"verify of {subject.described}") as guard:
            if plan.files:
                self._runner(TestinfraRunner, subject.described).run(
                    self._test_host(plan), subject.test_environment(), plan.paths, len(plan.files), report, verdict,
                    guard)
            if plan.replay and verdict.broken is None and isinstance(subject, ImageSubject):
                self._runner(IdempotenceRunner, subject.described).run(
                    subject.client, subject.image, plan.roles, plan.replay, verdict, guard)
            if plan.scenario and verdict.broken is None and isinstance(subject, ImageSubject):
                self._runner(MoleculeRunner, subject.described).run(subject.client, plan.scenario, subject.image["Id"],
                                                                    report, verdict)
        duration = round(time.monotonic() - started, 3)
        verdict.timings["total"] = duration
        report_or_none = report if plan.files else None
        record = plan.ledger.new_record(subject.record_kind, self.context.basedir, **subject.record_fields(),
                                        **verdict.record_fields(report_or_none, plan.files, duration))
        record.update(subject.attest(self.signer, record, verdict, self.context.basedir))
        plan.ledger.append(record)
        subject.bind(record, verdict)
        result.update(
            changed=plan.previous != record["result"], passed=verdict.passed, broken=verdict.broken is not None,
            tests=verdict.tests, failures=verdict.failures, files=verdict.files, timings=verdict.timings,
            duration=duration, report=report_or_none, idempotence=verdict.idempotence, molecule=verdict.molecule,
            host=verdict.host, ledger=plan.ledger.path, ledger_id=record["id"],
            signed_by=record.get("signed_by"), attestations=record.get("attestations"))
        if isinstance(subject, DiskSubject) and verdict.host:
            result.update(accel=verdict.host.get("accel"), boot=verdict.host.get("timeline"))
        return dict(result, **self._outcome_message(subject, verdict, duration, report_or_none))

    def _plan(self) -> Plan:
        """Everything checked and resolved before any host starts, so bad input starts nothing."""
        paths, files = find_test_files(self.params["tests"], self.context.basedir)
        if self.params["disk"]:
            return self._disk_plan(paths, files)
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
        subject = ImageSubject(client, image, self.params["image"])
        roles = self._idempotence_roles(image) if self.params["idempotence"] else []
        ledger = self.ledger()
        workers = self._workers(ledger, subject.record_kind, files, self.context.cores)
        return Plan(subject=subject, paths=paths, files=files, scenario=scenario, roles=roles,
                    replay=self._replay_spec(roles) if roles else None, ledger=ledger, workers=workers,
                    previous=subject.previous())

    def _disk_plan(self, paths: list[str], files: list[str]) -> Plan:
        """A disk's verify: its manifest, its digest (and its boot files') checked, its VM decided."""
        disk, manifest_path = locate(self.params["disk"], self.context.basedir)
        manifest = read_manifest(manifest_path) or {}
        subject = DiskSubject(disk, manifest_path, manifest, str(manifest.get("disk_digest") or ""))
        direct = boot.choose_path(self.params["boot"], subject.direct_boot())
        if not self.context.check_mode:
            qemu.require_qemu()
            self.progress(f"verify: checking the digest of {subject.described}")
            subject.digest = self._checked_digest(subject, direct)
        cpus = boot.choose_cpus(self.params["cpus"], self.context.cores)
        boot_section = manifest.get("boot") or {}
        vm = VmOptions(accel=self.params["accel"], memory=self.params["memory"], cpus=cpus, direct=direct,
                       ready_mark=boot_section.get("ready_mark"), boot_timeout=self.params["boot_timeout"])
        ledger = self.ledger()
        workers = self._workers(ledger, subject.record_kind, files, min(cpus, self.context.cores))
        return Plan(subject=subject, paths=paths, files=files, scenario=None, roles=[], replay=None, ledger=ledger,
                    workers=workers, previous=subject.previous(), vm=vm)

    def _checked_digest(self, subject: DiskSubject, direct: boot.DirectBoot | None) -> str:
        """The disk's digest, refused unless it is the one its manifest records; so are the boot files'."""
        checked = [(subject.disk, subject.manifest.get("disk_digest"))]
        if direct is not None:
            section = subject.manifest.get("boot") or {}
            checked += [(direct.kernel, section.get("kernel_digest")), (direct.initrd, section.get("initrd_digest"))]
        digests = []
        for path, recorded in checked:
            found = assemble.file_digest(path) if os.path.isfile(path) else "missing"
            if found != recorded:
                raise InfraError(f"{subject.kind} file {path} is not the one its manifest describes (digest "
                                 f"{found[:19]}, manifest {str(recorded)[:19]}); it was changed after it was built: "
                                 "build it again with immutable.infra.disk (force: true).")
            digests.append(found)
        return digests[0]

    def _test_host(self, plan: Plan) -> HostUnderTest:
        """What the tests run against: a VM of the disk, or a container of the image."""
        if isinstance(plan.subject, DiskSubject) and plan.vm is not None:
            return plan.subject.host(plan.vm, plan.subject.guest_ports(self.params["wait_for_ports"]), self.progress)
        if isinstance(plan.subject, ImageSubject):
            return plan.subject.host(self.params, self.progress)
        raise InfraError("a disk's verify was planned without its VM.")

    def _workers(self, ledger: Ledger, kind: str, files: list[str], cores: int) -> int:
        last = last_durations(ledger, kind, files) if len(files) > 1 and self.params["parallel"] == "auto" else None
        return verify_report.choose_workers(len(files), cores, self.params["parallel"], last)

    def _would(self, plan: Plan) -> str:
        if isinstance(plan.subject, DiskSubject):
            return f"would boot {plan.subject.described} and run {len(plan.files)} test file(s) against it"
        return (f"would verify {plan.subject.described} with {len(plan.files)} test file(s)"
                + (f", Molecule scenario {plan.scenario.name}" if plan.scenario else "")
                + (f", idempotence of {', '.join(plan.roles)}" if plan.roles else ""))

    def _runner(self, kind: type[AnyRunner], described: str) -> AnyRunner:
        return kind(self.params, self.context.basedir, self.deadline, described, self.progress)

    def _outcome_message(self, subject: ImageSubject | DiskSubject, verdict: Verdict, duration: float,
                         report: str | None) -> dict[str, Any]:
        where = f" Report: {report}" if report else ""
        if verdict.broken is not None:
            broken = verdict.broken
            label = "console" if (verdict.host or {}).get("kind") == "vm" else "log"
            logs = f"\nLast {label} lines:\n{broken.logs.rstrip()}" if broken.logs.strip() else ""
            return {"failed": True, "msg": f"{subject.kind} {subject.described} is broken: {broken.reason}.{logs}"}
        what_ran = verify_report.verdict_summary(verdict.tests, verdict.molecule, verdict.idempotence)
        if not verdict.passed:
            message = verify_report.failure_report(subject.described, what_ran, verdict.failures, kind=subject.kind)
            return {"failed": True, "msg": message + (f"\n{where.strip()}" if where else "")}
        booted = ""
        if isinstance(subject, DiskSubject) and verdict.host:
            booted = (f" ({verdict.host['accel']}, {verdict.host['boot']} boot, SSH after "
                      f"{verdict.timings.get('boot_to_ssh', 0):.1f} s)")
        return {"msg": f"{subject.kind} {subject.described} passed verification ({what_ran}) in {duration:.1f} s"
                       f"{booted}.{where}"}

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
            python_interpreter=self.params["python_interpreter"], become_method=self.params["become_method"])
