"""immutable.infra.history and the audit playbook after real rollouts through a real HAProxy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
from markdown_it import MarkdownIt
from rollout_support import remove_service, rollout_task, service_name
from support import Playbooks, image_name
from traceability_support import derive_image, haproxy, hello_baked_once, record_verified


@dataclass
class Released:
    service: str
    project: Playbooks
    commit: str
    ledger: str
    images: dict
    rollouts: dict

    @property
    def env(self) -> dict:
        return {"IMMUTABLE_INFRA_LEDGER": self.ledger}

    def history(self, **options) -> dict:
        task = {"name": "history", "immutable.infra.history": dict({"service": self.service}, **options)}
        return self.project.run([task], env=self.env)["history"]


@pytest.fixture(scope="module")
def released(docker_client, base_image):
    """Three rollouts of one service from a git checkout: 1.0, 2.0, then 3.0, whose hosts exit at once, so it
    is rolled back."""
    baked = hello_baked_once()
    images = dict(baked.images)
    images["3.0"] = derive_image(docker_client, images["2.0"], image_name("traced-hello"), "broken",
                                 cmd=["/bin/sh", "-c", "echo cannot start; exit 3"])
    for image_id in images.values():
        record_verified(baked.ledger, image_id)
    service = service_name()
    with haproxy() as proxy:
        health = {"http_path": "/healthz", "timeout": 10, "interval": 0.2}
        run = baked.project.run([dict(rollout_task(service, images[version], proxy, replicas=2, health=health),
                                      name=version) for version in ("1.0", "2.0", "3.0")], env=baked.env)
        assert run["1.0"]["changed"] and run["2.0"]["changed"], run["2.0"].get("msg")
        assert run["3.0"]["failed"] and run["3.0"]["rolled_back"], run["3.0"].get("msg")
        yield Released(service, baked.project, baked.commit, baked.ledger, images, run.results)
    remove_service(docker_client, service)


def test_history_lists_every_rollout_newest_first_with_verdict_and_provenance(released):
    result = released.history()
    assert not result["changed"] and not result.get("failed"), result.get("msg")
    revisions = result["revisions"]
    service = released.service
    assert [entry["revision"] for entry in revisions] == [3, 2, 1]
    assert [entry["result"] for entry in revisions] == ["rolled back", "succeeded", "succeeded"]
    assert [entry["image_id"] for entry in revisions] == [released.images[version] for version in ("3.0", "2.0", "1.0")]
    assert [entry["generation"] for entry in revisions] == [3, 2, 1]
    assert result["live_revision"] == 2 and [entry["live"] for entry in revisions] == [False, True, False]

    for entry in revisions:
        assert entry["verdict"]["result"] == "passed" and entry["verdict"]["tests"]["passed"] == 3
        assert entry["verdict"]["source"] == "engine and ledger"
        assert entry["rolled_out_by"] and entry["git_commit"] == released.commit
        assert entry["started"] <= entry["finished"]
        assert entry["image_exists"] and entry["provenance"]["source"] == "image"
        assert entry["provenance"]["git_commit"] == released.commit
        assert entry["provenance"]["git_source"] == "https://git.example.com/acme/ops.git"
        assert entry["provenance"]["roles"] and entry["provenance"]["created"]
        assert entry["inputs_hash"] and entry["kind_of_change"] == "rollout"

    rolled_back, live, first = revisions
    assert live["added"] == [{"host": f"{service}-2-{index}", "exists": True, "state": "running", "engine": "default"}
                             for index in (1, 2)]
    assert [(entry["host"], entry["state"]) for entry in live["removed"]] == \
        [(f"{service}-1-{index}", "exited") for index in (1, 2)]
    assert first["hosts"] == "2 exited" and not first["hosts_gone"]
    assert rolled_back["hosts_gone"] and rolled_back["hosts"] == "2 gone" and rolled_back["hosts_derived"]
    assert rolled_back["error"]

    table = result["table"]
    assert table[0] == f"{service}: 3 revision(s); revision 2 is live"
    assert table[1].split()[:3] == ["REV", "STARTED", "RESULT"] and len(table) == 5
    assert table[3].startswith("*2") and "passed 3/3" in table[3] and "2 running" in table[3]
    assert result["msg"] == table
    assert released.history(limit=1)["revisions"][0]["revision"] == 3


def test_history_is_shown_in_the_play_output_and_check_mode_is_the_same(released):
    task = {"name": "history", "immutable.infra.history": {"service": released.service}}
    run = released.project.run([task], check=True, env=released.env)
    assert run.returncode == 0 and not run["history"]["changed"]
    assert [entry["revision"] for entry in run["history"]["revisions"]] == [3, 2, 1]
    assert run["history"]["table"][1] in run.output


def test_a_torn_ledger_line_is_a_warning(released, tmp_path):
    torn = str(tmp_path / "ledger.jsonl")
    shutil.copy(released.ledger, torn)
    with open(torn, "a", encoding="utf-8") as handle:
        handle.write('{"kind": "rollout", "service": "')
    result = released.history(ledger=torn)
    assert not result.get("failed") and len(result["revisions"]) == 3
    assert any("is damaged" in warning for warning in result["warnings"]), result["warnings"]


def test_audit_playbook_writes_a_report_with_every_revision(released, tmp_path):
    report = tmp_path / "audit.md"
    process = subprocess.run(
        [sys.executable, "-m", "ansible.cli.playbook", "immutable.infra.audit", "-e", f"service={released.service}",
         "-e", f"audit_report={report}"], cwd=released.project.project, env=dict(os.environ, **released.env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert process.returncode == 0, process.stdout[-3000:]
    text = report.read_text(encoding="utf-8")
    tables = markdown_tables(text)
    revisions = tables["Revision | Live"]
    assert [row[0] for row in revisions] == ["3", "2", "1"]
    assert [row[4] for row in revisions] == ["rolled back", "succeeded", "succeeded"]
    assert [row[1] for row in revisions] == ["", "yes", ""]
    verdicts = tables["Revision | Image"]
    assert [row[2] for row in verdicts] == ["passed"] * 3
    provenance = tables["Revision | Image ID"]
    assert {row[6] for row in provenance} == {released.commit}
    assert [row[1] for row in provenance] == [released.images[version] for version in ("3.0", "2.0", "1.0")]
    assert "## Drift" in text and "has drifted" in text  # the drift check ran (check mode) and found nothing


def test_history_says_when_hosts_and_images_are_gone(released, docker_client):
    """After a prune removes the stopped generation and its image, history still tells the whole story."""
    prune = released.project.run([{"name": "prune", "immutable.infra.prune": {
        "service": released.service, "keep_previous": 0, "builders": False}}], env=released.env)["prune"]
    gone = [f"{released.service}-1-{index}" for index in (1, 2)]
    assert [entry["name"] for entry in prune["removed"]["hosts"]] == gone, prune.get("msg")
    assert [entry["id"] for entry in prune["removed"]["images"]] == [released.images["1.0"]], (prune, released.images)
    first = {entry["revision"]: entry for entry in released.history()["revisions"]}[1]
    assert first["hosts_gone"] and first["hosts"] == "2 gone"
    assert not first["image_exists"] and first["provenance"]["source"] == "ledger"
    assert first["provenance"]["git_commit"] == released.commit and first["provenance"]["roles"]
    assert first["verdict"]["result"] == "passed" and first["verdict"]["source"] == "ledger"


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """Every table of a Markdown document, parsed as GitHub renders it: {first two header cells: rows}.

    Each table must have as many cells in every row as in its header, or it would not render.
    """
    tables, header, rows, row, in_head = {}, [], [], None, False
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "thead_open":
            header, rows, in_head = [], [], True
        elif token.type == "thead_close":
            in_head = False
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(token.content.strip("`").replace("\\|", "|"))
        elif token.type == "tr_close":
            if in_head:
                header = row
            else:
                rows.append(row)
            row = None
        elif token.type == "table_close":
            assert all(len(cells) == len(header) for cells in rows), (header, rows)
            tables[" | ".join(header[:2])] = rows
    return tables
