# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks every module's options get beyond what an argument spec can say: text that is too long or
holds control characters, and Ansible's own validation errors said as one sentence."""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

MAX_TEXT = 4096  # longer than any name, reference or path the collection takes
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PEM_BEGIN = "-----BEGIN "
CONTROL_IN_PEM = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # PEM text has its line breaks
UNSUPPORTED = re.compile(r"^Unsupported parameters for \((?P<module>[^)]*)\) module: (?P<names>.*?)\. "
                         r"Supported parameters include: (?P<supported>.*?)\.?$", re.S)
TEXT_TYPES = ("str", "path", "raw")


def _text_values(value: Any, spec: dict[str, Any]) -> list[str]:
    kind = spec.get("type", "raw")
    if kind in TEXT_TYPES and isinstance(value, str):
        return [value]
    if kind == "list" and spec.get("elements") in TEXT_TYPES and isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def check_text(params: dict[str, Any], argument_spec: dict[str, Any], prefix: str = "") -> None:
    """Refuses text options (and their list elements, and suboptions) that are over MAX_TEXT characters
    or hold control characters; free-form dicts (vars, env, labels) are left to their users."""
    for name, spec in argument_spec.items():
        value = params.get(name)
        if value is None:
            continue
        option = prefix + name
        for text in _text_values(value, spec):
            if len(text) > MAX_TEXT:
                raise InfraError(f"Option {option} is {len(text)} characters long; at most {MAX_TEXT} are taken.")
            control = (CONTROL_IN_PEM if text.lstrip().startswith(PEM_BEGIN) else CONTROL).search(text)
            if control:
                raise InfraError(f"Option {option} holds the control character {control.group()!r}; "
                                 "names, references and paths cannot hold control characters.")
        if spec.get("options") and isinstance(value, dict):
            check_text(value, spec["options"], f"{option}.")
        elif spec.get("options") and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    check_text(item, spec["options"], f"{option}.")


def secret_values(params: dict[str, Any], argument_spec: dict[str, Any]) -> set[str]:
    """The values of no_log options (suboptions too): an action plugin's result is not masked by
    Ansible as a module's is, so the action masks these itself."""
    found = set()
    for name, spec in argument_spec.items():
        value = params.get(name)
        if value is None:
            continue
        if spec.get("no_log") and isinstance(value, str) and value:
            found.add(value)
        if spec.get("options"):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    found |= secret_values(item, spec["options"])
    return found


def one_sentence(message: str, module: str) -> str:
    """Ansible's argument validation message, as one sentence naming the module."""
    text = " ".join(str(message).split())
    unsupported = UNSUPPORTED.match(text)
    if unsupported:
        names = unsupported.group("names")
        return (f"{module} has no option {names}; its options are {unsupported.group('supported')}."
                if "," not in names else f"{module} has no options {names}; its options are "
                f"{unsupported.group('supported')}.")
    return text if text.endswith(".") else text + "."
