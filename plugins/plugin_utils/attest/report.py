# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""immutable.infra.attest: what the signed statements of an image or a disk say (its SBOM in summary,
its provenance, its test result), and, given keys, the same check the rollout's trust gate makes.

describe() is pure: envelopes in, a report out. The manager only finds the envelopes (on the engine
beside the image, or beside the disk) and writes the SBOM out when asked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom as sboms
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, signed_key_ids
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import short_key_id
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import file_digests
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.statements import KINDS, subject_digests
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import (
    Attestations,
    read_image_attestations,
    read_sidecars,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.trust import (
    TRUST_OPTION,
    check_attestations,
    parse_trust,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager

ATTEST_ARGUMENT_SPEC: dict[str, Any] = {
    "image": {"type": "str"},
    "disk": {"type": "path"},
    "trust": TRUST_OPTION,
    "sbom_dest": {"type": "path"},
}


def provenance_summary(predicate: Mapping[str, Any]) -> dict[str, Any]:
    definition = predicate.get("buildDefinition") or {}
    details = predicate.get("runDetails") or {}
    dependencies = definition.get("resolvedDependencies") or []
    source: dict[str, Any] = next((entry for entry in dependencies if entry.get("name") == "source"), {})
    return {"build_type": definition.get("buildType"), "parameters": definition.get("externalParameters"),
            "dependencies": [{"name": entry.get("name") or entry.get("uri"), "digest": entry.get("digest"),
                              "uri": entry.get("uri")} for entry in dependencies],
            "git_commit": (source.get("digest") or {}).get("gitCommit"), "builder": details.get("builder"),
            "metadata": details.get("metadata")}


def test_result_summary(predicate: Mapping[str, Any]) -> dict[str, Any]:
    configuration = predicate.get("configuration") or []
    return {"result": predicate.get("result"), "passed": len(predicate.get("passedTests") or []),
            "failed_tests": list(predicate.get("failedTests") or []),
            "files": [entry for entry in configuration if entry.get("name") != "runner"],
            "where": next((entry.get("annotations") for entry in configuration if entry.get("name") == "runner"), None)}


def describe(found: Attestations) -> dict[str, Any]:
    """Per kind: whether it is there, who claims to have signed it, its subjects, where it was found, and
    what it says (unchecked until the keys are given)."""
    report: dict[str, Any] = {}
    for kind in KINDS:
        envelope = found.envelopes.get(kind)
        statement = envelope_statement(envelope) if envelope is not None else None
        entry: dict[str, Any] = {"present": envelope is not None, "keyids": signed_key_ids(envelope),
                                 "subjects": subject_digests(statement), "where": found.where.get(kind),
                                 "stored": found.times.get(kind) or None}
        predicate = (statement or {}).get("predicate") or {}
        if kind == "provenance" and statement:
            entry["summary"] = provenance_summary(predicate)
        elif kind == "sbom" and statement:
            entry["summary"] = sboms.summary(predicate)
        elif kind == "test_result" and statement:
            entry["summary"] = test_result_summary(predicate)
        report[kind] = entry
    return report


def lines(described: str, report: Mapping[str, Any], trusted: Mapping[str, str] | None) -> list[str]:
    """The report in a few lines for the play's output."""
    shown = [described + (": trusted" if trusted else "")]
    for kind, entry in report.items():
        if not entry["present"]:
            shown.append(f"  {kind}: none")
            continue
        signed = ", ".join(short_key_id(key) for key in entry["keyids"]) or "unsigned"
        summary = entry.get("summary") or {}
        if kind == "sbom":
            what = (f"{summary.get('components')} components ({summary.get('debian_packages')} Debian, "
                    f"{summary.get('python_packages')} Python), {summary.get('operating_system') or '?'}")
        elif kind == "provenance":
            what = f"{summary.get('build_type') or '?'}, commit {(summary.get('git_commit') or '-')[:10]}"
        else:
            what = f"{summary.get('result')}, {summary.get('passed')} passed, {len(summary.get('failed_tests') or [])} failed"
        shown.append(f"  {kind}: {what}; signed by {signed}{' (verified)' if trusted and kind in trusted else ''}")
    return shown


class Attest(Manager):
    def __init__(self, params: dict[str, Any], context: Any) -> None:
        super().__init__(params, context)
        if bool(params["image"]) == bool(params["disk"]):
            raise InfraError("Give the image (image) or the disk (disk) whose attestations to show, one of them.")
        self.trust = parse_trust(params["trust"], context.basedir)

    def _found(self) -> tuple[str, str, Attestations]:
        """(subject digest, how to name it, its attestations)."""
        if self.params["disk"]:
            disk = os.path.normpath(os.path.join(self.context.basedir, os.path.expanduser(self.params["disk"])))
            if not os.path.isfile(disk):
                raise InfraError(f"Disk '{self.params['disk']}' does not exist (looked for {disk}).")
            return "sha256:" + file_digests([disk])[disk], f"Disk {os.path.basename(disk)}", read_sidecars(disk)
        client = self.client()
        image = client.image(self.params["image"])
        if image is None:
            raise InfraError(f"Image '{self.params['image']}' is not in the Docker engine; give an image that exists.")
        image_id = image["Id"]
        named = image_id if self.params["image"] == image_id else f"{self.params['image']} ({short_id(image_id)})"
        return image_id, f"Image {named}", read_image_attestations(client, image_id, "engine")

    def run(self) -> dict[str, Any]:
        subject, described, found = self._found()
        report = describe(found)
        result: dict[str, Any] = {"changed": False, "subject": subject, "attestations": report}
        if self.trust is not None:
            result["trusted"] = check_attestations(subject, described, found, self.trust)
        if self.params["sbom_dest"]:
            result.update(self._write_sbom(found))
        result["msg"] = lines(described, report, result.get("trusted"))
        return result

    def _write_sbom(self, found: Attestations) -> dict[str, Any]:
        statement = envelope_statement(found.envelopes.get("sbom"))
        if statement is None:
            raise InfraError("There is no SBOM attestation to write to sbom_dest; bake with signing_key first.")
        dest = os.path.normpath(os.path.join(self.context.basedir, os.path.expanduser(self.params["sbom_dest"])))
        text = json.dumps(statement.get("predicate"), indent=2, sort_keys=True) + "\n"
        try:
            with open(dest, encoding="utf-8") as handle:
                if handle.read() == text:
                    return {"sbom_dest": dest}
        except OSError:
            pass
        if not self.context.check_mode:
            try:
                with open(dest, "w", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as error:
                raise InfraError(f"Cannot write the SBOM to {dest}: {error.strerror}.") from None
        return {"sbom_dest": dest, "changed": True}
