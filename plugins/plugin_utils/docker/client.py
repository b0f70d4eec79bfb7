# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection talks to Docker: a thin client over the Docker SDK.

It turns SDK exceptions into InfraError sentences and returns plain dicts (the engine's own
inspect data), so planners stay free of SDK types. Its methods are grouped by what they act on, one
module each (images, containers and their lifecycle, volumes, the engine itself, tar streams); the
SDK calls they make are the typed methods of `client.api`. Where the engine is and how it is reached
(TLS, SSH) is its Endpoint (endpoint.py); child processes that talk to the same engine (a play, pytest,
Molecule) take engine_environment().
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import EngineUnreachable, connect
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.containers import (
    ContainerCalls,
    container_address,
    published_port,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import (
    CERT_FILES,
    Endpoint,
    TLSConfig,
    cert_directory,
    cli_environment,
    endpoint_from_environment,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.images import ImageCalls, Images
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.lifecycle import Lifecycle
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.streams import STREAM_CHUNK, StreamCalls, Streams
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.system import System, SystemCalls
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.volumes import VolumeCalls, Volumes

__all__ = ["STREAM_CHUNK", "DockerClient", "Endpoint", "EngineCalls", "EngineUnreachable", "TLSConfig",
           "container_address", "published_port"]


class EngineCalls(ImageCalls, ContainerCalls, VolumeCalls, SystemCalls, StreamCalls):
    """Every SDK call the collection makes, typed; a lost connection is EngineUnreachable."""


class DockerClient(Images, Lifecycle, Volumes, System, Streams):
    api: EngineCalls

    def __init__(self, endpoint: Endpoint | None = None) -> None:
        """The engine of endpoint; without one, the engine the Docker CLI would use (DOCKER_HOST and its
        TLS variables, else the default socket)."""
        self.endpoint = endpoint or endpoint_from_environment()
        self.sdk, self.relay = connect(self.endpoint)
        self.where = self.endpoint.docker_host
        self.api = EngineCalls(self.sdk.api, self.where, self.relay)
        self._cert_dir: str | None = None

    @property
    def local_host(self) -> str:
        """The engine's address for a process on the controller: the SSH relay's socket for an ssh://
        engine (one SSH connection for the whole task), else docker_host itself."""
        return self.relay.local_host if self.relay else self.endpoint.docker_host

    def engine_environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """base (a child process's environment) with the Docker CLI's variables of this engine, and none
        of another: the CLI, community.docker, testinfra and Molecule in the child reach this engine."""
        tls = self.endpoint.tls
        return cli_environment(base, self.local_host, tls, self._cli_cert_dir(tls) if tls and tls.files() else None)

    def _cli_cert_dir(self, tls: TLSConfig) -> str:
        """A directory with the TLS files under the names the CLI looks for: their own, else a private one
        of links to them."""
        found = cert_directory(tls)
        if found:
            return found
        if self._cert_dir is None:
            self._cert_dir = tempfile.mkdtemp(prefix="immutable-infra-tls-")
            for option, path in tls.files().items():
                os.symlink(os.path.abspath(path), os.path.join(self._cert_dir, CERT_FILES[option]))
        return self._cert_dir

    def close(self) -> None:
        """Ends the SSH connection of an ssh:// engine and removes what the client made on the controller."""
        self.sdk.close()
        if self.relay:
            self.relay.close()
        if self._cert_dir:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
