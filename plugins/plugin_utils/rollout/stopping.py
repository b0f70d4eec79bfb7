# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stops the engine is still finishing: hosts out of the balancer whose service ignores SIGTERM.

A retired host is stopped only once it is drained and out of the balancer, so nothing waits for it
to exit: the stop is sent, and the engine kills the host when its stop_timeout runs out. Until then
the container still runs. This record (a volume named after the service, one label per host with the
time by which the engine will have killed it) is how every run and every controller tells such a host
from a stray one: a host listed here counts as stopped, so it stays in its kept generation instead of
being removed, and a run that needs it back finishes the stop first.
"""

from __future__ import annotations

import time

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    stopping_hosts,
    stopping_labels,
    stopping_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient


class PendingStops:
    def __init__(self, client: DockerClient, service: str) -> None:
        self.client = client
        self.service = service
        self.name = stopping_name(service)
        self.known: dict[str, float] = {}  # as last read or written
        self.offline = False  # the engine holding the record is down: keep it in memory only

    def read(self) -> dict[str, float]:
        """Host name -> epoch by which the engine will have killed it."""
        if not self.offline:
            self.known = stopping_hosts(self.client.volume_labels(self.name))
        return dict(self.known)

    def write(self, pending: dict[str, float]) -> None:
        """Records exactly these hosts; no volume at all when there is none."""
        if not self.offline:
            if not pending:
                if self.client.volume_labels(self.name) is not None:
                    self.client.remove_volume(self.name)
            else:
                self.client.replace_volume(self.name, stopping_labels(self.service, pending))
        self.known = dict(pending)


def deadline_text(deadline: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(deadline))
