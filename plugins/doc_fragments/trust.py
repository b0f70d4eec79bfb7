# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The gate on keys of rollout and rollback (plugin_utils/attest/trust.py TRUST_OPTION).
    DOCUMENTATION = r"""
options:
  trust:
    description:
      - Trust keys, not labels. With it, the image is refused unless each statement in O(trust.require) about it
        is signed by one of O(trust.keys), names the image's exact ID as its subject, and, for the test result,
        says C(PASSED). The statements are those M(immutable.infra.bake) and M(immutable.infra.verify) signed with
        their O(immutable.infra.bake#module:signing_key), read from the engines (the newest of each kind).
      - For VM hosts (O(immutable.infra.rollout#module:disk)) the disk is judged the same way, by the statements
        M(immutable.infra.disk) and M(immutable.infra.verify) signed about its sha256, read from the sidecar files
        beside the disk, or for a disk named by digest from the copy each hypervisor keeps.
      - An image that has no such statement, whose statement is unsigned, signed by another key, about another
        digest, or whose test result failed, is refused with one sentence naming every problem, and nothing is
        changed. The keys of the signatures that passed go into the rollout's ledger record (C(trusted)), and
        M(immutable.infra.history) shows them.
      - Without it the gate is the verdict gate alone (O(immutable.infra.rollout#module:require_verified)), as before.
    type: dict
    suboptions:
      keys:
        description:
          - The public keys whose signatures are trusted (PEM C(PUBLIC KEY), ECDSA P-256, such as C(cosign.pub)), as
            paths of PEM files (relative to the playbook's directory) or the PEM text itself.
        type: list
        elements: str
        required: true
      require:
        description: The statements every image must have.
        type: list
        elements: str
        choices: [provenance, sbom, test_result]
        default: [provenance, sbom, test_result]
"""
