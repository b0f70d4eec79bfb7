# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a disk's root filesystem holds to boot as a machine rather than run as a container, as text:
the network, sshd's settings, the identity every VM makes at its first boot, the mark on the
console when SSH is up, and the units a server VM does not need (masked). tree.py writes them.

Pure: no I/O. docs/machine-images.md lists the masked units and why each is.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.plan import CONFIG_DIR, SEED_SERIAL

FIRSTBOOT_PATH = "/usr/local/sbin/immutable-infra-firstboot"
FIRSTBOOT_UNIT = "immutable-infra-firstboot.service"
HOSTKEYS_UNIT = "immutable-infra-hostkeys.service"
READY_UNIT = "immutable-infra-ready.service"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/immutable-infra.conf"
SSH_SERVICE_DROPIN = "/etc/systemd/system/ssh.service.d/immutable-infra.conf"
NETWORK_FILE = "/etc/systemd/network/80-immutable-infra-dhcp.network"
# What the ready unit prints on the console once sshd runs; a VM's launcher waits for it, then logs in once.
READY_MARK = "immutable-infra: ssh ready"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
DEFAULT_HOST_KEY_TYPES = ["ed25519"]

# Units masked by default, and why a VM of a disk does not need them.
MASKED_UNITS: dict[str, str] = {
    "apt-daily.timer": "a host of an immutable release is never upgraded in place; a new disk is built",
    "apt-daily-upgrade.timer": "as apt-daily.timer",
    "dpkg-db-backup.timer": "the package database of a disk never changes",
    "e2scrub_all.timer": "checks ext4 on LVM; the disk has no LVM",
    "e2scrub_reap.service": "removes e2scrub's LVM snapshots; the disk has no LVM",
    "systemd-binfmt.service": "foreign binary formats (emulators); a server runs its own architecture",
    "proc-sys-fs-binfmt_misc.automount": "as systemd-binfmt.service",
    "sys-kernel-debug.mount": "debugfs, for kernel debugging",
    "sys-kernel-tracing.mount": "tracefs, for kernel tracing",
    "sys-kernel-config.mount": "configfs, for kernel subsystems configured from userspace (iSCSI targets, USB gadgets)",
    "sys-fs-fuse-connections.mount": "the FUSE control filesystem",
    "dev-hugepages.mount": "huge pages for databases that ask for them; mount it in such a service's role",
    "dev-mqueue.mount": "a view of POSIX message queues; the queues work without it",
    "systemd-update-utmp.service": "boot and login records for who and last; logins are SSH sessions of tools",
    "systemd-update-utmp-runlevel.service": "as systemd-update-utmp.service",
    "getty-static.service": "login prompts on virtual consoles tty2-tty6; a VM has no screen",
    "serial-getty@ttyS0.service": "a login prompt on the serial console; root has no password on a disk (keys only)",
    "systemd-random-seed.service": "every VM starts from the pristine disk, which holds no seed (one there would be "
                                   "shared by every VM); the kernel seeds its generator itself",
    "systemd-sysusers.service": "the image's users were made when it was baked; the disk's /etc is complete",
    "systemd-remount-fs.service": "the root filesystem is mounted read-write at boot and its error behaviour is "
                                  "set in the filesystem (remount read-only)",
}
GENERATOR_SUFFIX = "-generator"
# PAM modules of Debian's own sshd stack: an image that uses only these loses nothing without PAM.
DEBIAN_PAM_MODULES = {"pam_unix", "pam_deny", "pam_permit", "pam_env", "pam_limits", "pam_loginuid", "pam_keyinit",
                      "pam_motd", "pam_mail", "pam_selinux", "pam_nologin", "pam_systemd", "pam_umask",
                      "pam_faildelay", "pam_lastlog"}
# What the build container reports for the sshd_pam decision: whether root's password is locked
# with '!' (sshd without PAM refuses such an account) and the modules of sshd's PAM stack.
SSHD_FACTS_SCRIPT = r"""
case "$(sed -n 's/^root:\(.\).*/\1/p' /etc/shadow 2>/dev/null)" in '!') echo root-locked ;; esac
for file in /etc/pam.d/sshd /etc/pam.d/common-auth /etc/pam.d/common-account /etc/pam.d/common-session \
    /etc/pam.d/common-password; do
  [ -r "$file" ] && sed 's/#.*//' "$file" | grep -o 'pam_[A-Za-z0-9_]*\.so' | sed 's/\.so$//; s/^/module /'
done
exit 0
"""
# sshd's own pre-start check, run once in the build container with the disk's final configuration
# and a throwaway host key, so that every boot can skip it.
SSHD_CHECK_SCRIPT = r"""
work=$(mktemp -d)
made=
[ -d /run/sshd ] || { mkdir -p /run/sshd && made=1; }
ssh-keygen -q -t ed25519 -N '' -f "$work/key" >/dev/null
/usr/sbin/sshd -t -f /etc/ssh/sshd_config -o "HostKey=$work/key" 2>&1
code=$?
rm -rf "$work"
[ -z "$made" ] || rmdir /run/sshd
exit $code
"""

NETWORK = """# written by immutable.infra.disk: every wired interface asks DHCP for an address
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
"""

SSH_SERVICE_OVERRIDE = """# written by immutable.infra.disk: sshd's configuration was checked (sshd -t) when the disk was
# built, so it starts at once at every boot
[Service]
ExecStartPre=
"""

