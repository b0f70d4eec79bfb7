"""The builder's systemctl with real unit files and real processes, in one container of the base image.

The container is set up as a bake sets up its builder (builder.prepare: the stand-in first on PATH,
policy-rc.d) and cleaned as a bake cleans it (builder.finish, last). Each test drives its own units
by exec; the unit files and programs are the kinds the corpus roles install.
"""

from __future__ import annotations

import shlex

import pytest
from support import RUN_ID

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

UNITS = "/lib/systemd/system"
SERVICES = "/run/immutable-infra-bake/services"
LOOP = "while :; do sleep 0.1; done"

FILES = {
    f"{UNITS}/envdemo.service": f"""[Service]
Type=exec
User=nobody
Group=nogroup
WorkingDirectory=/tmp
RuntimeDirectory=envdemo
Environment=FROM_UNIT=unit "SPACED=two words"
EnvironmentFile=/etc/default/envdemo
ExecStart=/bin/sh -c 'env > /run/envdemo/env; pwd > /run/envdemo/cwd; sh -c "{LOOP}" & {LOOP}'
""",
    "/etc/default/envdemo": "# read by envdemo.service\nFROM_FILE=\"from the file\"\n",
    f"{UNITS}/simple.service": f"""[Service]
ExecStart=/bin/sh -c 'trap "echo reloaded >> /tmp/simple.reloads" HUP; {LOOP}'
ExecReload=/bin/sh -c 'kill -HUP "$1"' reload $MAINPID
""",
    f"{UNITS}/forking.service": """[Service]
Type=forking
PIDFile=/run/forking.pid
ExecStart=/bin/sh -c 'setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > /run/forking.pid'
""",
    f"{UNITS}/ready.service": """[Service]
Type=notify
User=nobody
ExecStart=/usr/bin/python3 /usr/local/bin/notify-ready
""",
    "/usr/local/bin/notify-ready": """import os, socket, time
time.sleep(0.5)
with open("/tmp/ready.before", "w") as record:
    record.write(os.environ["NOTIFY_SOCKET"])
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.connect(os.environ["NOTIFY_SOCKET"])
notify.send(b"STATUS=serving\\nMAINPID=%d\\nREADY=1" % os.getpid())
time.sleep(1000)
""",
    f"{UNITS}/early-exit.service": """[Service]
Type=notify
ExecStart=/bin/sh -c 'echo cannot open the data directory; exit 3'
""",
    f"{UNITS}/oneshot.service": """[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=-/bin/false
ExecStartPre=/bin/sh -c 'echo pre >> /tmp/oneshot.log'
ExecStart=/bin/sh -c 'echo start >> /tmp/oneshot.log'
ExecStart=/bin/sh -c 'echo start again >> /tmp/oneshot.log'
ExecStartPost=/bin/sh -c 'echo post >> /tmp/oneshot.log'
ExecStop=/bin/sh -c 'echo stop >> /tmp/oneshot.log'
""",
    f"{UNITS}/failing-pre.service": """[Service]
ExecStartPre=/bin/sh -c 'echo no config; exit 4'
ExecStart=/bin/sleep 1000
""",
    "/etc/init.d/legacy": f"""#!/bin/sh
case "$1" in
  start) setsid sh -c '{LOOP}' >/dev/null 2>&1 </dev/null & echo $! > /run/legacy.pid ;;
  stop) kill "$(cat /run/legacy.pid)"; rm -f /run/legacy.pid ;;
esac
""",
    f"{UNITS}/fallback.service": "[Service]\nExecStart=/bin/false\n",
    "/etc/init.d/fallback": f"""#!/bin/sh
case "$1" in
  start) setsid sh -c '{LOOP}' >/dev/null 2>&1 </dev/null & ;;
esac
""",
    f"{UNITS}/stubborn.service": f"""[Service]
ExecStart=/bin/sh -c 'trap "" TERM; {LOOP}'
TimeoutStopSec=2
""",
    f"{UNITS}/polite.service": f"""[Service]
ExecStart=/bin/sh -c 'trap "" TERM; trap "echo interrupted > /tmp/polite; exit 0" INT; {LOOP}'
KillSignal=SIGINT
""",
    f"{UNITS}/toggle.service": f"""[Unit]
Description=enabled, disabled, masked
[Service]
ExecStart=/bin/sh -c '{LOOP}'
[Install]
WantedBy=multi-user.target
Alias=toggle-alias.service
""",
    f"{UNITS}/static.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    f"{UNITS}/outside.service": "[Service]\nExecStart=/bin/sh -c 'touch /tmp/outside.ran; sleep 1000'\n",
    **{f"{UNITS}/{name}.service": f"[Service]\nExecStart=/bin/sh -c '{LOOP}'\nExecStop=/bin/sh -c 'echo {name} >> /tmp/stop-order'\n"
       for name in ("first", "second", "third")},
}
EXECUTABLE = ("/usr/local/bin/notify-ready", "/etc/init.d/legacy", "/etc/init.d/fallback")


