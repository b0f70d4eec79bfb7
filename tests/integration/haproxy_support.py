"""A real HAProxy and small HTTP backends for tests, started as plain processes and threads on 127.0.0.1.

Its fixtures are in every module (conftest.py imports them):

    def test_something(start_haproxy, start_http_backend):
        app = start_http_backend("app-1")
        proxy = start_haproxy(BackendConfig("web", slots=2))
        runtime = HAProxyRuntime(proxy.runtime_api)
        server = runtime.add_server("web", "app-1", app.address, app.port)  # "slot1", in drain
        runtime.wait_until_up("web", server, timeout=5)
        runtime.set_state("web", server, "ready")
        assert requests.get(proxy.url("web"), timeout=2).text == "app-1"

proxy.reload() restarts HAProxy keeping its servers (through the server-state file), and
proxy.command(text) sends a raw runtime API command. Backends get checked every 100ms, rise 1, fall 1.

Every HAProxy and backend a test starts is stopped when the test ends, even when it fails.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import pytest

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_PACKAGE = "haproxy"  # Debian bookworm ships 2.6
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class BackendConfig:
    """One backend section, and the frontend in front of it.

    slots: number of `server-template` slots (named <slot_prefix>1..N), declared the way
    docs/haproxy.md asks: disabled, parked at 0.0.0.0, with health checks, kept across reloads.
    servers: raw `server ...` lines, for static servers.
    stock: the backend as a new user writes it, not as docs/haproxy.md tunes it: slots are
    `server-template <prefix> 1-N 127.0.0.1:9 check disabled` placeholders, with HAProxy's default
    check timing (inter 2s, rise 2, fall 3) and no default-server line.
    """

    name: str
    slots: int = 0
    slot_prefix: str = "slot"
    balance: str = "roundrobin"
    health_path: str = "/health"
    check_interval: str = "100ms"
    rise: int = 1
    fall: int = 1
    servers: Sequence[str] = ()
    extra_lines: Sequence[str] = ()
    stock: bool = False


def render_config(backends: Sequence[BackendConfig], frontend_ports: dict[str, int], directory: str,
                  tcp_api_port: int | None = None) -> str:
    lines = [
        "global",
        f"    stats socket {directory}/admin.sock mode 600 level admin expose-fd listeners",
        *([f"    stats socket 127.0.0.1:{tcp_api_port} level admin"] if tcp_api_port else []),
        "    stats timeout 10s",
        f"    server-state-file {directory}/server-state",
        "",
        "defaults",
        "    load-server-state-from-file global",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "    timeout check 1s",
        "    option redispatch",
        "    retries 3",
    ]
    for backend in backends:
        lines += [
            "",
            f"frontend fe_{backend.name}",
            f"    bind 127.0.0.1:{frontend_ports[backend.name]}",
            f"    default_backend {backend.name}",
            "",
            f"backend {backend.name}",
            f"    balance {backend.balance}",
            f"    option httpchk GET {backend.health_path}",
            "    http-check expect status 200",
            *([] if backend.stock else
              [f"    default-server inter {backend.check_interval} rise {backend.rise} fall {backend.fall}"]),
            *(f"    {line}" for line in backend.extra_lines),
            *(f"    {line}" for line in backend.servers),
        ]
        if backend.slots and backend.stock:
            lines.append(f"    server-template {backend.slot_prefix} 1-{backend.slots} 127.0.0.1:9 check disabled")
        elif backend.slots:
            lines.append(f"    server-template {backend.slot_prefix} 1-{backend.slots} parked.invalid:80 check disabled "
                         "init-addr last,0.0.0.0")
    return "\n".join(lines) + "\n"


@dataclass
class HAProxyProcess:
    """A running HAProxy; runtime_api is its unix socket, tcp_runtime_api its TCP one (or None)."""

    directory: str
    backends: Sequence[BackendConfig]
    tcp_runtime_api: str | None = None
    frontend_ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def runtime_api(self) -> str:
        return os.path.join(self.directory, "admin.sock")

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "haproxy.cfg")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "haproxy.log")

    def url(self, backend: str | None = None, path: str = "/") -> str:
        """The frontend URL that reaches the backend (the first one by default)."""
        return f"http://127.0.0.1:{self.frontend_ports[backend or self.backends[0].name]}{path}"

    def start(self, tcp_api: bool = False) -> HAProxyProcess:
        if not os.path.exists(HAPROXY):
            pytest.fail(f"haproxy is not installed; run 'apt-get install -y {HAPROXY_PACKAGE}' (or 'make setup')")
        self.frontend_ports = {backend.name: free_port() for backend in self.backends}
        tcp_port = free_port() if tcp_api else None
        self.tcp_runtime_api = f"127.0.0.1:{tcp_port}" if tcp_port else None
        with open(self.config_path, "w", encoding="utf-8") as handle:
            handle.write(render_config(self.backends, self.frontend_ports, self.directory, tcp_port))
        self._launch()
        return self

    def reload(self) -> None:
        """Starts HAProxy afresh from the same config, carrying servers over the way a reload does:
        their state is saved to the server-state file first, as a reload script would."""
        self.save_server_state()
        self.stop()
        self._launch()

    def reload_in_place(self, save_state: bool = True) -> None:
        """A reload as a service manager does it: the servers are saved to the server-state file, then a
        new HAProxy takes the listening sockets over from the running one (-x) and tells it to finish
        its connections and exit (-sf). No connection is refused meanwhile. With save_state=False the
        new process loads the state saved last (save_server_state), as when a change lands between a
        reload's save and its new process."""
        if save_state:
            self.save_server_state()
        old = self.process
        assert old is not None and old.poll() is None, "HAProxy is not running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([HAPROXY, "-db", "-f", self.config_path, "-x", self.runtime_api,
                                             "-sf", str(old.pid)], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        try:
            old.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the old HAProxy did not exit within {START_TIMEOUT:g}s of the reload:\n{self._log()}")
        if self.process.poll() is not None:
            pytest.fail(f"the reloaded haproxy exited with {self.process.returncode}:\n{self._log()}")

    def save_server_state(self) -> None:
        """What a reload script does first: the running servers, to the config's server-state-file."""
        with open(os.path.join(self.directory, "server-state"), "w", encoding="utf-8") as handle:
            handle.write(self.command("show servers state"))

    def start_again(self) -> None:
        """After stop(): the same config and ports."""
        self._launch()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def command(self, text: str) -> str:
        """One runtime API command, for checks the adapter does not offer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(self.runtime_api)
            connection.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def _launch(self) -> None:
        with open(self.log_path, "ab") as log:
            # -db: stay in the foreground as one process, so stopping it leaves nothing behind.
            self.process = subprocess.Popen([HAPROXY, "-db", "-f", self.config_path], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"haproxy exited with {self.process.returncode}:\n{self._log()}")
            try:
                if "Name: HAProxy" in self.command("show info"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"haproxy did not open its runtime API within {START_TIMEOUT:g}s:\n{self._log()}")

    def server_events(self) -> list[str]:
        """HAProxy's own account of its servers going up and down, to explain a failed request."""
        return [line.strip() for line in self._log_text().splitlines()
                if " is UP" in line or " is DOWN" in line or "no server" in line][-40:]

    def _log(self) -> str:
        return self._log_text()[-3000:]

    def _log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the backend's name: 200 while the backend is healthy, else 503 (as an
    application still starting would). GET /slow?seconds=N answers after N seconds."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real application servers speak it to HAProxy
    timeout = 10

    def do_GET(self) -> None:
        backend: HTTPBackend = self.server.backend  # type: ignore[attr-defined]
        url = urlparse(self.path)
        status = 200 if backend.healthy else 503
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
        if url.path != backend.health_path:
            backend.count_request()
        body = backend.name.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # pylint: disable=redefined-builtin
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # HAProxy's health checks close their connection with a reset; that is not a failure.
        pass


