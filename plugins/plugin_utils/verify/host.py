# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The throwaway container host of a verify: started from the exact image ID, removed whatever happens.

The host is labelled as a verify host, so that prune finds one a killed controller left behind.
testinfra reaches it through Docker; a disk's VM host (vm_host.py) offers the runner the same face.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Guard
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import verify_host_labels, verify_host_name
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report

POLL_SECONDS = 0.05


@dataclass
class Broken(Exception):
    """The image's command exited, or its host never became ready: the image is broken."""

    reason: str
    exit_code: int | None = None
    logs: str = ""


class ThrowawayHost:
    """One container from the image under test. Use it through started(), which removes it again."""

    subject = "image"

    def __init__(self, client: DockerClient, image: dict[str, Any], described: str, network: str | None,
                 progress: Callable[[str], None], exec_user: str = "root", keep_alive: bool = False) -> None:
        self.client = client
        self.image = image
        self.described = described
        self.network = network
        self.progress = progress
        self.exec_user = exec_user
        self.keep_alive = keep_alive
        self.name = verify_host_name(short_id(image["Id"]), uuid.uuid4().hex[:6])
        self.id: str | None = None
        self.cleanup_seconds = 0.0

    @contextmanager
    def started(self, guard: Guard, keep_alive: bool | None = None) -> Iterator[ThrowawayHost]:
        """Starts the host and removes it when the block ends, Ctrl-C included. keep_alive (by default
        the host's own setting) runs a sleeping stand-in instead of the image's command (always, when
        the image has none)."""
        try:
            self._start(self.keep_alive if keep_alive is None else keep_alive)
            yield self
        finally:
            begun = time.monotonic()
            with guard.shield():
                self.client.remove_container(self.id or self.name)  # by name: a signal may come before the ID
            self.cleanup_seconds = round(time.monotonic() - begun, 3)

    def _start(self, keep_alive: bool) -> None:
        config = self.image.get("Config") or {}
        keep_alive = keep_alive or not (config.get("Cmd") or config.get("Entrypoint"))
        self.progress(f"verify: starting host {self.name} from {self.described}" + (" (keep-alive)" if keep_alive else ""))
        self.id = self.client.run_detached(self.image["Id"], self.name, verify_host_labels(self.image["Id"]),
                                           entrypoint=builder.KEEP_ALIVE if keep_alive else None,
                                           command=[] if keep_alive else None, user="root" if keep_alive else None,
                                           networks=[self.network] if self.network else None)

    def pytest_target(self) -> list[str]:
        """testinfra's options that reach this host: its docker backend, as exec_user."""
        return [f"--hosts=docker://{self.exec_user}@{self.container_id}"]

    def test_environment(self) -> dict[str, str]:
        return {"IMMUTABLE_INFRA_HOST": self.container_id}

    def timings(self) -> dict[str, float]:
        return {}

    def details(self) -> dict[str, Any]:
        """What the verdict records of the host the tests ran against."""
        return {"kind": "container", "image_id": self.image["Id"]}

    @property
    def container_id(self) -> str:
        if self.id is None:
            raise InfraError(f"verify host {self.name} was not started.")
        return self.id

    def check_running(self, when: str = "while the tests ran") -> None:
        state = (self.client.container(self.container_id) or {}).get("State") or {}
        if not state.get("Running"):
            code = state.get("ExitCode")
            raise Broken(f"its command exited with code {code} {when}", code, self.client.logs(self.container_id))

    def wait_ready(self, ports: list[int] | None, start_timeout: int, remaining: float) -> None:
        """Waits until the host listens on ports (None: the image's exposed TCP ports); fails fast when
        its command exits."""
        if ports is None:
            ports = verify_report.exposed_tcp_ports(self.image.get("Config") or {})
        self.check_running("before the tests started")
        if not ports:
            return
        self.progress(f"verify: waiting for port(s) {', '.join(map(str, ports))}")
        deadline = time.monotonic() + min(start_timeout, remaining)
        while True:
            try:
                output = self.client.exec(self.container_id, ["cat", "/proc/net/tcp", "/proc/net/tcp6"])[1]
            except InfraError:
                output = ""  # the host is stopping; the check below says why
            if set(ports) <= verify_report.listening_ports(output):
                return
            self.check_running("before the tests started")
            if time.monotonic() > deadline:
                missing = sorted(set(ports) - verify_report.listening_ports(output))
                raise Broken(f"it did not listen on port(s) {', '.join(map(str, missing))} within "
                             f"{start_timeout} s (set wait_for_ports or start_timeout)",
                             None, self.client.logs(self.container_id))
            time.sleep(POLL_SECONDS)
