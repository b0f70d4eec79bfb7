# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turns a root tree on the controller into a disk that firmware boots, without mounting anything:
a FAT boot partition made with mtools and syslinux (kernel, initramfs, boot menu), an ext4 root
made with `mke2fs -d`, both placed behind an MBR with syslinux's boot code, converted by qemu-img.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import initramfs
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan

# Debian package of each tool, for the message when one is missing.
TOOLS = {"mke2fs": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools", "syslinux": "syslinux",
         "sfdisk": "fdisk", "qemu-img": "qemu-utils"}
MBR_CANDIDATES = ["/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/SYSLINUX/mbr.bin", "/usr/share/syslinux/mbr.bin"]
TOOL_TIMEOUT = 900


def missing_tools() -> list[str]:
    """The Debian packages whose tools this controller lacks."""
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    if not any(os.path.exists(path) for path in MBR_CANDIDATES):
        missing.append("syslinux-common")
    return missing


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise InfraError(f"Building a disk needs these Debian packages on the controller: {', '.join(missing)}; "
                         f"install them (apt-get install {' '.join(missing)}) or run 'make setup-vm'.")


def run(command: list[str], what: str, stdin: str | None = None) -> str:
    try:
        finished = subprocess.run(command, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=TOOL_TIMEOUT, check=False, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InfraError(f"Could not {what}: {error}.") from None
    if finished.returncode != 0:
        raise InfraError(f"Could not {what}: {command[0]} said: {finished.stdout.strip()[-800:]}")
    return finished.stdout


def tree_bytes(root: str) -> int:
    """The space the files of a tree take (apparent sizes, hard links once), rounded per 4 KiB block."""
    total, seen = 0, set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += -(-info.st_size // 4096) * 4096 + 256
    return total


def boot_files(root: str) -> tuple[str, str]:
    """The newest kernel and its initramfs in the tree's /boot."""
    kernels = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
    if not kernels:
        raise InfraError("The kernel package installed no /boot/vmlinuz-*; choose a kernel_package that "
                         "provides a kernel image (for example linux-image-cloud-amd64).")
    kernel = kernels[-1]
    initrd = os.path.join(root, "boot", "initrd.img-" + os.path.basename(kernel)[len("vmlinuz-"):])
    if not os.path.exists(initrd):
        raise InfraError(f"No initramfs was made for {os.path.basename(kernel)}; the image needs "
                         "initramfs-tools to work (is /boot writable in the image?).")
    return kernel, initrd


def write_initramfs(tree: str, release: str, busybox: str, destination: str) -> None:
    """The small initramfs of direct kernel boot, from the tree's own kernel modules and busybox."""
    modules_dir = os.path.join(tree, "lib", "modules", release)
    try:
        with open(os.path.join(modules_dir, "modules.dep"), encoding="utf-8") as handle:
            order = initramfs.load_order(handle.read(), initramfs.BOOT_MODULES)
        modules = []
        for path in order:
            with open(os.path.join(modules_dir, path), "rb") as handle:
                modules.append((path, handle.read()))
        with open(busybox, "rb") as handle:
            program = handle.read()
    except OSError as error:
        raise InfraError(f"Could not read what the direct-boot initramfs needs from the disk's tree: {error}.") from None
    with open(destination, "wb") as handle:
        handle.write(initramfs.build(program, modules))


def make_boot_partition(path: str, size: int, start: int, kernel: str, initrd: str, config: str) -> None:
    # The hidden-sectors field must say where the partition starts, or syslinux's boot sector
    # looks for its loader at the wrong place on the disk.
    run(["mkfs.vfat", "-n", "BOOT", "-h", str(start // 512), "-C", path, str(size // 1024)],
        "make the boot filesystem")
    config_path = path + ".cfg"
    with open(config_path, "w", encoding="utf-8") as handle:
        handle.write(config)
    try:
        run(["mcopy", "-i", path, kernel, "::vmlinuz"], "copy the kernel to the boot filesystem")
        run(["mcopy", "-i", path, initrd, "::initrd.img"], "copy the initramfs to the boot filesystem")
        run(["mcopy", "-i", path, config_path, "::syslinux.cfg"], "write the boot menu")
    finally:
        os.unlink(config_path)


def make_root_partition(path: str, size: int, tree: str, uuid: str) -> None:
    # errors=remount-ro lives in the filesystem, so no boot has to remount the root to set it.
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-U", uuid, "-E", "root_owner=0:0,hash_seed=" + uuid,
         "-e", "remount-ro", "-d", tree, path, str(size // 1024) + "k"], "make the root filesystem (mke2fs -d)")


def assemble(raw: str, layout: disk_plan.Layout, boot: str, root: str) -> None:
    """Partition table, MBR boot code and both partitions in one sparse raw disk."""
    with open(raw, "wb") as handle:
        handle.truncate(layout.size)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw], "write the partition table",
        stdin=disk_plan.sfdisk_script(layout))
    mbr = next(path for path in MBR_CANDIDATES if os.path.exists(path))
    with open(mbr, "rb") as handle:
        code = handle.read()[:440]
    with open(raw, "r+b") as disk:
        disk.write(code)  # the first 440 bytes: boot code; the partition table after it stays
        for source, offset in ((boot, layout.boot_start), (root, layout.root_start)):
            _copy_sparse(source, disk, offset)
    run(["syslinux", "--install", "--offset", str(layout.boot_start), raw], "install the syslinux boot loader")


def _copy_sparse(source: str, disk, offset: int, chunk: int = 4 * 1024 * 1024) -> None:
    zero = bytes(chunk)
    with open(source, "rb") as handle:
        position = offset
        while True:
            block = handle.read(chunk)
            if not block:
                break
            if block != zero[:len(block)]:
                disk.seek(position)
                disk.write(block)
            position += len(block)


def convert(raw: str, destination: str, disk_format: str) -> None:
    if disk_format == "raw":
        os.replace(raw, destination)
        return
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", disk_format, raw, destination], "convert the disk")


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * 1024 * 1024), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()
