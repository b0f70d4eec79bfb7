# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SBOM of an image or a disk: a CycloneDX 1.6 JSON document made with cyclonedx-python-lib.

What is listed: the Debian packages dpkg has installed (name, version, purl with arch and distro),
the Python distributions found in the system's and /usr/local's package directories, the operating
system, and, for a bake, the roles that ran (each with its content digest) and the base image.

What a bake or disk build read from the filesystem comes as one text (CONTENTS_SCRIPT's output, or
contents_from_tree() for a disk's exported tree); everything after that is pure.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

SECTIONS = ("os-release", "dpkg", "python")
MARK = "#immutable-infra-sbom:"
PYTHON_DIRS = ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3*/dist-packages",
               "/usr/local/lib/python3*/site-packages")
CONTENTS_SCRIPT = (f"echo '{MARK}os-release'; cat /etc/os-release 2>/dev/null; "
                   f"echo '{MARK}dpkg'; cat /var/lib/dpkg/status 2>/dev/null; "
                   f"echo '{MARK}python'; for dir in {' '.join(PYTHON_DIRS)}; do "
                   "ls -1d \"$dir\"/*.dist-info \"$dir\"/*.egg-info 2>/dev/null; done; true")
DIST_INFO = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._]*?)-(?P<version>[0-9][^-]*?)(?:-py[0-9.]+)?\.(?:dist|egg)-info$")
SPEC_VERSION = "1.6"
TOOL = "immutable.infra"


@dataclass
class Package:
    name: str
    version: str
    arch: str = ""
    source: str = ""


@dataclass
class Contents:
    """What an image's or disk's filesystem says is installed."""

    os: dict[str, str] = field(default_factory=dict)
    debian: list[Package] = field(default_factory=list)
    python: list[Package] = field(default_factory=list)


@dataclass
class Described:
    """What the SBOM is about, and what made it (for a bake)."""

    kind: str  # "container" (an image) or "file" (a disk)
    name: str
    version: str
    digest: str  # sha256:<hex> of the image ID or the disk file
    roles: list[dict[str, str]] = field(default_factory=list)  # {"name", "digest", "version"?}
    base: tuple[str, str] | None = None  # (reference, image ID)
    tool_version: str = ""


