# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs roles in a container through a child ansible-playbook and follows it event by event.

The child reaches the container on the task's engine with community.docker's API connection over the
engine's own unix socket, and with its CLI connection (the Docker CLI, told the engine by the child's
DOCKER_* variables) otherwise: the API connection does not support TLS, and over an ssh:// engine's
relay it would keep an idle HTTP connection, that is an SSH channel, for every module it runs, where a
CLI process closes its own. No SSH in the image either way. It runs with pipelining and the
immutable.infra.events stdout callback, whose JSON lines become progress and failure reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.plugins.loader import cache_loader

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.processes import lines_of
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# .../ansible_collections/immutable/infra -> the directory that holds ansible_collections
OWN_COLLECTIONS_PATH = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION_ROOT)))


@dataclass
class PlayOutcome:
    succeeded: bool
    returncode: int
    failure: dict[str, Any] | None = None
    changed_tasks: list[str] = field(default_factory=list)
    task_count: int = 0
    warnings: list[str] = field(default_factory=list)
    stderr: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] | None = None  # the play's first gathered facts, when spec.capture_facts

    def failure_message(self) -> str:
        """The failing task's name, message and host output in a few lines."""
        if not self.failure:
            tail = self.stderr.strip()[-2000:]
            return f"ansible-playbook exited with code {self.returncode}" + (f": {tail}" if tail else "")
        event = self.failure
        lines = [f"task '{event.get('task')}' failed on {event.get('host')}: "
                 f"{event.get('msg') or event.get('status')}"]
        for key in ("stdout", "stderr", "module_stdout", "module_stderr"):
            if event.get(key):
                lines.append(f"{key}: {str(event[key]).strip()[-1500:]}")
        return "\n".join(lines)


@dataclass
class PlaySpec:
    """What to run where: the roles (names or paths) and vars, in which container, how."""

    container_id: str
    host_name: str
    roles: list[str]
    variables: dict[str, Any]
    roles_path: list[str]
    collections_path: list[str]
    python_interpreter: str = "/usr/bin/python3"
    become_method: str = "su"
    gather_subset: list[str] = field(default_factory=lambda: ["all"])
    tags: list[str] = field(default_factory=list)
    skip_tags: list[str] = field(default_factory=list)
    engine: DockerClient | None = None  # the engine of the container: the controller's default one when None
    timeout: int = 3600
    # Facts of an earlier builder of the same base and settings: the play then gathers only live_subset
    # (the facts of this container and this moment) on top of them.
    cached_facts: dict[str, Any] | None = None
    live_subset: list[str] = field(default_factory=lambda: ["min"])
    capture_facts: bool = False


def play_document(spec: PlaySpec) -> list[dict[str, Any]]:
    return [{
        "name": f"Apply roles to {spec.host_name}",
        "hosts": spec.host_name,
        "gather_facts": True,
        "gather_subset": spec.live_subset if spec.cached_facts else spec.gather_subset,
        "vars_files": ["vars.json"],
        "roles": spec.roles,
    }]


API_CONNECTION = "community.docker.docker_api"
CLI_CONNECTION = "community.docker.docker"


def _inventory(spec: PlaySpec) -> dict[str, Any]:
    host = {
        "ansible_connection": API_CONNECTION,
        "ansible_host": spec.container_id,
        "ansible_python_interpreter": spec.python_interpreter,
        "ansible_become_method": spec.become_method,
    }
    if spec.engine is not None and spec.engine.endpoint.scheme != "unix":
        host["ansible_connection"] = CLI_CONNECTION  # the engine is in the child's DOCKER_* variables
    elif spec.engine is not None:
        host["ansible_docker_docker_host"] = spec.engine.local_host  # ansible_docker_host names the container
    return {"all": {"hosts": {spec.host_name: host}}}


