"""Signed provenance, SBOM and test results against a real engine: images baked and verified with a key (cosign's
encrypted format), the SBOM checked against the CycloneDX schema and listing what a role installed, no variable
value anywhere, and rollout with trust: refusing what the trusted key did not sign (nothing changed) and rolling
out what it did, with history naming the key."""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
from rollout_support import DEMO_DIR, HELLO_CONFIG, rollout_task
from support import BASE_IMAGE, REPO_ROOT, Playbooks, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import (
    read_image_attestations,
    store_image_attestations,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import attestation_volume_name
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict

SECRET = f"never-shown-{uuid.uuid4().hex}"
PASSWORD = "correct horse"
FIXTURES = os.path.join(REPO_ROOT, "tests", "integration", "fixtures")


@pytest.fixture(scope="module")
def signed_project(tmp_path_factory, docker_client, base_image):
    """A project with the hello and nginx (web) roles, a release key in cosign's format and another key,
    and three images: hello and web baked and verified with the release key (web's tests fail), and hello
    baked with no key at all."""
    project_dir = str(tmp_path_factory.mktemp("attest"))
    os.makedirs(os.path.join(project_dir, "roles"))
    os.symlink(os.path.join(DEMO_DIR, "roles", "hello"), os.path.join(project_dir, "roles", "hello"))
    for role in ("web", "common"):  # web depends on common
        os.symlink(os.path.join(FIXTURES, "bake_project", "roles", role), os.path.join(project_dir, "roles", role))
    for name, password in (("release", PASSWORD), ("other", None)):
        private, public = new_key_pair(password)
        for suffix, text in (("key", private), ("pub", public)):
            with open(os.path.join(project_dir, f"{name}.{suffix}"), "w", encoding="utf-8") as handle:
                handle.write(text)
    project = Playbooks(project_dir)
    env = {"IMMUTABLE_INFRA_LEDGER": os.path.join(project_dir, "ledger.jsonl")}
    signing = {"signing_key": "release.key", "signing_key_password": PASSWORD}
    nonce = uuid.uuid4().hex
    bakes = project.run([
        {"name": "hello", "immutable.infra.bake": dict(signing, name=image_name("signed-hello"), base=BASE_IMAGE,
                                                        roles=["hello"], config=HELLO_CONFIG,
                                                        vars={"db_password": SECRET, "test_nonce": nonce})},
        {"name": "web", "immutable.infra.bake": dict(signing, name=image_name("signed-web"), base=BASE_IMAGE,
                                                      roles=["web"], vars={"web_version": "2.0", "test_nonce": nonce},
                                                      config={"cmd": ["nginx", "-g", "daemon off;"]})},
        {"name": "plain", "immutable.infra.bake": {"name": image_name("plain-hello"), "base": BASE_IMAGE,
                                                   "roles": ["hello"], "config": HELLO_CONFIG,
                                                   "vars": {"test_nonce": nonce}}},
    ], env=env)
    for name in ("hello", "web", "plain"):
        assert not bakes[name].get("failed"), bakes[name].get("msg")
    images = {name: bakes[name]["image_id"] for name in ("hello", "web", "plain")}
    verifies = project.run([
        {"name": "hello", "immutable.infra.verify": dict(signing, image=images["hello"],
                                                          tests=[os.path.join(DEMO_DIR, "tests", "test_hello.py")])},
        {"name": "web", "immutable.infra.verify": dict(signing, image=images["web"],
                                                        tests=[os.path.join(FIXTURES, "verify_project", "tests",
                                                                            "failing")])},
    ], env=env)
    assert verifies["hello"]["passed"], verifies["hello"].get("msg")
    assert verifies["web"]["passed"] is False and verifies["web"]["signed_by"]
    record_verdict(DockerClient(), images["plain"], True, {"time": "test", "reference": images["plain"]})
    return project, env, images, bakes, verifies


def statement(envelope):
    return json.loads(base64.b64decode(envelope["payload"]))


def test_a_signed_bake_keeps_a_valid_sbom_listing_what_the_role_installed_beside_the_image(signed_project):
    _project, _env, images, bakes, _verifies = signed_project
    client = DockerClient()
    found = read_image_attestations(client, images["web"])
    assert sorted(found.envelopes) == ["provenance", "sbom", "test_result"]
    document = statement(found.envelopes["sbom"])["predicate"]
    assert sbom.validation_errors(document) is None
    packages = sbom.packages_in(document)
    assert packages["nginx"] and packages["nginx"][0].isdigit(), packages.get("nginx")
    assert "python3" in packages and document["metadata"]["component"]["hashes"][0]["content"] == images["web"][7:]
    roles = sbom.summary(document)["roles"]
    assert [role["name"] for role in roles] == ["common", "web"] and len(roles[1]["digest"]) == 64
    provenance = statement(found.envelopes["provenance"])
    assert provenance["subject"][0]["digest"]["sha256"] == images["web"][7:]
    assert bakes["web"]["signed_by"] == bakes["hello"]["signed_by"]
    assert bakes["plain"].get("signed_by") is None and not read_image_attestations(client, images["plain"]).envelopes


def test_no_variable_value_appears_in_any_attestation_label_log_or_ledger(signed_project, docker_client):
    _project, env, images, bakes, verifies = signed_project
    client = DockerClient()
    provenance = statement(read_image_attestations(client, images["hello"]).envelopes["provenance"])
    assert provenance["predicate"]["buildDefinition"]["externalParameters"]["vars"]["names"] == \
        ["db_password", "test_nonce"]
    places = {
        "attestations": json.dumps([statement(envelope) for envelope in
                                    read_image_attestations(client, images["hello"]).envelopes.values()]),
        "labels": json.dumps(docker_client.api.inspect_image(images["hello"])["Config"]["Labels"]),
        "volume": json.dumps(docker_client.api.inspect_volume(attestation_volume_name(images["hello"]))),
        "ledger": open(env["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8").read(),
        "results": json.dumps([bakes.results, verifies.results]),
        "log": bakes.output + verifies.output,
    }
    assert [place for place, text in places.items() if SECRET in text] == []


def test_rollout_with_trust_refuses_what_the_release_key_did_not_sign_and_changes_nothing(
        signed_project, service, proxy, docker_client):
    project, env, images, _bakes, _verifies = signed_project
    client = DockerClient()
    # an image whose attestation volume holds the hello image's statements: signed, but about another digest
    moved = client.commit(docker_client.api.create_container(images["plain"], command=["true"])["Id"],
                          image_name("moved"), "t", {"Labels": {}})
    store_image_attestations(client, moved, read_image_attestations(client, images["hello"]))
    record_verdict(client, moved, True, {"time": "test", "reference": moved})
    release = {"keys": ["release.pub"]}
    run = project.run([
        dict(rollout_task(service, images["plain"], proxy, trust=release), name="unsigned"),
        dict(rollout_task(service, images["hello"], proxy, trust={"keys": ["other.pub"]}), name="other key"),
        dict(rollout_task(service, images["web"], proxy, trust=release, require_verified=False), name="failed tests"),
        dict(rollout_task(service, moved, proxy, trust=release), name="other digest"),
    ], env=env)
    expected = {
        "unsigned": "it has no provenance attestation; it has no SBOM attestation; it has no test result attestation",
        "other key": "its provenance is signed by another key (",
        "failed tests": "its test result is failed (",
        "other digest": f"its provenance is about another digest ({images['hello'][7:19]}), not {moved[7:19]}",
    }
    for name, words in expected.items():
        result = run[name]
        assert result.get("failed") and " is not trusted: " in result["msg"] and words in result["msg"], result["msg"]
        assert result["msg"].endswith("Nothing was changed.") and result["msg"].count("\n") == 0
    assert "test_greeting_is_formal" in run["failed tests"]["msg"]
    assert docker_client.containers.list(all=True, filters={"label": f"immutable.infra.service={service}"}) == []
    servers = [line.split() for line in proxy.command("show servers state web").splitlines()[2:]]
    assert [fields[3] for fields in servers if len(fields) > 6 and fields[4] != "0.0.0.0"] == []  # all slots free


def test_rollout_with_trust_rolls_out_what_the_release_key_signed_and_history_names_the_key(
        signed_project, service, proxy):
    project, env, images, bakes, _verifies = signed_project
    trust = {"keys": ["other.pub", "release.pub"]}
    run = project.run([dict(rollout_task(service, images["hello"], proxy, trust=trust, replicas=1), name="rollout"),
                       {"name": "history", "immutable.infra.history": {"service": service}},
                       {"name": "attest", "immutable.infra.attest": {"image": images["hello"], "trust": trust,
                                                                     "sbom_dest": "hello.cdx.json"}}], env=env)
    assert run["rollout"]["changed"] and not run["rollout"].get("failed"), run["rollout"].get("msg")
    revision = run["history"]["revisions"][0]
    assert revision["signed_by"] == {"keys": [bakes["hello"]["signed_by"]], "checked": True}
    assert "SIGNED" in run["history"]["table"][1]
    attested = run["attest"]
    assert attested["trusted"] == {kind: bakes["hello"]["signed_by"] for kind in ("provenance", "sbom", "test_result")}
    assert attested["attestations"]["test_result"]["summary"]["result"] == "PASSED"
    with open(os.path.join(project.project, "hello.cdx.json"), encoding="utf-8") as handle:
        assert sbom.validation_errors(json.load(handle)) is None
