# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet
short_description: The hosts of immutable.infra services, from their Docker labels
version_added: 0.1.0
description:
  - Lists the hosts that M(immutable.infra.rollout) runs (containers labelled
    C(immutable.infra.service)) on every engine of the fleet, and groups them by service, liveness,
    generation and engine.
  - Groups are C(<service>) (every listed host of the service), C(<service>_live) (its running
    hosts), C(<service>_gen_<n>) (the hosts of generation n), C(engine_<engine>) (the hosts on that
    engine, with C(-) and C(.) in its name as C(_)) and, with O(drift), C(<service>_drifted).
  - A group name cannot hold C(-), so C(<service>) in group names is the service name with every C(-)
    replaced by C(_), as Ansible's own inventory plugins sanitise group names. The hosts of service
    C(web-api) are in C(web_api), C(web_api_live), C(web_api_gen_<n>) and C(web_api_drifted); host names
    keep the C(-) (C(web-api-3-1)), and C(immutable_infra.service) holds the name as written. Two services
    whose names differ only in C(-) against C(_) share their groups, so do not name services that way.
  - Each host gets C(ansible_connection=community.docker.docker), C(ansible_host) set to its
    container name and C(ansible_user=root), so plays reach hosts with no SSH (override with
    O(compose)), and a C(immutable_infra) variable with its service, engine, generation, image ID,
    state, address and the provenance labels of its image.
  - A host on an engine other than the controller's default socket also gets C(ansible_docker_extra_args)
    naming that engine and its TLS files (C(--host tcp://... --tlsverify --tlscacert=...)), because the
    C(community.docker.docker) connection reads C(ansible_docker_host) as the container's name, and the
    C(community.docker.docker_api) connection does not work over TCP+TLS engines.
  - Every engine is listed in parallel; an engine that does not answer fails the inventory with a
    sentence naming it (a listing without its hosts would look like a smaller fleet). Rollouts name
    hosts uniquely across engines; a name found on a second engine is listed as C(<name>@<engine>),
    with a warning.
  - The source of truth is the Docker engines, so every controller using them sees the same fleet.
    After a rollout, C(ansible.builtin.meta) V(refresh_inventory) makes later plays of the same run see
    the new membership (the C(immutable.infra.rollout) role does this).
  - B(VM hosts.) With hypervisors in O(engines) (O(engines[].libvirt_uri)), the hosts are the VMs that
    M(immutable.infra.rollout) made from a disk, in the same groups. Each gets C(ansible_connection=ssh),
    C(ansible_host) set to its address on the hypervisor's network, C(ansible_user) and
    C(ansible_ssh_private_key_file) as its rollout's C(vm) option gave them, SSH options that record no
    host key (a VM's host keys are made at its first boot and its address is reused by later VMs), and
    C(immutable_infra) with its service, engine, hypervisor, generation, disk digest, state, address and
    domain UUID. O(drift) applies to container hosts only (M(immutable.infra.drift) checks VMs).
  - The configuration file name must end in C(.fleet.yml) or C(.fleet.yaml).
author:
  - immutable.infra contributors (@immutable-infra)
requirements:
  - Docker SDK for Python (C(docker)) on the controller
  - paramiko on the controller, for an V(ssh://) engine
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks this file as a configuration of this plugin.
    type: str
    required: true
    choices: [immutable.infra.fleet]
  docker_host:
    description:
      - The Docker engine of a fleet of one; E(DOCKER_HOST) or the default local socket when neither this
        nor O(engines) nor O(engines_group) is set.
    type: str
  tls:
    description: TLS to the O(docker_host) engine without checking its certificate; E(DOCKER_TLS) when not set.
    type: bool
  validate_certs:
    description: TLS to the O(docker_host) engine, checking its certificate; E(DOCKER_TLS_VERIFY) when not set.
    type: bool
  ca_path:
    description: The CA of the O(docker_host) engine; C(ca.pem) in E(DOCKER_CERT_PATH) when not set.
    type: path
  client_cert:
    description: The controller's client certificate; C(cert.pem) in E(DOCKER_CERT_PATH) when not set.
    type: path
  client_key:
    description: The key of O(client_cert); C(key.pem) in E(DOCKER_CERT_PATH) when not set.
    type: path
  timeout:
    description: Seconds to wait for an engine to answer one call; E(DOCKER_TIMEOUT), else V(120), when not set.
    type: int
  engines:
    description:
      - The engines of the fleet, as M(immutable.infra.rollout) takes them. Not together with
        O(docker_host) or O(engines_group).
    type: list
    elements: dict
    suboptions:
      name:
        description: The engine's name (lower-case letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      docker_host:
        description: How a Docker engine is reached, V(unix://...), V(tcp://...) (with O(engines[].validate_certs)) or V(ssh://...).
        type: str
      libvirt_uri:
        description: How a hypervisor is reached, V(qemu:///system) or V(qemu+ssh://user@host/system).
        type: str
      network:
        description: A hypervisor's network for its VMs (not used by the inventory; accepted so one engines list serves every task).
        type: str
      accel:
        description: A hypervisor's accelerator (not used by the inventory; accepted so one engines list serves every task).
        type: str
        choices: [auto, kvm, tcg]
      tls:
        description:
          - TLS to the V(tcp://) engine without checking its certificate.
          - The older form, a dictionary C({ca_cert, client_cert, client_key, verify}), is still read.
        type: raw
      validate_certs:
        description: TLS to the V(tcp://) engine, checking its certificate against O(engines[].ca_path).
        type: bool
      ca_path:
        description: The CA that signed the engine's certificate.
        type: path
      client_cert:
        description: The controller's client certificate.
        type: path
      client_key:
        description: The key of O(engines[].client_cert).
        type: path
      timeout:
        description: Seconds to wait for the engine to answer one call.
        type: int
      weight:
        description: Placement weight (not used by the inventory; accepted so one engines list serves every task).
        type: int
        default: 1
      max_hosts:
        description: Placement limit (not used by the inventory; accepted so one engines list serves every task).
        type: int
      allow_insecure:
        description: Allow plain V(tcp://) to an address that is not loopback.
        type: bool
        default: false
      advertise_address:
        description: Where the balancer reaches the engine's published host ports (not used by the inventory;
          accepted so one engines list serves every task).
        type: str
  engines_group:
    description:
      - An inventory group of engine hosts, from an inventory source listed B(before) this one; each host
        is an engine named after it, described by its variables C(docker_host), C(docker_validate_certs),
        C(docker_tls), C(docker_ca_path), C(docker_client_cert), C(docker_client_key), C(docker_timeout),
        C(engine_weight), C(engine_max_hosts), C(engine_allow_insecure) and C(engine_advertise_address)
        (host and group variables of that source). Not together with O(docker_host) or O(engines).
    type: str
  services:
    description: Only list hosts of these services. All services when empty.
    type: list
    elements: str
    default: []
  drift:
    description:
      - Check each running host for drift as M(immutable.infra.drift) does, put drifted hosts in a
        C(<service>_drifted) group, and give each host C(immutable_infra.drift) (the reasons, empty
        when none). This reads every host's filesystem changes, so it is off by default.
    type: bool
    default: false
  writable_paths:
    description: With O(drift), paths the services write themselves, so changes there are not drift.
    type: list
    elements: str
    default: []
  ledger:
    description:
      - With O(drift), the ledger whose rollouts every host must belong to; E(IMMUTABLE_INFRA_LEDGER)
        or C(~/.local/share/immutable-infra/ledger.jsonl) when not set.
    type: path
  include_stopped:
    description:
      - Also list stopped hosts (generations kept for rollback). They belong to C(<service>) and
        C(<service>_gen_<n>) but never to C(<service>_live).
    type: bool
    default: false
"""

EXAMPLES = r"""
# inventory/web.fleet.yml
---
plugin: immutable.infra.fleet
services: [web]

# ansible-inventory -i inventory/web.fleet.yml --graph
# @all:
#   |--@web:
#   |  |--web-3-1
#   |  |--web-3-2
#   |--@web_gen_3:
#   |  |--web-3-1
#   |  |--web-3-2
#   |--@web_live:
#   |  |--web-3-1
#   |  |--web-3-2

# A service named with '-': its groups use '_' instead.
# ansible-inventory -i inventory/api.fleet.yml --graph   (services: [web-api])
# @all:
#   |--@web_api:
#   |  |--web-api-1-1
#   |--@web_api_gen_1:
#   |  |--web-api-1-1
#   |--@web_api_live:
#   |  |--web-api-1-1

# One service over three engines: ansible-inventory -i engines.ini -i web.fleet.yml --graph
# engines.ini:
#   [docker_engines]
#   rig1 docker_host=tcp://10.0.0.5:2376
#   rig2 docker_host=tcp://10.0.0.6:2376
#   [docker_engines:vars]
#   docker_validate_certs=true
#   docker_ca_path=/etc/ii/ca.pem
#   docker_client_cert=/etc/ii/cert.pem
#   docker_client_key=/etc/ii/key.pem
# inventory/web.fleet.yml
---
plugin: immutable.infra.fleet
engines_group: docker_engines
services: [web]
# @all:
#   |--@web:  web-4-1, web-4-2
#   |--@engine_rig1:  web-4-1
#   |--@engine_rig2:  web-4-2
#   ...

# A group per image revision, from the provenance labels of each host's image:
# inventory/by-revision.fleet.yml
---
plugin: immutable.infra.fleet
keyed_groups:
  - key: immutable_infra.provenance['org.opencontainers.image.revision'] | default('unknown')
    prefix: revision
"""

import os

from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.display import Display
from ansible.utils.vars import combine_vars

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import CONNECTION_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import engines_from_group, parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.inventory import list_fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.inventory import list_vms

display = Display()


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "immutable.infra.fleet"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".fleet.yml", ".fleet.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            hosts, warnings = self._list(self._engines())
        except InfraError as error:
            raise AnsibleParserError(f"immutable.infra.fleet: {error.message}") from None
        for warning in warnings:
            display.warning(f"immutable.infra.fleet: {warning}")
        strict = self.get_option("strict")
        for host in hosts:
            name = self.inventory.add_host(host.name)
            for group in host.groups:
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)
            for key, value in host.variables.items():
                self.inventory.set_variable(name, key, value)
            variables = self.inventory.get_host(name).get_vars()
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)

    def _list(self, engines):
        if engines[0].hypervisor:
            if self.get_option("drift"):
                raise InfraError("drift applies to container hosts in the inventory; check VM hosts with "
                                 "immutable.infra.drift.")
            return list_vms(engines, self.get_option("services"), self.get_option("include_stopped"))
        return list_fleet(engines, self.get_option("services"), self.get_option("include_stopped"),
                          self.get_option("drift"), self.get_option("writable_paths"), self.get_option("ledger"))

    def _engines(self):
        engines, group = self.get_option("engines"), self.get_option("engines_group")
        if engines is not None and group:
            raise InfraError("Set either engines or engines_group, not both.")
        if group:
            engines = engines_from_group(group, self._groups(), self._engine_host_vars(group))
        connection = {option: self.get_option(option) for option in CONNECTION_OPTIONS}
        return parse_engines(engines, connection, os.environ)

    def _groups(self):
        return {name: [host.name for host in group.get_hosts()] for name, group in self.inventory.groups.items()}

    def _engine_host_vars(self, group):
        """Each engine host's variables as the inventory sources before this one gave them (its groups'
        variables, then its own)."""
        found = self.inventory.groups.get(group)
        hosts = found.get_hosts() if found else []
        return {host.name: combine_vars(get_group_vars(host.get_groups()), host.get_vars()) for host in hosts}
