# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HAProxy balancer adapter: observe and change a backend's servers through the runtime API.

A backend gets new hosts in one of two ways (docs/haproxy.md):

* ``server-template`` slots declared ``disabled``, at any placeholder address (0.0.0.0, or a stock
  ``127.0.0.1:9``). A free slot is one in maintenance, whatever its address: it takes no traffic and
  no checks. Taking it sets its address; removing it parks it again (maintenance, address 0.0.0.0).
* ``add server`` (dynamic servers, HAProxy >= 2.4), for backends whose balance algorithm is
  dynamic; removing such a server deletes it.

A new server with checks is forced ``down`` until it passes HAProxy's check at its new address: a
server leaving maintenance would otherwise count as up before its first check, and a slot would
keep the check result of its previous host. It also starts in ``drain`` by default, so the caller
decides when it takes traffic (wait_until_up, then ``ready``).
"""

from __future__ import annotations

import csv
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

ADMIN_STATES = ("ready", "drain", "maint")
PARKED_ADDRESS = "0.0.0.0"
DEFAULT_TIMEOUT = 5.0
RECEIVE_CHUNK = 65536

# Bits of srv_admin_state (HAProxy's enum srv_admin).
ADMIN_MAINT_BITS = 0x01 | 0x02 | 0x20  # forced, inherited from a tracked server, DNS resolution
ADMIN_CONFIGURED_DISABLED = 0x04  # `disabled` in haproxy.cfg; HAProxy keeps it set, so it marks template slots
ADMIN_DRAIN_BITS = 0x08 | 0x10  # forced, inherited

OPERATIONAL_STATES = {0: "down", 1: "starting", 2: "up", 3: "stopping"}
CHECK_RESULTS = {0: "unknown", 1: "neutral", 2: "failed", 3: "passed", 4: "passed"}
CHECK_ENABLED_BIT = 0x04
CHECK_PAUSED_BIT = 0x08

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]+$")
OPTION_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@%+=,-]+$")

ADDED_REPLY = "New server registered."
DELETED_REPLY = "Server deleted."
ADDRESS_CHANGED_REPLIES = ("IP changed from", "no need to change the addr", "port changed from")
UNKNOWN_BACKEND_REPLIES = ("No such backend.", "Can't find backend.", "No such proxy.")
UNKNOWN_SERVER_REPLY = "No such server."
PERMISSION_REPLY = "Permission denied"
CONNECTIONS_LEFT_REPLY = "Server still has connections attached to it"


@dataclass(frozen=True)
class Server:
    """One server of a backend as HAProxy reports it."""

    backend: str
    name: str
    address: str
    port: int
    admin_state: str  # ready | drain | maint
    operational_state: str  # up | down | starting | stopping
    status: str  # HAProxy's own summary, e.g. "UP", "DRAIN", "MAINT", "DOWN 1/2", "no check"
    check_enabled: bool
    check_result: str  # unknown | neutral | failed | passed
    check_status: str  # e.g. "L7OK", "L4CON", "L7STS"; empty when never checked
    check_description: str
    current_sessions: int  # scur
    queued: int  # qcur
    template_slot: bool
    free_slot: bool

    @property
    def answering(self) -> bool:
        """Up, with HAProxy's own check enabled and passing: something answers at its address."""
        return self.operational_state == "up" and self.check_enabled and self.check_result == "passed"

    @property
    def healthy(self) -> bool:
        """Up, and its last health check passed (or it has none)."""
        return self.operational_state == "up" and (not self.check_enabled or self.check_result == "passed")

    def summary(self) -> str:
        check = self.check_status or "no check result"
        if self.check_description:
            check += f" ({self.check_description})"
        return (f"{self.address}:{self.port}, {self.admin_state}, {self.operational_state}, "
                f"check {check}, {self.current_sessions} sessions")


# Pure parsing and formatting -------------------------------------------------------------------

