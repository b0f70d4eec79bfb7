# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One Docker client per engine, all reached at once; an engine that does not answer is named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine


@dataclass
class EngineClients:
    clients: dict[str, DockerClient] = field(default_factory=dict)  # engine name -> client, declaration order
    down: dict[str, str] = field(default_factory=dict)  # engine name -> why it cannot be reached

    def require_all(self) -> dict[str, DockerClient]:
        """The clients, or one sentence naming every engine that is down."""
        if self.down:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in self.down.items())
            raise InfraError(f"Engine(s) {', '.join(self.down)} cannot be reached ({reasons}). Nothing was changed.",
                             engines_down=sorted(self.down))
        return self.clients

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def connect_engines(engines: Sequence[Engine]) -> EngineClients:
    """Reaches every engine in parallel (a slow engine costs its own timeout, not the sum)."""
    reached = EngineClients()

    def attempt(engine: Engine) -> DockerClient | str:
        try:
            return DockerClient(engine.endpoint)
        except InfraError as error:
            return error.message

    with ThreadPoolExecutor(max_workers=max(1, len(engines))) as pool:
        outcomes = list(pool.map(attempt, engines))
    for engine, outcome in zip(engines, outcomes, strict=True):
        if isinstance(outcome, DockerClient):
            reached.clients[engine.name] = outcome
        else:
            reached.down[engine.name] = outcome
    return reached


def image_presence(clients: Mapping[str, DockerClient], image_id: str) -> dict[str, bool]:
    """Which engines hold the image (by ID), in the order of clients."""
    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        found = dict(zip(clients, pool.map(lambda client: client.image(image_id) is not None, clients.values()),
                         strict=True))
    return found
