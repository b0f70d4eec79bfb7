#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollback
short_description: Put an earlier revision of a service live again, through the same safe swap as a rollout
version_added: 0.1.0
description:
  - Finds the revision in the ledger (the service's rollouts, numbered 1, 2, 3... as
    M(immutable.infra.history) shows them) and rolls its image out with M(immutable.infra.rollout),
    with the port, container settings and health check its hosts were made with (read from their labels).
  - When that revision's generation is kept stopped (see O(immutable.infra.rollout#module:keep_previous)),
    its hosts are started again, pass the health gate and are swapped in, which takes seconds.
    Otherwise the image is rolled out anew as a new generation.
  - The swap is the rollout's; health gates, drain before stop, capacity bounds, revert on failure and
    the lock all apply, and the rollback is recorded in the ledger as a rollout with
    C(rollback_to_revision).
  - Rolling back to a revision whose image no longer exists in the engine is a clear error.
  - Given only O(service), it reads where the service runs from the record its rollouts keep beside it
    (its engines, its O(balancer) and its O(addressing)) on the engine it reaches first (O(docker_host), or C(DOCKER_HOST)),
    which may be any engine of the service; every option given to the task wins over the record.
  - Over several engines (O(engines) or O(engines_group)), the hosts of every engine are read, the kept
    hosts are started again on the engines their labels name, and the image is shipped to any engine
    that needs it and lacks it, as M(immutable.infra.rollout) does.
  - B(VM hosts.) For a service of VM hosts (see the C(disk) option of M(immutable.infra.rollout)), the
    revision's disk is rolled out again; its VMs kept shut off with their overlays are started again.
    The disk is taken from its file while that still holds it, else from a hypervisor's copy, by digest.
author:
  - immutable.infra contributors (@immutable-infra)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - immutable.infra.action
  - immutable.infra.swap
  - immutable.infra.trust
  - immutable.infra.balancer
  - immutable.infra.engines
  - immutable.infra.fleet_rollout
  - immutable.infra.balancer.health
attributes:
  check_mode:
    support: full
    details: Returns the plan of the rollback; nothing is started, changed or locked.
  diff_mode:
    support: full
    details: Shows the live hosts before and after.
options:
  service:
    description: The service to roll back.
    type: str
    required: true
  revision:
    description:
      - The revision to put live. It must be one that succeeded.
      - Defaults to the newest successful revision whose image is not the one live now. When what is live was
        put there by a rollback, the default is that rollback's revision, so running the same task again changes
        nothing; give O(revision) to go further back.
    type: int
  strategy:
    description: How hosts are swapped, as for M(immutable.infra.rollout).
    type: str
    choices: [rolling, blue_green, canary]
    default: rolling
  batch_size:
    description: Hosts swapped per batch.
    type: int
    default: 1
  health:
    description:
      - The health gate, as for M(immutable.infra.rollout). When not set, the check the revision's
        hosts were rolled out with.
    type: dict
  require_verified:
    description: Refuse the revision's image unless it has a passing verdict.
    type: bool
    default: true
  keep_previous:
    description: Previous generations kept stopped after the rollback.
    type: int
    default: 1
seealso:
  - module: immutable.infra.history
  - module: immutable.infra.rollout
"""

EXAMPLES = r"""
- name: Put the previous successful revision back
  immutable.infra.rollback:
    service: web
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
  register: rolled_back

- name: Go back to revision 1 exactly
  immutable.infra.rollback:
    service: web
    revision: 1
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
"""

RETURN = r"""
engines:
  description: The fleet's engines (C(name), C(docker_host), C(tls), C(weight), C(max_hosts), C(up), C(coordinator)).
  returned: over several engines
  type: list
  elements: dict
  sample: [{"name": "rig1", "docker_host": "tcp://10.0.0.5:2376", "tls": true, "weight": 1, "max_hosts": null,
            "up": true, "coordinator": true}]
addressing:
  description: How the balancer and the health check reach the hosts, V(container) or V(published) (see O(addressing)).
  returned: over several engines
  type: str
hosts:
  description: The engine each live host runs on after the task.
  returned: over several engines
  type: dict
  sample: {"web-3-1": "rig1", "web-3-2": "rig2", "web-3-3": "rig3"}
placement:
  description:
    - How the new hosts were placed (C(assignments) slot to engine, C(counts) per engine, C(moved) slots
      whose engine changed, C(notes)); null when no new host is made.
  returned: over several engines
  type: dict
shipping:
  description:
    - How the image reached (or, in check mode, would reach) the engines that lacked it before any host
      started. C(method) is V(none), V(registry) or V(stream); C(source), C(targets), C(present), and after
      shipping C(seconds), C(digest) and C(per_engine) timings.
  returned: over several engines
  type: dict
engines_down:
  description: Engines that could not be reached (at the start, or when one stopped answering mid-way).
  returned: on failure, when an engine is down
  type: list
  elements: str
revision:
  description: The revision that is live after the task.
  returned: success
  type: int
  sample: 1
target_image_id:
  description: The image of that revision.
  returned: success
  type: str
fast_path:
  description: True when the revision's kept hosts were started again rather than new hosts made.
  returned: success
  type: bool
generation:
  description: The generation that is live after the task.
  returned: always
  type: int
added:
  description: Hosts put into service.
  returned: always
  type: list
  elements: str
removed:
  description: Hosts taken out of service (stopped and kept).
  returned: always
  type: list
  elements: str
live:
  description: The live hosts after the task.
  returned: always
  type: list
  elements: str
plan:
  description: The ordered steps, as M(immutable.infra.rollout) returns them.
  returned: always
  type: list
  elements: dict
duration:
  description: Seconds the swap took.
  returned: always
  type: float
"""
