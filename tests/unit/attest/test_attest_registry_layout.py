"""Cosign's layout in a registry, built without a registry: the signature payload, its layer and manifest,
and what is signed again for the registry."""

from __future__ import annotations

import base64
import json

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import registry, statements
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, signers
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import load_signing_key, new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import sign_statement
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.publish import for_registry

MANIFEST = "sha256:" + "9f" * 32
IMAGE = "sha256:" + "ab" * 32
REPOSITORY = "127.0.0.1:23750/immutable-infra/images"


def test_the_signature_tag_and_payload_are_cosigns():
    assert registry.signature_tag(MANIFEST, "sig") == "sha256-" + "9f" * 32 + ".sig"
    payload = json.loads(registry.simple_signing_payload(REPOSITORY, MANIFEST))
    assert payload == {"critical": {"identity": {"docker-reference": REPOSITORY},
                                    "image": {"docker-manifest-digest": MANIFEST},
                                    "type": "cosign container image signature"}, "optional": None}


def test_a_signature_layer_verifies_with_the_key_over_its_bytes():
    key = load_signing_key(new_key_pair()[0], None, "/")
    layer = registry.signature_layer(key, REPOSITORY, MANIFEST)
    assert layer.media_type == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert registry.signature_verifies(layer.data, layer.annotations, key.public)
    other = load_signing_key(new_key_pair()[0], None, "/")
    assert not registry.signature_verifies(layer.data, layer.annotations, other.public)


def test_the_manifest_keeps_existing_layers_and_its_config_lists_them():
    key = load_signing_key(new_key_pair()[0], None, "/")
    existing = [registry.signature_layer(key, REPOSITORY, MANIFEST).descriptor()]
    envelope = sign_statement(key, [statements.subject("acme/web", IMAGE)], "sbom", {"bomFormat": "CycloneDX"})
    layer = registry.attestation_layer(envelope)
    assert layer.annotations == {"dev.cosignproject.cosign/signature": "", "predicateType": "https://cyclonedx.org/bom"}
    manifest, config = registry.manifest_for([layer], existing)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["config"]["digest"] == registry.digest_of(config)
    assert [entry["digest"] for entry in manifest["layers"]] == json.loads(config)["rootfs"]["diff_ids"]
    assert manifest["layers"][1]["mediaType"] == "application/vnd.dsse.envelope.v1+json"


def test_for_the_registry_an_attestation_of_the_key_also_names_the_manifest_digest():
    key = load_signing_key(new_key_pair()[0], None, "/")
    envelope = sign_statement(key, [statements.subject("acme/web", IMAGE)], "sbom", {"bomFormat": "CycloneDX"})
    again = for_registry(envelope, key, REPOSITORY, MANIFEST)
    assert statements.subject_digests(envelope_statement(again)) == [MANIFEST, IMAGE]
    assert signers(again, [key.public]) == [key.public]
    stranger = load_signing_key(new_key_pair()[0], None, "/")
    assert for_registry(envelope, stranger, REPOSITORY, MANIFEST) is envelope  # not ours to sign again
    assert base64.b64decode(again["payload"]) != base64.b64decode(envelope["payload"])
