# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engines a service runs on, declared once: parsed and validated here, with no I/O.

An engine is a Docker engine (docker_host) or a libvirt hypervisor (libvirt_uri); a service runs on
engines of one kind. Three ways to declare them, all ending in the same list of Engine:
- the `engines` option: a list of {name, docker_host, tls, validate_certs, ca_path, client_cert,
  client_key, timeout, weight, max_hosts, allow_insecure, advertise_address}, or of {name, libvirt_uri,
  network, accel, weight, max_hosts} for hypervisors;
- an inventory group of engine hosts, whose variables give each engine (engines_from_group);
- the task's own connection options (docker_host and the rest, or the Docker CLI's environment
  variables when they are unset), a one-engine fleet.
An engine entry may still give TLS the older way, tls: {ca_cert, client_cert, client_key, verify}.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import (
    CONNECTION_OPTIONS,
    DEFAULT_DOCKER_HOST,
    Endpoint,
    TLSConfig,
    resolve_endpoint,
)

DEFAULT_ENGINE = "default"
LIBVIRT_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "qemu+libssh2", "qemu+libssh")
DEFAULT_VM_NETWORK = "immutable-infra"  # the libvirt network of a hypervisor's VMs, made with its own subnet
ACCELS = ("auto", "kvm", "tcg")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

# tls: {...} as engine entries gave it before they took community.docker's option names.
LEGACY_TLS_OPTIONS = {"ca_cert": "ca_path", "client_cert": "client_cert", "client_key": "client_key",
                      "verify": "validate_certs"}
ENGINE_OPTIONS: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    **CONNECTION_OPTIONS,
    "docker_host": {"type": "str"},
    "libvirt_uri": {"type": "str"},
    "tls": {"type": "raw"},  # true or false; or the older {ca_cert, client_cert, client_key, verify}
    "weight": {"type": "int", "default": 1},
    "max_hosts": {"type": "int"},
    "allow_insecure": {"type": "bool", "default": False},
    "advertise_address": {"type": "str"},
    "network": {"type": "str"},
    "accel": {"type": "str", "choices": list(ACCELS)},
}
DOCKER_ONLY = ("tls", "allow_insecure", "advertise_address")
LIBVIRT_ONLY = ("network", "accel")
# The argument spec entries a module that runs over several engines adds to its own.
ENGINES_ARGUMENT_SPEC: dict[str, Any] = {
    "engines": {"type": "list", "elements": "dict", "options": ENGINE_OPTIONS},
    "engines_group": {"type": "str"},
}

# Host variables of an engine host in the inventory-group form, and the engine option each gives.
GROUP_VARIABLES = {
    "docker_host": "docker_host",
    "docker_tls": "tls",
    "docker_validate_certs": "validate_certs",
    "docker_ca_path": "ca_path",
    "docker_client_cert": "client_cert",
    "docker_client_key": "client_key",
    "docker_timeout": "timeout",
    "engine_weight": "weight",
    "engine_max_hosts": "max_hosts",
    "engine_allow_insecure": "allow_insecure",
    "engine_advertise_address": "advertise_address",
    "libvirt_uri": "libvirt_uri",
    "engine_network": "network",
    "engine_accel": "accel",
}