def parse_runtime_address(address: str) -> tuple[str, str | tuple[str, int]]:
    """'/run/haproxy/admin.sock' -> ('unix', path); 'host:port' or '[v6]:port' -> ('tcp', (host, port))."""
    text = address.strip()
    if text.startswith("unix@"):
        text = text[len("unix@"):]
    if text.startswith(("/", "./")):
        return "unix", text
    host, separator, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not separator or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InfraError(f"The HAProxy runtime API address {address!r} is neither a unix socket path "
                         "(/run/haproxy/admin.sock) nor host:port (127.0.0.1:9999); fix balancer.runtime_api.")
    return "tcp", (host, int(port_text))


def parse_backends(text: str) -> list[str]:
    """The names from `show backend`."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """Rows of `show servers state`, keyed by HAProxy's column names (format version 1)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1" or len(lines) < 2 or not lines[1].startswith("# "):
        raise InfraError(f"HAProxy answered `show servers state` with an unexpected format: {text.strip()[:200]!r}.")
    columns = lines[1][2:].split()
    return [dict(zip(columns, line.split(), strict=False)) for line in lines[2:]]


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """Rows of `show stat` (CSV whose header line starts with '# ')."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise InfraError(f"HAProxy answered `show stat` with an unexpected format: {text.strip()[:200]!r}.")
    lines[0] = lines[0][2:]
    return list(csv.DictReader(lines))


def admin_state_name(bits: int) -> str:
    if bits & ADMIN_MAINT_BITS:
        return "maint"
    if bits & ADMIN_DRAIN_BITS:
        return "drain"
    return "ready"


def _integer(value: str | None) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0


def server_records(backend: str, state_rows: Iterable[dict[str, str]],
                   stat_rows: Iterable[dict[str, str]]) -> list[Server]:
    """Joins `show servers state` and `show stat` rows of one backend into Server records."""
    stats = {row.get("svname"): row for row in stat_rows if row.get("pxname") == backend}
    servers = []
    for row in state_rows:
        if row.get("be_name") != backend:
            continue
        stat = stats.get(row["srv_name"], {})
        admin_bits = _integer(row.get("srv_admin_state"))
        check_bits = _integer(row.get("srv_check_state"))
        address = row.get("srv_addr", "")
        template_slot = bool(admin_bits & ADMIN_CONFIGURED_DISABLED)
        admin_state = admin_state_name(admin_bits)
        servers.append(Server(
            backend=backend,
            name=row["srv_name"],
            address=address,
            port=_integer(row.get("srv_port")),
            admin_state=admin_state,
            operational_state=OPERATIONAL_STATES.get(_integer(row.get("srv_op_state")), "unknown"),
            status=stat.get("status", ""),
            check_enabled=bool(check_bits & CHECK_ENABLED_BIT) and not (check_bits & CHECK_PAUSED_BIT),
            check_result=CHECK_RESULTS.get(_integer(row.get("srv_check_result")), "unknown"),
            # A leading "* " means a check is running right now.
            check_status=stat.get("check_status", "").removeprefix("* "),
            check_description=stat.get("last_chk") or stat.get("check_desc", ""),
            current_sessions=_integer(stat.get("scur")),
            queued=_integer(stat.get("qcur")),
            template_slot=template_slot,
            free_slot=template_slot and admin_state == "maint",
        ))
    return servers


PROMPT = "\n> "  # what ends each reply in the runtime API's interactive mode


def split_replies(stream: str, count: int) -> list[str] | None:
    """The replies to `count` commands sent after `prompt`: the stream is the prompt command's own (empty)
    reply, then each command's output, each followed by the prompt. None when the stream ends early."""
    parts = stream.split(PROMPT)
    if len(parts) < count + 2:
        return None
    return parts[1:count + 1]


Command = tuple[str, Sequence[str]]  # a change command and the replies that mean it was done (empty: no reply)


def slot_commands(backend: str, slot: str, address: str, port: int, check: bool = True,
                  state: str = "drain") -> list[Command]:
    """Taking a free template slot for address:port. A slot keeps the check result of its previous host,
    and a server leaving maint counts as up before its first check: with checks it is forced down, so it
    takes traffic only once the new address has passed HAProxy's check. (HAProxy ignores that in maint,
    so it comes last.)"""
    return [(f"set server {backend}/{slot} addr {address} port {port}", ADDRESS_CHANGED_REPLIES),
            (f"{'enable' if check else 'disable'} health {backend}/{slot}", ()),
            (f"set server {backend}/{slot} state {state}", ()),
            *([(f"set server {backend}/{slot} health down", ())] if check else [])]


