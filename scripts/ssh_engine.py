"""A Docker engine reached over ssh://, as teams reach their servers' engines: dockerd, sshd and the Docker
CLI in one container on the machine's engine, at its own address.

The container is not privileged (runc cannot grant every capability here): it gets every capability but
CAP_SYS_RESOURCE, no seccomp or AppArmor profile, unmasked /proc and /sys paths and every device, and
remounts /sys and its cgroups read-write before it starts dockerd. /var/lib/docker is a volume, so images
loaded into the engine stay across restarts. Its image is built from the project's base image with apt
and cached by a tag that is the hash of its recipe.

The controller's side is a home directory of its own (RIG_DIR/ssh-engine/home): a key the container
authorises and a known_hosts with the container's host key, read through the machine's engine. A
process with HOME set to it reaches the engine as ssh://root@<address>, as any user with an ssh config
would. What the engine offers is written to RIG_DIR/ssh-engine.json.

Usage: python scripts/ssh_engine.py up | down [--purge] | status
Environment: IMMUTABLE_INFRA_RIG_DIR (default /var/lib/immutable-infra/rig), IMMUTABLE_INFRA_BASE_IMAGE.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound, NotFound

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ensure_host import die, say, up_down_status

RIG_DIR = os.environ.get("IMMUTABLE_INFRA_RIG_DIR", "/var/lib/immutable-infra/rig")
BASE_IMAGE = os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm")
NAME = "immutable-infra-ssh-engine"
VOLUME = f"{NAME}-data"
HOME = os.path.join(RIG_DIR, "ssh-engine", "home")
DESCRIPTION = os.path.join(RIG_DIR, "ssh-engine.json")
INNER_BRIDGE = "10.232.0.1/24"  # the inner engine's containers; apart from the machine's and the rig's subnets
START_TIMEOUT = 90

DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io openssh-server iptables \\
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \\
 && mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
COPY start /usr/local/sbin/ssh-engine-start
CMD ["/usr/local/sbin/ssh-engine-start"]
"""
START = f"""#!/bin/sh
set -e
# A container gets /sys read-only; dockerd needs it, and its cgroups (bind mounts), writable.
mount -o remount,rw /sys
for dir in /sys/fs/cgroup /sys/fs/cgroup/*; do
  if mountpoint -q "$dir"; then mount -o remount,bind,rw "$dir"; fi
done
printf '%s\\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
# /run is the container's own (no tmpfs), so it keeps what the last dockerd left when the container restarts;
# nothing runs yet, and a pid file left there would stop dockerd from starting.
rm -rf /var/run/docker.pid /var/run/docker
dockerd --bip {INNER_BRIDGE} --host unix:///var/run/docker.sock > /var/log/dockerd.log 2>&1 &
exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PasswordAuthentication=no \\
  -o PermitRootLogin=prohibit-password
"""
# What `docker run --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined --security-opt
# apparmor=unconfined --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm'` sends the engine
# (the CLI turns systempaths=unconfined into empty masked and read-only path lists).
HOST_CONFIG = {
    "CapAdd": ["ALL"], "CapDrop": ["SYS_RESOURCE"], "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
    "MaskedPaths": [], "ReadonlyPaths": [], "DeviceCgroupRules": ["a *:* rwm"],
    "Binds": [f"{VOLUME}:/var/lib/docker:rw"], "RestartPolicy": {"Name": "unless-stopped"},
}


def image_tag() -> str:
    recipe = hashlib.sha256((DOCKERFILE + START).encode()).hexdigest()[:12]
    return f"immutable-infra/ssh-engine:{recipe}"


def client() -> docker.DockerClient:
    try:
        engine = docker.from_env(timeout=300)
        engine.ping()
    except DockerException as error:
        die(f"ssh engine: no Docker engine to run it on ({error}); run 'make setup' first")
    return engine


