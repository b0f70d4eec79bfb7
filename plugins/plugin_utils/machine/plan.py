# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of a disk build: sizes, the disk's inputs hash, its layout, and the files placed
in the root filesystem so that it boots as a VM (fstab, network, first-boot, the command's unit).

Nothing here touches Docker, qemu or the filesystem, so all of it is unit-tested in milliseconds.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import (
    SHORT_HASH_LENGTH,
    InfraError,
    canonical_json,
    env_dict,
    sha256_hex,
)

# Bumped whenever the way a disk is assembled changes, so older disks are not returned for new inputs.
DISK_LAYOUT_VERSION = 3
FORMATS = ("qcow2", "raw")
BOOT_PACKAGES = ["systemd-sysv", "udev", "initramfs-tools", "openssh-server"]
# The drivers a qemu VM's disk and network need; the cloud kernel has them as modules.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "ext4"]
MiB = 1024 * 1024
PARTITION_START = MiB  # the first MiB holds the MBR and stays free, as partitioning tools do
MIN_BOOT_PARTITION = 32 * MiB
# Room the root filesystem needs beyond its files: ext4 metadata, journal, logs of the first boots.
ROOT_OVERHEAD_RATIO = 0.15
ROOT_OVERHEAD_MIN = 96 * MiB
SEED_SERIAL = "iiseed"
COMMAND_UNIT = "immutable-infra-command.service"
CONFIG_DIR = "/etc/immutable-infra"
SHELLS = {"sh", "bash", "dash", "zsh", "ash"}
HOSTNAME_PATTERN = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$")
PACKAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
KEY_PATTERN = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB, "T": 1024 * 1024 * MiB}


def parse_size(text: str | int, option: str = "size") -> int:
    """'4G', '512M', '2GiB' or a number of bytes -> bytes (binary units, as qemu-img reads them)."""
    match = _SIZE.match(str(text))
    if not match:
        raise InfraError(f"{option} '{text}' is not a size; give one like '2G' or '512M'.")
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    return int(value)


def human_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size / MiB:.1f}M" if size >= MiB else f"{size}B"


def validate_hostname(name: str) -> str:
    if not HOSTNAME_PATTERN.match(name):
        raise InfraError(f"hostname '{name}' is not a valid host name; use letters, digits and '-', "
                         "at most 63 characters, not starting or ending with '-'.")
    return name


def validate_keys(keys: list[str]) -> list[str]:
    cleaned = []
    for key in keys:
        key = " ".join(str(key).split())
        if not KEY_PATTERN.match(key):
            raise InfraError(f"ssh_authorized_keys entry '{key[:40]}...' is not an OpenSSH public key "
                             "(a line like 'ssh-ed25519 AAAA... comment').")
        cleaned.append(key)
    return cleaned


def validate_packages(packages: list[str], option: str = "packages") -> list[str]:
    for package in packages:
        if not PACKAGE_PATTERN.match(package):
            raise InfraError(f"{option} entry '{package}' is not a Debian package name.")
    return list(packages)


def validate_name(name: str) -> str:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name) or len(name) > 100:
        raise InfraError(f"name '{name}' is not a valid disk name; use letters, digits, '.', '_' and '-' "
                         "(it names the disk file).")
    return name


def disk_inputs(*, image_id: str, image_inputs_hash: str | None, kernel_package: str, packages: list[str],
                boot: dict[str, Any], size: int, disk_format: str) -> dict[str, Any]:
    """Everything that decides the content of a disk. Same inputs, same disk."""
    return {
        "image_id": image_id,
        "image_inputs_hash": image_inputs_hash,
        "kernel_package": kernel_package,
        "packages": sorted(set(BOOT_PACKAGES + packages)),
        "boot": boot,
        "size": size,
        "format": disk_format,
        "layout": DISK_LAYOUT_VERSION,
    }


def inputs_hash(inputs: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(inputs))


def disk_file_name(name: str, digest: str, disk_format: str) -> str:
    return f"{name}-{digest[:SHORT_HASH_LENGTH]}.{disk_format}"


