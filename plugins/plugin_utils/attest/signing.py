# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Making the signed statements: the bake's provenance and SBOM, a verify's test result, a disk's
provenance and SBOM. Each is an in-toto statement in a DSSE envelope signed with the task's
signing_key; a task without signing_key makes none, and does what it did before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom as sboms
from ansible_collections.immutable.infra.plugins.plugin_utils.attest import statements
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import sign_envelope
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import SigningKey, load_signing_key
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import Attestations
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

SIGNING_OPTIONS: dict[str, Any] = {
    "signing_key": {"type": "str", "no_log": True},
    "signing_key_password": {"type": "str", "no_log": True},
}


def signing_key_from(params: Mapping[str, Any], basedir: str, prefix: str = "") -> SigningKey | None:
    """The task's signing key, or None without signing_key (then nothing is signed)."""
    if not params.get("signing_key"):
        if params.get("signing_key_password"):
            raise InfraError(f"{prefix}signing_key_password is set but {prefix}signing_key is not; give the key "
                             "to sign with, or leave out both.")
        return None
    return load_signing_key(params["signing_key"], params.get("signing_key_password"), basedir,
                            f"{prefix}signing_key")


def sign_statement(key: SigningKey, subjects: Sequence[dict[str, Any]], kind: str,
                   predicate: dict[str, Any]) -> dict[str, Any]:
    return sign_envelope(statements.statement_bytes(statements.statement(subjects, kind, predicate)), key)


def read_contents(client: DockerClient, container_id: str) -> sboms.Contents:
    """What the container's filesystem says is installed (dpkg, Python, the OS release)."""
    code, output = client.exec(container_id, ["/bin/sh", "-c", sboms.CONTENTS_SCRIPT])
    if code != 0:
        raise InfraError(f"Listing the installed packages for the SBOM failed (exit code {code}): {output[-400:]}")
    return sboms.parse_contents(output)


@dataclass
class BakeFacts:
    """What a bake knows about itself once its image is committed."""

    name: str
    tag: str
    base: str
    requested: list[str]
    roles: list[Any]  # bake/roles.py Role: name, digest, version
    inputs: dict[str, Any]
    inputs_hash: str
    git: dict[str, Any]
    controller: str
    invocation: str
    started: str
    contents: sboms.Contents = field(default_factory=sboms.Contents)


def attest_bake(key: SigningKey, image_id: str, facts: BakeFacts) -> Attestations:
    """The signed provenance and SBOM of a baked image."""
    finished = utc_timestamp()
    subjects = [statements.subject(facts.name, image_id)]
    provenance = statements.bake_provenance(
        name=facts.name, base=facts.base, requested_roles=facts.requested, inputs=facts.inputs,
        inputs_hash=facts.inputs_hash, git=facts.git, controller=facts.controller, invocation=facts.invocation,
        started=facts.started, finished=finished)
    described = sboms.Described(
        kind="container", name=facts.name, version=facts.tag, digest=image_id, roles=sboms.role_entries(facts.roles),
        base=(facts.base, facts.inputs["base_image_id"]),
        tool_version=facts.inputs["versions"].get(statements.OWN_COLLECTION, ""))
    document = sboms.build_sbom(described, facts.contents)
    return Attestations({"provenance": sign_statement(key, subjects, "provenance", provenance),
                         "sbom": sign_statement(key, subjects, "sbom", document)},
                        {"provenance": finished, "sbom": finished})


def file_digests(paths: Sequence[str]) -> dict[str, str]:
    """path -> sha256 hex of its content, read in pieces (a disk is gigabytes)."""
    digests = {}
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
        digests[path] = digest.hexdigest()
    return digests


@dataclass
class VerifyRun:
    """What a verify ran and found, for its test-result statement."""

    passed: bool
    files: list[str]
    basedir: str
    passed_tests: list[str]
    failed_tests: list[str]
    where: dict[str, Any]


def attest_test_result(key: SigningKey, name: str, digest: str, run: VerifyRun) -> Attestations:
    """The signed test result of an image (digest: its ID) or a disk (digest: its file's sha256)."""
    configuration = statements.file_descriptors(run.files, run.basedir, file_digests(run.files))
    predicate = statements.test_result(passed=run.passed, configuration=configuration,
                                       passed_tests=run.passed_tests, failed_tests=run.failed_tests,
                                       where=run.where)
    stamp = utc_timestamp()
    return Attestations({"test_result": sign_statement(key, [statements.subject(name, digest)], "test_result",
                                                       predicate)}, {"test_result": stamp})


def verdict_tests(passed_tests: Sequence[str], failures: Sequence[Mapping[str, str]],
                  idempotence: Mapping[str, Any] | None, molecule: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """(passed, failed) test names of a verify's verdict, idempotence and Molecule as tests of their own."""
    passed = list(passed_tests)
    failed = [str(failure.get("test")) for failure in failures]
    if idempotence is not None and idempotence.get("passed"):
        passed.append("idempotence")
    if molecule is not None and molecule.get("passed") and not any(name.startswith("molecule ") for name in failed):
        passed.append(f"molecule {molecule.get('scenario')}")
    return passed, list(dict.fromkeys(failed))


@dataclass
class DiskFacts:
    """What a disk build knows about itself once the disk is written."""

    name: str
    disk_file: str
    image: str
    image_id: str
    inputs: dict[str, Any]
    inputs_hash: str
    packages: dict[str, str]
    versions: dict[str, str]
    controller: str
    invocation: str
    started: str
    contents: sboms.Contents = field(default_factory=sboms.Contents)
    roles: list[dict[str, str]] = field(default_factory=list)


def attest_disk(key: SigningKey, disk_digest: str, facts: DiskFacts) -> tuple[Attestations, dict[str, Any]]:
    """(the signed provenance and SBOM of a disk, the SBOM itself)."""
    finished = utc_timestamp()
    subjects = [statements.subject(facts.disk_file, disk_digest)]
    provenance = statements.disk_provenance(
        name=facts.name, image=facts.image, image_id=facts.image_id, inputs=facts.inputs, inputs_hash=facts.inputs_hash,
        packages=facts.packages, versions=facts.versions, controller=facts.controller, invocation=facts.invocation,
        started=facts.started, finished=finished)
    described = sboms.Described(kind="file", name=facts.disk_file, version=facts.inputs_hash[:12], digest=disk_digest,
                                roles=facts.roles, base=(facts.image, facts.image_id),
                                tool_version=facts.versions.get(statements.OWN_COLLECTION, ""))
    document = sboms.build_sbom(described, facts.contents)
    return Attestations({"provenance": sign_statement(key, subjects, "provenance", provenance),
                         "sbom": sign_statement(key, subjects, "sbom", document)},
                        {"provenance": finished, "sbom": finished}), document
