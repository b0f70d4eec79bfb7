# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a Docker engine is and how to reach it, settled from the options the way community.docker
and the Docker CLI settle them; no I/O.

Options (CONNECTION_OPTIONS, every module's and each engine entry's): docker_host, tls, validate_certs,
ca_path, client_cert, client_key, timeout. An option the task leaves unset falls back to the Docker
CLI's environment: DOCKER_HOST, DOCKER_TLS, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH (its ca.pem, cert.pem
and key.pem; ~/.docker when TLS is asked for by the environment and DOCKER_CERT_PATH is unset) and
DOCKER_TIMEOUT. An engine entry of a fleet has no environment: it says everything itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 120
MAX_TIMEOUT = 86400
SCHEMES = ("unix", "tcp", "ssh")
CONNECTION_OPTIONS: dict[str, Any] = {
    "docker_host": {"type": "str"},
    "tls": {"type": "bool"},
    "validate_certs": {"type": "bool"},
    "ca_path": {"type": "path"},
    "client_cert": {"type": "path"},
    "client_key": {"type": "path", "no_log": False},
    "timeout": {"type": "int"},
}
# The files the Docker CLI looks for in DOCKER_CERT_PATH.
CERT_FILES = {"ca_path": "ca.pem", "client_cert": "cert.pem", "client_key": "key.pem"}
# The Docker CLI's variables for the engine; a child process gets those of its task's engine, and no other.
CLI_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")
# A child that reaches a TLS engine through the Docker SDK (community.docker's modules under Molecule) would
# take these over the engine's CA, as requests lets them replace a session's CA.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
FALSE_WORDS = ("0", "false", "no", "off", "n", "f")


@dataclass(frozen=True)
class TLSConfig:
    """TLS to a tcp:// engine: check its certificate against ca_path (validate_certs), and show it the
    controller's certificate (the engine's --tlsverify asks for one)."""
    validate_certs: bool = True
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def files(self) -> dict[str, str]:
        """{option: path} of the files given."""
        given = (("ca_path", self.ca_path), ("client_cert", self.client_cert), ("client_key", self.client_key))
        return {option: path for option, path in given if path}


@dataclass(frozen=True)
class Endpoint:
    """An engine as the controller reaches it."""
    docker_host: str = DEFAULT_DOCKER_HOST
    tls: TLSConfig | None = None
    timeout: int = DEFAULT_TIMEOUT

    @property
    def scheme(self) -> str:
        return urlsplit(self.docker_host).scheme

    def describe(self) -> str:
        if not self.tls:
            return self.docker_host
        return f"{self.docker_host} (TLS{'' if self.tls.validate_certs else ', certificate not checked'})"


def _flag(value: str | None) -> bool | None:
    """An environment variable as a flag, the CLI's way: unset or empty is unset, any other word but a
    false one (0, false, no, off) is set."""
    if not value:
        return None
    return value.strip().lower() not in FALSE_WORDS


