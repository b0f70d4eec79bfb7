# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health gates: a host counts as healthy after healthy_threshold passing checks in a row.

A check is an HTTP GET, a TCP connect, or a command run inside the host (through its back-end). A
host that stops or restarts while it is being checked fails at once, with what its back-end says
about it (for a container, its exit code and last log lines).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, OutputEndedEarly
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import never_interrupted

FIRST_PASS_POLL = 0.02
MAX_PROBES = 16  # checks of one round run at once, at most this many
NOT_ANSWERING = ("request failed", "connect failed", "the host has no address")

HEALTH_OPTIONS = {
    "http_path": {"type": "str"},
    "tcp": {"type": "bool", "default": False},
    "command": {"type": "list", "elements": "str"},
    "expected_status": {"type": "list", "elements": "int"},
    "timeout": {"type": "float", "default": 60},
    "interval": {"type": "float", "default": 0.5},
    "healthy_threshold": {"type": "int", "default": 2},
}


@dataclass(frozen=True)
class HealthCheck:
    port: int
    http_path: str | None = None
    tcp: bool = False
    command: tuple[str, ...] = ()
    expected_status: tuple[int, ...] = ()
    timeout: float = 60.0
    interval: float = 0.5
    healthy_threshold: int = 2

    @classmethod
    def from_options(cls, options: dict, port: int) -> HealthCheck:
        kinds = [kind for kind in ("http_path", "tcp", "command") if options.get(kind)]
        if len(kinds) > 1:
            raise InfraError(f"health takes one kind of check, got {' and '.join(kinds)}.")
        if options.get("http_path") and not str(options["http_path"]).startswith("/"):
            raise InfraError(f"health.http_path must start with '/', got '{options['http_path']}'.")
        if options["timeout"] <= 0 or options["interval"] <= 0 or options["healthy_threshold"] < 1:
            raise InfraError("health.timeout and health.interval must be positive and healthy_threshold at least 1.")
        if options["timeout"] > 86400 or options["interval"] > 3600 or options["healthy_threshold"] > 100:
            raise InfraError("health.timeout is at most 86400 s, health.interval at most 3600 s and "
                             "health.healthy_threshold at most 100.")
        if options.get("http_path") and any(character in str(options["http_path"]) for character in " \t\r\n"):
            raise InfraError(f"health.http_path {options['http_path']!r} cannot hold spaces or line breaks.")
        return cls(port=port, http_path=options.get("http_path") or (None if kinds else "/"),
                   tcp=bool(options.get("tcp")), command=tuple(options.get("command") or ()),
                   expected_status=tuple(options.get("expected_status") or ()), timeout=float(options["timeout"]),
                   interval=float(options["interval"]), healthy_threshold=int(options["healthy_threshold"]))

    def describe(self) -> str:
        if self.command:
            return f"command '{' '.join(self.command)}'"
        if self.tcp:
            return f"tcp check on port {self.port}"
        return f"http check GET {self.http_path} on port {self.port}"

    def probe(self, run_command: Callable[[list[str]], tuple[int, str]], address: str | None,
              port: int | None = None) -> tuple[bool, str]:
        """One check; returns (passed, what was seen). run_command runs a command inside the host and
        returns its exit code and output; port: where address answers for the service's port (a
        published port), the port itself by default."""
        if self.command:
            try:
                code, output = run_command(list(self.command))
            except OutputEndedEarly as error:  # not a verdict on the host: a check that did not finish
                return False, error.message
            return code == 0, f"exit code {code}: {output.strip()[-200:]}"
        if not address:
            return False, "the host has no address yet"
        probe_timeout = max(0.2, min(2.0, self.interval * 2))
        port = port or self.port
        if self.tcp:
            try:
                with socket.create_connection((address, port), timeout=probe_timeout):
                    return True, "port open"
            except OSError as error:
                return False, f"connect failed: {error.strerror or error}"
        connection = http.client.HTTPConnection(address, port, timeout=probe_timeout)
        try:
            connection.request("GET", self.http_path or "/", headers={"Connection": "close",
                                                                      "User-Agent": "immutable.infra-health"})
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException) as error:
            return False, f"request failed: {getattr(error, 'strerror', None) or error}"
        finally:
            connection.close()
        passed = status in self.expected_status if self.expected_status else 200 <= status < 400
        return passed, f"HTTP {status}"


