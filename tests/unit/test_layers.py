"""plugin_utils is layered: each area imports only from the areas below it (docs/architecture.md)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PLUGIN_UTILS = pathlib.Path(__file__).resolve().parents[2] / "plugins" / "plugin_utils"
PACKAGE = "ansible_collections.immutable.infra.plugins.plugin_utils"
# Bottom first. An area may import from itself and from any area before it in this list.
LAYERS = ["core", "docker", "task", "balancer", "service", "engines", "bake", "verify", "machine", "hypervisors", "rollout",
          "trace"]


def imported_areas(path: pathlib.Path) -> set[str]:
    areas = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            if name.startswith(PACKAGE + "."):
                areas.add(name[len(PACKAGE) + 1:].split(".")[0])
    return areas


def areas() -> list[str]:
    return sorted(path.name for path in PLUGIN_UTILS.iterdir() if path.is_dir() and path.name != "__pycache__")


def test_every_area_has_a_place_in_the_layers():
    assert [area for area in areas() if area not in LAYERS] == [], "add the new area to LAYERS (and to docs/architecture.md)"
    assert [path.name for path in PLUGIN_UTILS.glob("*.py") if path.name != "__init__.py"] == [], \
        "plugin_utils holds areas only; put the module in one of them"


@pytest.mark.parametrize("area", areas())
def test_an_area_imports_only_from_the_layers_below_it(area):
    allowed = set(LAYERS[:LAYERS.index(area) + 1]) if area in LAYERS else set()
    wrong = {str(path.relative_to(PLUGIN_UTILS)): sorted(imported_areas(path) - allowed)
             for path in sorted((PLUGIN_UTILS / area).rglob("*.py"))}
    assert {path: names for path, names in wrong.items() if names} == {}
