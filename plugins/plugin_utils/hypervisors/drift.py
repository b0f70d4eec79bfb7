# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt back-end's drift probe: why a VM host differs from the disk it was made from.

A VM's disk is an overlay over the verified disk, whose files all date from its build. So whatever
changed in the guest after it booted was changed in place: the probe, run over SSH, lists the files
whose status changed since boot outside the paths every system writes (logs, caches, runtime state)
and those the first boot writes (host name, SSH keys), and the packages dpkg installed, upgraded or
removed since boot. Besides: a domain whose memory or CPUs differ from its spec, and a host no recorded
rollout made. The parsing is pure and unit-tested; the probe's text is what runs in the guest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Written by every running system, or by the disk's first-boot script: not changes to the host's software.
VOLATILE_PATHS = ["/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache", "/var/lib/systemd",
                  "/var/lib/dhcp", "/var/lib/private", "/var/spool", "/var/lib/apt/lists", "/var/lib/dpkg",
                  "/var/lib/sudo", "/var/backups", "/root/.ansible", "/root/.cache", "/root/.ssh", "/lost+found"]
FIRST_BOOT_FILES = ["/etc/hostname", "/etc/hosts", "/etc/machine-id", "/etc/ssh/ssh_host_ecdsa_key",
                    "/etc/ssh/ssh_host_ecdsa_key.pub", "/etc/ssh/ssh_host_ed25519_key",
                    "/etc/ssh/ssh_host_ed25519_key.pub", "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_rsa_key.pub"]
PACKAGE_ACTIONS = {"install": "installed", "upgrade": "upgraded", "remove": "removed", "purge": "purged"}


def probe_script() -> str:
    """The shell script run in the guest: 'boot <epoch>', then 'changed <type> <path>' and
    'package <action> <name> <version>' lines."""
    prune = " -o ".join(f"-path {path}" for path in VOLATILE_PATHS)
    actions = " || ".join(f'$3 == "{action}"' for action in PACKAGE_ACTIONS)
    return (
        "boot=$(awk '/^btime/ {print $2}' /proc/stat); echo \"boot $boot\"; "
        f"find / -xdev \\( {prune} \\) -prune -o -newerct \"@$boot\" -printf 'changed %y %p\\n' 2>/dev/null; "
        "since=$(date -d \"@$boot\" '+%Y-%m-%d %H:%M:%S'); "
        "if [ -r /var/log/dpkg.log ]; then awk -v since=\"$since\" "
        f"'($1 \" \" $2) >= since && ({actions}) {{print \"package \" $3 \" \" $4 \" \" $6}}' /var/log/dpkg.log; fi; "
        "echo end")


def package_phrase(action: str, name: str, version: str) -> str:
    shown = f" ({version})" if version and version != "<none>" and action in ("install", "upgrade") else ""
    return f"package {name} {PACKAGE_ACTIONS[action]} in place{shown}"


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


def parse_probe(output: str, writable_paths: list[str]) -> list[str]:
    """Drift reasons from the probe's output; a directory is named only when nothing listed or written by
    the first boot lies below it (it changed because something in it was added or removed)."""
    changed: list[tuple[str, str]] = []
    packages = []
    for line in output.splitlines():
        words = line.split(" ", 2)
        if words[0] == "changed" and len(words) == 3:
            changed.append((words[1], words[2]))
        elif words[0] == "package" and len(words) == 3 and words[1] in PACKAGE_ACTIONS:
            name, _space, version = words[2].partition(" ")
            packages.append(package_phrase(words[1], name.split(":", 1)[0], version))
    skip = [*writable_paths, *VOLATILE_PATHS]
    paths = [path for _kind, path in changed]
    reasons = []
    for kind, path in changed:
        if _under(path, skip) or path in FIRST_BOOT_FILES or path == "/":
            continue
        below = path.rstrip("/") + "/"
        if kind == "d" and any(other.startswith(below) for other in [*paths, *FIRST_BOOT_FILES, *skip]):
            continue
        reasons.append(f"filesystem: {'directory' if kind == 'd' else 'file'} {path} changed since boot")
    return reasons + packages


def probe_finished(output: str) -> bool:
    lines = output.strip().splitlines()
    return bool(lines) and lines[0].startswith("boot ") and lines[-1] == "end"


def config_drift(info: list[Any], settings: dict[str, Any]) -> list[str]:
    """How a running domain differs from its spec: libvirt's info() is [state, max KiB, KiB, vCPUs, CPU time]."""
    reasons = []
    memory, vcpus = int(info[1]) // 1024, int(info[3])
    if settings.get("memory") and memory != int(settings["memory"]):
        reasons.append(f"memory changed from {settings['memory']} MiB to {memory} MiB")
    if settings.get("vcpus") and vcpus != int(settings["vcpus"]):
        reasons.append(f"vcpus changed from {settings['vcpus']} to {vcpus}")
    return reasons
