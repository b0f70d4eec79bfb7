"""Keys (PKCS#8, SEC 1, encrypted PEM, cosign's encrypted format) and DSSE envelopes."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import dsse
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import (
    key_id,
    load_signing_key,
    load_verify_key,
    new_key_pair,
    pem_blocks,
    short_key_id,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError


@pytest.fixture(scope="module")
def pair():
    return new_key_pair()


@pytest.fixture(scope="module")
def cosign_pair():
    return new_key_pair("s3cret")  # scrypt makes each opening take ~0.1 s: one key for the module


def test_the_pre_authentication_encoding_is_dsse_v1():
    # The example of the DSSE v1 protocol description.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_a_signed_envelope_verifies_with_its_key_only(pair):
    key = load_signing_key(pair[0], None, "/")
    envelope = dsse.sign_envelope(b'{"_type": "x"}', key)
    assert envelope["payloadType"] == dsse.IN_TOTO_PAYLOAD_TYPE
    assert envelope["signatures"][0]["keyid"] == key.keyid
    assert dsse.signers(envelope, [key.public]) == [key.public]
    other = load_verify_key(new_key_pair()[1], "/", "key 1 of trust.keys")
    assert dsse.signers(envelope, [other]) == []
    tampered = dict(envelope, payload=base64.b64encode(b'{"_type": "y"}').decode())
    assert dsse.signers(tampered, [key.public]) == []
    retyped = dict(envelope, payloadType="application/json")
    assert dsse.signers(retyped, [key.public]) == []


@pytest.mark.parametrize("envelope", [None, {}, {"payload": "!!"}, {"payload": "e30=", "signatures": "x"},
                                      {"payload": "e30=", "signatures": [{"sig": "%%"}]}])
def test_a_damaged_envelope_has_no_signer(pair, envelope):
    key = load_signing_key(pair[0], None, "/")
    assert dsse.signers(envelope, [key.public]) == []


def test_an_envelope_carries_its_statement():
    envelope = {"payloadType": dsse.IN_TOTO_PAYLOAD_TYPE, "payload": base64.b64encode(b'{"a": 1}').decode()}
    assert dsse.envelope_statement(envelope) == {"a": 1}
    assert dsse.envelope_statement(dict(envelope, payloadType="text/plain")) is None


def test_keys_come_from_files_or_pem_text(tmp_path, pair):
    (tmp_path / "release.key").write_text(pair[0])
    (tmp_path / "release.pub").write_text(pair[1])
    from_file = load_signing_key("release.key", None, str(tmp_path))
    from_text = load_signing_key(pair[0], None, "/nowhere")
    assert from_file.keyid == from_text.keyid == load_verify_key("release.pub", str(tmp_path), "k").keyid
    assert from_file.keyid.startswith("sha256:") and len(short_key_id(from_file.keyid)) == 12


def test_a_cosign_key_opens_with_its_password_and_pairs_with_its_public_key(cosign_pair):
    private, public = cosign_pair
    assert pem_blocks(private)[0][0] == "ENCRYPTED COSIGN PRIVATE KEY"
    body = json.loads(pem_blocks(private)[0][1])
    assert body["kdf"]["name"] == "scrypt" and body["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert body["cipher"]["name"] == "nacl/secretbox"
    key = load_signing_key(private, "s3cret", "/")
    assert key.keyid == load_verify_key(public, "/", "k").keyid
    with pytest.raises(InfraError, match="cannot be opened with the password given"):
        load_signing_key(private, "wrong", "/")


def test_an_encrypted_pkcs8_key_needs_its_password():
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"pw")).decode()
    assert load_signing_key(pem, "pw", "/").keyid == key_id(private.public_key())
    with pytest.raises(InfraError, match="is encrypted; give its password in signing_key_password"):
        load_signing_key(pem, None, "/")
    with pytest.raises(InfraError, match="cannot be opened"):
        load_signing_key(pem, "nope", "/")


def test_a_sec1_key_is_read_too():
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    assert "BEGIN EC PRIVATE KEY" in pem and load_signing_key(pem, None, "/").keyid == key_id(private.public_key())


@pytest.mark.parametrize("private", [ec.generate_private_key(ec.SECP384R1()), ed25519.Ed25519PrivateKey.generate()])
def test_keys_other_than_p256_are_refused(private):
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    with pytest.raises(InfraError, match="not an ECDSA P-256 key"):
        load_signing_key(pem, None, "/")
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(InfraError, match="is not an ECDSA P-256 public key"):
        load_verify_key(public, "/", "key 1 of trust.keys")


def test_a_missing_key_file_and_a_private_key_as_public_key_are_clear_errors(tmp_path, pair):
    with pytest.raises(InfraError, match=r"Cannot read the key signing_key names \(.*/nope.pem\)"):
        load_signing_key("nope.pem", None, str(tmp_path))
    with pytest.raises(InfraError, match="key 2 of trust.keys .* is not a PEM public key"):
        load_verify_key(pair[0], "/", "key 2 of trust.keys")
