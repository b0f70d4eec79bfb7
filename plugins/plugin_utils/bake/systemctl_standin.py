# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The builder's systemctl: runs services for real while a bake runs, without an init system.

This file is not imported by the collection. The bake copies it into the builder as systemctl (run
by the builder's Python, so it is kept to the standard library and Python 3.6) and removes it
before the commit. `start` runs the unit's ExecStartPre/ExecStart/ExecStartPost as systemd would
(Type simple, exec, forking, notify with a real NOTIFY_SOCKET, oneshot; Environment,
EnvironmentFile, User, Group, WorkingDirectory, RuntimeDirectory, PIDFile), or the unit's
/etc/init.d script when there is no unit file. Every process of a unit carries
IMMUTABLE_INFRA_UNIT=<unit> in its environment, which stands in for systemd's cgroup: `stop` runs
ExecStop, then signals what is left of the unit and waits for it. `stop-all` (called by the bake
before the commit) stops every unit started here, newest first.
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

STATE = "/run/immutable-infra-bake/services"
# A unit named here runs outside this stand-in (a verify host whose command started it): it counts
# as active and start, restart and reload leave it alone.
EXTERNAL = "/run/immutable-infra-bake/active"
# Units a role asked to start that the image does not have, one a line.
ABSENT = "/run/immutable-infra-bake/absent"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/lib/systemd/system", "/usr/lib/systemd/system")
MARKER = "IMMUTABLE_INFRA_UNIT"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 90.0
# A unit that sets no TimeoutStopSec gets Docker's stop grace, not systemd's 90 s: a service that
# ignores SIGTERM must not hold every restart of a bake for a minute and a half.
STOP_TIMEOUT = 10.0
OPTIONS_WITH_VALUE = {"-p", "--property", "-t", "--type", "--state", "-H", "--host", "-M", "--machine",
                      "-o", "--output", "-n", "--lines", "--root", "--signal", "-s", "--job-mode", "--kill-whom"}


RESTART_VERBS = ("restart", "force-reload", "try-restart", "condrestart", "reload", "reload-or-restart",
                 "reload-or-try-restart", "try-reload-or-restart")


class Failed(Exception):
    pass


# units ---------------------------------------------------------------------------------------------
def unit_name(name):
    name = os.path.basename(name)
    return name if "." in name else name + ".service"


def short(name):
    return unit_name(name).rsplit(".", 1)[0]


def unit_file(name):
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


def init_script(name):
    path = "/etc/init.d/" + short(name)
    return path if os.access(path, os.X_OK) else None


def masked(name):
    path = os.path.join("/etc/systemd/system", unit_name(name))
    return os.path.islink(path) and os.readlink(path) == "/dev/null"


def parse_unit(path):
    """The unit's sections as {section: {key: [values]}}, drop-ins (<unit>.d/*.conf) applied."""
    sections: dict = {}
    files = [path] + sorted(glob.glob(os.path.join(os.path.dirname(path), os.path.basename(path) + ".d", "*.conf")))
    for directory in UNIT_DIRS:
        files += sorted(glob.glob(os.path.join(directory, os.path.basename(path) + ".d", "*.conf")))
    for file in dict.fromkeys(files):
        try:
            with open(file, encoding="utf-8", errors="replace") as handle:
                text = handle.read().replace("\\\n", " ")
        except OSError:
            continue
        section = None
        for line in text.splitlines():
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
    return sections


class Unit:
    def __init__(self, name):
        self.name = unit_name(name)
        self.path = unit_file(name)
        self.script = init_script(name)
        self.sections = parse_unit(self.path) if self.path and not masked(name) else {}
        self.service = self.sections.get("Service", {})

    def get(self, key, default=""):
        values = self.service.get(key)
        return values[-1] if values else default

    def all(self, key):
        return self.service.get(key, [])

    @property
    def kind(self):
        return self.get("Type", "simple" if self.all("ExecStart") else "oneshot")

    def specifiers(self, text):
        prefix, _at, instance = self.name.rsplit(".", 1)[0].partition("@")
        table = {"n": self.name, "N": self.name.rsplit(".", 1)[0], "p": prefix, "i": instance, "I": instance,
                 "t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "h": "/root", "%": "%"}
        return re.sub(r"%(.)", lambda match: table.get(match.group(1), match.group(0)), text)


# state ---------------------------------------------------------------------------------------------
def state_path(name, suffix):
    return os.path.join(STATE, unit_name(name) + suffix)


def read_state(name):
    try:
        with open(state_path(name, ".json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_state(name, data):
    os.makedirs(STATE, exist_ok=True)
    data["order"] = data.get("order") or time.time()
    with open(state_path(name, ".json"), "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def manager_environment():
    try:
        with open(os.path.join(STATE, "environment.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def set_manager_environment(changes, remove=()):
    os.makedirs(STATE, exist_ok=True)
    environment = manager_environment()
    environment.update(changes)
    for key in remove:
        environment.pop(key, None)
    with open(os.path.join(STATE, "environment.json"), "w", encoding="utf-8") as handle:
        json.dump(environment, handle)


# processes -----------------------------------------------------------------------------------------
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def unit_processes(name):
    """Live processes that carry the unit's marker, as a cgroup would hold them."""
    needle = (f"{MARKER}={unit_name(name)}").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def read_pid_file(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def external(name):
    return read_state(name) is None and os.path.exists(os.path.join(EXTERNAL, short(name)))


def is_active(name):
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


# running commands ----------------------------------------------------------------------------------
def account(unit):
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


def environment(unit, entry):
    env = {"PATH": DEFAULT_PATH, "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update(manager_environment())
    for assignment in unit.all("Environment"):
        for word in shlex.split(unit.specifiers(assignment)):
            if "=" in word:
                key, value = word.split("=", 1)
                env[key] = value
    for file in unit.all("EnvironmentFile"):
        optional = file.startswith("-")
        file = unit.specifiers(file.lstrip("-"))
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
                env[key.strip()] = " ".join(words)
    if entry:
        env.update(USER=entry.pw_name, LOGNAME=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell)
    env[MARKER] = unit.name
    return env


def expand(unit, line, env):
    """An Exec line as argv: specifiers, then $VAR as words and ${VAR} inside words, as systemd does."""
    flags = ""
    while line and line[0] in "-@+!:":
        flags += line[0]
        line = line[1:]
    argv = []
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


def spawn(unit, line, env, entry, gid, privileged, log, wait, extra_env=None):
    flags, argv = expand(unit, line, env)
    if not argv:
        return None
    as_root = "+" in flags or "!" in flags or privileged
    env = dict(env, **(extra_env or {}))
    workdir = unit.get("WorkingDirectory")
    optional_dir = workdir.startswith("-")
    workdir = workdir.lstrip("-")
    if workdir == "~":
        workdir = entry.pw_dir if entry else "/root"
    if not workdir or (optional_dir and not os.path.isdir(workdir)):
        workdir = "/"
    umask = unit.get("UMask")

    def become():
        os.setsid()
        if umask:
            os.umask(int(umask, 8))
        if entry and not as_root:
            os.initgroups(entry.pw_name, gid if gid is not None else entry.pw_gid)
        if gid is not None and not as_root:
            os.setgid(gid)
        if entry and not as_root:
            os.setuid(entry.pw_uid)

    try:
        process = subprocess.Popen(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   preexec_fn=become, close_fds=True)  # ruff: ignore[subprocess-popen-preexec-fn] (no threads here)
    except OSError as error:
        raise Failed(f"{unit.name}: cannot run {argv[0]}: {error}") from None
    if wait:
        code = process.wait()
        if code != 0 and "-" not in flags:
            raise Failed(f"{unit.name}: {' '.join(argv)} exited with code {code}:\n{log_tail(unit.name)}")
    return process


def log_tail(name):
    try:
        with open(state_path(name, ".log"), encoding="utf-8", errors="replace") as handle:
            return handle.read()[-1500:]
    except OSError:
        return ""


def seconds(value, default):
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


def make_runtime_directories(unit, entry, gid):
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


# verbs ---------------------------------------------------------------------------------------------
def record_absent(name):
    os.makedirs(os.path.dirname(ABSENT), exist_ok=True)
    with open(ABSENT, "a", encoding="utf-8") as record:
        record.write(name + "\n")


def start(name):
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
    log = open(state_path(name, ".log"), "ab")
    if unit.path:
        try:
            start_unit(unit, name, log)
            return
        except Failed as error:
            if not unit.script:
                raise
            # The package's init script is Debian's supported way to run it without systemd.
            log.write(f"{error}\nstarting {unit.name} with {unit.script} instead\n".encode())
            log.flush()
            for pid in unit_processes(name):
                os.kill(pid, signal.SIGKILL)
            if os.path.exists(state_path(name, ".json")):
                os.unlink(state_path(name, ".json"))
    env = {"PATH": DEFAULT_PATH, "_SYSTEMCTL_SKIP_REDIRECT": "1", MARKER: unit.name}
    code = subprocess.call([unit.script, "start"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                           close_fds=True)
    if code != 0:
        raise Failed(f"{unit.script} start exited with code {code}:\n{log_tail(name)}")
    write_state(name, {"script": unit.script})


def start_unit(unit, name, log):
    entry, gid = account(unit)
    env = environment(unit, entry)
    privileged = unit.get("PermissionsStartOnly") in ("yes", "true", "1")
    runtime = make_runtime_directories(unit, entry, gid)
    state = {"runtime": runtime, "pid_file": unit.specifiers(unit.get("PIDFile")) or None}
    for line in unit.all("ExecStartPre"):
        spawn(unit, line, env, entry, gid, privileged, log, wait=True)
    kind = unit.kind
    timeout = seconds(unit.get("TimeoutStartSec") or unit.get("TimeoutSec"), START_TIMEOUT)
    if kind == "oneshot":
        for line in unit.all("ExecStart"):
            spawn(unit, line, env, entry, gid, False, log, wait=True)
        state["remain"] = unit.get("RemainAfterExit") in ("yes", "true", "1")
    elif kind == "forking":
        process = spawn(unit, unit.all("ExecStart")[-1], env, entry, gid, False, log, wait=False)
        if process is not None:
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise Failed(f"{unit.name}: ExecStart did not return within {timeout:.0f} s") from None
            if code != 0:
                raise Failed(f"{unit.name}: ExecStart exited with code {code}:\n{log_tail(name)}")
            deadline = time.monotonic() + min(timeout, 10)
            pid = None
            while state["pid_file"] and pid is None and time.monotonic() < deadline:
                pid = read_pid_file(state["pid_file"])
                if pid is None:
                    time.sleep(0.05)
            state["pid"] = pid
    elif kind == "notify":
        state["pid"] = notify_start(unit, env, entry, gid, log, timeout)
    else:
        process = spawn(unit, unit.all("ExecStart")[-1], env, entry, gid, False, log, wait=False)
        state["pid"] = process.pid if process else None
        time.sleep(0.1)  # systemd does not wait for a simple service; this only catches one that dies at once
        if process is not None and process.poll() not in (None, 0):
            raise Failed(f"{unit.name} exited with code {process.returncode} at start:\n{log_tail(name)}")
    write_state(name, state)
    extra = {"MAINPID": str(state.get("pid") or "")}
    for line in unit.all("ExecStartPost"):
        spawn(unit, line, env, entry, gid, privileged, log, wait=True, extra_env=extra)


def notify_start(unit, env, entry, gid, log, timeout):
    """Starts a Type=notify service and waits for its READY=1 on a real notification socket."""
    path = state_path(unit.name, ".notify")
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    os.chmod(path, 0o777)
    try:
        process = spawn(unit, unit.all("ExecStart")[-1], env, entry, gid, False, log, wait=False,
                        extra_env={"NOTIFY_SOCKET": path})
        main_pid = process.pid
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise Failed(f"{unit.name} exited with code {process.returncode} before it was ready:\n"
                             f"{log_tail(unit.name)}")
            if time.monotonic() > deadline:
                raise Failed(f"{unit.name} was not ready within {timeout:.0f} s")
            readable = select.select([listener], [], [], 0.2)[0]
            if not readable:
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


def stop(name):
    if external(name):
        os.unlink(os.path.join(EXTERNAL, short(name)))
        return
    state = read_state(name)
    unit = Unit(name)
    if state is None:
        return
    log = open(state_path(name, ".log"), "ab")
    if state.get("script"):
        subprocess.call([state["script"], "stop"], env={"PATH": DEFAULT_PATH, "_SYSTEMCTL_SKIP_REDIRECT": "1"},
                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True)
    else:
        entry, gid = account(unit)
        env = environment(unit, entry)
        privileged = unit.get("PermissionsStartOnly") in ("yes", "true", "1")
        extra = {"MAINPID": str(state.get("pid") or "")}
        if is_active(name):
            for line in unit.all("ExecStop"):
                try:
                    spawn(unit, line, env, entry, gid, privileged, log, wait=True, extra_env=extra)
                except Failed:
                    pass  # as in systemd, what is left is signalled next
    timeout = seconds(unit.get("TimeoutStopSec") or unit.get("TimeoutSec"), STOP_TIMEOUT)
    stop_signal = getattr(signal, unit.get("KillSignal", "SIGTERM"), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    signalled = False
    while True:
        pids = unit_processes(name)
        main = state.get("pid")
        if main and alive(main) and main not in pids:
            pids.append(main)
        if not pids:
            break
        if not signalled:
            main_only = unit.get("KillMode") == "mixed" and main in pids
            for pid in ([main] if main_only else pids):
                try:
                    os.kill(pid, stop_signal)
                except OSError:
                    pass
            signalled = True
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.05)
    if not state.get("script"):
        entry, gid = account(unit)
        env = environment(unit, entry)
        for line in unit.all("ExecStopPost"):
            try:
                spawn(unit, line, env, entry, gid, False, log, wait=True)
            except Failed:
                pass
    pid_file = state.get("pid_file")
    if pid_file and os.path.exists(pid_file):
        os.unlink(pid_file)
    for path in state.get("runtime") or []:
        subprocess.call(["rm", "-rf", path])
    os.unlink(state_path(name, ".json"))


def reload(name):
    if external(name):
        return
    unit = Unit(name)
    state = read_state(name)
    if not state or not is_active(name):
        start(name)
        return
    if not unit.all("ExecReload"):
        stop(name)
        start(name)
        return
    entry, gid = account(unit)
    env = environment(unit, entry)
    log = open(state_path(name, ".log"), "ab")
    for line in unit.all("ExecReload"):
        spawn(unit, line, env, entry, gid, False, log, wait=True, extra_env={"MAINPID": str(state.get("pid") or "")})


def started_units():
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


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def command_name(pid):
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def sweep():
    """Stops what else the roles left running (daemons started without systemctl): TERM, then KILL."""
    keep, pid = {1}, os.getpid()
    while pid:
        keep.add(pid)
        pid = parent(pid)

    def strays():
        return [pid for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit())
                if pid not in keep and alive(pid) and not (parent(pid) == 1 and command_name(pid) == "sleep")]

    deadline, signalled = time.monotonic() + STOP_TIMEOUT / 3, False
    while True:
        pids = strays()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL if time.monotonic() > deadline else signal.SIGTERM if not signalled else 0)
            except OSError:
                pass
        signalled = True
        time.sleep(0.05)


def wanted_by(unit):
    targets = []
    for value in unit.sections.get("Install", {}).get("WantedBy", []) + \
            unit.sections.get("Install", {}).get("RequiredBy", []):
        targets += value.split()
    return targets


def enable(name):
    unit = Unit(name)
    if unit.path:
        for target in wanted_by(unit) or []:
            directory = f"/etc/systemd/system/{target}.wants"
            os.makedirs(directory, exist_ok=True)
            link = os.path.join(directory, unit.name)
            if not os.path.lexists(link):
                os.symlink(unit.path, link)
        for alias in unit.sections.get("Install", {}).get("Alias", []):
            for word in alias.split():
                link = os.path.join("/etc/systemd/system", word)
                if not os.path.lexists(link):
                    os.symlink(unit.path, link)
    # A unit with only an init script is enabled by its rc links, which update-rc.d (run by the
    # package's postinst) has made; update-rc.d itself calls systemctl, so it is not called from here.
    if not unit.path and not unit.script:
        raise Failed(f"Unit file {unit.name} does not exist.")


def disable(name):
    unit = Unit(name)
    for link in glob.glob("/etc/systemd/system/*.wants/" + unit.name) + glob.glob("/etc/systemd/system/*.requires/"
                                                                                  + unit.name):
        os.unlink(link)


def enabled_state(name):
    unit = Unit(name)
    if masked(name):
        return "masked", 1
    if unit.path:
        if glob.glob("/etc/systemd/system/*.wants/" + unit.name) or glob.glob("/etc/systemd/system/*.requires/"
                                                                              + unit.name):
            return "enabled", 0
        if not unit.sections.get("Install"):
            return "static", 0
        return "disabled", 1
    if unit.script:
        if glob.glob("/etc/rc[2345].d/S??" + short(name)):
            return "enabled", 0
        return "disabled", 1
    return "not-found", 1


def show(name):
    unit = Unit(name)
    found = bool(unit.path or unit.script)
    active = is_active(name)
    state = read_state(name) or {}
    # A unit that is not installed shows as loaded, so that the service module hands a restart of it
    # to restart below (a no-op) instead of failing; start and enable of it still fail.
    load = "masked" if masked(name) else "loaded"
    enabled = enabled_state(name)[0] if found else ""
    lines = ["Id=" + unit.name, "Names=" + unit.name, "Type=" + (unit.kind if unit.path else "forking"),
             "LoadState=" + load, "ActiveState=" + ("active" if active else "inactive"),
             "SubState=" + (("exited" if state.get("remain") else "running") if active else "dead"),
             "UnitFileState=" + enabled, "MainPID=" + str(state.get("pid") or 0 if active else 0),
             "FragmentPath=" + (unit.path or ""), "SourcePath=" + (unit.script or ""),
             "CanStart=yes", "CanStop=yes", "CanReload=" + ("yes" if unit.all("ExecReload") else "no")]
    for key, values in unit.service.items():
        if key not in ("Type",) and values:
            lines.append(f"{key}={values[-1]}")
    return "\n".join(lines)


def main(argv):
    words, skip = [], False
    for _index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    if not words:
        return 0
    verb, names = words[0], words[1:]
    try:
        if verb == "set-environment":
            set_manager_environment(dict(word.split("=", 1) for word in names if "=" in word))
        elif verb == "unset-environment":
            set_manager_environment({}, remove=[word.split("=", 1)[0] for word in names])
        elif verb == "stop-all":
            for name in started_units():
                stop(name)
            sweep()
        elif verb in ("is-active", "is-failed", "status", "is-enabled", "show"):
            code = 0
            for name in names:
                if verb == "show":
                    print(show(name))
                elif verb == "is-enabled":
                    state, rc = enabled_state(name)
                    print(state)
                    code = code or rc
                elif verb == "is-failed":
                    print("inactive")
                    code = 1
                else:
                    active = is_active(name)
                    print((f"{unit_name(name)}: " if verb == "status" else "") + ("active" if active else "inactive"))
                    code = code or (0 if active else 3)
            return code
        elif verb == "list-unit-files":
            for pattern in names or ["*"]:
                for directory in UNIT_DIRS:
                    for path in sorted(glob.glob(os.path.join(directory, pattern))):
                        print(f"{os.path.basename(path)} {enabled_state(os.path.basename(path))[0]}")
        else:
            for name in names:
                if verb in RESTART_VERBS and not unit_file(name) and not init_script(name):
                    # A handler restarting a service this image does not have: nothing runs, nothing to do.
                    sys.stderr.write(f"{unit_name(name)} is not installed; nothing to {verb}\n")
                    record_absent(unit_name(name))
                    continue
                if verb == "start":
                    start(name)
                elif verb == "stop":
                    stop(name)
                elif verb in ("restart", "force-reload") and external(name):
                    continue
                elif verb in ("restart", "force-reload"):
                    stop(name)
                    start(name)
                elif verb in ("try-restart", "condrestart") and is_active(name) and not external(name):
                    stop(name)
                    start(name)
                elif verb in ("reload", "reload-or-restart", "reload-or-try-restart", "try-reload-or-restart"):
                    if verb.startswith("try-") and not is_active(name):
                        continue
                    reload(name)
                elif verb in ("enable", "reenable"):
                    enable(name)
                    if "--now" in argv:
                        start(name)
                elif verb == "disable":
                    disable(name)
                    if "--now" in argv:
                        stop(name)
                elif verb == "mask":
                    link = os.path.join("/etc/systemd/system", unit_name(name))
                    if not os.path.lexists(link):
                        os.symlink("/dev/null", link)
                elif verb == "unmask":
                    link = os.path.join("/etc/systemd/system", unit_name(name))
                    if os.path.islink(link) and os.readlink(link) == "/dev/null":
                        os.unlink(link)
                elif verb == "kill":
                    for pid in unit_processes(name):
                        os.kill(pid, signal.SIGTERM)
    except Failed as error:
        sys.stderr.write(f"{error}\n")
        return 1
    return 0  # daemon-reload, preset, reset-failed and the like have nothing to do here


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
