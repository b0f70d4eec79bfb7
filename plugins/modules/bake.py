#!/usr/bin/python
# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bake
short_description: Bake existing Ansible roles into an immutable Docker image, reusing it when nothing changed
version_added: 0.1.0
description:
  - Starts a builder container from O(base), runs O(roles) in it through community.docker's API
    connection (no SSH, pipelining on), removes the residue of the run and commits the container
    as O(name)V(:)I(<first 12 characters of the inputs hash>) with the image config O(config).
  - The B(inputs hash) covers the base image ID, the content of every file of every role used
    (dependencies from C(meta/main.yml) and roles that tasks pull in with C(include_role) or
    C(import_role) by a literal name included), O(vars), O(config), the builder options, and the
    versions of ansible-core and of the collections the roles use. File modification times and dict
    ordering do not change it. When an image labelled with the same hash exists, it is returned with
    C(changed=false) and no container is started.
  - Every image carries provenance labels, C(org.opencontainers.image.created), C(.revision) and
    C(.source) (from the git checkout of the playbook), and under C(immutable.infra.) the inputs
    hash, the roles with their versions, the base image ID, and the ansible-core and collection
    versions.
  - Roles written for ordinary servers bake unmodified. They see the facts a plain C(ansible-playbook)
    run gathers (O(gather_subset=all)), and the virtualization facts say what the builder is
    (C(ansible_virtualization_type=docker), role C(guest)), so roles that skip kernel and host tasks in
    containers do so.
  - Services the roles start (C(ansible.builtin.service), C(ansible.builtin.systemd), handlers) really
    run during the bake, from their systemd unit (C(ExecStart) and its companions) or their
    C(/etc/init.d) script, so a role can configure a server through its own client (a database's
    users, for example). Package installs do not start daemons. Before the commit every service
    is stopped cleanly, by its own stop command, and nothing of the builder's stand-ins is left;
    the image's command starts the service when a host runs.
  - A task that fails because the builder is not a booted machine (mounts, C(sysctl), kernel modules)
    fails with a message that says so and names the ways out, O(skip_tags) and O(privileged).
  - If a role fails, the task fails with the failing task's name, message and output; no image is
    tagged and the builder is removed (see O(keep_failed)).
  - Every bake that runs, successful or not, is recorded in the ledger. Cache hits are not.
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
    details: Builds nothing; reports whether a bake would happen and which inputs differ from the newest image of O(name).
  diff_mode:
    support: none
