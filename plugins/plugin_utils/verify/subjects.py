# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a verify proves, and where its verdict is bound: an image by its ID (the ledger and a
labelled volume on the engine, where the rollout gate reads it), or a disk by its digest (the ledger
and the disk's manifest). Each gives the test host its tests run against.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import SigningKey
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import (
    VerifyRun,
    attest_test_result,
    verdict_tests,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import (
    record_summary,
    store_image_attestations,
    write_sidecars,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import ImageProvenance, VerdictLabels, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import boot
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.manager import read_manifest, write_manifest
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.host import ThrowawayHost
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.runners import Verdict
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict, verdict_for
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.vm_host import VmHost, VmOptions


@dataclass
class ImageSubject:
    """An image, by its ID; the reference given is recorded with it."""

    client: DockerClient
    image: dict[str, Any]
    reference: str

    kind: ClassVar[str] = "Image"
    record_kind: ClassVar[str] = "verdict"

    @property
    def described(self) -> str:
        image_id = self.image["Id"]
        return short_id(image_id) if self.reference == image_id else f"{self.reference} ({short_id(image_id)})"

    def report_name(self) -> str:
        return short_id(self.image["Id"])

    def previous(self) -> str | None:
        return VerdictLabels.from_labels(verdict_for(self.client, self.image["Id"])).result

    def result_fields(self) -> dict[str, Any]:
        return {"image": self.reference, "image_id": self.image["Id"]}

    def test_environment(self) -> dict[str, str]:
        return {"IMMUTABLE_INFRA_IMAGE_ID": self.image["Id"]}

    def host(self, params: dict[str, Any], progress: Callable[[str], None]) -> ThrowawayHost:
        return ThrowawayHost(self.client, self.image, self.described, params["network"], progress,
                             params["exec_user"], params["keep_alive"])

    def record_fields(self) -> dict[str, Any]:
        return {"image": self.reference, "image_id": self.image["Id"],
                "inputs_hash": ImageProvenance.from_labels(image_labels(self.image)).inputs_hash}

    def bind(self, record: dict[str, Any], verdict: Verdict) -> None:
        """The verdict on the engine, where the rollout gate of every controller reads it."""
        record_verdict(self.client, self.image["Id"], verdict.passed, {
            "time": record["time"], "reference": self.reference, "ledger_id": record["id"],
            "tests": json.dumps(verdict.tests, sort_keys=True), "inputs_hash": record["inputs_hash"] or "",
            "verified_by": controller_identity(), "report": record["report"] or "", "duration": record["duration"],
            "broken": "true" if verdict.broken else "false"})

    def attest(self, signer: SigningKey | None, record: dict[str, Any], verdict: Verdict,
               basedir: str) -> dict[str, Any]:
        """With signing_key: the signed test result, bound to the image ID and kept beside the image."""
        if signer is None:
            return {}
        where = {"host": "container", "engine": self.client.where}
        found = attest_test_result(signer, self.reference, self.image["Id"],
                                   signed_run(verdict, record, basedir, where))
        store_image_attestations(self.client, self.image["Id"], found)
        return {"attestations": record_summary(found), "signed_by": signer.keyid}


@dataclass
class DiskSubject:
    """A disk built by immutable.infra.disk, by its digest; its tests run against a VM booted from it."""

    disk: str
    manifest_path: str
    manifest: dict[str, Any]
    digest: str

    kind: ClassVar[str] = "Disk"
    record_kind: ClassVar[str] = "disk_verdict"

    @property
    def described(self) -> str:
        return os.path.basename(self.disk)

    def report_name(self) -> str:
        return f"disk-{self.digest[7:19]}"

    def previous(self) -> str | None:
        return (self.manifest.get("verdict") or {}).get("result")

    def result_fields(self) -> dict[str, Any]:
        return {"disk": self.disk, "manifest": self.manifest_path, "image_id": self.manifest.get("image_id"),
                "inputs_hash": self.manifest.get("inputs_hash"), "disk_digest": self.digest}

    def test_environment(self) -> dict[str, str]:
        return {"IMMUTABLE_INFRA_IMAGE_ID": str(self.manifest.get("image_id") or "")}

    def guest_ports(self, wanted: list[int] | None) -> list[int]:
        """The ports to forward and wait for: as asked, else the image's exposed TCP ports."""
        if wanted is not None:
            return wanted
        return [int(port.split("/")[0]) for port in self.manifest.get("exposed_ports") or [] if port.endswith("/tcp")]

    def host(self, options: VmOptions, ports: list[int], progress: Callable[[str], None]) -> VmHost:
        guest = self.manifest.get("guest") or {}
        return VmHost(self.disk, self.manifest.get("disk_format") or "qcow2", options, ports,
                      list(guest.get("enabled_units") or []), f"verify-{self.digest[7:15]}", progress)

    def direct_boot(self) -> boot.DirectBoot | None:
        return boot.direct_boot(self.manifest, os.path.dirname(self.disk))

    def record_fields(self) -> dict[str, Any]:
        return {"disk": self.manifest.get("disk"), "disk_digest": self.digest,
                "inputs_hash": self.manifest.get("inputs_hash"), "image_id": self.manifest.get("image_id")}

    def bind(self, record: dict[str, Any], verdict: Verdict) -> None:
        """The verdict in the manifest, only while it still describes the disk that was booted."""
        current = read_manifest(self.manifest_path) or {}
        if current.get("disk_digest") == self.digest:
            current["verdict"] = manifest_verdict(record)
            write_manifest(self.manifest_path, current)

    def attest(self, signer: SigningKey | None, record: dict[str, Any], verdict: Verdict,
               basedir: str) -> dict[str, Any]:
        """With signing_key: the signed test result, bound to the disk's digest, written beside the disk."""
        if signer is None:
            return {}
        where = {"host": "vm", "accel": (verdict.host or {}).get("accel")}
        found = attest_test_result(signer, str(self.manifest.get("disk")), self.digest,
                                   signed_run(verdict, record, basedir, where))
        write_sidecars(self.disk, found)
        return {"attestations": record_summary(found), "signed_by": signer.keyid}


def signed_run(verdict: Verdict, record: dict[str, Any], basedir: str, where: dict[str, Any]) -> VerifyRun:
    """What a verify's signed test result states: the tests that passed and failed, and where they ran."""
    passed, failed = verdict_tests(verdict.passed_tests, verdict.failures, verdict.idempotence, verdict.molecule)
    return VerifyRun(verdict.passed, record["test_files"], basedir, passed, failed,
                     dict(where, controller=controller_identity(), time=record["time"], ledger_id=record["id"]))


def manifest_verdict(record: dict[str, Any]) -> dict[str, Any]:
    """The verdict a manifest carries, from its disk_verdict ledger record: bound to the disk's digest."""
    host = record.get("host") or {}
    return {"result": record["result"], "time": record["time"], "disk_digest": record["disk_digest"],
            "ledger_id": record["id"], "tests": record["tests"], "accel": host.get("accel"),
            "boot_to_ssh": (record.get("timings") or {}).get("boot_to_ssh"), "verified_by": controller_identity(),
            "report": record["report"]}


def last_durations(ledger: Ledger, kind: str, files: list[str]) -> list[float] | None:
    """Per-file test times of the last verify of the same files, for choosing parallel workers."""
    last = None
    for record in ledger.records(kind=kind):
        if record.get("test_files") == files and record.get("files"):
            last = record
    return [float(entry.get("duration") or 0) for entry in last["files"]] if last else None
