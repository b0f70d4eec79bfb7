# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host back-end seam: where a service's hosts run.

A back-end is one or more engines (Docker engines, hypervisors) in declaration order; the first
coordinates (it keeps the service's store: lock, journal, pending stops, service record). It lists
the service's hosts, places new ones on its engines, gets the verified artifact to them, makes,
starts, stops and removes hosts, and reaches into them for a health check. The transaction, the
planners, the health gates, the balancer and the ledger see only this interface and the store's
(store.py). Docker engines (engines/docker_hosts.py: containers from an image) and libvirt
hypervisors (hypervisors/hosts.py: VMs from a disk) are the two back-ends; docs/architecture.md
says how to add one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore

DEFAULT_ENGINE = "default"  # the engine of a back-end of one (docker_host), as engines/declaration.py names it


@dataclass(frozen=True)
class FoundHost:
    """A host of the service as its back-end lists it."""

    name: str
    engine: str
    host_id: str
    labels: dict[str, str]
    running: bool
    status: str  # the back-end's word for its state: running, exited, created...
    endpoint: tuple[str, int] | None  # where the balancer and the health check reach it, when it has one


@dataclass
class HostRecord:
    """A host as a change knows it while it works: its back-end ID, endpoint and balancer server."""

    name: str
    host_id: str
    address: str | None = None
    server: str | None = None
    stopping: bool = False  # its stop was sent and the engine is still finishing it (see stopping.py)
    status: str = ""
    engine: str = DEFAULT_ENGINE
    port: int | None = None  # where the address answers for the service's port


@dataclass
class Placed:
    """Where the hosts a plan starts will run: host -> engine, and the placement planner's account
    (counts per engine, moved slots, notes) when it had to choose."""

    engines: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] | None = None

    def counts_text(self) -> str:
        counts = (self.summary or {}).get("counts") or {}
        return ", ".join(f"{name} {count}" for name, count in counts.items())


class HostBackend(Protocol):
    service: str
    down: dict[str, str]  # engines that stopped answering during this run -> why
    shipped: dict[str, Any] | None  # how prepare got the artifact to the engines that lacked it this run, if it had to

    @property
    def engine_names(self) -> list[str]:
        """Every engine, in declaration order; the first coordinates."""

    @property
    def several(self) -> bool:
        """More than one engine: results and progress lines name each host's engine."""

    def machine_of(self, engine: str) -> str:
        """The machine whose cores the engine uses (engines naming the same one share a budget of starts)."""

    def store(self) -> ServiceStore:
        """The coordinating engine's store."""

    def record_stores(self) -> Sequence[ServiceStore]:
        """Every store the service record is kept in (service/record.py): each engine's, and the controller's
        own engine's when it is not one of them, so that a module given only the service's name finds it."""

    def describe(self) -> dict[str, Any]:
        """The engines for a task's result ("engines": name, where, weight, up, coordinator...) and how the
        balancer reaches hosts ("addressing")."""

    def hosts(self, include_stopped: bool = True) -> list[FoundHost]:
        """Every host of the service on every engine that answers (each engine's listing in parallel)."""

    def place(self, plan: rp.Plan, observed: list[rp.Host]) -> Placed:
        """The engine of every host the plan starts (kept hosts stay where they are)."""

    def plan_prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        """How prepare would get the artifact onto the engines (check mode shows it); None when it is there."""

    def prepare(self, artifact: str, engines: list[str]) -> dict[str, Any] | None:
        """Gets the verified artifact onto the engines before any host starts there; how, or None."""

    def check_settings(self, spec: HostSpec) -> None:
        """Refuses, before anything changes, settings every engine would refuse only mid-rollout."""

    def create(self, name: str, engine: str, spec: HostSpec, rollout_id: str, balancer: str | None = None) -> str:
        """Makes (does not start) a host from the spec on the engine, labelled with the balancer it is made
        to join (its name); the host's ID."""

    def start(self, host: HostRecord) -> None:
        """Starts a made or stopped host."""

    def endpoint(self, host: HostRecord) -> tuple[str | None, int]:
        """Where the host answers for the service's port now: (address or None, port)."""

    def request_stop(self, host: HostRecord, timeout: int, answer_wait: float) -> bool:
        """Asks the host to stop (killed after timeout); True when it stopped within answer_wait."""

    def stop(self, host: HostRecord, timeout: int) -> None:
        """Stops the host, returning once it has stopped."""

    def kill(self, host: HostRecord) -> None:
        """Stops the host at once."""

    def wait_exited(self, host: HostRecord, timeout: float) -> bool:
        """True once the host is not running, False when timeout passed first."""

    def remove(self, host: HostRecord) -> None:
        """Removes the host and what only it used (a container, an overlay)."""

    def run_command(self, host: HostRecord, command: list[str]) -> tuple[int, str]:
        """Runs a command inside the host: (exit code, output)."""

    def problem(self, host: HostRecord) -> str | None:
        """Why the host cannot become healthy (gone, stopped, restarted), or None while it runs."""

    def mark_unreachable(self, error: EngineUnreachable) -> str | None:
        """Notes the engine an EngineUnreachable came from as down (listing skips it); its name."""

    def answers_again(self, error: EngineUnreachable) -> bool:
        """Whether the engine an EngineUnreachable came from answers now, on a new connection, within a few
        seconds (answers_within): its connection was lost while the engine ran on."""

    def close(self) -> None:
        """Lets go of connections and workers."""
