#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollout
short_description: Replace a service's hosts with new ones from a verified image, behind a load balancer, without dropping requests
version_added: 0.1.0
description:
  - Observes the hosts of O(service) (containers labelled C(immutable.infra.service)) and the
    balancer backend, plans the rollout with a pure planner, then applies it in batches. It starts new
    hosts from the exact image ID, wait until they pass the health check, add them to the balancer
    and wait until the balancer reports them up, put old hosts in drain, wait until their sessions
    reach zero (at most O(drain_timeout)), take them out of the balancer, and stop them.
  - Hosts are containers named C(<service>-<generation>-<n>) and labelled with the service, the
    generation and the image ID. Old generations stay stopped for instant rollback (O(keep_previous)).
  - B(The fleet is one transaction.) If any step fails (a health timeout, a host that crashes, a
    balancer error), every batch already swapped is reverted. The previous hosts are started and put
    back into the balancer before the new ones leave it, the new hosts are removed, and the task fails
    saying which host failed which check. The balancer never holds fewer healthy hosts than
    O(replicas) minus O(max_unavailable). Ctrl-C or SIGTERM of C(ansible-playbook) reverts the same way,
    in the background once C(ansible-playbook) has exited.
  - B(Fail closed.) The image must have a passing verdict from M(immutable.infra.verify) for its exact
    ID unless O(require_verified=false); a tag that moved to another image since it was verified is
    refused. This is checked before anything is touched.
  - The same image and spec as the live hosts changes nothing (C(changed=false)). A different
    O(replicas) with the same image and spec adds or retires hosts in the live generation.
  - One rollout per service at a time. A lock (a never-started container named
    C(immutable-infra-lock-<service>)) names its holder, and a second rollout is refused with that
    information. The lock is a lease the holder renews while it works; it is taken over only when it was
    not renewed for O(lock_timeout) seconds or its process on the same controller is gone. If a controller
    dies mid-rollout, the next run finds the journal it left, puts the previous hosts back, and then rolls
    out again.
  - Before planning, the balancer is reconciled with the hosts (see RV(reconciled)).
  - Every rollout is recorded in the ledger with its result (succeeded, rolled back, failed).
  - B(Over several engines) (O(engines) or O(engines_group)), the hosts are spread across them (evenly by
    default, by O(engines[].weight) and O(engines[].max_hosts)); a host keeps the engine of the host
    it replaces. The image is shipped to every engine that needs it (through O(registry), or streamed)
    before any host starts, and the gate takes the newest verdict recorded on any engine. The lock and
    the journal live on the first declared engine, the coordinator, so every controller sees them. A
    host failing on any engine reverts every engine. An engine that stops answering mid-way fails the
    task; every other engine is reverted at once and the journal stays, so the next run undoes the
    rollout on that engine too once it answers. When that engine is the coordinator, the revert runs
    within the lock's lease (O(lock_timeout)), which no other controller can take over meanwhile. An
    engine that is down at the start is an error naming it (see O(place_down_share)). The plan, check
    mode, progress lines and the ledger name each host's engine.
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
    details: Observes and returns the plan (batches, host names, balancer operations); nothing is started, changed or locked.
  diff_mode:
    support: full
    details: Shows the live hosts before and after.
