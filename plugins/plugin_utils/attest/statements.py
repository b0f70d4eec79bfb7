# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""in-toto Statements v1 about an image (subject: its ID) or a disk (subject: its file's sha256).

Three kinds, each a predicate type that users' tools know:
  provenance   SLSA Provenance v1: how the bake or disk build ran, from what, by whom
  sbom         CycloneDX: what is in it (sbom.py builds the document)
  test_result  in-toto Test Result v0.1: which tests ran against it, which passed and which failed

Variables are attested by their names and one digest of all their values, never by a value.
Everything here is pure: plain data in, statements out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import canonical_json, sha256_hex

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPES = {
    "provenance": "https://slsa.dev/provenance/v1",
    "sbom": "https://cyclonedx.org/bom",
    "test_result": "https://in-toto.io/attestation/test-result/v0.1",
}
KINDS = tuple(PREDICATE_TYPES)
DOCS = "https://github.com/immutable-infra/immutable.infra/blob/main/docs/attestations.md"
BUILD_TYPES = {"bake": f"{DOCS}#bake-v1", "disk": f"{DOCS}#disk-v1"}
BUILDER_ID = "https://github.com/immutable-infra/immutable.infra"
OWN_COLLECTION = "immutable.infra"


def kind_of(predicate_type: str | None) -> str | None:
    return next((kind for kind, known in PREDICATE_TYPES.items() if known == predicate_type), None)


def hex_of(digest: str) -> str:
    """sha256:abc... or abc... -> abc..."""
    return digest.split(":", 1)[-1]


def subject(name: str, digest: str) -> dict[str, Any]:
    return {"name": name, "digest": {"sha256": hex_of(digest)}}


def statement(subjects: Sequence[dict[str, Any]], kind: str, predicate: dict[str, Any]) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": list(subjects), "predicateType": PREDICATE_TYPES[kind],
            "predicate": predicate}


def statement_bytes(value: dict[str, Any]) -> bytes:
    return canonical_json(value).encode("utf-8")


def subject_digests(value: Mapping[str, Any] | None) -> list[str]:
    """The sha256 digests a statement is about, as sha256:<hex>."""
    found = []
    for entry in (value or {}).get("subject") or []:
        digest = (entry.get("digest") or {}).get("sha256") if isinstance(entry, dict) else None
        if isinstance(digest, str):
            found.append("sha256:" + digest.lower())
    return found


def variables(values: Mapping[str, Any]) -> dict[str, Any]:
    """Variables as an attestation may show them: their names and the digest of all their values."""
    return {"names": sorted(values), "digest": {"sha256": sha256_hex(canonical_json(dict(values)))}}


def _versions(versions: Mapping[str, str]) -> list[dict[str, Any]]:
    dependencies: list[dict[str, Any]] = []
    for name, version in sorted(versions.items()):
        if name == "ansible-core":
            dependencies.append({"uri": f"pkg:pypi/ansible-core@{version}", "name": name})
        else:
            dependencies.append({"name": f"collection:{name}", "annotations": {"version": version}})
    return dependencies


def git_dependency(git: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not git.get("commit"):
        return []
    entry: dict[str, Any] = {"name": "source", "digest": {"gitCommit": git["commit"]},
                             "annotations": {"dirty": bool(git.get("dirty"))}}
    if git.get("remote"):
        entry["uri"] = f"git+{git['remote']}@{git['commit']}"
    return [entry]


def run_details(controller: str, versions: Mapping[str, str], invocation: str, started: str,
                finished: str) -> dict[str, Any]:
    return {"builder": {"id": BUILDER_ID, "version": {key: value for key, value in sorted(versions.items())
                                                      if key in (OWN_COLLECTION, "ansible-core")}},
            "metadata": {"invocationId": invocation, "startedOn": started, "finishedOn": finished},
            "byproducts": [{"name": "controller", "annotations": {"identity": controller}}]}


def bake_provenance(*, name: str, base: str, requested_roles: Sequence[str], inputs: Mapping[str, Any],
                    inputs_hash: str, git: Mapping[str, Any], controller: str, invocation: str, started: str,
                    finished: str) -> dict[str, Any]:
    """The SLSA v1 provenance predicate of a bake. inputs: the bake's inputs (bake/plan.py build_inputs)."""
    dependencies = [{"name": f"base:{base}", "digest": {"sha256": hex_of(inputs["base_image_id"])}}]
    dependencies += [{"name": f"role:{role['name']}", "digest": {"sha256": role["digest"]}} for role in inputs["roles"]]
    dependencies += _versions(inputs["versions"]) + git_dependency(git)
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPES["bake"],
            "externalParameters": {"name": name, "base": base, "roles": list(requested_roles),
                                   "vars": variables(inputs["vars"]),
                                   "config": {"sha256": sha256_hex(canonical_json(inputs["config"]))}},
            "internalParameters": {"builder": inputs["builder"], "inputs_hash": inputs_hash},
            "resolvedDependencies": dependencies,
        },
        "runDetails": run_details(controller, inputs["versions"], invocation, started, finished),
    }


def disk_provenance(*, name: str, image: str, image_id: str, inputs: Mapping[str, Any], inputs_hash: str,
                    packages: Mapping[str, str], versions: Mapping[str, str], controller: str, invocation: str,
                    started: str, finished: str) -> dict[str, Any]:
    """The SLSA v1 provenance predicate of a disk build. inputs: the disk's inputs (machine/plan.py)."""
    dependencies = [{"name": f"image:{image}", "digest": {"sha256": hex_of(image_id)}}]
    dependencies += [{"uri": f"pkg:deb/debian/{package}@{version}", "name": package}
                     for package, version in sorted(packages.items())]
    dependencies += _versions(versions)
    external = {key: inputs[key] for key in ("kernel_package", "packages", "size", "format") if key in inputs}
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPES["disk"],
            "externalParameters": dict(external, name=name, image=image,
                                       boot={"sha256": sha256_hex(canonical_json(inputs.get("boot")))}),
            "internalParameters": {"inputs_hash": inputs_hash, "layout": inputs.get("layout")},
            "resolvedDependencies": dependencies,
        },
        "runDetails": run_details(controller, versions, invocation, started, finished),
    }


def test_result(*, passed: bool, configuration: Sequence[dict[str, Any]], passed_tests: Sequence[str],
                failed_tests: Sequence[str], where: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto test-result predicate. configuration: the test files with their digests; where: how
    and where the tests ran (host kind, engine or accelerator, controller, time)."""
    runner = {"name": "runner", "annotations": dict(where)}
    return {"result": "PASSED" if passed else "FAILED", "configuration": [*configuration, runner],
            "passedTests": list(passed_tests), "warnedTests": [], "failedTests": list(failed_tests)}


def file_descriptors(paths: Sequence[str], basedir: str, digests: Mapping[str, str]) -> list[dict[str, Any]]:
    """Test files as resource descriptors: their path relative to basedir (when under it) and sha256."""
    descriptors = []
    for path in paths:
        relative = os.path.relpath(path, basedir)
        descriptors.append({"name": path if relative.startswith("..") else relative,
                            "digest": {"sha256": digests[path]}})
    return descriptors
