"""Helpers every benchmark shares: timed commands, phase marks, statistics and Docker clean-up."""

from __future__ import annotations

import csv
import http.client
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
VENV_BIN = os.path.dirname(sys.executable)
COLLECTIONS_PATH = os.path.join(REPO_ROOT, ".build", "collections")
DEFAULT_BASE_IMAGE = os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm")
LABEL_KEY = "immutable-infra.bench"


class BenchError(Exception):
    """A step of a benchmark failed; the message says which and shows the end of its output."""


@dataclass
class Timed:
    """A finished command: wall time, exit code and each stdout line with its offset in seconds."""

    command: list[str]
    returncode: int
    wall: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    stderr: str = ""

    @property
    def stdout(self) -> str:
        return "".join(line for _offset, line in self.lines)

    def tail(self, size: int = 3000) -> str:
        return (self.stdout + self.stderr)[-size:]


def run_timed(command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Timed:
    """Runs a command to its end, timing it and noting when each line of its output arrived."""
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        started = time.monotonic()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                              env=env, cwd=cwd, text=True, bufsize=1) as process:
            for line in process.stdout or []:
                lines.append((time.monotonic() - started, line))
            returncode = process.wait()
        wall = time.monotonic() - started
        stderr.seek(0)
        return Timed(command, returncode, wall, lines, stderr.read())


