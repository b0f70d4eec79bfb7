#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: verify
short_description: Prove an image in a throwaway host with testinfra or Molecule, and record the verdict against its ID
version_added: 0.1.0
description:
  - Resolves O(image) to its image ID, starts a throwaway host from exactly that ID (with the image's
    own command, or a keep-alive when it has none or O(keep_alive=true)), waits until the host listens
    on the image's exposed TCP ports, and runs pytest-testinfra on O(tests) against it through the
    docker backend. The host is removed whatever happens, including when the play is interrupted with Ctrl-C.
  - The verdict follows the JUnit XML report of the run. It passes when every test passed (skipped
    tests do not fail it) and fails when any test failed or errored. The task fails with a message that
    names each failing test with its assertion message; the report is kept in O(report_dir).
  - An image whose command exits, or whose host does not listen on its ports within O(start_timeout),
    is reported as B(broken) with the exit code and the last lines of its log, and gets a failed verdict.
  - With O(idempotence=true) the roles the image was baked from are applied again in a second throwaway
    host, and every task that reports a change fails the verdict. With O(molecule_scenario) a Molecule
    scenario runs against the image, whose ID it reads from the environment variable O(molecule_image_env).
  - Every verdict is bound to the image ID, never to a tag. It is appended to the ledger and recorded on
    the Docker engine (a labelled volume named after the image ID), where the rollout gate
    C(require_verified) checks it. A tag moved to another image since is therefore unverified.
  - Several test files run in parallel with pytest-xdist, up to one worker per core (see O(parallel)).
author:
  - immutable.infra contributors (@immutable-infra)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - immutable.infra.action
  - immutable.infra.signing
attributes:
  check_mode:
    support: full
    details: Starts no host and records nothing; resolves the image, checks the tests paths and the
      scenario, and reports what would run and the image's current verdict.
  diff_mode:
    support: none
