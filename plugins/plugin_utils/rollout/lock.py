# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rollout per service at a time, and a journal that lets the next run undo an interrupted one.

The lock is a never-started container named after the service: creating a container with a taken
name fails atomically in the engine, so two controllers using the same engine cannot both hold it.
It names its owner and an expiry. A lock whose owner process is gone (same controller) or whose
expiry has passed is taken over. The journal is a volume labelled with the hosts that were live
before the rollout and the hosts it adds; it exists only while a rollout is under way.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import LABEL_PREFIX, InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_user

LOCK_PREFIX = "immutable-infra-lock-"
JOURNAL_PREFIX = "immutable-infra-rollout-"
LOCK_LABEL = LABEL_PREFIX + "lock"


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return False
    return b"python" in command or b"ansible" in command


class ServiceLock:
    def __init__(self, client: DockerClient, service: str, image_id: str, rollout_id: str, timeout: int,
                 progress: Callable[[str], None]) -> None:
        self.client = client
        self.name = LOCK_PREFIX + service
        self.service = service
        self.image_id = image_id
        self.rollout_id = rollout_id
        self.timeout = timeout
        self.progress = progress
        self.held = False

    def _labels(self) -> dict[str, str]:
        return {LOCK_LABEL: self.service, LABEL_PREFIX + "owner": controller_user(),
                LABEL_PREFIX + "controller": socket.gethostname(), LABEL_PREFIX + "pid": str(os.getpid()),
                LABEL_PREFIX + "rollout": self.rollout_id, LABEL_PREFIX + "started": utc_timestamp(),
                LABEL_PREFIX + "expires": str(int(time.time() + self.timeout))}

    def _stale_reason(self, labels: dict[str, str]) -> str | None:
        expires = labels.get(LABEL_PREFIX + "expires", "0")
        if not expires.isdigit() or int(expires) < time.time():
            return "it expired"
        pid = labels.get(LABEL_PREFIX + "pid", "")
        if labels.get(LABEL_PREFIX + "controller") == socket.gethostname() and pid.isdigit() \
                and not _process_alive(int(pid)):
            return f"its process {pid} on this controller is gone"
        return None

    def acquire(self) -> None:
        for attempt in range(2):
            if self.client.create_marker(self.name, self.image_id, self._labels()):
                self.held = True
                return
            existing = self.client.container(self.name)
            labels = ((existing or {}).get("Config") or {}).get("Labels") or {}
            stale = self._stale_reason(labels) if existing else "it vanished"
            if not stale or attempt:
                owner = f"{labels.get(LABEL_PREFIX + 'owner')}@{labels.get(LABEL_PREFIX + 'controller')}"
                expires = time.strftime("%H:%M:%S UTC", time.gmtime(int(labels.get(LABEL_PREFIX + "expires", "0"))))
                raise InfraError(
                    f"Another rollout of service {self.service} is in progress (rollout "
                    f"{labels.get(LABEL_PREFIX + 'rollout', '?')} by {owner}, pid {labels.get(LABEL_PREFIX + 'pid')}, "
                    f"started {labels.get(LABEL_PREFIX + 'started')}); its lock expires at {expires}. Wait for it to "
                    f"finish, or remove container {self.name} if that controller is gone.")
            self.progress(f"taking over the lock of service {self.service}: {stale}")
            self.client.remove_container(self.name)

    def release(self) -> None:
        if self.held:
            self.client.remove_container(self.name)
            self.held = False


class Journal:
    """What an unfinished rollout changed, so that a later run can put the service back first."""

    def __init__(self, client: DockerClient, service: str) -> None:
        self.client = client
        self.name = JOURNAL_PREFIX + service

    def write(self, rollout_id: str, previous_live: list[str], new_hosts: list[str], image_id: str,
              restored: bool = False) -> None:
        """restored: the new hosts belong to a kept generation, so undoing stops them instead of removing them."""
        self.client.replace_volume(self.name, {
            LABEL_PREFIX + "rollout": rollout_id, LABEL_PREFIX + "previous_live": ",".join(previous_live),
            LABEL_PREFIX + "new_hosts": ",".join(new_hosts), LABEL_PREFIX + "image_id": image_id,
            LABEL_PREFIX + "restored": "true" if restored else "false", LABEL_PREFIX + "started": utc_timestamp()})

    def read(self) -> dict[str, Any] | None:
        labels = self.client.volume_labels(self.name)
        if labels is None:
            return None
        return {"rollout": labels.get(LABEL_PREFIX + "rollout", ""),
                "previous_live": [name for name in labels.get(LABEL_PREFIX + "previous_live", "").split(",") if name],
                "new_hosts": [name for name in labels.get(LABEL_PREFIX + "new_hosts", "").split(",") if name],
                "image_id": labels.get(LABEL_PREFIX + "image_id", ""),
                "restored": labels.get(LABEL_PREFIX + "restored") == "true",
                "started": labels.get(LABEL_PREFIX + "started", "")}

    def clear(self) -> None:
        self.client.remove_volume(self.name)
