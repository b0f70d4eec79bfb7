# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One SSH connection to a VM for everything: the first login starts an OpenSSH master connection,
and every later command (the launcher's, testinfra's, pytest-xdist workers') runs as a channel of it,
so the guest makes one SSH session, not one per command.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

# A connection attempt gives up quickly: qemu's user-mode network accepts a connection before the
# guest can answer it, and a stalled attempt must not hold the next one up.
CONNECT_SECONDS = 2
LOGIN_SECONDS = 20


@dataclass
class SshSession:
    """root@127.0.0.1:port with key, named 'vm' in its own ssh_config (for testinfra's ssh backend)."""

    workdir: str
    port: int
    key: str

    @property
    def config(self) -> str:
        return os.path.join(self.workdir, "ssh_config")

    @property
    def control_path(self) -> str:
        return os.path.join(self.workdir, "ssh.sock")

    def write_config(self) -> str:
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(f"Host vm\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
                         f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
                         "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                         f"  ConnectTimeout {CONNECT_SECONDS}\n  ServerAliveInterval 5\n"
                         f"  ControlMaster auto\n  ControlPath {self.control_path}\n  ControlPersist yes\n")
        return self.config

    def start_master(self) -> bool:
        """Logs in once and keeps the connection as the master; False when the guest does not answer yet."""
        log = os.path.join(self.workdir, "ssh-master.log")
        with open(log, "ab") as output:  # not a pipe: the master outlives this call and would hold it open
            try:
                finished = subprocess.run(["ssh", "-F", self.config, "-o", "ControlMaster=yes", "-f", "-N", "vm"],
                                          stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                          timeout=LOGIN_SECONDS, check=False)
            except subprocess.TimeoutExpired:
                return False
        return finished.returncode == 0

    def run(self, command: str, timeout: float = 30) -> tuple[int, str]:
        """Runs a shell command in the guest over the master connection: (exit code, output)."""
        try:
            finished = subprocess.run(["ssh", "-F", self.config, "-o", "ControlMaster=no", "vm", command],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, errors="replace", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return 255, "ssh timed out"
        return finished.returncode, finished.stdout

    def close(self) -> None:
        """Ends the master connection (the guest may be gone already)."""
        if os.path.exists(self.control_path):
            subprocess.run(["ssh", "-F", self.config, "-O", "exit", "vm"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)
