"""A multi-engine rig on this one machine: extra Docker engines reached over TLS, and registries on loopback.

Each engine is a real `dockerd` beside the machine's own, with its own --data-root, --exec-root,
--pidfile, unix socket, TLS port on 127.0.0.1 and bridge (its own subnet, --iptables=false so it never
touches the main engine's rules). The host reaches containers on every engine at their bridge address,
and ports published on 127.0.0.1 through the engine's userland proxy. The registry is Debian's
`docker-registry` with a config of its own (127.0.0.1 only, storage in the rig directory), run twice:
open on the rig port, and with htpasswd basic auth one port below it (user `rig`, a password made at
the first `up`, kept in the rig directory).

Every step checks whether it is already done, so a second `up` takes about a second.
What the rig offers is written to RIG_DIR/rig.json (engines, TLS files, registries) for tests and demos.

Usage: python scripts/engines.py up | down [--purge] | status
Environment: IMMUTABLE_INFRA_RIG_DIR (default /var/lib/immutable-infra/rig),
             IMMUTABLE_INFRA_RIG_ENGINES (default 3), IMMUTABLE_INFRA_RIG_PORT (default 23750: the
             open registry; the authenticated one listens one below, engines on the next ports).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ensure_host import die, ensure_packages, say, up_down_status

RIG_DIR = os.environ.get("IMMUTABLE_INFRA_RIG_DIR", "/var/lib/immutable-infra/rig")
RUN_DIR = "/run/immutable-infra-rig"  # exec roots and sockets: short paths (unix sockets are limited to 108 bytes)
ENGINE_COUNT = int(os.environ.get("IMMUTABLE_INFRA_RIG_ENGINES", "3"))
PORT = int(os.environ.get("IMMUTABLE_INFRA_RIG_PORT", "23750"))
TLS_DIR = os.path.join(RIG_DIR, "tls")
CLIENT_DIR = os.path.join(TLS_DIR, "client")  # ca.pem, cert.pem, key.pem: the names DOCKER_CERT_PATH expects
REGISTRY_DIR = os.path.join(RIG_DIR, "registry")  # storage shared by both registries
AUTH_DIR = os.path.join(REGISTRY_DIR, "auth")
REGISTRY_USER = "rig"
REGISTRY_BINARY = "/usr/bin/docker-registry"
PACKAGED_REGISTRY_CONFIG = "/etc/docker/registry/config.yml"
START_TIMEOUT = 60


@dataclass(frozen=True)
class RigEngine:
    index: int

    @property
    def name(self) -> str:
        return f"rig{self.index}"

    @property
    def port(self) -> int:
        return PORT + self.index

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def socket(self) -> str:
        return os.path.join(RUN_DIR, f"{self.name}.sock")

    @property
    def bridge(self) -> str:
        return f"iirig{self.index}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.231.{self.index}.0/24")

    @property
    def home(self) -> str:
        return os.path.join(RIG_DIR, self.name)

    @property
    def pidfile(self) -> str:
        return os.path.join(RUN_DIR, f"{self.name}.pid")

    def describe(self) -> dict:
        """The engine as an engines entry takes it (validate_certs, ca_path...), and its TLS files once more
        in the older tls form, which engine entries still read."""
        files = {"ca_path": os.path.join(CLIENT_DIR, "ca.pem"), "client_cert": os.path.join(CLIENT_DIR, "cert.pem"),
                 "client_key": os.path.join(CLIENT_DIR, "key.pem")}
        return {"name": self.name, "docker_host": self.docker_host, "validate_certs": True, **files,
                "unix_socket": f"unix://{self.socket}", "subnet": str(self.subnet), "bridge": self.bridge,
                "tls": {"ca_cert": files["ca_path"], "client_cert": files["client_cert"],
                        "client_key": files["client_key"]}}


def engines() -> list[RigEngine]:
    return [RigEngine(index) for index in range(1, ENGINE_COUNT + 1)]


# TLS ---------------------------------------------------------------------------------------------
def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # a file that already existed keeps its old mode otherwise
        handle.write(data)


def ensure_certificates() -> None:
    """A CA, one server certificate for 127.0.0.1/localhost and one client certificate (10 years)."""
    wanted = [os.path.join(TLS_DIR, name) for name in ("ca.pem", "server-cert.pem", "server-key.pem")] + \
             [os.path.join(CLIENT_DIR, name) for name in ("ca.pem", "cert.pem", "key.pem")]
    if all(os.path.exists(path) for path in wanted):
        say(f"rig tls: present ({TLS_DIR})")
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=3650)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("immutable.infra rig CA")).issuer_name(name("immutable.infra rig CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(later).add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(later).add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key_pem(key)

    server_cert, server_key = leaf("immutable.infra rig engine", ExtendedKeyUsageOID.SERVER_AUTH,
                                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))])
    client_cert, client_key = leaf("immutable.infra rig controller", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    _write(os.path.join(TLS_DIR, "ca.pem"), ca_pem)
    _write(os.path.join(TLS_DIR, "ca-key.pem"), key_pem(ca_key), 0o600)
    _write(os.path.join(TLS_DIR, "server-cert.pem"), server_cert)
    _write(os.path.join(TLS_DIR, "server-key.pem"), server_key, 0o600)
    _write(os.path.join(CLIENT_DIR, "ca.pem"), ca_pem)
    _write(os.path.join(CLIENT_DIR, "cert.pem"), client_cert)
    _write(os.path.join(CLIENT_DIR, "key.pem"), client_key, 0o600)
    say(f"rig tls: CA, server and client certificates written to {TLS_DIR}")


# processes ---------------------------------------------------------------------------------------
def _pid(pidfile: str) -> int | None:
    """The PID in the file when that process is alive, else None."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _stop(pidfile: str, what: str, timeout: float = 30) -> None:
    pid = _pid(pidfile)
    if pid is None:
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(pidfile) == pid:
        time.sleep(0.2)
    if _pid(pidfile) == pid:
        os.kill(pid, signal.SIGKILL)
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    say(f"{what}: stopped")


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=os.path.join(CLIENT_DIR, "ca.pem"))
    context.load_cert_chain(os.path.join(CLIENT_DIR, "cert.pem"), os.path.join(CLIENT_DIR, "key.pem"))
    return context


