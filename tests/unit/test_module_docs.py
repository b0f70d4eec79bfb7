"""Every module's DOCUMENTATION, with its doc fragments expanded, says exactly what its action plugin
accepts: the same options, each with the same type, default, choices, required, elements, aliases
and suboptions. ansible-test's validate-modules skips doc-only modules, so this is the check."""

from __future__ import annotations

import importlib
import pathlib
from typing import Any

import pytest
import yaml
from ansible.utils.plugin_docs import get_docstring

from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import SHARED_OPTIONS

ROOT = pathlib.Path(__file__).resolve().parents[2]
COLLECTION = "immutable.infra"
MODULES = sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py") if path.stem != "__init__")
COMPARED = ("type", "default", "choices", "required", "elements", "aliases")


class FragmentLoader:
    """What ansible's fragment loader does for these names, by plain import: ansible.builtin.X is
    ansible.plugins.doc_fragments.X, namespace.collection.X is that collection's plugins/doc_fragments/X.
    A name that is no fragment module returns None, so ansible retries it as fragment.VARIABLE."""

    def get(self, name: str):
        namespace, collection, fragment = name.split(".", 2)
        package = ("ansible.plugins.doc_fragments" if (namespace, collection) == ("ansible", "builtin")
                   else f"ansible_collections.{namespace}.{collection}.plugins.doc_fragments")
        try:
            module = importlib.import_module(f"{package}.{fragment}")
        except ModuleNotFoundError:
            return None
        return type("Fragment", (module.ModuleDocFragment,), {"ansible_name": name})


def documented_options(module: str) -> dict[str, Any]:
    doc = get_docstring(str(ROOT / "plugins" / "modules" / f"{module}.py"), FragmentLoader(),
                        collection_name=COLLECTION, is_module=True)[0]
    return doc.get("options") or {}


def spec_options(module: str) -> dict[str, Any]:
    action = importlib.import_module(f"ansible_collections.immutable.infra.plugins.action.{module}").ActionModule
    return action.task_argument_spec()


def normalized(option: dict[str, Any], children: str) -> dict[str, Any]:
    """The compared fields as Ansible reads them when they are left out (type str, not required)."""
    return {"type": option.get("type", "str"), "default": option.get("default"),
            "choices": option.get("choices"), "required": bool(option.get("required")),
            "elements": option.get("elements"), "aliases": sorted(option.get("aliases") or []),
            "children": option.get(children) or {}}


def differences(path: str, documented: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    found = []
    for name in sorted(set(documented) - set(spec)):
        found.append(f"option {path}{name} is documented but not in the argument spec")
    for name in sorted(set(spec) - set(documented)):
        found.append(f"option {path}{name} is in the argument spec but not documented")
    for name in sorted(set(documented) & set(spec)):
        doc, arg = normalized(documented[name], "suboptions"), normalized(spec[name], "options")
        for field in COMPARED:
            if doc[field] != arg[field]:
                found.append(f"option {path}{name}: {field} is {doc[field]!r} in the docs but {arg[field]!r} in the spec")
        found += differences(f"{path}{name}.", doc["children"], arg["children"])
    return found


@pytest.mark.parametrize("module", MODULES)
def test_documentation_matches_the_argument_spec(module):
    found = differences("", documented_options(module), spec_options(module))
    assert not found, f"module {COLLECTION}.{module}:\n  " + "\n  ".join(found)


def test_the_shared_fragment_documents_exactly_the_shared_options():
    fragment = yaml.safe_load(FragmentLoader().get(f"{COLLECTION}.action").DOCUMENTATION)
    found = differences("", fragment["options"], SHARED_OPTIONS)
    assert not found, "doc fragment immutable.infra.action:\n  " + "\n  ".join(found)


def test_the_comparison_names_each_difference():
    documented = {"a": {"type": "int", "default": 1}, "b": {"type": "dict", "suboptions": {"c": {"choices": ["x"]}}},
                  "gone": {}}
    spec = {"a": {"type": "int"}, "b": {"type": "dict", "options": {"c": {"choices": ["x", "y"]}, "d": {}}},
            "new": {"aliases": ["n"]}}
    assert differences("", documented, spec) == [
        "option gone is documented but not in the argument spec",
        "option new is in the argument spec but not documented",
        "option a: default is 1 in the docs but None in the spec",
        "option b.d is in the argument spec but not documented",
        "option b.c: choices is ['x'] in the docs but ['x', 'y'] in the spec",
    ]


def test_every_module_is_in_the_action_group_for_module_defaults():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert sorted(runtime["action_groups"]["infra"]) == MODULES
