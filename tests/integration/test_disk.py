"""VM disks: the demo service baked, made a disk, booted under qemu and tested over SSH.

One disk is built for the whole module (the fixture) and booted by the verify tests; the bad-input
tests check that nothing is left: no disk, no build container, no temporary directory, no VM.

make test boots the disk once, for a passing verdict; make test-vm (IMMUTABLE_INFRA_VM=long) also
boots it with a failing test, whose verdict logic the unit tests cover in make test.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from support import BASE_IMAGE, REPO_ROOT, Playbooks, containers_created, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.attest import sbom
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import new_key_pair

DEMO = os.path.join(REPO_ROOT, "examples", "demo")
LONG = os.environ.get("IMMUTABLE_INFRA_VM") == "long"
CONFIG = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
          "exposed_ports": ["8000/tcp"]}


def qemu_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", "immutable-infra-vm-"], stdout=subprocess.PIPE, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "qemu-system" in line]


@pytest.fixture(scope="module")
def built(tmp_path_factory, docker_client, base_image):
    project = tmp_path_factory.mktemp("disk")
    shutil.copytree(os.path.join(DEMO, "roles"), project / "roles")
    dest, ledger = str(project / "disks"), str(project / "ledger.jsonl")
    private, public = new_key_pair()
    (project / "release.key").write_text(private)
    (project / "release.pub").write_text(public)
    disk_task = {"immutable.infra.disk": {"name": "hello", "image": "{{ baked.image_id }}", "dest": dest,
                                          "ledger": ledger, "signing_key": "release.key"}}
    run = Playbooks(str(project)).run([
        {"name": "bake", "immutable.infra.bake": {"name": image_name("hello-vm"), "base": BASE_IMAGE,
                                                  "roles": ["hello"], "config": CONFIG, "ledger": ledger}},
        # set_fact keeps the bake's result across the harness's own register
        {"name": "keep", "ansible.builtin.set_fact": {"baked": "{{ step_result }}"}},
        dict(disk_task, name="disk"),
        dict(disk_task, name="again"),
    ])
    assert run["disk"].get("changed") is True, run.output[-3000:]
    return {"project": str(project), "dest": dest, "ledger": ledger, "run": run, "disk": run["disk"],
            "again": run["again"], "image_id": run["bake"]["image_id"]}


def records(ledger, kind):
    with open(ledger, encoding="utf-8") as handle:
        return [record for record in map(json.loads, handle) if record["kind"] == kind]


def verify(built, tests, **options):
    return Playbooks(built["project"]).run([{"name": "verify", "immutable.infra.verify": dict(
        disk=built["disk"]["disk"], tests=tests, ledger=built["ledger"], **options)}], timeout=900)["verify"]


def test_the_disk_records_what_went_into_it(built):
    disk = built["disk"]
    with open(disk["manifest"], encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert manifest["inputs_hash"] == disk["inputs_hash"] and manifest["image_id"] == built["image_id"]
    assert manifest["image_inputs_hash"] == disk["image_inputs_hash"] and len(disk["image_inputs_hash"]) == 64
    assert manifest["disk_digest"] == disk["disk_digest"] and manifest["disk_bytes"] == os.path.getsize(disk["disk"])
    assert manifest["kernel_release"].endswith("-cloud-amd64")
    assert {"linux-image-cloud-amd64", "systemd-sysv", "openssh-server"} <= set(manifest["packages"])
    qemu_info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", disk["disk"]],
                                          stdout=subprocess.PIPE, text=True, check=True).stdout)
    assert qemu_info["format"] == "qcow2" and qemu_info["virtual-size"] == 2 * 1024 ** 3
    # The role enabled its own unit for the image's command, so no second one was written.
    assert manifest["command_unit"] is False
    [record] = [r for r in records(built["ledger"], "disk") if r["inputs_hash"] == disk["inputs_hash"]]
    assert record["result"] == "succeeded" and record["disk_digest"] == disk["disk_digest"]
    # signed: provenance and SBOM beside the disk, bound to its digest; the SBOM lists the boot packages too
    assert record["signed_by"] == disk["signed_by"] == manifest["signed_by"]
    with open(disk["disk"].rsplit(".", 1)[0] + ".cdx.json", encoding="utf-8") as handle:
        document = json.load(handle)
    assert sbom.validation_errors(document) is None
    assert document["metadata"]["component"]["hashes"][0]["content"] == disk["disk_digest"][7:]
    assert sbom.packages_in(document)["openssh-server"] == manifest["packages"]["openssh-server"]


def test_the_same_inputs_give_the_same_disk_back(built):
    again = built["again"]
    assert again["changed"] is False and again["cache_hit"] is True
    assert again["disk"] == built["disk"]["disk"] and again["disk_digest"] == built["disk"]["disk_digest"]
    assert again["duration"] < 1.0, again["duration"]
    assert len(records(built["ledger"], "disk")) == 1  # cache hits are not recorded


def test_the_disk_boots_and_the_image_tests_pass_against_the_vm(built):
    result = verify(built, [os.path.join(DEMO, "tests"), os.path.join(DEMO, "vm_tests")], wait_for_ports=[8000],
                    signing_key="release.key")
    assert result.get("passed") is True, result.get("msg")
    assert result["tests"]["failed"] == 0 and result["tests"]["passed"] >= 7
    assert result["disk_digest"] == built["disk"]["disk_digest"] and result["accel"] in ("kvm", "tcg")
    assert result["timings"]["boot_to_ssh"] > 0
    with open(built["disk"]["manifest"], encoding="utf-8") as handle:
        verdict = json.load(handle)["verdict"]
    assert verdict["result"] == "passed" and verdict["disk_digest"] == result["disk_digest"]
    [record] = records(built["ledger"], "disk_verdict")[-1:]
    assert record["id"] == verdict["ledger_id"] and record["result"] == "passed"
    assert not qemu_processes() and not glob.glob("/tmp/immutable-infra-vm-*")
    # The build and its verdict show in the service's history.
    history = Playbooks(built["project"]).run([{"name": "history", "immutable.infra.history": {
        "service": "hello", "ledger": built["ledger"]}}])["history"]
    [entry] = history["disks"]
    assert (entry["disk"], entry["exists"], entry["disk_digest"]) == (built["disk"]["disk"], True, result["disk_digest"])
    assert entry["image_id"] == built["image_id"] and entry["inputs_hash"] == built["disk"]["inputs_hash"]
    assert entry["kernel_release"] == built["disk"]["kernel_release"] and entry["result"] == "succeeded"
    assert entry["verdict"]["result"] == "passed" and entry["verdict"]["ledger_id"] == record["id"]
    assert any(os.path.basename(entry["disk"]) in line and "passed" in line for line in history["table"]), \
        history["table"]
    # the disk's signed provenance, SBOM and passing test result pass the trust check, as the gate makes it
    attested = Playbooks(built["project"]).run([{"name": "attest", "immutable.infra.attest": {
        "disk": built["disk"]["disk"], "trust": {"keys": ["release.pub"]}}}])["attest"]
    assert sorted(attested.get("trusted") or {}) == ["provenance", "sbom", "test_result"], attested.get("msg")
    assert attested["attestations"]["test_result"]["summary"]["where"]["host"] == "vm"


@pytest.mark.skipif(not LONG, reason="a second boot under TCG: in the long VM suite only (make test-vm)")
def test_a_failing_test_fails_the_verdict(built, tmp_path):
    failing = tmp_path / "test_wrong.py"
    failing.write_text("def test_hostname_is_web(host):\n    assert host.check_output('hostname') == 'web'\n")
    result = verify(built, [str(failing)], wait_for_ports=[])
    assert result.get("failed") is True and result["passed"] is False
    assert "test_hostname_is_web" in result["msg"]
    with open(built["disk"]["manifest"], encoding="utf-8") as handle:
        assert json.load(handle)["verdict"]["result"] == "failed"
    assert not qemu_processes() and not glob.glob("/tmp/immutable-infra-vm-*")


def vm_workdirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "immutable-infra-vm-*")))


def test_ctrl_c_while_the_vm_boots_stops_it_and_removes_its_overlay(built):
    before, verdicts = vm_workdirs(), len(records(built["ledger"], "disk_verdict"))
    playbook = os.path.join(built["project"], "interrupted.yml")
    with open(playbook, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{"immutable.infra.verify": {
            "disk": built["disk"]["disk"], "tests": [os.path.join(DEMO, "tests")], "ledger": built["ledger"]}}]}],
            handle)
    process = subprocess.Popen([sys.executable, "-m", "ansible.cli.playbook", playbook], cwd=built["project"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # this run's VM: a new work directory with an overlay, and a qemu booting from it
            started = [path for path in vm_workdirs() - before if os.path.exists(os.path.join(path, "overlay.qcow2"))]
            if started and any(started[0] in line for line in qemu_processes()):
                break
            assert time.monotonic() < deadline and process.poll() is None, "the VM never started"
            time.sleep(0.2)
        time.sleep(2)  # booting, well before SSH answers
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends ansible-playbook
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, output[-2000:]
    assert "the VM answers on SSH" not in output
    deadline = time.monotonic() + 20
    while any(started[0] in line for line in qemu_processes()) or os.path.exists(started[0]):
        assert time.monotonic() < deadline, f"left behind: {qemu_processes()}, {glob.glob(started[0] + '/*')}"
        time.sleep(0.2)
    assert not glob.glob("/tmp/immutable-infra-kvm-probe-*")
    assert len(records(built["ledger"], "disk_verdict")) == verdicts  # an interrupted verify is no verdict


@pytest.mark.parametrize("options, message", [
    ({"format": "vmdk"}, "value of format must be one of: qcow2, raw, got: vmdk"),
    ({"size": "256M"}, "size 256M is too small for this image"),
    ({"kernel_package": "linux-image-does-not-exist"},
     "Kernel package linux-image-does-not-exist is not available from the image's package sources"),
])
def test_bad_input_is_one_sentence_and_leaves_nothing(built, docker_client, options, message, tmp_path):
    dest = str(tmp_path / "disks")
    since = time.time()
    result = Playbooks(built["project"]).run([{"name": "disk", "immutable.infra.disk": dict(
        name="bad", image=built["image_id"], dest=dest, ledger=built["ledger"], **options)}])["disk"]
    assert result.get("failed") is True and message in result["msg"], result.get("msg")
    assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
    assert not os.path.exists(dest) or os.listdir(dest) == []
    leftovers = [name for name in containers_created(docker_client, since, ("immutable-infra-disk-",))
                 if docker_client.containers.list(all=True, filters={"name": name})]
    assert leftovers == []
