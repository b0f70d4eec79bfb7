# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift: hosts that differ from what was rolled out, and healing them by replacement.

A host has drifted when its filesystem differs from its image outside the paths the service may
write, when it runs another image than its rollout recorded, when its container config (env,
command, published ports, mounts, user) differs from what the image and its spec give, or when it
carries the service's label without being made by any recorded rollout. Healing never edits a
host: it replaces the host with a fresh one from the same verified image, through the balancer,
one host at a time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.adapter import BALANCER_OPTIONS, make_balancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    LABEL_GENERATION,
    LABEL_IMAGE_ID,
    LABEL_SERVICE,
    InfraError,
    env_dict,
    short_id,
    utc_timestamp,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import default_path as default_ledger_path
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.hosts import (
    LABEL_ROLLOUT,
    HostSpec,
    ServiceHosts,
    validate_service,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.lock import LockLost, ServiceLock
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.manager import exited_hosts, reconcile, revert
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.reconcile import plan_repair, problems

# Paths every Linux process may write without it being a change to the host's software or config.
DEFAULT_WRITABLE_PATHS = ["/tmp", "/var/tmp", "/run", "/var/run", "/var/log", "/var/cache", "/dev", "/proc", "/sys"]
CHANGE_KINDS = {0: "modified", 1: "added", 2: "deleted"}

DRIFT_ARGUMENT_SPEC: dict[str, Any] = {
    "service": {"type": "str", "required": True},
    "heal": {"type": "bool", "default": False},
    "writable_paths": {"type": "list", "elements": "str", "default": []},
    "balancer": {"type": "dict", "options": BALANCER_OPTIONS},
    "drain_timeout": {"type": "float", "default": 30},
    "stop_timeout": {"type": "int", "default": 10},
    "lock_timeout": {"type": "int", "default": 60},
    "docker_host": {"type": "str"},
    "ledger": {"type": "path"},
}


def _under(path: str, prefixes: list[str]) -> bool:
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


def filesystem_changes(changes: list[dict[str, Any]], writable_paths: list[str]) -> list[str]:
    """'added /etc/x' phrases for the changes outside writable paths, leaving out directories that
    are listed only because something inside them changed."""
    paths = [change["Path"] for change in changes or []]
    phrases = []
    for change in changes or []:
        path, kind = change["Path"], change.get("Kind", 0)
        if _under(path, writable_paths):
            continue
        if kind == 0 and any(other.startswith(path.rstrip("/") + "/") for other in paths):
            continue
        phrases.append(f"{CHANGE_KINDS.get(kind, 'changed')} {path}")
    return phrases


def config_differences(container: dict[str, Any], image: dict[str, Any], spec: HostSpec) -> list[str]:
    """How the container's config differs from what its image and rollout spec give."""
    config = container.get("Config") or {}
    image_config = image.get("Config") or {}
    reasons = []
    expected_env = env_dict(image_config.get("Env"))
    expected_env.update({str(key): str(value) for key, value in (spec.container.get("env") or {}).items()})
    actual_env = env_dict(config.get("Env"))
    for key in sorted(set(expected_env) | set(actual_env)):
        if key not in actual_env:
            reasons.append(f"env {key} removed")
        elif key not in expected_env:
            reasons.append(f"env {key} added")
        elif actual_env[key] != expected_env[key]:
            reasons.append(f"env {key} changed")
    for field, label in (("Cmd", "command"), ("Entrypoint", "entrypoint"), ("User", "user")):
        if (config.get(field) or None) != (image_config.get(field) or None):
            reasons.append(f"{label} changed from {image_config.get(field)!r} to {config.get(field)!r}")
    published = (container.get("HostConfig") or {}).get("PortBindings") or {}
    if published:
        reasons.append(f"publishes ports {', '.join(sorted(published))} on the Docker host")
    mounts = [mount.get("Destination") for mount in container.get("Mounts") or []]
    if mounts:
        reasons.append(f"mounts {', '.join(sorted(mounts))}")
    return reasons


def host_drift(container: dict[str, Any], image: dict[str, Any] | None, changes: list[dict[str, Any]],
               writable_paths: list[str], recorded: dict[str, list[str]] | None) -> list[str]:
    """Why a host of the service differs from what was rolled out; empty when it does not.

    recorded maps rollout IDs of the service's ledger records to the hosts each added; None when
    the ledger holds nothing for the service, so nothing can be said about unrecorded hosts.
    """
    labels = (container.get("Config") or {}).get("Labels") or {}
    name = container.get("Name", "").lstrip("/")
    spec = HostSpec.from_labels(labels)
    if spec is None or not labels.get(LABEL_GENERATION, "").isdigit():
        return ["carries the service's label but was not made by a rollout (no generation or spec labels)"]
    reasons = []
    if recorded is not None and name not in recorded.get(labels.get(LABEL_ROLLOUT, ""), []):
        reasons.append(f"not started by any recorded rollout (rollout {labels.get(LABEL_ROLLOUT) or 'none'})")
    if container.get("Image") != spec.image_id:
        reasons.append(f"runs image {short_id(container.get('Image', ''))}, rolled out {short_id(spec.image_id)}")
    elif image is None:
        reasons.append(f"its image {short_id(spec.image_id)} no longer exists")
    else:
        reasons += config_differences(container, image, spec)
    reasons += [f"filesystem: {phrase}" for phrase in filesystem_changes(changes, writable_paths + DEFAULT_WRITABLE_PATHS)]
    return reasons


def recorded_hosts(ledger: Ledger, service: str) -> dict[str, list[str]] | None:
    """Hosts each recorded rollout or heal of the service added, by rollout ID."""
    recorded: dict[str, list[str]] = {}
    for record in ledger.records(service=service):
        if record.get("kind") in ("rollout", "heal") and record.get("rollout"):
            recorded.setdefault(record["rollout"], []).extend(record.get("added") or [])
    return recorded or None


def plan_replacement(old: str, new: str, number: int) -> list[rp.Step]:
    """The fresh host joins before the drifted one drains and goes."""
    return [rp.Step(rp.START, (new,), number), rp.Step(rp.WAIT_HEALTHY, (new,), number),
            rp.Step(rp.ADD, (new,), number), rp.Step(rp.DRAIN, (old,), number),
            rp.Step(rp.WAIT_DRAINED, (old,), number), rp.Step(rp.DETACH, (old,), number),
            rp.Step(rp.REMOVE, (old,), number)]


def plan_stray_removals(remove: list[tuple[str, bool]]) -> list[rp.Step]:
    """Hosts that belong to no rollout are taken out of the balancer (when in it) and removed."""
    steps: list[rp.Step] = []
    for name, in_balancer in remove:
        if in_balancer:
            steps += [rp.Step(rp.DRAIN, (name,)), rp.Step(rp.WAIT_DRAINED, (name,)), rp.Step(rp.DETACH, (name,))]
        steps.append(rp.Step(rp.REMOVE, (name,)))
    return steps


class Drift:
    def __init__(self, params: dict[str, Any], basedir: str, check_mode: bool,
                 progress: Callable[[str], None] = lambda message: None) -> None:
        self.params = params
        self.basedir = basedir
        self.check_mode = check_mode
        self.progress = progress
        self.service = validate_service(params["service"])
        for path in params["writable_paths"]:
            if not path.startswith("/"):
                raise InfraError(f"writable_paths entry '{path}' must be an absolute path.")
        self.lock: ServiceLock | None = None
        if params["heal"] and not check_mode and not params["balancer"]:
            self.progress(f"{self.service}: no balancer given; hosts are replaced without balancer changes")

    def detect(self, client: DockerClient) -> list[dict[str, Any]]:
        ledger = Ledger(self.params["ledger"] or default_ledger_path())
        recorded = recorded_hosts(ledger, self.service)
        images: dict[str, dict[str, Any] | None] = {}
        drifted = []
        for container in client.containers_with_labels({LABEL_SERVICE: self.service}, include_stopped=False):
            labels = container["Config"].get("Labels") or {}
            image_id = labels.get(LABEL_IMAGE_ID, "")
            if image_id not in images:
                images[image_id] = client.image(image_id) if image_id else None
            reasons = host_drift(container, images[image_id], client.changes(container["Id"]),
                                 self.params["writable_paths"], recorded)
            if reasons:
                drifted.append({"host": container["Name"].lstrip("/"), "reasons": reasons,
                                "recorded": HostSpec.from_labels(labels) is not None})
        return drifted

    def _service_hosts(self, client: DockerClient, balancer: Any) -> ServiceHosts | None:
        """The service's hosts as rollouts see them, made with the spec of any of its hosts."""
        for container in client.containers_with_labels({LABEL_SERVICE: self.service}, inspect=False):
            spec = HostSpec.from_labels(container["Config"].get("Labels") or {})
            if spec:
                return ServiceHosts(client, balancer, spec, self.progress, self.params["drain_timeout"],
                                    self.params["stop_timeout"])
        return None

    def balancer_mismatch(self, client: DockerClient) -> list[str]:
        """How the balancer differs from the hosts (servers at no running host, running hosts it lost,
        live hosts that exited); empty without a balancer."""
        if not self.params["balancer"]:
            return []
        balancer = make_balancer(self.params["balancer"])
        balancer.check()
        hosts = self._service_hosts(client, balancer)
        if hosts is None:
            return []
        try:
            observation = hosts.observe()
            return problems(plan_repair(observation.hosts, exited_hosts(observation)), observation.stale_servers)
        finally:
            hosts.close()

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        client = DockerClient(self.params["docker_host"])
        drifted = self.detect(client)
        mismatch = self.balancer_mismatch(client)
        result: dict[str, Any] = {"changed": False, "service": self.service, "drifted": drifted, "healed": [],
                                  "removed": [], "balancer_mismatch": mismatch}
        for entry in drifted:
            self.progress(f"{self.service}: {entry['host']} drifted: {'; '.join(entry['reasons'])}")
        for problem in mismatch:
            self.progress(f"{self.service}: the balancer does not match the hosts: {problem}")
        if not (drifted or mismatch) or not self.params["heal"]:
            result["msg"] = (f"{self.service}: {len(drifted)} drifted host(s): "
                             + ", ".join(entry["host"] for entry in drifted) if drifted
                             else f"{self.service}: no host has drifted")
            if mismatch:
                result["msg"] += f"; the balancer does not match the hosts: {'; '.join(mismatch)}"
            return result
        if self.check_mode:
            return dict(result, changed=True, msg=f"{self.service}: would replace {len(drifted)} drifted host(s)"
                        + (" and reconcile the balancer" if mismatch else ""))
        healed, removed, reconciled = self._heal(client, drifted)
        return dict(result, changed=True, healed=healed, removed=removed, reconciled=reconciled,
                    duration=round(time.monotonic() - started, 3),
                    msg=f"{self.service}: replaced {len(healed)} drifted host(s), removed {len(removed)}"
                    + ("; reconciled the balancer with the hosts" if reconciled else ""))

    def _heal(self, client: DockerClient, drifted: list[dict[str, Any]]
              ) -> tuple[list[dict[str, str]], list[str], dict[str, list[str]] | None]:
        balancer = make_balancer(self.params["balancer"])
        balancer.check()
        reconciled = None
        if not drifted:
            hosts = self._service_hosts(client, balancer)
            if hosts is None:
                return [], [], None
            lock = ServiceLock(client, self.service, hosts.spec.image_id, uuid.uuid4().hex[:12],
                               self.params["lock_timeout"], self.progress)
            lock.acquire()
            try:
                reconciled = reconcile(hosts, Ledger(self.params["ledger"] or default_ledger_path()), self.basedir)
            finally:
                lock.release()
                hosts.close()
            return [], [], reconciled
        names = {entry["host"] for entry in drifted}
        inspected = {container["Name"].lstrip("/"): container
                     for container in client.containers_with_labels({LABEL_SERVICE: self.service})}
        specs = {name: HostSpec.from_labels(inspected[name]["Config"].get("Labels") or {}) for name in names}
        any_spec = next((spec for spec in specs.values() if spec), None)
        if any_spec is None:
            raise InfraError(f"None of the drifted hosts of {self.service} was made by a rollout, so none can be "
                             "replaced from its spec; remove them, or roll the service out again.")
        rollout_id = uuid.uuid4().hex[:12]
        lock = ServiceLock(client, self.service, any_spec.image_id, rollout_id, self.params["lock_timeout"],
                           self.progress)
        lock.acquire()
        self.lock = lock
        try:
            hosts = ServiceHosts(client, balancer, any_spec, self.progress, self.params["drain_timeout"],
                                 self.params["stop_timeout"])
            try:
                reconciled = reconcile(hosts, Ledger(self.params["ledger"] or default_ledger_path()), self.basedir)
            finally:
                hosts.close()
            healed, removed = self._replace(client, balancer, specs, rollout_id)
            return healed, removed, reconciled
        finally:
            lock.release()

    def _replace(self, client: DockerClient, balancer, specs: dict[str, HostSpec | None],
                 rollout_id: str) -> tuple[list[dict[str, str]], list[str]]:
        ledger = Ledger(self.params["ledger"] or default_ledger_path())
        record = ledger.new_record("heal", self.basedir, rollout=rollout_id, service=self.service)
        groups: dict[str, tuple[HostSpec, list[str]]] = {}
        for name, spec in sorted(specs.items()):
            if spec:
                groups.setdefault(spec.spec_hash, (spec, []))[1].append(name)
        strays = sorted(name for name, spec in specs.items() if spec is None)
        healed: list[dict[str, str]] = []
        removed: list[str] = []
        try:
            for spec, names in groups.values():
                self._replace_group(client, balancer, spec, names, strays, rollout_id, healed)
                removed, strays = removed + strays, []
        except InfraError as error:
            ledger.append(dict(record, result="failed", error=error.message, replaced=healed, removed=removed,
                               finished=utc_timestamp()))
            raise
        ledger.append(dict(record, result="succeeded", added=[entry["replacement"] for entry in healed],
                           replaced=healed, removed=removed, finished=utc_timestamp()))
        return healed, removed

    def _replace_group(self, client: DockerClient, balancer, spec: HostSpec, names: list[str], strays: list[str],
                       rollout_id: str, healed: list[dict[str, str]]) -> None:
        """Replaces the drifted hosts made from one spec one at a time, adding each to healed, then removes
        the strays. A replacement that fails (or is interrupted) is undone: the drifted host stays in service
        and its fresh host is removed."""
        hosts = ServiceHosts(client, balancer, spec, self.progress, self.params["drain_timeout"],
                             self.params["stop_timeout"])
        hosts.rollout_id = rollout_id
        try:
            observation = hosts.observe()
            taken = {(host.generation, host.index) for host in observation.hosts}
            with interruptible(f"heal of {self.service}", deferred=True) as guard:
                def interrupted() -> None:
                    guard.check()
                    if self.lock:
                        self.lock.check()

                for number, old in enumerate(names, start=1):
                    generation = int(old.rsplit("-", 2)[1])
                    index = max(index for gen, index in taken if gen == generation) + 1
                    taken.add((generation, index))
                    new = rp.host_name(self.service, generation, index)
                    try:
                        hosts.apply(plan_replacement(old, new, number), observation.records, "heal",
                                    interrupted=interrupted)
                    except LockLost:
                        raise
                    except InfraError as error:
                        self.progress(f"{self.service}: {error.message} Putting {old} back.")
                        revert(hosts, [old], [new])
                        raise InfraError(f"Replacing drifted host {old} failed: {error.message} {old} is in service "
                                         f"again and {new} was removed.", host=error.details.get("host")) from None
                    healed.append({"host": old, "replacement": new})
            observed_strays = [(name, observation.records[name].server is not None)
                               for name in strays if name in observation.records]
            hosts.apply(plan_stray_removals(observed_strays), observation.records, "heal")
            for name in strays:
                if name not in observation.records:  # named unlike the service's hosts, so never in the balancer
                    client.remove_container(name)
        finally:
            hosts.close()