def run_checked(command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Timed:
    """run_timed, raising BenchError with the command's output when it fails."""
    timed = run_timed(command, env=env, cwd=cwd)
    if timed.returncode != 0:
        raise BenchError(f"{' '.join(command)} exited with code {timed.returncode}:\n{timed.tail()}")
    return timed


def play_results(timed: Timed) -> list[dict[str, Any]]:
    """localhost's result of every task, from the ansible.posix.json output of a one-play playbook."""
    lines = [line for _offset, line in timed.lines]
    try:
        report = json.loads("".join(lines[lines.index("{\n"):]))
        return [task["hosts"]["localhost"] for task in report["plays"][0]["tasks"]]
    except (ValueError, KeyError, IndexError):
        raise BenchError(f"no task results in the output of ansible-playbook:\n{timed.tail()}") from None


def first_200(address: str, port: int, timeout: float = 60.0, poll: float = 0.02) -> None:
    """Polls http://address:port/healthz every poll seconds until it answers 200 (a floor host is up)."""
    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection(address, port, timeout=0.5)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise BenchError(f"no host at {address} answered /healthz with 200 within {timeout:g} s")
        time.sleep(poll)


def under_steady_load(url: str, rate: float, action: Callable[[], dict[str, Any]], lead_in: float = 1.0,
                      tail: float = 0.5, max_seconds: float = 1800, max_requests: int = 90000) -> dict[str, Any]:
    """Runs the action while scripts/steady_load.py sends rate requests per second to url (from lead_in seconds
    before it to tail seconds after); the action's measurements with what the load counted."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    from steady_load import SteadyLoad

    with SteadyLoad(url, rate=rate, max_seconds=max_seconds, max_requests=max_requests) as load:
        time.sleep(lead_in)
        measured = action()
        time.sleep(tail)
    counted = load.summary()
    return dict(measured, sent=counted["sent"], failed=counted["failed"], errors=counted["errors"])


def routed_subnets() -> list[ipaddress.IPv4Network]:
    """Subnets this host routes (the bridges of other engines on it too), from /proc/net/route; the
    default route left out."""
    with open("/proc/net/route", encoding="ascii") as handle:
        rows = [line.split() for line in handle.read().splitlines()[1:]]
    subnets = []
    for row in rows:
        # Addresses in the byte order of the kernel's memory: little-endian on this machine's x86.
        destination, mask = (ipaddress.IPv4Address(int(value, 16).to_bytes(4, "little")) for value in (row[1], row[7]))
        if int(mask):
            subnets.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return subnets


# HAProxy: one foreground process per benchmark, asked through its runtime API ---------------------
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def runtime_command(runtime_api: str, text: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(runtime_api)
        connection.sendall(text.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def start_haproxy_process(config: str, runtime_api: str, log_path: str) -> subprocess.Popen:
    """haproxy -db (one process in the foreground, stopped by its PID) with the config file, once its
    runtime API answers."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen([HAPROXY, "-db", "-f", config], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"haproxy exited with code {process.returncode}; see {config} and {log_path}")
        try:
            if "Name: HAProxy" in runtime_command(runtime_api, "show info"):
                return process
        except OSError:
            pass
        time.sleep(0.05)
    stop_haproxy(process)
    raise BenchError(f"haproxy did not open its runtime API within 10 s; see {log_path}")


def stop_haproxy(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def server_stats(runtime_api: str, backend: str) -> list[dict[str, str]]:
    """`show stat` rows of the backend's servers that hold an address (free slots left out)."""
    text = runtime_command(runtime_api, f"show stat {backend} 4 -1")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise BenchError(f"HAProxy answered `show stat {backend}` with: {text.strip()[:200]}")
    rows = csv.DictReader([lines[0][2:]] + lines[1:])
    return [row for row in rows if row.get("addr") and not row["addr"].startswith("0.0.0.0")]


def servers_up(runtime_api: str, backend: str) -> int:
    return sum(1 for row in server_stats(runtime_api, backend) if row.get("status") == "UP")


def marks_from_lines(timed: Timed, patterns: dict[str, str], offset: float = 0.0) -> list[tuple[str, float]]:
    """(label, seconds) for each output line matching a pattern; the label is the pattern's group 1 if any."""
    compiled = {label: re.compile(pattern) for label, pattern in patterns.items()}
    marks = []
    for seconds, line in timed.lines:
        for label, pattern in compiled.items():
            match = pattern.search(line)
            if match:
                marks.append((match.group(1) if pattern.groups else label, offset + seconds))
                break
    return marks


def phases(marks: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Seconds from each mark to the next one (the last one runs to end); repeated labels add up."""
    durations: dict[str, float] = {}
    for index, (label, start) in enumerate(marks):
        stop = marks[index + 1][1] if index + 1 < len(marks) else end
        durations[label] = round(durations.get(label, 0.0) + stop - start, 3)
    return durations


def summary(values: Iterable[float]) -> dict[str, float]:
    numbers = list(values)
    return {"median": round(statistics.median(numbers), 3), "min": round(min(numbers), 3),
            "max": round(max(numbers), 3), "n": len(numbers)}


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without Ansible settings, so every approach starts from Ansible's defaults."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", "/usr/bin:/bin")])
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra or {})
    return env


def docker_ids(kind: str, label_value: str) -> list[str]:
    """IDs of the containers or images carrying the benchmark label with this value."""
    command = (["docker", "ps", "-a", "-q"] if kind == "container" else ["docker", "images", "-q"])
    listed = run_checked(command + ["--filter", f"label={LABEL_KEY}={label_value}"])
    return sorted(set(listed.stdout.split()))


def remove_labelled(label_value: str) -> int:
    """Removes every container and image labelled for this benchmark run; returns how many."""
    containers = docker_ids("container", label_value)
    if containers:
        run_checked(["docker", "rm", "-f", *containers])
    images = docker_ids("image", label_value)
    if images:
        run_checked(["docker", "rmi", "-f", *images])
    return len(containers) + len(images)


def command_version(command: list[str]) -> str:
    if not shutil.which(command[0]):
        return "not installed"
    result = run_timed(command)
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            kib = int(meminfo.readline().split()[1])
        return round(kib / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def revision() -> str:
    result = run_timed(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"])
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def machine_facts() -> dict[str, object]:
    return {
        "revision": revision(), "cores": os.cpu_count(), "cpu": cpu_model(), "memory_gib": memory_gib(),
        "kernel": platform.release(), "python": platform.python_version(),
        "docker": command_version(["docker", "version", "--format", "{{.Server.Version}}"]),
        "ansible": command_version([os.path.join(VENV_BIN, "ansible-playbook"), "--version"]),
    }


def say(message: str) -> None:
    print(message, flush=True)


def retry_cleanup(action: Callable[[], int], attempts: int = 3) -> int:
    """Runs a clean-up, trying again when Docker is briefly busy with the objects it removes."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except BenchError:
            if attempt == attempts:
                raise
            time.sleep(2)
    return 0


# set-up ------------------------------------------------------------------------------------------
def ensure_debian_package(program: str, package: str) -> None:
    """Installs Debian's package when program is not on PATH."""
    if shutil.which(program):
        return
    if os.geteuid() != 0:
        raise BenchError(f"{program} is not installed and installing it needs root: apt-get install {package}")
    say(f"installing {package} from Debian's mirror")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
    installed = subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, check=False)
    if installed.returncode != 0 or not shutil.which(program):
        raise BenchError(f"apt-get install {package} failed: {installed.stderr.strip()[-800:]}")


def ensure_collection_link() -> None:
    """Makes this checkout importable as immutable.infra, as 'make setup' does."""
    link = os.path.join(COLLECTIONS_PATH, "ansible_collections", "immutable", "infra")
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO_ROOT, link)


def ensure_base_image(base: str) -> None:
    if run_timed(["docker", "image", "inspect", base]).returncode != 0:
        raise BenchError(f"base image {base} is not in the local Docker engine; run 'make setup' first")


# keep-alive load: Debian's wrk ----------------------------------------------------------------------
WRK_REPORT = """done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %.3f, "connect": %d, "read": %d, "write": %d, "timeout": %d, '
    .. '"status": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\\n', summary.requests, summary.duration / 1e6,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


class WrkLoad:
    """wrk on one URL (127.0.0.1 only) for as long as the block runs: keep-alive connections, each sending
    its next request as soon as the last one is answered, so the load is what the service can take.
    summary() gives requests, socket errors (connect, read, write, timeout), non-2xx/3xx answers
    (status) and the p50, p99 and max latency in ms, from wrk's own histogram."""

    def __init__(self, url: str, workdir: str, connections: int = 16, threads: int = 1, limit: float = 600) -> None:
        if not url.startswith("http://127.0.0.1:"):
            raise BenchError(f"wrk only loads 127.0.0.1, not {url}")
        self.script = os.path.join(workdir, "wrk-report.lua")
        with open(self.script, "w", encoding="utf-8") as handle:
            handle.write(WRK_REPORT)
        self.command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(limit)}s", "--timeout", "3s",
                        "-s", self.script, url]
        self.process: subprocess.Popen | None = None
        self.output = ""

    def __enter__(self) -> WrkLoad:
        if not shutil.which("wrk"):
            raise BenchError("wrk is not installed; run 'make bench-packages' (Debian's wrk)")
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # wrk stops, then reports what it measured
        self.output = self.process.communicate(timeout=30)[0]

    def summary(self) -> dict[str, Any]:
        for line in reversed(self.output.splitlines()):
            if line.startswith("{"):
                report = json.loads(line)
                report["socket_errors"] = sum(report[key] for key in ("connect", "read", "write", "timeout"))
                report["rate"] = round(report["requests"] / report["seconds"], 1) if report["seconds"] else 0.0
                return report
        raise BenchError(f"wrk printed no report: {self.output[-1000:]}")


