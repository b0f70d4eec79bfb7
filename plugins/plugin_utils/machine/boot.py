# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a VM boots a disk, as data and pure functions: the artefacts of direct kernel boot named in
the disk's manifest, the seed drive that gives a VM its identity, the vCPUs it gets, and the qemu
command line. A libvirt domain boots the same way from the same artefacts (docs/machine-images.md).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.plan import SEED_SERIAL

QEMU = "qemu-system-x86_64"
# qemu's default CPU under plain emulation, without the virtualisation extension it announces: the guest
# then loads no KVM modules at boot, which it cannot use anyway (about a second of emulated work).
TCG_CPU = "qemu64,-svm"
BOOT_PATHS = ("auto", "direct", "firmware")


@dataclass(frozen=True)
class DirectBoot:
    """Direct kernel boot: the disk's kernel and small initramfs (files beside it) and the command line."""

    kernel: str
    initrd: str
    command_line: str


@dataclass(frozen=True)
class VmSpec:
    """One VM: its overlay over the disk, its seed drive, its console file and its resources.
    forwards maps guest TCP ports to loopback ports (user-mode networking). direct None: firmware boot."""

    overlay: str
    seed: str
    console: str
    accel: str
    memory: int
    cpus: int
    forwards: dict[int, int] = field(default_factory=dict)
    direct: DirectBoot | None = None


def direct_boot(manifest: dict[str, Any], directory: str) -> DirectBoot | None:
    """The direct-boot artefacts a manifest names, as paths beside the disk; None for a disk built
    before disks had them (it boots through its firmware)."""
    boot = manifest.get("boot") or {}
    if not boot.get("kernel"):
        return None
    return DirectBoot(kernel=os.path.join(directory, boot["kernel"]), initrd=os.path.join(directory, boot["initrd"]),
                      command_line=boot["command_line"])


def choose_path(wanted: str, direct: DirectBoot | None) -> DirectBoot | None:
    """auto boots directly when the disk has the artefacts; firmware boots the qcow2 alone, as any
    hypervisor would; direct insists."""
    if wanted == "firmware":
        return None
    if wanted == "direct" and direct is None:
        raise InfraError("boot is 'direct' but the disk has no direct-boot kernel and initramfs (built by an "
                         "older immutable.infra.disk); build it again, or use boot: firmware.")
    return direct


def choose_cpus(wanted: int | None, cores: int, at_once: int = 1) -> int:
    """vCPUs of a VM: as asked, or two when the controller has two cores for each VM booting at once,
    else one (a vCPU beyond the free cores only adds switching under plain emulation)."""
    if wanted is not None:
        if wanted < 1:
            raise InfraError(f"cpus must be 1 or more; got {wanted}.")
        return wanted
    return 2 if cores >= 2 * max(at_once, 1) else 1


def seed_archive(hostname: str, authorized_keys: list[str], mtime: int = 0) -> bytes:
    """The seed drive: a tar archive the disk's first-boot script reads (guest.FIRSTBOOT_SCRIPT)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, text in (("hostname", hostname + "\n"), ("authorized_keys", "".join(k + "\n" for k in authorized_keys))):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, mtime
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return data + bytes(-len(data) % 512)


def qemu_command(spec: VmSpec) -> list[str]:
    """The qemu command line of a VM: no default devices, the disk as virtio, the seed drive, user-mode
    networking with the forwards, the serial console to a file, and direct or firmware boot."""
    netdev = "user,id=net0" + "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in spec.forwards.items())
    # Firmware boot: the firmware must try the disk only, since on the seed drive it would hang.
    disk_device = "virtio-blk-pci,drive=disk" + ("" if spec.direct else ",bootindex=0")
    command = [QEMU, "-accel", spec.accel, "-cpu", "host" if spec.accel == "kvm" else TCG_CPU,
               "-m", str(spec.memory), "-smp", str(spec.cpus), "-nodefaults", "-display", "none", "-no-reboot",
               "-serial", f"file:{spec.console}", "-monitor", "none",
               "-drive", f"file={spec.overlay},if=none,id=disk,format=qcow2", "-device", disk_device,
               "-drive", f"file={spec.seed},if=none,id=seed,format=raw,readonly=on",
               "-device", f"virtio-blk-pci,drive=seed,serial={SEED_SERIAL}",
               "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
    if spec.direct:
        command += ["-kernel", spec.direct.kernel, "-initrd", spec.direct.initrd, "-append", spec.direct.command_line]
    return command
