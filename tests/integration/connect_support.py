"""Engines of each kind as a user reaches them: the machine's socket, a rig engine over mutual TLS configured
only by the Docker CLI's variables, and an engine over ssh:// (scripts/ssh_engine.py, started here when it
is not up). Each comes with the environment a play needs and a client the test can look with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import certifi
import docker
import pytest
from engines_support import RIG_DIR, rig_description
from support import BASE_IMAGE, REPO_ROOT, RUN_ID

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import endpoint_from_environment

SSH_ENGINE_SCRIPT = os.path.join(REPO_ROOT, "scripts", "ssh_engine.py")
SSH_ENGINE = "immutable-infra-ssh-engine"


@dataclass
class ReachedEngine:
    kind: str
    environment: dict[str, str]  # what a play's process is given; the engine comes from nothing else
    client: DockerClient = field(repr=False)
    address: str | None = None  # where the engine's published ports answer (None: the hosts' own addresses)
    ssh_user: str | None = None  # the user this run logs in as, made for it alone

    def ssh_logins(self, since: float) -> int:
        """SSH logins of this run's user on the ssh:// engine since then, as its sshd logged them."""
        logs = docker.from_env().containers.get(SSH_ENGINE).logs(since=since).decode(errors="replace")
        return logs.count(f"Accepted publickey for {self.ssh_user} ")


def tls_environment(description: dict) -> dict[str, str]:
    """The first rig engine the way Docker CLI users configure one, with a CA bundle for the controller's own
    HTTPS that does not hold the engine's CA (as on these machines): the engine's ca.pem must still win."""
    engine = description["engines"][0]
    return {"DOCKER_HOST": engine["docker_host"], "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": os.path.dirname(engine["tls"]["ca_cert"]), "REQUESTS_CA_BUNDLE": certifi.where()}


def ssh_engine_description() -> dict:
    """The ssh:// engine, started (and its image built, the first time) when it is not up."""
    process = subprocess.run([sys.executable, SSH_ENGINE_SCRIPT, "up"], capture_output=True, text=True, check=False,
                             timeout=900)
    if process.returncode != 0:
        pytest.fail(f"the ssh:// engine did not start:\n{process.stdout[-2000:]}{process.stderr[-2000:]}")
    with open(os.path.join(RIG_DIR, "ssh-engine.json"), encoding="utf-8") as handle:
        return json.load(handle)


def with_base_image(client: DockerClient, local: DockerClient) -> None:
    """Loads the base image into the engine (by ID, tagged as on the controller) unless it is there."""
    base = local.image(BASE_IMAGE)
    assert base is not None, f"base image {BASE_IMAGE} is missing; run 'make setup' first"
    if client.image(base["Id"]) is None:
        client.load_image(local.save_image(base["Id"]))
    repository, tag = BASE_IMAGE.rsplit(":", 1)
    client.tag(base["Id"], repository, tag)


def reach(kind: str, local: DockerClient) -> ReachedEngine:
    if kind == "unix":
        return ReachedEngine(kind, {}, local)
    if kind == "tls":
        description = rig_description()
        if description is None:
            pytest.fail("the engine rig is not up (make engines); the TLS engine is one of its engines")
        environment = tls_environment(description)
    else:
        described = ssh_engine_description()
        user = ssh_user(described["container"])
        environment = {"DOCKER_HOST": f"ssh://{user}@{described['address']}", "HOME": described["home"]}
    old = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # the client settles its engine from the environment, as a task does
    try:
        client = DockerClient(endpoint_from_environment())
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    with_base_image(client, local)
    if kind == "ssh":
        return ReachedEngine(kind, environment, client, described["address"], user)
    return ReachedEngine(kind, environment, client)


def ssh_user(container: str) -> str:
    """A user of this run's own on the ssh:// engine (in its docker group, with the rig's key), so the
    logins the engine logs for it are this run's."""
    user = f"it{RUN_ID}"
    script = (f"id {user} >/dev/null 2>&1 || {{ useradd -m -G docker {user} && mkdir -m 700 /home/{user}/.ssh "
              f"&& cp /root/.ssh/authorized_keys /home/{user}/.ssh/ && chown -R {user} /home/{user}/.ssh; }}")
    result = docker.from_env().containers.get(container).exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return user


def remove_ssh_user(container: str, user: str) -> None:
    docker.from_env().containers.get(container).exec_run(["userdel", "-r", user])
