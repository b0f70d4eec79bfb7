"""The SBOM: what dpkg and Python's package directories list, as a CycloneDX 1.6 document that the schema accepts."""

from __future__ import annotations

import os

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

DPKG_STATUS = """Package: nginx
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 1.22.1-9+deb12u2
Description: small, powerful, scalable web/proxy server
 Nginx ("engine X") is a high-performance web and reverse proxy server.
 .
 Continuation: lines are not fields

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl (3.0.15-1~deb12u1)
Version: 3.0.15-1~deb12u1

Package: removed-thing
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: python3
Status: hold ok installed
Architecture: amd64
Version: 3.11.2-1+b1
"""
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
PYTHON = """/usr/lib/python3/dist-packages/PyYAML-6.0.1.dist-info
/usr/local/lib/python3.11/dist-packages/requests-2.32.3.dist-info
/usr/lib/python3/dist-packages/python_apt-2.6.0.egg-info
/usr/lib/python3/dist-packages/not-a-dist
"""
CONTENTS = f"{sbom.MARK}os-release\n{OS_RELEASE}{sbom.MARK}dpkg\n{DPKG_STATUS}{sbom.MARK}python\n{PYTHON}"
IMAGE_ID = "sha256:" + "ab" * 32


def described(**changes):
    roles = [{"name": "nginx", "digest": "cd" * 32}, {"name": "acme.web.site", "digest": "ef" * 32, "version": "1.2.0"}]
    values = dict(kind="container", name="acme/web", version="0123456789ab", digest=IMAGE_ID, roles=roles,
                  base=("immutable-infra/base:bookworm", "sha256:" + "12" * 32), tool_version="0.1.0")
    values.update(changes)
    return sbom.Described(**values)


def test_dpkg_status_gives_the_installed_packages_only():
    packages = sbom.parse_dpkg_status(DPKG_STATUS)
    assert [(package.name, package.version, package.arch, package.source) for package in packages] == [
        ("libssl3", "3.0.15-1~deb12u1", "amd64", "openssl"),
        ("nginx", "1.22.1-9+deb12u2", "amd64", ""),
        ("python3", "3.11.2-1+b1", "amd64", "")]


def test_python_distributions_come_from_their_metadata_directories():
    assert [(package.name, package.version) for package in sbom.parse_python_dists(PYTHON)] == [
        ("python-apt", "2.6.0"), ("pyyaml", "6.0.1"), ("requests", "2.32.3")]


def test_contents_without_the_dpkg_section_are_an_error():
    with pytest.raises(InfraError, match="gave no answer"):
        sbom.parse_contents("whatever the shell printed")


def test_the_document_is_valid_cyclonedx_and_lists_packages_roles_and_base():
    document = sbom.build_sbom(described(), sbom.parse_contents(CONTENTS))
    assert sbom.validation_errors(document) is None
    assert document["specVersion"] == "1.6"
    assert document["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    assert sbom.packages_in(document) == {"libssl3": "3.0.15-1~deb12u1", "nginx": "1.22.1-9+deb12u2",
                                          "python3": "3.11.2-1+b1"}
    assert sbom.packages_in(document, "pypi") == {"python-apt": "2.6.0", "pyyaml": "6.0.1", "requests": "2.32.3"}
    purls = {component["name"]: component.get("purl") for component in document["components"]}
    assert purls["nginx"] == "pkg:deb/debian/nginx@1.22.1-9%2Bdeb12u2?arch=amd64&distro=debian-12"
    summary = sbom.summary(document)
    assert summary == {"format": "CycloneDX 1.6", "components": 10, "debian_packages": 3, "python_packages": 3,
                       "operating_system": "debian 12",
                       "roles": [{"name": "acme.web.site", "digest": "ef" * 32}, {"name": "nginx", "digest": "cd" * 32}]}
    # every component depends from the subject, so the graph is complete
    subject = next(entry for entry in document["dependencies"] if entry["ref"] == f"subject:{IMAGE_ID}")
    assert len(subject["dependsOn"]) == 10


def test_a_broken_document_is_reported_by_the_schema():
    document = sbom.build_sbom(described(roles=[], base=None), sbom.parse_contents(CONTENTS))
    document["components"][0]["type"] = "spaceship"
    assert "spaceship" in (sbom.validation_errors(document) or "")


def test_a_disk_tree_is_read_like_a_container(tmp_path):
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(OS_RELEASE)
    (root / "etc").mkdir()
    os.symlink("/usr/lib/os-release", root / "etc/os-release")  # absolute, as in the tree: resolved inside it
    (root / "usr/lib/python3/dist-packages/PyYAML-6.0.1.dist-info").mkdir(parents=True)
    contents = sbom.parse_contents(sbom.contents_from_tree(str(root)))
    assert contents.os["ID"] == "debian" and len(contents.debian) == 3
    assert [package.name for package in contents.python] == ["pyyaml"]