def engine_answers(engine: RigEngine) -> bool:
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{engine.port}/_ping", timeout=3,
                                    context=_tls_context()) as response:
            return response.read() == b"OK"
    except OSError:
        return False


def ensure_bridge(engine: RigEngine) -> None:
    if subprocess.run(["ip", "link", "show", engine.bridge], capture_output=True, check=False).returncode != 0:
        subprocess.run(["ip", "link", "add", engine.bridge, "type", "bridge"], check=True)
    gateway = f"{next(engine.subnet.hosts())}/{engine.subnet.prefixlen}"
    addresses = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", engine.bridge], capture_output=True,
                               text=True, check=True).stdout
    if gateway not in addresses:
        subprocess.run(["ip", "addr", "add", gateway, "dev", engine.bridge], check=True)
    subprocess.run(["ip", "link", "set", engine.bridge, "up"], check=True)


ENGINE_CONFIG = b'{"live-restore": true}\n'


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def stop_engine(engine: RigEngine) -> None:
    """SIGTERM, as `systemctl restart docker` sends; with live-restore its containers keep running."""
    _stop(engine.pidfile, f"rig engine {engine.name}")


def start_engine(engine: RigEngine) -> float:
    """Starts the engine unless it answers already; returns the seconds it took (0 when it was up)."""
    # Its own config, so /etc/docker/daemon.json does not apply. live-restore: containers keep running, with
    # their addresses, while the engine restarts (in the config file, not a flag, so a reload can change it).
    config = os.path.join(engine.home, "daemon.json")
    pid = _pid(engine.pidfile)
    if pid and engine_answers(engine):
        if _read(config) != ENGINE_CONFIG:
            _write(config, ENGINE_CONFIG)
            os.kill(pid, signal.SIGHUP)  # dockerd reloads live-restore without a restart
            say(f"rig engine {engine.name}: config reloaded (live-restore on)")
        return 0.0
    started = time.monotonic()
    _stop(engine.pidfile, f"{engine.name} (not answering)")
    ensure_bridge(engine)
    os.makedirs(engine.home, exist_ok=True)
    os.makedirs(RUN_DIR, exist_ok=True)
    _write(config, ENGINE_CONFIG)
    if os.path.exists(engine.socket):
        os.unlink(engine.socket)
    command = ["dockerd", "--config-file", config, "--data-root", os.path.join(engine.home, "data"),
               "--exec-root", os.path.join(RUN_DIR, engine.name), "--pidfile", engine.pidfile,
               "-H", f"unix://{engine.socket}", "-H", engine.docker_host,
               "--tlsverify", "--tlscacert", os.path.join(TLS_DIR, "ca.pem"),
               "--tlscert", os.path.join(TLS_DIR, "server-cert.pem"), "--tlskey", os.path.join(TLS_DIR, "server-key.pem"),
               "--bridge", engine.bridge, "--iptables=false", "--ip-masq=false", "--userland-proxy=true"]
    with open(os.path.join(engine.home, "dockerd.log"), "ab") as log:
        subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if engine_answers(engine):
            return time.monotonic() - started
        time.sleep(0.2)
    die(f"engine {engine.name} did not answer on {engine.docker_host} within {START_TIMEOUT} s; "
        f"see {os.path.join(engine.home, 'dockerd.log')}")
    return 0.0


