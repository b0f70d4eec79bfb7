"""Prepares this machine for the collection: a Docker engine, host packages and a local base image.

Every step first checks whether it is already done, so a second run takes seconds.
Usage: python scripts/ensure_host.py engine | packages PKG... | base-image REF | libvirt
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import docker
from docker.errors import DockerException, ImageNotFound

DOCKERD_LOG = "/var/log/immutable-infra-dockerd.log"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def say(message: str) -> None:
    print(message, flush=True)


def die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def up_down_status(argv: list[str], usage: str, up: Callable[[], object], down: Callable[[bool], None],
                   status: Callable[[], None]) -> None:
    """The command line of a script that runs something for the tests: up | down [--purge] | status."""
    if argv == ["up"]:
        up()
    elif argv and argv[0] == "down" and argv[1:] in ([], ["--purge"]):
        down(argv[1:] == ["--purge"])
    elif argv == ["status"]:
        status()
    else:
        die(usage)


def engine_client() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except DockerException:
        return None


@functools.cache
def update_package_lists() -> None:
    """apt-get update once per run; a third-party source that cannot be reached must not stop Debian's own packages."""
    subprocess.run(["apt-get", "update", "-q"], env=apt_env(), stdout=subprocess.DEVNULL, check=False)


def apt_env() -> dict[str, str]:
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        die(f"installing {' '.join(packages)} needs root; install them with your package manager")
    env = apt_env()
    update_package_lists()
    say(f"host packages: installing {' '.join(packages)}")
    result = subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        die(f"apt-get install {' '.join(packages)} failed: {result.stderr.strip()[-800:]}")


def ensure_packages(commands: dict[str, str]) -> None:
    """commands maps an executable to the Debian package that provides it."""
    missing = sorted({package for command, package in commands.items() if not shutil.which(command)})
    if missing:
        apt_install(missing)
    else:
        say(f"host packages: present ({', '.join(sorted(set(commands.values())))})")


