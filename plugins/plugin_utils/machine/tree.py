# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The root tree of a disk on the controller: exported from the build container, then given what
a booted machine needs that a container does not (fstab, network, first-boot, its own host keys)."""

from __future__ import annotations

import glob
import os
import subprocess
from typing import IO, Any, cast

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.machine import plan as disk_plan

UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
# Container leftovers a machine must not carry: the engine's marker, host keys every copy would share,
# a machine ID every copy would share (systemd makes one at first boot when the file is empty).
REMOVE = [".dockerenv", "etc/ssh/ssh_host_*", "var/lib/dbus/machine-id"]


def export_tree(client: DockerClient, container_id: str, tree: str) -> None:
    """Unpacks the container's filesystem into tree, keeping owners, modes and device nodes."""
    os.makedirs(tree, exist_ok=True)
    process = subprocess.Popen(["tar", "-x", "--numeric-owner", "-p", "-f", "-", "-C", tree],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stdin = cast(IO[bytes], process.stdin)  # a pipe: stdin=PIPE above
    try:
        for chunk in client.export(container_id):
            stdin.write(chunk)
        stdin.close()
        error = (process.stderr.read() if process.stderr else b"").decode("utf-8", "replace")
        code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
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


def make_bootable(tree: str, *, root_uuid: str, hostname: str, keys: list[str], command_unit: str | None) -> None:
    for pattern in REMOVE:
        for path in glob.glob(os.path.join(tree, pattern)):
            os.unlink(path)
    write(tree, "/etc/machine-id", "", 0o444)
    write(tree, "/etc/fstab", disk_plan.fstab(root_uuid))
    write(tree, "/etc/hostname", hostname + "\n")
    write(tree, "/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n::1 localhost ip6-localhost ip6-loopback\n")
    write(tree, disk_plan.CONFIG_DIR + "/hostname", hostname + "\n")
    write(tree, disk_plan.CONFIG_DIR + "/authorized_keys", "".join(key + "\n" for key in keys), 0o600)
    write(tree, "/etc/systemd/network/80-immutable-infra-dhcp.network", disk_plan.NETWORK)
    write(tree, "/etc/ssh/sshd_config.d/immutable-infra.conf", disk_plan.SSHD_CONFIG)
    write(tree, disk_plan.FIRSTBOOT_PATH, disk_plan.FIRSTBOOT_SCRIPT, 0o755)
    write(tree, "/etc/systemd/system/" + disk_plan.FIRSTBOOT_UNIT, disk_plan.FIRSTBOOT_UNIT_TEXT)
    enable(tree, disk_plan.FIRSTBOOT_UNIT, "sysinit.target")
    enable(tree, "systemd-networkd.service", "multi-user.target")
    enable(tree, "ssh.service", "multi-user.target")
    if command_unit is not None:
        write(tree, "/etc/systemd/system/" + disk_plan.COMMAND_UNIT, command_unit)
        enable(tree, disk_plan.COMMAND_UNIT, "multi-user.target")


def config_of(image: dict[str, Any]) -> dict[str, Any]:
    return image.get("Config") or {}
