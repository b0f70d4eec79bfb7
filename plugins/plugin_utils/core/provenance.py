# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who and where a change comes from: the controller's user and host, and the calling git checkout."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import threading
from concurrent.futures import Future


def _git(directory: str, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", directory, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_info(directory: str) -> dict[str, object]:
    """Commit, remote and dirtiness of the git checkout holding directory; empty outside git."""
    state = git_state(directory)
    if not state:
        return {}
    remote = _git(directory, "remote", "get-url", "origin")
    if not remote:
        remotes = (_git(directory, "remote") or "").split()
        remote = _git(directory, "remote", "get-url", remotes[0]) if remotes else None
    return {"commit": state["commit"], "remote": remote or "", "dirty": state["dirty"]}


_states: dict[str, Future[dict[str, object]]] = {}
_states_lock = threading.Lock()


def git_state(directory: str) -> dict[str, object]:
    """Commit and dirtiness of the git checkout holding directory (empty outside git), found once per
    process and directory: a task that records several ledger records asks git once."""
    return _state_of(directory).result()


def prefetch_git_state(directory: str | None) -> None:
    """Starts finding git_state in the background, so that a ledger record written later does not wait
    for git."""
    if directory:
        _state_of(directory)


def _state_of(directory: str) -> Future[dict[str, object]]:
    with _states_lock:
        if directory not in _states:
            found: Future[dict[str, object]] = Future()
            _states[directory] = found
            threading.Thread(target=_find_state, args=(directory, found), daemon=True).start()
        return _states[directory]


def _find_state(directory: str, found: Future[dict[str, object]]) -> None:
    commit = _git(directory, "rev-parse", "HEAD")
    dirty = bool(_git(directory, "status", "--porcelain", "--untracked-files=no")) if commit else False
    found.set_result({"commit": commit, "dirty": dirty} if commit else {})


def controller_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def controller_identity() -> str:
    return f"{controller_user()}@{socket.gethostname()}"
