# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The artifact of VM hosts: a disk built by immutable.infra.disk, known by its digest.

The gate is the images' one: the disk must have a passing boot verdict (immutable.infra.verify with
disk:) bound to its digest, and the file must still be the disk its manifest describes. The verdict is
read from the manifest beside the disk and from the records of every hypervisor the disk was copied
to; the newest one counts, so a failed re-verification outweighs an older pass.

A disk is copied into a hypervisor's pool once, by digest: streamed through libvirt (the digest is
checked on the way), then a record in the hypervisor's store names the volume that holds it, with
what the manifest says about the disk and its verdict. Only then does the disk count as present, so
an upload cut short is never used (prune removes its volume). A later rollout or rollback finds the
disk there by its digest alone.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_PREFIX,
    VerdictLabels,
    verdict_volume_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.assemble import file_digest
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.manager import locate, read_manifest

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
DISK_RECORD_PREFIX = "immutable-infra-disk-"
LABEL_DISK_RECORD = LABEL_PREFIX + "disk_record"  # value: the disk's digest
LABEL_DISK_VOLUME = LABEL_PREFIX + "volume"  # the pool volume that holds it
LABEL_DISK_MANIFEST = LABEL_PREFIX + "manifest"  # what the manifest says about the disk (JSON, no verdict)
LABEL_BOOT_VOLUMES = LABEL_PREFIX + "boot_volumes"  # direct boot: {"kernel": volume, "initrd": volume} (JSON)
MANIFEST_FIELDS = ("name", "disk", "disk_format", "disk_digest", "disk_bytes", "inputs_hash", "image", "image_id",
                   "image_inputs_hash", "kernel_release", "kernel_command_line", "packages", "exposed_ports",
                   "created", "built_by", "boot")
BOOT_FILES = ("kernel", "initrd")  # a disk built for direct kernel boot has them beside it (its manifest's boot)


def disk_record_name(digest: str) -> str:
    return DISK_RECORD_PREFIX + digest.split(":", 1)[-1]


def disk_volume_name(digest: str, disk_format: str, kind: str = "disk") -> str:
    """A volume name of its own for each upload (never a host's: it holds dots): disk.<digest>.<id>.qcow2, and
    kernel.<digest>.<id>.disk / initrd.<digest>.<id>.disk for the disk's direct-boot files."""
    return f"{kind}.{digest.split(':', 1)[-1][:24]}.{uuid.uuid4().hex[:6]}.{disk_format}"


@dataclass
class DiskArtifact:
    """A disk to roll out: its digest (the artifact's ID), what its manifest says, and where the file is
    on the controller (None when it is known by digest only, from a hypervisor's records)."""

    digest: str
    manifest: dict[str, Any]
    path: str | None = None
    manifest_path: str | None = None
    verdict: dict[str, Any] | None = field(default=None)  # the manifest's verdict, when it has one

    @property
    def disk_format(self) -> str:
        return str(self.manifest.get("disk_format") or "qcow2")

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or short_id(self.digest))

    @property
    def boot(self) -> dict[str, Any]:
        """The manifest's direct-boot section (kernel, initrd, their digests, command_line), or {} for a
        disk its firmware boots."""
        boot = self.manifest.get("boot")
        return boot if isinstance(boot, dict) and boot.get("kernel") and boot.get("initrd") else {}

    def boot_file(self, part: str) -> str | None:
        """The kernel or initramfs beside the disk file."""
        return os.path.join(os.path.dirname(self.path), self.boot[part]) if self.path and self.boot else None

    def describe(self) -> str:
        shown = os.path.basename(self.path) if self.path else self.name
        return f"{shown} ({short_id(self.digest)})"


def resolve(given: str, basedir: str) -> DiskArtifact:
    """The disk named by path (the disk or its manifest) or by digest (sha256:..., a disk already copied to a
    hypervisor: the caller finds its record)."""
    if DIGEST_PATTERN.match(given):
        return DiskArtifact(given, {})
    disk, manifest_path = locate(given, basedir)
    manifest = read_manifest(manifest_path) or {}
    digest = manifest.get("disk_digest")
    if not isinstance(digest, str) or not DIGEST_PATTERN.match(digest):
        raise InfraError(f"The manifest of disk '{given}' ({manifest_path}) records no disk digest; build the disk "
                         "again with immutable.infra.disk.")
    return DiskArtifact(digest, {key: manifest.get(key) for key in MANIFEST_FIELDS}, disk, manifest_path,
                        manifest.get("verdict") if isinstance(manifest.get("verdict"), dict) else None)


