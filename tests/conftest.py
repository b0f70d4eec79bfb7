"""Shared test set-up: the collection on the import path, and helpers for real playbook runs."""

from __future__ import annotations

import os
import pathlib
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".build" / "collections"


def _link_collection() -> None:
    link = COLLECTIONS / "ansible_collections" / "immutable" / "infra"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)


_link_collection()
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))
# Tests never write to the user's own ledger.
os.environ["IMMUTABLE_INFRA_LEDGER"] = os.path.join(tempfile.mkdtemp(prefix="immutable-infra-test-"), "ledger.jsonl")
