"""plugin_utils is layered: each area imports only from the areas below it (docs/architecture.md)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PLUGIN_UTILS = pathlib.Path(__file__).resolve().parents[2] / "plugins" / "plugin_utils"
PACKAGE = "ansible_collections.immutable.infra.plugins.plugin_utils"
# Bottom first. An area may import from itself and from any area before it in this list.
LAYERS = ["core", "docker", "task", "balancer", "service", "attest", "engines", "bake", "machine", "verify",
          "hypervisors", "rollout", "trace"]


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


def python_files(area: str) -> list[pathlib.Path]:
    return sorted((PLUGIN_UTILS / area).rglob("*.py"))


def test_nothing_outside_the_balancer_area_names_a_balancer_kind():
    """The rest of the collection sees the Balancer protocol (balancer/base.py), never HAProxy's classes."""
    naming = [str(path.relative_to(PLUGIN_UTILS)) for area in areas() if area != "balancer"
              for path in python_files(area) if "haproxy" in path.read_text(encoding="utf-8").lower()]
    assert naming == []


@pytest.mark.parametrize("area", ["service", "balancer", "rollout"])
def test_the_rollout_core_sees_only_the_seam_never_docker(area):
    """The rollout core works through the host back-end seam: no Docker client, no Docker SDK."""
    importing = {}
    for path in python_files(area):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        docker = sorted(name for name in modules if name.split(".")[0] == "docker" or name.startswith(f"{PACKAGE}.docker"))
        if docker:
            importing[path.name] = docker
    assert importing == {}


def test_no_function_over_60_lines_and_no_class_over_250_in_plugins():
    too_long = []
    for path in sorted(PLUGIN_UTILS.parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            limit = 60 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else \
                250 if isinstance(node, ast.ClassDef) else None
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{path.relative_to(PLUGIN_UTILS.parent)}:{node.lineno} {node.name} "
                                f"({node.end_lineno - node.lineno + 1} lines)")
    assert too_long == []
