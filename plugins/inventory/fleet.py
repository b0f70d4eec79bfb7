# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet
short_description: The hosts of immutable.infra services, from their Docker labels
version_added: 0.1.0
description:
  - Lists the hosts that M(immutable.infra.rollout) runs (containers labelled
    C(immutable.infra.service)) and groups them by service, liveness and generation.
  - Groups are C(<service>) (every listed host of the service), C(<service>_live) (its running
    hosts), C(<service>_gen_<n>) (the hosts of generation n) and, with O(drift), C(<service>_drifted).
  - A group name cannot hold C(-), so C(<service>) in group names is the service name with every C(-)
    replaced by C(_), as Ansible's own inventory plugins sanitise group names. The hosts of service
    C(web-api) are in C(web_api), C(web_api_live), C(web_api_gen_<n>) and C(web_api_drifted); host names
    keep the C(-) (C(web-api-3-1)), and C(immutable_infra.service) holds the name as written. Two services
    whose names differ only in C(-) against C(_) share their groups, so do not name services that way.
  - Each host gets C(ansible_connection=community.docker.docker), C(ansible_host) set to its
    container name and C(ansible_user=root), so plays reach hosts with no SSH (override with
    O(compose)), and a C(immutable_infra) variable with its service, generation, image ID, state,
    address and the provenance labels of its image.
  - The source of truth is the Docker engine, so every controller using it sees the same fleet.
    After a rollout, C(ansible.builtin.meta) V(refresh_inventory) makes later plays of the same run see
    the new membership (the C(immutable.infra.rollout) role does this).
  - The configuration file name must end in C(.fleet.yml) or C(.fleet.yaml).
author:
  - immutable.infra contributors (@immutable-infra)
requirements:
  - Docker SDK for Python (C(docker)) on the controller
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks this file as a configuration of this plugin.
    type: str
    required: true
    choices: [immutable.infra.fleet]
  docker_host:
    description: The Docker engine; E(DOCKER_HOST) or the default local socket when not set.
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

# A group per image revision, from the provenance labels of each host's image:
# inventory/by-revision.fleet.yml
---
plugin: immutable.infra.fleet
keyed_groups:
  - key: immutable_infra.provenance['org.opencontainers.image.revision'] | default('unknown')
    prefix: revision
"""

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.fleet import list_fleet


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "immutable.infra.fleet"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".fleet.yml", ".fleet.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            hosts = list_fleet(self.get_option("docker_host"), self.get_option("services"),
                               self.get_option("include_stopped"), self.get_option("drift"),
                               self.get_option("writable_paths"), self.get_option("ledger"))
        except InfraError as error:
            raise AnsibleParserError(f"immutable.infra.fleet: {error.message}") from None
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
