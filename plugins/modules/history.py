#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: history
short_description: Show how a service came to be, revision by revision, from the ledger and the Docker engine
version_added: 0.1.0
description:
  - Lists the revisions of O(service), newest first. A revision is one rollout recorded in the ledger,
    whatever its result; they are numbered 1, 2, 3... in the order they started, and the numbers never
    change.
  - Given only O(service), it reads where the service runs from the record its rollouts keep beside it
    (its engines) on the engine it reaches first (O(docker_host), or C(DOCKER_HOST)),
    which may be any engine of the service; every option given to the task wins over the record.
  - Changes of where the service runs (its record) are listed after the revisions.
  - For each revision it says which image (ID and inputs hash) was rolled out, how that image was made
    (its provenance, that is its roles and git commit, source and creation time, from the image's labels
    while the image exists, else from the ledger's bake record), its latest verdict (from the verdict the engine holds
    and the ledger's newest verdict record), who rolled it out from which controller and git commit,
    when it started and finished, its result (V(succeeded), V(rolled back) or V(failed)) and what kind
    of change it was.
  - Every host a revision names is checked against the Docker engines of the fleet (O(engines),
    O(engines_group), or the single O(docker_host)), which say whether it still exists, on which engine
    and in what state (V(running), V(exited), ... or V(gone)). Over several engines the table has an
    C(ENGINES) column (how many hosts of each revision are on each engine), each revision lists the
    engines that hold its image, and its verdict is the newest any engine holds. The newest successful revision whose
    live hosts all run now is marked live.
  - The revisions are also rendered as a fixed-width text table, shown in the play output and returned
    in RV(table) and RV(msg).
  - "The VM disks built with the service's name (the O(immutable.infra.disk#module:name) of
    M(immutable.infra.disk)) are listed too, newest first, in RV(disks) and in a second table: each build's
    result, image, inputs hash, disk digest, path and kernel, and the newest verdict bound to that disk
    digest (M(immutable.infra.verify) with O(immutable.infra.verify#module:disk))."
  - Damaged ledger lines (a write cut short) are skipped and reported as warnings.
  - This module only reads; it never changes anything.
  - For a service of VM hosts (hypervisors in O(engines)), C(image_id) is the disk's digest, the
    verdict is the disk's boot verdict, and the provenance is that of the image the disk was built from.
author:
  - immutable.infra contributors (@immutable-infra)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - immutable.infra.action
  - immutable.infra.engines
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode returns the same as a normal run.
  diff_mode:
    support: none
options:
  service:
    description: Name of the service, as given to M(immutable.infra.rollout).
    type: str
    required: true
  limit:
    description: Return only the newest O(limit) revisions, and the newest O(limit) disk builds. All of them when not set.
    type: int
seealso:
  - module: immutable.infra.rollout
  - module: immutable.infra.prune
"""

EXAMPLES = r"""
- name: Show the history of the web service
  immutable.infra.history:
    service: web
    limit: 10
  register: web_history

- name: Fail when the live revision's image has no passing verdict
  ansible.builtin.assert:
    that: >-
      web_history.revisions | selectattr('live') | map(attribute='verdict.result') | list == ['passed']
    fail_msg: The live revision of web was not verified.

- name: Read a team's shared ledger
  immutable.infra.history:
    service: api
    ledger: /srv/shared/immutable-infra/ledger.jsonl
"""

RETURN = r"""
service_record_changes:
  description:
    - Each change of where the service runs (the engines, balancer and addressing of its record), oldest first; the
      first is where it started out. The table shows the later ones.
  returned: always
  type: list
  elements: dict
  sample: [{"time": "2026-12-07T10:00:00Z", "by": "ops@ci-1", "changes": {"balancer": {"before": null, "after": {}}}}]
revisions:
  description: The revisions, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    revision:
      description: Number of the revision; 1 is the first rollout of the service.
      type: int
      sample: 3
    generation:
      description: Generation of hosts the revision launched or restored.
      type: int
    image_id:
      description: ID of the image rolled out.
      type: str
    image:
      description: Short form of RV(revisions[].image_id).
      type: str
      sample: 384e687b06ab
    image_exists:
      description: Whether the image is still on an engine of the fleet.
      type: bool
    image_engines:
      description: The engines of the fleet that hold the image, in declaration order.
      type: list
      elements: str
      sample: [rig1, rig2, rig3]
    inputs_hash:
      description: Inputs hash of the image's bake.
      type: str
    provenance:
      description:
        - How the image was made. C(source) says where this came from, V(image) (labels), V(ledger) (the bake
          record, for an image that no longer exists) or V(null) (neither is known).
        - C(name), C(roles), C(git_commit), C(git_source) (the checkout's remote), C(git_dirty), C(created),
          C(baked_by) (user@controller) and C(base).
      type: dict
      sample: {"source": "image", "name": "acme/web", "roles": ["nginx", "acme.web.app@1.4.0"],
               "git_commit": "0a4c7e1d9b8f", "git_source": "https://git.example.com/acme/ops.git",
               "git_dirty": false, "created": "2026-03-01T10:00:00Z", "baked_by": "ci@runner-1",
               "base": "debian:bookworm"}
    verdict:
      description:
        - The image's latest verdict. C(result) is V(passed), V(failed) or V(null) when the image was never
          verified; C(time), C(tests) (C(total), C(passed), C(failed), C(errors), C(skipped)), C(by)
          (user@controller), C(failures) (number of failing tests, from the ledger) and C(source)
          (V(engine), V(ledger) or V(engine and ledger)).
      type: dict
    signed_by:
      description:
        - Who signed the revision's image. C(keys), the key IDs; C(checked) true when the rollout's trust gate
          (O(immutable.infra.rollout#module:trust)) checked them, false when they are the keys its bake and its
          latest verdict were signed with (from the ledger). C(keys) is empty for an unsigned image.
      type: dict
      sample: {"keys": ["sha256:830d9f3976519c0f3be4a4b5e2b8f2a7d4e0c1b2a3f4e5d6c7b8a9f0e1d2c3b4"], "checked": true}
    rolled_out_by:
      description: Who ran the rollout, as user@controller.
      type: str
      sample: alice@ops-laptop
    git_commit:
      description: Git commit of the playbook checkout the rollout ran from.
      type: str
    git_dirty:
      description: Whether that checkout had uncommitted changes.
      type: bool
    rollout_id:
      description: The ID of the run, as in its progress lines and its hosts' labels.
      type: str
    strategy:
      description: V(rolling), V(blue_green) or V(canary).
      type: str
    replicas:
      description: How many hosts the rollout was asked for.
      type: int
    live_hosts:
      description: The live hosts after the rollout, from its ledger record.
      type: list
      elements: str
    live_before:
      description: The live hosts before it.
      type: list
      elements: str
    started:
      description: When the rollout started (UTC).
      type: str
    finished:
      description: When the rollout finished (UTC).
      type: str
    duration:
      description: Seconds the rollout took.
      type: float
    result:
      description: V(succeeded), V(rolled back) or V(failed).
      type: str
    kind_of_change:
      description: V(rollout) (a new generation), V(restore) (a kept generation started again) or V(scale).
      type: str
    rollback_to:
      description: For a rollback (M(immutable.infra.rollback)), the revision it put live again.
      type: int
    error:
      description: Why a rollout that did not succeed failed.
      type: str
    stopping:
      description:
        - Hosts the rollout took out of the balancer and drained whose stop the engine was still finishing
          when it ended (their service ignores SIGTERM, so the engine kills them after C(stop_timeout)).
      type: list
      elements: str
    added:
      description:
        - The hosts the revision brought in, each with C(host), C(exists), C(state) (Docker's state, or
          V(gone)) and C(engine) (where it is; V(null) when gone). For a rollout that did not succeed they are derived from its generation and replicas
          (RV(revisions[].hosts_derived)).
      type: list
      elements: dict
      sample: [{"host": "web-3-1", "exists": true, "state": "running", "engine": "rig1"}]
    hosts_derived:
      description:
        - True when the revision's hosts are not in its ledger record but derived from its generation and
          replicas (a rollout that did not succeed).
      type: bool
    removed:
      description: The hosts the revision took out of service, with C(host), C(exists) and C(state).
      type: list
      elements: dict
    hosts:
      description: Summary of the states of RV(revisions[].added).
      type: str
      sample: 3 running
    engines:
      description: How many of RV(revisions[].added) still exist on each engine.
      type: dict
      sample: {"rig1": 1, "rig2": 1, "rig3": 1}
    hosts_gone:
      description: True when none of the revision's hosts exists any more.
      type: bool
    live:
      description: True for the revision whose live hosts are the ones running now.
      type: bool
disks:
  description: The VM disk builds of the service (M(immutable.infra.disk) with O(service) as its name), newest first.
  returned: always
  type: list
  elements: dict
  contains:
    built:
      description: When the build started (UTC).
      type: str
    result:
      description: V(succeeded) or V(failed).
      type: str
    error:
      description: Why a build that did not succeed failed.
      type: str
    disk:
      description: Path of the disk file.
      type: str
      sample: /srv/disks/hello-df401c6c941c.qcow2
    exists:
      description: Whether the disk file is still there.
      type: bool
    disk_digest:
      description: SHA-256 digest of the disk file the build wrote.
      type: str
    inputs_hash:
      description: Inputs hash of the disk (the image's inputs hash, kernel, packages and boot settings).
      type: str
    image_id:
      description: ID of the image the disk was made from.
      type: str
    image:
      description: Short form of RV(disks[].image_id).
      type: str
    image_inputs_hash:
      description: Inputs hash of the image's bake.
      type: str
    kernel_release:
      description: Release of the kernel in the disk.
      type: str
      sample: 6.1.0-50-cloud-amd64
    duration:
      description: Seconds the build took.
      type: float
    built_by:
      description: Who built the disk, as user@controller.
      type: str
    git_commit:
      description: Git commit of the playbook checkout the build ran from.
      type: str
    ledger_id:
      description: ID of the build's ledger record.
      type: str
    verdict:
      description:
        - The newest verdict bound to RV(disks[].disk_digest). C(result) is V(passed), V(failed) or V(null) when
          the disk was never booted; C(time), C(tests), C(by) (user@controller), C(failures) (number of failing
          tests), C(accel) (V(kvm) or V(tcg)), C(boot_to_ssh) (seconds), C(broken) (why the VM did not come up,
          or V(null)) and C(ledger_id).
      type: dict
table:
  description:
    - The revisions as a fixed-width text table, after a summary line; C(*) marks the live revision.
    - When the service has VM disks, a summary line and a table of them follow.
  returned: always
  type: list
  elements: str
  sample:
    - "web: 3 revision(s); revision 2 is live"
    - "REV  STARTED              RESULT       CHANGE   GEN  IMAGE         VERDICT      BY         COMMIT      HOSTS"
    - " 3   2026-03-02 09:12:40  rolled back  rollout  3    5ecf456fd86a  passed 5/5   alice@ops  9f1e2d3c4b  3 gone"
    - "*2   2026-03-01 10:02:11  succeeded    rollout  2    ca2441b9aa38  passed 5/5   alice@ops  0a4c7e1d9b  3 running"
msg:
  description: The same lines as RV(table).
  returned: always
  type: list
  elements: str
live_revision:
  description: Number of the live revision, or V(null) when none is.
  returned: always
  type: int
running:
  description: The service's hosts that run now.
  returned: always
  type: list
  elements: str
unrecorded:
  description: Running hosts of the service that the live revision does not name (started some other way).
  returned: always
  type: list
  elements: str
ledger:
  description: Path of the ledger read.
  returned: always
  type: str
"""
