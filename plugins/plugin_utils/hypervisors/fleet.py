# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hypervisors a service's VMs run on, reached at the start, all at once.

As with Docker engines (engines/fleet.py), the first declared hypervisor coordinates: it keeps the
service's lock, journal and pending stops. A hypervisor that does not answer is named in one
sentence, unless place_down_share puts its share of the hosts on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import endpoint_from_environment
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_store import DockerStore
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import Hypervisor
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.site import Site


@dataclass
class VmFleet:
    engines: list[Engine]
    sites: dict[str, Site]  # the hypervisors that answer, in declaration order
    down: dict[str, str] = field(default_factory=dict)
    place_down_share: bool = False

    @property
    def coordinator_name(self) -> str:
        return self.engines[0].name

    def site(self, engine: str) -> Site:
        if engine not in self.sites:
            raise InfraError(f"Hypervisor {engine} cannot be reached ({self.down.get(engine, 'not declared')}).",
                             engines_down=sorted(self.down))
        return self.sites[engine]

    def describe(self) -> list[dict[str, Any]]:
        return [dict(engine.as_dict(), up=engine.name in self.sites, coordinator=engine.name == self.coordinator_name)
                for engine in self.engines]

    def close(self) -> None:
        for site in self.sites.values():
            site.hypervisor.close()


def controller_store() -> DockerStore | None:
    """The controller's own Docker engine as a store, where the records of VM services are kept too (a module
    given only a service's name reads its record there); None when no engine answers."""
    try:
        return DockerStore(DockerClient(replace(endpoint_from_environment(), timeout=30)), "")
    except InfraError:
        return None


def open_vm_fleet(engines: Sequence[Engine], place_down_share: bool = False) -> VmFleet:
    """Every hypervisor, reached in parallel. One that does not answer is an error naming it (the first one,
    the coordinator, always), unless place_down_share."""
    def attempt(engine: Engine) -> Site | str:
        try:
            return Site(engine, Hypervisor(engine.name, engine.libvirt_uri or ""))
        except InfraError as error:
            return error.message

    with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
        outcomes = list(pool.map(attempt, engines))
    fleet = VmFleet(list(engines), {}, {}, place_down_share)
    for engine, outcome in zip(engines, outcomes, strict=True):
        if isinstance(outcome, Site):
            fleet.sites[engine.name] = outcome
        else:
            fleet.down[engine.name] = outcome
    coordinator = engines[0].name
    if fleet.down and (coordinator in fleet.down or not place_down_share):
        why = "; ".join(fleet.down.values())
        first = (f" {coordinator} is the first in engines, so it holds the service's lock and journal, and nothing "
                 "can run without it." if coordinator in fleet.down else "")
        raise InfraError(f"Hypervisor(s) {', '.join(fleet.down)} cannot be reached: {why}{first} Nothing was changed.",
                         engines_down=sorted(fleet.down))
    return fleet
