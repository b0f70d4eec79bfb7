# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The booted host of a disk's verify: a VM of the disk under qemu, which testinfra reaches over
SSH as the container host (host.py) is reached through Docker. It is stopped and its overlay
removed whatever happens, Ctrl-C included; the disk itself is never written.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Guard
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import boot, qemu, timeline
from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.host import Broken

FORWARDED_PORTS_ENV = "IMMUTABLE_INFRA_FORWARDED_PORTS"
POLL_SECONDS = 0.2


@dataclass
class VmOptions:
    """How the VM of a verify boots: accelerator (auto, kvm, tcg), memory in MiB, vCPUs, boot path
    (a boot.DirectBoot, or None for firmware), the console's ready line, and seconds to a login."""

    accel: str
    memory: int
    cpus: int
    direct: boot.DirectBoot | None
    ready_mark: str | None
    boot_timeout: int


class VmHost:
    """One VM booted from a disk. Use it through started(), which stops it again."""

    subject = "disk"
    client = None  # a VM is reached over SSH, not through an engine

    def __init__(self, disk: str, disk_format: str, options: VmOptions, ports: list[int], units: list[str],
                 hostname: str, progress: Callable[[str], None]) -> None:
        self.options = options
        self.ports = ports
        self.units = units  # the services the roles enabled, for the boot timeline
        self.hostname = hostname
        self.progress = progress
        self.machine = qemu.Machine(disk=disk, disk_format=disk_format, accel="tcg", memory=options.memory,
                                    cpus=options.cpus, guest_ports=ports, direct=options.direct,
                                    ready_mark=options.ready_mark)
        self.cleanup_seconds = 0.0
        self.boot: dict[str, Any] = {}
        self._facts: threading.Thread | None = None

    @contextmanager
    def started(self, guard: Guard) -> Iterator[VmHost]:
        """Boots the VM until a login works, and stops it when the block ends, Ctrl-C included."""
        machine = self.machine
        try:
            # Inside the guard: the KVM probe boots a VM too, which Ctrl-C must not leave behind.
            machine.accel, why = qemu.choose_accel(self.options.accel, machine.disk, machine.disk_format)
            path = "direct kernel boot" if machine.direct else "firmware boot"
            self.progress(f"verify: booting the disk under qemu with {machine.accel} ({why}), {path}, "
                          f"{machine.cpus} vCPU(s), {machine.memory} MiB")
            machine.start(self.hostname)
            self._wait_for_ssh(guard)
            yield self
        finally:
            begun = time.monotonic()
            with guard.shield():
                if self._facts is not None:
                    self._facts.join(qemu.FACTS_SECONDS)
                if not self.boot:
                    self.boot = timeline.timeline(machine.marks, None, None)
                machine.stop()
            self.cleanup_seconds = round(time.monotonic() - begun, 3)

    def _collect_timeline(self) -> None:
        """Asks the guest where its boot went while the tests run, so that it costs the verify no time."""
        def collect() -> None:
            self.boot = self.machine.boot_timeline(self.units)

        self._facts = threading.Thread(target=collect, daemon=True)
        self._facts.start()

    def _wait_for_ssh(self, guard: Guard) -> None:
        try:
            seconds = self.machine.wait_for_ssh(time.monotonic() + self.options.boot_timeout, guard.check)
        except TimeoutError:
            raise Broken(f"the VM did not answer on SSH within {self.options.boot_timeout} s (boot_timeout)",
                         None, self.machine.console_tail()) from None
        self.check_running("before it answered on SSH")
        self.progress(f"verify: the VM answers on SSH after {seconds:.1f} s")

    def wait_ready(self, ports: list[int] | None, start_timeout: int, remaining: float) -> None:
        """Waits until the guest listens on ports (None: the ones forwarded, from the image's exposed ports)."""
        waiting = list(self.ports if ports is None else ports)
        deadline = time.monotonic() + min(start_timeout, remaining)
        while waiting:
            self.check_running("before the tests started")
            output = self.machine.ssh("cat /proc/net/tcp /proc/net/tcp6", timeout=10)[1]
            listening = verify_report.listening_ports(output)
            waiting = [port for port in waiting if port not in listening]
            if waiting and time.monotonic() > deadline:
                raise Broken(f"it did not listen on port(s) {', '.join(map(str, waiting))} within {start_timeout} s "
                             "of SSH answering (set wait_for_ports or start_timeout)", None,
                             self.machine.ssh("journalctl -b -n 30 --no-pager", timeout=10)[1])
            if waiting:
                time.sleep(POLL_SECONDS)
        self.machine.marks["ports"] = self.machine.since_start()
        self._collect_timeline()

    def check_running(self, when: str = "while the tests ran") -> None:
        if not self.machine.running():
            code = self.machine.process.returncode if self.machine.process else None
            raise Broken(f"qemu exited with code {code} {when} (the guest powered off or its kernel stopped)", code,
                         self.machine.console_tail() + self.machine.qemu_log())

    def pytest_target(self) -> list[str]:
        """testinfra's options that reach the VM: its ssh backend over the VM's own master connection."""
        return ["--hosts=ssh://vm", f"--ssh-config={self.machine.ssh_config()}"]

    def test_environment(self) -> dict[str, str]:
        return {"IMMUTABLE_INFRA_DISK": self.machine.disk, "IMMUTABLE_INFRA_HOST": "vm",
                FORWARDED_PORTS_ENV: json.dumps({str(guest): host for guest, host in self.machine.forwards.items()})}

    @property
    def cores(self) -> int:
        return self.machine.cpus

    def timings(self) -> dict[str, float]:
        marks = self.machine.marks
        found = {"boot_to_ssh": marks.get("ssh"), "boot_to_ready": marks.get("ports")}
        return {name: value for name, value in found.items() if value is not None}

    def details(self) -> dict[str, Any]:
        """What the verdict records of the VM the tests ran against, with its boot timeline."""
        machine = self.machine
        return {"kind": "vm", "accel": machine.accel, "cpus": machine.cpus, "memory": machine.memory,
                "boot": "direct" if machine.direct else "firmware", "timeline": self.boot}