def machine_busy() -> dict[str, Any]:
    """What else loads the machine as a measurement starts: the 1-minute load average and how many
    qemu-system processes (virtual machines, which each keep a core busy under TCG) run, from /proc."""
    vms = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="utf-8") as handle:
                    vms += handle.read().startswith("qemu-system")
            except OSError:
                continue
    return {"load": round(os.getloadavg()[0], 2), "vms": vms}


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat, in clock ticks."""
    with open("/proc/stat", encoding="utf-8") as handle:
        times = [int(value) for value in handle.readline().split()[1:]]
    idle = times[3] + times[4]  # idle and iowait
    return sum(times) - idle, sum(times)


def busy_share(before: tuple[int, int]) -> float:
    """The share of the machine's CPU time that was busy since before (cpu_jiffies()), in percent."""
    busy, total = cpu_jiffies()
    return round(100 * (busy - before[0]) / max(1, total - before[1]), 1)


def floor_in_threads(calls: list[Callable[[], None]], errors: list[str]) -> dict[str, Any]:
    """Runs the floor's calls (one per engine) at once; its wall time, or BenchError with what failed."""
    threads = [threading.Thread(target=call) for call in calls]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    if errors:
        raise BenchError("the floor failed: " + "; ".join(errors))
    return {"wall": round(wall, 2)}
