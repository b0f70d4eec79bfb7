"""The VM disk benchmark: how soon a VM of the example disk is up, against the anchors, in one run.

The demo's hello service is baked and made a disk (immutable.infra.bake + immutable.infra.disk, as
make demo-vm does). Then, under plain emulation (TCG), rounds in which each approach boots the same
disk once, in turn, so that a busy machine weighs on all of them alike (bench/disk_boot.py):

ours      the collection's boot, as verify does it: direct kernel boot with the disk's small initramfs,
          2 vCPUs, a login when the console says sshd runs, port 8000 read over that SSH connection;
          with the timeline of where the time went
old way   the same disk booted as disks were booted before: firmware (SeaBIOS, syslinux, Debian's
          initramfs), qemu's default devices and CPU, 1 vCPU, the banner-then-login probe
packer    Debian's packer 1.6.6, qemu builder (tcg), booting the same qcow2 (disk_image, a copy of it)
          with the seed drive in qemuargs, timed on its output: 'Connected to SSH!', and a shell
          provisioner's line once port 8000 listens
three     three VMs of the disk at once, from their own overlays, 1 vCPU each: the last to answer SSH,
          and whether each made its own identity
verify    immutable.infra.verify with disk: and the demo's tests (what make demo-vm runs): its duration

--ablation: rounds of ours with one change of the quick path taken away at a time (disks built without
  it where it is a disk option), to see what each pays.
--before PATH: the same bake, disk and verify with the collection at PATH (an earlier tree), as users
  had it: its verify's boot_to_ssh, boot_to_ready and duration.

Usage: .venv/bin/python bench/disk.py [--runs 5] [--no-packer] [--ablation] [--before PATH]  (make bench-vm)
Raw results: bench/results/disk-<time>.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import disk_boot
from measure import BENCH_DIR, COLLECTIONS_PATH, REPO_ROOT, BenchError, bench_env, ensure_debian_package, machine_facts, run_timed, say

DEMO = os.path.join(REPO_ROOT, "examples", "demo")
BASE = os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm")
CONFIG = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
          "exposed_ports": ["8000/tcp"]}
# Disk options that take one change of the quick path away, for --ablation.
DISK_VARIANTS = {
    "all host key types (RSA, ECDSA, Ed25519)": {"ssh_host_key_types": ["rsa", "ecdsa", "ed25519"]},
    "sshd with PAM": {"sshd_pam": "always"},
    "no unit masked": {"masked_units": []},
}
# Generators a disk of the collection has nothing for (no LUKS, dm-integrity or dm-verity volumes, no GPT
# partitions to find, no hibernation, no offline updates): measured as one more change.
GENERATORS = ["systemd-cryptsetup-generator", "systemd-integritysetup-generator", "systemd-veritysetup-generator",
              "systemd-gpt-auto-generator", "systemd-hibernate-resume-generator", "systemd-system-update-generator"]


def play(workdir: str, name: str, tasks: list[dict], collections: str = COLLECTIONS_PATH) -> dict[str, dict]:
    """Runs tasks in one playbook; each task's registered result by name."""
    saved = []
    for index, task in enumerate(tasks):
        saved.append(dict(task, register=f"r{index}"))
        saved.append({"name": f"save {index}", "ansible.builtin.copy": {
            "content": f"{{{{ r{index} | to_json }}}}", "dest": os.path.join(workdir, f"{name}-{index}.json"),
            "mode": "0644"}})
    path = os.path.join(workdir, f"{name}.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": saved}], handle)
    timed = run_timed([sys.executable, "-m", "ansible.cli.playbook", path], cwd=workdir, env=bench_env({
        "ANSIBLE_COLLECTIONS_PATH": collections, "IMMUTABLE_INFRA_LEDGER": os.path.join(workdir, "ledger.jsonl")}))
    if timed.returncode != 0:
        raise BenchError(f"{name} failed:\n{timed.tail()}")
    results = {}
    for index, task in enumerate(tasks):
        with open(os.path.join(workdir, f"{name}-{index}.json"), encoding="utf-8") as handle:
            results[task["name"]] = json.load(handle)
    return results


def build(workdir: str, image: str, name: str = "disk", collections: str = COLLECTIONS_PATH,
          **options: Any) -> str:
    """The example disk (bake reused after the first), with disk options; its path."""
    built = play(workdir, f"build-{name}", [
        {"name": "bake", "immutable.infra.bake": {"name": image, "base": BASE, "roles": ["hello"], "config": CONFIG}},
        {"name": "disk", "immutable.infra.disk": dict({"name": "hello", "image": "{{ r0.image_id }}",
                                                       "dest": os.path.join(workdir, name)}, **options)}],
        collections)
    return built["disk"]["disk"]


def verify(workdir: str, disk: str, name: str, collections: str = COLLECTIONS_PATH) -> dict[str, Any]:
    result = play(workdir, name, [{"name": "verify", "immutable.infra.verify": {
        "disk": disk, "tests": [os.path.join(DEMO, "tests"), os.path.join(DEMO, "vm_tests")],
        "wait_for_ports": [8000]}}], collections)["verify"]
    if not result.get("passed"):
        raise BenchError(f"verify of {disk} did not pass: {result.get('msg')}")
    timings = result["timings"]
    return {"duration": result["duration"], "boot_to_ssh": timings.get("boot_to_ssh"),
            "boot_to_ready": timings.get("boot_to_ready"), "tests": timings.get("tests")}


