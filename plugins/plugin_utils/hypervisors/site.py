# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One hypervisor of a fleet as VM hosts use it: its connection, pools, network, store, the disks
copied to it, and the accelerator its VMs run with.

Everything is made when first needed: the pools and the network of the collection's own, on a
hypervisor that has none yet.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import VerdictLabels, verdict_volume_name
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import DEFAULT_VM_NETWORK, Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import disk as disks
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import pool as pools
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.attestations import store_disk_attestations
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import Hypervisor
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.network import VmNetwork
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.store import LibvirtStore
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import qemu


class Site:
    def __init__(self, engine: Engine, hypervisor: Hypervisor) -> None:
        self.engine = engine
        self.name = engine.name
        self.hypervisor = hypervisor
        self.local = engine.machine is None or engine.machine in ("localhost", "127.0.0.1", "::1")
        self.store = LibvirtStore(hypervisor)
        self._pool: Any = None
        self._network: VmNetwork | None = None
        self._accel: tuple[str, str] | None = None
        self._making = threading.Lock()  # a batch's hosts are made in parallel: the pool and network once
        self._choosing = threading.Lock()
        hypervisor.on_lost_connection(self._forget_objects)

    def _forget_objects(self) -> None:
        """The pool and network objects belong to the connection they were looked up on. (Without _making:
        a call made while this thread holds it, from inside pool or network, can find the connection lost.)"""
        self._pool = None
        self._network = None

    @property
    def pool(self) -> Any:
        """The hosts' pool, made when missing (for writes)."""
        with self._making:
            if self._pool is None:
                self._pool = pools.ensure_pool(self.hypervisor, pools.HOSTS_POOL)
        return self._pool

    def readable_pool(self) -> Any | None:
        """The hosts' pool for reads, or None when the hypervisor has none yet."""
        if self._pool is None:
            self._pool = pools.existing_pool(self.hypervisor, pools.HOSTS_POOL)
        return self._pool

    def check_network(self) -> None:
        """Refuses a network named in engines[].network that does not exist (the collection's own is made
        with the first host); changes nothing."""
        name = self.engine.network
        conn = self.hypervisor.conn
        if name != DEFAULT_VM_NETWORK and self.hypervisor.find(f"look up network {name}", conn.networkLookupByName,
                                                               name) is None:
            raise InfraError(f"Network {name} (engines[].network) does not exist on hypervisor {self.name}; create it, "
                             "or leave engines[].network out to use the collection's own. Nothing was changed.")

    @property
    def network(self) -> VmNetwork:
        with self._making:
            if self._network is None:
                self._network = VmNetwork(self.hypervisor, self.engine.network,
                                          owned=self.engine.network == DEFAULT_VM_NETWORK, local=self.local)
        return self._network

    # disks ----------------------------------------------------------------------------------------
    def disk_record(self, digest: str) -> dict[str, str] | None:
        return self.store.get(disks.disk_record_name(digest))

    def disk_volume(self, digest: str) -> Any | None:
        """The pool volume holding the disk, when a finished copy is recorded."""
        name = (self.disk_record(digest) or {}).get(disks.LABEL_DISK_VOLUME)
        pool = self.readable_pool() if name else None
        return pools.volume(self.hypervisor, pool, name) if pool is not None and name else None

    def verdict(self, digest: str) -> dict[str, str] | None:
        return self.store.get(verdict_volume_name(digest))

    def copy_disk(self, artifact: disks.DiskArtifact, verdict: VerdictLabels | None,
                  progress: Callable[[str], None]) -> float:
        """Copies the disk (and its kernel and initramfs, for direct boot) into the pool, each digest checked on
        the way, then records it; returns the seconds."""
        if artifact.path is None:
            raise InfraError(f"Disk {artifact.describe()} is not on hypervisor {self.name} and this task names it by "
                             "digest only; give disk: as the path of the disk file so that it can be copied there.")
        started = time.monotonic()
        progress(f"disk {artifact.describe()}: copying it to hypervisor {self.name} "
                 f"({_size(artifact.path) / 2 ** 20:.0f} MiB)")
        made: list[str] = []
        try:
            volume = self._upload(artifact, artifact.path, artifact.digest, "disk", artifact.disk_format, made)
            booted = {part: self._upload(artifact, artifact.boot_file(part) or "", str(artifact.boot[f"{part}_digest"]),
                                         part, "raw", made) for part in disks.BOOT_FILES if artifact.boot}
            if verdict is not None:
                self.store.replace(*disks.verdict_record(artifact, verdict))
            store_disk_attestations(self.store, artifact)
            self.store.put(disks.disk_record_name(artifact.digest), disks.record_labels(artifact, volume, booted))
        except BaseException:
            for name in made:
                pools.delete_volume(self.hypervisor, self.pool, name)
            raise
        if (self.disk_record(artifact.digest) or {}).get(disks.LABEL_DISK_VOLUME) != volume:
            for name in made:  # another controller recorded its copy first
                pools.delete_volume(self.hypervisor, self.pool, name)
        return disks.elapsed(started)

    def _upload(self, artifact: disks.DiskArtifact, path: str, digest: str, kind: str, volume_format: str,
                made: list[str]) -> str:
        name = disks.disk_volume_name(artifact.digest, volume_format, kind)
        size = _size(path)
        target = pools.create_volume(self.hypervisor, self.pool, name, size, volume_format)
        made.append(name)
        sent = pools.upload_file(self.hypervisor, target, path, size, f"{os.path.basename(path)}")
        if sent != digest:
            raise InfraError(f"{os.path.basename(path)} of disk {artifact.describe()} changed while it was copied to "
                             f"hypervisor {self.name} (the copy's digest is {sent[:19]}); build it again. Nothing was "
                             "changed.")
        return name

    def boot_paths(self, record: dict[str, str]) -> dict[str, str]:
        """The paths on the hypervisor of a recorded disk's kernel and initramfs ({} for firmware boot)."""
        paths = {}
        for part, name in disks.boot_volumes(record).items():
            found = pools.volume(self.hypervisor, self.pool, name)  # called when making a host
            if found is None:
                return {}
            paths[part] = self.hypervisor.call(f"read the path of {name}", found.path)
        return paths

    # the accelerator --------------------------------------------------------------------------------
    def accel(self, local_disk: str | None, disk_format: str) -> tuple[str, str]:
        """(kvm or tcg, why). auto on this machine boots a guest under KVM once and remembers the answer
        (as verify does); on another machine, KVM when the hypervisor offers it."""
        with self._choosing:
            if self._accel is None:
                self._accel = self._choose_accel(local_disk, disk_format)
        return self._accel

    def _choose_accel(self, local_disk: str | None, disk_format: str) -> tuple[str, str]:
        wanted = self.engine.accel
        if wanted != "auto":
            return wanted, "asked for"
        if self.local:
            return qemu.choose_accel("auto", local_disk, disk_format) if local_disk else (
                "tcg", "no disk on this machine to try KVM with")
        capabilities = self.hypervisor.call("read the hypervisor's capabilities", self.hypervisor.conn.getCapabilities)
        offered = "<domain type='kvm'" in capabilities or '<domain type="kvm"' in capabilities
        return ("kvm", "the hypervisor offers it") if offered else ("tcg", "no KVM on the hypervisor")


def _size(path: str) -> int:
    try:
        with open(path, "rb") as handle:
            return handle.seek(0, 2)
    except OSError as error:
        raise InfraError(f"Cannot read disk {path}: {error.strerror}.") from None
