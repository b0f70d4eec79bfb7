# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which back-end a task's hosts run on, from what the task is given: hypervisors in its engines (entries
with libvirt_uri) or a disk to roll out mean VM hosts (hypervisors/), anything else containers on Docker
engines (engines/). The managers of rollout, rollback, drift, history and prune derive from
HostsManager and ask it."""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.manager import FleetManager
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import Hypervisor
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import VmFleet, open_vm_fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.hosts import VmHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.store import LibvirtStore
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.task import LOCAL_HYPERVISOR, on_hypervisors
from ansible_collections.immutable.infra.plugins.plugin_utils.service.record import WHERE_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext


class HostsManager(FleetManager):
    """A manager of a service's hosts, on Docker engines or on hypervisors."""

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        self._vm_fleet: VmFleet | None = None  # first: reading the service record may close the task's connections
        super().__init__(params, context)
        # A disk to roll out, with no engines named by the task or the service's record, runs on this
        # machine's hypervisor.
        if self.params.get("disk") and not any(self.params.get(name) for name in WHERE_OPTIONS):
            self.params = dict(self.params, engines=[dict(LOCAL_HYPERVISOR)])
            self.engines = parse_engines(self.params["engines"])

    @property
    def on_vms(self) -> bool:
        return on_hypervisors(self.engines)

    def record_store(self) -> ServiceStore:
        if self.on_vms:
            engine = self.engines[0]
            return LibvirtStore(Hypervisor(engine.name, engine.libvirt_uri or ""))
        return super().record_store()

    def close(self) -> None:
        super().close()
        if self._vm_fleet is not None:
            self._vm_fleet.close()
            self._vm_fleet = None

    def vm_fleet(self) -> VmFleet:
        """The hypervisors, reached once per task (every one must answer)."""
        if self._vm_fleet is None:
            self._vm_fleet = open_vm_fleet(self.engines, bool(self.params.get("place_down_share")))
        return self._vm_fleet

    def vm_hosts(self, service: str) -> VmHosts:
        return VmHosts(self.vm_fleet(), service, progress=self.progress)
