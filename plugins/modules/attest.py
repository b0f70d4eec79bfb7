#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: attest
short_description: Show the signed provenance, SBOM and test result of an image or disk, and check them against keys
version_added: 0.1.0
description:
  - Reads the signed statements about an image (kept beside it on the Docker engine by M(immutable.infra.bake)
    and M(immutable.infra.verify) with their O(immutable.infra.bake#module:signing_key)) or a VM disk (the
    C(*.dsse.json) files M(immutable.infra.disk) and M(immutable.infra.verify) write beside it), and reports what
    they say - the SBOM in summary (components, Debian and Python packages, the operating system, the roles
    with their digests), the provenance (build type, parameters with variable names only, resolved dependencies,
    git commit, builder), and the test result (result, passed and failed tests, test files by digest, where they
    ran) - with the keys each claims to be signed by.
  - With O(trust), it makes the same check as the trust gate of M(immutable.infra.rollout) and
    M(immutable.infra.rollback) and fails with the same sentence when the image or disk would be refused.
  - The statements are in-toto statements v1 in DSSE envelopes (docs/attestations.md), so C(cosign),
    C(in-toto) and policy engines read them too.
author:
  - immutable.infra contributors (@immutable-infra)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - immutable.infra.action
  - immutable.infra.trust
attributes:
  check_mode:
    support: full
    details: The module only reads; with O(sbom_dest) check mode says whether the file would change.
  diff_mode:
    support: none
options:
  image:
    description: The image (a reference or its ID) whose statements to show. Give O(image) or O(disk).
    type: str
  disk:
    description: A disk built by M(immutable.infra.disk) whose statements (the files beside it) to show.
    type: path
  sbom_dest:
    description: Write the SBOM (the CycloneDX JSON document) to this file too, for scanners.
    type: path
notes:
  - O(trust) is optional here; without it nothing is verified and the module only reports what is claimed.
seealso:
  - module: immutable.infra.rollout
  - module: immutable.infra.bake
"""

EXAMPLES = r"""
- name: Show and check what the release image's attestations say
  immutable.infra.attest:
    image: "{{ baked.image_id }}"
    trust:
      keys: [keys/release.pub]
    sbom_dest: "{{ playbook_dir }}/sbom.cdx.json"
  register: attested

- name: Check a disk against the release key
  immutable.infra.attest:
    disk: "{{ disk.disk }}"
    trust:
      keys: [keys/release.pub]
      require: [provenance, sbom]
"""

RETURN = r"""
subject:
  description: The digest the statements must name, the image ID or the disk file's sha256.
  returned: always
  type: str
  sample: sha256:384e687b06ab0c2d5c1f8e0a6a1ad4d2b13f4f3f4c1d9b7e5c5e0b1d6f0a9e21
attestations:
  description:
    - Per kind (C(provenance), C(sbom), C(test_result)), what was found. Nothing here is verified unless
      O(trust) is given and RV(trusted) is returned.
  returned: always
  type: dict
  contains:
    provenance:
      description: C(present), the C(keyids) its signatures claim, its C(subjects), C(where) it was found,
        when it was C(stored), and a C(summary) of the SLSA provenance.
      type: dict
    sbom:
      description: As for provenance; the C(summary) counts components and names the roles.
      type: dict
    test_result:
      description: As for provenance; the C(summary) has the result, passed and failed tests and test files.
      type: dict
trusted:
  description: The key ID that verified each required statement (with O(trust) only).
  returned: when trust is given and every required statement passes
  type: dict
  sample: {provenance: "sha256:5f1c...", sbom: "sha256:5f1c...", test_result: "sha256:5f1c..."}
sbom_dest:
  description: Where the SBOM was written.
  returned: when sbom_dest is given
  type: str
msg:
  description: The report in a few lines.
  returned: always
  type: list
  elements: str
"""
