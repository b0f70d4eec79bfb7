# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The small initramfs of a disk's direct kernel boot: a static busybox, the virtio modules of the
disk's own kernel, and an init that loads them, mounts the root filesystem named on the kernel
command line and hands over to its init. Debian's initramfs stays in the disk for firmware boot.

Everything here is pure: the archive is built in memory from the bytes given, with fixed times
and owners, so the same kernel modules and busybox give the same archive byte for byte.
"""

from __future__ import annotations

import gzip
import lzma
import posixpath
import stat
from dataclasses import dataclass

# What the root disk of a qemu or libvirt VM needs before the root filesystem is mounted; ext4 and
# the crc32c it uses are built into Debian's kernels, loaded here when they are modules.
BOOT_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "ext4", "crc32c_generic"]
APPLETS = ["sh", "mount", "umount", "insmod", "switch_root", "findfs", "sleep", "cat", "echo", "mkdir"]
MODULE_DIR = "lib/modules"
# Guest marks the boot timeline reads back from the kernel log (dmesg).
INIT_MARK = "immutable-infra-initramfs"

INIT_SCRIPT = f"""#!/bin/sh
# written by immutable.infra.disk: load the virtio drivers, mount the root filesystem, start its init
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "{INIT_MARK}: $*" > /dev/console; exit 1; }}
for module in $(cat /etc/modules.order); do
  insmod "/{MODULE_DIR}/$module" 2>/dev/null
done
root= mode=ro init=/sbin/init fstype=ext4
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${{arg#root=}} ;;
    rootfstype=*) fstype=${{arg#rootfstype=}} ;;
    init=*) init=${{arg#init=}} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
  esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"
tries=0
while :; do
  case "$root" in
    /dev/*) [ -b "$root" ] && device=$root && break ;;
    *) device=$(findfs "$root" 2>/dev/null) && break ;;
  esac
  tries=$((tries + 1))
  [ "$tries" -gt 300 ] && fail "the root filesystem $root did not appear within 30 s"
  sleep 0.1
done
mkdir -p /root
mount -t "$fstype" -o "$mode" "$device" /root || fail "could not mount $device on /root"
echo "{INIT_MARK}: root $device mounted" > /dev/kmsg
for place in dev proc sys; do
  mount -o move "/$place" "/root/$place"
done
exec switch_root /root "$init"
"""


@dataclass(frozen=True)
class Entry:
    """One member of the archive: a directory, a file, a symbolic link or a character device."""

    path: str
    mode: int
    data: bytes = b""
    device: tuple[int, int] = (0, 0)


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep lines ('kernel/a.ko: kernel/b.ko kernel/c.ko') -> {module name: [path, its dependencies]}."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, colon, dependencies = line.partition(":")
        if not colon:
            continue
        found[module_name(path)] = [path.strip(), *dependencies.split()]
    return found


def module_name(path: str) -> str:
    """kernel/drivers/block/virtio_blk.ko.xz -> virtio_blk (modprobe treats - and _ alike)."""
    name = posixpath.basename(path.strip())
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def load_order(modules_dep: str, wanted: list[str]) -> list[str]:
    """The module files to load, dependencies first, each once. Wanted modules the kernel does not
    have as modules (built in, or absent) are skipped: a missing driver shows when the root does not
    appear, with the initramfs's message on the console."""
    table = parse_modules_dep(modules_dep)
    by_path = {entry[0]: entry for entry in table.values()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dependency in by_path.get(path, [path])[1:]:
            visit(dependency)
        order.append(path)

    for name in wanted:
        entry = table.get(name.replace("-", "_"))
        if entry:
            visit(entry[0])
    return order


def plain_module(path: str, data: bytes) -> tuple[str, bytes]:
    """A module as busybox's insmod loads it: xz-compressed modules are unpacked at build time."""
    if path.endswith(".ko.xz"):
        return path[:-3], lzma.decompress(data)
    if path.endswith(".ko.gz"):
        return path[:-3], gzip.decompress(data)
    return path, data


def entries(busybox: bytes, modules: list[tuple[str, bytes]]) -> list[Entry]:
    """The archive's members: busybox and its applets, the modules in load order, /init."""
    members = [Entry(directory, 0o40755) for directory in
               ("bin", "dev", "etc", "lib", MODULE_DIR, "proc", "root", "sys")]
    members.append(Entry("dev/console", 0o20600, device=(5, 1)))  # the kernel opens it for init's output
    members.append(Entry("bin/busybox", 0o100755, busybox))
    members += [Entry(f"bin/{applet}", 0o120777, b"busybox") for applet in APPLETS]
    names = []
    for path, data in modules:
        path, data = plain_module(path, data)
        name = posixpath.basename(path)
        names.append(name)
        members.append(Entry(f"{MODULE_DIR}/{name}", 0o100644, data))
    members.append(Entry("etc/modules.order", 0o100644, "".join(name + "\n" for name in names).encode()))
    members.append(Entry("init", 0o100755, INIT_SCRIPT.encode()))
    return members


def cpio(members: list[Entry]) -> bytes:
    """An uncompressed newc cpio archive, the format the kernel unpacks into its first root."""
    chunks = []
    for inode, member in enumerate([*members, Entry("TRAILER!!!", 0)], start=1):
        name = member.path.encode() + b"\0"
        fields = [inode if member.path != "TRAILER!!!" else 0, member.mode, 0, 0,
                  2 if stat.S_ISDIR(member.mode) else 1, 0, len(member.data), 0, 0,
                  member.device[0], member.device[1], len(name), 0]
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        chunks += [header, name, _pad(len(header) + len(name)), member.data, _pad(len(member.data))]
    return b"".join(chunks)


def build(busybox: bytes, modules: list[tuple[str, bytes]], compress: bool = True) -> bytes:
    """The initramfs: a cpio archive, gzip-compressed with a fixed time unless compress is false."""
    archive = cpio(entries(busybox, modules))
    return gzip.compress(archive, compresslevel=9, mtime=0) if compress else archive


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)