def rounds(workdir: str, disk: disk_boot.Disk, runs: int, with_packer: bool) -> list[dict[str, Any]]:
    rows = []
    for index in range(runs):
        row: dict[str, Any] = {"ours": disk_boot.ours(disk), "old_way": disk_boot.OldWay(disk, workdir).run(),
                               "three": disk_boot.at_once(disk, 3), "verify": verify(workdir, disk.path, f"v{index}")}
        if with_packer:
            row["packer"] = disk_boot.packer(disk, workdir, index)
        say(json.dumps({key: ({k: v for k, v in value.items() if k != "timeline"} if isinstance(value, dict) else value)
                        for key, value in row.items()}))
        rows.append(row)
    return rows


def ablation(workdir: str, image: str, disk: disk_boot.Disk, runs: int) -> dict[str, list[dict[str, Any]]]:
    """ours with one change taken away at a time, interleaved round by round."""
    variants_built = dict(DISK_VARIANTS, **{"more: six generators masked too": {
        "masked_units": [*disk_boot.default_masked(), *GENERATORS]}})
    disks = {label: disk_boot.Disk(build(workdir, image, f"variant{index}", **options))
             for index, (label, options) in enumerate(variants_built.items())}
    variants = {
        "all changes": lambda: disk_boot.ours(disk),
        "firmware boot (SeaBIOS, syslinux, Debian's initramfs)": lambda: disk_boot.ours(disk, direct=False),
        "1 vCPU": lambda: disk_boot.ours(disk, cpus=1),
        "no ready line: a login tried every 0.2 s": lambda: disk_boot.ours(disk, ready=False),
        "qemu's default devices and CPU (no -nodefaults, svm)": lambda: _with_qemu_defaults(disk),
        **{label: (lambda variant=variant: disk_boot.ours(variant)) for label, variant in disks.items()},
    }
    found: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    for _round in range(runs):
        for label, boot_once in variants.items():
            found[label].append({key: value for key, value in boot_once().items() if key != "timeline"})
            say(f"{label}: {found[label][-1]}")
    return found


def _with_qemu_defaults(disk: disk_boot.Disk) -> dict[str, Any]:
    with disk_boot.qemu_defaults():
        return disk_boot.ours(disk)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for approach in ("ours", "old_way", "packer", "verify"):
        present = [row[approach] for row in rows if approach in row]
        if present:
            summary[approach] = {key: median([entry[key] for entry in present]) for key in present[0]
                                 if isinstance(present[0][key], (int, float))}
    single = summary["ours"]["ssh"]
    summary["three_last_ssh"] = median([row["three"]["last"] for row in rows])
    summary["three_over_single"] = round(summary["three_last_ssh"] / single, 2)
    summary["three_own_identities"] = all(row["three"]["own_identities"] for row in rows)
    summary["old_way_over_ours"] = round(summary["old_way"]["ssh"] / single, 2)
    if "packer" in summary:
        summary["packer_over_ours"] = round(summary["packer"]["ssh"] / single, 2)
    phases: dict[str, list[float]] = {}
    for row in rows:
        for phase in row["ours"]["timeline"]["phases"]:
            phases.setdefault(phase["phase"], []).append(phase["seconds"])
    summary["timeline"] = {phase: median(values) for phase, values in phases.items()}
    return summary


def before(workdir: str, collections: str, image: str, runs: int) -> dict[str, Any]:
    """The earlier tree's own disk and verify, as users had it."""
    path = build(workdir, image + "-before", "before", collections)
    found = [verify(workdir, path, f"before{index}", collections) for index in range(runs)]
    return {key: median([entry[key] for entry in found]) for key in found[0]
            if all(isinstance(entry[key], (int, float)) for entry in found)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-packer", action="store_true")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--before", help="ansible_collections path of an earlier tree, to measure it too")
    options = parser.parse_args()
    if not options.no_packer:
        ensure_debian_package("packer", "packer")
    workdir = tempfile.mkdtemp(prefix="bench-disk-", dir="/var/tmp")
    shutil.copytree(os.path.join(DEMO, "roles"), os.path.join(workdir, "roles"))  # where the bake finds hello
    image = f"bench-{uuid.uuid4().hex[:6]}/hello"
    results: dict[str, Any] = {"machine": machine_facts(), "runs": options.runs}
    try:
        disk = disk_boot.Disk(build(workdir, image))
        say(f"disk: {disk.path}")
        if options.ablation:
            results["ablation"] = ablation(workdir, image, disk, options.runs)
            results["ablation_medians"] = {label: {key: median([row[key] for row in found]) for key in ("ssh", "port")}
                                           for label, found in results["ablation"].items()}
        else:
            results["rows"] = rows = rounds(workdir, disk, options.runs, not options.no_packer)
            results["medians"] = summarise(rows)
        if options.before:
            results["before"] = before(workdir, options.before, image, max(options.runs // 2, 1))
    finally:
        tags = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"{image}*"],
                              stdout=subprocess.PIPE, text=True, check=False).stdout.split()
        if tags:
            subprocess.run(["docker", "image", "rm", *tags], check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)
    say("medians: " + json.dumps({key: value for key, value in results.items() if key not in ("rows", "ablation")},
                                 indent=1))
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", f"disk-{time.strftime('%Y%m%dT%H%M%S')}.json"), "w",
              encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
