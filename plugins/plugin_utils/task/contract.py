# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The task contract every module shares: the options all of them take, where and how the task
runs (TaskContext), and the manager base that turns those into a Docker client and a ledger.

The action base (action.py) merges SHARED_OPTIONS into each module's own argument spec and builds
one TaskContext; a manager takes (params, context) and does the module's work. The doc fragment
immutable.infra.action documents SHARED_OPTIONS, and a unit test keeps the two equal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import (
    CONNECTION_OPTIONS,
    Endpoint,
    resolve_endpoint,
)

# How to reach the Docker engine (community.docker's names, with the Docker CLI's environment
# variables as fallbacks: docker/endpoint.py), and where the ledger is.
SHARED_OPTIONS: dict[str, Any] = {
    **CONNECTION_OPTIONS,
    "ledger": {"type": "path"},
}


def task_argument_spec(own: dict[str, Any]) -> dict[str, Any]:
    """A module's own options with the shared ones; a module may not redefine a shared option."""
    redefined = sorted(set(own) & set(SHARED_OPTIONS))
    if redefined:
        raise ValueError(f"options {', '.join(redefined)} are shared by every module; leave them out of its own spec")
    return {**own, **SHARED_OPTIONS}


def silent(message: str) -> None:
    """The progress callback when nobody is listening."""


@dataclass
class TaskContext:
    """Where and how the calling task runs: the play's directory, its modes, and how Ansible
    resolves roles and collections for it (used by the modules that run roles)."""

    basedir: str
    check_mode: bool = False
    diff_mode: bool = False
    roles_path: list[str] = field(default_factory=list)
    collections_path: list[str] = field(default_factory=list)
    play_collections: list[str] = field(default_factory=list)
    ansible_core_version: str = ""
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: Callable[[str], None] = silent
    inventory: dict[str, Any] = field(default_factory=dict)  # the task's groups and hostvars


class Manager:
    """Does one module's work from its validated params and the task's context."""

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        self.params = params
        self.context = context
        self.progress = context.progress
        self._client: DockerClient | None = None
        self._ledger: Ledger | None = None

    def endpoint(self) -> Endpoint:
        """The engine of the connection options; those unset fall back to the Docker CLI's environment
        variables (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH...), then to the default socket."""
        return resolve_endpoint(self.params, os.environ)

    def client(self) -> DockerClient:
        """The Docker engine of endpoint(), reached once per task."""
        if self._client is None:
            self._client = DockerClient(self.endpoint())
        return self._client

    def close(self) -> None:
        """Ends the task's connections to its engines (an ssh:// engine's SSH connection among them)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def ledger(self) -> Ledger:
        """The ledger of the ledger option (IMMUTABLE_INFRA_LEDGER or the default path when unset)."""
        if self._ledger is None:
            self._ledger = Ledger(self.params["ledger"] or default_ledger_path())
        return self._ledger

    def run(self) -> dict[str, Any]:
        raise NotImplementedError