options:
  image:
    description:
      - The image to verify, by ID or reference. A reference is resolved to its image ID first; the
        verdict belongs to that ID, and the reference is recorded with it.
      - Give either O(image) or O(disk).
    type: str
  disk:
    description:
      - A disk built by M(immutable.infra.disk) (the disk file or its manifest) to verify by booting
        it. It boots as a throwaway VM under qemu (from a copy-on-write overlay, the disk is never
        written), with a seed drive giving it a host name and an SSH key made for this verify, and
        user-mode networking forwarding loopback ports to the guest's port 22 and to O(wait_for_ports)
        (by default the image's exposed ports).
      - Once SSH answers and the ports listen, O(tests) run against the VM through testinfra's ssh
        backend. E(IMMUTABLE_INFRA_FORWARDED_PORTS) holds the forwarded ports as JSON (guest port to
        loopback port) for tests that reach the service from the controller.
      - The disk's SHA-256 digest is checked against its manifest first, and the verdict is bound to
        it, in the ledger (kind C(disk_verdict)) and in the manifest. The VM is always stopped and its
        overlay removed, Ctrl-C included.
      - O(molecule_scenario), O(idempotence), O(roles), O(keep_alive) and O(network) apply to images only.
    type: path
  accel:
    description:
      - How qemu runs the VM with O(disk). V(auto) uses KVM when it really boots a Linux guest on this
        machine (tried once, then remembered in C(~/.cache/immutable-infra/accel.json)), else plain
        emulation (TCG).
    type: str
    default: auto
    choices: [auto, kvm, tcg]
  memory:
    description:
      - Memory of the VM with O(disk), in MiB.
    type: int
    default: 1024
  boot_timeout:
    description:
      - Seconds the VM with O(disk) may take until its SSH server answers.
    type: int
    default: 300
  tests:
    description:
      - testinfra test files or directories, relative to the playbook. Directories are searched for
        C(test_*.py) and C(*_test.py) like pytest does, and their C(conftest.py) files apply.
      - A path that does not exist, or a directory without test files, is an error before any host starts.
      - The tests get a C(host) fixture connected to the throwaway host as O(exec_user), and the
        environment variables E(IMMUTABLE_INFRA_IMAGE_ID) and E(IMMUTABLE_INFRA_HOST) (the container ID).
    type: list
    elements: path
    default: []
  molecule_scenario:
    description:
      - A Molecule scenario directory, C(molecule/<name>) or C(extensions/molecule/<name>) relative to the
        playbook, to run with C(molecule test) against the image. Its C(molecule.yml) reads the image ID
        from the environment variable O(molecule_image_env) for its platform image, with
        C(pre_build_image) set to true. The scenario fails the verdict when C(molecule test) fails.
    type: path
  molecule_image_env:
    description: Environment variable that carries the image ID to the Molecule scenario.
    type: str
    default: MOLECULE_IMAGE
  idempotence:
    description:
      - Apply the roles the image was baked from again, in a throwaway host started from the image with
        the same stand-ins for a booted server that the bake uses (enabled services count as running),
        and fail the verdict for every task that reports a change.
    type: bool
    default: false
  roles:
    description:
      - Roles to apply for O(idempotence). By default the roles of the image's C(immutable.infra.roles)
        label (versions removed), resolved as in a play next to this playbook.
    type: list
    elements: str
  vars:
    description:
      - Variables for the roles applied for O(idempotence). Images do not store the variables of their
        bake, so give the same ones here.
    type: dict
    default: {}
  timeout:
    description: Seconds the whole verify may take. Tests still running then fail the verdict.
    type: int
    default: 300
  start_timeout:
    description: Seconds the host may take to listen on the ports of O(wait_for_ports) before it is reported as broken.
    type: int
    default: 30
  wait_for_ports:
    description:
      - TCP ports the host must listen on before the tests start. By default the image's exposed TCP
        ports; V([]) starts the tests at once.
    type: list
    elements: int
  keep_alive:
    description:
      - Run a keep-alive instead of the image's command, for images whose command is an interactive
        shell or a one-shot job.
    type: bool
    default: false
  exec_user:
    description: User the tests' commands run as in the host (C(docker exec -u)).
    type: str
    default: root
  parallel:
    description:
      - How several test files run. V(always) runs them in pytest-xdist workers, one per file up to the
        number of cores; V(never) runs them in one process.
      - V(auto) runs them in parallel unless the last verify of the same files showed that one process
        finishes sooner (all files but the slowest took less than a second together).
    type: str
    choices: [auto, always, never]
    default: auto
  pytest_args:
    description: Extra pytest arguments, for example V([-k, web]) or V([-x]).
    type: list
    elements: str
    default: []
  report_dir:
    description:
      - Directory for the JUnit XML reports (and Molecule logs), relative to the playbook. By default
        C(reports/) next to the ledger.
    type: path
  network:
    description: Docker network of the throwaway hosts; the engine's default when not set.
    type: str
  python_interpreter:
    description: Python interpreter in the host used by Ansible modules for O(idempotence).
    type: str
    default: /usr/bin/python3
  become_method:
    description: Become method for tasks with C(become) during O(idempotence).
    type: str
    default: su
notes:
  - testinfra's docker backend runs the C(docker) command on the controller, so the Docker CLI must be installed there.
  - The task reports C(changed) when the verdict changes what the gate decides for the image, that is
    for a first verdict or one that differs from the previous.
seealso:
  - module: immutable.infra.bake
  - name: testinfra
    description: Writing testinfra tests.
    link: https://testinfra.readthedocs.io/
"""

EXAMPLES = r"""
- name: Bake the web roles into an image
  immutable.infra.bake:
    name: acme/web
    base: debian:bookworm
    roles: [nginx]
    config:
      cmd: [nginx, -g, daemon off;]
      exposed_ports: ["80/tcp"]
  register: baked

- name: Verify the exact image that was baked
  immutable.infra.verify:
    image: "{{ baked.image_id }}"
    tests: [tests/image/]
  register: verdict

- name: Show the verdict
  ansible.builtin.debug:
    msg: "{{ verdict.tests.passed }}/{{ verdict.tests.total }} passed in {{ verdict.duration }} s, report {{ verdict.report }}"

- name: Also apply the roles again and run the team's Molecule scenario against the image
  immutable.infra.verify:
    image: "{{ baked.image_id }}"
    tests: [tests/image/test_nginx.py, tests/image/test_tls.py]
    idempotence: true
    molecule_scenario: molecule/web
    timeout: 600
  register: verdict

- name: What would be verified, without starting anything
  immutable.infra.verify:
    image: acme/web:5b1e0c9d2f4a
    tests: [tests/image/]
  check_mode: true
"""

RETURN = r"""
signed_by:
  description: The key ID (sha256 of the public key) of O(signing_key), which signed the test result.
  returned: when signing_key is given
  type: str
  sample: sha256:830d9f3976519c0f3be4a4b5e2b8f2a7d4e0c1b2a3f4e5d6c7b8a9f0e1d2c3b4
attestations:
  description:
    - Per kind (C(test_result)) the keyids of its signatures, the sha256 of its DSSE envelope and its predicate
      type; the envelope in full. The same is in the ledger record (docs/attestations.md).
  returned: when signing_key is given
  type: dict
passed:
  description: Whether the image passed. Null in check mode.
  returned: always
  type: bool
  sample: true
image_id:
  description: ID of the image that was verified, which the verdict belongs to.
  returned: always
  type: str
  sample: sha256:3f0c2a9e0d4b4c0f8a0c5e5d0b5f1e2a3c4d5e6f708192a3b4c5d6e7f8091a2b
image:
  description: The image as given in O(image).
  returned: with O(image)
  type: str
  sample: acme/web:5b1e0c9d2f4a
disk:
  description: Path of the disk that was booted.
  returned: with O(disk)
  type: str
manifest:
  description: Path of the disk's manifest, where the verdict was recorded.
  returned: with O(disk)
  type: str
disk_digest:
  description: SHA-256 of the disk that was booted, which the verdict belongs to.
  returned: with O(disk), when a verify ran
  type: str
  sample: sha256:b7250ab68606ddaea104b04216689fa6222073757f158fadc2d05be73b9f262e
inputs_hash:
  description: The disk's inputs hash.
  returned: with O(disk)
  type: str
accel:
  description: How qemu ran the VM, V(kvm) or V(tcg).
  returned: with O(disk), when a verify ran
  type: str
tests:
  description: Counts of the testinfra run.
  returned: when a verify ran
  type: dict
  contains:
    total:
      description: Tests run.
      type: int
    passed:
      description: Tests that passed.
      type: int
    failed:
      description: Tests that failed.
      type: int
    errors:
      description: Tests that could not run (collection or fixture errors).
      type: int
    skipped:
      description: Tests skipped.
      type: int
  sample: {"total": 5, "passed": 4, "failed": 1, "errors": 0, "skipped": 0}
failures:
  description: Each failing test (and failed idempotence task or Molecule scenario) with its message.
  returned: when a verify ran
  type: list
  elements: dict
  sample: [{"test": "tests/test_web.py::test_listens", "message": "AssertionError: nginx is not listening on 80"}]
broken:
  description: Whether the image was found broken (its command exited, or its host never listened on its ports).
  returned: when a verify ran
  type: bool
duration:
  description: Seconds the task took.
  returned: always
  type: float
  sample: 2.84
timings:
  description: Seconds per step, C(start) (host start and readiness), C(tests), C(cleanup), C(idempotence), C(molecule) and C(total).
  returned: when a verify ran
  type: dict
  sample: {"start": 0.31, "tests": 1.92, "cleanup": 0.12, "total": 2.84}
report:
  description: Path of the JUnit XML report of the testinfra run. Null when there were no tests.
  returned: when a verify ran
  type: str
  sample: /home/ops/.local/share/immutable-infra/reports/verify-3f0c2a9e0d4b-20250102T030405Z-1a2b3c.xml
files:
  description: Per test file, the tests run, how many failed and their time.
  returned: when a verify ran
  type: list
  elements: dict
  sample: [{"file": "tests/test_web.py", "tests": 3, "failed": 0, "duration": 0.41}]
test_files:
  description: The test files found in O(tests).
  returned: always
  type: list
  elements: str
workers:
  description: pytest-xdist workers used; 0 when the tests ran in one process.
  returned: always
  type: int
idempotence:
  description: Roles applied again, whether none reported a change, and the tasks that did.
  returned: when O(idempotence=true) and a verify ran
  type: dict
  sample: {"roles": ["nginx"], "passed": true, "changed_tasks": []}
molecule:
  description: The Molecule scenario run, whether it passed, its log and its time.
  returned: when O(molecule_scenario) is set and a verify ran
  type: dict
  sample: {"scenario": "web", "passed": true, "log": "/home/ops/.local/share/immutable-infra/reports/verify-3f0c.molecule.log", "duration": 31.2}
ledger:
  description: Path of the ledger the verdict was recorded in.
  returned: when a verify ran
  type: str
ledger_id:
  description: ID of the verdict's ledger record.
  returned: when a verify ran
  type: str
previous_verdict:
  description: In check mode, the image's current verdict (V(passed) or V(failed)), or null when it was never verified.
  returned: check mode
  type: str
"""
