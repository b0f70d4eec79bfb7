"""Signed provenance, SBOM and test results against a real engine: images baked and verified with a key (cosign's
encrypted format), the SBOM checked against the CycloneDX schema and listing what a role installed, no variable
value anywhere, and rollout with trust: refusing what the trusted key did not sign (nothing changed) and rolling
out what it did, with history naming the key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid

import pytest
from engines_support import remove_everywhere, rig_or_skip
from rollout_support import DEMO_DIR, HELLO_CONFIG, rollout_task
from support import BASE_IMAGE, REPO_ROOT, Playbooks, image_name, skip_unless_required

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, signers
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import load_verify_key, new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.registry import (
    RegistryAPI,
    signature_tag,
    signature_verifies,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.statements import PREDICATE_TYPES, subject_digests
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import (
    read_image_attestations,
    store_image_attestations,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.trust import require_trusted
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    attestation_volume_name,
    verdict_volume_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import Fleet, plan_ship, ship
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import parse_registry
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
    nonce = bake_nonce(project)
    hello = dict(signing, name=image_name("signed-hello"), base=BASE_IMAGE, roles=["hello"], config=HELLO_CONFIG,
                 vars={"db_password": SECRET, "test_nonce": nonce})
    web = dict(signing, name=image_name("signed-web"), base=BASE_IMAGE, roles=["web"],
               vars={"web_version": "2.0", "test_nonce": nonce}, config={"cmd": ["nginx", "-g", "daemon off;"]})
    plain = {"name": image_name("plain-hello"), "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG,
             "vars": {"test_nonce": nonce}}
    bakes = project.run([{"name": name, "immutable.infra.bake": task}
                         for name, task in (("hello", hello), ("web", web), ("plain", plain))], env=env)
    for name in ("hello", "web", "plain"):
        assert not bakes[name].get("failed"), bakes[name].get("msg")
    images = {name: bakes[name]["image_id"] for name in ("hello", "web", "plain")}
    hello_tests = [os.path.join(DEMO_DIR, "tests", "test_hello.py")]
    failing_tests = [os.path.join(FIXTURES, "verify_project", "tests", "failing")]
    verifies = project.run([
        {"name": "hello", "immutable.infra.verify": dict(signing, image=images["hello"], tests=hello_tests)},
        {"name": "web", "immutable.infra.verify": dict(signing, image=images["web"], tests=failing_tests)},
    ], env=env)
    assert verifies["hello"]["passed"], verifies["hello"].get("msg")
    assert verifies["web"]["passed"] is False and verifies["web"]["signed_by"]
    assert verifies["hello"]["attestations"]["test_result"]["keyids"] == [verifies["hello"]["signed_by"]]
    record_verdict(DockerClient(), images["plain"], True, {"time": "test", "reference": images["plain"]})
    return project, env, images, bakes, verifies


def bake_nonce(project: Playbooks) -> str:
    """One nonce per project, so that a bake of the same role and vars again finds the image."""
    path = os.path.join(project.project, "nonce")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(uuid.uuid4().hex)
    with open(path, encoding="utf-8") as handle:
        return handle.read()


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


def test_an_image_reused_by_a_signed_bake_that_its_key_did_not_sign_is_named(signed_project):
    project, env, images, _bakes, _verifies = signed_project
    again = project.run([{"name": "again", "immutable.infra.bake": {
        "name": image_name("plain-hello"), "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG,
        "vars": {"test_nonce": bake_nonce(project)}, "signing_key": "release.key",
        "signing_key_password": PASSWORD}}], env=env)["again"]
    assert again["cache_hit"] and again["image_id"] == images["plain"] and not again["changed"]
    assert any("that signing_key did not sign" in warning and "force: true" in warning
               for warning in again.get("warnings") or []), again.get("warnings")


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
    container = docker_client.api.create_container(images["plain"], command=["true"])["Id"]
    try:
        moved = client.commit(container, image_name("moved"), "t", {"Labels": {}})
    finally:
        docker_client.api.remove_container(container)
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


# shipped through a registry: what skopeo (upstream, with sigstore) says, and what the gate says ------------------
SKOPEO = os.path.join(os.path.dirname(REPO_ROOT), "shared", "tools", "skopeo-1.10.0", "skopeo")


def skopeo(directory: str, reference: str, public_key: str, *extra: str) -> subprocess.CompletedProcess:
    """skopeo copy of reference to a directory under a policy that requires a sigstore signature by public_key."""
    registries = os.path.join(directory, "registries.d")
    os.makedirs(registries, exist_ok=True)
    with open(os.path.join(registries, "default.yaml"), "w", encoding="utf-8") as handle:
        handle.write("default-docker:\n  use-sigstore-attachments: true\n")
    policy = os.path.join(directory, f"policy-{uuid.uuid4().hex[:6]}.json")
    with open(policy, "w", encoding="utf-8") as handle:
        json.dump({"default": [{"type": "reject"}], "transports": {
            "docker": {"": [{"type": "sigstoreSigned", "keyPath": public_key,
                             "signedIdentity": {"type": "matchRepository"}}]},
            "dir": {"": [{"type": "insecureAcceptAnything"}]}}}, handle)
    target = extra[0] if extra else f"dir:{os.path.join(directory, uuid.uuid4().hex[:8])}"
    return subprocess.run([SKOPEO, "--registries.d", registries, "copy", "--policy", policy, "--src-tls-verify=false",
                           "--dest-tls-verify=false", *extra[1:], f"docker://{reference}", target],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)


@pytest.fixture
def registry_fleet(signed_project):
    if not os.access(SKOPEO, os.X_OK):
        skip_unless_required(f"the upstream skopeo is not at {SKOPEO} (shared/tools beside the checkout)")
    description, engines, clients = rig_or_skip()
    project, _env, images, _bakes, _verifies = signed_project
    local = DockerClient(None)
    fleet_engines = engines[:2]
    fleet_clients = {engine.name: clients[engine.name] for engine in fleet_engines}

    def fleet(signing: bool) -> Fleet:
        extra = {"signing_key": os.path.join(project.project, "release.key"), "signing_key_password": PASSWORD}
        registry = parse_registry(dict({"address": description["registry"], "repository": REPOSITORY},
                                       **(extra if signing else {})))
        return Fleet(fleet_engines, fleet_clients, registry=registry, transfer="registry", local=local)

    yield fleet, images, project.project, fleet_clients
    for image_id in (images["hello"], images["plain"]):
        remove_everywhere(fleet_clients, image_id)
        for client in fleet_clients.values():
            client.remove_volume(attestation_volume_name(image_id))
            client.remove_volume(verdict_volume_name(image_id))


REPOSITORY = f"itest/attest-{uuid.uuid4().hex[:8]}"


@pytest.mark.rig
def test_shipped_through_a_registry_skopeo_and_the_gate_agree_on_every_key(registry_fleet, tmp_path):
    fleet, images, keys, clients = registry_fleet
    names = list(clients)
    signed = ship(fleet(True), plan_ship(fleet(True), images["hello"], names), lambda message: None)
    unsigned = ship(fleet(False), plan_ship(fleet(False), images["plain"], names), lambda message: None)
    assert signed["attestations"]["registry"]["signatures"] == 1
    assert signed["attestations"]["registry"]["attestations"] == 3
    assert unsigned["attestations"]["registry"] == {"signatures": 0, "attestations": 0, "signed_by": None,
                                                    "reference": f"{fleet(False).registry.address}/{REPOSITORY}@"
                                                                 f"{unsigned['digest']}"}
    repository = f"{fleet(True).registry.address}/{REPOSITORY}"
    release, other = os.path.join(keys, "release.pub"), os.path.join(keys, "other.pub")
    outcomes = {
        "signed, release key": skopeo(str(tmp_path), f"{repository}@{signed['digest']}", release),
        "signed, other key": skopeo(str(tmp_path), f"{repository}@{signed['digest']}", other),
        "unsigned, release key": skopeo(str(tmp_path), f"{repository}@{unsigned['digest']}", release),
    }
    assert outcomes["signed, release key"].returncode == 0, outcomes["signed, release key"].stdout
    assert "cryptographic signature verification failed" in outcomes["signed, other key"].stdout
    assert "A signature was required, but no signature exists" in outcomes["unsigned, release key"].stdout
    assert [outcome.returncode != 0 for outcome in outcomes.values()] == [False, True, True]

    # the gate, on an engine the images were shipped to (their attestations went with them), agrees
    engine = {names[1]: clients[names[1]]}
    gate = {}
    for case, image, key in (("signed, release key", images["hello"], release), ("signed, other key", images["hello"], other),
                             ("unsigned, release key", images["plain"], release)):
        try:
            require_trusted(engine, image, {"Id": image}, {"keys": [key]}, "/")
            gate[case] = True
        except InfraError:
            gate[case] = False
    assert gate == {case: outcome.returncode == 0 for case, outcome in outcomes.items()}

    # cosign's attestations: each signed again by the release key, naming the manifest digest and the image ID
    api = RegistryAPI(f"http://{fleet(True).registry.address}/v2/", REPOSITORY)
    layers = api.layers(signature_tag(signed["digest"], "att"))
    release_key = load_verify_key(release, "/", "release")
    assert sorted(entry["annotations"]["predicateType"] for entry, _data in layers) == sorted(PREDICATE_TYPES.values())
    for _entry, data in layers:
        envelope = json.loads(data)
        assert signers(envelope, [release_key]) and \
            subject_digests(envelope_statement(envelope)) == [signed["digest"], images["hello"]]


@pytest.mark.rig
def test_a_cosign_format_key_of_ours_signs_with_skopeo_and_its_signature_verifies_here(registry_fleet, tmp_path):
    fleet, images, keys, clients = registry_fleet
    shipped = ship(fleet(False), plan_ship(fleet(False), images["plain"], list(clients)), lambda message: None)
    address = fleet(False).registry.address
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSWORD)
    copied = skopeo(str(tmp_path), f"{address}/{REPOSITORY}@{shipped['digest']}", os.path.join(keys, "release.pub"),
                    f"docker://{address}/{REPOSITORY}-skopeo:signed", "--insecure-policy",
                    "--sign-by-sigstore-private-key", os.path.join(keys, "release.key"),
                    "--sign-passphrase-file", str(passphrase))
    assert copied.returncode == 0, copied.stdout
    api = RegistryAPI(f"http://{address}/v2/", f"{REPOSITORY}-skopeo")
    digest = api.digest("signed")
    ((entry, data),) = api.layers(signature_tag(digest, "sig"))
    assert json.loads(data)["critical"]["image"]["docker-manifest-digest"] == digest
    assert signature_verifies(data, entry["annotations"], load_verify_key(os.path.join(keys, "release.pub"), "/", "k"))
