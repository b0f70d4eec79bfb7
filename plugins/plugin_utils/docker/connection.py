# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reaching a Docker engine: the SDK client of an Endpoint (endpoint.py), over TLS or through the SSH
relay (ssh.py), and a lost connection during a call turned into EngineUnreachable, a sentence."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable, InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import Endpoint, TLSConfig
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.ssh import DIAL, SSHRelay

try:
    import docker
    import docker.tls
    import requests
    import urllib3
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound
    from docker.transport.unixconn import UnixHTTPAdapter
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import ReadTimeout
    LOST_CONNECTION: tuple[type[BaseException], ...] = (
        requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError, ConnectionError)
except ImportError:  # reported when a client is created, so ansible-doc works without the SDK
    docker = None  # type: ignore[assignment]
    LOST_CONNECTION = (ConnectionError,)

    # Stand-ins of the same shape, which nothing raises: without the SDK no call is ever made.
    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(APIError):  # type: ignore[no-redef]
        pass

    class ImageNotFound(NotFound):  # type: ignore[no-redef]
        pass

    class ReadTimeout(Exception):  # type: ignore[no-redef]
        pass

    class RequestsConnectionError(Exception):  # type: ignore[no-redef]
        pass

__all__ = ["LOST_CONNECTION", "APIError", "DockerException", "EngineUnreachable", "ImageNotFound", "NotFound",
           "ReadTimeout", "RequestsConnectionError", "SDKCalls", "connect"]


class SDKCalls:
    """Calls of the SDK's low-level client, with a lost connection turned into EngineUnreachable instead
    of a traceback of the HTTP library ("Connection aborted.", FileNotFoundError...). The engine's own
    answers, errors included (APIError, NotFound), pass through unchanged."""

    def __init__(self, api: docker.APIClient, where: str, relay: SSHRelay | None = None) -> None:
        self._api = api
        self.where = where
        self._relay = relay

    @contextmanager
    def answering(self) -> Iterator[None]:
        try:
            yield
        except LOST_CONNECTION as error:
            if isinstance(error, APIError):
                raise
            over_ssh = f"; {self._relay.no_channel}" if self._relay and self._relay.no_channel else ""
            raise EngineUnreachable(f"the Docker engine at {self.where} stopped answering "
                                    f"({type(error).__name__}: {_root_cause(error)}){over_ssh}",
                                    engine=self.where) from None


def _root_cause(error: BaseException) -> str:
    while error.__context__ is not None and not str(error):
        error = error.__context__
    text = str(error.args[-1] if error.args else error)
    return text[:200]


# Idle HTTP connections the SDK keeps to an ssh:// engine: each holds a channel of the SSH connection, and
# sshd allows 10 by default (MaxSessions). Others are made when needed and closed after use.
RELAYED_POOL_SIZE = 4


def connect(endpoint: Endpoint) -> tuple[docker.DockerClient, SSHRelay | None]:
    """The SDK client of the engine, which has answered a ping, and for an ssh:// engine the relay it
    goes through (closed with the client)."""
    if docker is None:
        raise InfraError("The Python package 'docker' (Docker SDK) is not installed on the controller; "
                         "install it with 'pip install docker'.")
    relay = SSHRelay(endpoint.docker_host, endpoint.timeout) if endpoint.scheme == "ssh" else None
    try:
        # Never docker.from_env(): its session trusts the environment (see _EngineAPI).
        sdk = _EngineSDK(base_url=relay.local_host if relay else endpoint.docker_host, timeout=endpoint.timeout,
                         tls=_sdk_tls(endpoint.tls))
        sdk.api.trust_env = False
        if relay:
            sdk.api.one_pool(relay.path)
        sdk.ping()
    except DockerException as error:
        if relay:
            relay.close()
        raise InfraError(f"Cannot reach the Docker engine at {endpoint.describe()}: {error}. "
                         f"{_advice(endpoint, relay)}") from None
    return sdk, relay


def _advice(endpoint: Endpoint, relay: SSHRelay | None) -> str:
    if relay is not None:
        said = "; ".join(relay.failures)
        return (f"On its machine, '{DIAL}' said: {said[-300:]}. An ssh:// engine needs the Docker CLI there." if said
                else "Start the engine on that machine.")
    if endpoint.tls:
        return ("Check that the engine runs with TLS on that address and that ca_path, client_cert and client_key "
                "(or DOCKER_CERT_PATH) are its CA and a certificate it accepts.")
    return "Start the engine or set docker_host / DOCKER_HOST."


if docker is not None:
    class _EngineAPI(docker.APIClient):
        """The SDK's API client, deaf to the controller's proxy and CA-bundle variables: requests lets
        REQUESTS_CA_BUNDLE override the engine's own CA (so TLS engines fail verification), and an
        engine is always reached directly."""

        _custom_adapter: Any  # the SDK's adapter of its unix socket (not in its type stubs)

        def _retrieve_server_version(self) -> str:  # the first request the SDK makes
            self.trust_env = False
            return super()._retrieve_server_version()  # type: ignore[misc]

        def one_pool(self, socket_path: str) -> None:
            """The SDK keeps one pool of connections per request URL, so every new container or exec would
            hold one more idle connection (a channel of the SSH connection); through the relay, one pool
            serves them all."""
            previous = self._custom_adapter
            self._custom_adapter = _RelayedAdapter(f"http+unix://{socket_path}", self.timeout,
                                                   max_pool_size=RELAYED_POOL_SIZE)
            self.mount("http+docker://", self._custom_adapter)
            previous.close()

    class _RelayedAdapter(UnixHTTPAdapter):
        def get_connection(self, url: str | bytes, proxies: Any = None) -> Any:
            return super().get_connection("relay", proxies)

    class _EngineSDK(docker.DockerClient):
        api: _EngineAPI

        def __init__(self, **options: Any) -> None:  # the SDK's own __init__ does only this, with APIClient
            self.api = _EngineAPI(**options)


def _sdk_tls(tls: TLSConfig | None) -> docker.tls.TLSConfig | None:
    if tls is None:
        return None
    for option, path in tls.files().items():
        if not os.path.isfile(path):
            raise InfraError(f"The TLS file {path} ({option}) does not exist; give the path of a PEM file.")
    client_cert = (tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None
    return docker.tls.TLSConfig(client_cert=client_cert, ca_cert=tls.ca_path, verify=tls.validate_certs)
