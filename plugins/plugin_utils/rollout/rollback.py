# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback: put an earlier revision live through the same safe swap as a rollout.

The revision's image and the spec its hosts were made from (their labels) decide what runs. When
that revision's generation is still kept stopped, the rollout planner restores it: its hosts are
started again, gated and swapped in, which takes seconds. Otherwise the image is rolled out anew.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_hosts import DockerHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import FLEET_ARGUMENT_SPEC, open_fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.task import VM_DEFAULTS, rollback_disk
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.backends import HostsManager
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.manager import (
    ROLLOUT_ARGUMENT_SPEC,
    Rollout,
    check_limits,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import (
    rollback_target,
    service_revisions,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import FoundHost
from ansible_collections.immutable.infra.plugins.plugin_utils.service.health import HEALTH_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import Journal
from ansible_collections.immutable.infra.plugins.plugin_utils.service.options import SWAP_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec, validate_service
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext

ROLLBACK_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str", "required": True},
    "revision": {"type": "int"},
    "health": {"type": "dict", "options": HEALTH_OPTIONS},  # no default: the revision's own check
    **{key: ROLLOUT_ARGUMENT_SPEC[key] for key in ("balancer", "strategy", "require_verified", "trust",
                                                   "keep_previous")},
    "batch_size": {"type": "int", "default": 1},
    **SWAP_OPTIONS,
    **FLEET_ARGUMENT_SPEC,
}


def host_specs(hosts: list[FoundHost], live: set[str] | None = None) -> tuple[dict[str, HostSpec], str | None]:
    """(a spec per image ID, from the service's hosts on every engine; the image ID most running hosts use).
    live: the hosts that were live before an interrupted run (its journal), whose image counts instead,
    running or not."""
    specs: dict[str, HostSpec] = {}
    running: Counter = Counter()
    for host in hosts:
        spec = HostSpec.from_labels(host.labels)
        if spec:
            specs.setdefault(spec.image_id, spec)
            if (host.name in live) if live is not None else host.running:
                running[spec.image_id] += 1
    return specs, (running.most_common(1)[0][0] if running else None)


class Rollback(HostsManager):
    record_options = ("engines", "docker_host", "balancer", "addressing")

    def __init__(self, params: dict[str, Any], context: TaskContext) -> None:
        super().__init__(params, context)
        self.service = validate_service(self.params["service"])
        check_limits(self.params)
        self.disk: str | None = None  # VM hosts: the disk of the revision rolled back to (its file, or its digest)

    def run(self) -> dict[str, Any]:
        ledger = self.ledger()
        revisions = service_revisions(ledger.records(kind="rollout", service=self.service), self.service)
        backend = self.vm_hosts(self.service) if self.on_vms else self._docker_hosts()
        # After an interrupted rollout or rollback, what was live before it decides what "back" means: the
        # hosts running now may be half of each.
        unfinished = Journal(backend.store(), self.service).read()
        specs, live_image = host_specs(backend.hosts(), set(unfinished["previous_live"]) if unfinished else None)
        target = rollback_target(revisions, live_image, self.params["revision"])
        image_id = target["image_id"]
        if isinstance(backend, DockerHosts):
            self._require_image(backend, target)
        else:
            self.disk = rollback_disk(self.vm_fleet(), target)
        spec = specs.get(image_id) or next(iter(specs.values()), None)
        if spec is None:
            raise InfraError(f"No host of service {self.service} carries the spec it was rolled out with; roll the "
                             f"image {short_id(image_id)} out with immutable.infra.rollout instead.")
        self.progress(f"{self.service}: rolling back to revision {target['revision']} (image {short_id(image_id)}, "
                      f"generation {target.get('generation')}, rolled out {target.get('time')})")
        rollout = Rollout(self._rollout_params(target, spec), self.context)
        rollout.record_fields = {"rollback_to_revision": target["revision"]}
        try:
            result = rollout.run()
        finally:
            rollout.close()
        result.update(revision=target["revision"], target_image_id=image_id, fast_path=result["kind"] == "restore")
        result["msg"] = f"{self.service}: revision {target['revision']} " + (
            "is live again" + (" (its kept hosts were started again)" if result["fast_path"] else "")
            if result["changed"] else "is already live")
        return result

    def _docker_hosts(self) -> DockerHosts:
        return DockerHosts(open_fleet(self.params, self.engines, self.reach()), self.service)

    def _require_image(self, backend: DockerHosts, target: dict[str, Any]) -> None:
        fleet = backend.fleet
        image_id = target["image_id"]
        if all(client.image(image_id) is None for client in fleet.sources().values()):
            engines = "the engine" if fleet.single else f"any of the engines ({', '.join(fleet.sources())})"
            raise InfraError(f"The image of revision {target['revision']} ({short_id(image_id)}) no longer exists "
                             f"in {engines}, so it cannot be rolled back to; bake it again from git commit "
                             f"{target.get('git_commit') or 'of that release'} and roll it out, or pick another "
                             "revision.", revision=target["revision"])

    def _rollout_params(self, target: dict[str, Any], spec: HostSpec) -> dict[str, Any]:
        """The rollout that puts the revision live: every option of this task (how engines are reached, the
        ledger, the swap's), with what the revision's hosts were made with."""
        params = {key: value for key, value in self.params.items() if key != "revision"}
        params.update(image=target["image_id"], replicas=int(target.get("replicas") or 1), port=spec.port,
                      container=spec.container, health=self.params["health"] or spec.health, max_surge=None,
                      max_unavailable=0, canary={"replicas": 1, "seconds": 10})
        if self.on_vms:
            params.update(image=None, disk=self.disk, container={},
                          vm={name: spec.container.get(name, default) for name, default in VM_DEFAULTS.items()})
        return params
