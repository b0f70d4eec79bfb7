# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An ssh:// engine reached through one SSH connection for the whole task.

The relay opens one SSH connection (paramiko, which reads ~/.ssh/config, ~/.ssh/known_hosts, the
ssh-agent and the default keys, as the Docker SDK does) and a unix socket in a private directory of the
controller. Each connection to that socket becomes one more channel of the same SSH connection, running
`docker system dial-stdio` on the far side: the Docker CLI's own way in, so the engine is whatever the
CLI there reaches. The SDK keeps its HTTP connections to the socket open, so a call starts neither ssh
nor a channel; child processes (the bake's play, testinfra, Molecule) reach the engine through the same
socket as a local one.

sshd allows a number of channels per connection (MaxSessions, 10 by default). A channel is closed as
soon as the engine's side of it ends; a connection that finds none free waits a moment for one, and
only a burst that outlasts that wait gets one more SSH connection rather than a failure.

An SSH connection that is lost (a network outage, sshd restarted, a NAT that forgot it) is made again for
the next call, so a long task, and the revert of a failed one, still reach the engine; only the calls
under way when it was lost fail, as they would on a local socket whose engine restarted.
"""

from __future__ import annotations

import collections
import os
import select
import shutil
import socket
import tempfile
import threading
from typing import Any
from urllib.parse import urlsplit

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

try:
    import paramiko
except ImportError:  # named when an ssh:// engine is used; the other schemes do without it
    paramiko = None

DIAL = "docker system dial-stdio"
CHUNK = 65536
POLL_SECONDS = 5.0
FREE_CHANNEL_WAIT = 2.0  # seconds a connection waits for a channel before the relay makes another SSH connection


def ssh_target(docker_host: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """paramiko's connect() arguments for an ssh:// URL, completed by the host's ~/.ssh/config entry
    (HostName, Port, User, IdentityFile, ProxyCommand); the URL wins where both say something."""
    parts = urlsplit(docker_host)
    config = config or {}
    target: dict[str, Any] = {"hostname": config.get("hostname", parts.hostname),
                              "port": parts.port or int(config.get("port", 22)),
                              "username": parts.username or config.get("user")}
    if config.get("identityfile"):
        target["key_filename"] = [os.path.expanduser(path) for path in config["identityfile"]]
    if config.get("proxycommand") and paramiko is not None:
        target["sock"] = paramiko.ProxyCommand(config["proxycommand"])
    return target


def _ssh_config(hostname: str) -> dict[str, Any]:
    path = os.path.expanduser("~/.ssh/config")
    if paramiko is None or not os.path.isfile(path):
        return {}
    return dict(paramiko.SSHConfig.from_path(path).lookup(hostname))


def _known_hosts(client: Any, config: dict[str, Any]) -> None:
    for path in ["/etc/ssh/ssh_known_hosts", *config.get("userknownhostsfile", "~/.ssh/known_hosts").split()]:
        path = os.path.expanduser(path)
        if os.path.isfile(path):
            client.load_system_host_keys(path)


def _refusal(error: Exception, docker_host: str, hostname: str) -> str:
    """A sentence for an SSH connection that failed, saying what to do."""
    target = urlsplit(docker_host).netloc
    if isinstance(error, paramiko.BadHostKeyException):
        return (f"The SSH host key of {hostname} is not the one ~/.ssh/known_hosts holds for it; if the machine was "
                f"rebuilt, remove the old key (ssh-keygen -R {hostname}) and connect once with 'ssh {target}'.")
    if isinstance(error, paramiko.AuthenticationException):
        return (f"SSH to {target} refused the controller's keys; load the key into ssh-agent, or name it with "
                "IdentityFile in ~/.ssh/config.")
    if isinstance(error, paramiko.SSHException) and "known_hosts" in str(error):
        return (f"The SSH host key of {hostname} is not known to the controller; connect once with 'ssh {target}' "
                "(or add it to ~/.ssh/known_hosts with ssh-keyscan) so the engine cannot be impersonated.")
    return f"Cannot reach {target} over SSH ({type(error).__name__}: {error})."


def _is_up(client: Any) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


class SSHRelay:
    """One SSH connection to an ssh:// engine's machine, and the local socket that leads to its engine."""

    def __init__(self, docker_host: str, timeout: int) -> None:
        if paramiko is None:
            raise InfraError(f"The engine {docker_host} is reached over SSH, which needs the Python package "
                             "'paramiko' on the controller; install it with 'pip install paramiko' (the "
                             "collection's meta/ee-requirements.txt lists every package it needs).")
        self.docker_host = docker_host
        self.connections = 1  # SSH connections made: more after a burst or a lost connection
        self.channels = 0  # opened so far: one per connection to the socket
        self.open = 0  # open now
        self.most_open = 0  # the most open at once
        self.failures: collections.deque[str] = collections.deque(maxlen=5)  # what dial-stdio said, if anything
        self.no_channel = ""  # why the latest connection to the socket got no channel ("" once one did)
        self._timeout = timeout
        self._closed = threading.Event()
        self._lock = threading.Condition()
        self._clients = [self._connect(docker_host, timeout)]
        self._directory = tempfile.mkdtemp(prefix="immutable-infra-ssh-")  # 0700: this user's only
        self.path = os.path.join(self._directory, "docker.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        threading.Thread(target=self._accept, name=f"ssh relay {docker_host}", daemon=True).start()

    @property
    def connected(self) -> bool:
        """Whether an SSH connection is up; when all were lost, the next call makes a new one."""
        with self._lock:
            return any(_is_up(client) for client in self._clients)

    @property
    def local_host(self) -> str:
        """The DOCKER_HOST that reaches the engine through this relay."""
        return f"unix://{self.path}"

    @staticmethod
    def _connect(docker_host: str, timeout: int) -> Any:
        config = _ssh_config(urlsplit(docker_host).hostname or "")
        target = ssh_target(docker_host, config)
        client = paramiko.SSHClient()
        _known_hosts(client, config)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(**target, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
        except (paramiko.SSHException, OSError) as error:
            client.close()
            raise InfraError(_refusal(error, docker_host, target["hostname"])) from None
        client.get_transport().set_keepalive(30)
        return client

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                local, _address = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(local,), daemon=True).start()

    def _open_channel(self) -> Any:
        """A channel running dial-stdio, on the first connection that has one to spare; connections that
        were lost are closed first."""
        with self._lock:
            for lost in [client for client in self._clients if not _is_up(client)]:
                lost.close()
                self._clients.remove(lost)
            channel = self._spare_channel()
            full = self.open
            if channel is None and self._clients:  # all busy: one of them may end in a moment
                if self._lock.wait_for(lambda: self.open < full, FREE_CHANNEL_WAIT):
                    channel = self._spare_channel()
            if channel is None:
                self._clients.append(self._connect(self.docker_host, self._timeout))
                self.connections += 1
                channel = self._clients[-1].get_transport().open_session(timeout=POLL_SECONDS * 6)
            self.channels += 1
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        channel.exec_command(DIAL)
        return channel

    def _spare_channel(self) -> Any:
        for client in self._clients:
            try:
                return client.get_transport().open_session(timeout=POLL_SECONDS * 6)
            except paramiko.SSHException:
                continue  # the server's MaxSessions on this connection, or the connection was lost just now
        return None

    def _relay(self, local: socket.socket) -> None:
        try:
            channel = self._open_channel()
        except (InfraError, paramiko.SSHException, OSError, EOFError) as error:
            self.no_channel = (f"a new SSH connection failed: {error.message.rstrip('.')}" if isinstance(error, InfraError)
                               else f"the SSH connection could not open a channel ({type(error).__name__}: {error})")
            local.close()
            return
        self.no_channel = ""
        try:
            self._pump(local, channel)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # either end went away (the SSH connection too, when the task ends): both are closed below
        finally:
            channel.close()
            local.close()
            with self._lock:
                self.open -= 1
                self._lock.notify_all()

    def _pump(self, local: socket.socket, channel: Any) -> None:
        """Copies bytes both ways until the engine's side ends. A client that stops sending is passed on
        (the engine's hijacked streams use half-closed connections) and its answer still read; once the
        engine's side has ended, nothing more can be said on the connection, and its channel is freed."""
        local_open = True
        while not self._closed.is_set():
            readable = select.select([local, channel] if local_open else [channel], [], [], POLL_SECONDS)[0]
            if local in readable:
                data = local.recv(CHUNK)
                if data:
                    channel.sendall(data)
                else:
                    channel.shutdown_write()
                    local_open = False
            if channel in readable:
                if channel.recv_stderr_ready():
                    self.failures.append(channel.recv_stderr(CHUNK).decode("utf-8", "replace").strip())
                if channel.recv_ready() or channel.eof_received or channel.closed:  # closed: the connection was lost
                    data = channel.recv(CHUNK)
                    if not data:
                        return
                    local.sendall(data)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for client in self._clients:
            client.close()
        shutil.rmtree(self._directory, ignore_errors=True)
