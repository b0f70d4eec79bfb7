# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gate that trusts keys, not labels: an image or a disk passes only when each required statement
about it is signed by one of the trusted keys, names its exact digest as subject, and (for the test
result) says PASSED.

check_attestations() is the one check; the rollout and rollback gate (require_trusted), the attest
module and verify's report all call it. It is pure: envelopes and keys in, the signers or one
sentence out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import dsse
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import VerifyKey, load_verify_key, short_key_id
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.statements import (
    KINDS,
    PREDICATE_TYPES,
    subject_digests,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import Attestations, fleet_attestations
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

TRUST_OPTION: dict[str, Any] = {"type": "dict", "options": {
    "keys": {"type": "list", "elements": "str", "required": True, "no_log": False},
    "require": {"type": "list", "elements": "str", "choices": list(KINDS), "default": list(KINDS)},
}}
LABELS = {"provenance": "provenance", "sbom": "SBOM", "test_result": "test result"}
SHOWN_TESTS = 3


@dataclass(frozen=True)
class Trust:
    keys: tuple[VerifyKey, ...]
    require: tuple[str, ...]


def parse_trust(raw: Mapping[str, Any] | None, basedir: str, option: str = "trust") -> Trust | None:
    """The trust option: None when it is not given (the gate then behaves as it did without it)."""
    if not raw:
        return None
    given = [value for value in raw.get("keys") or [] if value and value.strip()]
    if not given:
        raise InfraError(f"{option}.keys is empty; give the public key(s) whose signatures are trusted "
                         "(PEM files or PEM text), or leave out trust.")
    keys = tuple(load_verify_key(value, basedir, f"key {number} of {option}.keys")
                 for number, value in enumerate(given, start=1))
    require = tuple(dict.fromkeys(raw.get("require") or KINDS))
    return Trust(keys, require)


def _test_problem(statement: Mapping[str, Any]) -> str | None:
    predicate = statement.get("predicate") or {}
    if predicate.get("result") == "PASSED":
        return None
    failed = [str(name) for name in predicate.get("failedTests") or []]
    named = f" ({', '.join(failed[:SHOWN_TESTS])}{', ...' if len(failed) > SHOWN_TESTS else ''})" if failed else ""
    return f"its test result is {str(predicate.get('result') or 'missing').lower()}{named}"


def problem(kind: str, envelope: Mapping[str, Any] | None, subject: str, keys: Sequence[VerifyKey]
            ) -> tuple[str | None, VerifyKey | None]:
    """(what is wrong with one kind's envelope, or None; the trusted key that signed it)."""
    label = LABELS[kind]
    if envelope is None:
        return f"it has no {label} attestation", None
    statement = dsse.envelope_statement(envelope)
    if statement is None or statement.get("predicateType") != PREDICATE_TYPES[kind]:
        return f"its {label} attestation is damaged or is not a {PREDICATE_TYPES[kind]} statement", None
    if not dsse.signature_count(envelope):
        return f"its {label} is unsigned", None
    signers = dsse.signers(envelope, keys)
    if not signers:
        claimed = ", ".join(short_key_id(keyid) for keyid in dsse.signed_key_ids(envelope))
        return f"its {label} is signed by another key{f' ({claimed})' if claimed else ''}, not by a trusted key", None
    digests = subject_digests(statement)
    if subject.lower() not in digests:
        about = ", ".join(short_id(digest) for digest in digests) or "no digest"
        return f"its {label} is about another digest ({about}), not {short_id(subject)}", signers[0]
    if kind == "test_result":
        return _test_problem(statement), signers[0]
    return None, signers[0]


def check_attestations(subject: str, described: str, found: Attestations, trust: Trust) -> dict[str, str]:
    """{kind: keyid of the trusted key that signed it} for every required kind, or one sentence naming
    every problem. subject: sha256:<hex> of the image ID or disk file; described: how to name it."""
    problems, signed = [], {}
    for kind in trust.require:
        wrong, signer = problem(kind, found.envelopes.get(kind), subject, trust.keys)
        if wrong:
            problems.append(wrong)
        elif signer is not None:
            signed[kind] = signer.keyid
    if problems:
        raise InfraError(f"{described} is not trusted: {'; '.join(problems)}. Nothing was changed.",
                         untrusted=problems)
    return signed


def require_trusted(clients: Mapping[str, DockerClient], reference: str, image: Mapping[str, Any],
                    raw: Mapping[str, Any] | None, basedir: str) -> dict[str, Any]:
    """The rollout's gate on keys: {} without trust; else the signers, as fields of the rollout's ledger
    record, or one sentence when the image's attestations on the engines do not pass."""
    trust = parse_trust(raw, basedir)
    if trust is None:
        return {}
    image_id = str(image["Id"])
    described = f"Image {image_id if reference == image_id else f'{reference} ({short_id(image_id)})'}"
    signed = check_attestations(image_id, described, fleet_attestations(clients, image_id), trust)
    return {"trusted": signed}
