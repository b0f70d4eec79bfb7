# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reaching a hypervisor: one libvirt connection per engine, and libvirt's errors as sentences.

The libvirt Python binding is imported here only, when a hypervisor is first reached, so the Docker
side of the collection runs without it. A call whose connection is lost (the daemon stopped or
restarted, the SSH tunnel broke) raises EngineUnreachable naming the hypervisor; any other libvirt
error is an InfraError saying what was being done. A lookup of something that is not there returns
None instead.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable, InfraError

T = TypeVar("T")

# libvirt's error codes this module tells apart (virterror.h; stable across releases)
ERR_INTERNAL = 1
ERR_NO_CONNECT = 5
ERR_INVALID_CONN = 3
ERR_OPERATION_FAILED = 9
ERR_SYSTEM_ERROR = 38
ERR_RPC = 39
ERR_NO_DOMAIN = 42
ERR_NO_NETWORK = 43
ERR_OPERATION_INVALID = 55
ERR_NO_STORAGE_POOL = 49
ERR_NO_STORAGE_VOL = 50
ERR_STORAGE_VOL_EXIST = 90
ERR_NO_DOMAIN_METADATA = 80
FROM_RPC = 7  # the error came from the connection itself
MISSING = (ERR_NO_DOMAIN, ERR_NO_NETWORK, ERR_NO_STORAGE_POOL, ERR_NO_STORAGE_VOL, ERR_NO_DOMAIN_METADATA)
LOST = (ERR_NO_CONNECT, ERR_INVALID_CONN, ERR_SYSTEM_ERROR, ERR_RPC)


@functools.cache
def _loaded() -> Any:
    import libvirt

    libvirt.registerErrorHandler(lambda _context, _error: None, None)  # errors are raised, not printed to stderr
    return libvirt


def binding() -> Any:
    """The libvirt module."""
    try:
        return _loaded()
    except ImportError:
        raise InfraError("Hypervisors are reached through the libvirt Python binding, which is not installed on the "
                         "controller; install it (pip install libvirt-python, or Debian's python3-libvirt) or run "
                         "'make setup-libvirt'.") from None


def error_code(error: Exception) -> int | None:
    getter = getattr(error, "get_error_code", None)
    return getter() if getter else None


def is_lost(error: Exception) -> bool:
    """Whether a libvirt error means the connection is gone, not that the call was refused."""
    getter = getattr(error, "get_error_domain", None)
    code = error_code(error)
    return code in LOST or (code == ERR_INTERNAL and getter is not None and getter() == FROM_RPC)


def message_of(error: Exception) -> str:
    getter = getattr(error, "get_error_message", None)
    return str((getter() if getter else None) or error).strip()


class Hypervisor:
    """A libvirt connection to one engine's hypervisor, named as the fleet names it.

    A connection that is lost (libvirtd restarted, the SSH tunnel of a qemu+ssh:// URI broke) fails the call
    that finds it so, and the next use of conn makes a new one, so a long rollout, and the revert of one that
    failed, still reach the hypervisor. Pools and networks looked up on the old connection belong to it:
    whoever keeps them forgets them through on_lost_connection."""

    def __init__(self, name: str, uri: str) -> None:
        self.name = name
        self.uri = uri
        self.connections = 1  # made so far: more after a lost one
        self._lost = False
        self._reconnecting = threading.Lock()
        self._forgetting: list[Callable[[], None]] = []
        libvirt = binding()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as error:
            raise InfraError(f"Hypervisor {name} ({uri}) cannot be reached: {message_of(error)}.",
                             engine=uri) from None

    @property
    def conn(self) -> Any:
        """The libvirt connection: a new one when a call found the last one lost."""
        if self._lost:
            with self._reconnecting:
                if self._lost:
                    libvirt = binding()
                    try:
                        self._conn = libvirt.open(self.uri)
                    except libvirt.libvirtError as error:
                        raise EngineUnreachable(f"hypervisor {self.name} ({self.uri}) stopped answering, and a new "
                                                f"connection failed ({message_of(error)}).", engine=self.uri) from None
                    self.connections += 1
                    self._lost = False
        return self._conn

    def on_lost_connection(self, forget: Callable[[], None]) -> None:
        """forget() is called when a call finds the connection lost, so that what was looked up on it (a
        pool, a network) is looked up again, on the new connection."""
        self._forgetting.append(forget)

    def call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """function(*args); a libvirt error becomes a sentence about `what` (e.g. "start web-3-1")."""
        libvirt = binding()
        current = self._conn
        try:
            return function(*args)
        except libvirt.libvirtError as error:
            raise self.failure(what, error, current) from None

    def find(self, what: str, function: Callable[..., T], *args: Any) -> T | None:
        """Like call(), but None when the object looked up does not exist."""
        libvirt = binding()
        current = self._conn
        try:
            return function(*args)
        except libvirt.libvirtError as error:
            if error_code(error) in MISSING:
                return None
            raise self.failure(what, error, current) from None

    def failure(self, what: str, error: Exception, current: Any = None) -> InfraError:
        """The error as a sentence. A lost connection (the one that was current when the call began: a call
        begun before a new one was made does not count against it) is made again on the next use of conn."""
        if is_lost(error):
            if current is None or current is self._conn:
                self._lost = True
                for forget in self._forgetting:
                    forget()
            return EngineUnreachable(f"hypervisor {self.name} ({self.uri}) stopped answering while this run tried to "
                                     f"{what} ({message_of(error)}).", engine=self.uri)
        return InfraError(f"Could not {what} on hypervisor {self.name}: {message_of(error)}.", engine=self.uri,
                          code=error_code(error))

    def close(self) -> None:
        libvirt = binding()
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass
