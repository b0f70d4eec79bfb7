"""How bench/disk.py boots the example disk: the collection's way (machine/qemu.py), the way it booted
before (firmware, qemu's default devices, one vCPU, the old probe), through Packer's qemu builder,
several at once, and with one change of the quick path taken away at a time.

Every boot starts from a copy-on-write overlay, so the disk is never written; each function returns
seconds from qemu's start (or packer's) until a login works (ssh) and until port 8000 listens (port).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from measure import COLLECTIONS_PATH, BenchError, bench_env, run_timed

sys.path.insert(0, COLLECTIONS_PATH)

# pylint: disable=wrong-import-position
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import boot, guest, qemu
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.manager import read_manifest

PORT = 8000
LISTENING = f":{PORT:04X} 00000000:0000 0A"
BOOT_SECONDS = 240


def default_masked() -> list[str]:
    return list(guest.MASKED_UNITS)


class Disk:
    """The example disk and what its manifest says about booting it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.manifest = read_manifest(path.rsplit(".", 1)[0] + ".json") or {}
        self.direct = boot.direct_boot(self.manifest, os.path.dirname(path))
        self.ready_mark = (self.manifest.get("boot") or {}).get("ready_mark")
        self.units = list((self.manifest.get("guest") or {}).get("enabled_units") or [])


def ours(disk: Disk, cpus: int | None = None, direct: bool = True, ready: bool = True) -> dict[str, Any]:
    """The collection's boot (what verify does): a login as soon as the console says sshd runs, then
    the port read over the same SSH connection; the boot's timeline from the guest."""
    machine = qemu.Machine(disk=disk.path, disk_format="qcow2", accel="tcg", memory=1024,
                           cpus=boot.choose_cpus(cpus, os.cpu_count() or 1), guest_ports=[PORT],
                           direct=disk.direct if direct else None, ready_mark=disk.ready_mark if ready else None)
    machine.start("bench")
    try:
        ssh = machine.wait_for_ssh(time.monotonic() + BOOT_SECONDS, lambda: None) if ready else \
            _probe_every(machine, 0.2)
        while LISTENING not in machine.ssh("cat /proc/net/tcp /proc/net/tcp6", timeout=10)[1]:
            _deadline(machine.started, "port 8000")
            time.sleep(0.2)
        machine.marks["ports"] = port = machine.since_start()
        return {"ssh": ssh, "port": port, "timeline": machine.boot_timeline(disk.units)}
    finally:
        machine.stop()


def _probe_every(machine: qemu.Machine, seconds: float) -> float:
    """A login tried every few tenths of a second from the start, without the console's ready line."""
    while not machine.session.start_master():  # type: ignore[union-attr]
        _deadline(machine.started, "SSH")
        time.sleep(seconds)
    machine.marks["ssh"] = machine.since_start()
    return machine.marks["ssh"]


def _deadline(started: float, what: str) -> None:
    if time.monotonic() - started > BOOT_SECONDS:
        raise BenchError(f"the VM did not get to {what} within {BOOT_SECONDS} s")


class OldWay:
    """The disk booted as the collection booted disks before: firmware boot with qemu's default
    devices and CPU, one vCPU, and a probe that reads the banner and then logs in anew each time."""

    def __init__(self, disk: Disk, workdir: str) -> None:
        self.disk, self.workdir = disk, tempfile.mkdtemp(prefix="old-", dir=workdir)

    def run(self) -> dict[str, Any]:
        key, seed, overlay = _vm_files(self.disk, self.workdir)
        ssh_port, http_port = _free_port(), _free_port()
        command = [qemu.QEMU, "-accel", "tcg", "-m", "1024", "-smp", "1", "-display", "none",
                   "-no-reboot", "-serial", f"file:{os.path.join(self.workdir, 'console.log')}", "-monitor", "none",
                   "-drive", f"file={overlay},if=none,id=disk,format=qcow2",
                   "-device", "virtio-blk-pci,drive=disk,bootindex=0",
                   "-drive", f"file={seed},if=none,id=seed,format=raw,readonly=on",
                   "-device", "virtio-blk-pci,drive=seed,serial=iiseed",
                   "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{http_port}-:{PORT}",
                   "-device", "virtio-net-pci,netdev=net0"]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        started = time.monotonic()
        try:
            ssh_options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-i", key, "-p", str(ssh_port)]
            while not (_banner(ssh_port) and _ssh(ssh_options, "true")[0] == 0):
                _deadline(started, "SSH")
                time.sleep(0.2)
            ssh = round(time.monotonic() - started, 3)
            while LISTENING not in _ssh(ssh_options, "cat /proc/net/tcp /proc/net/tcp6")[1]:
                _deadline(started, "port 8000")
                time.sleep(0.2)
            return {"ssh": ssh, "port": round(time.monotonic() - started, 3)}
        finally:
            os.killpg(process.pid, 9)
            process.wait()
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def qemu_defaults() -> Iterator[None]:
    """ours, but with qemu's default devices (VGA, floppy, CD-ROM, parallel port) and CPU (qemu64 with
    its svm flag): the collection's qemu command without -nodefaults and -cpu."""
    original = boot.qemu_command

    def with_defaults(spec: boot.VmSpec) -> list[str]:
        command = original(spec)
        cpu = command.index("-cpu")
        del command[cpu:cpu + 2]
        command.remove("-nodefaults")
        return command

    boot.qemu_command = with_defaults  # type: ignore[assignment]
    try:
        yield
    finally:
        boot.qemu_command = original  # type: ignore[assignment]


