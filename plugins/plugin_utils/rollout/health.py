# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health gates: a host counts as healthy after healthy_threshold passing checks in a row.

A check is an HTTP GET, a TCP connect, or a command run inside the host. A host whose container
stops or restarts while it is being checked fails at once, with its exit code and last log lines.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import never_interrupted
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

FIRST_PASS_POLL = 0.02
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

    def probe(self, client: DockerClient, container_id: str, address: str | None,
              port: int | None = None) -> tuple[bool, str]:
        """One check; returns (passed, what was seen). client: the host's engine (a command runs through
        it); port: where address answers for the service's port (a published port), the port itself
        by default."""
        if self.command:
            code, output = client.exec(container_id, list(self.command))
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


def container_problem(client: DockerClient, container_id: str) -> str | None:
    """Why the container cannot become healthy (stopped, restarting), or None while it runs."""
    inspected = client.container(container_id)
    if inspected is None:
        return "its container was removed"
    state = inspected.get("State") or {}
    if state.get("Running") and not state.get("Restarting") and not inspected.get("RestartCount"):
        return None
    logs = client.logs(container_id, tail=5).strip().replace("\n", " | ")
    return (f"its container {'restarted' if state.get('Restarting') or inspected.get('RestartCount') else 'stopped'} "
            f"with exit code {state.get('ExitCode')}" + (f" (last output: {logs[-300:]})" if logs else ""))


def wait_healthy(client: DockerClient, check: HealthCheck, host: str, container_id: str,
                 address: str | None, progress: Callable[[str], None], deadline_seconds: float | None = None,
                 on_first_pass: Callable[[], object] = lambda: None,
                 interrupted: Callable[[], None] = never_interrupted, port: int | None = None) -> float:
    """Blocks until the host passes check.healthy_threshold checks in a row; returns the seconds it took.
    interrupted() is called before every check and raises to stop the wait.

    While the service does not answer yet, network checks are repeated every FIRST_PASS_POLL seconds
    (a service that listens after 50 ms should not wait a whole interval); otherwise checks are
    check.interval apart.
    """
    started = time.monotonic()
    deadline = started + (deadline_seconds or check.timeout)
    streak, last, announced, inspected = 0, "no check ran yet", started, 0.0
    while True:
        interrupted()
        passed, last = check.probe(client, container_id, address, port)
        streak = streak + 1 if passed else 0
        if streak == 1:
            on_first_pass()
        now = time.monotonic()
        if streak >= check.healthy_threshold or (not passed and now - inspected >= check.interval):
            inspected = now
            problem = container_problem(client, container_id)
            if problem:
                raise InfraError(f"host {host} failed its {check.describe()}: {problem}.", host=host)
            if passed:
                return now - started
        if now >= deadline:
            raise InfraError(f"host {host} did not pass its {check.describe()} within {check.timeout:g} s "
                             f"(last result: {last}).", host=host)
        if now - announced >= 5:
            progress(f"waiting for {host}: {check.describe()} ({streak}/{check.healthy_threshold} passed, last: {last})")
            announced = now
        pause = min(check.interval, FIRST_PASS_POLL) if last.startswith(NOT_ANSWERING) else check.interval
        time.sleep(min(pause, max(0.0, deadline - now)))


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