def park_commands(backend: str, slot: str) -> list[Command]:
    """Returning a template slot to the free pool: maintenance, no checks, parked address."""
    return [(f"set server {backend}/{slot} state maint", ()), (f"disable health {backend}/{slot}", ()),
            (f"set server {backend}/{slot} addr {PARKED_ADDRESS}", ADDRESS_CHANGED_REPLIES)]


def reply_is_success(reply: str, accepted: Sequence[str] = ()) -> bool:
    """Change commands answer with nothing or a known sentence; anything else is HAProxy's error."""
    text = reply.strip()
    return text.startswith(tuple(accepted)) if accepted else text == ""


def validate_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InfraError(f"The {kind} name {name!r} is not a valid HAProxy name; "
                         "use letters, digits and '-', '_', '.', ':' only.")
    return name


def validate_endpoint(address: str, port: int) -> tuple[str, int]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InfraError(f"The server address {address!r} is not an IP address; the HAProxy adapter takes the "
                         "host's IP (a container's address), not a host name.") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InfraError(f"The server port {port!r} is not a TCP port number (1-65535).")
    return str(ip), port


def validate_state(state: str) -> None:
    if state not in ADMIN_STATES:
        raise InfraError(f"Server state {state!r} is not one of {', '.join(ADMIN_STATES)}.")


