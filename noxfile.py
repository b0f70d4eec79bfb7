"""make test-matrix: the collection under every ansible-core version meta/runtime.yml admits on this
Python, one session each: ansible-test sanity, the unit tests, and the smoke test of a Galaxy install
(tests/integration/test_runtime_install.py: bake, verify and rollout in a fresh environment that holds only
that ansible-core and the collection's runtime requirements). make test runs the default version only.

Usage: .venv/bin/nox [-s "matrix(core='2.17')"] [-- sanity unit smoke]   (the parts to run; all by default)
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.envdir = ".build/nox"

ROOT = os.path.dirname(os.path.abspath(__file__))
ANSIBLE_CORE = ["2.17", "2.18", "2.19"]  # oldest to newest for Python 3.11; requires_ansible says >=2.17.0


PARTS = ("sanity", "unit", "smoke")


@nox.session
@nox.parametrize("core", ANSIBLE_CORE)
def matrix(session: nox.Session, core: str) -> None:
    parts = session.posargs or PARTS
    session.install(f"ansible-core=={core}.*", "-r", "meta/ee-requirements.txt")
    version = session.run("ansible", "--version", silent=True) or f"ansible-core {core} (not run: install only)"
    session.log(version.splitlines()[0])
    if "sanity" in parts:
        session.run(os.path.join(ROOT, "scripts", "sanity"),
                    env={"ANSIBLE_TEST": os.path.join(session.bin, "ansible-test")}, external=True)
    if "unit" in parts:
        session.run("python", "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider", "-o", "addopts=")
    if "smoke" in parts:
        # The smoke test makes its own environment with this ansible-core; the development one drives it.
        session.run(os.path.join(ROOT, ".venv", "bin", "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "tests/integration/test_runtime_install.py", env={"IMMUTABLE_INFRA_ANSIBLE_CORE": core},
                    external=True)