def require_unchanged(artifact: DiskArtifact) -> None:
    """The file (and its kernel and initramfs, for direct boot) is still what its manifest describes: a file
    changed after its build is refused."""
    if artifact.path is None:
        return
    expected = {artifact.path: artifact.digest}
    for part in BOOT_FILES if artifact.boot else ():
        expected[artifact.boot_file(part) or ""] = str(artifact.boot.get(f"{part}_digest") or "")
    for path, wanted in expected.items():
        digest = file_digest(path) if os.path.isfile(path) else "missing"
        if digest != wanted:
            raise InfraError(f"{os.path.basename(path)} is not the file the manifest of disk {artifact.name} describes "
                             f"(digest {digest[:19]}, manifest {wanted[:19]}); it was changed after it was built: build "
                             "it again with immutable.infra.disk (force: true) and verify it. Nothing was changed.")


def manifest_verdict_labels(artifact: DiskArtifact) -> dict[str, str] | None:
    """The manifest's verdict as a verdict record's labels, when it is bound to this disk's digest."""
    verdict = artifact.verdict
    if not verdict or verdict.get("disk_digest") != artifact.digest or not verdict.get("result"):
        return None
    return VerdictLabels(result=str(verdict["result"]), image_id=artifact.digest, time=str(verdict.get("time") or ""),
                         ledger_id=verdict.get("ledger_id"), tests=json.dumps(verdict.get("tests") or {}),
                         inputs_hash=artifact.manifest.get("inputs_hash"), verified_by=verdict.get("verified_by"),
                         report=verdict.get("report")).to_labels()


def newest_verdict(candidates: dict[str, dict[str, str] | None]) -> tuple[str, VerdictLabels] | None:
    """(where, verdict) of the newest verdict among the candidates (the manifest's, each hypervisor's)."""
    found = [(where, VerdictLabels.from_labels(labels)) for where, labels in candidates.items() if labels]
    found = [(where, verdict) for where, verdict in found if verdict.result]
    if not found:
        return None
    return max(found, key=lambda item: (item[1].time or "", -list(candidates).index(item[0])))


def require_disk_verified(artifact: DiskArtifact, recorded: dict[str, dict[str, str] | None]) -> VerdictLabels:
    """The gate: the newest verdict of the disk's digest (the manifest's, or one a hypervisor holds) passed."""
    found = newest_verdict({"the manifest": manifest_verdict_labels(artifact), **recorded})
    if found is None:
        raise InfraError(f"Disk {artifact.describe()} has no passing verdict. Verify it by booting it "
                         "(immutable.infra.verify with disk:) first, or set require_verified: false to roll out an "
                         "unverified disk deliberately. Nothing was changed.")
    where, verdict = found
    if not verdict.passed:
        raise InfraError(f"Disk {artifact.describe()} failed verification at {verdict.time or '?'} (recorded in "
                         f"{where}); fix it, build the disk again and verify it. Nothing was changed.")
    return verdict


def record_labels(artifact: DiskArtifact, volume: str, boot_volumes: dict[str, str] | None = None) -> dict[str, str]:
    labels = {LABEL_DISK_RECORD: artifact.digest, LABEL_DISK_VOLUME: volume, LABEL_PREFIX + "time": utc_timestamp(),
              LABEL_DISK_MANIFEST: json.dumps(artifact.manifest, sort_keys=True)}
    if boot_volumes:
        labels[LABEL_BOOT_VOLUMES] = json.dumps(boot_volumes, sort_keys=True)
    return labels


def boot_volumes(labels: dict[str, str]) -> dict[str, str]:
    """The pool volumes of a recorded disk's kernel and initramfs ({} for firmware boot)."""
    try:
        found = json.loads(labels.get(LABEL_BOOT_VOLUMES) or "{}")
    except ValueError:
        return {}
    return {part: str(found[part]) for part in BOOT_FILES if isinstance(found, dict) and found.get(part)}


def from_record(digest: str, labels: dict[str, str]) -> DiskArtifact:
    try:
        manifest = json.loads(labels.get(LABEL_DISK_MANIFEST) or "{}")
    except ValueError:
        manifest = {}
    return DiskArtifact(digest, manifest if isinstance(manifest, dict) else {})


def verdict_record(artifact: DiskArtifact, verdict: VerdictLabels) -> tuple[str, dict[str, str]]:
    """The verdict record copied to a hypervisor with the disk (name, labels)."""
    return verdict_volume_name(artifact.digest), dict(verdict.to_labels(), **{LABEL_PREFIX + "copied": utc_timestamp()})


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 3)
