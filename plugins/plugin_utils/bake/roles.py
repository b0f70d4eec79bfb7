# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finds roles the way Ansible does and fingerprints their files by content."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import yaml

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, canonical_json, sha256_hex

SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".pytest_cache"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".swp")
TEXT_SUFFIXES = (".yml", ".yaml", ".j2", ".json", ".py")
FQCN_PATTERN = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\.[a-z_][a-z0-9_]*\b")
INCLUDE_ACTIONS = {f"{prefix}{action}" for prefix in ("", "ansible.builtin.", "ansible.legacy.")
                   for action in ("include_role", "import_role")}
TASK_DIRS = ("tasks", "handlers")

# What makes a directory given by path a role (Ansible's role layout).
ROLE_PARTS = ("tasks", "handlers", "meta", "defaults", "vars", "files", "templates", "library")


@dataclass
class Role:
    """A role resolved to a directory, with the fingerprint of every file in it."""

    name: str
    path: str
    collection: str | None = None
    version: str | None = None
    digest: str = ""
    files: list[tuple[str, str, str]] = field(default_factory=list)
    referenced_collections: set[str] = field(default_factory=set)
    dependencies: list[str] = field(default_factory=list)
    given_as_path: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


class CollectionIndex:
    """Installed collections by FQCN, looked up lazily in the paths Ansible searches."""

    def __init__(self, paths: list[str]) -> None:
        self.paths: list[str] = []
        for path in paths:
            path = os.path.abspath(os.path.expanduser(path))
            if os.path.basename(path) == "ansible_collections":
                path = os.path.dirname(path)
            if path not in self.paths:
                self.paths.append(path)
        self._found: dict[str, str | None] = {}

    def path(self, fqcn: str) -> str | None:
        if fqcn not in self._found:
            namespace, name = fqcn.split(".", 1)
            self._found[fqcn] = next(
                (candidate for candidate in (os.path.join(root, "ansible_collections", namespace, name)
                                             for root in self.paths) if os.path.isdir(candidate)), None)
        return self._found[fqcn]

    def version(self, fqcn: str) -> str | None:
        path = self.path(fqcn)
        if path is None:
            return None
        manifest = os.path.join(path, "MANIFEST.json")
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as handle:
                return str(json.load(handle).get("collection_info", {}).get("version") or "") or None
        galaxy = os.path.join(path, "galaxy.yml")
        if os.path.exists(galaxy):
            with open(galaxy, encoding="utf-8") as handle:
                return str((yaml.safe_load(handle) or {}).get("version") or "") or None
        return None