class Builder:
    """A running container prepared as a bake's builder, driven by exec."""

    def __init__(self, client: DockerClient, container_id: str) -> None:
        self.client = client
        self.id = container_id

    def sh(self, script: str) -> str:
        code, output = self.client.exec(self.id, ["/bin/sh", "-c", script])
        assert code == 0, f"{script}\nexited with code {code}: {output}"
        return output.strip()

    def systemctl(self, *args: str) -> tuple[int, str]:
        code, output = self.client.exec(self.id, ["systemctl", *args])
        return code, output.strip()

    def ok(self, *args: str) -> str:
        code, output = self.systemctl(*args)
        assert code == 0, f"systemctl {' '.join(args)} exited with code {code}: {output}"
        return output

    def show(self, unit: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.ok("show", unit).splitlines())

    def active(self, unit: str) -> bool:
        code, output = self.systemctl("is-active", unit)
        assert (code, output) in ((0, "active"), (3, "inactive")), (code, output)
        return code == 0

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit)["MainPID"])

    def alive(self, pid: int) -> bool:
        return self.sh(f"grep -qs '^State:[[:space:]]*[^Z]' /proc/{pid}/status && echo yes || echo no") == "yes"

    def ids(self, pid: int) -> tuple[str, str]:
        """The real user and group IDs of a process."""
        status = dict(line.split(":", 1) for line in self.sh(f"cat /proc/{pid}/status").splitlines() if ":" in line)
        return status["Uid"].split()[0], status["Gid"].split()[0]

    def owned_by(self, uid: str) -> list[int]:
        """Live processes of a user."""
        found = self.sh(f"grep -ls '^Uid:[[:space:]]*{uid}[[:space:]]' /proc/[0-9]*/status || true")
        return [pid for pid in (int(path.split("/")[2]) for path in found.split()) if self.alive(pid)]

    def unit_processes(self, unit: str) -> list[int]:
        """Live root processes that carry the unit's marker (root may read only theirs here)."""
        found = self.sh(f"grep -lszx IMMUTABLE_INFRA_UNIT={unit} /proc/[0-9]*/environ || true")
        return [pid for pid in (int(path.split("/")[2]) for path in found.split()) if self.alive(pid)]

    def processes(self) -> list[str]:
        """'pid command' of every live process but PID 1, its keep-alive sleep and this listing's shell."""
        listing = self.sh("echo $$; for p in /proc/[0-9]*; do s=$(cat $p/stat 2>/dev/null) || continue; "
                          "c=${s#*(}; c=${c%)*}; r=${s##*) }; set -- $r; echo \"${p#/proc/} $2 $1 $c\"; done")
        shell, *lines = listing.splitlines()
        found = []
        for line in lines:
            pid, ppid, state, command = line.split(" ", 3)
            if state != "Z" and shell not in (pid, ppid) and pid != "1" and (ppid, command) != ("1", "sleep"):
                found.append(f"{pid} {command}")
        return found

    def wait_for(self, path: str) -> None:
        self.sh(f"for i in $(seq 100); do test -s {path} && exit 0; sleep 0.1; done; exit 1")

    def read(self, path: str) -> str:
        return self.sh(f"cat {shlex.quote(path)} 2>/dev/null || true")

    def stop_within(self, unit: str) -> float:
        """Stops the unit; seconds the stop took, measured in the container."""
        return int(self.sh(f"start=$(date +%s%N); systemctl stop {unit} >&2; echo $(( $(date +%s%N) - start ))")
                   .splitlines()[-1]) / 1e9