# registries --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RigRegistry:
    name: str
    port: int
    authenticated: bool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> str:
        return os.path.join(RUN_DIR, f"{self.name}.pid")

    @property
    def label(self) -> str:
        return "rig registry" + (" (basic auth)" if self.authenticated else "")

    def describe(self) -> dict:
        if not self.authenticated:
            return {"address": self.address}
        return {"address": self.address, "username": REGISTRY_USER, "password": registry_password()}


OPEN_REGISTRY = RigRegistry("registry", PORT, authenticated=False)
AUTH_REGISTRY = RigRegistry("registry-auth", PORT - 1, authenticated=True)
REGISTRIES = (OPEN_REGISTRY, AUTH_REGISTRY)


def registry_password() -> str:
    path = os.path.join(AUTH_DIR, "password")
    if not os.path.exists(path):
        os.makedirs(AUTH_DIR, mode=0o700, exist_ok=True)
        _write(path, secrets.token_hex(16).encode(), 0o600)
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()


def _htpasswd() -> str:
    """The registry's htpasswd file (bcrypt, the only hash distribution takes), made from the password."""
    path = os.path.join(AUTH_DIR, "htpasswd")
    if not os.path.exists(path):
        ensure_packages({"htpasswd": "apache2-utils"})
        made = subprocess.run(["htpasswd", "-Bbn", REGISTRY_USER, registry_password()], capture_output=True,
                              check=True, text=True)
        _write(path, made.stdout.strip().encode() + b"\n", 0o600)
    return path


def registry_answers(registry: RigRegistry) -> bool:
    """The open registry answers 200; the authenticated one 401 without credentials."""
    try:
        with urllib.request.urlopen(f"http://{registry.address}/v2/", timeout=3) as response:
            return response.status == 200 and not registry.authenticated
    except urllib.error.HTTPError as error:
        return error.code == 401 and registry.authenticated
    except OSError:
        return False


