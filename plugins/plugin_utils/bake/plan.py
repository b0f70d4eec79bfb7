# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of a bake: image names, the inputs hash, image config and provenance labels.

Nothing here touches Docker or the filesystem, so all of it is unit-tested in milliseconds.
"""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    SHORT_HASH_LENGTH,
    InfraError,
    canonical_json,
    env_dict,
    sha256_hex,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    PROVENANCE_LABELS,
    ImageProvenance,
    image_labels,
)

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
REPOSITORY_PATTERN = re.compile(rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*$")
PORT_PATTERN = re.compile(r"^([0-9]{1,5})(?:/(tcp|udp|sctp))?$")
DURATION_PATTERN = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+(?:\.[0-9]+)?)s)?(?:([0-9]+)ms)?$")
SIGNALS = ("HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP TSTP TTIN "
           "TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS").split()
HEALTHCHECK_KINDS = ("CMD", "CMD-SHELL", "NONE")
NANOSECONDS = 1_000_000_000


def validate_repository(name: str) -> str:
    """Checks that name is an image repository without a tag or digest; returns it unchanged."""
    if not name or len(name) > 255 or not REPOSITORY_PATTERN.match(name):
        hint = ""
        if "@" in name or ":" in name.rsplit("/", 1)[-1]:
            hint = " without a tag or digest (the bake tags the image with its inputs hash)"
        elif name != name.lower():
            hint = " in lower case"
        raise InfraError(f"name '{name}' is not a valid image repository; give one like 'acme/web'{hint}.")
    return name


def image_tag(inputs_hash: str) -> str:
    return inputs_hash[:SHORT_HASH_LENGTH]


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """The image config as given by the user, with defaults dropped and values in one canonical form."""
    normalized: dict[str, Any] = {}
    for key, value in sorted(config.items()):
        if value is None:
            continue
        if key in ("env", "labels"):
            value = {str(name): str(item) for name, item in value.items()}
        elif key == "exposed_ports":
            ports = []
            for port in value:
                match = PORT_PATTERN.match(str(port))
                if not match or not 0 < int(match.group(1)) < 65536:
                    raise InfraError(f"config.exposed_ports entry '{port}' is not a port like '8000/tcp'.")
                ports.append(f"{int(match.group(1))}/{match.group(2) or 'tcp'}")
            value = sorted(set(ports))
        elif key in ("cmd", "entrypoint"):
            value = [str(item) for item in value]
        elif key == "volumes":
            value = sorted({_volume(str(path)) for path in value})
        elif key == "stop_signal":
            value = normalize_signal(str(value))
        elif key == "healthcheck":
            value = normalize_healthcheck(value)
        normalized[key] = value
    return normalized


def _volume(path: str) -> str:
    if not path.startswith("/") or ":" in path or ".." in path.split("/"):
        raise InfraError(f"config.volumes entry '{path}' must be an absolute path inside the image, like '/var/lib/mysql' "
                         "(host paths are bound when a host runs, not in the image).")
    return path.rstrip("/") or "/"


def normalize_signal(value: str) -> str:
    """A stop signal as Docker stores it: SIGTERM, SIGRTMIN+3, or a number."""
    name = value.strip().upper()
    if name.isdigit():
        if not 0 < int(name) < 65:
            raise InfraError(f"config.stop_signal '{value}' is not a signal number between 1 and 64.")
        return str(int(name))
    name = name[3:] if name.startswith("SIG") else name
    realtime = re.match(r"^RTM(IN|AX)([+-][0-9]{1,2})?$", name)
    if name not in SIGNALS and not realtime:
        raise InfraError(f"config.stop_signal '{value}' is not a signal; give one like SIGTERM, SIGQUIT or SIGINT.")
    return "SIG" + name


def parse_duration(value: Any, field: str) -> int:
    """Seconds (a number) or a Go-style duration ('30s', '1m30s', '500ms') as nanoseconds."""
    if isinstance(value, bool):
        raise InfraError(f"config.healthcheck.{field} must be a duration like '30s' or a number of seconds.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        match = DURATION_PATTERN.match(text) if text else None
        if text.replace(".", "", 1).isdigit():
            seconds = float(text)
        elif match and any(match.groups()):
            hours, minutes, secs, millis = match.groups()
            seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0) + int(millis or 0) / 1000
        else:
            raise InfraError(f"config.healthcheck.{field} '{value}' is not a duration like '30s', '1m30s' or '500ms'.")
    nanoseconds = round(seconds * NANOSECONDS)
    if nanoseconds < 0 or 0 < nanoseconds < 1_000_000:
        raise InfraError(f"config.healthcheck.{field} must be 0 (Docker's default) or at least 1ms.")
    return nanoseconds


def normalize_healthcheck(value: dict[str, Any]) -> dict[str, Any]:
    """Docker's HEALTHCHECK: a command as a list (exec form) or a string (shell form), and its timing."""
    test = value.get("test")
    if test is None:
        raise InfraError("config.healthcheck needs test: a command like ['curl', '-f', 'http://localhost/'], "
                         "a shell string, or ['NONE'] to turn off the base image's check.")
    if isinstance(test, str):
        command = ["NONE"] if test.strip().upper() == "NONE" else ["CMD-SHELL", test]
    else:
        command = [str(item) for item in test]
        if not command:
            raise InfraError("config.healthcheck.test is empty; give the command that checks the service.")
        if command[0] not in HEALTHCHECK_KINDS:
            command = ["CMD", *command]
        if command[0] != "NONE" and len(command) < 2:
            raise InfraError(f"config.healthcheck.test starts with {command[0]} but names no command.")
    normalized: dict[str, Any] = {"test": command}
    for field in ("interval", "timeout", "start_period"):
        if value.get(field) is not None:
            normalized[field] = parse_duration(value[field], field)
    if value.get("retries") is not None:
        retries = value["retries"]
        if isinstance(retries, bool) or not str(retries).isdigit():
            raise InfraError(f"config.healthcheck.retries '{retries}' must be a whole number (0 for Docker's default).")
        normalized["retries"] = int(retries)
    return normalized


