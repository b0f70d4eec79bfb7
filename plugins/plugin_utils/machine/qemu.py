# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boots a disk as a VM under qemu: a copy-on-write overlay over the disk (which is never written), a
seed drive with the VM's host name and SSH key, user-mode networking with loopback ports forwarded to
the guest, direct kernel boot or firmware boot (boot.py builds the command). The VM is up when its
console says sshd runs and one login works; that login is the SSH master connection (ssh.py) every
later command uses. stop() always ends it, kills qemu and removes the overlay and the seed.

Whether KVM really boots a guest is tried once per machine (a kernel that panics at once, with no
root filesystem, must get that far) and remembered, since on some hosts /dev/kvm accepts a VM
whose Linux guest then hangs at boot.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, canonical_json, sha256_hex
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import boot, timeline
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.boot import QEMU, seed_archive
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.ssh import SshSession

ACCEL_CACHE = "~/.cache/immutable-infra/accel.json"
KVM_PROBE_SECONDS = 20.0
# The kernel prints this just before it starts init: the guest got past the point where KVM guests hang.
KVM_BOOTED_MARK = "Freeing unused kernel"
POLL_SECONDS = 0.1
# Without the console's ready line (a disk that has none, or whose ready unit failed) a login is tried this often.
UNMARKED_TRY_SECONDS = 5.0
FACTS_SECONDS = 20


def qemu_version() -> str:
    try:
        return subprocess.run([QEMU, "--version"], stdout=subprocess.PIPE, text=True, check=False,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return ""


def require_qemu() -> None:
    missing = [name for name, tool in (("qemu-system-x86", QEMU), ("qemu-utils", "qemu-img")) if not shutil.which(tool)]
    if missing:
        raise InfraError(f"Booting a disk needs the Debian packages {', '.join(missing)} on the controller; "
                         f"install them (apt-get install {' '.join(missing)}) or run 'make setup-vm'.")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def choose_accel(wanted: str, disk: str, disk_format: str) -> tuple[str, str]:
    """(accelerator, why): kvm or tcg. auto tries KVM once per machine and remembers the answer."""
    if wanted != "auto":
        return wanted, "asked for"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    cache = os.path.expanduser(ACCEL_CACHE)
    key = sha256_hex(canonical_json([qemu_version(), platform.release(), _cpu_model()]))
    try:
        with open(cache, encoding="utf-8") as handle:
            known = json.load(handle)
        if known.get("key") == key:
            return known["accel"], f"{known['why']}, tried on {known['time']}"
    except (OSError, ValueError, KeyError):
        pass
    works, why = probe_kvm(disk, disk_format)
    accel = "kvm" if works else "tcg"
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "accel": accel, "why": why, "time": time.strftime("%Y-%m-%d")}, handle)
    except OSError:
        pass  # trying again next time is only slower
    return accel, why