def manifest_file_name(disk_file: str) -> str:
    return disk_file.rsplit(".", 1)[0] + ".json"


def root_uuid(digest: str) -> str:
    """The root filesystem's UUID, derived from the inputs hash so the same inputs give the same disk."""
    return str(uuid.UUID(digest[:32]))


def kernel_command_line(root: str, extra: list[str]) -> str:
    """The command line of firmware boot (syslinux in the disk), as any hypervisor boots the qcow2."""
    return " ".join([f"root=UUID={root}", "rw", "console=tty0", "console=ttyS0,115200", "panic=10", *extra])


def direct_command_line(root: str, extra: list[str]) -> str:
    """The command line of direct kernel boot with the disk's small initramfs (qemu -append, a libvirt
    domain's <cmdline>): the serial console only, and quiet, since every line on it costs time."""
    return " ".join([f"root=UUID={root}", "rw", "console=ttyS0,115200", "quiet", "panic=10", *extra])


def boot_file_names(disk_file: str) -> dict[str, str]:
    """The kernel and initramfs of direct boot, beside the disk and named after it."""
    stem = disk_file.rsplit(".", 1)[0]
    return {"kernel": stem + ".vmlinuz", "initrd": stem + ".initrd"}


@dataclass(frozen=True)
class Layout:
    """Where the partitions of a disk lie, in bytes: a FAT boot partition (syslinux, kernel,
    initramfs) and the ext4 root filesystem filling the rest."""

    size: int
    boot_start: int
    boot_size: int
    root_start: int
    root_size: int


def plan_layout(size: int, boot_files: int, root_files: int) -> Layout:
    """The layout of a disk of `size` bytes holding boot files and a root tree of the given sizes;
    a disk too small for them is refused with the size that would do."""
    boot_size = max(MIN_BOOT_PARTITION, _round_up(int(boot_files * 1.3) + 8 * MiB, MiB))
    root_needed = root_files + max(int(root_files * ROOT_OVERHEAD_RATIO), ROOT_OVERHEAD_MIN)
    root_start = PARTITION_START + boot_size
    needed = _round_up(root_start + root_needed, 256 * MiB)
    if size < needed:
        raise InfraError(f"size {human_size(size)} is too small for this image: its files take "
                         f"{root_files / MiB:.0f} MiB and the boot files {boot_files / MiB:.0f} MiB; "
                         f"give at least size: {human_size(needed)}.")
    return Layout(size=size, boot_start=PARTITION_START, boot_size=boot_size, root_start=root_start,
                  root_size=_round_down(size - root_start, MiB))


# What the kernel, systemd and SSH add to an image, at least (Debian 12, cloud kernel: about 190 MiB).
BOOT_PACKAGES_ESTIMATE = 160 * MiB


def check_size_early(size: int, image_bytes: int) -> None:
    """Refuses, before anything starts, a size that cannot hold the image and the boot packages."""
    needed = _round_up(PARTITION_START + MIN_BOOT_PARTITION + image_bytes + BOOT_PACKAGES_ESTIMATE
                       + ROOT_OVERHEAD_MIN, 256 * MiB)
    if size < needed:
        raise InfraError(f"size {human_size(size)} is too small for this image: it takes {image_bytes / MiB:.0f} MiB "
                         f"and the kernel and boot packages need about {BOOT_PACKAGES_ESTIMATE / MiB:.0f} MiB more; "
                         f"give at least size: {human_size(needed)}.")


def sfdisk_script(layout: Layout) -> str:
    """An MBR partition table for sfdisk: a bootable FAT partition, then Linux."""
    sector = 512
    return ("label: dos\nunit: sectors\n"
            f"start={layout.boot_start // sector}, size={layout.boot_size // sector}, type=c, bootable\n"
            f"start={layout.root_start // sector}, size={layout.root_size // sector}, type=83\n")


def syslinux_config(kernel: str, initrd: str, command_line: str) -> str:
    return ("DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\n"
            f"LABEL linux\n  LINUX /{kernel}\n  INITRD /{initrd}\n  APPEND {command_line}\n")


