# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection talks to Docker: a thin wrapper over the Docker SDK.

It turns SDK exceptions into InfraError sentences and returns plain dicts (the engine's own
inspect data), so planners stay free of SDK types.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable, InfraError, parse_rfc3339

try:
    import docker
    import docker.tls
    import requests
    import urllib3
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import ReadTimeout
    LOST_CONNECTION: tuple[type[BaseException], ...] = (
        requests.exceptions.ConnectionError, requests.exceptions.Timeout, urllib3.exceptions.HTTPError,
        ConnectionError)
except ImportError:  # reported when a client is created, so ansible-doc works without the SDK
    docker = None  # type: ignore[assignment]
    LOST_CONNECTION = (ConnectionError,)


class EngineCalls:
    """The SDK's low-level client, with a lost connection turned into EngineUnreachable, a sentence, instead
    of a traceback of the HTTP library ("Connection aborted.", FileNotFoundError...)."""

    def __init__(self, api: Any, where: str) -> None:
        self._api = api
        self._where = where

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._api, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except LOST_CONNECTION as error:
                if isinstance(error, APIError):
                    raise
                raise EngineUnreachable(f"the Docker engine at {self._where} stopped answering "
                                        f"({type(error).__name__}: {_root_cause(error)})", engine=self._where) from None
        return call


def _root_cause(error: BaseException) -> str:
    while error.__context__ is not None and not str(error):
        error = error.__context__
    text = str(error.args[-1] if error.args else error)
    return text[:200]


STREAM_CHUNK = 1024 * 1024  # image streams move in pieces of this size, never whole in memory


@dataclass(frozen=True)
class TLSConfig:
    """Files for a tcp:// engine that speaks TLS: the CA that signed the engine's certificate and the
    controller's client certificate and key (the engine's --tlsverify checks them)."""
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