def build_inputs(base_image_id: str, roles: list[dict[str, str]], variables: dict[str, Any],
                 config: dict[str, Any], versions: dict[str, str], builder: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the content of a bake. Same inputs, same image."""
    return {
        "base_image_id": base_image_id,
        "roles": [{"name": role["name"], "digest": role["digest"]} for role in roles],
        "vars": variables,
        "config": config,
        "versions": dict(sorted(versions.items())),
        "builder": builder,
    }


def inputs_hash(inputs: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(inputs))


def inputs_summary(inputs: dict[str, Any]) -> dict[str, Any]:
    """A compact, secret-free form of the inputs stored on the image to explain later rebuilds."""
    return {
        "base_image_id": inputs["base_image_id"],
        "roles": [[role["name"], role["digest"][:SHORT_HASH_LENGTH]] for role in inputs["roles"]],
        "vars": sha256_hex(canonical_json(inputs["vars"]))[:SHORT_HASH_LENGTH],
        "config": sha256_hex(canonical_json(inputs["config"]))[:SHORT_HASH_LENGTH],
        "versions": inputs["versions"],
        "builder": sha256_hex(canonical_json(inputs["builder"]))[:SHORT_HASH_LENGTH],
    }


def explain_differences(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    """Which inputs of a new bake differ from those recorded on an earlier image, as short phrases."""
    if not old:
        return ["the newest image of this name records no inputs"]
    reasons = []
    if new["base_image_id"] != old.get("base_image_id"):
        reasons.append(f"base image changed ({str(old.get('base_image_id'))[:19]} -> {new['base_image_id'][:19]})")
    new_roles, old_roles = dict(map(tuple, new["roles"])), dict(map(tuple, old.get("roles", [])))
    for name, digest in new_roles.items():
        if name not in old_roles:
            reasons.append(f"role {name} added")
        elif old_roles[name] != digest:
            reasons.append(f"role {name} files changed")
    reasons.extend(f"role {name} removed" for name in old_roles if name not in new_roles)
    if [role[0] for role in new["roles"]] != [role[0] for role in old.get("roles", [])] and \
            set(new_roles) == set(old_roles):
        reasons.append("role order changed")
    for key in ("vars", "config", "builder"):
        if new[key] != old.get(key):
            reasons.append(f"{key} changed" if key != "builder" else "builder options changed")
    old_versions = old.get("versions", {})
    for name, version in new["versions"].items():
        if old_versions.get(name) != version:
            reasons.append(f"{name} version changed ({old_versions.get(name)} -> {version})")
    reasons.extend(f"{name} no longer used" for name in old_versions if name not in new["versions"])
    return reasons or ["no input differs, but no image carries this inputs hash"]


def commit_config(base_config: dict[str, Any], config: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The Docker config of the baked image: the base image's config with the user's config on top.

    Every field is explicit so nothing of the builder container (its keep-alive command) leaks in.
    """
    entrypoint = config.get("entrypoint")
    cmd = config.get("cmd")
    if entrypoint is None:
        entrypoint = base_config.get("Entrypoint") or []
        if cmd is None:
            cmd = base_config.get("Cmd") or []
    elif cmd is None:
        cmd = []  # as in a Dockerfile: a new ENTRYPOINT resets the inherited CMD
    env = env_dict(base_config.get("Env"))
    env.update(config.get("env") or {})
    ports: dict[str, dict] = {key: {} for key in base_config.get("ExposedPorts") or {}}
    ports.update({key: {} for key in config.get("exposed_ports") or []})
    # The base's provenance is not the baked image's (a bake outside git must not claim the base's git revision,
    # nor a failed bake's image its base's inputs hash). Blanked, not left out: Docker copies the builder's
    # labels, which are the base's, into the image committed from it.
    merged_labels = {key: "" if key in PROVENANCE_LABELS else value
                     for key, value in (base_config.get("Labels") or {}).items()}
    merged_labels.update(config.get("labels") or {})
    merged_labels.update(labels)
    volumes: dict[str, dict] = {key: {} for key in base_config.get("Volumes") or {}}
    volumes.update({key: {} for key in config.get("volumes") or []})
    image_config: dict[str, Any] = {
        "Entrypoint": list(entrypoint),
        "Cmd": list(cmd),
        "Env": [f"{key}={value}" for key, value in env.items()],
        "ExposedPorts": ports,
        "WorkingDir": config.get("workdir") or base_config.get("WorkingDir") or "",
        "User": config.get("user") or base_config.get("User") or "",
        "Labels": merged_labels,
        "Volumes": volumes or None,
    }
    stop_signal = config.get("stop_signal") or base_config.get("StopSignal")
    if stop_signal:
        image_config["StopSignal"] = stop_signal
    healthcheck = config.get("healthcheck")
    if healthcheck:
        image_config["Healthcheck"] = {key: value for key, value in (
            ("Test", healthcheck["test"]), ("Interval", healthcheck.get("interval")),
            ("Timeout", healthcheck.get("timeout")), ("StartPeriod", healthcheck.get("start_period")),
            ("Retries", healthcheck.get("retries"))) if value is not None}
    elif base_config.get("Healthcheck"):
        image_config["Healthcheck"] = base_config["Healthcheck"]
    return image_config


def provenance_labels(*, name: str, base: str, inputs: dict[str, Any], digest: str, roles: list[str],
                      created: str, git: dict[str, Any], baked_by: str) -> dict[str, str]:
    versions = inputs["versions"]
    return ImageProvenance(
        name=name, inputs_hash=digest, inputs=inputs_summary(inputs), roles=roles, base=base,
        base_image_id=inputs["base_image_id"], ansible_core=versions.get("ansible-core", ""),
        collections={key: value for key, value in versions.items() if key != "ansible-core"},
        baked_by=baked_by, created=created, git_commit=git.get("commit") or None,
        git_source=git.get("remote") or None, git_dirty=bool(git.get("dirty"))).to_labels()


def recorded_inputs(image: dict[str, Any]) -> dict[str, Any] | None:
    """The inputs summary an image was labelled with, or None for images not baked by this collection."""
    return ImageProvenance.from_labels(image_labels(image)).inputs
