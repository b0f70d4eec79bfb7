#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: drift
short_description: Find hosts that someone changed in place, and replace them with fresh ones
version_added: 0.1.0
description:
  - Compares every running host of O(service) with what was rolled out, on every engine of the fleet
    (O(engines), O(engines_group), or the single O(docker_host)).
  - Given only O(service), it reads where the service runs from the record its rollouts keep beside it
    (its engines, its O(balancer) and its O(addressing)) on the engine it reaches first (O(docker_host), or C(DOCKER_HOST)),
    which may be any engine of the service; every option given to the task wins over the record.
  - A heal that cannot keep the balancer true is refused with nothing changed (no O(balancer) given or
    recorded while the service's hosts were put in one).
  - The B(filesystem) is compared with the image (C(docker diff)), ignoring paths any process may
    write (C(/tmp), C(/var/tmp), C(/run), C(/var/run), C(/var/log), C(/var/cache)) and the paths in
    O(writable_paths).
  - The B(image) the host runs must be the one its rollout recorded.
  - The B(container config) (environment, command, entrypoint, user, published ports, mounts) must be
    what the image and the rollout's container settings give.
  - The B(record) must hold the host. A container that carries the service's label without being
    started by a rollout recorded in the ledger has drifted too.
  - With O(heal=true), each drifted host is replaced by a fresh host from the same verified image,
    with the same settings, through the balancer, one host at a time (the fresh host joins before the
    drifted one drains and goes). Containers that no rollout made are drained and removed. The heal is
    recorded in the ledger (C(kind=heal)). A replacement that fails its health gate is undone (the drifted
    host stays in service, the fresh one is removed) and the task fails.
  - The fleet inventory plugin puts drifted hosts in a C(<service>_drifted) group when its C(drift)
    option is on.
  - B(VM hosts.) For a service of VM hosts (see the C(disk) option of M(immutable.infra.rollout)), each
    running VM is probed over SSH with the key its rollout was given (C(vm.ssh_key)) for the files whose
    status changed since it booted (outside O(writable_paths), logs, caches and what its first boot
    writes) and the packages dpkg installed, upgraded or removed since; memory or CPUs changed on its
    domain, and a VM no recorded rollout made, are drift too. Heal replaces a drifted VM with a new one
    from the same disk.
author:
  - immutable.infra contributors (@immutable-infra)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - immutable.infra.action
  - immutable.infra.swap
  - immutable.infra.balancer
  - immutable.infra.engines
attributes:
  check_mode:
    support: full
    details: Reports drift and what healing would replace; nothing is replaced.
  diff_mode:
    support: none
options:
  service:
    description: The service whose hosts are checked.
    type: str
    required: true
  heal:
    description: Replace each drifted host with a fresh one from the same image.
    type: bool
    default: false
  writable_paths:
    description:
      - Paths the service itself writes (data, caches, uploads), so changes there are not drift.
    type: list
    elements: str
    default: []
  addressing:
    description:
      - How the service's rollouts reach its hosts (see M(immutable.infra.rollout)'s O(addressing)), so that
        the balancer check and the replacements match them. V(container) when every engine is on this
        machine, V(published) otherwise, when not set; the port a V(published) rollout binds is not drift.
    type: str
    choices: [container, published]
seealso:
  - module: immutable.infra.rollout
  - plugin: immutable.infra.fleet
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Which hosts of web were changed in place?
  immutable.infra.drift:
    service: web
    writable_paths: [/srv/uploads]
  register: drift

- name: Replace them with fresh hosts from the same image
  immutable.infra.drift:
    service: web
    heal: true
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
  when: drift.drifted | length > 0
"""

RETURN = r"""
drifted:
  description: Each drifted host with the reasons.
  returned: always
  type: list
  elements: dict
  sample: [{"host": "web-3-2", "engine": "web1", "reasons": ["filesystem: added /etc/cron.d/hotfix", "env DEBUG added"],
            "recorded": true}]
healed:
  description: Drifted hosts and the fresh hosts that replaced them.
  returned: always
  type: list
  elements: dict
  sample: [{"host": "web-3-2", "replacement": "web-3-4"}]
removed:
  description: Containers removed because no rollout made them.
  returned: always
  type: list
  elements: str
balancer_mismatch:
  description:
    - How the balancer differs from the service's hosts (servers pointing at no running host, running
      hosts it lost, live hosts that exited); empty when they match or without O(balancer).
  returned: always
  type: list
  elements: str
  sample: ["web-3-1 runs but is not in the balancer"]
reconciled:
  description: What O(heal=true) repaired in the balancer first (C(detached), C(registered), C(removed)).
  returned: when O(heal=true) had something to repair
  type: dict
"""
