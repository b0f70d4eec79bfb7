"""The collection as Ansible users and Galaxy see it: sanity, lint, docs and a real install."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest
from support import REPO_ROOT

pytestmark = pytest.mark.quality

MODULES = sorted(os.path.splitext(os.path.basename(path))[0]
                 for path in glob.glob(os.path.join(REPO_ROOT, "plugins", "modules", "*.py")))


def run(command, cwd=REPO_ROOT, env=None, timeout=1200):
    return subprocess.run(command, cwd=cwd, env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def test_ansible_test_sanity_is_clean():
    result = run([os.path.join(REPO_ROOT, "scripts", "sanity")])
    errors = [line for line in result.stdout.splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert result.returncode == 0 and not errors, "\n".join(errors) or result.stdout[-3000:]


def test_ansible_lint_production_profile_is_clean():
    # With ANSIBLE_COLLECTIONS_PATH set, ansible-lint would install a copy of the collection into ~/.ansible.
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_COLLECTIONS_PATH"}
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-lint"), "--nocolor"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stdout


def test_ruff_lint_and_import_order_are_clean():
    result = run([os.path.join(os.path.dirname(sys.executable), "ruff"), "check", "--no-cache", "plugins", "builder",
                  "tests", "scripts", "bench"])
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_finds_no_type_errors_in_the_plugins():
    # mypy names modules as Ansible imports them, through the collection link made for the tests.
    result = run([sys.executable, "-m", "mypy", "--no-incremental", "-p", "ansible_collections.immutable.infra.plugins"])
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout[-4000:]


def test_mypy_finds_no_type_errors_in_the_programs_that_run_inside_builders():
    result = run([sys.executable, "-m", "mypy", "--no-incremental", *glob.glob(os.path.join(REPO_ROOT, "builder", "*.py"))])
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout[-4000:]


def test_changelog_fragments_follow_antsibull_changelog_rules():
    result = run([os.path.join(os.path.dirname(sys.executable), "antsibull-changelog"), "lint"])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout[-4000:]
    # New modules and plugins are announced through their version_added, never by a fragment.
    announced = [path for path in glob.glob(os.path.join(REPO_ROOT, "changelogs", "fragments", "*.yml"))
                 if re.search(r"^\s*- \S+ - new (module|action|plugin|inventory|callback)", open(path, encoding="utf-8").read(), re.M)]
    assert not announced, f"fragments announcing new plugins: {announced}"


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    result = run([sys.executable, "-m", "ansible.cli.doc", f"immutable.infra.{module}"])
    assert result.returncode == 0, result.stdout
    assert "OPTIONS" in result.stdout and "EXAMPLES" in result.stdout and "RETURN VALUES" in result.stdout


@pytest.mark.parametrize("plugin_type, name", [("inventory", "fleet"), ("callback", "events")])
def test_ansible_doc_renders_the_other_plugins(plugin_type, name):
    result = run([sys.executable, "-m", "ansible.cli.doc", "-t", plugin_type, f"immutable.infra.{name}"])
    assert result.returncode == 0 and f"immutable.infra.{name}" in result.stdout, result.stdout


def test_built_collection_installs_and_works_from_an_unrelated_directory(tmp_path):
    built = run([sys.executable, "-m", "ansible.cli.galaxy", "collection", "build", REPO_ROOT,
                 "--output-path", str(tmp_path)], cwd=tmp_path)
    assert built.returncode == 0, built.stdout
    tarball = glob.glob(str(tmp_path / "immutable-infra-*.tar.gz"))
    assert len(tarball) == 1
    installed = run([sys.executable, "-m", "ansible.cli.galaxy", "collection", "install", tarball[0],
                     "-p", str(tmp_path / "collections"), "--no-deps", "--force"], cwd=tmp_path,
                    env={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    assert installed.returncode == 0, installed.stdout
    root = tmp_path / "collections" / "ansible_collections" / "immutable" / "infra"
    assert (root / "plugins" / "action" / "bake.py").exists()
    assert (root / "builder" / "systemctl.py").exists()  # what a bake copies into its builder
    assert not (root / ".venv").exists() and not (root / ".build").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - immutable.infra.bake: {name: x/y, base: immutable-infra/no-such-base:0, roles: [r]}\n"
        "      register: out\n      ignore_errors: true\n"
        "    - ansible.builtin.assert: {that: [\"'is not in the local Docker engine' in out.msg\"]}\n")
    used = run([sys.executable, "-m", "ansible.cli.playbook", "play.yml"], cwd=elsewhere,
               env={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    assert used.returncode == 0, used.stdout
    assert str(root) in run([sys.executable, "-m", "ansible.cli.doc", "immutable.infra.bake"], cwd=elsewhere,
                            env={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")}).stdout