# parsing what the filesystem holds -----------------------------------------------------------------
def split_sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK):].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def parse_os_release(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            found[key.strip()] = value.strip().strip('"').strip("'")
    return found


def parse_dpkg_status(text: str) -> list[Package]:
    """The installed packages of dpkg's status file (paragraphs of 'Field: value', continued by a space)."""
    packages = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and last:
                continue  # a continuation line (Description, Conffiles): not needed
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip()
                fields[last] = value.strip()
        status = fields.get("Status", "").split()
        if fields.get("Package") and fields.get("Version") and status[-1:] == ["installed"]:
            source = fields.get("Source", "").split(" ", 1)[0]
            packages.append(Package(fields["Package"], fields["Version"], fields.get("Architecture", ""), source))
    return sorted(packages, key=lambda package: (package.name, package.arch))


def parse_python_dists(text: str) -> list[Package]:
    """Python distributions from paths of their .dist-info / .egg-info directories."""
    found: dict[str, Package] = {}
    for line in text.splitlines():
        match = DIST_INFO.match(os.path.basename(line.strip().rstrip("/")))
        if match:
            name = re.sub(r"[-_.]+", "-", match.group("name")).lower()
            found.setdefault(f"{name}@{match.group('version')}", Package(name, match.group("version")))
    return sorted(found.values(), key=lambda package: (package.name, package.version))


def parse_contents(text: str) -> Contents:
    sections = split_sections(text)
    if "dpkg" not in sections:
        raise InfraError("Listing the packages for the SBOM gave no answer (the shell script did not run).")
    return Contents(parse_os_release(sections.get("os-release", "")), parse_dpkg_status(sections["dpkg"]),
                    parse_python_dists(sections.get("python", "")))


def contents_from_tree(root: str) -> str:
    """CONTENTS_SCRIPT's output for a filesystem tree on the controller (a disk's exported root)."""
    def read(path: str) -> str:
        target = os.path.join(root, path.lstrip("/"))
        if os.path.islink(target) and os.readlink(target).startswith("/"):
            target = os.path.join(root, os.readlink(target).lstrip("/"))
        try:
            with open(target, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    dists = [path for pattern in PYTHON_DIRS for suffix in ("*.dist-info", "*.egg-info")
             for path in sorted(glob.glob(os.path.join(root, pattern.lstrip("/"), suffix)))]
    return "\n".join([f"{MARK}os-release", read("/etc/os-release"), f"{MARK}dpkg", read("/var/lib/dpkg/status"),
                      f"{MARK}python", *dists])


# the document --------------------------------------------------------------------------------------
def _distro(os_release: Mapping[str, str]) -> str:
    return f"{os_release.get('ID', 'debian')}-{os_release.get('VERSION_ID', '')}".rstrip("-")


def require_cyclonedx() -> None:
    if importlib.util.find_spec("cyclonedx") is None or importlib.util.find_spec("packageurl") is None:
        raise InfraError("The SBOM needs the Python package cyclonedx-python-lib on the controller; install the "
                         "collection's requirements (pip install -r requirements.txt).")


def build_sbom(described: Described, contents: Contents) -> dict[str, Any]:
    """The CycloneDX document (as JSON data) of what contents lists, about described."""
    require_cyclonedx()
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    def sha256(digest: str) -> list[HashType]:
        return [HashType(alg=HashAlgorithm.SHA_256, content=digest.split(":", 1)[-1])]

    bom = Bom()
    root = Component(type=ComponentType(described.kind), name=described.name, version=described.version,
                     bom_ref=f"subject:{described.digest}", hashes=sha256(described.digest))
    bom.metadata.component = root
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name=TOOL,
                                                version=described.tool_version or None))
    distro = _distro(contents.os)
    components = []
    if contents.os.get("ID"):
        components.append(Component(type=ComponentType.OPERATING_SYSTEM, name=contents.os["ID"],
                                    version=contents.os.get("VERSION_ID"), bom_ref=f"os:{distro}",
                                    description=contents.os.get("PRETTY_NAME")))
    for package in contents.debian:
        qualifiers = {key: value for key, value in (("arch", package.arch), ("distro", distro)) if value}
        purl = PackageURL("deb", contents.os.get("ID", "debian"), package.name, package.version, qualifiers)
        properties = [Property(name="immutable.infra:source_package", value=package.source)] if package.source else []
        components.append(Component(type=ComponentType.LIBRARY, name=package.name, version=package.version, purl=purl,
                                    bom_ref=purl.to_string(), properties=properties))
    for package in contents.python:
        purl = PackageURL("pypi", None, package.name, package.version)
        components.append(Component(type=ComponentType.LIBRARY, name=package.name, version=package.version, purl=purl,
                                    bom_ref=purl.to_string()))
    for role in described.roles:
        components.append(Component(type=ComponentType.APPLICATION, name=role["name"], version=role.get("version"),
                                    bom_ref=f"role:{role['name']}", hashes=sha256(role["digest"]),
                                    properties=[Property(name="immutable.infra:kind", value="ansible-role")]))
    if described.base:
        components.append(Component(type=ComponentType.CONTAINER, name=described.base[0], bom_ref="base",
                                    hashes=sha256(described.base[1]),
                                    properties=[Property(name="immutable.infra:kind", value="base-image")]))
    for component in components:
        bom.components.add(component)
    bom.register_dependency(root, components)
    return json.loads(JsonV1Dot6(bom).output_as_string())


def validation_errors(document: Mapping[str, Any]) -> str | None:
    """None when the document is valid CycloneDX 1.6 JSON (the strict schema), else the first error."""
    require_cyclonedx()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    return None if error is None else str(error)


def packages_in(document: Mapping[str, Any], kind: str = "deb") -> dict[str, str]:
    """name -> version of the packages of one purl type (deb, pypi) a CycloneDX document lists."""
    found = {}
    for component in document.get("components") or []:
        if str(component.get("purl") or "").startswith(f"pkg:{kind}/"):
            found[str(component.get("name"))] = str(component.get("version"))
    return found


def summary(document: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What an SBOM says in a few lines: counts by kind, the system, the roles with their digests."""
    if not isinstance(document, Mapping):
        return None
    components = document.get("components") or []
    roles = [{"name": component.get("name"),
              "digest": next((entry.get("content") for entry in component.get("hashes") or []), None)}
             for component in components if _kind(component) == "ansible-role"]
    system = next((f"{component.get('name')} {component.get('version') or ''}".strip() for component in components
                   if component.get("type") == "operating-system"), None)
    return {"format": f"CycloneDX {document.get('specVersion')}", "components": len(components),
            "debian_packages": len(packages_in(document, "deb")), "python_packages": len(packages_in(document, "pypi")),
            "operating_system": system, "roles": roles}


def _kind(component: Mapping[str, Any]) -> str | None:
    return next((entry.get("value") for entry in component.get("properties") or []
                 if entry.get("name") == "immutable.infra:kind"), None)


def role_entries(roles: Sequence[Any]) -> list[dict[str, str]]:
    """The roles of a bake (bake/roles.py Role) as SBOM entries."""
    return [{key: value for key, value in (("name", role.name), ("digest", role.digest),
                                           ("version", role.version)) if value} for role in roles]
