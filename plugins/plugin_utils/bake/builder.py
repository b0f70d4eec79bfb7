# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Makes a container a good place to run roles written for servers, then leaves no trace of that.

While roles run, three things stand in for a booted server: a policy-rc.d that keeps package
installs from starting daemons, a systemctl that really runs the services the roles start (a
container has no init system; see builder/systemctl.py at the collection's root), and dpkg/apt
settings that skip fsync and translation downloads. Before the commit every service the roles
started is stopped cleanly, and the stand-ins and the residue of the run (Ansible temp dirs, apt
lists) are removed; the image's own command starts the service when a host runs.
"""

from __future__ import annotations

import os

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

STAGE = "/run/immutable-infra-bake"
KEEP_ALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]
DEFAULT_CLEANUP_PATHS = [
    "/var/lib/apt/lists/*",
    "/var/cache/apt/*.bin",
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/archives/partial/*",
]

POLICY_RC_D = b"#!/bin/sh\n# Installed only while a bake runs: packages must not start daemons in the builder.\nexit 101\n"
DPKG_CONF = b"force-unsafe-io\n"
APT_CONF = b'Acquire::Languages "none";\n'

# Programs that run inside the builder, not on the controller, live in builder/ at the collection's root.
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SYSTEMCTL_SOURCE = os.path.join(COLLECTION_ROOT, "builder", "systemctl.py")
# The stand-in goes first on PATH, in a directory no Debian package ships files in, so a package that
# installs systemd during the bake cannot replace it. On a merged-/usr base dpkg unpacks bookworm's
# /bin/systemctl through the /bin symlink onto /usr/bin/systemctl, which a diversion of
# /usr/bin/systemctl does not catch (dpkg matches diversions by the package's path).
SYSTEMCTL_PATH = "/usr/local/sbin/systemctl"
# Also where scripts that name it by its absolute path look, when the base has no systemctl there.
SYSTEMCTL_FALLBACK_PATH = "/usr/bin/systemctl"
STANDIN_MARKER = "IMMUTABLE_INFRA_UNIT"
ABSENT_PREFIX = "absent unit: "


def systemctl_standin(python_interpreter: str) -> bytes:
    """The stand-in systemctl, run by the builder's own Python."""
    try:
        with open(SYSTEMCTL_SOURCE, "rb") as handle:
            return f"#!{python_interpreter}\n".encode() + handle.read()
    except OSError as error:
        raise InfraError(f"The collection is incomplete: {SYSTEMCTL_SOURCE} cannot be read ({error.strerror}); "
                         "install immutable.infra again.") from None


PREPARE = f"""set -e
stage={STAGE}
: > "$stage/created"
place() {{
  if [ -d "$(dirname "$2")" ] && [ ! -e "$2" ] && [ ! -L "$2" ]; then
    cp "$stage/$1" "$2"; chmod "$3" "$2"; echo "$2" >> "$stage/created"
  fi
}}
place policy-rc.d /usr/sbin/policy-rc.d 0755
# Maintainer scripts, Ansible's modules and Debian's default PATH all look in /usr/local/sbin before
# /usr/bin and /bin. Neither copy is listed in "created": each is removed at the end only while it is
# still the stand-in, so a systemctl a package installs during the bake stays.
for dir in /usr/local /usr/local/sbin; do
  if [ ! -d "$dir" ]; then mkdir "$dir"; echo "$dir" >> "$stage/created"; fi
done
for path in {SYSTEMCTL_PATH} {SYSTEMCTL_FALLBACK_PATH}; do
  if [ ! -e "$path" ] && [ ! -L "$path" ]; then cp "$stage/systemctl" "$path"; chmod 0755 "$path"; fi
done
place dpkg.cfg /etc/dpkg/dpkg.cfg.d/zz-immutable-infra-bake 0644
place apt.conf /etc/apt/apt.conf.d/zz-immutable-infra-bake 0644
for dir in /run/systemd /run/systemd/system; do
  if [ ! -d "$dir" ]; then mkdir "$dir"; echo "$dir" >> "$stage/created"; fi
done
"""

FINISH = f"""stage={STAGE}
# What the roles started is stopped first, cleanly (the service's own stop, then TERM, then KILL);
# a bake that started nothing pays only for this look at /proc.
strays=""
for proc in /proc/[0-9]*; do
  pid=${{proc#/proc/}}
  [ "$pid" = 1 ] || [ "$pid" = $$ ] || [ "$(cat $proc/comm 2>/dev/null)" = sleep ] || strays=yes
done
if [ -n "$strays" ] || ls "$stage"/services/*.json >/dev/null 2>&1; then
  "$stage/systemctl" stop-all || exit 1
  find /run /var/run /tmp -xdev -type s -newer "$stage/created" -delete 2>/dev/null
fi
# Services the roles started or restarted that the image does not have (nothing ran for them).
if [ -s "$stage/absent" ]; then sort -u "$stage/absent" | sed 's/^/{ABSENT_PREFIX}/'; fi
# Removed only while it is the stand-in: a package that installed a real systemctl keeps it.
for path in {SYSTEMCTL_PATH} {SYSTEMCTL_FALLBACK_PATH}; do
  if grep -q {STANDIN_MARKER} "$path" 2>/dev/null; then rm -f "$path"; fi
done
if [ -f "$stage/created" ]; then
  tac "$stage/created" | while read -r path; do rm -rf "$path"; done
fi
rm -rf "$stage" /root/.ansible/tmp /tmp/ansible-* /tmp/ansible_* /var/tmp/ansible-* /var/tmp/ansible_*
rmdir /root/.ansible 2>/dev/null
for pattern in "$@"; do rm -rf $pattern; done
exit 0
"""


def prepare(client: DockerClient, container_id: str, python_interpreter: str = "/usr/bin/python3") -> None:
    """Installs the stand-ins for a booted server in a running container."""
    client.put_files(container_id, [
        (f"{STAGE}/policy-rc.d", POLICY_RC_D, 0o755),
        (f"{STAGE}/systemctl", systemctl_standin(python_interpreter), 0o755),
        (f"{STAGE}/dpkg.cfg", DPKG_CONF, 0o644),
        (f"{STAGE}/apt.conf", APT_CONF, 0o644),
    ])
    code, output = client.exec(container_id, ["/bin/sh", "-c", PREPARE])
    if code != 0:
        raise InfraError(f"Could not prepare the builder container: {output.strip()[-500:]}")


def finish(client: DockerClient, container_id: str, cleanup_paths: list[str]) -> list[str]:
    """Removes the stand-ins and the residue of the run, leaving only what the roles made.

    Returns the services the roles started or restarted that the image does not have."""
    code, output = client.exec(container_id, ["/bin/sh", "-c", FINISH, "finish", *cleanup_paths])
    if code != 0:
        raise InfraError(f"Could not clean the builder container: {output.strip()[-500:]}")
    return absent_units(output)


def absent_units(output: str) -> list[str]:
    return [line[len(ABSENT_PREFIX):].strip() for line in output.splitlines() if line.startswith(ABSENT_PREFIX)]


def absent_units_warning(units: list[str]) -> str:
    return (f"The roles started or restarted {', '.join(units)}, which the image does not have; nothing ran for "
            f"{'them' if len(units) > 1 else 'it'}. Install the service in the bake, or set the role's variable "
            "that names it, if the image needs it.")


# Modules that change the kernel or the machine rather than files, and what such a change says when
# a container may not make it.
HOST_LEVEL_ACTIONS = ("mount", "sysctl", "modprobe", "kernel_blacklist", "selinux", "seboolean", "hostname",
                      "ufw", "iptables", "firewalld", "filesystem", "lvg", "lvol", "parted", "swapon")
HOST_LEVEL_MESSAGES = ("must be superuser to", "permission denied on key", "operation not permitted",
                       "read-only file system", "modprobe: fatal", "could not insert", "cannot open /proc/sys",
                       "mount: ", "system has not been booted")


def host_level_hint(failure: dict | None, privileged: bool) -> str:
    """A sentence for a task that failed because the builder is not a booted machine, naming both
    ways out; '' for any other failure."""
    if not failure:
        return ""
    action = str(failure.get("action") or "").rsplit(".", 1)[-1]
    text = " ".join(str(failure.get(key) or "") for key in ("msg", "stderr", "module_stderr", "stdout")).lower()
    if action not in HOST_LEVEL_ACTIONS and not (action in ("command", "shell", "raw")
                                                 and any(message in text for message in HOST_LEVEL_MESSAGES)):
        return ""
    task = failure.get("task") or "this task"
    if privileged:
        return (f"\n'{task}' changes the machine, and even a privileged builder shares the host's kernel: skip it "
                "with skip_tags (or pick what runs with tags), or make the change when a host starts.")
    return (f"\n'{task}' changes the machine (kernel, mounts), and the builder is a container, not a booted machine. "
            "Either skip it: set skip_tags to a tag the task has (or tags to those you want), or run it in a "
            "privileged builder: set privileged: true (read 'Roles written for servers' in docs/bake.md first).")
