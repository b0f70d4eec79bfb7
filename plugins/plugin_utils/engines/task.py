# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Modules that work over a fleet of engines: the engines option (or engines_group, or the single
docker_host) resolved once per task, and one client per engine.

EnginesAction reads engines_group from the inventory the task sees (only the action has the task's
variables) and hands the manager an `engines` list, so a FleetManager never needs the inventory.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import EngineClients, connect_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import (
    Engine,
    engines_from_group,
    parse_engines,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction
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


class EnginesAction(InfraAction):
    """The action of a module whose argument spec includes ENGINES_ARGUMENT_SPEC."""

    def run(self, tmp=None, task_vars=None):
        self._task_vars = task_vars or {}
        return super().run(tmp, task_vars)

    def manage(self, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        return super().manage(group_resolved(params, getattr(self, "_task_vars", {})), context)


class FleetManager(Manager):
    """A manager over every engine of the fleet. client() is the first declared engine's client: the
    coordinator, where a service's lock lives (for a fleet of one, the docker_host engine)."""

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.engines: list[Engine] = parse_engines(params.get("engines"), params.get("docker_host"))
        self._reached: EngineClients | None = None

    @property
    def several(self) -> bool:
        return len(self.engines) > 1

    def reach(self) -> EngineClients:
        """Every engine, reached once per task: the single docker_host directly (its errors read as
        they always did), declared engines all at once, noting those that do not answer."""
        if self._reached is None:
            if self.params.get("engines") is None:
                engine = self.engines[0]
                self._reached = EngineClients({engine.name: DockerClient(engine.docker_host, tls=engine.tls)})
            else:
                self._reached = connect_engines(self.engines)
        return self._reached

    def clients(self) -> dict[str, DockerClient]:
        """One client per engine, in declaration order; an engine that is down is named in one sentence."""
        return self.reach().require_all()

    def client(self) -> DockerClient:
        return next(iter(self.clients().values()))
