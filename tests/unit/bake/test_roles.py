from __future__ import annotations

import os

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import CollectionIndex, RoleResolver, fingerprint
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError


def write(path, content="", mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.fixture
def playbook_dir(tmp_path):
    write(tmp_path / "roles/web/tasks/main.yml", "- ansible.builtin.debug: msg=hi\n- community.general.x: {}\n")
    write(tmp_path / "roles/web/meta/main.yml", "dependencies:\n  - common\n  - role: tls\n")
    write(tmp_path / "roles/common/tasks/main.yml", "- ansible.builtin.debug: msg=common\n")
    write(tmp_path / "shared/tls/tasks/main.yml", "- ansible.builtin.debug: msg=tls\n")
    collection = tmp_path / "collections/ansible_collections/acme/web"
    write(collection / "MANIFEST.json", '{"collection_info": {"version": "1.2.0"}}')
    write(collection / "roles/app/tasks/main.yml", "- ansible.builtin.debug: msg=app\n")
    write(collection / "roles/app/meta/main.yml", "dependencies: [helper]\n")
    write(collection / "roles/helper/tasks/main.yml", "- ansible.builtin.debug: msg=helper\n")
    return tmp_path


def resolver(playbook_dir, roles_path=("shared",)):
    return RoleResolver(str(playbook_dir), [str(playbook_dir / path) for path in roles_path],
                        CollectionIndex([str(playbook_dir / "collections")]))


def test_fingerprint_ignores_mtime_but_not_content_or_mode(tmp_path):
    file = write(tmp_path / "role/tasks/main.yml", "- debug: msg=1\n")
    before = fingerprint(str(tmp_path / "role"))[0]
    os.utime(file, (1, 1))
    assert fingerprint(str(tmp_path / "role"))[0] == before
    file.chmod(0o755)
    assert fingerprint(str(tmp_path / "role"))[0] != before
    file.chmod(0o644)
    file.write_text("- debug: msg=2\n")
    assert fingerprint(str(tmp_path / "role"))[0] != before


def test_fingerprint_skips_bytecode_and_vcs(tmp_path):
    write(tmp_path / "role/tasks/main.yml", "x")
    before = fingerprint(str(tmp_path / "role"))[0]
    write(tmp_path / "role/library/__pycache__/m.cpython-311.pyc", "junk")
    write(tmp_path / "role/.git/HEAD", "ref")
    assert fingerprint(str(tmp_path / "role"))[0] == before


def test_fingerprint_finds_referenced_collections(tmp_path):
    write(tmp_path / "role/tasks/main.yml", "- community.general.ufw: {}\n- ansible.builtin.debug: {}\n")
    assert fingerprint(str(tmp_path / "role"))[2] == {"community.general", "ansible.builtin"}


def test_dependencies_come_first_and_resolve_like_ansible(playbook_dir):
    requested, roles = resolver(playbook_dir).resolve(["web"])
    assert [role.name for role in roles] == ["common", "tls", "web"]
    assert [role.name for role in requested] == ["web"]
    assert roles[1].path == str(playbook_dir / "shared/tls")
    assert roles[2].dependencies == ["common", "tls"]


def test_collection_role_and_its_unqualified_dependency(playbook_dir):
    requested, roles = resolver(playbook_dir).resolve(["acme.web.app"])
    assert [role.label for role in roles] == ["acme.web.helper@1.2.0", "acme.web.app@1.2.0"]
    assert requested[0].collection == "acme.web"


def test_shared_dependency_is_listed_once(playbook_dir):
    roles = resolver(playbook_dir).resolve(["common", "web"])[1]
    assert [role.name for role in roles] == ["common", "tls", "web"]


def test_role_by_path(playbook_dir):
    requested = resolver(playbook_dir).resolve(["./shared/tls"])[0]
    assert requested[0].given_as_path and requested[0].path == str(playbook_dir / "shared/tls")


@pytest.mark.parametrize("name, message", [
    ("nope", "Role 'nope' was not found in any role path"),
    ("acme.web.nope", "has no role 'nope'"),
    ("acme.other.app", "collection acme.other is not installed"),
    ("./missing", "is not a directory"),
])
def test_unknown_roles_give_actionable_errors(playbook_dir, name, message):
    with pytest.raises(InfraError, match=message):
        resolver(playbook_dir).resolve([name])


def test_dependency_cycle_is_reported(playbook_dir):
    write(playbook_dir / "roles/common/meta/main.yml", "dependencies: [web]\n")
    with pytest.raises(InfraError, match="cycle"):
        resolver(playbook_dir).resolve(["web"])


def test_dependency_without_name_is_reported(playbook_dir):
    write(playbook_dir / "roles/common/meta/main.yml", "dependencies:\n  - when: true\n")
    with pytest.raises(InfraError, match="without a role name"):
        resolver(playbook_dir).resolve(["common"])


def test_collection_index_accepts_paths_ending_in_ansible_collections(playbook_dir):
    index = CollectionIndex([str(playbook_dir / "collections/ansible_collections")])
    assert index.version("acme.web") == "1.2.0"
    assert index.path("acme.none") is None


def test_roles_pulled_in_by_include_role_or_import_role_count_as_used(playbook_dir):
    write(playbook_dir / "roles/site/tasks/main.yml", (
        "- ansible.builtin.debug:\n    msg: !unsafe '{{ not a template }}'\n"
        "- ansible.builtin.include_role:\n    name: common\n"
        "- block:\n    - import_role: name=tls\n  rescue:\n    - ansible.builtin.include_role: {name: acme.web.app}\n"
        "- include_role:\n    name: \"{{ flavour }}\"\n"
        "- include_role: {name: not_there}\n"
        "- include_role: {name: site}\n"))
    write(playbook_dir / "roles/site/handlers/main.yml", "- name: Restart\n  ansible.legacy.import_role:\n    name: motd\n")
    write(playbook_dir / "roles/motd/tasks/main.yml", "- ansible.builtin.debug: msg=motd\n")
    found = resolver(playbook_dir)
    requested, used = found.resolve(["site"])
    assert [role.name for role in requested] == ["site"]
    assert [role.name for role in used] == ["site", "common", "tls", "acme.web.helper", "acme.web.app", "motd"]
    assert len(found.warnings) == 2
    assert "templated name ({{ flavour }})" in found.warnings[0] and "force: true" in found.warnings[0]
    assert "includes role 'not_there'" in found.warnings[1]


def test_a_change_in_an_included_role_changes_the_inputs(playbook_dir):
    write(playbook_dir / "roles/site/tasks/main.yml", "- ansible.builtin.include_role:\n    name: common\n")
    before = [(role.name, role.digest) for role in resolver(playbook_dir).resolve(["site"])[1]]
    write(playbook_dir / "roles/common/tasks/main.yml", "- ansible.builtin.debug: msg=changed\n")
    after = [(role.name, role.digest) for role in resolver(playbook_dir).resolve(["site"])[1]]
    assert [role for role, digest in before] == ["site", "common"] and before != after
