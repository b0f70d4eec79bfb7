# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Makes a container a good place to run roles written for servers, then leaves no trace of that.

While roles run, three things stand in for a booted server: a policy-rc.d that keeps package
installs from starting daemons, a systemctl that records service state instead of changing it (a
container has no init system; the image's command starts the service when a host runs), and
dpkg/apt settings that skip fsync and translation downloads. All of it is removed again before
the container is committed, together with the residue of the run (Ansible temp dirs, apt lists).
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient

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

SYSTEMCTL = rb"""#!/bin/sh
# Installed only while a bake or verify runs: the container has no init system, so service state
# changes are recorded here and the image's own command starts the service when a host runs.
state=/run/immutable-infra-bake/active
mkdir -p "$state"
verb=""; units=""
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$arg; else units="$units $arg"; fi ;;
  esac
done
base() { n=${1%.service}; echo "${n##*/}"; }
unit_file() {
  n=$1; case "$n" in *.*) ;; *) n=$n.service ;; esac
  for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    [ -f "$d/$n" ] && { echo "$d/$n"; return 0; }
  done
  return 1
}
is_active() {
  [ -e "$state/$(base "$1")" ] && return 0
  for comm in /proc/[0-9]*/comm; do
    [ "$(cat "$comm" 2>/dev/null)" = "$(base "$1")" ] && return 0
  done
  return 1
}
is_enabled() { ls /etc/systemd/system/*.wants/"$(base "$1")".service >/dev/null 2>&1; }
rc=0
for unit in ${units:-none}; do
  case "$verb" in
    start|restart|reload|try-restart|reload-or-restart|try-reload-or-restart) touch "$state/$(base "$unit")" ;;
    stop|kill) rm -f "$state/$(base "$unit")" ;;
    enable|reenable)
      if file=$(unit_file "$unit"); then
        target=$(sed -n 's/^WantedBy=\([^ ]*\).*/\1/p' "$file" | head -n 1)
        mkdir -p "/etc/systemd/system/${target:-multi-user.target}.wants"
        ln -sf "$file" "/etc/systemd/system/${target:-multi-user.target}.wants/$(basename "$file")"
      fi ;;
    disable) rm -f /etc/systemd/system/*.wants/"$(base "$unit")".service ;;
    is-active) if is_active "$unit"; then echo active; else echo inactive; rc=3; fi ;;
    is-enabled) if is_enabled "$unit"; then echo enabled; else echo disabled; rc=1; fi ;;
    is-failed) echo inactive; rc=1 ;;
    status) if is_active "$unit"; then echo "$unit: active"; else echo "$unit: inactive"; rc=3; fi ;;
    show)
      name=$unit; case "$name" in *.*) ;; *) name=$name.service ;; esac
      active=inactive; sub=dead; is_active "$unit" && { active=active; sub=running; }
      enabled=disabled; is_enabled "$unit" && enabled=enabled
      printf 'Id=%s\nNames=%s\nLoadState=loaded\nActiveState=%s\nSubState=%s\nUnitFileState=%s\n' \
        "$name" "$name" "$active" "$sub" "$enabled"
      printf 'CanStart=yes\nCanStop=yes\nCanReload=yes\nFragmentPath=%s\n' "$(unit_file "$unit" || echo /dev/null)" ;;
    *) ;;
  esac
done
exit $rc
"""

PREPARE = f"""set -e
stage={STAGE}
: > "$stage/created"
place() {{
  if [ -d "$(dirname "$2")" ] && [ ! -e "$2" ] && [ ! -L "$2" ]; then
    cp "$stage/$1" "$2"; chmod "$3" "$2"; echo "$2" >> "$stage/created"
  fi
}}
place policy-rc.d /usr/sbin/policy-rc.d 0755
mkdir -p /usr/local/sbin
place systemctl /usr/local/sbin/systemctl 0755
place dpkg.cfg /etc/dpkg/dpkg.cfg.d/zz-immutable-infra-bake 0644
place apt.conf /etc/apt/apt.conf.d/zz-immutable-infra-bake 0644
for dir in /run/systemd /run/systemd/system; do
  if [ ! -d "$dir" ]; then mkdir "$dir"; echo "$dir" >> "$stage/created"; fi
done
"""

FINISH = f"""stage={STAGE}
if [ -f "$stage/created" ]; then
  tac "$stage/created" | while read -r path; do rm -rf "$path"; done
fi
rm -rf "$stage" /root/.ansible/tmp /tmp/ansible-* /tmp/ansible_* /var/tmp/ansible-* /var/tmp/ansible_*
rmdir /root/.ansible 2>/dev/null
for pattern in "$@"; do rm -rf $pattern; done
exit 0
"""


def prepare(client: DockerClient, container_id: str) -> None:
    """Installs the stand-ins for a booted server in a running container."""
    client.put_files(container_id, [
        (f"{STAGE}/policy-rc.d", POLICY_RC_D, 0o755),
        (f"{STAGE}/systemctl", SYSTEMCTL, 0o755),
        (f"{STAGE}/dpkg.cfg", DPKG_CONF, 0o644),
        (f"{STAGE}/apt.conf", APT_CONF, 0o644),
    ])
    code, output = client.exec(container_id, ["/bin/sh", "-c", PREPARE])
    if code != 0:
        raise InfraError(f"Could not prepare the builder container: {output.strip()[-500:]}")


def finish(client: DockerClient, container_id: str, cleanup_paths: list[str]) -> None:
    """Removes the stand-ins and the residue of the run, leaving only what the roles made."""
    code, output = client.exec(container_id, ["/bin/sh", "-c", FINISH, "finish", *cleanup_paths])
    if code != 0:
        raise InfraError(f"Could not clean the builder container: {output.strip()[-500:]}")