options:
  service:
    description:
      - Name of the service. It names the hosts (C(<service>-<generation>-<n>)), the inventory groups
        and the balancer servers, so it is a DNS label that may also hold V(_); it starts with a
        lower-case letter, ends with a letter or digit, holds only lower-case letters, digits, V(-) and
        V(_), and is at most 63 characters long (V(web-api)). Host names are read from the right, so
        V(web-api-3-1) is host 1 of generation 3 of V(web-api). Inventory groups use V(_) for V(-).
    type: str
    required: true
  image:
    description:
      - The image to roll out as containers, by ID (V(sha256:...)) or reference. A reference is resolved
        to an ID first and hosts are always started from the ID.
      - Exactly one of O(image) and O(disk).
    type: str
  disk:
    description:
      - The disk to roll out as VM hosts, on the hypervisors in O(engines) (V(qemu:///system) on this machine
        when no engine is named), as the disk file M(immutable.infra.disk) built, or its manifest, or the disk's
        digest (V(sha256:...)) when a hypervisor holds a copy of it already.
      - The disk must have a passing boot verdict from M(immutable.infra.verify) (with C(disk)) bound to its
        digest, and the file must still be the disk its manifest describes; the newest verdict of the
        manifest and of the hypervisors counts. Both are checked before anything is touched.
      - It is copied once into each hypervisor's storage pool (C(immutable-infra)), by digest; each VM runs
        on a copy-on-write overlay of it, gets its host name and SSH key at first boot from a seed drive,
        and an address its network reserves for its MAC before it boots. A VM that is stopped gets the
        ACPI power button, and is destroyed once O(stop_timeout) passes if its guest ignores it (a disk
        built with the C(acpi-support-base) package powers off).
      - Exactly one of O(image) and O(disk).
    type: str
  replicas:
    description: Number of hosts the service runs. At least 1.
    type: int
    required: true
  strategy:
    description:
      - V(rolling) replaces O(batch_size) hosts at a time.
      - V(blue_green) starts all new hosts, adds them, then drains and retires all old ones at once.
      - V(canary) first replaces O(canary.replicas) hosts and watches them for O(canary.seconds), then
        continues like V(rolling).
    type: str
    choices: [rolling, blue_green, canary]
    default: rolling
  batch_size:
    description:
      - Hosts replaced per batch (V(rolling) and V(canary)).
      - When not set, a batch is as many hosts as O(max_surge) + O(max_unavailable) allow if O(max_surge)
        is set, else one host.
      - Over several engines every batch takes its hosts from every engine in turn, so each engine starts,
        gates and registers its share of a batch at the same time as the others.
    type: int
  max_surge:
    description:
      - How many hosts above O(replicas) may be in service (started, not yet taken out of the balancer)
        during the rollout. New hosts are started before old
        ones leave as far as this allows.
      - A number of hosts (V(2)) or a percentage of the service's hosts (V(25%)). A percentage is taken
        of each engine's share and rounded up per engine, so V(25%) of 10 hosts is 3 on one engine and 4
        over four engines (one per engine); a team with more engines replaces more hosts at once.
      - Defaults to O(batch_size) (one host), or O(replicas) for V(blue_green).
    type: raw
  max_unavailable:
    description:
      - How many hosts below O(replicas) may be out of the balancer during the rollout, as a number or a
        percentage (taken of each engine's share and rounded down per engine). With the
        default V(0) capacity never dips. A batch needs O(max_surge) + O(max_unavailable) >= its size.
      - When both are percentages that come to no host, the surge is one host.
    type: raw
    default: 0
  canary:
    description: Settings of the V(canary) strategy.
    type: dict
    default: {}
    suboptions:
      replicas:
        description: Hosts in the first, watched batch.
        type: int
        default: 1
      seconds:
        description: How long the canary hosts must stay healthy, checked every O(health.interval), before the rollout goes on.
        type: float
        default: 10
  port:
    description: Container port the service listens on; the balancer sends traffic there.
    type: int
    required: true
  health:
    # The rest of this option comes from the immutable.infra.balancer.health fragment.
    default: {}
  require_verified:
    description: Refuse an image whose ID has no passing verdict from M(immutable.infra.verify). Set V(false) only deliberately.
    type: bool
    default: true
  keep_previous:
    description: Previous generations kept stopped for rollback; older hosts are removed after a successful rollout.
    type: int
    default: 1
  vm:
    description: How each VM host runs (with O(disk)).
    type: dict
    default: {}
    suboptions:
      memory:
        description: Memory of each VM, in MiB.
        type: int
        default: 1024
      vcpus:
        description: Virtual CPUs of each VM.
        type: int
        default: 2
      ssh_key:
        description:
          - A private key (without a passphrase) whose public key (the C(.pub) beside it, or derived) each VM
            authorizes for O(vm.user) at its first boot. The fleet inventory gives it to Ansible as
            C(ansible_ssh_private_key_file), and a health check with C(command) and M(immutable.infra.drift)
            reach the VMs with it.
          - Without it, only keys built into the disk (its C(ssh_authorized_keys)) let anyone in.
        type: path
      user:
        description: The user Ansible and the checks log in as.
        type: str
        default: root
  container:
    description: How each host container runs (with O(image)).
    type: dict
    default: {}
    suboptions:
      env:
        description: Environment variables.
        type: dict
        default: {}
      read_only:
        description: Mount the root filesystem read-only.
        type: bool
        default: false
      cap_drop:
        description: Linux capabilities to drop, for example V(ALL).
        type: list
        elements: str
        default: []
      memory:
        description: Memory limit, for example V(256m).
        type: str
      networks:
        description: Docker networks to attach, the first one carrying balancer traffic. The engine's default bridge when empty.
        type: list
        elements: str
        default: []
      restart_policy:
        description: Docker restart policy of the hosts.
        type: str
        choices: ["no", on-failure, always, unless-stopped]
        default: unless-stopped
      labels:
        description: Extra labels on the hosts.
        type: dict
        default: {}
seealso:
  - module: immutable.infra.verify
  - module: immutable.infra.bake
  - plugin: immutable.infra.fleet
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Roll out only an image whose provenance, SBOM and passing test result the release key signed
  immutable.infra.rollout:
    service: web
    image: "{{ baked.image_id }}"
    replicas: 3
    port: 8000
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
    trust:
      keys: [keys/cosign.pub]

- name: Roll out the verified image, one host at a time
  immutable.infra.rollout:
    service: web
    image: "{{ baked.image_id }}"
    replicas: 3
    port: 8000
    health:
      http_path: /healthz
      timeout: 60
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
  register: rolled

- name: Blue/green with a command health check, as a dry run first
  immutable.infra.rollout:
    service: api
    image: acme/api:5b1e0c9d2f4a
    replicas: 4
    strategy: blue_green
    port: 9000
    health:
      command: [/usr/local/bin/api, --check]
    balancer:
      runtime_api: 127.0.0.1:9999
      backend: api
  check_mode: true
  diff: true

- name: Over four engines, a quarter of each engine's hosts at a time, capacity never dipping
  immutable.infra.rollout:
    service: web
    image: "{{ baked.image_id }}"
    replicas: 100
    max_surge: 25%
    port: 8000
    health:
      http_path: /healthz
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
    engines_group: docker_engines

- name: Canary, watched for a minute, then two hosts per batch
  immutable.infra.rollout:
    service: web
    image: "{{ baked.image_id }}"
    replicas: 6
    strategy: canary
    canary:
      replicas: 1
      seconds: 60
    batch_size: 2
    port: 8000
    health:
      http_path: /healthz
    balancer:
      runtime_api: /run/haproxy/admin.sock
      backend: web
"""

RETURN = r"""
service:
  description: The service's name.
  returned: always
  type: str
  sample: web
rollout_id:
  description: The ID of this run, as in its progress lines, its ledger record and its hosts' labels.
  returned: always
  type: str
  sample: 3f9c2a1b7d4e
service_record:
  description:
    - What changed in the service's record (where it runs), option by option, when this task wrote it; the
      record holds its engines or O(docker_host), its O(balancer) and its O(addressing). The record is kept beside the
      service on every engine it runs on, so M(immutable.infra.rollback), M(immutable.infra.drift),
      M(immutable.infra.history) and M(immutable.infra.prune) need only the service's name.
  returned: when the record was written (or would be, in check mode)
  type: dict
  sample: {"balancer": {"before": null, "after": {"type": "haproxy", "runtime_api": "127.0.0.1:9999", "backend": "web"}}}
generation:
  description: The generation that is live after the task (or would be, in check mode).
  returned: always
  type: int
  sample: 3
image_id:
  description: The image ID the hosts run.
  returned: always
  type: str
added:
  description: Hosts started and put into the balancer.
  returned: always
  type: list
  elements: str
  sample: [web-3-1, web-3-2, web-3-3]
removed:
  description: Hosts taken out of service (drained, out of the balancer, stopped).
  returned: always
  type: list
  elements: str
  sample: [web-2-1, web-2-2, web-2-3]
deleted:
  description: Containers removed because their generation is older than O(keep_previous) allows.
  returned: always
  type: list
  elements: str
live:
  description: The live hosts after the task.
  returned: always
  type: list
  elements: str
live_before:
  description: The live hosts before the task.
  returned: always
  type: list
  elements: str
kind:
  description:
    - V(noop), V(rollout) (a new generation), V(scale) (hosts added or retired in the live generation) or V(restore) (the
      generation kept stopped for this image and spec started again, as a rollback to it does).
  returned: always
  type: str
reason:
  description: Why the plan is what it is.
  returned: always
  type: str
plan:
  description:
    - The ordered steps, each with C(action), C(hosts), C(batch) and a readable C(text); over several
      engines also C(engines), the engine of each host in C(hosts).
  returned: always
  type: list
  elements: dict
  sample: [{"action": "start", "hosts": ["web-3-1"], "batch": 1, "text": "batch 1: start web-3-1"}]
duration:
  description: Seconds the task took.
  returned: always
  type: float
capacity:
  description:
    - What O(max_surge), O(max_unavailable) and O(batch_size) came to in hosts for this placement
      (C(max_surge), C(max_unavailable), C(batch_size)).
  returned: when the service changes
  type: dict
  sample: {"max_surge": 4, "max_unavailable": 0, "batch_size": 4}
recovered:
  description: ID of an interrupted earlier rollout whose hosts were put back before this one.
  returned: when an interrupted rollout was found
  type: str
stopping:
  description: Old hosts out of the balancer and drained whose stop the engine was still finishing when the task ended.
  returned: always
  type: list
  elements: str
reconciled:
  description:
    - What was repaired before planning because the world changed behind the collection's back
      (C(detached) servers at no running host, C(registered) running hosts the balancer had lost,
      C(removed) exited hosts of the live generation).
  returned: when something needed repair
  type: dict
  sample: {"detached": ["slot2"], "registered": ["web-3-1"], "removed": ["web-3-2"]}
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
  description: The engine each live host runs on after the task (or would, in check mode).
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
unmanaged:
  description:
    - With O(place_down_share), what this run could not manage on the engines that were down when it
      began. C(engines) names each and why; C(hosts) the hosts the ledger last placed there, each
      with C(state) V(running) (the balancer's own check still reaches as many servers on that engine)
      or V(unknown); C(servers) the balancer servers kept because their check still passes (a server
      that answers its check is not taken for a stale one while such an engine is down). The next run
      that reaches the engine again replaces its hosts like any other.
  returned: when an engine was down at the start
  type: dict
  sample: {"engines": {"rig2": "connection refused"}, "hosts": [{"host": "web-3-2", "engine": "rig2", "state": "running"}],
           "servers": [{"server": "slot2", "address": "10.0.2.5", "port": 8000}]}
engines_down:
  description: Engines that could not be reached (at the start, or when one stopped answering mid-way).
  returned: on failure, when an engine is down
  type: list
  elements: str
rolled_back:
  description: True when the rollout failed and the previous hosts are live again.
  returned: on failure
  type: bool
host:
  description: The host that failed its check, when one did.
  returned: on failure
  type: str
"""