def probe_kvm(disk: str, disk_format: str) -> tuple[bool, str]:
    """Boots the disk under KVM until its kernel hands over to init; a guest that hangs on the way
    (as under nested virtualisation on some hosts) means KVM does not really boot guests here."""
    workdir = tempfile.mkdtemp(prefix="immutable-infra-kvm-probe-")
    overlay, console = os.path.join(workdir, "overlay.qcow2"), os.path.join(workdir, "console.log")
    process = None
    try:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk_format, "-b", os.path.abspath(disk), overlay],
             "create the overlay for the KVM probe")
        process = subprocess.Popen([QEMU, "-accel", "kvm", "-cpu", "host", "-m", "512", "-display", "none",
                                    "-no-reboot", "-monitor", "none", "-serial", f"file:{console}",
                                    "-drive", f"file={overlay},if=virtio,format=qcow2"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        deadline = time.monotonic() + KVM_PROBE_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if KVM_BOOTED_MARK in _tail(console, 400):
                return True, "a Linux guest booted under KVM"
            time.sleep(POLL_SECONDS)
        if process.poll() is not None:
            return False, f"qemu exited with code {process.returncode} under KVM"
        return False, f"a Linux guest did not reach init under KVM within {KVM_PROBE_SECONDS:.0f} s"
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        return ""


@dataclass
class Machine:
    """A running VM booted from a copy-on-write overlay over a disk (never written), and what it owns
    on the controller: its work directory (overlay, seed, key, console) and its SSH master connection.

    direct: the disk's direct-boot artefacts (None: firmware boot). ready_mark: the console line the
    disk prints once sshd runs (None, for disks without it: the login is tried from the start)."""

    disk: str
    disk_format: str
    accel: str
    memory: int = 1024
    cpus: int = 1
    guest_ports: list[int] = field(default_factory=list)
    direct: boot.DirectBoot | None = None
    ready_mark: str | None = None
    workdir: str = ""
    forwards: dict[int, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    session: SshSession | None = None
    started: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)
    kernel_start: float | None = None

    @property
    def console(self) -> str:
        return os.path.join(self.workdir, "console.log")

    @property
    def ssh_port(self) -> int:
        return self.forwards[22]

    def start(self, hostname: str) -> None:
        """Starts qemu: an overlay over the disk, a seed drive with the host name and a key made for this VM."""
        self.workdir = tempfile.mkdtemp(prefix="immutable-infra-vm-")
        overlay = os.path.join(self.workdir, "overlay.qcow2")
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self.disk_format, "-b", os.path.abspath(self.disk),
              overlay], "create the VM's overlay")
        key = os.path.join(self.workdir, "id_ed25519")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "immutable-infra-vm", "-f", key],
             "make the VM's SSH key")
        with open(key + ".pub", encoding="utf-8") as handle:
            public = handle.read().strip()
        seed = os.path.join(self.workdir, "seed.tar")
        with open(seed, "wb") as handle:
            handle.write(seed_archive(hostname, [public]))
        self.forwards = {port: free_port() for port in sorted({22, *self.guest_ports})}
        self.session = SshSession(self.workdir, self.forwards[22], key)
        self.session.write_config()
        command = boot.qemu_command(boot.VmSpec(overlay=overlay, seed=seed, console=self.console, accel=self.accel,
                                                memory=self.memory, cpus=self.cpus, forwards=self.forwards,
                                                direct=self.direct))
        log = open(os.path.join(self.workdir, "qemu.log"), "wb")  # pylint: disable=consider-using-with
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
        finally:
            log.close()
        self.started = time.monotonic()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def qemu_log(self) -> str:
        return _tail(os.path.join(self.workdir, "qemu.log"), 10)

    def console_tail(self, lines: int = 25) -> str:
        return _tail(self.console, lines)

    def since_start(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def wait_for_ssh(self, deadline: float, check: Callable[[], None]) -> float:
        """Seconds from start until a login works; the master connection it opens serves every later
        command. Logins are tried when the console says sshd runs, and every few seconds besides."""
        console = _ConsoleWatch(self.console)
        last_try = time.monotonic() if self.ready_mark else 0.0
        while True:
            check()
            if not self.running():
                raise InfraError(f"qemu exited with code {self.process.returncode if self.process else '?'} before "
                                 f"the VM was up: {self.qemu_log().strip()[-600:]}")
            self._mark_ready_line(console)
            if "ready_line" in self.marks or time.monotonic() - last_try >= UNMARKED_TRY_SECONDS:
                last_try = time.monotonic()
                if self._ssh().start_master():
                    self._mark_ready_line(console)  # it may have come while the login was under way
                    self.marks["ssh"] = self.since_start()
                    self._place_kernel_start()
                    return self.marks["ssh"]
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(POLL_SECONDS)

    def _mark_ready_line(self, console: _ConsoleWatch) -> None:
        if self.ready_mark and "ready_line" not in self.marks and console.saw(self.ready_mark):
            self.marks["ready_line"] = self.since_start()

    def _place_kernel_start(self) -> None:
        """Where the guest's clock starts on ours: its uptime read at a known moment."""
        before = time.monotonic()
        code, output = self.ssh("cat /proc/uptime", timeout=10)
        after = time.monotonic()
        try:
            uptime = float(output.split()[0]) if code == 0 else None
        except (IndexError, ValueError):
            uptime = None
        if uptime is not None:
            self.kernel_start = round((before + after) / 2 - self.started - uptime, 3)

    def _ssh(self) -> SshSession:
        if self.session is None:
            raise InfraError("the VM was not started.")
        return self.session

    def ssh_config(self) -> str:
        """The ssh_config naming the VM 'vm', for testinfra's ssh backend (it shares the master connection)."""
        return self._ssh().config

    def ssh(self, command: str, timeout: float = 30) -> tuple[int, str]:
        return self._ssh().run(command, timeout)

    def boot_timeline(self, units: list[str]) -> dict[str, Any]:
        """Where the boot's time went (timeline.py), asked of the guest over SSH; the launcher's marks
        alone when the guest does not answer."""
        code, output = self.ssh(timeline.facts_script(list(dict.fromkeys([*timeline.BOOT_UNITS, *units]))),
                                timeout=FACTS_SECONDS)
        facts = timeline.facts(output) if code == 0 else None
        return timeline.timeline(self.marks, self.kernel_start, facts)

    def stop(self) -> None:
        """Ends the SSH master, kills qemu (and anything it started) and removes the work directory."""
        if self.session is not None and self.running():
            self.session.close()
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except OSError:
                pass
            self.process.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _ConsoleWatch:
    """Reads a console file as it grows and says whether a line has appeared."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.tail = ""

    def saw(self, text: str) -> bool:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self.offset)
                new = handle.read()
                self.offset = handle.tell()
        except OSError:
            return False
        window = self.tail + new
        self.tail = window[-len(text):]
        return text in window


def _run(command: list[str], what: str) -> None:
    finished = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if finished.returncode != 0:
        raise InfraError(f"Could not {what}: {finished.stdout.strip()[-500:]}")


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""
