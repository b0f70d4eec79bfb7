# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy as a Balancer (base.py): a backend's servers through the runtime API (haproxy.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Member
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy import HAProxyRuntime, Server
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
        keys = ("runtime_api", "backend", "server_options", "up_timeout", "trust_gate")
        return {"type": "haproxy", **{key: self.options[key] for key in keys if key in self.options}}

    def members(self, is_ours: Callable[[str], bool]) -> list[Member]:
        """The backend's servers that belong to the service: template slots not in maintenance (a slot
        in maintenance is free, whatever its placeholder address) and servers named like its hosts.
        Servers declared for other purposes are left alone."""
        return [Member(server.name, server.address, server.port, server.admin_state)
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

    def activate(self, server: str, host: str, address: str, port: int) -> str:
        """Lets traffic in once the server is up; takes it out on failure. Returns the server's name,
        which changes when HAProxy lost the registration meanwhile (a reload from a server state saved
        before it) and the host had to be registered again.

        With trust_gate (the default) the rollout's own health gate has just passed at this address, so
        the server is set up at once (`set server ... health up`) instead of waiting for HAProxy's own
        checks to pass `rise` times at their own pace; those checks keep running and take the server
        down after `fall` failures. Without it, this waits for HAProxy's checks to call it up."""
        deadline = time.monotonic() + self.up_timeout
        forced_up = False
        try:
            while True:
                record = self._registered(server, address, port)
                if record is None:
                    if time.monotonic() >= deadline:
                        raise InfraError(f"HAProxy backend {self.backend} kept losing the server of {host} for "
                                         f"{self.up_timeout:g}s (is HAProxy reloading over and over?).",
                                         backend=self.backend, server=server)
                    server, forced_up = self.register(host, address, port), False
                    continue
                if (record.operational_state == "up") if self.trust_gate else record.healthy:
                    break
                if self.trust_gate and not forced_up:
                    self.runtime.set_health(self.backend, server, "up")
                    forced_up = True
                    continue
                if time.monotonic() >= deadline:
                    raise InfraError(f"HAProxy server {self.backend}/{server} did not come up within "
                                     f"{self.up_timeout:g}s; last seen: {record.summary()}.",
                                     backend=self.backend, server=server, last_state=record.status)
                time.sleep(POLL_INTERVAL)
        except InfraError:
            if self._registered(server, address, port):
                self.runtime.remove_server(self.backend, server)
            raise
        self.runtime.set_state(self.backend, server, "ready")
        return server

    def _registered(self, server: str, address: str, port: int) -> Server | None:
        """The server, while it is still this host's registration: at its endpoint and not in maintenance."""
        for record in self.runtime.servers(self.backend):
            if record.name == server:
                held = (record.address, record.port) == (address, port) and record.admin_state != "maint"
                return record if held else None
        return None

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
