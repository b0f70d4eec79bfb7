# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DSSE envelopes (Dead Simple Signing Envelope v1): what in-toto, cosign and SLSA sign statements with.

The signature covers the pre-authentication encoding "DSSEv1 <len> <payloadType> <len> <payload>", so
a payload can never be taken for another type. The payload travels base64-encoded in the envelope.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import SigningKey, VerifyKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> dict[str, Any]:
    signature = key.sign(pae(payload_type, payload))
    return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(signature).decode("ascii")}]}


def envelope_payload(envelope: Any) -> bytes | None:
    """The payload bytes of an envelope, or None when it is not one."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str):
        return None
    try:
        return base64.b64decode(envelope["payload"], validate=True)
    except (ValueError, binascii.Error):
        return None


def envelope_statement(envelope: Any) -> dict[str, Any] | None:
    """The in-toto statement an envelope carries, or None when it carries none."""
    payload = envelope_payload(envelope)
    if payload is None or envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
        return None
    try:
        statement = json.loads(payload)
    except ValueError:
        return None
    return statement if isinstance(statement, dict) else None


def signers(envelope: Any, keys: Sequence[VerifyKey]) -> list[VerifyKey]:
    """The keys among keys whose signature on the envelope verifies (none for a damaged envelope)."""
    payload = envelope_payload(envelope)
    signatures = envelope.get("signatures") if payload is not None else None
    if not isinstance(signatures, list):
        return []
    message = pae(str(envelope.get("payloadType")), payload or b"")
    found = []
    for key in keys:
        for entry in signatures:
            try:
                signature = base64.b64decode(entry.get("sig") or "", validate=True)
            except (ValueError, binascii.Error, AttributeError):
                continue
            if key.verifies(signature, message):
                found.append(key)
                break
    return found


def signature_count(envelope: Any) -> int:
    signatures = envelope.get("signatures") if isinstance(envelope, dict) else None
    return len([entry for entry in signatures or [] if isinstance(entry, dict) and entry.get("sig")])


def signed_key_ids(envelope: Any) -> list[str]:
    """The keyids an envelope's signatures claim (unverified: for messages and history only)."""
    signatures = envelope.get("signatures") if isinstance(envelope, dict) else None
    return [str(entry.get("keyid")) for entry in signatures or [] if isinstance(entry, dict) and entry.get("keyid")]