class DockerClient:
    def __init__(self, docker_host: str | None = None, timeout: int = 120, tls: TLSConfig | None = None) -> None:
        if docker is None:
            raise InfraError("The Python package 'docker' (Docker SDK) is not installed on the controller; "
                             "install it with 'pip install docker'.")
        where = docker_host or "the engine named by DOCKER_HOST or the default socket"
        self.docker_host = docker_host
        self.where = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            if docker_host:
                self.sdk: Any = _EngineSDK(base_url=docker_host, timeout=timeout, tls=_sdk_tls(tls),
                                           use_ssh_client=docker_host.startswith("ssh://"))
                self.sdk.api.trust_env = False
            else:
                self.sdk = docker.from_env(timeout=timeout)
            self.sdk.ping()
        except DockerException as error:
            raise InfraError(f"Cannot reach the Docker engine at {where}: {error}. "
                             "Start the engine or set docker_host / DOCKER_HOST.") from None
        self.api = EngineCalls(self.sdk.api, self.where)

    # images ---------------------------------------------------------------------------------
    def image(self, reference: str) -> dict[str, Any] | None:
        """The inspect data of an image by ID or reference, or None when the engine lacks it."""
        if not reference:
            return None
        try:
            return self.api.inspect_image(reference)
        except (ImageNotFound, NotFound):
            return None
        except APIError as error:
            if error.status_code in (400, 404):
                return None
            raise InfraError(f"Docker could not inspect image {reference}: {error.explanation}") from None

    def images_with_label(self, label: str, value: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Inspect data of the images carrying the label (with that value), newest first; at most limit."""
        selector = label if value is None else f"{label}={value}"
        summaries = sorted(self.api.images(filters={"label": selector, "dangling": False}),
                           key=lambda summary: summary.get("Created", 0), reverse=True)
        images = (self.image(summary["Id"]) for summary in summaries[:limit])
        return [image for image in images if image]

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        try:
            self.api.tag(image_id, repository, tag, force=True)
        except APIError as error:
            raise InfraError(f"Docker could not tag {image_id} as {repository}:{tag}: {error.explanation}") from None

    def remove_image(self, reference: str) -> None:
        """Remove an image reference (untag; the last reference deletes the image). Never forced: an
        image that a container uses is refused, with conflict=True in the error's details."""
        try:
            self.api.remove_image(reference, force=False, noprune=False)
        except (ImageNotFound, NotFound):
            pass
        except APIError as error:
            if error.status_code != 404:
                raise InfraError(f"Docker could not remove image {reference}: {error.explanation}",
                                 conflict=error.status_code == 409) from None

    def disk_usage(self) -> dict[str, Any]:
        """The engine's `docker system df` data: images, containers and volumes with their sizes."""
        try:
            return self.api.df()
        except APIError as error:
            raise InfraError(f"Docker could not report its disk usage: {error.explanation}") from None

    def pull(self, reference: str, auth_config: dict[str, str] | None = None) -> dict[str, Any]:
        if "@" in reference:  # repository@sha256:...: the engine takes a digest in place of the tag
            repository, tag = reference.split("@", 1)
        else:
            repository, tag = (reference.rsplit(":", 1) if ":" in reference.rsplit("/", maxsplit=1)[-1]
                               else (reference, "latest"))
        try:
            self.api.pull(repository, tag=tag, auth_config=auth_config)
        except DockerException as error:
            raise InfraError(f"Image {reference} is not in the local engine and pulling it failed: {error}.") from None
        image = self.image(reference)
        if image is None:
            raise InfraError(f"Image {reference} could not be found after pulling it.")
        return image

    def push(self, repository: str, tag: str, auth_config: dict[str, str] | None = None) -> str:
        """Push repository:tag to its registry; returns the manifest digest the registry gave it."""
        digest = None
        try:
            for event in self.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config):
                if event.get("error"):
                    raise InfraError(f"Pushing {repository}:{tag} failed: {event['error']}.")
                digest = ((event.get("aux") or {}).get("Digest")) or digest
        except DockerException as error:
            raise InfraError(f"Pushing {repository}:{tag} failed: {error}.") from None
        if not digest:
            raise InfraError(f"Pushing {repository}:{tag} gave no digest; the registry did not confirm the push.")
        return digest

    def save_image(self, image_id: str) -> Iterator[bytes]:
        """The image as the tar stream of `docker save`, in pieces (nothing is held whole in memory)."""
        try:
            yield from self.api.get_image(image_id, chunk_size=STREAM_CHUNK)
        except DockerException as error:
            raise InfraError(f"Docker could not export image {image_id}: {error}.") from None

    def load_image(self, stream: Iterable[bytes]) -> None:
        """Load a `docker save` tar stream; the engine reads it as it arrives (chunked upload)."""
        try:
            for event in self.api.load_image(stream, quiet=True):
                if isinstance(event, dict) and event.get("error"):
                    raise InfraError(f"Docker could not load the image stream: {event['error']}.")
        except DockerException as error:
            raise InfraError(f"Docker could not load the image stream: {error}.") from None

    # containers -----------------------------------------------------------------------------
    def run_detached(self, image: str, name: str, labels: dict[str, str], **options: Any) -> str:
        """Create (see create_container) and start a container; returns its ID. Nothing is left behind
        when start fails."""
        container_id = self.create_container(image, name, labels, **options)
        try:
            self.start(container_id)
        except InfraError:
            self.remove_container(container_id)
            raise
        return container_id

    def container(self, container_id: str) -> dict[str, Any] | None:
        """The inspect data of a container, or None when it does not exist (any more)."""
        if not container_id:
            return None
        try:
            return self.api.inspect_container(container_id)
        except NotFound:
            return None
        except APIError as error:
            if error.status_code == 404:
                return None
            raise InfraError(f"Docker could not inspect container {container_id[:12]}: {error.explanation}") from None

    def changes(self, container_id: str) -> list[dict[str, Any]]:
        """Filesystem changes of a container against its image (docker diff): Path and Kind (0 modified,
        1 added, 2 deleted)."""
        try:
            return self.api.diff(container_id) or []
        except NotFound:
            return []
        except APIError as error:
            raise InfraError(f"Docker could not list the changes of container {container_id[:12]}: "
                             f"{error.explanation}") from None

    def logs(self, container_id: str, tail: int = 20) -> str:
        """The last lines the container wrote to stdout and stderr; empty when it is gone."""
        try:
            return self.api.logs(container_id, stdout=True, stderr=True, tail=tail).decode("utf-8", "replace")
        except (NotFound, APIError):
            return ""

    def exec(self, container_id: str, command: list[str], user: str = "root") -> tuple[int, str]:
        try:
            created = self.api.exec_create(container_id, command, user=user)
            output = self.api.exec_start(created["Id"])
            return self.api.exec_inspect(created["Id"])["ExitCode"], output.decode("utf-8", "replace")
        except APIError as error:
            raise InfraError(f"Docker could not run {command[0]} in container {container_id[:12]}: "
                             f"{error.explanation}") from None

    def put_files(self, container_id: str, files: Iterable[tuple[str, bytes, int]]) -> None:
        """Copy (absolute path, content, mode) triples into the container's filesystem."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for path, content, mode in files:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(content), mode, int(time.time())
                archive.addfile(info, io.BytesIO(content))
        try:
            self.api.put_archive(container_id, "/", buffer.getvalue())
        except APIError as error:
            raise InfraError(f"Docker could not copy files into container {container_id[:12]}: "
                             f"{error.explanation}") from None

    def commit(self, container_id: str, repository: str, tag: str, config: dict[str, Any],
               message: str = "") -> str:
        try:
            result = self.api.commit(container_id, repository=repository, tag=tag, message=message, conf=config)
        except APIError as error:
            raise InfraError(f"Docker could not commit container {container_id[:12]}: {error.explanation}") from None
        return result["Id"]

    def export(self, container_id: str, chunk_size: int = 4 * 1024 * 1024) -> Iterable[bytes]:
        """The container's filesystem as a tar stream (docker export), in chunks."""
        try:
            return self.api.export(container_id, chunk_size=chunk_size)
        except APIError as error:
            raise InfraError(f"Docker could not export container {container_id[:12]}: {error.explanation}") from None

    def remove_container(self, container_id: str) -> None:
        """Force-remove a container; a container that is already gone is not an error."""
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 404 and "already in progress" not in str(error.explanation):
                raise InfraError(f"Docker could not remove container {container_id[:12]}: "
                                 f"{error.explanation}") from None

    def containers_with_labels(self, labels: dict[str, str | None], include_stopped: bool = True,
                               inspect: bool = True) -> list[dict[str, Any]]:
        """Inspect data of containers matching every label (value None: label present).

        With inspect=False one list call gives, in the same shape, what it holds: Id, Name, Image,
        Config.Labels, State.Running and State.Status, NetworkSettings. Observing a service of
        many hosts then costs one call instead of one per host.
        """
        selectors = [key if value is None else f"{key}={value}" for key, value in labels.items()]
        summaries = self.api.containers(all=include_stopped, filters={"label": selectors})
        if not inspect:
            return [{"Id": summary["Id"], "Name": (summary.get("Names") or [""])[0], "Image": summary.get("ImageID"),
                     "Config": {"Labels": summary.get("Labels") or {}},
                     "State": {"Running": summary.get("State") == "running", "Status": summary.get("State")},
                     "NetworkSettings": dict(summary.get("NetworkSettings") or {},
                                             Ports=_summary_ports(summary.get("Ports") or []))}
                    for summary in summaries]
        containers = []
        for summary in summaries:
            try:
                containers.append(self.api.inspect_container(summary["Id"]))
            except NotFound:
                continue  # removed between list and inspect
        return containers

    # volumes (verdict records) -------------------------------------------------------------------
    def replace_volume(self, name: str, labels: dict[str, str]) -> None:
        self.remove_volume(name)
        self.create_volume(name, labels)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Creates a volume; one that exists already keeps its labels (the engine's rule)."""
        try:
            self.api.create_volume(name, labels=labels)
        except APIError as error:
            raise InfraError(f"Docker could not create volume {name}: {error.explanation}") from None

    def volumes_matching(self, label: str, value: str) -> list[dict[str, Any]]:
        """The engine's records (Name, Labels, CreatedAt...) of the volumes whose label has the value."""
        try:
            return self.api.volumes(filters={"label": f"{label}={value}"}).get("Volumes") or []
        except APIError as error:
            raise InfraError(f"Docker could not list volumes: {error.explanation}") from None

    def engine_time(self) -> float:
        """The engine's clock, in epoch seconds: what lock leases are measured against."""
        try:
            return parse_rfc3339(self.api.info()["SystemTime"])
        except (APIError, KeyError, ValueError) as error:
            raise InfraError(f"Docker could not tell its time: {error}") from None

    def remove_volume(self, name: str) -> None:
        try:
            self.api.remove_volume(name, force=True)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 404:
                raise InfraError(f"Docker could not remove volume {name}: {error.explanation}") from None

    def volume_labels(self, name: str) -> dict[str, str] | None:
        try:
            return self.api.inspect_volume(name).get("Labels") or {}
        except NotFound:
            return None
        except APIError as error:
            if error.status_code == 404:
                return None
            raise InfraError(f"Docker could not inspect volume {name}: {error.explanation}") from None

    def volumes_with_label(self, label: str, value: str | None = None) -> list[dict[str, str]]:
        selector = label if value is None else f"{label}={value}"
        volumes = self.api.volumes(filters={"label": selector}).get("Volumes") or []
        return [volume.get("Labels") or {} for volume in volumes]

    def create_container(self, image: str, name: str, labels: dict[str, str],
                         environment: dict[str, str] | None = None, networks: list[str] | None = None,
                         entrypoint: list[str] | None = None, command: list[str] | None = None,
                         user: str | None = None, publish: tuple[int, str] | None = None,
                         **host_options: Any) -> str:
        """Create (not start) a container, attached to the given networks (the engine's default when
        none); nothing is left when it fails. publish: (container port, host address) to publish that
        port on a free port of the engine's machine at that address."""
        networks = networks or []
        if publish:
            host_options["port_bindings"] = {publish[0]: (publish[1], None)}
        try:
            host_config = self.api.create_host_config(network_mode=networks[0] if networks else None,
                                                      **host_options)
            created = self.api.create_container(image, name=name, labels=labels, environment=environment,
                                                entrypoint=entrypoint, command=command, user=user,
                                                ports=[publish[0]] if publish else None,
                                                host_config=host_config, detach=True)
        except APIError as error:
            if error.status_code == 409:
                raise InfraError(f"A container named {name} already exists; remove or rename it.") from None
            raise InfraError(f"Docker could not create container {name}: {error.explanation}") from None
        try:
            for network in networks[1:]:
                self.api.connect_container_to_network(created["Id"], network)
        except APIError as error:
            self.remove_container(created["Id"])
            raise InfraError(f"Docker could not attach {name} to network {network}: {error.explanation}") from None
        return created["Id"]

    def start(self, container_id: str) -> None:
        try:
            self.api.start(container_id)
        except APIError as error:
            raise InfraError(f"Docker could not start container {container_id[:12]}: {error.explanation}") from None

    def stop(self, container_id: str, timeout: int) -> None:
        try:
            self.api.stop(container_id, timeout=timeout)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code not in (304, 404):
                raise InfraError(f"Docker could not stop container {container_id[:12]}: {error.explanation}") from None

    def network_exists(self, name: str) -> bool:
        try:
            self.api.inspect_network(name)
            return True
        except NotFound:
            return False
        except APIError as error:
            if error.status_code in (400, 404):
                return False
            raise InfraError(f"Docker could not inspect network {name}: {error.explanation}") from None

    def request_stop(self, container_id: str, timeout: int, wait: float) -> bool:
        """Asks the engine to stop the container (SIGTERM, then SIGKILL after `timeout` seconds) and waits
        at most `wait` seconds for it; True when it stopped within that. Otherwise the engine goes on
        with the stop by itself: it does not depend on the caller waiting for the answer."""
        # The SDK's stop() waits for the answer; its request helpers do not have to. The raw client: a
        # read timeout here is the expected outcome, not a lost engine.
        api: Any = self.sdk.api
        try:
            response = api._post(api._url("/containers/{0}/stop", container_id), params={"t": timeout},
                                 timeout=max(wait, 0.05))
            if response.status_code not in (304, 404):
                api._raise_for_status(response)
            return True
        except (ReadTimeout, RequestsConnectionError) as error:
            if isinstance(error, RequestsConnectionError) and "timed out" not in str(error).lower():
                raise InfraError(f"Docker could not stop container {container_id[:12]}: {error}") from None
            return False
        except APIError as error:
            raise InfraError(f"Docker could not stop container {container_id[:12]}: {error.explanation}") from None

    def kill(self, container_id: str) -> None:
        """SIGKILL; a container that is not running (any more) is not an error."""
        try:
            self.api.kill(container_id)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code not in (404, 409) and "is not running" not in str(error.explanation):
                raise InfraError(f"Docker could not kill container {container_id[:12]}: {error.explanation}") from None

    def wait_exited(self, container_id: str, timeout: float) -> bool:
        """Waits until the container is not running; False when it still runs after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            inspected = self.container(container_id)
            if inspected is None or not (inspected.get("State") or {}).get("Running"):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def create_marker(self, name: str, image: str, labels: dict[str, str]) -> str | None:
        """Create a never-started container as an atomic marker; its ID, or None when the name is taken."""
        try:
            return self.api.create_container(image, name=name, labels=labels, command=["true"], entrypoint=[],
                                             network_disabled=True)["Id"]
        except APIError as error:
            if error.status_code == 409:
                return None
            raise InfraError(f"Docker could not create {name}: {error.explanation}") from None


if docker is not None:
    class _EngineAPI(docker.APIClient):
        """The SDK's API client, deaf to the controller's proxy and CA-bundle variables: requests lets
        REQUESTS_CA_BUNDLE override the engine's own CA (so TLS engines fail verification), and an
        engine named by docker_host is reached directly."""

        def _retrieve_server_version(self) -> str:  # the first request the SDK makes
            self.trust_env = False
            return super()._retrieve_server_version()  # type: ignore[misc]

    class _EngineSDK(docker.DockerClient):
        def __init__(self, **options: Any) -> None:  # the SDK's own __init__ does only this, with APIClient
            self.api = _EngineAPI(**options)


def _sdk_tls(tls: TLSConfig | None) -> Any:
    if tls is None:
        return None
    for what, path in (("CA certificate", tls.ca_cert), ("client certificate", tls.client_cert),
                       ("client key", tls.client_key)):
        if path and not os.path.isfile(path):
            raise InfraError(f"The TLS {what} {path} does not exist; give the path of a PEM file.")
    client_cert = (tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None
    return docker.tls.TLSConfig(client_cert=client_cert,
                                ca_cert=tls.ca_cert, verify=tls.verify)


def container_address(inspected: dict[str, Any], network: str | None = None) -> str | None:
    """The container's IP on the named network, or on its first network."""
    networks = ((inspected.get("NetworkSettings") or {}).get("Networks")) or {}
    if network and network in networks:
        return networks[network].get("IPAddress") or None
    for settings in networks.values():
        if settings.get("IPAddress"):
            return settings["IPAddress"]
    return None


def _summary_ports(ports: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """A container list entry's Ports in the shape of inspect's NetworkSettings.Ports."""
    shaped: dict[str, list[dict[str, str]]] = {}
    for entry in ports:
        if entry.get("PublicPort"):
            shaped.setdefault(f"{entry.get('PrivatePort')}/{entry.get('Type') or 'tcp'}", []).append(
                {"HostIp": str(entry.get("IP") or ""), "HostPort": str(entry["PublicPort"])})
    return shaped


def published_port(inspected: dict[str, Any], port: int) -> int | None:
    """The port of the engine's machine that the container's TCP port is published on, if any."""
    bindings = (((inspected.get("NetworkSettings") or {}).get("Ports")) or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        if str(binding.get("HostPort") or "").isdigit():
            return int(binding["HostPort"])
    return None
