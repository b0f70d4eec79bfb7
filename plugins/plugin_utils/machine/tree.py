# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The root tree of a disk on the controller: exported from the build container, then given what
a booted machine needs that a container does not (fstab, network, first-boot, its own host keys)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import IO, Any, cast

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import guest
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan

UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
# Container leftovers a machine must not carry: the engine's marker, host keys every copy would share,
# a machine ID every copy would share (systemd makes one at first boot when the file is empty).
REMOVE = [".dockerenv", "etc/ssh/ssh_host_*", "var/lib/dbus/machine-id"]


def export_tree(client: DockerClient, container_id: str, tree: str) -> None:
    """Unpacks the container's filesystem into tree, keeping owners, modes and device nodes."""
    os.makedirs(tree, exist_ok=True)
    # tar's complaints go to a file: a pipe read only at the end fills up (64 KB) and blocks tar, and with it
    # the export written to tar.
    with tempfile.TemporaryFile() as complaints:
        process = subprocess.Popen(["tar", "-x", "--numeric-owner", "-p", "-f", "-", "-C", tree],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=complaints)
        stdin = cast(IO[bytes], process.stdin)  # a pipe: stdin=PIPE above
        try:
            for chunk in client.export(container_id):
                stdin.write(chunk)
            stdin.close()
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        complaints.seek(max(0, complaints.seek(0, os.SEEK_END) - 4096))
        error = complaints.read().decode("utf-8", "replace")
    if code != 0:
        raise InfraError(f"Could not unpack the image's filesystem: tar said: {error.strip()[-500:]}")


def enabled_units(tree: str) -> dict[str, str]:
    """Unit name -> unit file text of every service enabled in the tree (links in *.wants/)."""
    units: dict[str, str] = {}
    for link in sorted(glob.glob(os.path.join(tree, "etc/systemd/system/*.wants/*.service"))):
        name = os.path.basename(link)
        text = _unit_text(tree, link, name)
        if text is not None:
            units[name] = text
    return units


def _unit_text(tree: str, link: str, name: str) -> str | None:
    candidates = []
    if os.path.islink(link):
        target = os.readlink(link)
        candidates.append(os.path.join(tree, target.lstrip("/")) if target.startswith("/")
                          else os.path.join(os.path.dirname(link), target))
    candidates += [os.path.join(tree, directory, name) for directory in UNIT_DIRS]
    for candidate in candidates:
        if os.path.isfile(candidate) and not os.path.islink(candidate):
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                return handle.read()
    return None


def write(tree: str, path: str, content: str, mode: int = 0o644) -> None:
    full = os.path.join(tree, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if os.path.islink(full) or os.path.exists(full):
        os.unlink(full)
    with open(full, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(full, mode)


def enable(tree: str, unit: str, target: str) -> None:
    """What `systemctl enable` does: a link in the target's .wants directory to the unit file."""
    for directory in UNIT_DIRS:
        if os.path.exists(os.path.join(tree, directory, unit)):
            wants = os.path.join(tree, "etc/systemd/system", f"{target}.wants")
            os.makedirs(wants, exist_ok=True)
            link = os.path.join(wants, unit)
            if not os.path.lexists(link):
                os.symlink("/" + directory + "/" + unit, link)
            return
    raise InfraError(f"The unit {unit} is not in the disk's root filesystem; the boot packages did not install it.")


@dataclass(frozen=True)
class GuestSettings:
    """What a disk's machine is given beyond the image: its default identity, SSH host key types,
    the units masked, and the image's command as a unit (None: no such unit)."""

    root_uuid: str
    hostname: str
    keys: list[str]
    key_types: list[str]
    masked: list[str]
    command_unit: str | None


def make_bootable(tree: str, settings: GuestSettings) -> None:
    """Writes what a booted machine needs and a container does not. sshd's own drop-in was written
    and checked in the build container (manager.py), where the image's sshd could run."""
    for pattern in REMOVE:
        for path in glob.glob(os.path.join(tree, pattern)):
            os.unlink(path)
    write(tree, "/etc/machine-id", "", 0o444)
    write(tree, "/etc/fstab", disk_plan.fstab(settings.root_uuid))
    write(tree, "/etc/hostname", settings.hostname + "\n")
    write(tree, "/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {settings.hostname}\n"
                              "::1 localhost ip6-localhost ip6-loopback\n")
    write(tree, disk_plan.CONFIG_DIR + "/hostname", settings.hostname + "\n")
    write(tree, disk_plan.CONFIG_DIR + "/authorized_keys", "".join(key + "\n" for key in settings.keys), 0o600)
    write(tree, guest.NETWORK_FILE, guest.NETWORK)
    write(tree, guest.SSH_SERVICE_DROPIN, guest.SSH_SERVICE_OVERRIDE)
    write(tree, guest.FIRSTBOOT_PATH, guest.FIRSTBOOT_SCRIPT, 0o755)
    units = [(guest.FIRSTBOOT_UNIT, guest.FIRSTBOOT_UNIT_TEXT, "sysinit.target"),
             (guest.HOSTKEYS_UNIT, guest.hostkeys_unit(settings.key_types), "sysinit.target"),
             (guest.READY_UNIT, guest.READY_UNIT_TEXT, "multi-user.target")]
    if settings.command_unit is not None:
        units.append((disk_plan.COMMAND_UNIT, settings.command_unit, "multi-user.target"))
    for unit, text, target in units:
        write(tree, "/etc/systemd/system/" + unit, text)
        enable(tree, unit, target)
    enable(tree, "systemd-networkd.service", "multi-user.target")
    enable(tree, "ssh.service", "multi-user.target")
    for name in settings.masked:
        mask(tree, name)


def mask(tree: str, name: str) -> None:
    """What `systemctl mask` does: the unit (or generator) becomes a link to /dev/null."""
    path = os.path.join(tree, guest.mask_path(name).lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink("/dev/null", path)


def take_out(tree: str, path: str) -> str:
    """Moves a directory the build container staged out of the root tree, into the tree's parent."""
    source = os.path.join(tree, path.lstrip("/"))
    if not os.path.isdir(source):
        raise InfraError(f"The build container left nothing in {path}; the disk cannot be built without it.")
    destination = os.path.join(os.path.dirname(os.path.abspath(tree)), os.path.basename(path))
    shutil.move(source, destination)
    return destination


def config_of(image: dict[str, Any]) -> dict[str, Any]:
    return image.get("Config") or {}
