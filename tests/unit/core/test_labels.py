"""The engine-side contract: labels written are read back the same, and the keys stay what images and hosts carry."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    HostLabels,
    ImageProvenance,
    JournalLabels,
    VerdictLabels,
    builder_name,
    failed_bake_labels,
    failed_bake_tag,
    image_labels,
    is_builder,
    is_verify_host,
    journal_name,
    journaled_service,
    lock_name,
    locked_service,
    marks_failed_bake,
    pinning_tag,
    shown_provenance,
    verdict_volume_image,
    verdict_volume_name,
    verify_host_labels,
    verify_host_name,
)

IMAGE_ID = "sha256:" + "ab" * 32
SUMMARY = {"base_image_id": "sha256:base", "roles": [["web", "0123456789ab"]], "vars": "v", "config": "c",
           "versions": {"ansible-core": "2.19.4", "community.docker": "4.8.1"}, "builder": "b"}
PROVENANCE = ImageProvenance(
    name="acme/web", inputs_hash="f" * 64, inputs=SUMMARY, roles=["common", "acme.tools.stamp@1.2.0"],
    base="debian:bookworm", base_image_id="sha256:base", ansible_core="2.19.4",
    collections={"community.docker": "4.8.1", "immutable.infra": "0.1.0"}, baked_by="ci@runner",
    created="2026-01-01T00:00:00Z", git_commit="4f1c2d3", git_source="git@example.com:acme/ops.git", git_dirty=False)
# What a bake of this release writes; images baked earlier carry exactly these keys and values.
PROVENANCE_LABELS = {
    "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
    "org.opencontainers.image.title": "acme/web",
    "org.opencontainers.image.revision": "4f1c2d3",
    "org.opencontainers.image.source": "git@example.com:acme/ops.git",
    "immutable.infra.inputs_hash": "f" * 64,
    "immutable.infra.inputs": json.dumps(SUMMARY, sort_keys=True, separators=(",", ":")),
    "immutable.infra.name": "acme/web",
    "immutable.infra.roles": "common,acme.tools.stamp@1.2.0",
    "immutable.infra.base": "debian:bookworm",
    "immutable.infra.base_image_id": "sha256:base",
    "immutable.infra.ansible_core": "2.19.4",
    "immutable.infra.collections": "community.docker=4.8.1,immutable.infra=0.1.0",
    "immutable.infra.baked_by": "ci@runner",
    "immutable.infra.git_dirty": "false",
}


# images -------------------------------------------------------------------------------------------
def test_image_provenance_is_written_with_the_keys_baked_images_carry():
    assert PROVENANCE.to_labels() == PROVENANCE_LABELS


def test_image_provenance_round_trips():
    assert ImageProvenance.from_labels(PROVENANCE.to_labels()) == PROVENANCE
    assert ImageProvenance.from_labels(PROVENANCE_LABELS).to_labels() == PROVENANCE_LABELS


def test_image_provenance_outside_git_has_no_revision_source_or_dirtiness():
    labels = ImageProvenance(name="w", inputs_hash="d", roles=[], created="t", baked_by="u@h").to_labels()
    assert not {"org.opencontainers.image.revision", "org.opencontainers.image.source",
                "immutable.infra.git_dirty"} & set(labels)
    assert labels["immutable.infra.roles"] == "" and labels["immutable.infra.collections"] == ""
    back = ImageProvenance.from_labels(labels)
    assert (back.git_commit, back.git_source, back.git_dirty, back.roles, back.collections) == (None, None, None, [], {})


def test_a_dirty_checkout_is_recorded_as_true():
    labels = ImageProvenance(name="w", git_commit="abc", git_dirty=True).to_labels()
    assert labels["immutable.infra.git_dirty"] == "true"
    assert ImageProvenance.from_labels(labels).git_dirty is True


def test_foreign_images_read_as_unknown_provenance():
    for labels in (None, {}, {"maintainer": "someone"}):
        assert ImageProvenance.from_labels(labels) == ImageProvenance()
    assert ImageProvenance.from_labels({"immutable.infra.inputs": "{broken"}).inputs is None
    assert ImageProvenance.from_labels({"immutable.infra.inputs": "[1, 2]"}).inputs is None


def test_role_names_drop_versions():
    assert PROVENANCE.role_names == ["common", "acme.tools.stamp"]


def test_image_labels_of_inspect_data():
    assert image_labels({"Config": {"Labels": {"a": "b"}}}) == {"a": "b"}
    assert image_labels({"Config": {"Labels": None}}) == {} and image_labels({}) == {} and image_labels(None) == {}


def test_shown_provenance_keeps_oci_and_own_labels_but_not_the_inputs_summary():
    shown = shown_provenance(dict(PROVENANCE_LABELS, maintainer="someone"))
    assert "maintainer" not in shown and "immutable.infra.inputs" not in shown
    assert shown["org.opencontainers.image.revision"] == "4f1c2d3" and shown["immutable.infra.name"] == "acme/web"


def test_failed_bakes_are_told_by_their_label_or_their_tag():
    assert failed_bake_labels("d" * 64) == {"immutable.infra.failed_bake": "d" * 64, "immutable.infra.name": ""}
    assert failed_bake_tag("dddddddddddd") == "failed-dddddddddddd"
    assert marks_failed_bake(failed_bake_labels("d"), [])
    assert marks_failed_bake({}, ["acme/web:" + failed_bake_tag("dddddddddddd")])
    assert not marks_failed_bake(PROVENANCE_LABELS, ["acme/web:dddddddddddd", "failed-looking/repo:latest"])


def test_pinning_tags():
    assert pinning_tag(["acme/web:0123", "acme/web:pinned-release-1"]) == "acme/web:pinned-release-1"
    assert pinning_tag(["pinned/web:0123"]) is None
    assert pinning_tag([]) is None


# hosts --------------------------------------------------------------------------------------------
HOST = HostLabels(service="web", generation=3, index=2, image_id=IMAGE_ID, spec_hash="s" * 64, rollout="r1",
                  port=8000, inputs_hash="f" * 64, spec={"port": 8000, "container": {"env": {}}, "health": {}})
HOST_LABELS = {
    "immutable.infra.service": "web", "immutable.infra.generation": "3", "immutable.infra.index": "2",
    "immutable.infra.image_id": IMAGE_ID, "immutable.infra.spec_hash": "s" * 64, "immutable.infra.rollout": "r1",
    "immutable.infra.port": "8000", "immutable.infra.inputs_hash": "f" * 64,
    "immutable.infra.spec": '{"container": {"env": {}}, "health": {}, "port": 8000}',
}


def test_host_labels_are_written_with_the_keys_running_hosts_carry():
    assert HOST.to_labels() == HOST_LABELS


def test_host_labels_round_trip():
    assert HostLabels.from_labels(HOST.to_labels()) == HOST
    assert HostLabels.from_labels(HOST_LABELS).to_labels() == HOST_LABELS


def test_a_container_with_only_the_service_label_has_no_generation():
    host = HostLabels.from_labels({"immutable.infra.service": "web"})
    assert host == HostLabels(service="web")
    assert host.to_labels() == {"immutable.infra.service": "web"}


@pytest.mark.parametrize("raw", ["", "x", "-1", "3.0", "²"])
def test_malformed_numbers_read_as_unknown(raw):
    host = HostLabels.from_labels({"immutable.infra.generation": raw, "immutable.infra.port": raw,
                                   "immutable.infra.index": raw})
    assert (host.generation, host.port, host.index) == (None, None, None)


@pytest.mark.parametrize("raw", ["", "{broken", "-1", '["port"]'])
def test_a_spec_that_is_not_a_json_object_reads_as_none(raw):
    assert HostLabels.from_labels({"immutable.infra.spec": raw}).spec is None


# verdict volumes ----------------------------------------------------------------------------------
def test_verdict_labels_round_trip_with_the_keys_verdict_volumes_carry():
    verdict = VerdictLabels(result="passed", image_id=IMAGE_ID, time="2026-01-01T00:04:00Z", reference="acme/web:1",
                            ledger_id="v1", tests='{"total": 4}', inputs_hash="f" * 64, verified_by="qa@lab",
                            report="/r.xml", duration="1.5", broken="false")
    labels = verdict.to_labels()
    assert labels == {
        "immutable.infra.verdict": "passed", "immutable.infra.image_id": IMAGE_ID,
        "immutable.infra.time": "2026-01-01T00:04:00Z", "immutable.infra.reference": "acme/web:1",
        "immutable.infra.ledger_id": "v1", "immutable.infra.tests": '{"total": 4}',
        "immutable.infra.inputs_hash": "f" * 64, "immutable.infra.verified_by": "qa@lab",
        "immutable.infra.report": "/r.xml", "immutable.infra.duration": "1.5", "immutable.infra.broken": "false"}
    assert VerdictLabels.from_labels(labels) == verdict
    assert verdict.passed and not VerdictLabels(result="failed").passed and not VerdictLabels.from_labels(None).passed


def test_a_verdict_with_few_details_writes_only_those():
    verdict = VerdictLabels(result="failed", image_id=IMAGE_ID, time="t")
    assert verdict.to_labels() == {"immutable.infra.verdict": "failed", "immutable.infra.image_id": IMAGE_ID,
                                   "immutable.infra.time": "t"}
    assert VerdictLabels.from_labels(verdict.to_labels()) == verdict


def test_verdict_volumes_are_named_after_the_image_and_name_it_back():
    name = verdict_volume_name(IMAGE_ID)
    assert name == "immutable-infra-verdict-" + "ab" * 32
    assert verdict_volume_image(name, {"immutable.infra.image_id": IMAGE_ID}) == IMAGE_ID
    assert verdict_volume_image(name, None) == IMAGE_ID  # a volume whose labels are gone still names its image
    assert verdict_volume_image("immutable-infra-rollout-web", {"immutable.infra.image_id": IMAGE_ID}) is None


# the rollout lock and journal ---------------------------------------------------------------------
@pytest.mark.parametrize("restored", [False, True])
def test_journal_labels_round_trip_with_the_keys_journal_volumes_carry(restored):
    journal = JournalLabels(rollout="r2", previous_live=["web-1-1", "web-1-2"], new_hosts=["web-2-1"],
                            image_id=IMAGE_ID, restored=restored, started="2026-01-01T00:00:00Z", stop_timeout=30)
    labels = journal.to_labels()
    assert labels == {"immutable.infra.rollout": "r2", "immutable.infra.previous_live": "web-1-1,web-1-2",
                      "immutable.infra.new_hosts": "web-2-1", "immutable.infra.image_id": IMAGE_ID,
                      "immutable.infra.restored": "true" if restored else "false",
                      "immutable.infra.started": "2026-01-01T00:00:00Z", "immutable.infra.replaced": "",
                      "immutable.infra.stop_timeout": "30"}
    assert JournalLabels.from_labels(labels) == journal


def test_a_heal_journals_each_drifted_host_with_its_replacement():
    journal = JournalLabels(rollout="h1", previous_live=["web-1-1"], new_hosts=["web-1-3"], image_id=IMAGE_ID,
                            replaced={"web-1-1": "web-1-3"})
    labels = journal.to_labels()
    assert labels["immutable.infra.replaced"] == "web-1-1=web-1-3"
    assert JournalLabels.from_labels(labels) == journal
    garbled = dict(labels, **{"immutable.infra.replaced": "web-1-1=,junk", "immutable.infra.stop_timeout": "soon"})
    assert (JournalLabels.from_labels(garbled).replaced, JournalLabels.from_labels(garbled).stop_timeout) == ({}, 10)


def test_a_first_rollout_journals_no_previous_hosts():
    journal = JournalLabels(rollout="r1", new_hosts=["web-1-1"], image_id=IMAGE_ID, started="t")
    assert journal.to_labels()["immutable.infra.previous_live"] == ""
    assert JournalLabels.from_labels(journal.to_labels()).previous_live == []
    assert JournalLabels.from_labels({}) == JournalLabels()


def test_lock_and_journal_names_round_trip():
    assert lock_name("web") == "immutable-infra-lock-web" and locked_service(lock_name("web")) == "web"
    assert journal_name("web") == "immutable-infra-rollout-web" and journaled_service(journal_name("web")) == "web"
    assert locked_service("web-1-1") is None and journaled_service(lock_name("web")) is None


# throwaway containers -----------------------------------------------------------------------------
def test_builders_and_verify_hosts_are_known_by_name_and_label():
    assert builder_name("0123456789ab", "a1b2c3") == "immutable-infra-bake-0123456789ab-a1b2c3"
    assert is_builder(builder_name("0123456789ab", "a1b2c3")) and not is_builder("web-1-1")
    assert verify_host_name("abababababab", "a1b2c3") == "immutable-infra-verify-abababababab-a1b2c3"
    assert verify_host_labels(IMAGE_ID) == {"immutable.infra.verifying": IMAGE_ID}
    assert is_verify_host(verify_host_labels(IMAGE_ID))
    assert not is_verify_host({}) and not is_verify_host(None) and not is_verify_host(HOST_LABELS)


def test_a_host_names_its_engine_and_one_made_before_engines_reads_as_none():
    labels = HostLabels(service="web", generation=2, index=1, engine="rig2").to_labels()
    assert labels["immutable.infra.engine"] == "rig2"
    assert HostLabels.from_labels(labels).engine == "rig2"
    assert "immutable.infra.engine" not in HostLabels(service="web", generation=2, index=1).to_labels()
    assert HostLabels.from_labels({"immutable.infra.service": "web"}).engine is None


def test_the_journal_lists_the_engine_of_each_new_host():
    journal = JournalLabels(rollout="r3", new_hosts=["web-3-1", "web-3-2"], image_id=IMAGE_ID, started="t",
                            placement={"web-3-2": "rig2", "web-3-1": "rig1"})
    labels = journal.to_labels()
    assert labels["immutable.infra.placement"] == "web-3-1=rig1,web-3-2=rig2"
    assert JournalLabels.from_labels(labels) == journal
    assert JournalLabels.from_labels(dict(labels, **{"immutable.infra.placement": "web-3-1=,=rig2,junk"})).placement == {}
