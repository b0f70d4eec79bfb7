# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A service's store (service/store.py) on a hypervisor, through libvirt alone.

- Markers (the lock) are domains that are never started: libvirt refuses a second domain of a name
  that exists with another UUID, atomically, and removes one by its UUID, never another one that
  took the name since. Their labels, and their creation time read from the hypervisor's clock just
  before, are in the domain's metadata.
- Records (journal, leases, stop notes, pending stops, the service record, verdicts and disk
  records) are volumes of the state pool whose content is their labels as JSON. Creating a volume
  whose name exists fails; its creation time is the file's ctime on the hypervisor.
- The clock is the hypervisor's: the ctime of a scratch volume made for the purpose.
A record is written right after its volume is made, so a reader may find it empty for a moment; an
empty record reads as absent.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import pool as pools
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import Hypervisor, binding
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import (
    LABEL_CREATED,
    METADATA_URI,
    labels_from_metadata,
    marker_xml,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import Entry

CLOCK_PREFIX = "immutable-infra-clock-"


def encode(labels: dict[str, str]) -> bytes:
    return json.dumps(labels, sort_keys=True).encode("utf-8")


def decode(data: bytes) -> dict[str, str] | None:
    try:
        value = json.loads(data.decode("utf-8")) if data else None
    except ValueError:
        return None
    return {str(key): str(item) for key, item in value.items()} if isinstance(value, dict) else None


class LibvirtStore:
    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hypervisor = hypervisor
        self.where = hypervisor.uri
        self._pool: Any = None
        hypervisor.on_lost_connection(self._forget_pool)

    def _forget_pool(self) -> None:
        self._pool = None  # it belongs to the connection it was looked up on

    @property
    def pool(self) -> Any:
        """The state pool, made when missing (for writes)."""
        if self._pool is None:
            self._pool = pools.ensure_pool(self.hypervisor, pools.STATE_POOL)
        return self._pool

    def readable_pool(self) -> Any | None:
        """The state pool for reads, or None when the hypervisor has none yet (then there is no record)."""
        if self._pool is None:
            self._pool = pools.existing_pool(self.hypervisor, pools.STATE_POOL)
        return self._pool

    # markers ------------------------------------------------------------------------------------
    def create_marker(self, name: str, labels: dict[str, str]) -> str | None:
        marker_id = str(uuid.uuid4())
        xml = marker_xml(name, marker_id, dict(labels, **{LABEL_CREATED: f"{self.now():.6f}"}))
        libvirt = binding()
        try:
            self.hypervisor.conn.defineXML(xml)
        except libvirt.libvirtError as error:
            if self._domain(name) is not None:
                return None  # the name is taken
            raise self.hypervisor.failure(f"create the marker {name}", error) from None
        return marker_id

    def _domain(self, name: str) -> Any | None:
        return self.hypervisor.find(f"look up {name}", self.hypervisor.conn.lookupByName, name)

    def marker(self, name: str) -> Entry | None:
        domain = self._domain(name)
        if domain is None:
            return None
        labels = labels_from_metadata(self.hypervisor.find(
            f"read the labels of {name}", domain.metadata, 2, METADATA_URI, 0))  # 2: VIR_DOMAIN_METADATA_ELEMENT
        created = labels.pop(LABEL_CREATED, None)
        try:
            moment = float(created) if created else None
        except ValueError:
            moment = None
        return Entry(name, domain.UUIDString(), moment, labels)

    def remove_marker(self, marker_id: str) -> None:
        conn = self.hypervisor.conn
        domain = self.hypervisor.find(f"look up marker {marker_id}", conn.lookupByUUIDString, marker_id)
        if domain is not None:
            try:
                self.hypervisor.call(f"remove marker {marker_id}", domain.undefine)
            except InfraError:
                if self.hypervisor.find(f"look up marker {marker_id}", conn.lookupByUUIDString, marker_id):
                    raise

    # records ------------------------------------------------------------------------------------
    def put(self, name: str, labels: dict[str, str]) -> None:
        data = encode(labels)
        made = pools.create_volume(self.hypervisor, self.pool, name, len(data))
        if made is not None:
            pools.upload_bytes(self.hypervisor, made, data, f"record {name}")

    def replace(self, name: str, labels: dict[str, str]) -> None:
        pools.delete_volume(self.hypervisor, self.pool, name)
        self.put(name, labels)

    def get(self, name: str) -> dict[str, str] | None:
        pool = self.readable_pool()
        found = pools.volume(self.hypervisor, pool, name) if pool is not None else None
        return self._read(found, name) if found is not None else None

    def _read(self, found: Any, name: str) -> dict[str, str] | None:
        try:
            return decode(pools.download(self.hypervisor, found, f"record {name}"))
        except InfraError as error:
            if pools.volume(self.hypervisor, self.pool, name) is None:
                return None  # removed while being read
            raise error from None

    def find(self, label: str, value: str) -> list[Entry]:
        entries: list[Entry] = []
        pool = self.readable_pool()
        if pool is None:
            return entries
        volumes = self.hypervisor.call("list the store's records", pool.listAllVolumes, 0)
        for found in volumes:
            name = found.name()
            if name.startswith(CLOCK_PREFIX):
                continue
            labels = self._read(found, name)
            if labels is not None and labels.get(label) == value:
                xml = self.hypervisor.find(f"read record {name}", found.XMLDesc, 0)
                entries.append(Entry(name, name, pools.changed_time(xml) if xml else None, labels))
        return entries

    def names(self, prefix: str) -> list[str]:
        """The names of the records starting with prefix."""
        pool = self.readable_pool()
        volumes = self.hypervisor.call("list the store's records", pool.listAllVolumes, 0) if pool is not None else []
        return sorted(name for name in (found.name() for found in volumes) if name.startswith(prefix))

    def remove(self, name: str) -> None:
        pool = self.readable_pool()
        if pool is not None:
            pools.delete_volume(self.hypervisor, pool, name)

    def now(self) -> float:
        name = f"{CLOCK_PREFIX}{uuid.uuid4().hex[:12]}"
        made = pools.create_volume(self.hypervisor, self.pool, name, 1)
        try:
            xml = self.hypervisor.call("read the hypervisor's clock", made.XMLDesc, 0) if made is not None else ""
        finally:
            pools.delete_volume(self.hypervisor, self.pool, name)
        moment = pools.changed_time(xml)
        if moment is None:
            raise InfraError(f"Hypervisor {self.hypervisor.name} did not report the time of a volume it made, so its "
                             "clock cannot be read.", engine=self.where)
        return moment