FIRSTBOOT_SCRIPT = f"""#!/bin/sh
# written by immutable.infra.disk. Runs at every boot, before the network and SSH: sets the host
# name and root's authorized SSH keys from {CONFIG_DIR} (placed when the disk was built) and from a
# seed drive, if one is attached (a tar archive on a virtio disk with serial {SEED_SERIAL}: files
# hostname and authorized_keys). Shell built-ins where they do: every program started costs time.
set -u
seed=/run/immutable-infra-seed
mkdir -p "$seed" /root/.ssh
for dev in /sys/block/*; do
  serial=
  [ -r "$dev/serial" ] && read -r serial < "$dev/serial"
  if [ "$serial" = "{SEED_SERIAL}" ]; then
    tar -xf "/dev/${{dev##*/}}" -C "$seed" hostname authorized_keys 2>/dev/null
  fi
done
name=
for file in "$seed/hostname" {CONFIG_DIR}/hostname; do
  if [ -z "$name" ] && [ -r "$file" ]; then read -r name < "$file"; fi
done
if [ -n "$name" ]; then
  echo "$name" > /etc/hostname
  echo "$name" > /proc/sys/kernel/hostname
  printf '127.0.0.1 localhost\\n127.0.1.1 %s\\n::1 localhost ip6-localhost ip6-loopback\\n' "$name" > /etc/hosts
fi
umask 077
: > /root/.ssh/authorized_keys
for file in {CONFIG_DIR}/authorized_keys "$seed/authorized_keys"; do
  [ -r "$file" ] || continue
  while IFS= read -r line || [ -n "$line" ]; do echo "$line"; done < "$file" >> /root/.ssh/authorized_keys
done
exit 0
"""

FIRSTBOOT_UNIT_TEXT = f"""# written by immutable.infra.disk
[Unit]
Description=immutable.infra first-boot identity (host name, authorized SSH keys)
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target ssh.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={FIRSTBOOT_PATH}

[Install]
WantedBy=sysinit.target
"""

READY_UNIT_TEXT = f"""# written by immutable.infra.disk: the mark on the console that a VM's launcher waits for
[Unit]
Description=immutable.infra: say on the console that SSH is up
After=ssh.service
Requisite=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/echo {READY_MARK}
StandardOutput=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
"""


def validate_key_types(types: list[str]) -> list[str]:
    wrong = [name for name in types if name not in HOST_KEY_TYPES]
    if wrong or not types:
        raise InfraError(f"ssh_host_key_types must name one or more of {', '.join(HOST_KEY_TYPES)}; "
                         f"got {', '.join(wrong) or 'none'}.")
    return list(dict.fromkeys(types))


def host_key_path(key_type: str) -> str:
    return f"/etc/ssh/ssh_host_{key_type}_key"


def hostkeys_unit(key_types: list[str]) -> str:
    """The unit that makes this machine's SSH host keys at its first boot, beside the network's start.
    A machine that has them (a long-lived VM booting again) keeps them: the unit then does not run."""
    commands = "".join(f'ExecStart=/usr/bin/ssh-keygen -q -t {key_type} -N "" -f {host_key_path(key_type)}\n'
                       for key_type in key_types)
    return ("# written by immutable.infra.disk\n[Unit]\nDescription=immutable.infra: this machine's own SSH host keys\n"
            "DefaultDependencies=no\nAfter=local-fs.target\nBefore=ssh.service sysinit.target\n"
            f"ConditionPathExists=!{host_key_path(key_types[0])}\n\n"
            f"[Service]\nType=oneshot\nRemainAfterExit=yes\n{commands}\n[Install]\nWantedBy=sysinit.target\n")


def sshd_config(key_types: list[str], pam: bool) -> str:
    keys = "".join(f"HostKey {host_key_path(key_type)}\n" for key_type in key_types)
    return ("# written by immutable.infra.disk: keys only; host keys are made at first boot\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"UseDNS no\n{keys}UsePAM {'yes' if pam else 'no'}\n")


def needs_pam(mode: str, facts: str) -> bool:
    """Whether sshd keeps PAM: always, never, or (auto) when the image needs it: root's password is
    locked with '!' (sshd without PAM refuses the account) or sshd's PAM stack uses a module beyond
    Debian's own (LDAP, SSSD, access rules, one-time passwords...)."""
    if mode in ("always", "never"):
        return mode == "always"
    lines = facts.split("\n")
    modules = {line.split(" ", 1)[1].strip() for line in lines if line.startswith("module ")}
    return "root-locked" in lines or bool(modules - DEBIAN_PAM_MODULES)


def validate_masked(names: list[str]) -> list[str]:
    for name in names:
        if "/" in name or not name or name.startswith(".") or (
                "." not in name and not name.endswith(GENERATOR_SUFFIX)):
            raise InfraError(f"masked_units entry '{name}' is not a systemd unit name (like apt-daily.timer) or "
                             "generator (like systemd-gpt-auto-generator).")
    return list(dict.fromkeys(names))


def mask_path(name: str) -> str:
    """Where the link to /dev/null that masks a unit (or a generator) lies."""
    if name.endswith(GENERATOR_SUFFIX):
        return "/etc/systemd/system-generators/" + name
    return "/etc/systemd/system/" + name
