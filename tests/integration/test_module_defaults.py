"""The shared options reach every module from module_defaults of the action group immutable.infra.infra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import yaml
from rollout_support import service_name

from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger

GROUP = "group/immutable.infra.infra"


def saved(task: dict, results: str, name: str) -> list[dict]:
    """The task, registered even when it fails, and its result written to results/<name>.json."""
    return [dict(task, name=name, register="result", ignore_errors=True),
            {"name": f"save {name}", "check_mode": False, "ansible.builtin.copy": {
                "content": "{{ result | to_json }}", "dest": os.path.join(results, f"{name}.json"), "mode": "0644"}}]


def test_ledger_and_docker_host_set_once_for_the_group_reach_the_modules(tmp_path, docker_client):
    service = service_name()
    ledger_path = str(tmp_path / "team" / "ledger.jsonl")
    assert os.environ["IMMUTABLE_INFRA_LEDGER"] != ledger_path  # the test set-up's ledger is another file
    ledger = Ledger(ledger_path)
    ledger.append(ledger.new_record("rollout", service=service, image_id="sha256:" + uuid.uuid4().hex * 2,
                                    generation=1, result="succeeded", added=[f"{service}-1-1"], removed=[]))
    missing_engine = f"unix://{tmp_path}/no-engine.sock"
    results = tmp_path / "results"
    results.mkdir()
    plays = [
        {"name": "ledger from the group defaults", "hosts": "localhost", "gather_facts": False,
         "module_defaults": {GROUP: {"ledger": ledger_path}},
         "tasks": saved({"immutable.infra.history": {"service": service}}, str(results), "history")},
        {"name": "docker_host from the group defaults", "hosts": "localhost", "gather_facts": False,
         "module_defaults": {GROUP: {"docker_host": missing_engine}},
         "tasks": saved({"immutable.infra.prune": {"service": service}, "check_mode": True}, str(results), "prune")},
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "ansible.cli.playbook", str(playbook)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:]

    history = json.loads((results / "history.json").read_text())
    assert not history.get("failed"), history.get("msg")
    assert history["ledger"] == ledger_path
    assert [entry["revision"] for entry in history["revisions"]] == [1]
    gone = {"host": f"{service}-1-1", "exists": False, "state": "gone", "engine": None}
    assert history["revisions"][0]["added"] == [gone]

    prune = json.loads((results / "prune.json").read_text())
    assert prune["failed"] and not prune["changed"]
    assert f"Cannot reach the Docker engine at {missing_engine}" in prune["msg"]
