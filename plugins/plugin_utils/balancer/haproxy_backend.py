# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy as a Balancer (base.py): a backend's servers through the runtime API (haproxy.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer import haproxy_batch as batch
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Arrival, Member, Outcome
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy import (
    DEFAULT_TIMEOUT,
    HAProxyRuntime,
    Server,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

POLL_INTERVAL = 0.05  # seconds between runtime API reads while waiting; each read is one small command

MAX_UP_TIMEOUT = 3600


class HAProxyBalancer:
    tracks_membership = True

    def __init__(self, options: dict[str, Any]) -> None:
        self.runtime = HAProxyRuntime(options["runtime_api"])
        self.backend = options["backend"]
        self.server_options = list(options["server_options"])
        self.up_timeout = float(options["up_timeout"])
        if not 0 < self.up_timeout <= MAX_UP_TIMEOUT:
            raise InfraError(f"balancer.up_timeout must be above 0 and at most {MAX_UP_TIMEOUT} seconds.")
        self.trust_gate = bool(options.get("trust_gate", True))
        self.name = f"haproxy backend {self.backend}"
        self.options = dict(options)
        self._adding = threading.Lock()

    def check(self) -> None:
        """Fails with a clear error when the runtime API is unreachable or the backend unknown."""
        self.runtime.servers(self.backend)

    def describe(self) -> dict[str, Any]:
        kept = ("runtime_api", "backend", "server_options", "up_timeout", "trust_gate")
        return {"type": "haproxy", **{key: self.options[key] for key in kept if key in self.options}}

    def members(self, is_ours: Callable[[str], bool]) -> list[Member]:
        """The backend's servers that belong to the service: template slots not in maintenance (a slot
        in maintenance is free, whatever its placeholder address) and servers named like its hosts.
        Servers declared for other purposes are left alone."""
        return [Member(server.name, server.address, server.port, server.admin_state, answering=server.answering)
                for server in self.runtime.servers(self.backend)
                if not server.free_slot and (server.template_slot or is_ours(server.name))]

    def lost(self, expected: Mapping[str, tuple[str, int]]) -> list[str]:
        """Of the servers expected to take traffic at their endpoints, those the backend no longer has
        there ready (gone, moved or in maintenance)."""
        servers = {server.name: server for server in self.runtime.servers(self.backend)}
        return [name for name, (address, port) in expected.items()
                if not (name in servers and (servers[name].address, servers[name].port) == (address, port)
                        and servers[name].admin_state == "ready")]

    def register(self, host: str, address: str, port: int) -> str:
        """Puts the host into the backend taking no traffic (drain, held down until HAProxy's own check
        passes at its address); returns the server name."""
        with self._adding:  # two hosts added at once must not pick the same free template slot
            return self.runtime.add_server(self.backend, host, address, port, check=True, state="drain",
                                           server_options=self.server_options)

    def register_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        with self._adding:
            return batch.register_all(self.runtime, self.backend, arrivals, self.server_options)

    def activate(self, server: str, host: str, address: str, port: int) -> str:
        """Lets traffic in once the server is up; takes it out on failure. Returns the server's name,
        which changes when HAProxy lost the registration meanwhile (see activate_all)."""
        outcome = self.activate_all([Arrival(host, address, port, server)])[0]
        if isinstance(outcome, InfraError):
            raise outcome
        return outcome

    def activate_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        """Lets traffic in to every registered server once it is up, all in one exchange per round; a server
        that fails is taken out again. A server's name changes when HAProxy lost the registration meanwhile
        (a reload from a server state saved before it) and its host had to be registered again.

        With trust_gate (the default) the rollout's own health gate has just passed at these addresses, so
        the servers are set up at once (`set server ... health up`) instead of waiting for HAProxy's own
        checks to pass `rise` times at their own pace; those checks keep running and take a server down
        after `fall` failures. Without it, this waits for HAProxy's checks to call each one up."""
        deadline = time.monotonic() + self.up_timeout
        pending = dict(enumerate(arrivals))
        outcomes: dict[int, Outcome] = {}
        sent: set[int] = set()  # positions whose ready (and forced health) went out
        while pending:
            records = {record.name: record for record in self.runtime.servers(self.backend)}
            lost = [position for position, arrival in pending.items()
                    if not _held(records.get(arrival.server or ""), arrival)]
            if lost:
                self._register_again(pending, lost, outcomes, sent, deadline)
                continue
            if not self._let_in(pending, records, sent, outcomes):
                if time.monotonic() >= deadline:
                    self._give_up(pending, records, outcomes)
                else:
                    time.sleep(POLL_INTERVAL)
        return [outcomes[position] for position in range(len(arrivals))]

    def _register_again(self, pending: dict[int, Arrival], lost: list[int], outcomes: dict[int, Outcome],
                        sent: set[int], deadline: float) -> None:
        """Registers hosts whose server HAProxy lost (or that had none yet) again, until the deadline."""
        for position in lost:
            sent.discard(position)
            if time.monotonic() >= deadline:
                arrival = pending.pop(position)
                outcomes[position] = InfraError(
                    f"HAProxy backend {self.backend} kept losing the server of {arrival.host} for {self.up_timeout:g}s "
                    "(is HAProxy reloading over and over?).", backend=self.backend, server=arrival.server)
        again = [position for position in lost if position in pending]
        for position, outcome in zip(again, self.register_all([pending[position] for position in again]),
                                     strict=True):
            if isinstance(outcome, InfraError):
                outcomes[position] = outcome
                del pending[position]
            else:
                pending[position] = replace(pending[position], server=outcome)

    def _let_in(self, pending: dict[int, Arrival], records: dict[str, Server], sent: set[int],
                outcomes: dict[int, Outcome]) -> bool:
        """One round: servers that are up and ready are done; the others get their commands (forced up and
        ready with trust_gate; ready once HAProxy calls them healthy without). False when nothing moved."""
        moved = False
        commands: list[tuple[int, str]] = []
        for position, arrival in list(pending.items()):
            record = records[arrival.server or ""]
            up = record.operational_state == "up" if self.trust_gate else record.healthy
            if up and record.admin_state == "ready" and position in sent:
                outcomes[position] = pending.pop(position).server or ""
                moved = True
            elif position not in sent and (self.trust_gate or up):
                server = f"{self.backend}/{arrival.server}"
                commands += [(position, f"set server {server} health up")] if self.trust_gate else []
                commands.append((position, f"set server {server} state ready"))
                sent.add(position)
        errors = batch.change_all(self.runtime, self.backend, [(command, ()) for _position, command in commands])
        for (position, _command), error in zip(commands, errors, strict=True):
            if error is not None and position in pending:
                self._take_out(pending.pop(position))
                outcomes[position] = error
        return moved or bool(commands)

    def _give_up(self, pending: dict[int, Arrival], records: dict[str, Server], outcomes: dict[int, Outcome]) -> None:
        for position, arrival in list(pending.items()):
            record = records[arrival.server or ""]
            outcomes[position] = InfraError(f"HAProxy server {self.backend}/{arrival.server} did not come up within "
                                            f"{self.up_timeout:g}s; last seen: {record.summary()}.",
                                            backend=self.backend, server=arrival.server, last_state=record.status)
            self._take_out(pending.pop(position))

    def _take_out(self, arrival: Arrival) -> None:
        """Takes a server that could not be let in out again, while it is still this host's registration."""
        try:
            record = self.runtime.server(self.backend, arrival.server or "")
        except InfraError:
            return
        if _held(record, arrival):
            self.runtime.remove_server(self.backend, record.name)

    def set_state(self, server: str, state: str) -> None:
        self.runtime.set_state(self.backend, server, state)

    def wait_drained(self, server: str, timeout: float) -> bool:
        try:
            self.runtime.wait_until_drained(self.backend, server, timeout, interval=POLL_INTERVAL)
            return True
        except InfraError:
            return False

    def detach(self, server: str) -> None:
        self.detach_all([server])

    def set_states(self, servers: Sequence[str], state: str) -> None:
        batch.set_states(self.runtime, self.backend, servers, state)

    def wait_all_drained(self, servers: Sequence[str], timeout: float) -> list[str]:
        return batch.wait_all_drained(self.runtime, self.backend, servers, timeout, POLL_INTERVAL)

    def detach_all(self, servers: Sequence[str]) -> None:
        batch.detach_all(self.runtime, self.backend, servers, DEFAULT_TIMEOUT)


def _held(record: Server | None, arrival: Arrival) -> bool:
    """The server is still this host's registration: at its endpoint and not in maintenance."""
    return (record is not None and (record.address, record.port) == (arrival.address, arrival.port)
            and record.admin_state != "maint")