options:
  name:
    description:
      - The image repository to bake into, for example V(acme/web), without a tag.
      - The image is tagged with the first 12 characters of its inputs hash.
    type: str
    required: true
  base:
    description:
      - The image the bake starts from, by reference or ID. It must be in the local engine unless O(pull=true).
      - It needs a Python 3 interpreter at O(python_interpreter) for Ansible modules.
    type: str
    required: true
  roles:
    description:
      - Roles to run, in order. Names resolve as Ansible resolves them in a play next to this
        playbook (C(roles/) beside the playbook, C(roles_path), the playbook directory, and
        V(namespace.collection.role) from installed collections).
    type: list
    elements: str
    required: true
  project_dir:
    description:
      - The repository whose roles are baked. Its C(roles/) directory and the directory itself are
        searched for roles, and its git checkout provides the provenance labels.
      - Defaults to the directory of the playbook. Set it when the playbook lives elsewhere, for
        example when running the collection's own C(immutable.infra.release) playbook.
    type: path
  vars:
    description:
      - Variables passed to the roles, as play variables.
    type: dict
    default: {}
  config:
    description:
      - Image config of the result. Fields not given are inherited from the base image.
    type: dict
    default: {}
    suboptions:
      cmd:
        description: Default command (Docker C(Cmd)).
        type: list
        elements: str
      entrypoint:
        description: Entrypoint. Setting it and not O(config.cmd) clears the inherited command, as in a Dockerfile.
        type: list
        elements: str
      env:
        description: Environment variables, merged over those of the base image.
        type: dict
      exposed_ports:
        description: Ports the image exposes, like V(8000/tcp) or V(53/udp).
        type: list
        elements: str
      workdir:
        description: Working directory.
        type: str
      user:
        description: User (name or UID) the image's command runs as. The roles may create it.
        type: str
      labels:
        description: Extra labels. Provenance labels always win over labels with the same name.
        type: dict
      volumes:
        description:
          - Paths in the image that are volumes (Docker C(VOLUME)), for example V(/var/lib/mysql).
            Absolute paths inside the image; host paths are bound when a host runs.
        type: list
        elements: str
      stop_signal:
        description:
          - Signal that stops the image's command (Docker C(STOPSIGNAL)), like V(SIGQUIT), V(QUIT) or V(3).
        type: str
      healthcheck:
        description:
          - Docker's C(HEALTHCHECK) for the image. Durations are seconds or strings like V(30s), V(1m30s), V(500ms).
        type: dict
        suboptions:
          test:
            description:
              - The check. A list runs the command directly (C(CMD)); a string runs it with the shell
                (C(CMD-SHELL)); V([NONE]) turns off a check inherited from the base image.
            type: raw
            required: true
          interval:
            description: Time between checks.
            type: raw
          timeout:
            description: Time one check may take.
            type: raw
          start_period:
            description: Time after start during which failing checks do not count.
            type: raw
          retries:
            description: Consecutive failures that make the host unhealthy.
            type: int
  force:
    description: Bake even when an image with the same inputs hash exists.
    type: bool
    default: false
  keep_failed:
    description:
      - When the roles fail, commit the builder as O(name)V(:failed-)I(<hash>) for debugging before removing it.
    type: bool
    default: false
  pull:
    description: Pull O(base) from its registry when the local engine does not have it.
    type: bool
    default: false
  cleanup_paths:
    description:
      - Paths (shell globs) removed from the builder before it is committed. Ansible's temporary
        directories are always removed. Set to V([]) to keep apt's package lists in the image.
    type: list
    elements: str
    default: ["/var/lib/apt/lists/*", "/var/cache/apt/*.bin", "/var/cache/apt/archives/*.deb", "/var/cache/apt/archives/partial/*"]
  gather_subset:
    description:
      - Facts gathered in the builder before the roles run. The default is Ansible's own, so roles
        see what a plain C(ansible-playbook) run gives them.
      - With the default, the facts of the first builder from a base image are kept on the controller
        (E(IMMUTABLE_INFRA_FACTS_CACHE), default C(~/.cache/immutable-infra/facts); V(off) turns it off),
        and later bakes from the same base, engine and builder settings gather only the V(min) subset
        live and take the rest from there. See C(docs/bake.md).
    type: list
    elements: str
    default: [all]
  tags:
    description:
      - Run only the role tasks with these tags, as C(ansible-playbook --tags). Part of the inputs hash.
    type: list
    elements: str
    default: []
  skip_tags:
    description:
      - Skip the role tasks with these tags, as C(ansible-playbook --skip-tags), for example the
        kernel or mount tasks of a role written for whole machines. Part of the inputs hash.
    type: list
    elements: str
    default: []
  privileged:
    description:
      - Run the builder as a privileged container, for roles whose host-level tasks (mounts,
        C(sysctl), kernel modules) must run during the bake.
      - B(Risk:) a privileged builder has every capability and the host's devices. What the roles do
        to the kernel (C(sysctl) keys that are not namespaced, kernel modules) happens to the Docker
        host itself, not to the image. Use it only with roles you trust, and prefer O(skip_tags).
    type: bool
    default: false
  python_interpreter:
    description: Python interpreter in the builder used for Ansible modules.
    type: str
    default: /usr/bin/python3
  become_method:
    description:
      - Become method for tasks with C(become). The builder runs as root and images rarely have
        C(sudo), so V(su) works for any C(become_user).
    type: str
    default: su
  network:
    description: Docker network of the builder (for example V(host)); the engine's default when not set.
    type: str
  bake_timeout:
    description:
      - Seconds the roles may run before the bake is stopped and fails.
      - O(timeout) is how long one call to the Docker engine may take.
    type: int
    default: 3600
