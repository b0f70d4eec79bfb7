# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The balancer's side of the steps: hosts registered, let in, drained and taken out, a whole batch at a
time (the Balancer's *_all calls: one exchange for all of a batch's servers where the balancer allows).

A host that passes its first check is registered ahead, taking no traffic, together with the others
that passed in the same round of the gates, so the balancer's own check runs while the gate waits for
the remaining passes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import (
    Arrival,
    Balancer,
    Outcome,
    first_refusal,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostRecord
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec


class SwapSteps:
    balancer: Balancer
    service: str
    spec: HostSpec
    progress: Callable[[str], None]
    drain_timeout: float
    wait_allowance: Callable[[], float] | None
    _background: ThreadPoolExecutor

    def __init__(self) -> None:
        self._registering: list[tuple[list[str], Future[list[Outcome]]]] = []
        self._draining: set[str] = set()

    def _arrival(self, record: HostRecord) -> Arrival:
        return Arrival(record.name, record.address or "", record.port or self.spec.port, record.server)

    def _register_ahead(self, records: list[HostRecord]) -> None:
        """Registers hosts that passed their first check, in the background (the gates go on meanwhile)."""
        ahead = [record for record in records if record.address and not record.server]
        if ahead:
            self._registering.append(([record.name for record in ahead], self._background.submit(
                self.balancer.register_all, [self._arrival(record) for record in ahead])))

    def _finish_registrations(self, records: dict[str, HostRecord]) -> None:
        """Notes the server of each host registered ahead; a failed registration is retried by the add step."""
        for names, registering in self._registering:
            outcomes = [] if registering.exception() else registering.result()
            for name, outcome in zip(names, outcomes, strict=False):
                if not isinstance(outcome, InfraError):
                    records[name].server = outcome
        self._registering = []

    def _step_add(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        """Lets every host of the step in at once (registered first when it is not yet)."""
        for name in names:
            if not records[name].address:
                raise InfraError(f"host {name} has no address where the balancer can reach it.", host=name)
        outcomes = self.balancer.activate_all([self._arrival(records[name]) for name in names])
        for name, outcome in zip(names, outcomes, strict=True):
            records[name].server = None if isinstance(outcome, InfraError) else outcome  # a failed one is out again
        first_refusal(outcomes)

    def _set_state(self, names: list[str], records: dict[str, HostRecord], state: str) -> None:
        servers = [records[name].server for name in names if records[name].server]
        if servers:
            self.balancer.set_states([server for server in servers if server], state)

    def _step_drain(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        self._draining.update(names)
        self._set_state(names, records, "drain")

    def _step_ready(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        self._draining.difference_update(names)
        self._set_state(names, records, "ready")

    def _keep_serving(self, records: dict[str, HostRecord]) -> None:
        """Before each batch after the first: the hosts this run counts as taking traffic whose server the
        balancer lost (a balancer restarted without its server state) are registered and let in again, so
        such a balancer is repaired within a batch rather than after the last one."""
        serving = {record.server: record for name, record in records.items()
                   if record.server and record.address and name not in self._draining}
        lost = self.balancer.lost({server: (record.address or "", record.port or self.spec.port)
                                   for server, record in serving.items()}) if serving else []
        names = [serving[server].name for server in lost]
        if not names:
            return
        for name in names:
            self.progress(f"{self.service}: {name} lost its server in {self.balancer.name}; registering it again")
            records[name].server = None
        self._step_add(names, records, rp.Step(rp.ADD, tuple(names)))

    def _step_wait_drained(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        timeout = self.drain_timeout if self.wait_allowance is None else min(self.drain_timeout, self.wait_allowance())
        why = (f"drain_timeout ({self.drain_timeout:g} s)" if timeout == self.drain_timeout else
               f"{timeout:.0f} s, all the lease of the lock left for it while the lock cannot be renewed")
        hosts = {records[name].server: name for name in names if records[name].server}
        for server in self.balancer.wait_all_drained([server for server in hosts if server], timeout):
            self.progress(f"{self.service}: {hosts[server]} still had sessions after {why}; taking it out anyway")

    def _step_detach(self, names: list[str], records: dict[str, HostRecord], step: rp.Step) -> None:
        servers = [records[name].server for name in names if records[name].server]
        for name in names:
            records[name].server = None  # a revert reads the balancer again, whatever this leaves
        if servers:
            self.balancer.detach_all([server for server in servers if server])
