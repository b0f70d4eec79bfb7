"""docs/architecture.md names every ledger kind the code writes, every label key and object name of the
engine-side contract (core/labels.py), and every area of plugin_utils."""

from __future__ import annotations

import ast
import pathlib

import pytest
from test_layers import LAYERS, PLUGIN_UTILS

from ansible_collections.immutable.infra.plugins.plugin_utils.core import labels

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
GENERIC = {"LABEL_PREFIX", "OCI_PREFIX", "LABEL_STOPPING_HOST_PREFIX"}  # prefixes of other keys, not keys


def written_kinds() -> set[str]:
    """The kinds of every ledger.new_record(...) call in plugin_utils."""
    kinds = set()
    for path in PLUGIN_UTILS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "new_record" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                kinds.add(node.args[0].value)
    return kinds


def contract() -> dict[str, str]:
    return {name: value for name, value in vars(labels).items() if isinstance(value, str) and name not in GENERIC
            and (name.startswith(("LABEL_", "OCI_")) or name.endswith("_PREFIX"))}


def test_the_kinds_are_found():
    assert {"bake", "rollout", "heal", "reconcile", "service"} <= written_kinds()


@pytest.mark.parametrize("kind", sorted(written_kinds()))
def test_every_ledger_kind_is_in_the_ledger_table(kind):
    assert f"| `{kind}` |" in DOC, f"docs/architecture.md's ledger table lacks the kind {kind}"


@pytest.mark.parametrize("name", sorted(contract()))
def test_every_label_and_object_name_is_in_the_contract_table(name):
    value = contract()[name]
    assert value in DOC, f"docs/architecture.md does not name {value} ({name} in core/labels.py)"


@pytest.mark.parametrize("area", LAYERS)
def test_every_area_is_in_the_layer_table(area):
    assert f"| `{area}/` |" in DOC, f"docs/architecture.md's layer table lacks {area}/"
