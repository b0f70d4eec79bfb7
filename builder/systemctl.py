# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The builder's systemctl: runs services for real while a bake runs, without an init system.

This program is not imported by the collection. The bake copies it into the builder as systemctl,
run by the builder's own Python (so it keeps to the standard library and to Python 3.6: annotations
from `typing`, nothing newer), and removes it before the commit. `start` runs the unit's
ExecStartPre/ExecStart/ExecStartPost as systemd would (Type simple, exec, forking, notify with a
real NOTIFY_SOCKET, oneshot; Environment, EnvironmentFile, User, Group, WorkingDirectory,
RuntimeDirectory, PIDFile), or the unit's /etc/init.d script when there is no unit file. Every
process of a unit carries IMMUTABLE_INFRA_UNIT=<unit> in its environment, which stands in for
systemd's cgroup: `stop` runs ExecStop, then signals what is left of the unit and waits for it.
`stop-all` (called by the bake before the commit) stops every unit started here, newest first, then
whatever else the roles left running.
"""

import glob
import grp
import json
import os
import pwd
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

STATE = "/run/immutable-infra-bake/services"
# A unit named here runs outside this stand-in (a verify host whose command started it): it counts
# as active and start, restart and reload leave it alone.
EXTERNAL = "/run/immutable-infra-bake/active"
# Units a role asked to start that the image does not have, one a line.
ABSENT = "/run/immutable-infra-bake/absent"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/lib/systemd/system", "/usr/lib/systemd/system")
# The bake recognises the stand-in by this word, and a unit's processes by it in their environment.
MARKER = "IMMUTABLE_INFRA_UNIT"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 90.0
# A unit that sets no TimeoutStopSec gets Docker's stop grace, not systemd's 90 s: a service that
# ignores SIGTERM must not hold every restart of a bake for a minute and a half.
STOP_TIMEOUT = 10.0
YES = ("yes", "true", "1", "on")
OPTIONS_WITH_VALUE = {"-p", "--property", "-t", "--type", "--state", "-H", "--host", "-M", "--machine",
                      "-o", "--output", "-n", "--lines", "--root", "--signal", "-s", "--job-mode", "--kill-whom"}
RESTART_VERBS = ("restart", "force-reload", "try-restart", "condrestart", "reload", "reload-or-restart",
                 "reload-or-try-restart", "try-reload-or-restart")
QUERY_VERBS = ("is-active", "is-failed", "status", "is-enabled", "show")

Section = Dict[str, List[str]]
State = Dict[str, Any]
Account = Tuple[Optional[pwd.struct_passwd], Optional[int]]


class Failed(Exception):
    pass


# units ---------------------------------------------------------------------------------------------
def unit_name(name: str) -> str:
    name = os.path.basename(name)
    return name if "." in name else name + ".service"


def short(name: str) -> str:
    return unit_name(name).rsplit(".", 1)[0]


def unit_file(name: str) -> Optional[str]:
    for directory in UNIT_DIRS:
        path = os.path.join(directory, unit_name(name))
        if os.path.exists(path) or os.path.islink(path):
            return path
    if "@" in name:  # an instance of a template unit
        prefix, _at, rest = unit_name(name).partition("@")
        for directory in UNIT_DIRS:
            path = os.path.join(directory, prefix + "@." + rest.rsplit(".", 1)[1])
            if os.path.exists(path):
                return path
    return None


def init_script(name: str) -> Optional[str]:
    path = "/etc/init.d/" + short(name)
    return path if os.access(path, os.X_OK) else None


def masked(name: str) -> bool:
    path = os.path.join("/etc/systemd/system", unit_name(name))
    return os.path.islink(path) and os.readlink(path) == "/dev/null"


def unit_and_drop_ins(path: str) -> List[str]:
    """The unit file, then its drop-ins (<unit>.d/*.conf beside it and in every unit directory)."""
    drop_ins = os.path.basename(path) + ".d"
    files = [path] + sorted(glob.glob(os.path.join(os.path.dirname(path), drop_ins, "*.conf")))
    for directory in UNIT_DIRS:
        files += sorted(glob.glob(os.path.join(directory, drop_ins, "*.conf")))
    return list(dict.fromkeys(files))


def parse_unit_text(text: str, sections: Dict[str, Section]) -> None:
    section = None  # type: Optional[Section]
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if value == "":
            section[key] = []  # an empty assignment resets the list, as in systemd
        else:
            section.setdefault(key, []).append(value)


def parse_unit(path: str) -> Dict[str, Section]:
    """The unit's sections as {section: {key: [values]}}, drop-ins applied."""
    sections = {}  # type: Dict[str, Section]
    for file in unit_and_drop_ins(path):
        try:
            with open(file, encoding="utf-8", errors="replace") as handle:
                parse_unit_text(handle.read(), sections)
        except OSError:
            continue
    return sections


class Unit:
    def __init__(self, name: str) -> None:
        self.name = unit_name(name)
        self.path = unit_file(name)
        self.script = init_script(name)
        self.sections = parse_unit(self.path) if self.path and not masked(name) else {}
        self.service = self.sections.get("Service", {})

    def get(self, key: str, default: str = "") -> str:
        values = self.service.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> List[str]:
        return self.service.get(key, [])

    @property
    def kind(self) -> str:
        return self.get("Type", "simple" if self.all("ExecStart") else "oneshot")

    def main_command(self) -> str:
        commands = self.all("ExecStart")
        if not commands:
            raise Failed(f"{self.name} has no ExecStart (Type={self.kind} needs one).")
        return commands[-1]

    def specifiers(self, text: str) -> str:
        prefix, _at, instance = self.name.rsplit(".", 1)[0].partition("@")
        table = {"n": self.name, "N": self.name.rsplit(".", 1)[0], "p": prefix, "i": instance, "I": instance,
                 "t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "h": "/root", "%": "%"}
        return re.sub(r"%(.)", lambda match: table.get(match.group(1), match.group(0)), text)


# state ---------------------------------------------------------------------------------------------
def state_path(name: str, suffix: str) -> str:
    return os.path.join(STATE, unit_name(name) + suffix)


def read_state(name: str) -> Optional[State]:
    try:
        with open(state_path(name, ".json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_state(name: str, data: State) -> None:
    os.makedirs(STATE, exist_ok=True)
    data["order"] = data.get("order") or time.time()
    with open(state_path(name, ".json"), "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def manager_environment() -> Dict[str, str]:
    try:
        with open(os.path.join(STATE, "environment.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def set_manager_environment(changes: Dict[str, str], remove: List[str]) -> None:
    os.makedirs(STATE, exist_ok=True)
    environment = manager_environment()
    environment.update(changes)
    for key in remove:
        environment.pop(key, None)
    with open(os.path.join(STATE, "environment.json"), "w", encoding="utf-8") as handle:
        json.dump(environment, handle)


def started_units() -> List[str]:
    """The units started here, newest first."""
    units = []
    for path in glob.glob(os.path.join(STATE, "*.json")):
        if os.path.basename(path) == "environment.json":
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                units.append((json.load(handle).get("order", 0), os.path.basename(path)[:-5]))
        except (OSError, ValueError):
            continue
    return [name for _order, name in sorted(units, reverse=True)]


# processes -----------------------------------------------------------------------------------------
def proc_stat(pid: int) -> List[str]:
    """The fields of /proc/<pid>/stat after the command name: state, parent, ..."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return bool(fields) and fields[0] != "Z"


def parent(pid: int) -> int:
    fields = proc_stat(pid)
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def pids() -> List[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def carries(pid: int, needle: bytes) -> Optional[bool]:
    """Whether the process's environment holds the marker; None when it may not be read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return needle in handle.read().split(b"\0") and alive(pid)
    except PermissionError:
        return None
    except OSError:
        return False  # gone


def owner(pid: int) -> Optional[Tuple[int, int]]:
    """The real user and group IDs of a process."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def carrying_as(ids: Tuple[int, int], candidates: List[int], needle: bytes) -> List[int]:
    """Which of another user's processes carry the marker. Root without CAP_SYS_PTRACE (a container's
    default) may not read their environment, so a child that has become their user reads it."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
            os.write(write_end, " ".join(str(pid) for pid in candidates if carries(pid, needle)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        found = answer.read().split()
    os.waitpid(child, 0)
    return [int(pid) for pid in found]


def unit_processes(name: str) -> List[int]:
    """Live processes that carry the unit's marker, as a cgroup would hold them."""
    needle = f"{MARKER}={unit_name(name)}".encode()
    found = []  # type: List[int]
    unreadable = {}  # type: Dict[Tuple[int, int], List[int]]
    for pid in pids():
        if pid in (1, os.getpid()):
            continue
        marked = carries(pid, needle)
        ids = owner(pid) if marked is None else None
        if marked:
            found.append(pid)
        elif ids:
            unreadable.setdefault(ids, []).append(pid)
    for ids, candidates in unreadable.items():
        found += carrying_as(ids, candidates, needle)
    return found


def send(pids_to_signal: List[int], number: int) -> None:
    for pid in pids_to_signal:
        try:
            os.kill(pid, number)
        except OSError:
            pass  # gone already


def read_pid_file(path: str) -> Optional[int]:
    try:
        with open(path, encoding="utf-8") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def external(name: str) -> bool:
    return read_state(name) is None and os.path.exists(os.path.join(EXTERNAL, short(name)))


def is_active(name: str) -> bool:
    if external(name):
        return True
    state = read_state(name)
    if not state:
        return False
    if state.get("remain"):
        return True
    if state.get("script"):
        return bool(unit_processes(name))
    pid = state.get("pid")
    return bool(pid and alive(pid)) or bool(unit_processes(name))


# running a unit's commands -------------------------------------------------------------------------
def account(unit: Unit) -> Account:
    user, group = unit.get("User"), unit.get("Group")
    entry = None
    if user:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise Failed(f"{unit.name}: User={user} does not exist") from None
    gid = None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise Failed(f"{unit.name}: Group={group} does not exist") from None
    elif entry:
        gid = entry.pw_gid
    return entry, gid


def environment_file(unit: Unit, file: str) -> Dict[str, str]:
    """The assignments of an EnvironmentFile (a leading '-' makes it optional; globs allowed)."""
    optional = file.startswith("-")
    file = unit.specifiers(file.lstrip("-"))
    values = {}  # type: Dict[str, str]
    for path in sorted(glob.glob(file)) or [file]:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().replace("\\\n", "").splitlines()
        except OSError:
            if optional:
                continue
            raise Failed(f"{unit.name}: EnvironmentFile {path} cannot be read") from None
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            words = shlex.split(value) if value.strip() else [""]
            values[key.strip()] = " ".join(words)
    return values


def environment(unit: Unit, entry: Optional[pwd.struct_passwd]) -> Dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update(manager_environment())
    for assignment in unit.all("Environment"):
        for word in shlex.split(unit.specifiers(assignment)):
            if "=" in word:
                key, value = word.split("=", 1)
                env[key] = value
    for file in unit.all("EnvironmentFile"):
        env.update(environment_file(unit, file))
    if entry:
        env.update(USER=entry.pw_name, LOGNAME=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell)
    env[MARKER] = unit.name
    return env


def expand(unit: Unit, line: str, env: Dict[str, str]) -> Tuple[str, List[str]]:
    """An Exec line as argv: specifiers, then $VAR as words and ${VAR} inside words, as systemd does."""
    flags = ""
    while line and line[0] in "-@+!:":
        flags += line[0]
        line = line[1:]
    argv = []  # type: List[str]
    for word in shlex.split(unit.specifiers(line)):
        whole = re.match(r"^\$([A-Za-z_][A-Za-z0-9_]*)$", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda match: env.get(match.group(1), ""), word)
                    .replace("$$", "$"))
    if "@" in flags and len(argv) > 1:
        argv = [argv[0]] + argv[2:]  # the second word is argv[0]; exec needs the path only
    return flags, argv


def working_directory(unit: Unit, entry: Optional[pwd.struct_passwd]) -> str:
    workdir = unit.get("WorkingDirectory")
    optional = workdir.startswith("-")
    workdir = workdir.lstrip("-")
    if workdir == "~":
        workdir = entry.pw_dir if entry else "/root"
    if not workdir or (optional and not os.path.isdir(workdir)):
        return "/"
    return workdir


def log_tail(name: str) -> str:
    try:
        with open(state_path(name, ".log"), encoding="utf-8", errors="replace") as handle:
            return handle.read()[-1500:]
    except OSError:
        return ""


class Runner:
    """What every command of one unit runs with: its account, environment, directory and log."""

    def __init__(self, unit: Unit, log: IO[bytes]) -> None:
        self.unit = unit
        self.log = log
        self.entry, self.gid = account(unit)
        self.env = environment(unit, self.entry)
        # PermissionsStartOnly: the commands around ExecStart run as root, ExecStart as User=.
        self.privileged = unit.get("PermissionsStartOnly") in YES

    def run(self, line: str, wait: bool, as_root: bool = False,
            extra_env: Optional[Dict[str, str]] = None) -> "Optional[subprocess.Popen[bytes]]":
        """Starts an Exec line; with wait, waits for it and fails on a non-zero exit unless it has '-'."""
        env = dict(self.env, **(extra_env or {}))  # $MAINPID in ExecReload and ExecStop lines, as in systemd
        flags, argv = expand(self.unit, line, env)
        if not argv:
            return None
        child_setup = self.child_setup(as_root or "+" in flags or "!" in flags)
        try:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                       cwd=working_directory(self.unit, self.entry), stdout=self.log, stderr=self.log,
                                       preexec_fn=child_setup, close_fds=True)  # ruff: ignore[subprocess-popen-preexec-fn] (no threads here)
        except OSError as error:
            raise Failed(f"{self.unit.name}: cannot run {argv[0]}: {error}") from None
        if wait:
            code = process.wait()
            if code != 0 and "-" not in flags:
                raise Failed(f"{self.unit.name}: {' '.join(argv)} exited with code {code}:\n{log_tail(self.unit.name)}")
        return process

    def run_each(self, key: str, as_root: bool = False, extra_env: Optional[Dict[str, str]] = None,
                 check: bool = True) -> None:
        """Runs every line of an Exec setting in turn; without check, a failure does not stop the rest."""
        for line in self.unit.all(key):
            try:
                self.run(line, wait=True, as_root=as_root, extra_env=extra_env)
            except Failed:
                if check:
                    raise

    def child_setup(self, as_root: bool) -> Callable[[], None]:
        umask, entry, gid = self.unit.get("UMask"), self.entry, self.gid

        def become() -> None:
            os.setsid()
            if umask:
                os.umask(int(umask, 8))
            if as_root:
                return
            if entry:
                os.initgroups(entry.pw_name, gid if gid is not None else entry.pw_gid)
            if gid is not None:
                os.setgid(gid)
            if entry:
                os.setuid(entry.pw_uid)
        return become


def seconds(value: str, default: float) -> float:
    value = (value or "").strip()
    if not value:
        return default
    if value in ("infinity", "0"):
        return STOP_TIMEOUT * 10
    total, matched = 0.0, False
    for number, unit in re.findall(r"([0-9.]+)\s*(ms|min|s|m|h)?", value):
        matched = True
        total += float(number) * {"ms": 0.001, "min": 60, "m": 60, "h": 3600}.get(unit, 1)
    return total if matched else default


def make_runtime_directories(unit: Unit, entry: Optional[pwd.struct_passwd], gid: Optional[int]) -> List[str]:
    """Makes RuntimeDirectory, StateDirectory, CacheDirectory and LogsDirectory; returns the runtime ones."""
    made = []
    mode = int(unit.get("RuntimeDirectoryMode", "0755"), 8)
    for key, root in (("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache"),
                      ("LogsDirectory", "/var/log")):
        for value in unit.all(key):
            for name in value.split():
                path = os.path.join(root, unit.specifiers(name))
                os.makedirs(path, exist_ok=True)
                if key == "RuntimeDirectory":
                    os.chmod(path, mode)
                    made.append(path)
                if entry:
                    os.chown(path, entry.pw_uid, gid if gid is not None else entry.pw_gid)
    return made


# start ---------------------------------------------------------------------------------------------
def record_absent(name: str) -> None:
    os.makedirs(os.path.dirname(ABSENT), exist_ok=True)
    with open(ABSENT, "a", encoding="utf-8") as record:
        record.write(name + "\n")


def start(name: str) -> None:
    if is_active(name):
        return
    unit = Unit(name)
    if masked(name):
        raise Failed(f"Unit {unit.name} is masked.")
    if not unit.path and not unit.script:
        # Ansible's systemd module turns a handler's restart of a stopped service into a start, so a
        # start of a service the image does not have (php's handler restarts apache2) has nothing to
        # do either. It is recorded, and the bake names it in a warning.
        sys.stderr.write(f"{unit.name} is not installed; nothing to start\n")
        record_absent(unit.name)
        return
    os.makedirs(STATE, exist_ok=True)
    with open(state_path(name, ".log"), "ab") as log:
        if unit.path:
            try:
                start_unit(unit, log)
                return
            except Failed as error:
                if not unit.script:
                    raise
                undo_failed_start(unit, error, log)
        start_script(unit, log)


def undo_failed_start(unit: Unit, error: Failed, log: IO[bytes]) -> None:
    """Clears a unit that could not start, before its init script (Debian's supported way to run it
    without systemd) is tried."""
    log.write(f"{error}\nstarting {unit.name} with {unit.script} instead\n".encode())
    log.flush()
    send(unit_processes(unit.name), signal.SIGKILL)
    if os.path.exists(state_path(unit.name, ".json")):
        os.unlink(state_path(unit.name, ".json"))


def run_script(script: str, action: str, unit: Unit, log: IO[bytes]) -> int:
    env = {"PATH": DEFAULT_PATH, "_SYSTEMCTL_SKIP_REDIRECT": "1", MARKER: unit.name}
    return subprocess.call([script, action], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                           close_fds=True)


def start_script(unit: Unit, log: IO[bytes]) -> None:
    script = unit.script or ""
    code = run_script(script, "start", unit, log)
    if code != 0:
        raise Failed(f"{script} start exited with code {code}:\n{log_tail(unit.name)}")
    write_state(unit.name, {"script": script})


def start_unit(unit: Unit, log: IO[bytes]) -> None:
    runner = Runner(unit, log)
    state = {"runtime": make_runtime_directories(unit, runner.entry, runner.gid),
             "pid_file": unit.specifiers(unit.get("PIDFile")) or None}  # type: State
    runner.run_each("ExecStartPre", as_root=runner.privileged)
    timeout = seconds(unit.get("TimeoutStartSec") or unit.get("TimeoutSec"), START_TIMEOUT)
    kind = unit.kind
    if kind == "oneshot":
        runner.run_each("ExecStart")
        state["remain"] = unit.get("RemainAfterExit") in YES
    elif kind == "forking":
        state["pid"] = start_forking(runner, state["pid_file"], timeout)
    elif kind == "notify":
        state["pid"] = start_notify(runner, timeout)
    else:
        state["pid"] = start_simple(runner)
    write_state(unit.name, state)
    runner.run_each("ExecStartPost", as_root=runner.privileged, extra_env={"MAINPID": str(state.get("pid") or "")})


def start_simple(runner: Runner) -> Optional[int]:
    """Type=simple and exec: systemd does not wait for them; this only catches one that dies at once."""
    process = runner.run(runner.unit.main_command(), wait=False)
    if process is None:
        return None
    time.sleep(0.1)
    if process.poll() not in (None, 0):
        raise Failed(f"{runner.unit.name} exited with code {process.returncode} at start:\n{log_tail(runner.unit.name)}")
    return process.pid


def start_forking(runner: Runner, pid_file: Optional[str], timeout: float) -> Optional[int]:
    """Type=forking: waits for ExecStart to return (the daemon has detached), then reads its PIDFile."""
    name = runner.unit.name
    process = runner.run(runner.unit.main_command(), wait=False)
    if process is None:
        return None
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"{name}: ExecStart did not return within {timeout:.0f} s") from None
    if code != 0:
        raise Failed(f"{name}: ExecStart exited with code {code}:\n{log_tail(name)}")
    deadline = time.monotonic() + min(timeout, 10)
    pid = None
    while pid_file and pid is None and time.monotonic() < deadline:
        pid = read_pid_file(pid_file)
        if pid is None:
            time.sleep(0.05)
    return pid


def start_notify(runner: Runner, timeout: float) -> int:
    """Type=notify: starts the service and waits for its READY=1 on a real notification socket."""
    name = runner.unit.name
    path = state_path(name, ".notify")
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    os.chmod(path, 0o777)  # the service may run as another user
    try:
        process = runner.run(runner.unit.main_command(), wait=False, extra_env={"NOTIFY_SOCKET": path})
        if process is None:
            raise Failed(f"{name}: ExecStart is empty")
        main_pid = process.pid
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise Failed(f"{name} exited with code {process.returncode} before it was ready:\n{log_tail(name)}")
            if time.monotonic() > deadline:
                raise Failed(f"{name} was not ready within {timeout:.0f} s")
            if not select.select([listener], [], [], 0.2)[0]:
                continue
            message = listener.recv(4096).decode(errors="replace").split("\n")
            for field in message:
                if field.startswith("MAINPID=") and field[8:].isdigit():
                    main_pid = int(field[8:])
            if "READY=1" in message:
                return main_pid
    finally:
        listener.close()
        os.unlink(path)


# stop ----------------------------------------------------------------------------------------------
def stop(name: str) -> None:
    if external(name):
        os.unlink(os.path.join(EXTERNAL, short(name)))
        return
    state = read_state(name)
    if state is None:
        return
    unit = Unit(name)
    with open(state_path(name, ".log"), "ab") as log:
        runner = None if state.get("script") else Runner(unit, log)
        if runner is None:
            run_script(state["script"], "stop", unit, log)
        elif is_active(name):
            # as in systemd, a failed ExecStop does not stop the rest: what is left is signalled next
            runner.run_each("ExecStop", as_root=runner.privileged, extra_env={"MAINPID": str(state.get("pid") or "")},
                            check=False)
        end_processes(unit, state.get("pid"))
        if runner is not None:
            runner.run_each("ExecStopPost", check=False)
    forget(name, state)


def signal_number(value: str) -> int:
    """A KillSignal value (SIGTERM, TERM or 15) as a number; SIGTERM when it names none."""
    if value.isdigit():
        return int(value)
    found = getattr(signal, value if value.startswith("SIG") else "SIG" + value, signal.SIGTERM)
    return int(found)


def end_processes(unit: Unit, main: Optional[int]) -> None:
    """Sends KillSignal to what is left of the unit (only its main process with KillMode=mixed),
    and kills what is still there once TimeoutStopSec has passed."""
    timeout = seconds(unit.get("TimeoutStopSec") or unit.get("TimeoutSec"), STOP_TIMEOUT)
    deadline = time.monotonic() + timeout
    signalled = False
    while True:
        left = unit_processes(unit.name)
        if main and alive(main) and main not in left:
            left.append(main)
        if not left:
            return
        if not signalled:
            main_only = unit.get("KillMode") == "mixed" and main in left
            send([main] if main and main_only else left, signal_number(unit.get("KillSignal", "SIGTERM")))
            signalled = True
        if time.monotonic() > deadline:
            send(left, signal.SIGKILL)
        time.sleep(0.05)


def forget(name: str, state: State) -> None:
    """Removes what a stopped unit leaves: its pid file, runtime directories and state."""
    pid_file = state.get("pid_file")
    if pid_file and os.path.exists(pid_file):
        os.unlink(pid_file)
    for path in state.get("runtime") or []:
        subprocess.call(["rm", "-rf", path])
    os.unlink(state_path(name, ".json"))


def sweep() -> None:
    """Stops what else the roles left running (daemons started without systemctl): TERM, then KILL."""
    keep, pid = {1}, os.getpid()
    while pid:
        keep.add(pid)
        pid = parent(pid)

    def strays() -> List[int]:
        return [pid for pid in pids()
                if pid not in keep and alive(pid) and not (parent(pid) == 1 and command_name(pid) == "sleep")]

    deadline, signalled = time.monotonic() + STOP_TIMEOUT / 3, False
    while True:
        left = strays()
        if not left:
            return
        if time.monotonic() > deadline:
            send(left, signal.SIGKILL)
        elif not signalled:
            send(left, signal.SIGTERM)
            signalled = True
        time.sleep(0.05)


def stop_all(_names: List[str]) -> None:
    for name in started_units():
        stop(name)
    sweep()


# other verbs ---------------------------------------------------------------------------------------
def restart(name: str) -> None:
    if external(name):
        return
    stop(name)
    start(name)


def try_restart(name: str) -> None:
    if is_active(name):
        restart(name)


def reload(name: str) -> None:
    if external(name):
        return
    state = read_state(name)
    if not state or not is_active(name):
        start(name)
        return
    unit = Unit(name)
    if not unit.all("ExecReload"):
        restart(name)
        return
    with open(state_path(name, ".log"), "ab") as log:
        Runner(unit, log).run_each("ExecReload", extra_env={"MAINPID": str(state.get("pid") or "")})


def try_reload(name: str) -> None:
    if is_active(name):
        reload(name)


def wanted_by(unit: Unit) -> List[str]:
    install = unit.sections.get("Install", {})
    return [target for value in install.get("WantedBy", []) + install.get("RequiredBy", []) for target in value.split()]


def link(target: str, path: str) -> None:
    if not os.path.lexists(path):
        os.symlink(target, path)


def enable(name: str) -> None:
    unit = Unit(name)
    if not unit.path and not unit.script:
        raise Failed(f"Unit file {unit.name} does not exist.")
    # A unit with only an init script is enabled by its rc links, which update-rc.d (run by the
    # package's postinst) has made; update-rc.d itself calls systemctl, so it is not called from here.
    if not unit.path:
        return
    for target in wanted_by(unit):
        os.makedirs(f"/etc/systemd/system/{target}.wants", exist_ok=True)
        link(unit.path, os.path.join(f"/etc/systemd/system/{target}.wants", unit.name))
    for alias in unit.sections.get("Install", {}).get("Alias", []):
        for word in alias.split():
            link(unit.path, os.path.join("/etc/systemd/system", word))


def enablement_links(name: str) -> List[str]:
    return glob.glob("/etc/systemd/system/*.wants/" + name) + glob.glob("/etc/systemd/system/*.requires/" + name)


def disable(name: str) -> None:
    for path in enablement_links(unit_name(name)):
        os.unlink(path)


def mask(name: str) -> None:
    os.makedirs("/etc/systemd/system", exist_ok=True)
    link("/dev/null", os.path.join("/etc/systemd/system", unit_name(name)))


def unmask(name: str) -> None:
    if masked(name):
        os.unlink(os.path.join("/etc/systemd/system", unit_name(name)))


def kill(name: str) -> None:
    send(unit_processes(name), signal.SIGTERM)


def enabled_state(name: str) -> Tuple[str, int]:
    """What is-enabled prints for the unit, and its exit code."""
    unit = Unit(name)
    if masked(name):
        return "masked", 1
    if unit.path:
        if enablement_links(unit.name):
            return "enabled", 0
        if not unit.sections.get("Install"):
            return "static", 0
        return "disabled", 1
    if unit.script:
        if glob.glob("/etc/rc[2345].d/S??" + short(name)):
            return "enabled", 0
        return "disabled", 1
    return "not-found", 1


def show(name: str) -> str:
    unit = Unit(name)
    active = is_active(name)
    state = read_state(name) or {}
    # A unit that is not installed shows as loaded, so that the service module hands a restart of it
    # to restart (a no-op) instead of failing; start and enable of it still fail.
    lines = ["Id=" + unit.name, "Names=" + unit.name, "Type=" + (unit.kind if unit.path else "forking"),
             "LoadState=" + ("masked" if masked(name) else "loaded"),
             "ActiveState=" + ("active" if active else "inactive"),
             "SubState=" + (("exited" if state.get("remain") else "running") if active else "dead"),
             "UnitFileState=" + (enabled_state(name)[0] if unit.path or unit.script else ""),
             "MainPID=" + str(state.get("pid") or 0 if active else 0),
             "FragmentPath=" + (unit.path or ""), "SourcePath=" + (unit.script or ""),
             "CanStart=yes", "CanStop=yes", "CanReload=" + ("yes" if unit.all("ExecReload") else "no")]
    lines += [f"{key}={values[-1]}" for key, values in unit.service.items() if key != "Type" and values]
    return "\n".join(lines)


def query(verb: str, names: List[str]) -> int:
    """is-active, is-failed, status, is-enabled and show: prints the answer, returns the exit code."""
    code = 0
    for name in names:
        if verb == "show":
            print(show(name))
        elif verb == "is-enabled":
            answer, failed = enabled_state(name)
            print(answer)
            code = code or failed
        elif verb == "is-failed":
            print("inactive")
            code = 1
        else:
            active = is_active(name)
            print((f"{unit_name(name)}: " if verb == "status" else "") + ("active" if active else "inactive"))
            code = code or (0 if active else 3)
    return code


def list_unit_files(patterns: List[str]) -> None:
    for pattern in patterns or ["*"]:
        for directory in UNIT_DIRS:
            for path in sorted(glob.glob(os.path.join(directory, pattern))):
                print(f"{os.path.basename(path)} {enabled_state(os.path.basename(path))[0]}")


def set_environment(words: List[str]) -> None:
    set_manager_environment(dict(word.split("=", 1) for word in words if "=" in word), remove=[])


def unset_environment(words: List[str]) -> None:
    set_manager_environment({}, remove=[word.split("=", 1)[0] for word in words])


# Verbs about the manager, given all their words; verbs about units are given one unit at a time.
MANAGER_VERBS = {"set-environment": set_environment, "unset-environment": unset_environment,
                 "stop-all": stop_all, "list-unit-files": list_unit_files}  # type: Dict[str, Callable[[List[str]], None]]
UNIT_VERBS = {"start": start, "stop": stop, "restart": restart, "force-reload": restart, "try-restart": try_restart,
              "condrestart": try_restart, "reload": reload, "reload-or-restart": reload,
              "reload-or-try-restart": try_reload, "try-reload-or-restart": try_reload,
              "mask": mask, "unmask": unmask, "kill": kill}  # type: Dict[str, Callable[[str], None]]


def act(verb: str, name: str, now: bool) -> None:
    if verb in RESTART_VERBS and not unit_file(name) and not init_script(name):
        # A handler restarting a service this image does not have: nothing runs, nothing to do.
        sys.stderr.write(f"{unit_name(name)} is not installed; nothing to {verb}\n")
        record_absent(unit_name(name))
    elif verb in ("enable", "reenable"):
        enable(name)
        if now:
            start(name)
    elif verb == "disable":
        disable(name)
        if now:
            stop(name)
    elif verb in UNIT_VERBS:
        UNIT_VERBS[verb](name)
    # daemon-reload, preset, reset-failed and the like have nothing to do here


def words_of(argv: List[str]) -> List[str]:
    """The verb and unit names, without the options (and the values of those that take one)."""
    words, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def main(argv: List[str]) -> int:
    words = words_of(argv)
    if not words:
        return 0
    verb, names = words[0], words[1:]
    try:
        if verb in QUERY_VERBS:
            return query(verb, names)
        if verb in MANAGER_VERBS:
            MANAGER_VERBS[verb](names)
            return 0
        for name in names:
            act(verb, name, now="--now" in argv)
    except Failed as error:
        sys.stderr.write(f"{error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
