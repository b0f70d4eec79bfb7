"""The collection as a Galaxy user gets it: its tarball installed into a fresh virtual environment that holds
only ansible-core and the runtime requirements the collection declares (meta/ee-requirements.txt, which
meta/execution-environment.yml names), and community.docker beside it. bake, verify and rollout run there.

IMMUTABLE_INFRA_ANSIBLE_CORE picks the ansible-core version (default: the development environment's);
make test-matrix runs this with the oldest and newest versions meta/runtime.yml admits.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
import yaml
from ansible.release import __version__ as DEVELOPMENT_CORE
from rollout_support import BACKEND, DEMO_DIR, HELLO_CONFIG, remove_service, service_name
from support import BASE_IMAGE, REPO_ROOT, image_name

import ansible_collections.community.docker as community_docker

pytestmark = pytest.mark.quality

CORE = os.environ.get("IMMUTABLE_INFRA_ANSIBLE_CORE", DEVELOPMENT_CORE)
RUNTIME_REQUIREMENTS = os.path.join(REPO_ROOT, "meta", "ee-requirements.txt")


def run(command, **options):
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          timeout=options.pop("timeout", 900), **options)


@pytest.fixture(scope="module")
def runtime_venv():
    """A virtual environment with ansible-core and the declared runtime requirements, nothing else; kept
    under .build for the next run while those stay the same (delete it to resolve them again)."""
    with open(RUNTIME_REQUIREMENTS, "rb") as requirements:
        key = hashlib.sha256(CORE.encode() + requirements.read()).hexdigest()[:12]
    venv = os.path.join(REPO_ROOT, ".build", f"runtime-venv-{key}")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".complete")):
        shutil.rmtree(venv, ignore_errors=True)
        assert run([sys.executable, "-m", "venv", venv]).returncode == 0
        core = f"ansible-core=={CORE}" if CORE.count(".") == 2 else f"ansible-core=={CORE}.*"
        # As a user would: the declared ranges, resolved by pip (the development pins are not used).
        installed = run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", core,
                         "-r", RUNTIME_REQUIREMENTS], timeout=1200)
        assert installed.returncode == 0, installed.stdout[-3000:]
        open(os.path.join(venv, ".complete"), "w", encoding="utf-8").close()
    listed = run([python, "-m", "pip", "list", "--format", "json"])
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "ansible" not in names and "molecule" not in names, "the runtime environment holds development packages"
    return venv


@pytest.fixture(scope="module")
def installed(runtime_venv, tmp_path_factory):
    """The collection's tarball, built and installed with the runtime environment's own ansible-galaxy,
    and community.docker copied beside it as Galaxy would install it (Galaxy is not reachable here)."""
    where = tmp_path_factory.mktemp("galaxy")
    galaxy = os.path.join(runtime_venv, "bin", "ansible-galaxy")
    built = run([galaxy, "collection", "build", REPO_ROOT, "--output-path", str(where)], cwd=where)
    assert built.returncode == 0, built.stdout
    [tarball] = glob.glob(str(where / "immutable-infra-*.tar.gz"))
    collections = where / "collections"
    done = run([galaxy, "collection", "install", tarball, "-p", str(collections), "--no-deps"], cwd=where,
               env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")})
    assert done.returncode == 0, done.stdout
    shutil.copytree(next(iter(community_docker.__path__)),
                    collections / "ansible_collections" / "community" / "docker")
    return collections


def test_bake_verify_and_rollout_run_with_only_the_declared_requirements(runtime_venv, installed, tmp_path,
                                                                         start_haproxy, docker_client):
    proxy, service, name = start_haproxy(BACKEND), service_name(), image_name("runtime")
    os.symlink(os.path.join(DEMO_DIR, "roles"), tmp_path / "roles")
    tasks = [
        {"name": "Bake", "immutable.infra.bake": {
            "name": name, "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG,
            "vars": {"hello_version": "1.0", "test_nonce": uuid.uuid4().hex}}, "register": "baked"},
        {"name": "Verify", "immutable.infra.verify": {
            "image": "{{ baked.image_id }}", "tests": [os.path.join(DEMO_DIR, "tests", "test_hello.py")]},
         "register": "verified"},
        {"name": "Roll out", "immutable.infra.rollout": {
            "service": service, "image": "{{ baked.image_id }}", "replicas": 2, "port": 8000,
            "health": {"http_path": "/healthz", "timeout": 20, "interval": 0.2}, "drain_timeout": 5,
            "balancer": {"runtime_api": proxy.runtime_api, "backend": BACKEND.name}}, "register": "rolled"},
        {"name": "What ran", "ansible.builtin.assert": {"that": [
            "baked is changed", "verified.passed", "rolled.live | length == 2"]}},
    ]
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    environment = {"PATH": f"{runtime_venv}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
                   "ANSIBLE_COLLECTIONS_PATH": str(installed), "IMMUTABLE_INFRA_LEDGER": str(tmp_path / "ledger.jsonl"),
                   "ANSIBLE_NOCOLOR": "1"}
    try:
        played = run([os.path.join(runtime_venv, "bin", "ansible-playbook"), "play.yml"], cwd=tmp_path,
                     env=environment)
        assert played.returncode == 0, played.stdout[-4000:]
        assert f"[core {CORE}" in run([os.path.join(runtime_venv, "bin", "ansible"), "--version"]).stdout
    finally:
        remove_service(docker_client, service)
