# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many servers of one HAProxy backend changed at once: one read of the backend, then every command in
one runtime API connection (HAProxyRuntime.exchange), rather than a read and a connection per server.
Each server's outcome is its own: one refused change does not stop the others."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Arrival, Outcome
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy import (
    CONNECTIONS_LEFT_REPLY,
    DELETED_REPLY,
    UNKNOWN_SERVER_REPLY,
    Command,
    HAProxyRuntime,
    Server,
    park_commands,
    reply_is_success,
    slot_commands,
    validate_endpoint,
    validate_name,
    validate_state,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

DELETE_RETRY = 0.1  # seconds between attempts to delete a server that still has a connection attached


def change_all(runtime: HAProxyRuntime, backend: str, commands: Sequence[Command]) -> list[InfraError | None]:
    """Runs the commands in one exchange; for each, None when done or HAProxy's refusal as a sentence."""
    if not commands:
        return []
    replies = runtime.exchange([command for command, _accepted in commands])
    return [None if reply_is_success(reply, accepted) else runtime.refusal(command, backend, reply)
            for (command, accepted), reply in zip(commands, replies, strict=True)]


def register_all(runtime: HAProxyRuntime, backend: str, arrivals: Sequence[Arrival],
                 server_options: Sequence[str]) -> list[Outcome]:
    """Puts every host into the backend taking no traffic (drain, held down until HAProxy's own check
    passes at its address): free template slots all in one exchange, dynamic servers for the rest."""
    free = [server.name for server in runtime.servers(backend) if server.free_slot]
    outcomes: list[Outcome] = []
    commands: list[Command] = []
    owners: list[int] = []
    for position, arrival in enumerate(arrivals):
        try:
            validate_name("server", arrival.host)
            address, port = validate_endpoint(arrival.address, arrival.port)
        except InfraError as invalid:
            outcomes.append(invalid)
            continue
        if not free:
            outcomes.append(_dynamic(runtime, backend, arrival, server_options))
            continue
        slot = free.pop(0)
        for command in slot_commands(backend, slot, address, port):
            commands.append(command)
            owners.append(position)
        outcomes.append(slot)
    refused: dict[int, InfraError] = {}
    for owner, refusal in zip(owners, change_all(runtime, backend, commands), strict=True):
        if refusal is not None:
            refused.setdefault(owner, refusal)
    if refused:  # the slots of refused hosts go back to the free pool
        change_all(runtime, backend, [command for owner in refused
                                      for command in park_commands(backend, str(outcomes[owner]))])
        outcomes = [refused.get(position, outcome) for position, outcome in enumerate(outcomes)]
    return outcomes


def _dynamic(runtime: HAProxyRuntime, backend: str, arrival: Arrival, server_options: Sequence[str]) -> Outcome:
    try:
        return runtime.add_server(backend, arrival.host, arrival.address, arrival.port, check=True, state="drain",
                                  server_options=server_options)
    except InfraError as error:
        return error


def set_states(runtime: HAProxyRuntime, backend: str, servers: Sequence[str], state: str) -> None:
    """A server that is gone (a balancer reloaded without its dynamic servers) is already out of traffic,
    so drain and maint count it done; ready does not."""
    validate_state(state)
    for server in servers:
        validate_name("server", server)
    commands = [f"set server {backend}/{server} state {state}" for server in servers]
    replies = runtime.exchange(commands) if commands else []
    _raise_first([None if reply_is_success(reply) or (state != "ready" and reply.strip() == UNKNOWN_SERVER_REPLY)
                  else runtime.refusal(command, backend, reply) for command, reply in zip(commands, replies, strict=True)])


def wait_all_drained(runtime: HAProxyRuntime, backend: str, servers: Sequence[str], timeout: float,
                     interval: float) -> list[str]:
    """Reads the backend every interval until none of the servers has sessions or queued requests (a server
    that is gone has none); those that still had some after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        records = {record.name: record for record in runtime.servers(backend)}
        busy = [name for name in servers if name in records and
                (records[name].current_sessions or records[name].queued)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(interval)


def detach_all(runtime: HAProxyRuntime, backend: str, servers: Sequence[str], timeout: float) -> None:
    """Takes every server out: template slots parked, other servers put in maintenance and deleted (HAProxy
    deletes one only once no connection is attached to it: tried again for at most timeout seconds). A server
    that is gone already (a balancer reloaded without its dynamic servers) is out."""
    records = {record.name: record for record in runtime.servers(backend)}
    errors: list[InfraError | None] = []
    commands: list[Command] = []
    dynamic: list[str] = []
    for name in servers:
        record: Server | None = records.get(name)
        if record is None:
            continue
        if record.template_slot:
            commands += park_commands(backend, name)
        else:
            commands.append((f"set server {backend}/{name} state maint", ()))
            dynamic.append(name)
    errors += change_all(runtime, backend, commands)
    errors += _delete_all(runtime, backend, dynamic, timeout)
    _raise_first(errors)


def _delete_all(runtime: HAProxyRuntime, backend: str, servers: list[str], timeout: float) -> list[InfraError | None]:
    deadline = time.monotonic() + timeout
    errors: list[InfraError | None] = []
    while servers:
        replies = runtime.exchange([f"del server {backend}/{server}" for server in servers])
        waiting = []
        for server, reply in zip(servers, replies, strict=True):
            if reply_is_success(reply, (DELETED_REPLY,)):
                continue
            if reply.strip().startswith(CONNECTIONS_LEFT_REPLY) and time.monotonic() < deadline:
                waiting.append(server)
                continue
            errors.append(InfraError(f"HAProxy did not delete server {backend}/{server}: {reply.strip()} It was "
                                     "left in maint, taking no traffic; drain it and remove it again.",
                                     backend=backend, server=server))
        servers = waiting
        if servers:
            time.sleep(DELETE_RETRY)
    return errors


def _raise_first(errors: Sequence[InfraError | None]) -> None:
    for error in errors:
        if error is not None:
            raise error
