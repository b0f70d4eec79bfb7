"""The trust gate for a disk: its sidecars, or the copy a hypervisor's store keeps for a disk named by digest."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import statements, store
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import load_signing_key, new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import sign_statement
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    attestation_volume_image,
    attestation_volume_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.attestations import (
    disk_attestations,
    require_trusted_disk,
    store_disk_attestations,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.disk import DiskArtifact
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.store import decode, encode

DISK = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


class RecordStore:
    """A hypervisor's store as far as records go: labels kept as the JSON a state-pool volume holds."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}

    def replace(self, name: str, labels: dict[str, str]) -> None:
        self.records[name] = encode(labels)

    def get(self, name: str) -> dict[str, str] | None:
        return decode(self.records[name]) if name in self.records else None


@pytest.fixture(scope="module")
def keys():
    mine, theirs = new_key_pair(), new_key_pair()
    return load_signing_key(mine[0], None, "/"), load_signing_key(theirs[0], None, "/"), mine[1]


def statements_about(key, digest=DISK):
    predicates = {"provenance": {"buildDefinition": {"buildType": "disk"}}, "sbom": {"bomFormat": "CycloneDX"},
                  "test_result": statements.test_result(passed=True, configuration=[], passed_tests=["boot"],
                                                        failed_tests=[], where={"host": "vm"})}
    return store.Attestations({kind: sign_statement(key, [statements.subject("web", digest)], kind, predicates[kind])
                               for kind in statements.KINDS})


def disk_file(tmp_path, found):
    path = str(tmp_path / "web-abababababab.qcow2")
    store.write_sidecars(path, found)
    return DiskArtifact(DISK, {"name": "web"}, path)


def trust(public):
    return {"keys": [public], "require": list(statements.KINDS)}


def test_a_disk_signed_by_a_trusted_key_passes_and_its_signers_go_to_the_record(keys, tmp_path):
    mine, _theirs, public = keys
    artifact = disk_file(tmp_path, statements_about(mine))
    assert require_trusted_disk({}, artifact, trust(public), "/") == {
        "trusted": {kind: mine.keyid for kind in statements.KINDS}}


def test_a_disk_signed_by_another_key_or_about_another_digest_is_refused_in_one_sentence(keys, tmp_path):
    mine, theirs, public = keys
    found = statements_about(theirs)
    found.envelopes["provenance"] = statements_about(mine, OTHER).envelopes["provenance"]
    artifact = disk_file(tmp_path, found)
    with pytest.raises(InfraError) as refused:
        require_trusted_disk({}, artifact, trust(public), "/")
    message = refused.value.message
    assert message.startswith("Disk web-abababababab.qcow2 (") and message.endswith("Nothing was changed.")
    assert "its provenance is about another digest" in message and "its SBOM is signed by another key" in message


def test_without_trust_the_gate_reads_nothing(tmp_path):
    assert require_trusted_disk({}, DiskArtifact(DISK, {}, str(tmp_path / "missing.qcow2")), None, "/") == {}


def test_a_disk_named_by_digest_is_judged_by_the_copy_a_hypervisor_keeps(keys, tmp_path):
    mine, _theirs, public = keys
    artifact = disk_file(tmp_path, statements_about(mine))
    kept, empty = RecordStore(), RecordStore()
    assert store_disk_attestations(kept, artifact) is True
    name = attestation_volume_name(DISK)
    assert attestation_volume_image(name, kept.get(name)) == DISK  # prune removes it with the disk
    by_digest = DiskArtifact(DISK, {"name": "web"})
    assert disk_attestations({"a": empty, "b": kept}, by_digest).envelopes == \
        store.read_sidecars(str(artifact.path)).envelopes
    assert require_trusted_disk({"a": empty, "b": kept}, by_digest, trust(public), "/")["trusted"]["sbom"] == mine.keyid
    with pytest.raises(InfraError, match="it has no provenance attestation"):
        require_trusted_disk({"a": empty}, by_digest, trust(public), "/")


def test_a_disk_without_sidecars_leaves_the_store_alone(tmp_path):
    kept = RecordStore()
    assert store_disk_attestations(kept, DiskArtifact(DISK, {}, str(tmp_path / "plain.qcow2"))) is False
    assert kept.records == {}