def fstab(root: str) -> str:
    return f"# written by immutable.infra.disk\nUUID={root} / ext4 defaults,errors=remount-ro 0 1\n"


def command_of(config: dict[str, Any]) -> list[str]:
    return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])


def enabled_unit_runs(unit_text: str, program: str) -> bool:
    """Whether a unit file's ExecStart runs program (by path or base name)."""
    for line in unit_text.splitlines():
        key, _equals, value = line.strip().partition("=")
        if key.strip() != "ExecStart" or not value.strip():
            continue
        words = value.strip().lstrip("@-:+!").split()
        if words and (words[0] == program or words[0].rsplit("/", 1)[-1] == program.rsplit("/", 1)[-1]):
            return True
    return False


def needs_command_unit(mode: str, config: dict[str, Any], enabled_units: dict[str, str]) -> bool:
    """Whether the image's command becomes a unit: always, never, or (auto) when the image has a
    command and no enabled unit already runs its program (a role that enabled its own service)."""
    command = command_of(config)
    if mode == "never" or not command:
        if mode == "always" and not command:
            raise InfraError("command_unit is 'always' but the image has no command (Cmd or Entrypoint).")
        return False
    if mode == "always":
        return True
    if command[0].rsplit("/", 1)[-1] in SHELLS and len(command) == 1:
        return False  # a base image's interactive shell, not a service
    return not any(enabled_unit_runs(text, command[0]) for text in enabled_units.values())