def endpoint_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def failure_reason(error: OSError, timeout: float) -> str:
    """A few words for why a socket operation failed."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(error, FileNotFoundError):
        return "no such socket file"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, PermissionError):
        return "permission denied"
    return error.strerror or str(error)


# The runtime API client ------------------------------------------------------------------------

class HAProxyRuntime:
    """Talks to one HAProxy's runtime API (its `stats socket ... level admin`), one command per connection."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.kind, self.target = parse_runtime_address(address)
        self.timeout = timeout

    # observe --------------------------------------------------------------------------------
    def backends(self) -> list[str]:
        return parse_backends(self._command("show backend"))

    def servers(self, backend: str) -> list[Server]:
        validate_name("backend", backend)
        state_reply, stat_reply = self.exchange([f"show servers state {backend}", f"show stat {backend} 4 -1"])
        if state_reply.strip() in UNKNOWN_BACKEND_REPLIES or stat_reply.strip() in UNKNOWN_BACKEND_REPLIES:
            raise self._unknown_backend(backend)
        return server_records(backend, parse_servers_state(state_reply), parse_stat_csv(stat_reply))

    def server(self, backend: str, name: str) -> Server:
        servers = self.servers(backend)
        for server in servers:
            if server.name == name:
                return server
        names = ", ".join(server.name for server in servers) or "none"
        raise InfraError(f"HAProxy backend {backend} has no server named {name}; its servers are: {names}.",
                         backend=backend, server=name)

    def server_at(self, backend: str, address: str, port: int) -> Server | None:
        """The server of the backend that points at address:port, if any."""
        for server in self.servers(backend):
            if server.address == address and server.port == port:
                return server
        return None

    # change ---------------------------------------------------------------------------------
    def add_server(self, backend: str, name: str, address: str, port: int, check: bool = True,
                   state: str = "drain", server_options: Sequence[str] = ()) -> str:
        """Puts address:port into the backend; returns the server name used (a slot's or `name`).

        A free template slot is taken when the backend has one; otherwise a dynamic server called
        `name` is added with `server_options` appended. HAProxy does not apply default-server
        lines to dynamic servers, so pass their check settings here, e.g. ("inter", "1s").
        """
        validate_name("server", name)
        address, port = validate_endpoint(address, port)
        validate_state(state)
        servers = self.servers(backend)
        free_slots = [server for server in servers if server.free_slot]
        if not free_slots:
            return self._add_dynamic(backend, name, address, port, check, state, server_options, servers)
        slot = free_slots[0].name
        (first, accepted), *rest = slot_commands(backend, slot, address, port, check, state)
        self._change(first, backend, accepted)
        try:
            for command, accepted in rest:
                self._change(command, backend, accepted)
        except InfraError:
            self._park(backend, slot)
            raise
        return slot

    def set_state(self, backend: str, server: str, state: str) -> None:
        validate_name("backend", backend)
        validate_name("server", server)
        validate_state(state)
        self._change(f"set server {backend}/{server} state {state}", backend)

    def set_health(self, backend: str, server: str, health: str) -> None:
        """Forces the server's check result (up, down, stopping); HAProxy's own checks go on from there."""
        validate_name("backend", backend)
        validate_name("server", server)
        if health not in ("up", "down", "stopping"):
            raise InfraError(f"Server health {health!r} is not one of up, down, stopping.")
        self._change(f"set server {backend}/{server} health {health}", backend)

    def remove_server(self, backend: str, server: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Takes the server out completely: a template slot is parked, any other server deleted.

        Drain it first (wait_until_drained): HAProxy deletes a server only once no connection is
        attached to it, and this waits at most `timeout` seconds for that.
        """
        record = self.server(backend, server)
        if record.template_slot:
            self._park(backend, server)
            return
        self._change(f"set server {backend}/{server} state maint", backend)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._command(f"del server {backend}/{server}")
            if reply_is_success(reply, (DELETED_REPLY,)):
                return
            if not reply.strip().startswith(CONNECTIONS_LEFT_REPLY) or time.monotonic() >= deadline:
                raise InfraError(f"HAProxy did not delete server {backend}/{server}: {reply.strip()} "
                                 "It was left in maint, taking no traffic; drain it and remove it again.",
                                 backend=backend, server=server)
            time.sleep(0.1)

    # wait -----------------------------------------------------------------------------------
    def wait_until(self, backend: str, server: str, predicate: Callable[[Server], bool], timeout: float,
                   interval: float = 0.2, description: str = "reach the expected state") -> float:
        """Polls the server until predicate(record) holds; returns the seconds that took."""
        started = time.monotonic()
        while True:
            record = self.server(backend, server)
            if predicate(record):
                return time.monotonic() - started
            if time.monotonic() - started >= timeout:
                raise InfraError(f"HAProxy server {backend}/{server} did not {description} within {timeout:g}s; "
                                 f"last seen: {record.summary()}.", backend=backend, server=server,
                                 last_state=record.status)
            time.sleep(interval)

    def wait_until_up(self, backend: str, server: str, timeout: float, interval: float = 0.2) -> float:
        return self.wait_until(backend, server, lambda record: record.healthy, timeout, interval,
                               "become healthy (up with a passing health check)")

    def wait_until_drained(self, backend: str, server: str, timeout: float, interval: float = 0.2) -> float:
        return self.wait_until(backend, server, lambda record: record.current_sessions == 0 and record.queued == 0,
                               timeout, interval, "drain (sessions still open)")

    # internals ------------------------------------------------------------------------------
    def _add_dynamic(self, backend: str, name: str, address: str, port: int, check: bool, state: str,
                     server_options: Sequence[str], servers: list[Server]) -> str:
        for option in server_options:
            if not OPTION_PATTERN.match(option):
                raise InfraError(f"The server option {option!r} cannot be passed to HAProxy's `add server`.")
        words = ["add server", f"{backend}/{name}", endpoint_text(address, port), *(["check"] if check else []),
                 *server_options]
        reply = self._command(" ".join(words)).strip()
        if not reply_is_success(reply, (ADDED_REPLY,)):
            if reply in UNKNOWN_BACKEND_REPLIES:
                raise self._unknown_backend(backend)
            if "dynamic load balancing" in reply:
                reply += (" Servers added at runtime need balance roundrobin, leastconn, first or random, "
                          "or a hash algorithm with `hash-type consistent`.")
            slots = [server for server in servers if server.template_slot]
            if slots:
                reply = f"all {len(slots)} server-template slots are taken, and adding a server failed: {reply}"
            raise InfraError(f"Cannot add {address}:{port} to HAProxy backend {backend}: {reply}",
                             backend=backend, server=name)
        try:
            if check:
                self._change(f"enable health {backend}/{name}", backend)
            self._change(f"set server {backend}/{name} state {state}", backend)
            if check:
                self._change(f"set server {backend}/{name} health down", backend)
        except InfraError:
            self._command(f"del server {backend}/{name}")
            raise
        return name

    def _park(self, backend: str, slot: str) -> None:
        """Returns a template slot to the free pool: maintenance, no checks, parked address."""
        for command, accepted in park_commands(backend, slot):
            self._change(command, backend, accepted)

    def _change(self, command: str, backend: str, accepted: Sequence[str] = ()) -> None:
        reply = self._command(command).strip()
        if not reply_is_success(reply, accepted):
            raise self.refusal(command, backend, reply)

    def refusal(self, command: str, backend: str, reply: str) -> InfraError:
        """The sentence for a change HAProxy refused: an unknown backend or server is named with the ones
        that exist."""
        reply = reply.strip()
        if reply in UNKNOWN_BACKEND_REPLIES:
            return self._unknown_backend(backend)
        if reply == UNKNOWN_SERVER_REPLY:
            server = command.split(f"{backend}/", 1)[1].split(maxsplit=1)[0]
            try:
                self.server(backend, server)
            except InfraError as error:  # names the servers the backend does have
                return error
        return InfraError(f"HAProxy refused `{command}`: {reply}", backend=backend)

    def _unknown_backend(self, backend: str) -> InfraError:
        names = ", ".join(self.backends()) or "none"
        return InfraError(f"HAProxy at {self.address} has no backend named {backend}; its backends are: {names} "
                          "(check the balancer.backend option).", backend=backend)

    def _connect(self) -> socket.socket:
        if self.kind == "tcp":
            return socket.create_connection(self.target, timeout=self.timeout)  # type: ignore[arg-type]
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        try:
            connection.connect(self.target)
        except OSError:
            connection.close()
            raise
        return connection

    def _command(self, text: str) -> str:
        """Sends one command and returns HAProxy's whole reply; HAProxy closes the connection after it."""
        reply = self._send(text + "\n", text)
        self._permitted(text, reply)
        return reply

    def exchange(self, commands: Sequence[str]) -> list[str]:
        """Sends the commands over one connection, in order (the runtime API's interactive mode), and
        returns each one's reply: many changes cost one connection instead of one each."""
        if len(commands) == 1:
            return [self._command(commands[0])]
        stream = self._send("prompt\n" + "".join(f"{command}\n" for command in commands) + "quit\n", commands[0])
        replies = split_replies(stream, len(commands))
        if replies is None:
            raise InfraError(f"The HAProxy runtime API at {self.address} closed the connection before answering "
                             f"{len(commands)} commands (is its `stats timeout` very short?).", address=self.address,
                             command=commands[0])
        for command, reply in zip(commands, replies, strict=True):
            self._permitted(command, reply)
        return replies

    def _send(self, text: str, what: str) -> str:
        chunks = []
        try:
            with self._connect() as connection:
                connection.sendall(text.encode("utf-8"))
                while chunk := connection.recv(RECEIVE_CHUNK):
                    chunks.append(chunk)
        except OSError as error:
            raise InfraError(f"Cannot reach the HAProxy runtime API at {self.address}: {failure_reason(error, self.timeout)}; "
                             "check the `stats socket` line of haproxy.cfg and the balancer.runtime_api option.",
                             address=self.address, command=what) from None
        return b"".join(chunks).decode("utf-8", "replace")

    def _permitted(self, command: str, reply: str) -> None:
        if reply.strip().startswith(PERMISSION_REPLY):
            raise InfraError(f"The HAProxy runtime API at {self.address} refused `{command}`: permission denied; "
                             "its `stats socket` line needs `level admin`.", address=self.address, command=command)
