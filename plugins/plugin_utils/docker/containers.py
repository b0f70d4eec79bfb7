# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Containers: inspect, list by label, create, remove, commit, and what runs or changed inside one;
what a container's inspect data says about its address and published port."""

from __future__ import annotations

import time
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, OutputEndedEarly
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import APIError, NotFound, SDKCalls


class ContainerCalls(SDKCalls):
    def inspect_container(self, container: str) -> dict[str, Any]:
        with self.answering():
            return self._api.inspect_container(container)

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.answering():
            return self._api.containers(all=all, filters=filters)

    def create_host_config(self, network_mode: str | None = None, **options: Any) -> dict[str, Any]:
        with self.answering():
            return self._api.create_host_config(network_mode=network_mode, **options)

    def create_container(self, image: str, name: str, labels: dict[str, str], command: list[str] | None = None,
                         entrypoint: list[str] | None = None, **options: Any) -> dict[str, Any]:
        """options: the SDK's (environment, user, ports, host_config, detach, network_disabled...)."""
        with self.answering():
            return self._api.create_container(image, name=name, labels=labels, command=command, entrypoint=entrypoint,
                                              **options)

    def connect_container_to_network(self, container: str, network: str) -> None:
        with self.answering():
            self._api.connect_container_to_network(container, network)

    def remove_container(self, container: str, force: bool = False, v: bool = False) -> None:
        with self.answering():
            self._api.remove_container(container, force=force, v=v)

    def start(self, container: str) -> None:
        with self.answering():
            self._api.start(container)

    def stop(self, container: str, timeout: int | None = None) -> None:
        with self.answering():
            self._api.stop(container, timeout=timeout)

    def post_stop(self, container: str, timeout: int, wait: float) -> None:
        """The engine's stop request, answered within `wait` seconds or not at all (ReadTimeout): the SDK's
        stop() waits for the answer, its request helpers need not. A read timeout here is the expected
        outcome, not a lost engine, so the connection errors reach the caller as they are."""
        api: Any = self._api  # the request helpers are not part of the SDK's typed interface
        response = api._post(api._url("/containers/{0}/stop", container), params={"t": timeout}, timeout=wait)
        if response.status_code not in (304, 404):
            api._raise_for_status(response)

    def kill(self, container: str) -> None:
        with self.answering():
            self._api.kill(container)

    def commit(self, container: str, repository: str, tag: str, message: str, conf: dict[str, Any]) -> dict[str, Any]:
        with self.answering():
            return self._api.commit(container, repository=repository, tag=tag, message=message, conf=conf)

    def diff(self, container: str) -> list[dict[str, Any]]:
        with self.answering():
            return self._api.diff(container)

    def logs(self, container: str, tail: int) -> bytes:
        with self.answering():
            return self._api.logs(container, stdout=True, stderr=True, tail=tail)

    def exec_create(self, container: str, command: list[str], user: str) -> dict[str, Any]:
        with self.answering():
            return self._api.exec_create(container, command, user=user)

    def exec_start(self, exec_id: str) -> bytes:
        with self.answering():
            return self._api.exec_start(exec_id)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        with self.answering():
            return self._api.exec_inspect(exec_id)


EXIT_WAIT = 2.0  # seconds an exec whose output ended may take to be reported exited (two events in the engine)
EXIT_POLL = 0.02


class Containers:
    api: ContainerCalls

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

    def create_marker(self, name: str, image: str, labels: dict[str, str]) -> str | None:
        """Create a never-started container as an atomic marker; its ID, or None when the name is taken."""
        try:
            return self.api.create_container(image, name=name, labels=labels, command=["true"], entrypoint=[],
                                             network_disabled=True)["Id"]
        except APIError as error:
            if error.status_code == 409:
                return None
            raise InfraError(f"Docker could not create {name}: {error.explanation}") from None

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

    def commit(self, container_id: str, repository: str, tag: str, config: dict[str, Any],
               message: str = "") -> str:
        try:
            result = self.api.commit(container_id, repository=repository, tag=tag, message=message, conf=config)
        except APIError as error:
            raise InfraError(f"Docker could not commit container {container_id[:12]}: {error.explanation}") from None
        return result["Id"]

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
            return self.api.logs(container_id, tail=tail).decode("utf-8", "replace")
        except (NotFound, APIError):
            return ""

    def exec(self, container_id: str, command: list[str], user: str = "root") -> tuple[int, str]:
        """Runs the command in the container until it exits: its exit code and output. Raises
        OutputEndedEarly when the output ends (a lost connection ends it too) but the command does not exit."""
        try:
            created = self.api.exec_create(container_id, command, user=user)
            output = self.api.exec_start(created["Id"]).decode("utf-8", "replace")
            deadline = time.monotonic() + EXIT_WAIT
            while True:
                inspected = self.api.exec_inspect(created["Id"])
                if not inspected.get("Running") and inspected.get("ExitCode") is not None:
                    return inspected["ExitCode"], output
                if time.monotonic() >= deadline:
                    raise OutputEndedEarly(
                        f"The output of {command[0]} in container {container_id[:12]} ended, but the command had not "
                        f"exited {EXIT_WAIT:g} s later: the connection to the engine was lost while it ran, or it "
                        f"closed its output and went on running. Its outcome is not known; the output so far: "
                        f"{output.strip()[-300:]!r}", container=container_id)
                time.sleep(EXIT_POLL)
        except APIError as error:
            raise InfraError(f"Docker could not run {command[0]} in container {container_id[:12]}: "
                             f"{error.explanation}") from None


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
