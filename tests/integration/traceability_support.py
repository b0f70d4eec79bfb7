"""Helpers for the history, audit and prune tests: baked images with git provenance, cheap variants of them,
verdicts recorded the way verify records them, and an HAProxy shared by a test module."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import pytest
from haproxy_support import BackendConfig, HAProxyProcess
from rollout_support import DEMO_DIR, HELLO_CONFIG
from support import BASE_IMAGE, Playbooks, image_name, init_git

from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.core.provenance import controller_identity
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict

BACKEND = BackendConfig("web", slots=8, health_path="/healthz")
TEST_COUNTS = {"total": 3, "passed": 3, "failed": 0, "errors": 0, "skipped": 0}


def git_project(prefix: str) -> tuple[str, str]:
    """A project directory that is a git checkout holding the example roles; returns it and its commit."""
    project_dir = tempfile.mkdtemp(prefix=prefix)
    os.symlink(os.path.join(DEMO_DIR, "roles"), os.path.join(project_dir, "roles"))
    with open(os.path.join(project_dir, "README.md"), "w", encoding="utf-8") as handle:
        handle.write("ops\n")
    return project_dir, init_git(project_dir)


def bake_hello(project: Playbooks, name: str, versions: list[str], env: dict[str, str]) -> dict[str, str]:
    """Real bakes of the example hello role, one per version; returns image IDs by version."""
    run = project.run([{"name": version, "immutable.infra.bake": {
        "name": name, "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG,
        "vars": {"hello_version": version, "test_nonce": uuid.uuid4().hex}}} for version in versions], env=env)
    images = {}
    for version in versions:
        if run[version].get("failed"):
            pytest.fail(f"baking hello {version} failed: {run[version]['msg']}")
        images[version] = run[version]["image_id"]
    return images


@dataclass
class Baked:
    project: Playbooks
    commit: str
    ledger: str
    images: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {"IMMUTABLE_INFRA_LEDGER": self.ledger}


_BAKED: list[Baked] = []


def hello_baked_once() -> Baked:
    """Hello 1.0 and 2.0 baked for real from a git checkout, once per test session (bakes take the time);
    the bake records are in the returned ledger. Derive further images from them with derive_image."""
    if not _BAKED:
        project_dir, commit = git_project("traced-project-")
        ledger = os.path.join(tempfile.mkdtemp(prefix="traced-ledger-"), "ledger.jsonl")
        for directory in (project_dir, os.path.dirname(ledger)):
            atexit.register(shutil.rmtree, directory, True)
        project = Playbooks(project_dir)
        images = bake_hello(project, image_name("traced-hello"), ["1.0", "2.0"], {"IMMUTABLE_INFRA_LEDGER": ledger})
        _BAKED.append(Baked(project, commit, ledger, images))
    return _BAKED[0]


def derive_image(docker_client, image_id: str, repository: str, tag: str, cmd: list[str] | None = None,
                 labels: dict[str, str] | None = None) -> str:
    """A new image ID made from a baked one in a second (a commit of an unstarted container), keeping its
    labels but naming it `repository`; with cmd, its hosts run that instead."""
    container = docker_client.api.create_container(image_id, name=f"derive-{uuid.uuid4().hex[:8]}")
    extra = dict({"immutable.infra.name": repository, "immutable.infra.variant": tag}, **(labels or {}))
    changes = ["LABEL " + " ".join(f"{key}={value}" for key, value in extra.items())]
    if cmd:
        changes.append(f"CMD {json.dumps(cmd)}")
    try:
        return docker_client.api.commit(container["Id"], repository=repository, tag=tag, changes=changes)["Id"]
    finally:
        docker_client.api.remove_container(container["Id"], force=True)


def record_verified(ledger_path: str, image_id: str) -> dict:
    """A passing verdict in the ledger and on the engine, written as immutable.infra.verify writes it."""
    ledger = Ledger(ledger_path)
    record = ledger.append(ledger.new_record("verdict", image=image_id, image_id=image_id, result="passed",
                                             tests=TEST_COUNTS, failures=[], broken=None))
    record_verdict(DockerClient(), image_id, True, {
        "time": record["time"], "reference": image_id, "ledger_id": record["id"],
        "tests": json.dumps(TEST_COUNTS, sort_keys=True), "verified_by": controller_identity()})
    return record


@contextlib.contextmanager
def haproxy(backend: BackendConfig = BACKEND):
    """A real HAProxy for a whole test module."""
    instance = HAProxyProcess(tempfile.mkdtemp(prefix="haproxy-"), [backend])
    try:
        yield instance.start()
    finally:
        instance.stop()
        shutil.rmtree(instance.directory, ignore_errors=True)