def fingerprint(path: str) -> tuple[str, list[tuple[str, str, str]], set[str]]:
    """(digest, [(relative path, mode flag, content sha256)], referenced collection FQCNs) of a tree.

    Only content, relative names and the executable bit count: mtimes, owners and walk order do not.
    """
    entries = []
    referenced: set[str] = set()
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = sorted(name for name in dirs if name not in SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            full = os.path.join(root, name)
            if not os.path.isfile(full):
                continue  # a broken symlink or a socket does not reach the image
            with open(full, "rb") as handle:
                content = handle.read()
            relative = os.path.relpath(full, path).replace(os.sep, "/")
            entries.append((relative, "x" if os.access(full, os.X_OK) else "-", sha256_hex(content)))
            if name.endswith(TEXT_SUFFIXES):
                referenced.update(f"{match[0]}.{match[1]}" for match in
                                  FQCN_PATTERN.findall(content.decode("utf-8", "replace")))
    return sha256_hex(canonical_json(entries)), entries, referenced


def _meta_dependencies(role_path: str) -> list[str]:
    for candidate in ("main.yml", "main.yaml", "main"):
        meta = os.path.join(role_path, "meta", candidate)
        if os.path.isfile(meta):
            with open(meta, encoding="utf-8") as handle:
                try:
                    data = yaml.safe_load(handle) or {}
                except yaml.YAMLError as error:
                    raise InfraError(f"The role metadata {meta} is not valid YAML: {error}") from None
            names = []
            for entry in data.get("dependencies") or []:
                name = entry.get("role") or entry.get("name") if isinstance(entry, dict) else entry
                if not isinstance(name, str) or not name:
                    raise InfraError(f"The role metadata {meta} lists a dependency without a role name: {entry!r}.")
                names.append(name)
            return names
    return []


class _TaskLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """Reads task files with Ansible's own tags (!unsafe, !vault) as plain values."""


def _tagged_value(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str | None:
    return loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None


_TaskLoader.add_multi_constructor("!", _tagged_value)


def _included_role_names(role_path: str) -> list[str]:
    """Names of the roles that the role's tasks and handlers include or import (include_role,
    import_role), as written; templated names among them."""
    names: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in INCLUDE_ACTIONS:
                    arguments = value if isinstance(value, dict) else \
                        dict(part.split("=", 1) for part in str(value).split() if "=" in part)
                    if isinstance(arguments.get("name"), str) and arguments["name"] not in names:
                        names.append(arguments["name"])
                elif key in ("block", "rescue", "always"):
                    collect(value)

    for directory in TASK_DIRS:
        for root, dirs, files in os.walk(os.path.join(role_path, directory)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".yml", ".yaml")):
                    with open(os.path.join(root, name), encoding="utf-8") as handle:
                        try:
                            collect(yaml.load(handle, Loader=_TaskLoader))
                        except yaml.YAMLError:
                            continue  # Ansible reports it when the bake runs the role
    return names


def _galaxy_version(role_path: str) -> str | None:
    info = os.path.join(role_path, "meta", ".galaxy_install_info")
    if os.path.isfile(info):
        with open(info, encoding="utf-8") as handle:
            version = (yaml.safe_load(handle) or {}).get("version")
        return str(version) if version else None
    return None


class RoleResolver:
    """Resolves role names like Ansible: roles/ next to the playbook, roles_path, collections."""

    def __init__(self, basedir: str, roles_path: list[str], collections: CollectionIndex,
                 play_collections: list[str] | None = None) -> None:
        self.basedir = os.path.abspath(basedir)
        self.roles_path = [os.path.abspath(os.path.expanduser(path)) for path in roles_path]
        self.collections = collections
        self.play_collections = [name for name in play_collections or [] if name != "ansible.builtin"]
        self.warnings: list[str] = []

    @property
    def search_dirs(self) -> list[str]:
        """Directories searched for unqualified role names, in Ansible's order."""
        return [os.path.join(self.basedir, "roles"), *self.roles_path, self.basedir]

    def _find(self, name: str, parent: Role | None) -> tuple[str, str | None]:
        searched: list[str] = []
        if FQCN_PATTERN.fullmatch(name):
            namespace, collection, role = name.split(".")
            fqcn = f"{namespace}.{collection}"
            found = self.collections.path(fqcn)
            candidate = os.path.join(found, "roles", role) if found else None
            if candidate and os.path.isdir(candidate):
                return candidate, fqcn
            raise InfraError(f"Role '{name}' was not found: collection {fqcn} is "
                             + (f"installed at {found} but has no role '{role}'." if found else
                                "not installed in any collection path (install it with ansible-galaxy)."))
        if "/" in name or name.startswith("."):
            candidate = os.path.normpath(os.path.join(self.basedir, os.path.expanduser(name)))
            if os.path.isdir(candidate) and any(os.path.isdir(os.path.join(candidate, part)) for part in ROLE_PARTS):
                return candidate, None
            if os.path.isdir(candidate):
                raise InfraError(f"Role '{name}' was not found: {candidate} is a directory but not a role "
                                 f"(it has none of {', '.join(part + '/' for part in ROLE_PARTS)}).")
            raise InfraError(f"Role '{name}' was not found: {candidate} is not a directory.")
        owning = [parent.collection] if parent and parent.collection else []
        for fqcn in owning + self.play_collections:
            found = self.collections.path(fqcn)
            if found and os.path.isdir(os.path.join(found, "roles", name)):
                return os.path.join(found, "roles", name), fqcn
        dirs = list(self.search_dirs)
        if parent and not parent.collection:
            dirs.insert(-1, os.path.dirname(parent.path))
        for directory in dirs:
            candidate = os.path.join(directory, name)
            searched.append(directory)
            if os.path.isdir(candidate):
                return candidate, None
        raise InfraError(f"Role '{name}' was not found in any role path (searched {', '.join(searched)}); "
                         "check its name or set roles_path.")

    def resolve(self, names: list[str]) -> tuple[list[Role], list[Role]]:
        """(the requested roles, every role used) with dependencies first, each once (Ansible's run order).

        Roles that tasks include or import by a literal name count as used, so their files are part of
        the inputs hash; the ones that cannot be found or have a templated name are named in warnings.
        """
        ordered: list[Role] = []
        seen: dict[str, Role] = {}

        def visit(name: str, parent: Role | None, chain: tuple[str, ...]) -> Role:
            path, collection = self._find(name, parent)
            if path in chain:
                raise InfraError(f"Role dependencies form a cycle: {' -> '.join([*chain, path])}.")
            if path in seen:
                return seen[path]
            display_name = f"{collection}.{os.path.basename(path)}" if collection else name
            role = Role(name=display_name, path=path, collection=collection,
                        given_as_path="/" in name or name.startswith("."))
            role.version = self.collections.version(collection) if collection else _galaxy_version(path)
            role.digest, role.files, role.referenced_collections = fingerprint(path)
            for dependency in _meta_dependencies(path):
                role.dependencies.append(visit(dependency, role, (*chain, path)).name)
            seen[path] = role
            ordered.append(role)
            for included in _included_role_names(path):
                self._include(role, included, chain, visit)
            return role

        requested = [visit(name, None, ()) for name in names]
        return requested, ordered

    def _include(self, role: Role, name: str, chain: tuple[str, ...], visit) -> None:
        if "{{" in name or "{%" in name:
            self.warnings.append(f"Role {role.name} includes a role by a templated name ({name}); that role's "
                                 "files are not part of the inputs hash, so bake with force: true after changing it.")
            return
        try:
            path, _collection = self._find(name, role)
        except InfraError as error:
            self.warnings.append(f"Role {role.name} includes role '{name}', which is not part of the inputs "
                                 f"hash: {error.message}")
            return
        if path not in chain and path != role.path:  # a role may include itself or its includer conditionally
            visit(name, role, (*chain, role.path))
