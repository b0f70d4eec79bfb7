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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    JournalLabels,
    LockLabels,
    image_labels,
    journal_name,
    lock_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_user


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
        self.name = lock_name(service)
        self.service = service
        self.image_id = image_id
        self.rollout_id = rollout_id
        self.timeout = timeout
        self.progress = progress
        self.held = False

    def _labels(self) -> dict[str, str]:
        return LockLabels(service=self.service, owner=controller_user(), controller=socket.gethostname(),
                          pid=os.getpid(), rollout=self.rollout_id, started=utc_timestamp(),
                          expires=int(time.time() + self.timeout)).to_labels()

    @staticmethod
    def _stale_reason(lock: LockLabels) -> str | None:
        if lock.expires is None or lock.expires < time.time():
            return "it expired"
        if lock.controller == socket.gethostname() and lock.pid is not None and not _process_alive(lock.pid):
            return f"its process {lock.pid} on this controller is gone"
        return None

    def acquire(self) -> None:
        for attempt in range(2):
            if self.client.create_marker(self.name, self.image_id, self._labels()):
                self.held = True
                return
            existing = self.client.container(self.name)
            lock = LockLabels.from_labels(image_labels(existing))
            stale = self._stale_reason(lock) if existing else "it vanished"
            if not stale or attempt:
                expires = time.strftime("%H:%M:%S UTC", time.gmtime(lock.expires or 0))
                raise InfraError(
                    f"Another rollout of service {self.service} is in progress (rollout "
                    f"{'?' if lock.rollout is None else lock.rollout} by {lock.owner}@{lock.controller}, pid {lock.pid}, "
                    f"started {lock.started}); its lock expires at {expires}. Wait for it to "
                    f"finish, or remove container {self.name} if that controller is gone.")
            self.progress(f"taking over the lock of service {self.service}: {stale}")
            self.client.remove_container(self.name)

    def release(self) -> None:
        if self.held:
            self.client.remove_container(self.name)
            self.held = False

    @contextmanager
    def holding(self) -> Iterator[None]:
        """The lock for the length of a block: acquired first, released whatever happens in it."""
        self.acquire()
        try:
            yield
        finally:
            self.release()


class Journal:
    """What an unfinished rollout changed, so that a later run can put the service back first."""

    def __init__(self, client: DockerClient, service: str) -> None:
        self.client = client
        self.name = journal_name(service)

    def write(self, rollout_id: str, previous_live: list[str], new_hosts: list[str], image_id: str,
              restored: bool = False) -> None:
        """restored: the new hosts belong to a kept generation, so undoing stops them instead of removing them."""
        self.client.replace_volume(self.name, JournalLabels(
            rollout=rollout_id, previous_live=previous_live, new_hosts=new_hosts, image_id=image_id,
            restored=restored, started=utc_timestamp()).to_labels())

    def read(self) -> JournalLabels | None:
        labels = self.client.volume_labels(self.name)
        return None if labels is None else JournalLabels.from_labels(labels)

    def clear(self) -> None:
        self.client.remove_volume(self.name)
