"""The gate on keys (check_attestations), the statements it reads, and how they are kept (labels, sidecars, ledger)."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import statements, store
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import load_signing_key, new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import (
    VerifyRun,
    attest_test_result,
    sign_statement,
    verdict_tests,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.trust import (
    Trust,
    check_attestations,
    parse_trust,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_ATTESTATION_PREFIX,
    attestation_volume_image,
    attestation_volume_name,
)

IMAGE = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
SECRET = "hunter2-value-never-shown"


@pytest.fixture(scope="module")
def keys():
    mine, theirs = new_key_pair(), new_key_pair()
    return load_signing_key(mine[0], None, "/"), load_signing_key(theirs[0], None, "/"), mine[1]


def inputs():
    return {"base_image_id": "sha256:" + "12" * 32, "roles": [{"name": "web", "digest": "34" * 32}],
            "vars": {"db_password": SECRET, "port": 8080}, "config": {"cmd": ["serve"]},
            "versions": {"ansible-core": "2.19.14", "immutable.infra": "0.1.0", "community.docker": "4.8.1"},
            "builder": {"gather_subset": ["all"]}}


def provenance():
    return statements.bake_provenance(
        name="acme/web", base="debian:12", requested_roles=["web"], inputs=inputs(), inputs_hash="56" * 32,
        git={"commit": "a" * 40, "remote": "https://git.example/acme/web.git", "dirty": False},
        controller="ci@build1", invocation="ledger-id", started="2026-12-07T00:00:00Z", finished="2026-12-07T00:01:00Z")


def signed(key, kind="provenance", digest=IMAGE, predicate=None):
    predicate = predicate if predicate is not None else {"provenance": provenance(), "sbom": {"bomFormat": "CycloneDX"},
                                                         "test_result": passing()}[kind]
    return sign_statement(key, [statements.subject("acme/web", digest)], kind, predicate)


def passing(passed=True):
    return statements.test_result(passed=passed, configuration=[], passed_tests=["test_web.py::test_port"],
                                  failed_tests=[] if passed else ["test_web.py::test_status"], where={"host": "container"})


def everything(key, **replaced):
    found = store.Attestations({kind: signed(key, kind) for kind in statements.KINDS})
    found.envelopes.update(replaced)
    return found


def trust_of(public_pem, require=statements.KINDS):
    return parse_trust({"keys": [public_pem], "require": list(require)}, "/")


def test_statements_signed_by_a_trusted_key_about_the_image_pass(keys):
    mine, _theirs, public = keys
    assert check_attestations(IMAGE, "Image acme/web", everything(mine), trust_of(public)) == \
        {kind: mine.keyid for kind in statements.KINDS}


@pytest.mark.parametrize("case, expected", [
    ("missing", "it has no provenance attestation"),
    ("unsigned", "its provenance is unsigned"),
    ("other key", "its provenance is signed by another key ("),
    ("other digest", f"its provenance is about another digest ({OTHER[7:19]}), not {IMAGE[7:19]}"),
    ("damaged", "its provenance attestation is damaged or is not a https://slsa.dev/provenance/v1 statement"),
    ("wrong type", "its provenance attestation is damaged or is not a https://slsa.dev/provenance/v1 statement"),
])
def test_each_way_of_not_being_trusted_is_named(keys, case, expected):
    mine, theirs, public = keys
    envelope = {"missing": None, "unsigned": dict(signed(mine), signatures=[]), "other key": signed(theirs),
                "other digest": signed(mine, digest=OTHER), "damaged": {"payload": "not base64!"},
                "wrong type": signed(mine, "sbom")}[case]
    found = everything(mine)
    if envelope is None:
        del found.envelopes["provenance"]
    else:
        found.envelopes["provenance"] = envelope
    with pytest.raises(InfraError) as raised:
        check_attestations(IMAGE, "Image acme/web", found, trust_of(public))
    assert raised.value.message.startswith(f"Image acme/web is not trusted: {expected}")
    assert raised.value.message.endswith("Nothing was changed.")


def test_a_failed_test_result_is_refused_with_its_failing_tests(keys):
    mine, _theirs, public = keys
    found = everything(mine, test_result=signed(mine, "test_result", predicate=passing(False)))
    with pytest.raises(InfraError, match=r"its test result is failed \(test_web.py::test_status\)"):
        check_attestations(IMAGE, "Image acme/web", found, trust_of(public))


def test_every_problem_is_in_one_sentence_and_require_limits_the_check(keys):
    mine, theirs, public = keys
    found = everything(theirs)
    with pytest.raises(InfraError) as raised:
        check_attestations(IMAGE, "Image x", found, trust_of(public))
    assert raised.value.message.count("signed by another key") == 3 and raised.value.message.count("; ") == 2
    found = store.Attestations({"provenance": signed(mine)})
    assert check_attestations(IMAGE, "Image x", found, trust_of(public, ["provenance"])) == {"provenance": mine.keyid}


def test_trust_needs_keys_and_is_off_when_not_given(keys):
    assert parse_trust(None, "/") is None
    with pytest.raises(InfraError, match="trust.keys is empty"):
        parse_trust({"keys": [" "], "require": ["sbom"]}, "/")
    trust = parse_trust({"keys": [keys[2]], "require": None}, "/")
    assert isinstance(trust, Trust) and trust.require == statements.KINDS


def test_provenance_names_variables_and_digests_their_values_but_shows_no_value():
    predicate = provenance()
    text = json.dumps(predicate)
    assert SECRET not in text and "8080" not in text
    parameters = predicate["buildDefinition"]["externalParameters"]
    assert parameters["vars"]["names"] == ["db_password", "port"]
    assert len(parameters["vars"]["digest"]["sha256"]) == 64
    dependencies = {entry["name"]: entry for entry in predicate["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["base:debian:12"]["digest"] == {"sha256": "12" * 32}
    assert dependencies["role:web"]["digest"] == {"sha256": "34" * 32}
    assert dependencies["source"] == {"name": "source", "digest": {"gitCommit": "a" * 40}, "annotations": {"dirty": False},
                                      "uri": f"git+https://git.example/acme/web.git@{'a' * 40}"}
    assert dependencies["ansible-core"]["uri"] == "pkg:pypi/ansible-core@2.19.14"
    assert predicate["runDetails"]["builder"]["version"] == {"ansible-core": "2.19.14", "immutable.infra": "0.1.0"}


def test_a_test_result_names_its_files_by_digest_and_its_tests(keys, tmp_path):
    mine = keys[0]
    test_file = tmp_path / "tests" / "test_web.py"
    test_file.parent.mkdir()
    test_file.write_text("def test_port(): pass\n")
    passed, failed = verdict_tests(["tests/test_web.py::test_port"], [{"test": "idempotence: x", "message": "m"}],
                                   {"passed": False}, None)
    run = VerifyRun(False, [str(test_file)], str(tmp_path), passed, failed, {"host": "container"})
    found = attest_test_result(mine, "acme/web", IMAGE, run)
    statement = json.loads(base64.b64decode(found.envelopes["test_result"]["payload"]))
    assert statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    assert statement["subject"] == [{"name": "acme/web", "digest": {"sha256": "ab" * 32}}]
    predicate = statement["predicate"]
    assert predicate["result"] == "FAILED" and predicate["failedTests"] == ["idempotence: x"]
    assert predicate["passedTests"] == ["tests/test_web.py::test_port"]
    assert predicate["configuration"][0]["name"] == "tests/test_web.py"
    assert predicate["configuration"][-1] == {"name": "runner", "annotations": {"host": "container"}}


def test_envelopes_survive_the_engine_labels_and_a_damaged_label_reads_as_damaged(keys):
    mine = keys[0]
    found = everything(mine)
    found.times = {kind: "2026-12-07T00:00:00Z" for kind in statements.KINDS}
    labels = store.to_labels(IMAGE, found)
    assert store.from_labels(labels).envelopes == found.envelopes
    labels[LABEL_ATTESTATION_PREFIX + "sbom"] = "not gzip"
    assert store.from_labels(labels).envelopes["sbom"] == {}
    assert attestation_volume_image(attestation_volume_name(IMAGE), None) == IMAGE


def test_the_newest_of_each_kind_counts_over_several_engines():
    old = store.Attestations({"test_result": {"old": True}, "sbom": {"only": "here"}},
                             {"test_result": "2026-01-01T00:00:00Z", "sbom": "2026-01-01T00:00:00Z"})
    new = store.Attestations({"test_result": {"new": True}}, {"test_result": "2026-02-01T00:00:00Z"})
    best = store.newest({"rig1": old, "rig2": new})
    assert best.envelopes == {"test_result": {"new": True}, "sbom": {"only": "here"}}
    assert best.where == {"test_result": "rig2", "sbom": "rig1"}


def test_the_ledger_keeps_the_sbom_by_digest_and_the_rest_in_full(keys):
    summary = store.record_summary(everything(keys[0]))
    assert set(summary) == set(statements.KINDS)
    assert "envelope" not in summary["sbom"] and len(summary["sbom"]["sha256"]) == 64
    assert summary["provenance"]["envelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert summary["test_result"]["keyids"] == [keys[0].keyid]


def test_sidecars_beside_a_disk_read_back(tmp_path, keys):
    disk = str(tmp_path / "web-0123456789ab.qcow2")
    found = everything(keys[0])
    written = store.write_sidecars(disk, found, {"bomFormat": "CycloneDX"})
    assert sorted(path.rsplit("/", 1)[-1] for path in written) == [
        "web-0123456789ab.cdx.json", "web-0123456789ab.provenance.dsse.json", "web-0123456789ab.sbom.dsse.json",
        "web-0123456789ab.test-result.dsse.json"]
    assert store.read_sidecars(disk).envelopes == found.envelopes