def _positive(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or not 0 < number <= MAX_TIMEOUT:
        raise InfraError(f"{where} must be a whole number of seconds above 0 and at most {MAX_TIMEOUT} (a day), "
                         f"not {value!r}.")
    return number


def _from_environment(options: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """The options with the unset ones taken from the environment; and which were taken from it."""
    settled = dict(options)
    taken: set[str] = set()

    def take(option: str, value: Any) -> None:
        if settled.get(option) is None and value is not None:
            settled[option] = value
            taken.add(option)

    take("docker_host", environ.get("DOCKER_HOST") or None)
    take("tls", _flag(environ.get("DOCKER_TLS")))
    take("validate_certs", _flag(environ.get("DOCKER_TLS_VERIFY")))
    take("timeout", environ.get("DOCKER_TIMEOUT") or None)
    cert_dir = environ.get("DOCKER_CERT_PATH")
    if not cert_dir and {"tls", "validate_certs"} & taken and environ.get("HOME"):
        cert_dir = os.path.join(environ["HOME"], ".docker")  # the CLI's default
    if cert_dir:
        for option, name in CERT_FILES.items():
            take(option, os.path.join(cert_dir, name))
    return settled, taken


def _named(option: str, taken: set[str]) -> str:
    sources = {"docker_host": "DOCKER_HOST", "tls": "DOCKER_TLS", "validate_certs": "DOCKER_TLS_VERIFY",
               "timeout": "DOCKER_TIMEOUT"}
    if option not in taken:
        return option
    return f"{option} (from {sources.get(option, 'DOCKER_CERT_PATH')})"


def _check_host(docker_host: Any, where: str) -> str:
    if not isinstance(docker_host, str) or not docker_host.strip():
        raise InfraError(f"{where}docker_host is empty; give the engine's address, e.g. unix:///var/run/docker.sock, "
                         "tcp://10.0.0.5:2376 (with TLS) or ssh://deploy@10.0.0.5.")
    parts = urlsplit(docker_host)
    if parts.scheme not in SCHEMES:
        raise InfraError(f"{where}docker_host {docker_host!r} must start with unix://, tcp:// or ssh://.")
    if parts.scheme == "unix" and not parts.path:
        raise InfraError(f"{where}docker_host {docker_host!r} names no socket path (unix:///var/run/docker.sock).")
    if parts.scheme in ("tcp", "ssh"):
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1:
            raise InfraError(f"{where}docker_host {docker_host!r} needs a host name or address "
                             "(and a numeric port, if any).")
    return docker_host


def _tls(settled: Mapping[str, Any], taken: set[str], scheme: str, where: str) -> TLSConfig | None:
    verify, tls = settled.get("validate_certs"), settled.get("tls")
    files = {option: settled.get(option) for option in CERT_FILES}
    given_files = [option for option, path in files.items() if path and option not in taken]
    if not (verify or tls):
        if given_files:
            raise InfraError(f"{where}{', '.join(given_files)} are used only over TLS; set validate_certs: true "
                             "(or tls: true to skip checking the engine's certificate).")
        return None
    if scheme != "tcp":
        if not any(settled.get(option) and option not in taken for option in ("tls", "validate_certs")):
            return None  # DOCKER_TLS_VERIFY of the environment, for a unix:// or ssh:// engine: ignored, as the CLI does
        raise InfraError(f"{where}TLS applies to tcp:// engines only; {scheme}:// is secured by "
                         f"{'the socket permissions' if scheme == 'unix' else 'SSH'}.")
    if bool(files["client_cert"]) != bool(files["client_key"]):
        raise InfraError(f"{where}client_cert and client_key go together (the engine checks the controller's "
                         "certificate with both), or neither is given.")
    if verify and not files["ca_path"]:
        raise InfraError(f"{where}{_named('validate_certs', taken)} needs ca_path, the CA that signed the engine's "
                         "certificate (or DOCKER_CERT_PATH with ca.pem); set tls: true instead to skip checking it, "
                         "which lets anyone in between pose as the engine.")
    return TLSConfig(validate_certs=bool(verify), **files)


def resolve_endpoint(options: Mapping[str, Any], environ: Mapping[str, str] | None = None, what: str = "") -> Endpoint:
    """The engine of the connection options; options left unset fall back to environ (the Docker CLI's
    variables) when it is given. `what` starts each error sentence (an engine's name)."""
    where = f"{what}: " if what else ""
    settled, taken = _from_environment(options, environ) if environ is not None else (dict(options), set())
    docker_host = _check_host(settled.get("docker_host") or DEFAULT_DOCKER_HOST, where)
    timeout = settled.get("timeout")
    timeout = DEFAULT_TIMEOUT if timeout is None else _positive(timeout, f"{where}{_named('timeout', taken)}")
    return Endpoint(docker_host=docker_host, tls=_tls(settled, taken, urlsplit(docker_host).scheme, where),
                    timeout=timeout)


def endpoint_from_environment(environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine the Docker CLI would use: DOCKER_HOST and its TLS variables, else the default socket."""
    return resolve_endpoint({}, os.environ if environ is None else environ)


def cert_directory(tls: TLSConfig) -> str | None:
    """The one directory that holds the TLS files under the names the Docker CLI looks for in
    DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem); None when they are named or placed otherwise."""
    files = tls.files()
    directories = {os.path.dirname(os.path.abspath(path)) for path in files.values()}
    if len(directories) == 1 and all(os.path.basename(path) == CERT_FILES[option] for option, path in files.items()):
        return directories.pop()
    return None


def cli_environment(base: Mapping[str, str], docker_host: str, tls: TLSConfig | None,
                    cert_dir: str | None) -> dict[str, str]:
    """base (a child process's environment) with the Docker CLI's variables of one engine and none of
    another, so the CLI, community.docker, testinfra and Molecule in the child reach that engine; for a
    TLS engine, without the CA bundle variables that would replace its CA."""
    dropped = CLI_VARIABLES + (CA_BUNDLE_VARIABLES if tls else ())
    environment = {name: value for name, value in base.items() if name not in dropped}
    environment["DOCKER_HOST"] = docker_host
    if tls:
        environment["DOCKER_TLS_VERIFY" if tls.validate_certs else "DOCKER_TLS"] = "1"
        if cert_dir:
            environment["DOCKER_CERT_PATH"] = cert_dir
    return environment