@pytest.fixture(scope="module")
def box(docker_client, base_image):
    client = DockerClient()
    container = docker_client.containers.run(base_image.id, builder.KEEP_ALIVE, detach=True, network_mode="none",
                                             name=f"itest-{RUN_ID}-systemctl")
    try:
        builder.prepare(client, container.id)
        client.put_files(container.id, [(path, content.encode(), 0o755 if path in EXECUTABLE else 0o644)
                                        for path, content in FILES.items()])
        yield Builder(client, container.id)
    finally:
        container.remove(force=True)


def test_the_stand_in_is_the_systemctl_on_path(box):
    assert box.sh("command -v systemctl") == builder.SYSTEMCTL_PATH
    assert box.sh(f"grep -c {builder.STANDIN_MARKER} /usr/bin/systemctl") != "0"  # the base has no systemctl


def test_exec_service_runs_as_its_user_with_its_environment_and_directories(box):
    box.ok("set-environment", "FROM_MANAGER=yes")
    box.ok("start", "envdemo")
    pid = box.main_pid("envdemo")
    box.wait_for("/run/envdemo/env")
    assert box.active("envdemo") and box.show("envdemo")["SubState"] == "running"
    assert box.ids(pid) == ("65534", "65534")
    assert box.read("/run/envdemo/cwd") == "/tmp"
    env = dict(line.split("=", 1) for line in box.sh("cat /run/envdemo/env").splitlines() if "=" in line)
    assert env["FROM_UNIT"] == "unit" and env["SPACED"] == "two words" and env["FROM_FILE"] == "from the file"
    assert env["FROM_MANAGER"] == "yes" and env["USER"] == "nobody" and env["HOME"] == "/nonexistent"
    assert env["IMMUTABLE_INFRA_UNIT"] == "envdemo.service"
    box.ok("unset-environment", "FROM_MANAGER")
    assert len(box.owned_by("65534")) >= 2  # the main shell and its child shell (and their sleeps)
    box.ok("stop", "envdemo")
    # The main shell's child is stopped with it, though root may not read a process of another user's
    # environment (where the stand-in's marker is) in a container.
    assert not box.active("envdemo") and box.owned_by("65534") == []
    assert box.sh("test -e /run/envdemo && echo left || echo removed") == "removed"  # RuntimeDirectory goes


def test_simple_service_reloads_with_its_main_pid_and_restarts_as_a_new_process(box):
    box.ok("start", "simple")
    pid = box.main_pid("simple")
    assert box.alive(pid) and box.unit_processes("simple.service")
    box.ok("reload", "simple")  # ExecReload gets $MAINPID, as in systemd
    box.wait_for("/tmp/simple.reloads")
    assert box.main_pid("simple") == pid
    box.ok("restart", "simple")
    assert box.main_pid("simple") != pid and not box.alive(pid)
    box.ok("stop", "simple")
    assert not box.active("simple") and not box.unit_processes("simple.service")
    box.ok("try-restart", "simple")  # only a running unit is restarted
    assert not box.active("simple")
    box.ok("reload-or-try-restart", "simple")
    assert not box.active("simple")