class HTTPBackend:
    """A small HTTP server on 127.0.0.1 standing in for one host of a service."""

    def __init__(self, name: str, healthy: bool = True, health_path: str = "/health") -> None:
        self.name = name
        self.healthy = healthy
        self.health_path = health_path
        self.address = "127.0.0.1"
        self.requests_served = 0
        self._lock = threading.Lock()
        self._server = _QuietServer((self.address, 0), _Handler)
        self._server.backend = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"http-backend-{name}", daemon=True)
        self._thread.start()

    def count_request(self) -> None:
        with self._lock:
            self.requests_served += 1

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT)


@pytest.fixture
def start_haproxy():
    """start_haproxy(*backends, tcp_api=False) -> HAProxyProcess; all are stopped after the test."""
    started: list[HAProxyProcess] = []

    def start(*backends: BackendConfig, tcp_api: bool = False) -> HAProxyProcess:
        # A short directory: a unix socket path must fit in 107 bytes, pytest's tmp_path may not.
        instance = HAProxyProcess(tempfile.mkdtemp(prefix="haproxy-"), backends)
        started.append(instance)
        return instance.start(tcp_api=tcp_api)

    yield start
    for instance in started:
        instance.stop()
        shutil.rmtree(instance.directory, ignore_errors=True)


@pytest.fixture
def start_http_backend():
    """start_http_backend(name, healthy=True) -> HTTPBackend; all are stopped after the test."""
    started: list[HTTPBackend] = []

    def start(name: str, healthy: bool = True) -> HTTPBackend:
        backend = HTTPBackend(name, healthy)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


def restart_forgetting_servers(proxy: HAProxyProcess) -> None:
    """Stops and starts HAProxy from its config with no server state: every server the runtime API added or
    changed is forgotten, as after a reload without a server-state file."""
    with open(os.path.join(proxy.directory, "server-state"), "w", encoding="utf-8"):
        pass
    proxy.stop()
    proxy.start_again()
