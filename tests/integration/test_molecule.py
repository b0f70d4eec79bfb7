"""Every role of the collection has a Molecule scenario, and `molecule test` passes offline on the local engine."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from support import BASE_IMAGE, REPO_ROOT, image_name

pytestmark = pytest.mark.molecule

SCENARIOS = sorted(os.path.basename(os.path.dirname(path))
                   for path in glob.glob(os.path.join(REPO_ROOT, "extensions", "molecule", "*", "molecule.yml")))
ROLES = sorted(name for name in os.listdir(os.path.join(REPO_ROOT, "roles"))
               if os.path.isdir(os.path.join(REPO_ROOT, "roles", name)))


def test_every_role_has_a_scenario():
    missing = [role for role in ROLES if role not in SCENARIOS]
    assert not missing, f"roles without a Molecule scenario in extensions/molecule/: {', '.join(missing)}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_offline(scenario, docker_client, base_image):
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
               MOLECULE_GLOB="extensions/molecule/*/molecule.yml", IMMUTABLE_INFRA_BASE_IMAGE=BASE_IMAGE,
               MOLECULE_BAKE_NAME=image_name(f"molecule-{scenario}"), NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    result = subprocess.run([sys.executable, "-m", "molecule", "test", "-s", scenario], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-6000:]
    leftover = docker_client.containers.list(all=True, filters={"label": "owner=molecule",
                                                                "name": f"immutable-infra-molecule-{scenario}"})
    assert not leftover
