# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a command inside a VM host: OpenSSH to its address, with the service's key.

A VM host's SSH host keys are made at its first boot and its address is reused by later hosts, so a
known_hosts entry would be wrong for the next one: host keys are not recorded (the address is one the
hypervisor's network reserved for this host, on a network of the collection's own by default).
"""

from __future__ import annotations

import shlex
import subprocess

# What the inventory hands to Ansible too: no recorded host key, and give up on a VM that powers off mid-command.
VM_SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                  "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
SSH_OPTIONS = [*VM_SSH_OPTIONS, "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes"]


def ssh_arguments(key: str | None) -> list[str]:
    """The ssh options that reach VM hosts (as the fleet inventory gives them to Ansible too)."""
    return [*SSH_OPTIONS, *(["-i", key] if key else [])]


def run_over_ssh(user: str, address: str, key: str | None, command: list[str], timeout: float = 60) -> tuple[int, str]:
    """(exit code, output) of the command in the host; 255 when SSH itself failed."""
    try:
        # ssh hands the remote shell one line: the command's words are quoted for it.
        finished = subprocess.run(["ssh", *ssh_arguments(key), f"{user}@{address}", "--", shlex.join(command)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace", timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 255, f"ssh to {address} timed out after {timeout:g} s"
    except OSError as error:
        return 255, f"ssh could not run: {error.strerror or error}"
    return finished.returncode, finished.stdout


def public_key(private_key: str) -> str:
    """The public key of a private key file: the .pub beside it, else what ssh-keygen derives."""
    try:
        with open(private_key + ".pub", encoding="utf-8") as handle:
            found = handle.read().strip()
        if found:
            return found
    except OSError:
        pass
    derived = subprocess.run(["ssh-keygen", "-y", "-f", private_key], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, check=False)
    return derived.stdout.strip() if derived.returncode == 0 else ""
