# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The key bake, verify and disk sign their statements with (plugin_utils/attest/signing.py SIGNING_OPTIONS).
    DOCUMENTATION = r"""
options:
  signing_key:
    description:
      - An ECDSA P-256 private key to sign this task's statements with (docs/attestations.md), given as the path of a
        PEM file (relative to the playbook's directory) or the PEM text itself, for example a variable kept in
        Ansible Vault. PKCS#8 or SEC 1 PEM, encrypted or not, and cosign's encrypted key format
        (C(cosign generate-key-pair)) are read.
      - M(immutable.infra.bake) signs the image's SLSA v1 provenance and its CycloneDX SBOM,
        M(immutable.infra.verify) the test result, M(immutable.infra.disk) the disk's provenance and SBOM; each
        is an in-toto statement in a DSSE envelope, kept beside the image on the engine (or beside the disk as
        files) and summed up in the ledger.
      - Without it nothing is signed and the task does what it did before; the rollout's O(ignore:trust) gate
        then refuses the image.
    type: str
  signing_key_password:
    description:
      - The password of an encrypted O(signing_key) (cosign's C(COSIGN_PASSWORD)). Kept out of logs and results.
    type: str
"""