@dataclass(frozen=True)
class Target:
    """A host as its health gate reaches it: by name, at an endpoint, with its back-end's two calls
    (run a command inside it; why it cannot become healthy, or None while it runs)."""

    name: str
    address: str | None
    port: int | None
    run_command: Callable[[list[str]], tuple[int, str]]
    problem: Callable[[], str | None]


class Gate:
    """One host's gate: a host counts as healthy after check.healthy_threshold passing checks in a row.

    While the service does not answer yet, network checks are repeated every FIRST_PASS_POLL seconds
    (a service that listens after 50 ms should not wait a whole interval); otherwise checks are
    check.interval apart. A host that stops or restarts fails at once, with what its back-end says."""

    def __init__(self, check: HealthCheck, target: Target, progress: Callable[[str], None]) -> None:
        self.check = check
        self.target = target
        self.progress = progress
        self.started = self.due = self.announced = time.monotonic()
        self.deadline = self.started + check.timeout
        self.streak = 0
        self.last = "no check ran yet"
        self.inspected = 0.0
        self.seconds: float | None = None  # how long it took, once healthy

    def poll(self) -> bool:
        """One check; True when it was the host's first pass in a row. Sets seconds once healthy and the
        time of the next check otherwise; raises when the host cannot become healthy in time."""
        check, host = self.check, self.target.name
        passed, self.last = check.probe(self.target.run_command, self.target.address, self.target.port)
        self.streak = self.streak + 1 if passed else 0
        now = time.monotonic()
        if self.streak >= check.healthy_threshold or (not passed and now - self.inspected >= check.interval):
            self.inspected = now
            problem = self.target.problem()
            if problem:
                raise InfraError(f"host {host} failed its {check.describe()}: {problem}.", host=host)
            if passed:
                self.seconds = now - self.started
                return self.streak == 1
        if now >= self.deadline:
            raise InfraError(f"host {host} did not pass its {check.describe()} within {check.timeout:g} s "
                             f"(last result: {self.last}).", host=host)
        if now - self.announced >= 5:
            self.progress(f"waiting for {host}: {check.describe()} ({self.streak}/{check.healthy_threshold} passed, "
                          f"last: {self.last})")
            self.announced = now
        pause = min(check.interval, FIRST_PASS_POLL) if self.last.startswith(NOT_ANSWERING) else check.interval
        self.due = now + min(pause, max(0.0, self.deadline - now))
        return self.streak == 1


def wait_healthy(check: HealthCheck, target: Target, progress: Callable[[str], None],
                 on_first_pass: Callable[[], object] = lambda: None,
                 interrupted: Callable[[], None] = never_interrupted) -> float:
    """Blocks until the host passes its gate (Gate); returns the seconds it took. interrupted() is called
    before every check and raises to stop the wait."""
    return wait_all_healthy(check, [target], progress, lambda _passed: on_first_pass(), interrupted)[target.name]


def wait_all_healthy(check: HealthCheck, targets: list[Target], progress: Callable[[str], None],
                     on_first_pass: Callable[[list[Target]], object] = lambda _passed: None,
                     interrupted: Callable[[], None] = never_interrupted) -> dict[str, float]:
    """The gates of many hosts polled together by one loop: each round checks every host that is due (at
    once, when there are several) and sleeps until the next one is. on_first_pass gets the hosts that
    passed their first check in the round, together. Returns each host's seconds; raises the first
    failure. interrupted() is called before every round and raises to stop the wait."""
    gates = [Gate(check, target, progress) for target in targets]
    pending = list(gates)
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PROBES, len(gates)))) as pool:
        while pending:
            interrupted()
            now = time.monotonic()
            due = [gate for gate in pending if gate.due <= now]
            firsts = pool.map(Gate.poll, due) if len(due) > 1 else [gate.poll() for gate in due]
            passed = [gate.target for gate, first in zip(due, list(firsts), strict=True) if first]
            if passed:
                on_first_pass(passed)
            pending = [gate for gate in pending if gate.seconds is None]
            if pending:
                time.sleep(max(0.0, min(gate.due for gate in pending) - time.monotonic()))
    return {gate.target.name: gate.seconds or 0.0 for gate in gates}


def run_for_each(hosts: list[str], action: Callable[[str], object]) -> None:
    """Runs action for every host in parallel; raises the first InfraError after all have finished."""
    if not hosts:
        return
    if len(hosts) == 1:
        action(hosts[0])
        return
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = [pool.submit(action, host) for host in hosts]
    errors = [error for error in (future.exception() for future in futures) if error]
    if errors:
        raise errors[0]
