# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who and where a change comes from: the controller's user and host, and the calling git checkout."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess


def _git(directory: str, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", directory, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_info(directory: str) -> dict[str, object]:
    """Commit, remote and dirtiness of the git checkout holding directory; empty outside git."""
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return {}
    remote = _git(directory, "remote", "get-url", "origin")
    if not remote:
        remotes = (_git(directory, "remote") or "").split()
        remote = _git(directory, "remote", "get-url", remotes[0]) if remotes else None
    dirty = bool(_git(directory, "status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "remote": remote or "", "dirty": dirty}


def controller_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def controller_identity() -> str:
    return f"{controller_user()}@{socket.gethostname()}"