requirements:
  - the community.docker collection (the builder's connection)
  - the Docker CLI (C(docker)) on the controller, for an engine reached over TLS (the builder's play reaches
    it with the C(community.docker.docker) connection)
seealso:
  - module: immutable.infra.verify
  - module: community.docker.docker_image_info
"""

EXAMPLES = r"""
- name: Bake and sign the image's provenance and SBOM with the team's cosign key (kept in Vault)
  immutable.infra.bake:
    name: acme/web
    base: debian:bookworm
    roles: [web]
    signing_key: "{{ vault_cosign_key }}"
    signing_key_password: "{{ vault_cosign_password }}"
  register: baked

- name: Bake the web roles into an image
  immutable.infra.bake:
    name: acme/web
    base: debian:bookworm
    roles:
      - nginx
      - acme.web.app
    vars:
      app_version: "1.4"
    config:
      cmd: ["/usr/local/bin/serve"]
      env:
        APP_ENV: prod
      exposed_ports: ["8000/tcp"]
      workdir: /srv
      user: app
  register: baked

- name: Show what was baked
  ansible.builtin.debug:
    msg: "{{ baked.image }} is {{ baked.image_id }} (cache hit: {{ baked.cache_hit }})"

- name: Would a bake happen, and why?
  immutable.infra.bake:
    name: acme/web
    base: debian:bookworm
    roles: [nginx]
  check_mode: true
  register: plan
"""

RETURN = r"""
signed_by:
  description: The key ID (sha256 of the public key) of O(signing_key), which signed the image's provenance and SBOM.
  returned: when a bake happened with signing_key
  type: str
  sample: sha256:830d9f3976519c0f3be4a4b5e2b8f2a7d4e0c1b2a3f4e5d6c7b8a9f0e1d2c3b4
attestations:
  description:
    - Per kind (C(provenance), C(sbom)) the keyids of its signatures, the sha256 of its DSSE envelope and its predicate
      type; the provenance envelope in full. The same is in the ledger record (docs/attestations.md).
  returned: when a bake happened with signing_key
  type: dict
attest_duration:
  description: Seconds signing took (opening the key, listing the packages, making, signing and storing the statements).
  returned: when a bake happened with signing_key
  type: float
image_id:
  description: ID of the baked or reused image. Null in check mode when a bake would happen.
  returned: always
  type: str
  sample: sha256:3f0c2a9e0d4b4c0f8a0c5e5d0b5f1e2a3c4d5e6f708192a3b4c5d6e7f8091a2b
image:
  description: The image reference, O(name) tagged with the first 12 characters of the inputs hash.
  returned: always
  type: str
  sample: acme/web:5b1e0c9d2f4a
inputs_hash:
  description: SHA-256 of everything that decides the content of the image.
  returned: always
  type: str
  sample: 5b1e0c9d2f4a7e3b8c6d1f0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807
cache_hit:
  description: Whether an image with this inputs hash already existed, so nothing was built.
  returned: always
  type: bool
  sample: false
labels:
  description: The labels of the image, provenance included. Empty in check mode when a bake would happen.
  returned: always
  type: dict
  sample: {"immutable.infra.inputs_hash": "5b1e0c9d...", "org.opencontainers.image.revision": "4f1c2d3..."}
roles:
  description: Every role used (dependencies first, included roles after their includer), with its version where known.
  returned: always
  type: list
  elements: str
  sample: ["common", "nginx", "acme.web.app@1.2.0"]
base_image_id:
  description: ID of the base image the inputs hash was computed from.
  returned: always
  type: str
reasons:
  description: Why a bake happens or would happen (which inputs differ from the newest image of O(name)).
  returned: when a bake happens or would happen
  type: list
  elements: str
  sample: ["no image has this inputs hash; against 1a2b3c4d5e6f: role nginx files changed"]
would_bake:
  description: In check mode, true when a bake would happen.
  returned: check mode, when no image matches
  type: bool
changed_tasks:
  description: Names of the role tasks that reported a change during the bake.
  returned: when a bake happened
  type: list
  elements: str
warnings_from_roles:
  description: The warnings the roles' play printed (deprecations, missing facts...), for the image's maintainers.
  returned: when a bake happened
  type: list
  elements: str
failed_task:
  description: The role task that failed.
  returned: when the roles' play failed
  type: str
kept_image:
  description: The builder container committed as an image for debugging (O(keep_failed)).
  returned: when the roles' play failed and O(keep_failed) is true
  type: str
ledger:
  description: Path of the ledger the bake was recorded in.
  returned: when a bake happened
  type: str
duration:
  description: Seconds the task took.
  returned: always
  type: float
  sample: 7.41
"""
