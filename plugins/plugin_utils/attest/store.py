# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where signed statements are kept, so that a second controller and users' tools find them.

- beside an image, on the engine: the volume immutable-infra-attestations-<image hex>, one label per
  kind holding its DSSE envelope (gzip, then base64) and one with the time it was stored. Every engine
  an image is shipped to gets a copy; of several copies the newest of each kind counts.
- beside a disk, as files: <disk stem>.<kind>.dsse.json (the envelopes) and <disk stem>.cdx.json (the
  SBOM itself, for scanners), like the sidecars of other image builders.
- in the ledger: record_summary() of the bake, verdict or disk record (the SBOM by its digest only).
- in a registry the image ships through: registry.py (cosign's layout).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, signed_key_ids
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.statements import KINDS
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, canonical_json, sha256_hex
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_ATTESTATION_PREFIX,
    LABEL_ATTESTED_AT_PREFIX,
    LABEL_IMAGE_ID,
    attestation_volume_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

SIDECAR_KINDS = {"provenance": "provenance", "sbom": "sbom", "test_result": "test-result"}
FULL_IN_LEDGER = ("provenance", "test_result")  # the SBOM is large: the ledger keeps its digest and summary


@dataclass
class Attestations:
    """The envelopes found for one subject, by kind, with when each was stored and where."""

    envelopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    times: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)

    def merged(self, newer: Attestations) -> Attestations:
        """These with newer's envelopes in place of the same kinds."""
        return Attestations({**self.envelopes, **newer.envelopes}, {**self.times, **newer.times},
                            {**self.where, **newer.where})


# on the engine ---------------------------------------------------------------------------------------
def encode_envelope(envelope: Mapping[str, Any]) -> str:
    return base64.b64encode(gzip.compress(canonical_json(envelope).encode("utf-8"), mtime=0)).decode("ascii")


def decode_envelope(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(gzip.decompress(base64.b64decode(text or "", validate=True)))
    except (ValueError, OSError, binascii.Error, EOFError):
        return None
    return value if isinstance(value, dict) else None


def to_labels(image_id: str, found: Attestations) -> dict[str, str]:
    labels = {LABEL_IMAGE_ID: image_id}
    for kind, envelope in found.envelopes.items():
        labels[LABEL_ATTESTATION_PREFIX + kind] = encode_envelope(envelope)
        labels[LABEL_ATTESTED_AT_PREFIX + kind] = found.times.get(kind, "")
    return labels


def from_labels(labels: Mapping[str, str] | None, where: str = "") -> Attestations:
    """The envelopes an attestation volume's labels hold; a damaged label reads as a damaged envelope
    ({}), which no key verifies, rather than as a missing one."""
    found = Attestations()
    for kind in KINDS:
        raw = (labels or {}).get(LABEL_ATTESTATION_PREFIX + kind)
        if raw is None:
            continue
        found.envelopes[kind] = decode_envelope(raw) or {}
        found.times[kind] = (labels or {}).get(LABEL_ATTESTED_AT_PREFIX + kind, "")
        found.where[kind] = where
    return found


def read_image_attestations(client: DockerClient, image_id: str, where: str = "") -> Attestations:
    return from_labels(client.volume_labels(attestation_volume_name(image_id)), where)


def store_image_attestations(client: DockerClient, image_id: str, new: Attestations) -> None:
    """Adds new's envelopes to those kept for the image on the engine (replacing the same kinds)."""
    kept = read_image_attestations(client, image_id)
    client.replace_volume(attestation_volume_name(image_id), to_labels(image_id, kept.merged(new)))


def newest(found: Mapping[str, Attestations]) -> Attestations:
    """One set from several engines' (engine name -> attestations, preferred first): per kind the newest;
    ties go to the first engine."""
    best = Attestations()
    for engine, attestations in found.items():
        for kind, envelope in attestations.envelopes.items():
            time = attestations.times.get(kind, "")
            if kind not in best.envelopes or time > best.times.get(kind, ""):
                best.envelopes[kind], best.times[kind] = envelope, time
                best.where[kind] = attestations.where.get(kind) or engine
    return best


def fleet_attestations(clients: Mapping[str, DockerClient], image_id: str) -> Attestations:
    return newest({name: read_image_attestations(client, image_id, f"engine {name}") for name, client in clients.items()})


def copy_attestations(clients: Mapping[str, DockerClient], image_id: str, targets: Sequence[str]) -> list[str]:
    """Gives each target engine the newest attestations of the image; returns the engines written to."""
    found = {name: read_image_attestations(client, image_id) for name, client in clients.items()}
    best = newest(found)
    written = []
    for target in targets:
        own = found.get(target) or Attestations()
        if best.envelopes and any(own.times.get(kind, "") < time for kind, time in best.times.items()):
            clients[target].replace_volume(attestation_volume_name(image_id), to_labels(image_id, best))
            written.append(target)
    return written


# beside a disk -----------------------------------------------------------------------------------------
def sidecar_path(disk: str, kind: str) -> str:
    return f"{disk.rsplit('.', 1)[0]}.{SIDECAR_KINDS[kind]}.dsse.json"


def sbom_path(disk: str) -> str:
    return f"{disk.rsplit('.', 1)[0]}.cdx.json"


def _write_json(path: str, value: Any) -> None:
    temporary = f"{path}.{uuid.uuid4().hex[:6]}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
    except OSError as error:
        raise InfraError(f"Cannot write {path}: {error.strerror}.") from None


def write_sidecars(disk: str, found: Attestations, sbom_document: Mapping[str, Any] | None = None) -> list[str]:
    """Writes each envelope (and the SBOM) beside the disk, each file replaced in one rename."""
    written = []
    for kind, envelope in found.envelopes.items():
        _write_json(sidecar_path(disk, kind), envelope)
        written.append(sidecar_path(disk, kind))
    if sbom_document is not None:
        _write_json(sbom_path(disk), sbom_document)
        written.append(sbom_path(disk))
    return written


def read_sidecars(disk: str) -> Attestations:
    found = Attestations()
    for kind in KINDS:
        path = sidecar_path(disk, kind)
        try:
            with open(path, encoding="utf-8") as handle:
                value = json.load(handle)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            value = {}
        found.envelopes[kind] = value if isinstance(value, dict) else {}
        found.times[kind] = ""
        found.where[kind] = os.path.basename(path)
    return found


# in the ledger -----------------------------------------------------------------------------------------
def record_summary(found: Attestations) -> dict[str, Any]:
    """What a ledger record keeps of the attestations it made: per kind the signer's keyid and the
    envelope's digest; provenance and test result in full."""
    summary: dict[str, Any] = {}
    for kind, envelope in found.envelopes.items():
        entry: dict[str, Any] = {"keyids": signed_key_ids(envelope), "sha256": sha256_hex(canonical_json(envelope)),
                                 "predicate_type": (envelope_statement(envelope) or {}).get("predicateType")}
        if kind in FULL_IN_LEDGER:
            entry["envelope"] = envelope
        summary[kind] = entry
    return summary
