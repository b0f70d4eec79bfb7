# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection talks to Docker: a thin client over the Docker SDK.

It turns SDK exceptions into InfraError sentences and returns plain dicts (the engine's own
inspect data), so planners stay free of SDK types. Its methods are grouped by what they act on, one
module each (images, containers and their lifecycle, volumes, the engine itself, tar streams); the
SDK calls they make are the typed methods of `client.api`.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import (
    EngineUnreachable,
    TLSConfig,
    connect,
    engine_address,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.containers import (
    ContainerCalls,
    container_address,
    published_port,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.images import ImageCalls, Images
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.lifecycle import Lifecycle
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.streams import STREAM_CHUNK, StreamCalls, Streams
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.system import System, SystemCalls
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.volumes import VolumeCalls, Volumes

__all__ = ["STREAM_CHUNK", "DockerClient", "EngineCalls", "EngineUnreachable", "TLSConfig", "container_address",
           "published_port"]


class EngineCalls(ImageCalls, ContainerCalls, VolumeCalls, SystemCalls, StreamCalls):
    """Every SDK call the collection makes, typed; a lost connection is EngineUnreachable."""


class DockerClient(Images, Lifecycle, Volumes, System, Streams):
    api: EngineCalls

    def __init__(self, docker_host: str | None = None, timeout: int = 120, tls: TLSConfig | None = None) -> None:
        self.sdk = connect(docker_host, timeout, tls)
        self.docker_host = docker_host
        self.where = engine_address(docker_host)
        self.api = EngineCalls(self.sdk.api, self.where)
