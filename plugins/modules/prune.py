#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: prune
short_description: Remove old hosts, unused images and leftovers of interrupted bakes and verifies
version_added: 0.1.0
description:
  - Removes what is no longer needed and nothing that is. It first observes the engine (one
    C(docker system df) call), decides with a pure planner what to remove and what to keep, each with a
    reason, and then removes. Check mode returns the same lists and removes nothing.
  - B(Hosts.) Of each service (or only O(service)), every generation with a running host is live
    and kept, and so are the newest O(keep_previous) generations that are stopped. Hosts of older
    stopped generations are removed. A running host is never removed; each host is checked again just
    before its removal, under the service's rollout lock. A service whose rollout is under way (its lock
    C(immutable-infra-lock-<service>) or journal C(immutable-infra-rollout-<service>) exists) is left
    alone, and the lock and journal themselves are never removed.
  - B(Images), with O(images=true). Images baked by this collection (label
    C(immutable.infra.inputs_hash)) that no container uses, running or stopped, are removed, except
    the newest O(keep_images) of each repository (label C(immutable.infra.name)) and pinned images.
    Hosts removed by the same run no longer count as using their image. With O(service), only
    repositories whose images that service ran (its hosts and its rollouts in the ledger) are looked at.
    An image goes with its verdict.
  - B(Pinning.) An image is pinned when its ID (full, or the 12-character short form) or one of its
    references is listed in O(pinned), or when it has a tag starting with C(pinned), for example after
    C(docker tag <image ID> <repository>:pinned-release-1.4). Remove the tag to unpin it.
  - B(Leftovers), with O(builders=true), whatever O(service) says. Bake builders (containers named
    C(immutable-infra-bake-*)), verify's throwaway hosts (containers labelled
    C(immutable.infra.verifying)), builders kept from failed bakes (images tagged
    C(<name>:failed-*)) and verdict volumes (C(immutable-infra-verdict-*)) and attestation volumes
    (C(immutable-infra-attestations-*), counted with the verdict volumes) of images that no longer exist
    are removed once they are older than O(min_age) seconds, so that a bake or verify in progress is
    not touched; a bake builder is kept, however old, until its bake's C(bake_timeout) has run out.
  - Images are removed by their tags and never forced, so Docker refuses an image that a container
    started meanwhile uses. Such an image is reported in RV(skipped).
  - B(Several engines) (O(engines) or O(engines_group)). Every engine is observed. Hosts are decided
    over the whole fleet, since a generation spans engines. A generation is live while any of its hosts runs on
    any engine, the kept generations are the fleet's newest stopped ones, and a service whose lock or
    journal exists on any engine is left alone. Images are pruned per engine. An image stays on an
    engine while a container there uses it, or it is pinned, or among the newest O(keep_images) of its
    repository on that engine; its verdict volume goes with it from that engine only. Each item in
    RV(removed), RV(kept) and RV(skipped) then names its C(engine), and the ledger record lists what
    went from each engine. The lock is taken on the first declared engine, as rollouts take it.
  - B(VM hosts), with hypervisors in O(engines) (C(libvirt_uri); see M(immutable.infra.rollout)'s C(disk)).
    Shut-off VMs of old generations are removed as hosts are, with their overlays, seed drives and
    reserved addresses; the disks copied into the hypervisors' pools are the images (a disk's name is its
    repository), removed with their records and verdicts when no VM uses them; and, with
    O(builders=true), the C(leftovers) in RV(removed) are what an interrupted rollout left, once older than
    O(min_age), namely overlays and seeds of no VM, disk copies no record names (an upload cut short), and
    addresses reserved for no VM on the collection's own network.
  - When something was removed, a C(prune) record listing it goes to the ledger.
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
    details: Returns what would be removed and kept, with reasons; nothing is removed or locked.
  diff_mode:
    support: none
options:
  service:
    description:
      - Prune the hosts of this service only, and only images of repositories it ran. All services
        when not set.
    type: str
  keep_previous:
    description: Stopped generations kept for rollback besides the live one, per service.
    type: int
    default: 1
  images:
    description: Remove baked images that nothing uses (see O(keep_images) and O(pinned)).
    type: bool
    default: true
  keep_images:
    description: The newest images of each repository that are always kept, used or not.
    type: int
    default: 1
  pinned:
    description:
      - Images never removed, by ID (V(sha256:...) or the 12-character short form) or reference.
      - A tag starting with C(pinned) pins an image as well.
    type: list
    elements: str
    default: []
  builders:
    description:
      - Remove leftovers of interrupted bakes and verifies, and verdicts of images that no longer exist,
        once older than O(min_age).
    type: bool
    default: true
  min_age:
    description:
      - Seconds a builder, throwaway host, failed-bake image or orphaned verdict must exist before it
        is removed. Keep it longer than your longest bake or verify.
    type: int
    default: 600
seealso:
  - module: immutable.infra.rollout
  - module: immutable.infra.history
"""

EXAMPLES = r"""
- name: See what a prune of the web service would remove
  immutable.infra.prune:
    service: web
  check_mode: true
  register: would_prune

- name: Keep two stopped generations and the three newest images, and never the release images
  immutable.infra.prune:
    service: web
    keep_previous: 2
    keep_images: 3
    pinned:
      - sha256:5ecf456fd86a4e4ae7e5b5076b27aa0462a7eebbdec7f6d6b3b61e85e77ff448
      - acme/web:1.4

- name: Clean up after interrupted bakes and verifies only
  immutable.infra.prune:
    keep_previous: 1000
    images: false
    min_age: 3600
"""

RETURN = r"""
removed:
  description:
    - What was removed (in check mode, what would be), by kind, V(hosts), V(images), V(builders),
      V(verify_hosts), V(failed_images), V(verdict_volumes) and V(leftovers) (VM hosts only).
    - Each item has C(name), C(id), C(reason) and C(bytes) (what Docker reports it takes, or V(null)); images
      also have C(tags), hosts C(service) and C(image_id). Over several engines each item also has C(engine).
  returned: always
  type: dict
  sample:
    hosts:
      - {"name": "web-1-1", "id": "4d02...", "service": "web", "bytes": 4096,
         "reason": "stopped generation 1 is older than the 1 kept for rollback (keep_previous=1)"}
    images:
      - {"name": "acme/web:86e2561d008a", "id": "sha256:5ecf...", "bytes": 7340032, "tags": ["acme/web:86e2561d008a"],
         "reason": "no container uses it and 1 newer image(s) of acme/web are kept"}
    builders: []
    verify_hosts: []
    failed_images: []
    verdict_volumes: []
    leftovers: []
kept:
  description: What was looked at and kept, by the same kinds, each with C(name), C(id) and C(reason).
  returned: always
  type: dict
skipped:
  description:
    - What was planned for removal but left, each with C(name), C(id) and C(reason); for example a
      host that was started in the meantime or an image a new container uses.
  returned: always
  type: list
  elements: dict
freed_bytes:
  description:
    - Bytes freed (or that would be), as Docker reports them, the writable layer of each container and
      the layers of each image not shared with other images.
  returned: always
  type: int
  sample: 7344128
ledger_id:
  description: ID of the C(prune) ledger record.
  returned: when something was removed
  type: str
"""
