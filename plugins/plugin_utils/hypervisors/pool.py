# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage pools on a hypervisor: volumes made, filled, read and deleted through libvirt, so that a
hypervisor reached over SSH is served the same way as the local one.

Two directory pools of the collection's own live on each hypervisor: one for disks, overlays and
seeds (the hosts' storage), one for the service store's records (store.py).
"""

from __future__ import annotations

import hashlib
from typing import Any
from xml.etree import ElementTree

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import (
    ERR_NO_STORAGE_VOL,
    ERR_OPERATION_FAILED,
    ERR_STORAGE_VOL_EXIST,
    Hypervisor,
    binding,
    error_code,
)

HOSTS_POOL = "immutable-infra"
STATE_POOL = "immutable-infra-state"
POOL_PATHS = {HOSTS_POOL: "/var/lib/immutable-infra/libvirt/hosts", STATE_POOL: "/var/lib/immutable-infra/libvirt/state"}
CHUNK = 4 * 1024 * 1024


def pool_xml(name: str, path: str) -> str:
    pool = ElementTree.Element("pool", type="dir")
    ElementTree.SubElement(pool, "name").text = name
    ElementTree.SubElement(ElementTree.SubElement(pool, "target"), "path").text = path
    return ElementTree.tostring(pool, encoding="unicode")


def volume_xml(name: str, capacity: int, volume_format: str, backing: tuple[str, str] | None = None) -> str:
    volume = ElementTree.Element("volume")
    ElementTree.SubElement(volume, "name").text = name
    ElementTree.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    target = ElementTree.SubElement(volume, "target")
    ElementTree.SubElement(target, "format", type=volume_format)
    ElementTree.SubElement(ElementTree.SubElement(target, "permissions"), "mode").text = "0600"
    if backing:
        store = ElementTree.SubElement(volume, "backingStore")
        ElementTree.SubElement(store, "path").text = backing[0]
        ElementTree.SubElement(store, "format", type=backing[1])
    return ElementTree.tostring(volume, encoding="unicode")


def changed_time(xml: str) -> float | None:
    """The ctime a volume's XML reports (the hypervisor's clock), or None."""
    try:
        found = ElementTree.fromstring(xml).find("./target/timestamps/ctime")
        return float(found.text) if found is not None and found.text else None
    except (ElementTree.ParseError, ValueError):
        return None


def existing_pool(hypervisor: Hypervisor, name: str) -> Any | None:
    """The pool when it was made (started again if the daemon left it stopped), else None: what reads use,
    so that looking changes nothing on a hypervisor the collection has not used yet."""
    pool = hypervisor.find(f"look up storage pool {name}", hypervisor.conn.storagePoolLookupByName, name)
    return ensure_pool(hypervisor, name) if pool is not None else None


def ensure_pool(hypervisor: Hypervisor, name: str) -> Any:
    """The pool, made (a directory of its own), started and set to start with the daemon when needed."""
    conn = hypervisor.conn
    pool = hypervisor.find(f"look up storage pool {name}", conn.storagePoolLookupByName, name)
    if pool is None:
        try:
            pool = hypervisor.call(f"define storage pool {name}", conn.storagePoolDefineXML, pool_xml(name, POOL_PATHS[name]), 0)
        except InfraError as error:
            pool = hypervisor.find(f"look up storage pool {name}", conn.storagePoolLookupByName, name)
            if pool is None:  # not made meanwhile by another controller: a real failure
                raise error from None
        hypervisor.call(f"create the directory of storage pool {name}", pool.build, 0)
        hypervisor.call(f"mark storage pool {name} to start with libvirt", pool.setAutostart, 1)
    if not hypervisor.call(f"read storage pool {name}", pool.isActive):
        try:
            hypervisor.call(f"start storage pool {name}", pool.create, 0)
        except InfraError as error:
            if error.details.get("code") != ERR_OPERATION_FAILED or not pool.isActive():
                raise
    return pool


def create_volume(hypervisor: Hypervisor, pool: Any, name: str, capacity: int, volume_format: str = "raw",
                  backing: tuple[str, str] | None = None) -> Any | None:
    """Makes the volume, or returns None when one of that name exists (atomic in the daemon)."""
    libvirt = binding()
    try:
        return pool.createXML(volume_xml(name, capacity, volume_format, backing), 0)
    except libvirt.libvirtError as error:
        if error_code(error) == ERR_STORAGE_VOL_EXIST:
            return None
        raise hypervisor.failure(f"create volume {name}", error) from None


def volume(hypervisor: Hypervisor, pool: Any, name: str) -> Any | None:
    return hypervisor.find(f"look up volume {name}", pool.storageVolLookupByName, name)


def delete_volume(hypervisor: Hypervisor, pool: Any, name: str) -> bool:
    """Deletes the volume; False when there was none."""
    found = volume(hypervisor, pool, name)
    if found is None:
        return False
    libvirt = binding()
    try:
        found.delete(0)
    except libvirt.libvirtError as error:
        if error_code(error) != ERR_NO_STORAGE_VOL:  # deleted meanwhile
            raise hypervisor.failure(f"delete volume {name}", error) from None
    return True


def upload_bytes(hypervisor: Hypervisor, target: Any, data: bytes, what: str) -> None:
    stream = hypervisor.call(f"open a stream to {what}", hypervisor.conn.newStream, 0)
    hypervisor.call(f"upload {what}", target.upload, stream, 0, len(data), 0)
    view = memoryview(data)
    while view:
        sent = hypervisor.call(f"upload {what}", stream.send, bytes(view[:CHUNK]))
        view = view[sent:]
    hypervisor.call(f"finish uploading {what}", stream.finish)


def upload_file(hypervisor: Hypervisor, target: Any, path: str, size: int, what: str) -> str:
    """Streams the file into the volume; returns the sha256 digest of what was sent (sha256:<hex>)."""
    digest = hashlib.sha256()
    stream = hypervisor.call(f"open a stream to {what}", hypervisor.conn.newStream, 0)
    hypervisor.call(f"upload {what}", target.upload, stream, 0, size, 0)
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    sent = hypervisor.call(f"upload {what}", stream.send, bytes(view))
                    view = view[sent:]
    except BaseException:
        try:
            stream.abort()
        except Exception:  # the abort of a broken stream may fail too
            pass
        raise
    hypervisor.call(f"finish uploading {what}", stream.finish)
    return "sha256:" + digest.hexdigest()


def download(hypervisor: Hypervisor, source: Any, what: str) -> bytes:
    stream = hypervisor.call(f"open a stream from {what}", hypervisor.conn.newStream, 0)
    hypervisor.call(f"read {what}", source.download, stream, 0, 0, 0)
    parts = []
    while True:
        chunk = hypervisor.call(f"read {what}", stream.recv, CHUNK)
        if not chunk or isinstance(chunk, int):
            break
        parts.append(chunk)
    hypervisor.call(f"finish reading {what}", stream.finish)
    return b"".join(parts)
