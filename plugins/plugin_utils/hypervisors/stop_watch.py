# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finishes a VM's graceful stop when its guest ignores it: run detached, outliving the controller.

A Docker engine kills a container that ignores SIGTERM once stop_timeout passes, whoever asked.
libvirt does not: a VM sent the ACPI power button runs on until its guest powers off. So when a stop
is left to finish in the background, this script is started on its own (in a session of its own): it
waits until the domain has shut off, or destroys it at the deadline. It watches one run of the domain
(libvirt gives a domain a new ID each time it starts): a VM started again meanwhile, by a recovery or a
rollback, is never destroyed. A hypervisor it loses (libvirtd restarted, an SSH tunnel broke) is connected
to again until GRACE_SECONDS past the deadline. It needs the libvirt binding only, not the collection:

    python stop_watch.py URI UUID DOMAIN_ID DEADLINE_EPOCH
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any

POLL_SECONDS = 0.5
GRACE_SECONDS = 60.0


def watch(uri: str, uuid: str, run: int, deadline: float) -> int:
    """0 once the run of the domain has ended (shut off, destroyed here, started again or removed); 1 when
    the hypervisor could not be reached again in time."""
    import libvirt

    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    while True:
        try:
            conn = libvirt.open(uri)
            try:
                return _watch_run(conn, uuid, run, deadline)
            finally:
                with contextlib.suppress(libvirt.libvirtError):  # a lost connection may not close cleanly
                    conn.close()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return 0
            if time.time() > deadline + GRACE_SECONDS:
                return 1
            time.sleep(POLL_SECONDS)  # the connection was lost, or the destroy raced the guest: look again


def _watch_run(conn: Any, uuid: str, run: int, deadline: float) -> int:
    domain = conn.lookupByUUIDString(uuid)
    while time.time() < deadline:
        if not domain.isActive() or domain.ID() != run:
            return 0
        time.sleep(POLL_SECONDS)
    if domain.isActive() and domain.ID() == run:
        domain.destroy()
    return 0


def start_watch(uri: str, uuid: str, run: int, deadline: float) -> None:
    """Starts the watch of the domain's run (its ID now) detached from this process (it survives the
    controller's exit)."""
    subprocess.Popen([sys.executable, __file__, uri, uuid, str(run), f"{deadline:.3f}"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
