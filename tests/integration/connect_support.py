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
import pytest
from engines_support import RIG_DIR, rig_description
from support import BASE_IMAGE, REPO_ROOT

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.endpoint import endpoint_from_environment

SSH_ENGINE_SCRIPT = os.path.join(REPO_ROOT, "scripts", "ssh_engine.py")


@dataclass
class ReachedEngine:
    kind: str
    environment: dict[str, str]  # what a play's process is given; the engine comes from nothing else
    client: DockerClient = field(repr=False)
    address: str | None = None  # where the engine's published ports answer (None: the hosts' own addresses)


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
        environment = {"DOCKER_HOST": described["docker_host"], "HOME": described["home"]}
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
    return ReachedEngine(kind, environment, client, described["address"] if kind == "ssh" else None)