@dataclass(frozen=True)
class Engine:
    name: str
    endpoint: Endpoint | None  # None for a hypervisor
    weight: int = 1
    max_hosts: int | None = None
    allow_insecure: bool = False
    advertise_address: str | None = None  # where the balancer reaches its hosts' published ports, if not `machine`
    libvirt_uri: str | None = None  # a hypervisor instead of a Docker engine
    network: str = DEFAULT_VM_NETWORK  # a hypervisor's network for its VMs
    accel: str = "auto"  # a hypervisor's accelerator: kvm, tcg, or auto (kvm where it really boots guests)

    @property
    def hypervisor(self) -> bool:
        return self.libvirt_uri is not None

    @property
    def where(self) -> str | None:
        """How the engine is reached: its docker_host or libvirt_uri (None: the controller's default engine)."""
        return self.libvirt_uri or self.docker_host

    @property
    def docker_host(self) -> str | None:
        return self.endpoint.docker_host if self.endpoint else None

    @property
    def tls(self) -> TLSConfig | None:
        return self.endpoint.tls if self.endpoint else None

    @property
    def scheme(self) -> str:
        return self.endpoint.scheme if self.endpoint else urlsplit(self.libvirt_uri or "").scheme

    @property
    def machine(self) -> str | None:
        """The host part of docker_host or libvirt_uri: the engine's machine as the controller reaches it
        (None for a unix socket or a local hypervisor: this machine)."""
        if not self.where or self.scheme in ("unix", "qemu", "qemu+unix"):
            return None
        return urlsplit(self.where).hostname

    @property
    def cores(self) -> str:
        """Which machine's cores the engine's hosts use: "" for this machine (a unix socket, a local
        hypervisor, a loopback address), else its machine as docker_host or libvirt_uri names it."""
        machine = self.machine
        return machine if machine and not is_loopback(machine) else ""

    @property
    def on_this_machine(self) -> bool:
        return not self.cores

    @property
    def address(self) -> str | None:
        """Where the hosts' published ports answer: advertise_address, else the engine's machine."""
        return self.advertise_address or self.machine

    @property
    def bind_address(self) -> str:
        """The address of its machine a published port is bound to: the one in docker_host when that is an
        IP address and nothing else is advertised, else every address of the machine (a name, or an
        advertised address that may be another network's or a NAT's)."""
        if self.advertise_address or (self.machine and not is_ip_address(self.machine)):
            return "0.0.0.0"
        return self.machine or "127.0.0.1"

    def describe(self) -> str:
        return f"{self.name} ({self.where}{', TLS' if self.tls else ''})"

    def as_dict(self) -> dict[str, Any]:
        if self.hypervisor:
            return {"name": self.name, "libvirt_uri": self.libvirt_uri, "network": self.network, "accel": self.accel,
                    "weight": self.weight, "max_hosts": self.max_hosts}
        return {"name": self.name, "docker_host": self.docker_host, "tls": bool(self.tls), "weight": self.weight,
                "max_hosts": self.max_hosts, "advertise_address": self.advertise_address}

    def connection_variables(self) -> dict[str, Any]:
        """Host variables that let community.docker's CLI connection (community.docker.docker) reach a
        container on this engine. Its ansible_docker_host is the container name, not the engine, so the
        engine goes in the CLI's global options. The docker_api connection is not used: it does not
        work over TCP+TLS engines."""
        if self.docker_host is None or (self.docker_host == DEFAULT_DOCKER_HOST and not self.tls):
            return {}
        arguments = ["--host", self.docker_host]
        if self.tls:
            arguments.append("--tlsverify" if self.tls.validate_certs else "--tls")
            for flag, path in (("--tlscacert", self.tls.ca_path), ("--tlscert", self.tls.client_cert),
                               ("--tlskey", self.tls.client_key)):
                if path:
                    arguments.append(f"{flag}={path}")
        return {"ansible_docker_extra_args": shlex.join(arguments)}


def cores_of(engines: Sequence[Engine], name: str) -> str:
    """Engine.cores of the engine of that name ("" when none has it)."""
    return next((engine.cores for engine in engines if engine.name == name), "")


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def is_loopback(hostname: str | None) -> bool:
    if not hostname:
        return False
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False  # a name other than localhost is not resolved here: it may point anywhere


def _flag(name: str, option: str, value: Any) -> bool:
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise InfraError(f"Engine {name}: {option} must be true or false, not {value!r}.") from None