def play_environment(spec: PlaySpec, facts_dir: str) -> dict[str, str]:
    env = spec.engine.engine_environment(os.environ) if spec.engine is not None else dict(os.environ)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # the caller's extra callbacks would only add noise
    collections_path = [OWN_COLLECTIONS_PATH] + [path for path in spec.collections_path if path != OWN_COLLECTIONS_PATH]
    env.update({
        "ANSIBLE_STDOUT_CALLBACK": "immutable.infra.events",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_ROLES_PATH": os.pathsep.join(spec.roles_path),
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(collections_path),
        "PYTHONUNBUFFERED": "1",
    })
    # The builder's facts come from this run (and the cached ones given), never from a fact cache the
    # caller configured for its own hosts.
    env.update({"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": facts_dir,
                "ANSIBLE_CACHE_PLUGIN_PREFIX": "", "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0"}
               if spec.cached_facts else {"ANSIBLE_CACHE_PLUGIN": "memory"})
    env["IMMUTABLE_INFRA_EMIT_FACTS"] = "1" if spec.capture_facts else "0"
    return env


def write_fact_cache(directory: str, host: str, facts: dict[str, Any]) -> None:
    """Puts facts where the child's jsonfile fact cache reads them, written by that plugin itself (the same
    ansible-core as the child's), so its file format is its own."""
    cache = cache_loader.get("jsonfile", _uri=directory, _prefix="", _timeout=0)
    cache.set(host, facts)


def run_play(spec: PlaySpec, on_event: Callable[[dict[str, Any]], None]) -> PlayOutcome:
    """Runs the roles against the container; on_event sees every event as it happens."""
    with tempfile.TemporaryDirectory(prefix="immutable-infra-play-") as workdir:
        for name, content in (("playbook.json", play_document(spec)), ("inventory.json", _inventory(spec)),
                              ("vars.json", spec.variables)):
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
                json.dump(content, handle, default=str)
        facts_dir = os.path.join(workdir, "facts")
        if spec.cached_facts:
            os.mkdir(facts_dir)
            write_fact_cache(facts_dir, spec.host_name, spec.cached_facts)
        command = [sys.executable, "-m", "ansible.cli.playbook", "-i", os.path.join(workdir, "inventory.json"),
                   os.path.join(workdir, "playbook.json")]
        if spec.tags:
            command += ["--tags", ",".join(spec.tags)]
        if spec.skip_tags:
            command += ["--skip-tags", ",".join(spec.skip_tags)]
        with open(os.path.join(workdir, "stderr.log"), "w+", encoding="utf-8") as stderr:
            try:
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                           env=play_environment(spec, facts_dir), text=True, bufsize=1)
            except OSError as error:
                raise InfraError(f"Could not start ansible-playbook with {sys.executable}: {error}") from None
            timed_out = threading.Event()

            def stop() -> None:
                timed_out.set()
                process.kill()

            timer = threading.Timer(spec.timeout, stop)
            timer.start()
            try:
                outcome = _follow(process, on_event)
            finally:
                timer.cancel()
                if process.poll() is None:
                    process.kill()
                process.wait()
            stderr.seek(0)
            outcome.stderr += stderr.read()
        outcome.returncode = process.returncode
        outcome.succeeded = process.returncode == 0 and outcome.failure is None
        if timed_out.is_set():
            outcome.stderr = f"the play did not finish within {spec.timeout} s and was stopped\n" + outcome.stderr
        return outcome


def _follow(process: subprocess.Popen, on_event: Callable[[dict[str, Any]], None]) -> PlayOutcome:
    outcome = PlayOutcome(succeeded=False, returncode=-1)
    other_output: list[str] = []
    for line in lines_of(process.stdout):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            other_output.append(line)
            continue
        if event["event"] == "task_start":
            outcome.task_count += 1
        elif event["event"] == "result":
            if event.get("status") in ("failed", "unreachable") and not event.get("ignore_errors"):
                outcome.failure = outcome.failure or event
            elif event.get("changed"):
                outcome.changed_tasks.append(str(event.get("task")))
            outcome.warnings.extend(event.get("warnings") or [])
        elif event["event"] == "stats":
            outcome.stats = event.get("hosts") or {}
        elif event["event"] == "facts":
            outcome.facts = outcome.facts or event.get("facts")
        on_event(event)
    if other_output:
        outcome.stderr = "".join(other_output)[-4000:]
    return outcome
