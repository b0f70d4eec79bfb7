# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Modules that work over a fleet of engines: the engines option (or engines_group, read from the
inventory the task sees, or the single docker_host) resolved once per task, and one client per engine."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import EngineClients, connect_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import (
    Engine,
    engines_from_group,
    parse_engines,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_store import DockerStore
from ansible_collections.immutable.infra.plugins.plugin_utils.service.record import read_record, with_record
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import SERVICE_PATTERN
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext


def group_resolved(params: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
    """The params with engines_group replaced by the engines it declares."""
    group = params.get("engines_group")
    if not group:
        return params
    if params.get("engines") is not None:
        raise InfraError("Set either engines or engines_group, not both.")
    engines = engines_from_group(group, task_vars.get("groups") or {}, task_vars.get("hostvars") or {})
    return dict(params, engines=engines, engines_group=None)


class FleetManager(Manager):
    """A manager over every engine of the fleet. client() is the first declared engine's client: the
    coordinator, where a service's lock lives (for a fleet of one, the docker_host engine).

    A module that names a service takes the options of record_options it was not given from the
    service's record (service/record.py), read on the engine it reaches first."""

    record_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        params = group_resolved(params, context.inventory)
        super().__init__(params, context)
        self.engines: list[Engine] = parse_engines(params.get("engines"), params, os.environ)
        self._reached: EngineClients | None = None
        self.given = {name: params.get(name) for name in self.record_options}  # as the task gave them
        if self.record_options and SERVICE_PATTERN.fullmatch(str(params.get("service") or "")):
            self._take_service_record(params["service"])

    def record_store(self) -> ServiceStore:
        """Where the service record is read: the first engine's store (the controller's own engine when the
        task names none)."""
        return DockerStore(self.client(), "")

    def _take_service_record(self, service: str) -> None:
        try:
            found = read_record(self.record_store(), service)
        except InfraError:
            return  # the engine does not answer: the module says so when it reaches it
        merged = with_record(self.params, found, self.record_options)
        moved = any(merged.get(name) != self.params.get(name) for name in ("engines", "docker_host"))
        self.params = merged
        if moved:
            self.engines = parse_engines(merged.get("engines"), merged, os.environ)
            self.close()

    @property
    def several(self) -> bool:
        return len(self.engines) > 1

    def reach(self) -> EngineClients:
        """Every engine, reached once per task: the single docker_host directly (its errors read as
        they always did), declared engines all at once, noting those that do not answer."""
        if self._reached is None:
            if self.params.get("engines") is None:
                engine = self.engines[0]
                self._reached = EngineClients({engine.name: DockerClient(engine.endpoint)})
            else:
                self._reached = connect_engines(self.engines)
        return self._reached

    def clients(self) -> dict[str, DockerClient]:
        """One client per engine, in declaration order; an engine that is down is named in one sentence."""
        return self.reach().require_all()

    def client(self) -> DockerClient:
        return next(iter(self.clients().values()))

    def close(self) -> None:
        if self._reached is not None:
            self._reached.close()
            self._reached = None
