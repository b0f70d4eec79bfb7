"""Helpers for integration tests: names that clean up after themselves and real playbook runs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
import yaml

REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[2])
BASE_IMAGE = os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm")
RUN_ID = uuid.uuid4().hex[:8]
IMAGE_PREFIX = f"itest-{RUN_ID}"


# make test sets it: everything it sets up (the engine rig, the roles corpus and tools beside the checkout)
# must be there, so a test that would skip for want of one fails instead.
REQUIRE_ALL = os.environ.get("IMMUTABLE_INFRA_TEST_REQUIRE_ALL") == "1"


def skip_unless_required(reason: str) -> None:
    """Skips the test for want of something make test sets up; fails it under make test."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (make test sets it up; IMMUTABLE_INFRA_TEST_REQUIRE_ALL=1 makes its absence a failure)")
    pytest.skip(reason)


def image_name(suffix: str) -> str:
    """A repository name unique to this test run, removed when the session ends."""
    return f"{IMAGE_PREFIX}/{suffix}"


@dataclass
class PlayRun:
    returncode: int
    output: str
    results: dict

    def __getitem__(self, name):
        return self.results[name]


class Playbooks:
    """Writes tasks into a playbook in a project directory and runs it with ansible-playbook.

    Each task's registered result is saved, failures included, so tests can assert on all of them.
    """

    def __init__(self, project: str) -> None:
        self.project = project

    def run(self, tasks: list[dict], check: bool = False, extra_args: list[str] | None = None,
            env: dict[str, str] | None = None, timeout: int = 900) -> PlayRun:
        results_dir = os.path.join(self.project, ".results", uuid.uuid4().hex[:8])
        os.makedirs(results_dir)
        play_tasks = []
        for index, task in enumerate(tasks):
            name = task.get("name") or f"task{index}"
            play_tasks.append(dict(task, name=name, register="step_result", ignore_errors=True))
            play_tasks.append({"name": f"save {name}", "ansible.builtin.copy": {
                "content": "{{ step_result | to_json }}", "dest": os.path.join(results_dir, f"{index}.json"),
                "mode": "0644"}, "check_mode": False})
        # The playbook sits in the project directory so roles/ beside it resolves as in a real repository.
        playbook = os.path.join(self.project, f"play-{os.path.basename(results_dir)}.yml")
        with open(playbook, "w", encoding="utf-8") as handle:
            yaml.safe_dump([{"name": "test", "hosts": "localhost", "gather_facts": False, "tasks": play_tasks}],
                           handle, sort_keys=False)
        command = [sys.executable, "-m", "ansible.cli.playbook", playbook, *(extra_args or [])]
        if check:
            command.append("--check")
        process = subprocess.run(command, cwd=self.project, env=dict(os.environ, **(env or {})),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                 check=False)
        os.unlink(playbook)
        results = {}
        for index, task in enumerate(tasks):
            path = os.path.join(results_dir, f"{index}.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    results[task.get("name") or f"task{index}"] = json.load(handle)
        if process.returncode != 0 and not results:
            pytest.fail(f"ansible-playbook failed before any task ran:\n{process.stdout[-3000:]}")
        return PlayRun(process.returncode, process.stdout, results)


def init_git(path: str) -> str:
    """Makes path a git checkout with one commit and a remote; returns the commit."""
    def git(*args):
        return subprocess.run(["git", "-C", path, *args], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    git("init", "-q")
    git("remote", "add", "origin", "https://git.example.com/acme/ops.git")
    git("add", "-A")
    git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "roles")
    return git("rev-parse", "HEAD")


@dataclass(frozen=True)
class Listed:
    """A container as the engine lists it."""
    id: str
    name: str
    status: str  # its state: created, running, exited...
    image: str  # the ID of its image
    address: str | None  # on the default bridge network


def listed(client, all: bool = True, **filters) -> list[Listed]:
    """Containers matching the filters, from the engine's list alone: no inspect of each, so a container a
    rollout removes meanwhile is simply not listed (the SDK's containers.list inspects each and fails)."""
    return [Listed(found["Id"], found["Names"][0].lstrip("/"), found["State"], found["ImageID"],
                   (((found.get("NetworkSettings") or {}).get("Networks") or {}).get("bridge") or {}).get("IPAddress"))
            for found in client.api.containers(all=all, filters=filters)]


def remove_listed(client, **filters) -> None:
    """Removes the containers matching the filters; one already gone is fine."""
    for container in listed(client, **filters):
        try:
            client.api.remove_container(container.id, force=True)
        except Exception as error:  # the SDK's NotFound, or ours
            if "No such container" not in str(error) and "404" not in str(error):
                raise


def containers_created(client, since: float, name_prefixes: tuple[str, ...]) -> list[str]:
    """Names of containers created since `since` whose names start with one of the prefixes.

    Scoped by name so that containers other tests create on the same engine do not count.
    """
    events = client.events(since=since, until=time.time() + 0.5, decode=True,
                           filters={"type": "container", "event": "create"})
    names = [event.get("Actor", {}).get("Attributes", {}).get("name", "") for event in events]
    return [name for name in names if name.startswith(name_prefixes)]


def output_of(client, image: str, command: list[str]) -> bytes:
    """What `command` prints in a throwaway container of `image` (it must exit 0).

    Runs it with exec in an idle container rather than reading a finished container's logs: the logs
    of a container that exits at once can come back empty on a busy engine.
    """
    container = client.containers.run(image, ["sleep", "600"], entrypoint=[], detach=True)
    try:
        exit_code, output = container.exec_run(command)
        assert exit_code == 0, f"{command} exited {exit_code} in {image}: {output[-2000:]!r}"
        return output
    finally:
        container.remove(force=True)