def _connection(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's connection options, the older tls: {...} form read as the names it stands for."""
    options = {option: raw.get(option) for option in CONNECTION_OPTIONS}
    tls = options["tls"]
    if isinstance(tls, Mapping):
        unknown = sorted(set(tls) - set(LEGACY_TLS_OPTIONS))
        if unknown:
            raise InfraError(f"Engine {name}: tls has unknown option(s) {', '.join(unknown)}; give validate_certs, "
                             "ca_path, client_cert and client_key beside docker_host instead.")
        clashing = sorted(LEGACY_TLS_OPTIONS[key] for key in tls if options.get(LEGACY_TLS_OPTIONS[key]) is not None)
        if clashing:
            raise InfraError(f"Engine {name}: {', '.join(clashing)} given both in tls and beside it; keep the one "
                             "beside docker_host.")
        verify = _flag(name, "tls.verify", tls.get("verify", True))
        options.update(tls=not verify, validate_certs=verify, ca_path=tls.get("ca_cert"),
                       client_cert=tls.get("client_cert"), client_key=tls.get("client_key"))
    for option in ("tls", "validate_certs"):
        if options[option] is not None:
            options[option] = _flag(name, option, options[option])
    return options


def _count(name: str, field: str, value: Any, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InfraError(f"Engine {name}: {field} must be a whole number of 0 or more, not {value!r}.")
    return value


def parse_engine(raw: Mapping[str, Any]) -> Engine:
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InfraError(f"Engine name {name!r} is not valid: use lower-case letters, digits, '.', '_' or '-' "
                         "(up to 63, starting with a letter or digit).")
    unknown = sorted(set(raw) - set(ENGINE_OPTIONS))
    if unknown:
        raise InfraError(f"Engine {name}: unknown option(s) {', '.join(unknown)}; use {', '.join(ENGINE_OPTIONS)}.")
    if raw.get("libvirt_uri") is not None:
        return _hypervisor(name, raw)
    given = [option for option in LIBVIRT_ONLY if raw.get(option) is not None]
    if given:
        raise InfraError(f"Engine {name}: {', '.join(given)} applies to hypervisors (libvirt_uri) only.")
    if not isinstance(raw.get("docker_host"), str) or not raw.get("docker_host"):
        raise InfraError(f"Engine {name}: docker_host (a Docker engine) or libvirt_uri (a hypervisor) is required, "
                         "e.g. unix:///var/run/docker.sock, tcp://10.0.0.5:2376 (with validate_certs), "
                         "ssh://deploy@10.0.0.5 or qemu:///system.")
    if urlsplit(raw["docker_host"]).scheme.startswith("qemu"):
        raise InfraError(f"Engine {name}: docker_host {raw['docker_host']!r} is a libvirt URI; a hypervisor is "
                         "declared with libvirt_uri.")
    endpoint = resolve_endpoint(_connection(name, raw), what=f"Engine {name}")
    allow_insecure = bool(raw.get("allow_insecure", False))
    _refuse_plain_tcp(name, endpoint, allow_insecure)
    advertise_address = raw.get("advertise_address")
    if advertise_address is not None and not (isinstance(advertise_address, str) and is_ip_address(advertise_address)):
        raise InfraError(f"Engine {name}: advertise_address {advertise_address!r} is not an IP address; give the "
                         "address at which the balancer and the health check reach this engine's machine.")
    return Engine(name=name, endpoint=endpoint, advertise_address=advertise_address,
                  weight=_count(name, "weight", raw.get("weight", 1), allow_none=False) or 0,
                  max_hosts=_count(name, "max_hosts", raw.get("max_hosts"), allow_none=True),
                  allow_insecure=allow_insecure)


def _refuse_plain_tcp(name: str, endpoint: Endpoint, allow_insecure: bool) -> None:
    if endpoint.scheme == "tcp" and not endpoint.tls and not is_loopback(urlsplit(endpoint.docker_host).hostname) \
            and not allow_insecure:
        raise InfraError(f"Engine {name}: {endpoint.docker_host} is plain TCP to another machine, so anyone on the "
                         "network can run containers as root there; give it validate_certs with ca_path, client_cert "
                         "and client_key, use ssh://, or set allow_insecure: true if that network is yours alone.")


def _require_host(name: str, option: str, value: str) -> None:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1:
        raise InfraError(f"Engine {name}: {option} {value!r} needs a host name or address (and a numeric port, if any).")


def _hypervisor(name: str, raw: Mapping[str, Any]) -> Engine:
    """A libvirt hypervisor: qemu:///system on this machine, qemu+ssh://user@host/system on another."""
    uri = raw["libvirt_uri"]
    docker_only = [option for option in ("docker_host", *DOCKER_ONLY) if raw.get(option) not in (None, False)]
    if docker_only:
        raise InfraError(f"Engine {name}: {', '.join(docker_only)} applies to Docker engines; a hypervisor is reached "
                         "through libvirt_uri alone.")
    parts = urlsplit(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme not in LIBVIRT_SCHEMES or parts.path.rstrip("/") not in ("/system", "/session"):
        raise InfraError(f"Engine {name}: libvirt_uri {uri!r} is not a libvirt URI of a QEMU hypervisor, such as "
                         "qemu:///system (this machine) or qemu+ssh://deploy@10.0.0.5/system.")
    if parts.scheme not in ("qemu", "qemu+unix"):
        _require_host(name, "libvirt_uri", uri)
    network = raw.get("network") or DEFAULT_VM_NETWORK
    if not isinstance(network, str) or not NAME_PATTERN.match(network):
        raise InfraError(f"Engine {name}: network {network!r} is not a libvirt network name (lower-case letters, digits, "
                         "'.', '_', '-').")
    return Engine(name=name, endpoint=None, libvirt_uri=uri, network=network, accel=raw.get("accel") or "auto",
                  weight=_count(name, "weight", raw.get("weight", 1), allow_none=False) or 0,
                  max_hosts=_count(name, "max_hosts", raw.get("max_hosts"), allow_none=True))


def parse_engines(engines: Sequence[Mapping[str, Any]] | None, connection: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> list[Engine]:
    """The fleet's engines, in declaration order. Without `engines`, the task's connection options
    (docker_host and the rest, falling back to environ, the Docker CLI's variables) are a fleet of one."""
    connection = connection or {}
    if engines is not None and connection.get("docker_host"):
        raise InfraError("Set either engines or docker_host, not both: docker_host is the one-engine form of engines.")
    if engines is None:
        endpoint = resolve_endpoint({option: connection.get(option) for option in CONNECTION_OPTIONS}, environ or {})
        if connection.get("docker_host"):
            _refuse_plain_tcp(DEFAULT_ENGINE, endpoint, allow_insecure=False)
        return [Engine(name=DEFAULT_ENGINE, endpoint=endpoint)]
    if not engines:
        raise InfraError("engines is empty; list at least one engine, or leave it out to use docker_host.")
    parsed = [parse_engine(raw) for raw in engines]
    if len({engine.hypervisor for engine in parsed}) > 1:
        raise InfraError("engines mixes Docker engines (docker_host) and hypervisors (libvirt_uri); a service runs "
                         "on one kind: declare its containers' engines and its VMs' hypervisors in separate tasks.")
    seen: dict[str, str] = {}
    for engine in parsed:
        if engine.name in seen:
            raise InfraError(f"Engine name {engine.name} is used twice; each engine needs its own name.")
        seen[engine.name] = engine.where or ""
    by_host: dict[str, str] = {}
    for engine in parsed:
        if engine.where in by_host:
            raise InfraError(f"Engines {by_host[engine.where]} and {engine.name} are the same engine "
                             f"({engine.where}); declare it once.")
        by_host[engine.where or ""] = engine.name
    if not any(engine.weight and engine.max_hosts != 0 for engine in parsed):
        raise InfraError("Every engine has weight 0 or max_hosts 0, so no host can be placed; "
                         "give at least one engine a weight above 0.")
    return parsed


def engines_from_group(group: str, groups: Mapping[str, Sequence[str]],
                       hostvars: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `engines` option built from an inventory group of engine hosts: each host is an engine
    named after it, which the variables of GROUP_VARIABLES describe (docker_host and its connection
    variables for a Docker engine; libvirt_uri, engine_network and engine_accel for a hypervisor)."""
    if group not in groups:
        raise InfraError(f"Inventory group {group} (engines_group) does not exist; add the engine hosts to it.")
    members = list(groups[group])
    if not members:
        raise InfraError(f"Inventory group {group} (engines_group) has no hosts; add the engine hosts to it.")
    engines = []
    for host in members:
        variables = hostvars.get(host) or {}
        if not variables.get("docker_host") and not variables.get("libvirt_uri"):
            raise InfraError(f"Engine host {host} in group {group} has no docker_host variable (nor libvirt_uri for a "
                             "hypervisor), e.g. docker_host: tcp://10.0.0.5:2376.")
        engine: dict[str, Any] = {"name": host.lower()}
        for variable, option in GROUP_VARIABLES.items():
            if variables.get(variable) is not None:
                engine[option] = variables[variable]
        engines.append(engine)
    return engines
