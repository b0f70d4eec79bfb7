"""The release playbook (immutable.infra.release) as docs/rollout.md shows it: one vars file in the repository
that holds the roles and tests; the image baked and signed, verified, and rolled out behind a real HAProxy
through the trust gate, with the connection, ledger and signing variables reaching every module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid

from rollout_support import DEMO_DIR, HELLO_CONFIG
from support import BASE_IMAGE, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import new_key_pair
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import verdict_volume_name


def test_a_release_from_one_vars_file_is_baked_signed_verified_and_rolled_out(service, proxy, docker_client,
                                                                              tmp_path):
    project = tmp_path / "repository"
    (project / "tests").mkdir(parents=True)
    os.symlink(os.path.join(DEMO_DIR, "roles"), project / "roles")
    (project / "tests" / "test_hello.py").write_text(
        open(os.path.join(DEMO_DIR, "tests", "test_hello.py"), encoding="utf-8").read(), encoding="utf-8")
    for name, text in zip(("release.key", "release.pub"), new_key_pair(), strict=True):
        (project / name).write_text(text, encoding="utf-8")
    ledger = tmp_path / "ledger.jsonl"
    release = {
        "release_image": image_name("release"), "release_base": BASE_IMAGE, "release_roles": ["hello"],
        "release_vars": {"hello_version": "1.0", "test_nonce": uuid.uuid4().hex}, "release_config": HELLO_CONFIG,
        "release_tests": ["tests/test_hello.py"], "release_service": service, "release_replicas": 2,
        "release_port": 8000, "release_health": {"http_path": "/healthz", "interval": 0.2},
        "release_balancer": {"runtime_api": proxy.runtime_api, "backend": "web"},
        "release_signing_key": "release.key", "release_rollout_trust": {"keys": ["release.pub"]},
        "release_rollout_drain_timeout": 5, "release_timeout": 120, "release_ledger": str(ledger)}
    (project / "release.yml").write_text(json.dumps(release), encoding="utf-8")
    process = subprocess.run([sys.executable, "-m", "ansible.cli.playbook", "immutable.infra.release",
                              "-e", "@release.yml"], cwd=project, env=dict(os.environ, PWD=str(project)),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    assert process.returncode == 0, process.stdout[-3000:]
    records = [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines()]
    by_kind = {record["kind"]: record for record in records}
    assert {"bake", "verdict", "rollout"} <= set(by_kind), [record["kind"] for record in records]
    image_id = by_kind["bake"]["image_id"]
    try:
        assert by_kind["bake"].get("signed_by") and by_kind["verdict"].get("signed_by") == by_kind["bake"]["signed_by"]
        assert (by_kind["verdict"]["result"], by_kind["rollout"]["result"]) == ("passed", "succeeded")
        assert "verified: " in process.stdout and " tests passed" in process.stdout
        running = docker_client.containers.list(filters={"label": f"immutable.infra.service={service}"})
        assert len(running) == 2 and {host.image.id for host in running} == {image_id}
        with urllib.request.urlopen(proxy.url(path="/healthz"), timeout=5) as reply:
            assert reply.status == 200
    finally:
        for volume in docker_client.volumes.list(filters={"name": verdict_volume_name(image_id)}):
            volume.remove(force=True)