def test_forking_service_is_followed_through_its_pid_file(box):
    box.ok("start", "forking")
    pid = box.main_pid("forking")
    assert int(box.read("/run/forking.pid")) == pid and box.alive(pid)
    box.ok("stop", "forking")
    assert not box.alive(pid) and box.read("/run/forking.pid") == ""


def test_notify_service_is_started_when_it_says_ready_on_a_real_socket(box):
    box.ok("start", "ready")
    # start returned after READY=1: the service wrote this just before it, half a second after starting
    socket_path = box.read("/tmp/ready.before")
    assert socket_path == f"{SERVICES}/ready.service.notify"
    assert box.sh(f"test -e {socket_path} && echo left || echo removed") == "removed"
    pid = box.main_pid("ready")
    assert box.read(f"/proc/{pid}/comm") == "python3" and box.ids(pid)[0] == "65534"
    box.ok("stop", "ready")
    assert not box.alive(pid)


def test_notify_service_that_exits_before_it_is_ready_fails_with_its_output(box):
    code, output = box.systemctl("start", "early-exit")
    assert code == 1
    assert "early-exit.service exited with code 3 before it was ready" in output
    assert "cannot open the data directory" in output
    assert not box.active("early-exit")


def test_oneshot_runs_its_commands_in_order_and_remains_after_exit(box):
    box.ok("start", "oneshot")
    assert box.read("/tmp/oneshot.log").splitlines() == ["pre", "start", "start again", "post"]
    assert box.active("oneshot") and box.show("oneshot")["SubState"] == "exited"
    box.ok("stop", "oneshot")
    assert box.read("/tmp/oneshot.log").splitlines()[-1] == "stop" and not box.active("oneshot")


def test_a_failing_start_command_fails_the_start_with_its_output(box):
    code, output = box.systemctl("start", "failing-pre")
    assert code == 1 and "exited with code 4" in output and "no config" in output
    assert not box.active("failing-pre") and not box.unit_processes("failing-pre.service")


def test_init_script_starts_and_stops_a_service_without_a_unit(box):
    box.ok("start", "legacy")
    assert box.active("legacy") and box.unit_processes("legacy.service")
    assert box.show("legacy")["SourcePath"] == "/etc/init.d/legacy"
    code, output = box.systemctl("is-enabled", "legacy")
    assert (code, output) == (1, "disabled")
    box.sh("mkdir -p /etc/rc2.d && ln -sf ../init.d/legacy /etc/rc2.d/S01legacy")
    assert box.ok("is-enabled", "legacy") == "enabled"
    box.ok("stop", "legacy")
    assert not box.active("legacy") and not box.unit_processes("legacy.service")


def test_a_unit_that_cannot_start_falls_back_to_its_init_script(box):
    box.ok("start", "fallback")
    assert box.active("fallback") and box.unit_processes("fallback.service")
    assert "starting fallback.service with /etc/init.d/fallback instead" in box.read(f"{SERVICES}/fallback.service.log")
    box.ok("stop", "fallback")  # the script has no stop: what is left of the unit is signalled
    assert not box.unit_processes("fallback.service")


def test_a_service_that_ignores_sigterm_is_killed_after_its_stop_timeout(box):
    box.ok("start", "stubborn")
    took = box.stop_within("stubborn")
    assert not box.unit_processes("stubborn.service")
    assert 2 <= took < 2 + 5, took  # waited TimeoutStopSec=2, then killed


def test_kill_signal_is_what_stop_sends(box):
    box.ok("start", "polite")
    took = box.stop_within("polite")
    assert box.read("/tmp/polite") == "interrupted" and not box.unit_processes("polite.service")
    assert took < 2, took  # it ignores TERM: only SIGINT stops it this soon


