# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boots a disk as a throwaway VM under qemu: a copy-on-write overlay over the disk (which is never
written), a seed drive with the VM's host name and SSH key, user-mode networking with loopback
ports forwarded to the guest. stop() always kills qemu and removes the overlay and the seed.

Whether KVM really boots a guest is tried once per machine (a kernel that panics at once, with no
root filesystem, must get that far) and remembered, since on some hosts /dev/kvm accepts a VM
whose Linux guest then hangs at boot.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, canonical_json, sha256_hex
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan

QEMU = "qemu-system-x86_64"
ACCEL_CACHE = "~/.cache/immutable-infra/accel.json"
KVM_PROBE_SECONDS = 20.0
# The kernel prints this just before it starts init: the guest got past the point where KVM guests hang.
KVM_BOOTED_MARK = "Freeing unused kernel"
POLL_SECONDS = 0.2


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


def seed_archive(hostname: str, authorized_keys: list[str]) -> bytes:
    """The seed drive: a tar archive the disk's first-boot script reads (see plan.FIRSTBOOT_SCRIPT)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, text in (("hostname", hostname + "\n"), ("authorized_keys", "".join(k + "\n" for k in authorized_keys))):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return data + bytes(-len(data) % 512)


def boot_command(*, overlay: str, seed: str, accel: str, memory: int, cpus: int, forwards: dict[int, int],
                 console: str) -> list[str]:
    """The qemu command line of a throwaway VM: firmware boot (SeaBIOS) from the overlay."""
    netdev = "user,id=net0" + "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in forwards.items())
    command = [QEMU, "-accel", accel, "-m", str(memory), "-smp", str(cpus), "-display", "none", "-no-reboot",
               "-serial", f"file:{console}", "-monitor", "none",
               # The firmware boots the disk only: tried first, it would hang on the seed drive.
               "-drive", f"file={overlay},if=none,id=disk,format=qcow2",
               "-device", "virtio-blk-pci,drive=disk,bootindex=0",
               "-drive", f"file={seed},if=none,id=seed,format=raw,readonly=on",
               "-device", f"virtio-blk-pci,drive=seed,serial={disk_plan.SEED_SERIAL}",
               "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
    if accel == "kvm":
        command += ["-cpu", "host"]
    return command


@dataclass
class Machine:
    """A running throwaway VM and what it owns on the controller."""

    disk: str
    disk_format: str
    accel: str
    memory: int = 1024
    cpus: int = 1
    guest_ports: list[int] = field(default_factory=list)
    workdir: str = ""
    forwards: dict[int, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    key: str = ""
    started: float = 0.0

    @property
    def console(self) -> str:
        return os.path.join(self.workdir, "console.log")

    @property
    def ssh_port(self) -> int:
        return self.forwards[22]

    def start(self, hostname: str) -> None:
        self.workdir = tempfile.mkdtemp(prefix="immutable-infra-vm-")
        overlay = os.path.join(self.workdir, "overlay.qcow2")
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self.disk_format, "-b", os.path.abspath(self.disk),
              overlay], "create the VM's overlay")
        self.key = os.path.join(self.workdir, "id_ed25519")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "immutable-infra-verify", "-f", self.key],
             "make the VM's SSH key")
        with open(self.key + ".pub", encoding="utf-8") as handle:
            public = handle.read().strip()
        seed = os.path.join(self.workdir, "seed.tar")
        with open(seed, "wb") as handle:
            handle.write(seed_archive(hostname, [public]))
        self.forwards = {port: free_port() for port in sorted({22, *self.guest_ports})}
        command = boot_command(overlay=overlay, seed=seed, accel=self.accel, memory=self.memory, cpus=self.cpus,
                               forwards=self.forwards, console=self.console)
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

    def wait_for_ssh(self, deadline: float, check: Any) -> float:
        """Seconds from start until the guest's sshd answers with its banner and accepts the key."""
        while True:
            check()
            if not self.running():
                raise InfraError(f"qemu exited with code {self.process.returncode if self.process else '?'} before "
                                 f"the VM was up: {self.qemu_log().strip()[-600:]}")
            if _ssh_banner(self.ssh_port) and self._ssh_accepts():
                return round(time.monotonic() - self.started, 3)
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(POLL_SECONDS)

    def wait_for_ports(self, ports: list[int], deadline: float, check: Any) -> list[int]:
        """The guest ports that are not listening yet when deadline passes (empty: all listen)."""
        waiting = list(ports)
        while waiting:
            check()
            output = self.ssh(["cat", "/proc/net/tcp", "/proc/net/tcp6"])[1]
            from ansible_collections.immutable.infra.plugins.plugin_utils.verify import report as verify_report
            listening = verify_report.listening_ports(output)
            waiting = [port for port in waiting if port not in listening]
            if not waiting or time.monotonic() > deadline:
                return waiting
            time.sleep(POLL_SECONDS)
        return []

    def ssh_options(self) -> list[str]:
        return ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-i", self.key, "-p", str(self.ssh_port)]

    def ssh_config(self) -> str:
        """An ssh_config for testinfra's ssh backend, naming the VM 'vm'."""
        path = os.path.join(self.workdir, "ssh_config")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"Host vm\n  HostName 127.0.0.1\n  Port {self.ssh_port}\n  User root\n"
                         f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
                         "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
        return path

    def ssh(self, command: list[str], timeout: float = 30) -> tuple[int, str]:
        try:
            finished = subprocess.run(["ssh", *self.ssh_options(), "root@127.0.0.1", "--", *command],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, errors="replace", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return 255, "ssh timed out"
        return finished.returncode, finished.stdout

    def _ssh_accepts(self) -> bool:
        return self.ssh(["true"], timeout=20)[0] == 0

    def stop(self) -> None:
        """Kills qemu (and anything it started) and removes the overlay, the seed and the key."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except OSError:
                pass
            self.process.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _ssh_banner(port: int) -> bool:
    """Whether something behind the forwarded port speaks SSH (user-mode networking accepts every
    connection on the host side, even before the guest listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.settimeout(3)
            return connection.recv(16).startswith(b"SSH-")
    except OSError:
        return False


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