def _systemd_quote(word: str) -> str:
    if word and all(char.isalnum() or char in "/._-=:,+@" for char in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_unit(config: dict[str, Any], image: str) -> str:
    """A systemd unit that runs the image's command as the container would: its entrypoint and
    command, environment, working directory and user."""
    command = command_of(config)
    lines = ["# written by immutable.infra.disk from the image's config",
             "[Unit]", f"Description=the command of image {image}", "After=network.target", "",
             "[Service]", "ExecStart=" + " ".join(_systemd_quote(word) for word in command)]
    for key, value in sorted(env_dict(config.get("Env")).items()):
        lines.append("Environment=" + _systemd_quote(f"{key}={value}"))
    if config.get("WorkingDir"):
        lines.append(f"WorkingDirectory={config['WorkingDir']}")
    user = config.get("User") or ""
    if user:
        name, _colon, group = user.partition(":")
        lines.append(f"User={name}")
        if group:
            lines.append(f"Group={group}")
    lines += ["Restart=on-failure", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def install_script(kernel_package: str, packages: list[str]) -> str:
    """The shell script that adds a kernel, an initramfs, an init system and SSH to the image's
    filesystem in a build container, and fetches busybox for the direct-boot initramfs; exit code 3
    means the kernel package is not available, 4 that the package lists could not be updated, 6 that
    busybox-static could not be downloaded."""
    modules = "\\n".join(INITRAMFS_MODULES)
    wanted = " ".join(shlex.quote(name) for name in [kernel_package, *sorted(set(BOOT_PACKAGES + packages))])
    return f"""set -e
export DEBIAN_FRONTEND=noninteractive
mkdir -p /etc/initramfs-tools/conf.d
printf 'MODULES=list\\nCOMPRESS=gzip\\n' > /etc/initramfs-tools/conf.d/zz-immutable-infra
printf '{modules}\\n' >> /etc/initramfs-tools/modules
apt-get update -q -o APT::Update::Error-Mode=any 2>&1 || {{ echo 'immutable-infra: apt-get update failed'; exit 4; }}
if ! apt-cache show {shlex.quote(kernel_package)} 2>/dev/null | grep -q '^Package:'; then
  echo 'immutable-infra: no such kernel package'; exit 3
fi
apt-get install -y -q --no-install-recommends {wanted} 2>&1
ls /boot/vmlinuz-* /boot/initrd.img-* >/dev/null
mkdir -p {INITRAMFS_STAGING} && cd {INITRAMFS_STAGING}
apt-get download -q busybox-static 2>&1 || {{ echo 'immutable-infra: busybox-static could not be downloaded'; exit 6; }}
dpkg-deb -x busybox-static_*.deb root && dpkg-deb -f busybox-static_*.deb Version > version && rm busybox-static_*.deb
"""


# Where the build container leaves busybox for the direct-boot initramfs; it is taken out of the
# root tree before the root filesystem is made.
INITRAMFS_STAGING = "/var/tmp/immutable-infra-initramfs"
BUSYBOX_PATH = "root/bin/busybox"
VERSIONS_SCRIPT = ("dpkg-query -W -f '${Package}=${Version}\\n' \"$@\"; echo kernel=$(ls /lib/modules | sort -V | tail -n 1); "
                   f"echo busybox-static=$(cat {INITRAMFS_STAGING}/version)")


def parse_versions(output: str) -> tuple[dict[str, str], str]:
    """dpkg-query's package=version lines and the kernel release line -> (versions, kernel release)."""
    versions, release = {}, ""
    for line in output.splitlines():
        name, sep, version = line.strip().partition("=")
        if not sep:
            continue
        if name == "kernel":
            release = version
        else:
            versions[name] = version
    return versions, release


def manifest(*, name: str, digest: str, inputs: dict[str, Any], disk_file: str, disk_digest: str,
             disk_bytes: int, image: str, kernel_release: str, versions: dict[str, str],
             command_line: str, command_unit_written: bool, created: str, built_by: str,
             duration: float, exposed_ports: list[str], boot: dict[str, Any],
             guest: dict[str, Any]) -> dict[str, Any]:
    """The manifest beside a disk. boot: the artefacts of direct kernel boot (boot_section); guest:
    what the disk runs at boot (enabled and masked units, SSH host key types and PAM)."""
    return {
        "format_version": 1,
        "name": name,
        "inputs_hash": digest,
        "inputs": inputs,
        "image": image,
        "image_id": inputs["image_id"],
        "image_inputs_hash": inputs["image_inputs_hash"],
        "disk": disk_file,
        "disk_format": inputs["format"],
        "disk_digest": disk_digest,
        "disk_bytes": disk_bytes,
        "size": inputs["size"],
        "kernel_package": inputs["kernel_package"],
        "kernel_release": kernel_release,
        "packages": versions,
        "kernel_command_line": command_line,
        "command_unit": command_unit_written,
        "exposed_ports": exposed_ports,
        "boot": boot,
        "guest": guest,
        "created": created,
        "built_by": built_by,
        "build_seconds": duration,
        "verdict": None,
    }


def boot_section(*, kernel: str, kernel_digest: str, kernel_bytes: int, initrd: str, initrd_digest: str,
                 initrd_bytes: int, command_line: str, ready_mark: str) -> dict[str, Any]:
    """How a VM boots the disk directly (qemu -kernel/-initrd/-append, a libvirt domain's <os>): the
    kernel and initramfs files beside the disk with their digests, the command line, the seed drive
    that gives the VM its identity, and the console line that says SSH is up."""
    return {"kernel": kernel, "kernel_digest": kernel_digest, "kernel_bytes": kernel_bytes,
            "initrd": initrd, "initrd_digest": initrd_digest, "initrd_bytes": initrd_bytes,
            "command_line": command_line, "ready_mark": ready_mark,
            "seed": {"serial": SEED_SERIAL, "format": "tar", "files": ["hostname", "authorized_keys"]}}


def cache_matches(found: dict[str, Any] | None, digest: str, disk_bytes: int | None,
                  file_bytes: dict[str, int | None]) -> bool:
    """Whether a manifest read beside the disk describes this inputs hash, a disk still of its size
    and the boot files beside it (file_bytes: kernel and initrd sizes found, None when missing)."""
    if not found or disk_bytes is None:
        return False
    boot = found.get("boot") or {}
    files_match = all(boot.get(f"{name}_bytes") == size and size is not None for name, size in file_bytes.items())
    return found.get("inputs_hash") == digest and found.get("disk_bytes") == disk_bytes and files_match


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _round_down(value: int, unit: int) -> int:
    return value // unit * unit
