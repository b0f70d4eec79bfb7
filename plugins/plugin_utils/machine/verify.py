# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify by booting: boot a disk as a throwaway VM, run the image's testinfra files against it over
SSH, and bind the verdict to the disk's digest (ledger and manifest). The VM is always stopped and
its overlay removed, Ctrl-C included; the disk itself is never written.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import (
    VerifyRun,
    attest_test_result,
    signing_key_from,
    verdict_tests,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import record_summary, write_sidecars
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.processes import run_streaming
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import assemble, qemu
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.manager import read_manifest, write_manifest
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.runners import report_path

# Options of immutable.infra.verify that only a disk verify has.
DISK_VERIFY_OPTIONS: dict[str, Any] = {
    "disk": {"type": "path"},
    "accel": {"type": "str", "default": "auto", "choices": ["auto", "kvm", "tcg"]},
    "memory": {"type": "int", "default": 1024},
    "boot_timeout": {"type": "int", "default": 300},
}
# Options of a container verify a disk verify cannot honour, with their defaults.
CONTAINER_ONLY = {"molecule_scenario": None, "idempotence": False, "roles": None, "keep_alive": False,
                  "network": None}
FORWARDED_PORTS_ENV = "IMMUTABLE_INFRA_FORWARDED_PORTS"


def locate(given: str, basedir: str) -> tuple[str, str]:
    """(disk, manifest) from the path of either."""
    path = os.path.normpath(os.path.join(basedir, os.path.expanduser(given)))
    if path.endswith(".json"):
        manifest_path = path
        found = read_manifest(path) or {}
        disk = os.path.join(os.path.dirname(path), str(found.get("disk") or ""))
    else:
        disk, manifest_path = path, disk_plan.manifest_file_name(path)
    if not os.path.isfile(disk):
        raise InfraError(f"Disk '{given}' does not exist (looked for {disk}); build it with immutable.infra.disk.")
    if not os.path.isfile(manifest_path):
        raise InfraError(f"Disk '{given}' has no manifest beside it ({manifest_path}); verify disks built by "
                         "immutable.infra.disk, which records what went into them.")
    return disk, manifest_path


def verdict_passed(outcome: dict[str, Any], broken: bool) -> bool:
    """A disk passes only when it booted and every test ran and passed."""
    counts = outcome["tests"]
    return not broken and not outcome["failures"] and counts["failed"] == 0 and counts["errors"] == 0


def manifest_verdict(record: dict[str, Any]) -> dict[str, Any]:
    """The verdict a manifest carries, from its disk_verdict ledger record: bound to the disk's digest."""
    return {"result": record["result"], "time": record["time"], "disk_digest": record["disk_digest"],
            "ledger_id": record["id"], "tests": record["tests"], "accel": record["accel"],
            "boot_to_ssh": record["timings"].get("boot_to_ssh"), "verified_by": controller_identity(),
            "report": record["report"]}


class DiskVerifier(Manager):
    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.basedir = context.basedir
        self.check_mode = context.check_mode
        for option, default in CONTAINER_ONLY.items():
            if params.get(option) not in (default, None, []):
                raise InfraError(f"{option} applies to images, not to disks; drop it when verifying disk.")
        if params.get("image"):
            raise InfraError("Give either image or disk to verify, not both.")
        for option in ("timeout", "start_timeout", "boot_timeout", "memory"):
            if params[option] <= 0:
                raise InfraError(f"{option} must be a positive number.")
        if not params["tests"]:
            raise InfraError("Nothing to verify: give tests to run against the booted disk.")
        self.signer = signing_key_from(params, self.basedir)

    def run(self) -> dict[str, Any]:
        from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import find_test_files

        started = time.monotonic()
        deadline = started + self.params["timeout"]
        disk, manifest_path = locate(self.params["disk"], self.basedir)
        manifest = read_manifest(manifest_path) or {}
        paths, files = find_test_files(self.params["tests"], self.basedir)
        result: dict[str, Any] = {"disk": disk, "manifest": manifest_path, "image_id": manifest.get("image_id"),
                                  "inputs_hash": manifest.get("inputs_hash"), "test_files": files}
        previous = (manifest.get("verdict") or {}).get("result")
        if self.check_mode:
            return dict(result, changed=False, passed=None, would_verify=True, previous_verdict=previous,
                        duration=round(time.monotonic() - started, 3),
                        msg=f"would boot {os.path.basename(disk)} and run {len(files)} test file(s) against it")
        qemu.require_qemu()
        self.progress(f"verify: checking the digest of {os.path.basename(disk)}")
        digest = assemble.file_digest(disk)
        if digest != manifest.get("disk_digest"):
            raise InfraError(f"Disk {os.path.basename(disk)} is not the disk its manifest describes (digest "
                             f"{digest[:19]}, manifest {str(manifest.get('disk_digest'))[:19]}); it was changed "
                             "after it was built: build it again with immutable.infra.disk (force: true).")
        ports = self.params["wait_for_ports"]
        if ports is None:
            ports = [int(port.split("/")[0]) for port in manifest.get("exposed_ports") or [] if port.endswith("/tcp")]
        ledger = self.ledger()
        report = self._report_path(ledger, digest)
        machine = qemu.Machine(disk=disk, disk_format=manifest.get("disk_format") or "qcow2", accel="tcg",
                               memory=self.params["memory"], guest_ports=ports)
        timings: dict[str, float] = {}
        outcome, broken = self._boot_and_test(machine, digest, deadline, ports, (paths, files), report, manifest,
                                              timings)
        passed = verdict_passed(outcome, broken is not None)
        duration = round(time.monotonic() - started, 3)
        timings["total"] = duration
        accel = machine.accel
        record = self._record(ledger, manifest_path, manifest, digest, passed, outcome, broken, accel, timings, report)
        result.update(changed=previous != record["result"], passed=passed, broken=broken is not None,
                      disk_digest=digest, accel=accel, tests=outcome["tests"], failures=outcome["failures"],
                      files=outcome["files"], timings=timings, report=report, duration=duration, ledger=ledger.path,
                      ledger_id=record["id"])
        name = os.path.basename(disk)
        if broken is not None:
            console = f"\nLast console lines:\n{broken.logs.rstrip()}" if broken.logs.strip() else ""
            return dict(result, failed=True, msg=f"Disk {name} is broken: {broken.reason}.{console}")
        what_ran = verify_report.verdict_summary(outcome["tests"], None, None)
        if not passed:
            message = verify_report.failure_report(name, what_ran, outcome["failures"], kind="Disk")
            return dict(result, failed=True, msg=f"{message}\nReport: {report}")
        return dict(result, msg=f"Disk {name} passed verification ({what_ran}) in {duration:.1f} s "
                                f"({accel}, SSH after {timings['boot_to_ssh']:.1f} s). Report: {report}")

    def _boot_and_test(self, machine: qemu.Machine, digest: str, deadline: float, ports: list[int],
                       tests: tuple[list[str], list[str]], report: str, manifest: dict[str, Any],
                       timings: dict[str, float]) -> tuple[dict[str, Any], _Broken | None]:
        (paths, files), disk = tests, machine.disk
        outcome: dict[str, Any] = {"tests": verify_report.empty_counts(), "failures": [], "files": []}
        broken: _Broken | None = None
        with interruptible(f"verify of {os.path.basename(disk)}") as guard:
            try:
                # Inside the guard: the KVM probe boots a VM too, which Ctrl-C must not leave behind.
                machine.accel, why = qemu.choose_accel(self.params["accel"], disk, machine.disk_format)
                self.progress(f"verify: booting {os.path.basename(disk)} under qemu with {machine.accel} ({why})")
                machine.start(f"verify-{digest[7:15]}")
                try:
                    timings["boot_to_ssh"] = machine.wait_for_ssh(
                        min(deadline, time.monotonic() + self.params["boot_timeout"]), guard.check)
                except TimeoutError:
                    raise _Broken(f"the VM did not answer on SSH within {self.params['boot_timeout']} s "
                                  "(boot_timeout)", machine.console_tail()) from None
                self.progress(f"verify: the VM answers on SSH after {timings['boot_to_ssh']:.1f} s")
                begun = time.monotonic()
                missing = machine.wait_for_ports(ports, min(deadline, begun + self.params["start_timeout"]),
                                                 guard.check)
                if missing:
                    raise _Broken(f"it did not listen on port(s) {', '.join(map(str, missing))} within "
                                  f"{self.params['start_timeout']} s of SSH answering (set wait_for_ports or "
                                  "start_timeout)", machine.ssh(["journalctl", "-b", "-n", "30", "--no-pager"])[1])
                timings["ports"] = round(time.monotonic() - begun, 3)
                timings["boot_to_ready"] = round(time.monotonic() - machine.started, 3)
                begun = time.monotonic()
                outcome = self._pytest(machine, paths, files, report, manifest, max(deadline - time.monotonic(), 1))
                timings["tests"] = round(time.monotonic() - begun, 3)
            except _Broken as error:
                broken = error
                outcome["failures"] = [{"test": "boot", "message": f"the disk is broken: {error.reason}"}]
            finally:
                begun = time.monotonic()
                with guard.shield():
                    machine.stop()
                timings["cleanup"] = round(time.monotonic() - begun, 3)
        return outcome, broken

    def _pytest(self, machine: qemu.Machine, paths: list[str], files: list[str], report: str,
                manifest: dict[str, Any], remaining: float) -> dict[str, Any]:
        from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import child_environment

        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                   f"--junitxml={report}", "--hosts=ssh://vm", f"--ssh-config={machine.ssh_config()}",
                   "-v", "-rN", "--tb=short", "--color=no", "-o", "console_output_style=classic",
                   *self.params["pytest_args"], *paths]
        env = child_environment(None, {
            "IMMUTABLE_INFRA_IMAGE_ID": str(manifest.get("image_id") or ""),
            "IMMUTABLE_INFRA_DISK": machine.disk, "IMMUTABLE_INFRA_HOST": "vm",
            FORWARDED_PORTS_ENV: json.dumps({str(guest): host for guest, host in machine.forwards.items()})})
        self.progress(f"verify: running {len(files)} test file(s) against the VM over SSH")
        finished = run_streaming(command, self.basedir, env, remaining, self._show_test_line)
        if finished.timed_out:
            return {"tests": verify_report.empty_counts(), "files": [],
                    "failures": [{"test": "(timeout)", "message": f"the tests did not finish within the timeout "
                                                                  f"of {self.params['timeout']} s"}]}
        if finished.returncode in (3, 4, 127) or not os.path.exists(report):
            raise InfraError(f"pytest could not run the tests (exit code {finished.returncode}):\n"
                             f"{finished.tail.strip()[-2500:]}")
        if finished.returncode == 5:
            raise InfraError(f"pytest collected no tests from {', '.join(self.params['tests'])}; "
                             "a verify without tests proves nothing.")
        with open(report, encoding="utf-8") as handle:
            parsed = verify_report.parse_junit(handle.read())
        for entry in parsed["files"]:
            self.progress(f"verify: {entry['file']}: {entry['tests'] - entry['failed']}/{entry['tests']} passed, "
                          f"{entry['duration']:.2f} s")
        return parsed

    def _show_test_line(self, line: str) -> None:
        shown = verify_report.progress_line(line)
        if shown:
            self.progress(f"verify: {shown}")

    def _report_path(self, ledger: Ledger, digest: str) -> str:
        return report_path(self.params["report_dir"], ledger.path, self.basedir, f"disk-{digest[7:19]}")

    def _record(self, ledger: Ledger, manifest_path: str, manifest: dict[str, Any], digest: str, passed: bool,
                outcome: dict[str, Any], broken: _Broken | None, accel: str, timings: dict[str, float],
                report: str) -> dict[str, Any]:
        record = ledger.new_record(
            "disk_verdict", self.basedir, disk=manifest.get("disk"), disk_digest=digest,
            inputs_hash=manifest.get("inputs_hash"), image_id=manifest.get("image_id"),
            result="passed" if passed else "failed", broken={"reason": broken.reason} if broken else None,
            tests=outcome["tests"], failures=outcome["failures"][:50], files=outcome["files"], accel=accel,
            timings=timings, report=report, duration=timings["total"])
        record.update(self._attest(manifest_path, manifest, record, outcome))
        ledger.append(record)
        # The manifest's verdict counts only for the disk it describes: re-read it, in case it was rebuilt.
        current = read_manifest(manifest_path) or {}
        if current.get("disk_digest") == digest:
            current["verdict"] = manifest_verdict(record)
            write_manifest(manifest_path, current)
        return record

    def _attest(self, manifest_path: str, manifest: dict[str, Any], record: dict[str, Any],
                outcome: dict[str, Any]) -> dict[str, Any]:
        """With signing_key: the signed test result, bound to the disk's digest, written beside the disk."""
        if self.signer is None:
            return {}
        from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import find_test_files

        passed, failed = verdict_tests(outcome.get("passed") or [], outcome["failures"], None, None)
        where = {"host": "vm", "accel": record["accel"], "controller": controller_identity(), "time": record["time"],
                 "ledger_id": record["id"]}
        found = attest_test_result(self.signer, str(manifest.get("disk")), record["disk_digest"],
                                   VerifyRun(record["result"] == "passed",
                                             find_test_files(self.params["tests"], self.basedir)[1], self.basedir,
                                             passed, failed, where))
        disk = os.path.join(os.path.dirname(manifest_path), str(manifest.get("disk")))
        write_sidecars(disk, found)
        return {"attestations": record_summary(found), "signed_by": self.signer.keyid}


class _Broken(Exception):
    def __init__(self, reason: str, logs: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.logs = logs