def _vm_files(disk: Disk, workdir: str) -> tuple[str, str, str]:
    key = os.path.join(workdir, "key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub", encoding="utf-8") as handle:
        public = handle.read().strip()
    seed = os.path.join(workdir, "seed.tar")
    with open(seed, "wb") as handle:
        handle.write(boot.seed_archive("bench", [public]))
    overlay = os.path.join(workdir, "overlay.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk.path, overlay], check=True)
    return key, seed, overlay


def _banner(port: int) -> bool:
    """The old probe's first step: something behind the forwarded port says SSH (2 s to connect, 3 to read)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.settimeout(3)
            return connection.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def _ssh(options: list[str], command: str) -> tuple[int, str]:
    try:
        finished = subprocess.run(["ssh", *options, "root@127.0.0.1", command], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30,
                                  check=False)
    except subprocess.TimeoutExpired:
        return 255, ""
    return finished.returncode, finished.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def at_once(disk: Disk, count: int) -> dict[str, Any]:
    """count VMs of the disk booted at the same moment, each from its own overlay and seed, with the
    vCPUs the collection gives a VM when count boot at once: when each answered SSH, and whether
    each made its own identity (host name, machine ID, SSH host key) while the disk stayed as it was."""
    cpus = boot.choose_cpus(None, os.cpu_count() or 1, at_once=count)
    machines = [qemu.Machine(disk=disk.path, disk_format="qcow2", accel="tcg", memory=1024, cpus=cpus,
                             guest_ports=[PORT], direct=disk.direct, ready_mark=disk.ready_mark) for _vm in range(count)]
    answered: dict[int, float] = {}

    def boot_one(index: int) -> None:
        machines[index].start(f"bench-{index}")
        answered[index] = machines[index].wait_for_ssh(time.monotonic() + BOOT_SECONDS, lambda: None)

    threads = [threading.Thread(target=boot_one, args=(index,)) for index in range(count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(answered) != count:
            raise BenchError(f"only {len(answered)} of {count} VMs answered SSH")
        identities = [machine.ssh("hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub")[1].split()
                      for machine in machines]
    finally:
        for machine in machines:
            machine.stop()
    # hostname, machine ID, host key type, host key: every VM must have its own name, ID and key
    own = all(len(identity) >= 4 for identity in identities) and all(
        len({identity[field] for identity in identities}) == count for field in (0, 1, 3))
    return {"cpus": cpus, "ssh": [answered[index] for index in range(count)], "last": max(answered.values()),
            "own_identities": own}


PACKER_TEMPLATE: dict[str, Any] = {
    "builders": [{
        # use_backing_file fails with qemu 7.2 (packer 1.6.6 gives qemu-img no backing format): packer copies the disk.
        "type": "qemu", "disk_image": True, "use_backing_file": False, "disk_size": "2048M", "iso_checksum": "none",
        "format": "qcow2",
        "accelerator": "tcg", "headless": True, "memory": 1024, "disk_interface": "virtio", "net_device": "virtio-net",
        "vm_name": "hello.qcow2", "ssh_username": "root", "ssh_timeout": "10m", "shutdown_command": "poweroff",
        "vnc_bind_address": "127.0.0.1", "skip_compaction": True, "boot_wait": "0s"}],
    "provisioners": [{"type": "shell", "inline": [
        f"while ! grep -q '{LISTENING}' /proc/net/tcp /proc/net/tcp6; do sleep 0.2; done",
        "echo immutable-infra-bench: port listening"]}],
}


def packer(disk: Disk, workdir: str, index: int) -> dict[str, Any]:
    """Packer's qemu builder booting the same qcow2 (a copy of it), with the seed drive attached
    through qemuargs so that its key may log in; timed on packer's own output."""
    work = tempfile.mkdtemp(prefix="packer-", dir=workdir)
    key, seed, _overlay = _vm_files(disk, work)
    template = json.loads(json.dumps(PACKER_TEMPLATE))
    template["builders"][0].update(
        iso_url="file://" + disk.path, output_directory=os.path.join(work, "out"), ssh_private_key_file=key,
        qemuargs=[["-drive", f"file={seed},if=none,id=seed,format=raw,readonly=on"],
                  ["-device", "virtio-blk-pci,drive=seed,serial=iiseed"]])
    path = os.path.join(work, f"packer-{index}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(template, handle)
    try:
        timed = run_timed(["packer", "build", path], env=bench_env({"CHECKPOINT_DISABLE": "1"}), cwd=work)
        if timed.returncode != 0:
            raise BenchError(f"packer build failed:\n{timed.tail()}")
        marks = {"start": _line_at(timed, "Starting VM"), "ssh": _line_at(timed, "Connected to SSH!"),
                 "port": _line_at(timed, "immutable-infra-bench: port listening")}
        # From packer's start (its copy of the disk included) and from qemu's start, as ours is timed.
        return {"ssh": marks["ssh"], "port": marks["port"], "ssh_from_vm_start": round(marks["ssh"] - marks["start"], 3),
                "port_from_vm_start": round(marks["port"] - marks["start"], 3), "wall": round(timed.wall, 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _line_at(timed: Any, text: str) -> float:
    for offset, line in timed.lines:
        if text in line:
            return round(offset, 3)
    raise BenchError(f"packer never said '{text}':\n{timed.tail()}")