def _packaged_registry_pids() -> list[int]:
    """Registries running with the package's own config (started by its postinst or init script)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    arguments = handle.read().split(b"\0")
            except OSError:
                continue
            if arguments and arguments[0].endswith(b"docker-registry") and PACKAGED_REGISTRY_CONFIG.encode() in arguments:
                pids.append(int(entry))
    return pids


def stop_packaged_registry() -> None:
    """The package starts a registry on :5000 (all interfaces, htpasswd auth) at install; the rig runs its own."""
    if not os.path.exists(PACKAGED_REGISTRY_CONFIG):
        return
    if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", "disable", "--now", "docker-registry"], capture_output=True, check=False)
    elif os.path.exists("/etc/init.d/docker-registry"):
        subprocess.run(["/etc/init.d/docker-registry", "stop"], capture_output=True, check=False)
        subprocess.run(["update-rc.d", "docker-registry", "disable"], capture_output=True, check=False)
    for pid in _packaged_registry_pids():
        os.kill(pid, signal.SIGTERM)
        say(f"rig registry: stopped the package's own registry on :5000 (pid {pid})")


def _registry_config(registry: RigRegistry) -> str:
    auth = (f"auth:\n  htpasswd:\n    realm: immutable-infra-rig\n    path: {_htpasswd()}\n"
            if registry.authenticated else "")
    config = os.path.join(REGISTRY_DIR, f"{registry.name}.yml")
    _write(config, (f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {REGISTRY_DIR}/storage\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {registry.address}\n{auth}").encode())
    return config


def start_registry(registry: RigRegistry) -> float:
    if _pid(registry.pidfile) and registry_answers(registry):
        return 0.0
    started = time.monotonic()
    _stop(registry.pidfile, f"{registry.label} (not answering)")
    os.makedirs(os.path.join(REGISTRY_DIR, "storage"), exist_ok=True)
    os.makedirs(RUN_DIR, exist_ok=True)
    config = _registry_config(registry)
    log_path = os.path.join(REGISTRY_DIR, f"{registry.name}.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen([REGISTRY_BINARY, "serve", config], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _write(registry.pidfile, f"{process.pid}\n".encode())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if registry_answers(registry):
            return time.monotonic() - started
        if process.poll() is not None:
            break
        time.sleep(0.1)
    die(f"the {registry.label} did not answer on {registry.address}; see {log_path}")
    return 0.0


def start_registries() -> list[float]:
    if not os.path.exists(REGISTRY_BINARY):
        ensure_packages({REGISTRY_BINARY: "docker-registry"})
    stop_packaged_registry()
    return [start_registry(registry) for registry in REGISTRIES]


# steps -------------------------------------------------------------------------------------------
def write_description() -> None:
    _write(os.path.join(RIG_DIR, "rig.json"), json.dumps(
        {"engines": [engine.describe() for engine in engines()], "registry": OPEN_REGISTRY.address,
         "auth_registry": AUTH_REGISTRY.describe()}, indent=2).encode(), 0o600)  # it holds a password


def _started(seconds: float) -> str:
    return f"started in {seconds:.1f} s" if seconds else "up"


def up() -> None:
    if os.geteuid() != 0:
        die("the engine rig runs dockerd and needs root")
    ensure_packages({"dockerd": "docker.io", "ip": "iproute2"})
    started = time.monotonic()
    ensure_certificates()
    with ThreadPoolExecutor(max_workers=ENGINE_COUNT + 1) as pool:
        registries = pool.submit(start_registries)
        timings = list(pool.map(start_engine, engines()))
        registry_timings = registries.result()
    for engine, seconds in zip(engines(), timings, strict=True):
        say(f"rig engine {engine.name}: {_started(seconds)} ({engine.docker_host}, TLS; containers on {engine.subnet})")
    for registry, seconds in zip(REGISTRIES, registry_timings, strict=True):
        say(f"{registry.label}: {_started(seconds)} ({registry.address})")
    write_description()
    say(f"rig: ready in {time.monotonic() - started:.1f} s ({os.path.join(RIG_DIR, 'rig.json')})")


def down(purge: bool) -> None:
    for engine in engines():
        _stop(engine.pidfile, f"rig engine {engine.name}")
        if subprocess.run(["ip", "link", "show", engine.bridge], capture_output=True, check=False).returncode == 0:
            subprocess.run(["ip", "link", "delete", engine.bridge], check=False)
    for registry in REGISTRIES:
        _stop(registry.pidfile, registry.label)
    if os.path.exists(os.path.join(RIG_DIR, "rig.json")):
        os.unlink(os.path.join(RIG_DIR, "rig.json"))
    if purge:
        shutil.rmtree(RIG_DIR, ignore_errors=True)
        say(f"rig: removed {RIG_DIR} (images, registry storage, certificates)")
    say("rig: down")


def status() -> None:
    for engine in engines():
        say(f"rig engine {engine.name}: {'up' if engine_answers(engine) else 'down'} ({engine.docker_host})")
    for registry in REGISTRIES:
        say(f"{registry.label}: {'up' if registry_answers(registry) else 'down'} ({registry.address})")


def main(argv: list[str]) -> None:
    up_down_status(argv, __doc__.strip().split("Usage: ", 1)[1].splitlines()[0], up, down, status)


if __name__ == "__main__":
    main(sys.argv[1:])