def test_enable_disable_mask_and_show_as_the_systemd_module_reads_them(box):
    assert box.systemctl("is-enabled", "toggle") == (1, "disabled")
    assert box.ok("is-enabled", "static") == "static"
    box.ok("enable", "toggle")
    assert box.sh("readlink /etc/systemd/system/multi-user.target.wants/toggle.service") == f"{UNITS}/toggle.service"
    assert box.sh("readlink /etc/systemd/system/toggle-alias.service") == f"{UNITS}/toggle.service"
    assert box.ok("is-enabled", "toggle") == "enabled"
    assert "toggle.service enabled" in box.ok("list-unit-files", "toggle*")
    box.ok("disable", "toggle")
    assert box.systemctl("is-enabled", "toggle") == (1, "disabled")
    box.ok("enable", "--now", "toggle")
    shown = box.show("toggle")
    assert shown["ActiveState"] == "active" and shown["UnitFileState"] == "enabled" and shown["LoadState"] == "loaded"
    assert shown["FragmentPath"] == f"{UNITS}/toggle.service" and shown["CanReload"] == "no"
    assert box.alive(int(shown["MainPID"]))
    box.ok("disable", "--now", "toggle")
    assert not box.active("toggle") and box.systemctl("is-enabled", "toggle") == (1, "disabled")
    box.ok("mask", "toggle")
    assert box.systemctl("is-enabled", "toggle") == (1, "masked") and box.show("toggle")["LoadState"] == "masked"
    code, output = box.systemctl("start", "toggle")
    assert code == 1 and "Unit toggle.service is masked." in output
    box.ok("unmask", "toggle")
    assert box.systemctl("is-enabled", "toggle") == (1, "disabled")


def test_a_unit_the_image_does_not_have(box):
    code, output = box.systemctl("restart", "nosuch")
    assert code == 0 and "nosuch.service is not installed; nothing to restart" in output
    assert box.systemctl("start", "nosuch")[0] == 0
    assert box.systemctl("is-active", "nosuch") == (3, "inactive")
    assert box.show("nosuch")["LoadState"] == "loaded"  # so the service module hands a restart to restart
    code, output = box.systemctl("enable", "nosuch")
    assert code == 1 and "Unit file nosuch.service does not exist." in output
    assert set(box.read("/run/immutable-infra-bake/absent").split()) == {"nosuch.service"}


def test_a_unit_started_outside_the_stand_in_is_left_alone(box):
    box.sh("mkdir -p /run/immutable-infra-bake/active && touch /run/immutable-infra-bake/active/outside")
    assert box.active("outside")
    for verb in ("start", "restart", "reload", "try-restart"):
        box.ok(verb, "outside")
    assert box.sh("test -e /tmp/outside.ran && echo ran || echo untouched") == "untouched"
    box.ok("stop", "outside")
    assert not box.active("outside")


def test_stop_all_stops_every_started_unit_newest_first_and_then_the_strays(box):
    for name in ("first", "second", "third", "first"):  # a restarted unit counts from its new start
        box.ok("restart", name)
    box.sh(f"setsid sh -c '{LOOP}' >/dev/null 2>&1 </dev/null &")  # a daemon started without systemctl
    assert box.processes()
    box.sh(": > /tmp/stop-order")
    box.ok("stop-all")
    assert box.read("/tmp/stop-order").split() == ["first", "third", "second"]
    assert box.processes() == []
    assert box.sh(f"ls {SERVICES}/*.service.json 2>/dev/null || true") == ""  # no unit counts as started


def test_finish_removes_the_stand_in_and_names_the_units_the_image_lacks(box):
    box.ok("start", "simple")
    box.ok("restart", "apache2")
    absent = builder.finish(box.client, box.id, [])
    assert "apache2.service" in absent and set(absent) <= {"apache2.service", "nosuch.service"}  # and nosuch's test
    assert box.processes() == []
    for path in (builder.SYSTEMCTL_PATH, builder.SYSTEMCTL_FALLBACK_PATH, "/usr/sbin/policy-rc.d",
                 "/run/immutable-infra-bake"):
        assert box.sh(f"test -e {path} || test -L {path} && echo left || echo removed") == "removed", path
