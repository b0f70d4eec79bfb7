# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attestations travel with a shipped image: to every engine it reached (the gate there, a second
controller), and into the registry it went through, in cosign's layout.

With registry.signing_key, the registry gets a signature of the pushed manifest digest (.sig), and each
attestation signed by that same key is signed again naming the manifest digest too, so that cosign's
verify-attestation (which matches subjects with the manifest digest) accepts it; an attestation signed
by another key is pushed as it is. Without a signing key, the attestations are pushed as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import registry as cosign
from ansible_collections.immutable.infra.plugins.plugin_utils.attest import statements
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, sign_envelope, signers
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import SigningKey
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import signing_key_from
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import copy_attestations, fleet_attestations
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import Registry, ShipPlan


def for_registry(envelope: dict[str, Any], key: SigningKey, docker_reference: str, manifest_digest: str
                 ) -> dict[str, Any]:
    """The envelope as the registry keeps it: signed again naming the manifest digest first, when key
    signed it; else unchanged."""
    statement = envelope_statement(envelope)
    if statement is None or not signers(envelope, [key.public]):
        return envelope
    subjects = [statements.subject(docker_reference, manifest_digest),
                *[entry for entry in statement.get("subject") or [] if isinstance(entry, dict)]]
    return sign_envelope(statements.statement_bytes(dict(statement, subject=subjects)), key)


def push_to_registry(clients: Mapping[str, DockerClient], image_id: str, manifest_digest: str, registry: Registry,
                     basedir: str = ".") -> dict[str, Any]:
    """Pushes the signature (with a signing key) and the attestations of a pushed image; returns what went."""
    key = signing_key_from({"signing_key": registry.signing_key, "signing_key_password": registry.signing_key_password},
                           basedir, "registry.")
    repository, _tag = registry.reference(image_id)
    api = cosign.RegistryAPI(registry.url, registry.repository, registry.username, registry.password, registry.ca_cert)
    found = fleet_attestations(clients, image_id)
    pushed: dict[str, Any] = {"signatures": 0, "attestations": 0, "reference": f"{repository}@{manifest_digest}"}
    if key is not None:
        layer = cosign.signature_layer(key, repository, manifest_digest)
        pushed["signatures"] = api.attach(cosign.signature_tag(manifest_digest, "sig"), [layer], key.public)
    envelopes = [for_registry(envelope, key, repository, manifest_digest) if key else envelope
                 for envelope in found.envelopes.values() if envelope]
    if envelopes:
        layers = [cosign.attestation_layer(envelope) for envelope in envelopes]
        pushed["attestations"] = api.attach(cosign.signature_tag(manifest_digest, "att"), layers,
                                            key.public if key else None)
    pushed["signed_by"] = key.keyid if key else None
    return pushed


def publish_shipped(clients: Mapping[str, DockerClient], plan: ShipPlan, manifest_digest: str | None,
                    registry: Registry | None, progress: Callable[[str], None] = lambda message: None
                    ) -> dict[str, Any] | None:
    """After ship_image: the attestations to the engines the image reached, and into the registry it
    went through. None when the image went nowhere."""
    if not plan.targets:
        return None
    copied = copy_attestations(clients, plan.image_id, plan.targets)
    result: dict[str, Any] = {"engines": copied}
    if plan.method == "registry" and registry is not None and manifest_digest:
        result["registry"] = push_to_registry(clients, plan.image_id, manifest_digest, registry)
        pushed = result["registry"]
        if pushed["signatures"] or pushed["attestations"]:
            progress(f"image {short_id(plan.image_id)}: {pushed['signatures']} signature(s) and "
                     f"{pushed['attestations']} attestation(s) pushed to {registry.address} beside it")
    return result