def start_dockerd() -> None:
    pid_file = "/var/run/docker.pid"
    if os.path.exists(pid_file):
        with open(pid_file, encoding="ascii") as handle:
            pid = handle.read().strip()
        if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
            os.unlink(pid_file)  # left by an engine that died; dockerd refuses to start beside it
    with open(DOCKERD_LOG, "ab") as log:
        # live-restore: containers keep running, with their addresses, while the engine restarts (an
        # upgrade, a crash), so the balancer's servers stay right and no request fails meanwhile.
        subprocess.Popen(["dockerd", "--live-restore"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)


def ensure_engine() -> None:
    client = engine_client()
    if client:
        say(f"docker engine: reachable ({os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')})")
        if not client.info().get("LiveRestoreEnabled"):
            say("docker engine: live-restore is off, so a restart of this engine stops every host and gives them "
                "new addresses; see docs/reliability.md to turn it on")
        return
    if os.environ.get("DOCKER_HOST"):
        die(f"DOCKER_HOST={os.environ['DOCKER_HOST']} is set but no Docker engine answers there; "
            "start that engine or unset DOCKER_HOST to use a local one")
    if os.geteuid() != 0:
        die("no Docker engine is reachable and starting one needs root; start dockerd or set DOCKER_HOST")
    ensure_packages({"dockerd": "docker.io"})
    say(f"docker engine: starting dockerd (log: {DOCKERD_LOG})")
    start_dockerd()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if engine_client():
            say("docker engine: ready")
            return
        time.sleep(0.5)
    die(f"dockerd did not become reachable within 90 s; see {DOCKERD_LOG}")


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses, so the base image installs from the same place."""
    if os.environ.get("BASE_MIRROR"):
        return os.environ["BASE_MIRROR"]
    candidates: list[str] = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    words = line.split("#", 1)[0].split()
                    urls = [word for word in words[1:] if "://" in word]
                    if words and words[0] == "deb" and urls:
                        candidates.append(urls[0])
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("URIs:"):
                    candidates.extend(line.split()[1:])
    for url in candidates:
        if url.rstrip("/").endswith("/debian"):
            return url.rstrip("/")
    return DEFAULT_MIRROR


def ensure_base_image(reference: str) -> None:
    client = engine_client()
    if client is None:
        die("no Docker engine is reachable; run 'make engine' first")
    try:
        image = client.images.get(reference)
        say(f"base image: present ({reference}, {image.id[:19]})")
        return
    except ImageNotFound:
        pass
    ensure_packages({"debootstrap": "debootstrap"})
    suite = os.environ.get("BASE_SUITE", "bookworm")
    mirror = apt_mirror()
    started = time.monotonic()
    say(f"base image: building {reference} with debootstrap ({suite} minbase + python3 from {mirror}); "
        "this takes about a minute")
    with tempfile.TemporaryDirectory(prefix="immutable-infra-base-", dir="/var/tmp") as work:
        rootfs = os.path.join(work, "rootfs")
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", suite, rootfs, mirror],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if result.returncode != 0:
            die(f"debootstrap failed: {result.stdout.strip()[-1500:]}")
        # Like the official images: no package cache or package lists in the base.
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
            for path in glob.glob(os.path.join(rootfs, pattern)):
                if os.path.isfile(path):
                    os.unlink(path)
        tarball = os.path.join(work, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tarball, "."], check=True)
        repository, tag = reference.rsplit(":", 1)
        client.api.import_image_from_file(
            tarball, repository=repository, tag=tag,
            changes=['CMD ["bash"]', "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     f"LABEL org.opencontainers.image.description=\"Debian {suite} minbase with python3\""])
    image = client.images.get(reference)
    say(f"base image: built {reference} ({image.id[:19]}) in {time.monotonic() - started:.0f} s")


LIBVIRT_PACKAGES = {"libvirtd": "libvirt-daemon-system", "virsh": "libvirt-clients", "virtlogd": "libvirt-daemon-system",
                    "dnsmasq": "dnsmasq-base", "pkg-config": "pkg-config", "gcc": "gcc"}
LIBVIRT_HEADER = "/usr/include/libvirt/libvirt.h"  # libvirt-dev: the binding builds against it
LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
LIBVIRT_REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "requirements-vm.txt")


def libvirt_answers() -> bool:
    """Whether the local libvirt daemon answers (through the venv's binding, once installed)."""
    probe = "import libvirt; libvirt.registerErrorHandler(lambda c, e: None, None); libvirt.open('qemu:///system').close()"
    return subprocess.run([sys.executable, "-c", probe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False).returncode == 0


def ensure_libvirt() -> None:
    """libvirt for VM hosts: Debian's daemon and clients, the pinned Python binding in this venv (built
    against libvirt-dev), and virtlogd and libvirtd started as daemons when none answers (nothing starts
    them by itself where PID 1 is not systemd)."""
    ensure_packages(LIBVIRT_PACKAGES)
    if not os.path.exists(LIBVIRT_HEADER):
        apt_install(["libvirt-dev"])
    if subprocess.run([sys.executable, "-c", "import libvirt"], stderr=subprocess.DEVNULL, check=False).returncode:
        say("libvirt: installing the pinned Python binding (built from source, about 15 s)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                        LIBVIRT_REQUIREMENTS], check=True)
    if libvirt_answers():
        say("libvirt: the daemon answers (qemu:///system)")
        return
    if os.geteuid() != 0:
        die("libvirtd is not running and starting it needs root; start virtlogd and libvirtd")
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], stdout=subprocess.DEVNULL, check=False).returncode:
            say(f"libvirt: starting {daemon}")
            subprocess.run([daemon, "-d"], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if libvirt_answers():
            say("libvirt: ready")
            return
        time.sleep(0.5)
    die(f"libvirtd did not answer on {LIBVIRT_SOCKET} within 60 s")


def main(argv: list[str]) -> None:
    if not argv:
        die(__doc__.strip().splitlines()[-1])
    step, args = argv[0], argv[1:]
    if step == "engine":
        ensure_engine()
    elif step == "packages":
        ensure_packages(dict(arg.split("=", 1) if "=" in arg else (arg, arg) for arg in args))
    elif step == "base-image" and len(args) == 1:
        ensure_base_image(args[0])
    elif step == "libvirt":
        ensure_libvirt()
    else:
        die(f"unknown step {' '.join(argv)!r}; {__doc__.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
