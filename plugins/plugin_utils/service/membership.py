# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What runs now: the service's hosts from its back-end, matched with the balancer's servers.

A server pointing at no listed host is stale and is taken out, with one exception: while engines whose
hosts cannot be listed take part (down when the run began, their share placed on the others), a server
whose balancer check still passes is not stale. It is most likely a host still running on such an engine
(a Docker engine that is down leaves its containers running); it is kept, and reported as unmanaged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Balancer, Member
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import HostLabels
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import FoundHost, HostBackend, HostRecord

ADMIN_PREFERENCE = {"ready": 0, "drain": 1, "maint": 2}


@dataclass
class Observation:
    hosts: list[rp.Host] = field(default_factory=list)
    records: dict[str, HostRecord] = field(default_factory=dict)
    stale_servers: list[str] = field(default_factory=list)  # balancer servers of ours pointing at no running host
    unmanaged_servers: list[Member] = field(default_factory=list)  # kept: answering, maybe on an unlisted engine

    def live(self) -> list[str]:
        return [host.name for host in self.hosts if host.live]

    def exited(self) -> set[str]:
        """Hosts whose back-end says they exited or died (not merely made and never started)."""
        return {name for name, record in self.records.items() if record.status in ("exited", "dead")}


def host_pattern(service: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(service)}-[0-9]+-[0-9]+$")


def match_servers(endpoints: dict[str, tuple[str, int]], servers: list[Member]) -> tuple[dict[str, Member], list[str]]:
    """Which server is each running host's (host name -> its address and port), and which servers are
    stale: pointing at no running host, or a second server at a host's address. A server belongs to
    the host at its address whatever its name (addresses are reused); among several, the one named
    like the host wins, then one taking traffic."""
    by_endpoint: dict[tuple[str, int], list[Member]] = {}
    for server in servers:
        by_endpoint.setdefault((server.address, server.port), []).append(server)
    matched: dict[str, Member] = {}
    duplicates: list[Member] = []
    for name, endpoint in endpoints.items():
        candidates = by_endpoint.pop(endpoint, [])
        if not candidates:
            continue
        candidates.sort(key=lambda server: (server.name != name, ADMIN_PREFERENCE.get(server.admin_state, 9),
                                            server.name))
        matched[name] = candidates[0]
        duplicates += candidates[1:]
    stale = sorted(server.name for group in [*by_endpoint.values(), duplicates] for server in group)
    return matched, stale


def service_hosts(service: str, found: list[FoundHost], progress: Callable[[str], None]) -> list[FoundHost]:
    """The hosts a change may touch: named and labelled as the service's hosts, one per name."""
    pattern = host_pattern(service)
    hosts: dict[str, FoundHost] = {}
    for host in found:
        if not pattern.match(host.name) or HostLabels.from_labels(host.labels).generation is None:
            continue
        if host.name in hosts:
            progress(f"{service}: a second host named {host.name} runs on engine {host.engine}; it is left alone")
            continue
        hosts[host.name] = host
    return list(hosts.values())


def observe(backend: HostBackend, balancer: Balancer, stopping: dict[str, float],
            progress: Callable[[str], None], unlisted: Collection[str] = ()) -> Observation:
    """The service's hosts and their balancer membership. stopping: hosts whose stop the engine is still
    finishing (stopping.py); such a host counts as stopped, since it left the balancer. unlisted: engines
    whose hosts cannot be listed this run (see the module's docstring)."""
    pattern = host_pattern(backend.service)
    servers = balancer.members(lambda name: bool(pattern.match(name)))
    found = service_hosts(backend.service, backend.hosts(), progress)
    endpoints = {host.name: host.endpoint for host in found
                 if host.endpoint and host.running and host.name not in stopping}
    matched, stale = match_servers(endpoints, servers)
    kept = [server for server in servers if server.name in stale and server.answering] if unlisted else []
    observation = Observation(stale_servers=[name for name in stale if name not in {server.name for server in kept}],
                              unmanaged_servers=kept)
    for host in found:
        labels = HostLabels.from_labels(host.labels)
        running = host.running and host.name not in stopping
        server = matched.get(host.name)
        unbalanced = "ready" if running and not balancer.tracks_membership else None
        balancer_state = server.admin_state if server else unbalanced
        observation.hosts.append(rp.Host(host.name, labels.generation or 0, labels.index or 0, labels.spec_hash or "",
                                         running, balancer_state, host.engine))
        endpoint = endpoints.get(host.name)
        observation.records[host.name] = HostRecord(
            host.name, host.host_id, endpoint[0] if endpoint else None, server.name if server else None,
            stopping=host.running and host.name in stopping, status=host.status, engine=host.engine,
            port=endpoint[1] if endpoint else None)
    return observation


def detach_stale(balancer: Balancer, observation: Observation, service: str, progress: Callable[[str], None]) -> None:
    for server in observation.stale_servers:
        progress(f"{service}: taking stale server {server} out of the balancer")
        balancer.detach(server)


def require_live(balancer: Balancer, observation: Observation, live: list[str], after: str, service: str) -> None:
    """Fails, naming them, when hosts that should be live are not taking traffic in the balancer."""
    if not balancer.tracks_membership:
        return
    by_name = {host.name: host for host in observation.hosts}
    missing = [name for name in live if not (name in by_name and by_name[name].live)]
    if missing:
        states = ", ".join(f"{name} ({_membership(by_name.get(name))})" for name in missing)
        raise InfraError(f"after {after}, {len(missing)} live host(s) of {service} are not taking traffic "
                         f"in {balancer.name}: {states}.", hosts=missing)


def _membership(host: rp.Host | None) -> str:
    if host is None:
        return "its host is gone"
    if not host.running:
        return "not running"
    return f"server in {host.balancer_state}" if host.balancer_state else "no server"
