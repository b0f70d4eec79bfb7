# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Balancer membership as a rollout sees it: which host is in, add, drain, take out.

One class per balancer kind; the rollout only uses this interface. Without a balancer every
running host counts as live and the membership steps do nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy import HAProxyRuntime, Server
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

POLL_INTERVAL = 0.05  # seconds between runtime API reads while waiting; each read is one small command

BALANCER_OPTIONS = {
    "type": {"type": "str", "default": "haproxy", "choices": ["haproxy"]},
    "runtime_api": {"type": "str", "required": True},
    "backend": {"type": "str", "required": True},
    "server_options": {"type": "list", "elements": "str", "default": ["inter", "500ms", "rise", "1", "fall", "2"]},
    "up_timeout": {"type": "float", "default": 30},
    "trust_gate": {"type": "bool", "default": True},
}
MAX_UP_TIMEOUT = 3600


class HAProxyBalancer:
    def __init__(self, options: dict[str, Any]) -> None:
        self.runtime = HAProxyRuntime(options["runtime_api"])
        self.backend = options["backend"]
        self.server_options = list(options["server_options"])
        self.up_timeout = float(options["up_timeout"])
        if not 0 < self.up_timeout <= MAX_UP_TIMEOUT:
            raise InfraError(f"balancer.up_timeout must be above 0 and at most {MAX_UP_TIMEOUT} seconds.")
        self.trust_gate = bool(options.get("trust_gate", True))
        self.name = f"haproxy backend {self.backend}"
        self._adding = threading.Lock()

    def check(self) -> None:
        """Fails with a clear error when the runtime API is unreachable or the backend unknown."""
        self.runtime.servers(self.backend)

    def members(self, is_ours: Callable[[str], bool]) -> list[Server]:
        """The backend's servers that belong to the service: template slots not in maintenance (a slot
        in maintenance is free, whatever its placeholder address) and servers named like its hosts.
        Servers declared for other purposes are left alone."""
        return [server for server in self.runtime.servers(self.backend)
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

    def activate(self, server: str) -> None:
        """Lets traffic in once the server is up; takes it out on failure.

        With trust_gate (the default) the rollout's own health gate has just passed at this address, so
        the server is set up at once (`set server ... health up`) instead of waiting for HAProxy's own
        checks to pass `rise` times at their own pace; those checks keep running and take the server
        down after `fall` failures. Without it, this waits for HAProxy's checks to call it up."""
        try:
            if self.trust_gate:
                self.runtime.set_health(self.backend, server, "up")
                self.runtime.wait_until(self.backend, server, lambda record: record.operational_state == "up",
                                        self.up_timeout, POLL_INTERVAL, "come up")
            else:
                self.runtime.wait_until_up(self.backend, server, self.up_timeout, interval=POLL_INTERVAL)
        except InfraError:
            self.runtime.remove_server(self.backend, server)
            raise
        self.runtime.set_state(self.backend, server, "ready")

    def set_state(self, server: str, state: str) -> None:
        self.runtime.set_state(self.backend, server, state)

    def wait_drained(self, server: str, timeout: float) -> bool:
        try:
            self.runtime.wait_until_drained(self.backend, server, timeout, interval=POLL_INTERVAL)
            return True
        except InfraError:
            return False

    def detach(self, server: str) -> None:
        self.runtime.remove_server(self.backend, server)


class NoBalancer:
    """For services without a balancer: membership is simply 'running'."""

    name = "no balancer"

    def check(self) -> None:
        return None

    def members(self, is_ours: Callable[[str], bool]) -> list[Server]:
        return []

    def lost(self, expected: Mapping[str, tuple[str, int]]) -> list[str]:
        return []

    def register(self, host: str, address: str, port: int) -> str:
        return host

    def activate(self, server: str) -> None:
        return None

    def set_state(self, server: str, state: str) -> None:
        return None

    def wait_drained(self, server: str, timeout: float) -> bool:
        return True

    def detach(self, server: str) -> None:
        return None


def make_balancer(options: dict[str, Any] | None) -> HAProxyBalancer | NoBalancer:
    if not options:
        return NoBalancer()
    return HAProxyBalancer(options)
