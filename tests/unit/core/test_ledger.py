from __future__ import annotations

import json
import multiprocessing

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import LEDGER_ENV, Ledger, default_path

WRITERS = 6
RECORDS_PER_WRITER = 150


def write_records(path: str, writer: int) -> None:
    ledger = Ledger(path)
    for number in range(RECORDS_PER_WRITER):
        # Big records make a torn or interleaved write show as broken JSON.
        ledger.append(ledger.new_record("verdict", writer=writer, number=number, padding="x" * (2000 + writer * 300)))


def test_concurrent_writers_in_several_processes_never_interleave_or_lose_records(tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=write_records, args=(path, writer)) for writer in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]  # every line is one whole record
    assert len(records) == WRITERS * RECORDS_PER_WRITER
    for writer in range(WRITERS):
        numbers = [record["number"] for record in records if record["writer"] == writer]
        assert numbers == list(range(RECORDS_PER_WRITER))  # each writer's records, complete and in order
    assert len({record["id"] for record in records}) == len(records)
    ledger = Ledger(path)
    assert len(list(ledger.records())) == len(records) and not ledger.warnings


def test_torn_last_line_is_skipped_with_a_warning_and_the_next_append_starts_fresh(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(str(path))
    first = ledger.append(ledger.new_record("bake", image_id="sha256:aa"))
    with open(path, "ab") as handle:
        handle.write(b'{"v": 1, "id": "cut", "kind": "verd')  # a controller killed mid-write
    second = ledger.append(ledger.new_record("verdict", image_id="sha256:aa", result="passed"))

    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b'{"v": 1, "id": "cut", "kind": "verd' and json.loads(lines[2])["id"] == second["id"]
    reader = Ledger(str(path))
    assert [record["id"] for record in reader.records()] == [first["id"], second["id"]]
    assert reader.warnings == [f"ledger {path} line 2 is damaged (probably a write cut short) and was skipped"]
    assert [record["kind"] for record in Ledger(str(path)).records(image_id="sha256:aa", result="passed")] == ["verdict"]


def test_records_carry_who_when_and_where(tmp_path):
    ledger = Ledger(str(tmp_path / "sub" / "dir" / "ledger.jsonl"))
    record = ledger.append(ledger.new_record("verdict", str(tmp_path), image_id="sha256:bb", result="failed"))
    assert record["kind"] == "verdict" and record["v"] == 1 and len(record["id"]) == 32
    assert record["user"] and record["controller"] and record["time"].endswith("Z")
    assert record["git_commit"] is None  # tmp_path is not a git checkout
    assert list(ledger.records()) == [record]


def test_missing_ledger_reads_as_empty_and_an_unwritable_one_is_a_clear_error(tmp_path):
    assert not list(Ledger(str(tmp_path / "none.jsonl")).records())
    blocker = tmp_path / "file"
    blocker.write_text("")
    ledger = Ledger(str(blocker / "ledger.jsonl"))
    with pytest.raises(InfraError, match="Cannot open the ledger .* set the ledger option or IMMUTABLE_INFRA_LEDGER"):
        ledger.append(ledger.new_record("bake"))


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "team.jsonl"))
    assert default_path() == str(tmp_path / "team.jsonl")
    monkeypatch.delenv(LEDGER_ENV)
    assert default_path().endswith("/.local/share/immutable-infra/ledger.jsonl")