def ensure_image(engine: docker.DockerClient) -> str:
    tag = image_tag()
    try:
        engine.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    try:
        engine.images.get(BASE_IMAGE)
    except ImageNotFound:
        die(f"ssh engine: the base image {BASE_IMAGE} is missing; run 'make base-image' first")
    say(f"ssh engine: building {tag} from {BASE_IMAGE} (apt: docker.io, openssh-server; about two minutes)")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, content, mode in (("Dockerfile", DOCKERFILE, 0o644), ("start", START, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content.encode()), mode
            archive.addfile(info, io.BytesIO(content.encode()))
    context.seek(0)
    try:
        engine.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False)
    except (BuildError, APIError) as error:
        die(f"ssh engine: building {tag} failed: {error}")
    return tag


def ensure_key() -> str:
    """The controller's key for the engine (made once); returns its public half."""
    ssh_dir = os.path.join(HOME, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    key = os.path.join(ssh_dir, "id_ed25519")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "immutable-infra-ssh-engine", "-f", key],
                       check=True)
    with open(f"{key}.pub", encoding="utf-8") as handle:
        return handle.read().strip()


def _container(engine: docker.DockerClient):
    try:
        return engine.containers.get(NAME)
    except NotFound:
        return None


def start_container(engine: docker.DockerClient, tag: str, public_key: str):
    found = _container(engine)
    if found is not None and found.status == "running" and found.image.tags == [tag]:
        return found
    if found is not None:
        found.remove(force=True)
    say(f"ssh engine: starting {NAME} ({tag})")
    created = engine.api.create_container(tag, name=NAME, hostname="ssh-engine", host_config=HOST_CONFIG,
                                          environment={"AUTHORIZED_KEY": public_key})
    engine.api.start(created["Id"])
    return engine.containers.get(created["Id"])


def _inner_engine_answers(container) -> bool:
    return container.exec_run(["docker", "version", "--format", "{{.Server.Version}}"]).exit_code == 0


def _sshd_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=2) as connection:
            return connection.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_until_ready(container) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            die(f"ssh engine: {NAME} stopped: {container.logs(tail=20).decode(errors='replace')}")
        address = container.attrs["NetworkSettings"]["IPAddress"]
        if address and _sshd_answers(address) and _inner_engine_answers(container):
            return address
        time.sleep(0.5)
    inner_log = container.exec_run(["tail", "-n", "20", "/var/log/dockerd.log"]).output.decode(errors="replace")
    die(f"ssh engine: not ready within {START_TIMEOUT} s; its dockerd said:\n{inner_log}")
    return ""


def write_known_host(container, address: str) -> None:
    """The container's host key, read through the machine's engine, as the only key known for its address."""
    host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
    with open(os.path.join(HOME, ".ssh", "known_hosts"), "w", encoding="utf-8") as handle:
        handle.write(f"{address} {host_key[0]} {host_key[1]}\n")


def up() -> dict:
    engine = client()
    started = time.monotonic()
    tag = ensure_image(engine)
    container = start_container(engine, tag, ensure_key())
    address = wait_until_ready(container)
    write_known_host(container, address)
    description = {"name": "sshengine", "docker_host": f"ssh://root@{address}", "address": address, "home": HOME,
                   "container": NAME, "image": tag}
    with open(DESCRIPTION, "w", encoding="utf-8") as handle:
        json.dump(description, handle, indent=2)
    say(f"ssh engine: ready in {time.monotonic() - started:.1f} s (ssh://root@{address}, HOME={HOME})")
    return description


def down(purge: bool) -> None:
    engine = client()
    found = _container(engine)
    if found is not None:
        found.remove(force=True)
    if os.path.exists(DESCRIPTION):
        os.unlink(DESCRIPTION)
    if purge:
        try:
            engine.volumes.get(VOLUME).remove(force=True)
        except NotFound:
            pass
        shutil.rmtree(os.path.dirname(HOME), ignore_errors=True)
    say("ssh engine: down" + (" (its volume and keys removed)" if purge else ""))


def status() -> None:
    found = _container(client())
    say(f"ssh engine: {found.status if found is not None else 'absent'}")


def main(argv: list[str]) -> None:
    up_down_status(argv, __doc__.strip().split("Usage: ", 1)[1].splitlines()[0], up, down, status)


if __name__ == "__main__":
    main(sys.argv[1:])
