# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker back-end's drift probe, pure: why a container of a service differs from what was rolled out.

A host has drifted when its filesystem differs from its image outside the paths the service may
write, when it runs another image than its rollout recorded, when its container config (env,
command, published ports, mounts, user) differs from what the image and its spec give, or when it
carries the service's label without being made by any recorded rollout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import env_dict, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import HostLabels, image_labels
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec

# Paths every Linux process may write without it being a change to the host's software or config.
DEFAULT_WRITABLE_PATHS = ["/tmp", "/var/tmp", "/run", "/var/run", "/var/log", "/var/cache", "/dev", "/proc", "/sys"]
CHANGE_KINDS = {0: "modified", 1: "added", 2: "deleted"}


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


def is_rollout_publishing(port: str, bindings: list[dict[str, Any]] | None, service_port: int) -> bool:
    """The binding a rollout with addressing: published makes: the service's port on a port the engine
    picks (HostPort empty or 0). Any other published port was added by someone."""
    return port == f"{service_port}/tcp" and all(str(binding.get("HostPort") or "0") == "0"
                                                 for binding in bindings or [{}])


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
    published = {port: bindings for port, bindings in ((container.get("HostConfig") or {}).get("PortBindings") or {}).items()
                 if not is_rollout_publishing(port, bindings, spec.port)}
    if published:
        reasons.append(f"publishes ports {', '.join(sorted(published))} on the Docker host")
    # Docker gives every container of an image that declares a VOLUME an anonymous volume there: the image's own.
    declared = set(image_config.get("Volumes") or {})
    mounts = [mount.get("Destination") for mount in container.get("Mounts") or []
              if not (mount.get("Type") == "volume" and mount.get("Destination") in declared)]
    if mounts:
        reasons.append(f"mounts {', '.join(sorted(mounts))}")
    return reasons


def host_drift(container: dict[str, Any], image: dict[str, Any] | None, changes: list[dict[str, Any]],
               writable_paths: list[str], recorded: dict[str, list[str]] | None) -> list[str]:
    """Why a host of the service differs from what was rolled out; empty when it does not.

    recorded maps rollout IDs of the service's ledger records to the hosts each added; None when
    the ledger holds nothing for the service, so nothing can be said about unrecorded hosts.
    """
    labels = image_labels(container)
    host = HostLabels.from_labels(labels)
    name = container.get("Name", "").lstrip("/")
    spec = HostSpec.from_labels(labels)
    if spec is None or host.generation is None:
        return ["carries the service's label but was not made by a rollout (no generation or spec labels)"]
    reasons = []
    if recorded is not None and name not in recorded.get(host.rollout or "", []):
        reasons.append(f"not started by any recorded rollout (rollout {host.rollout or 'none'})")
    if container.get("Image") != spec.image_id:
        reasons.append(f"runs image {short_id(container.get('Image', ''))}, rolled out {short_id(spec.image_id)}")
    elif image is None:
        reasons.append(f"its image {short_id(spec.image_id)} no longer exists")
    else:
        reasons += config_differences(container, image, spec)
    reasons += [f"filesystem: {phrase}" for phrase in filesystem_changes(changes, writable_paths + DEFAULT_WRITABLE_PATHS)]
    return reasons


def recorded_hosts(records: Iterable[dict[str, Any]]) -> dict[str, list[str]] | None:
    """Hosts each recorded rollout or heal added, by rollout ID, from a service's ledger records."""
    recorded: dict[str, list[str]] = {}
    for record in records:
        if record.get("kind") in ("rollout", "heal") and record.get("rollout"):
            recorded.setdefault(record["rollout"], []).extend(record.get("added") or [])
    return recorded or None
