"""The VM disk benchmark: a bootable qcow2 of the demo service, ours against Packer's qemu builder.

Every round, on the demo's hello role and the local base image:

cold     ansible-playbook: immutable.infra.bake (a new nonce var, so a real bake) + immutable.infra.disk
         into a new directory: the role applied to the base and a bootable qcow2 made of the result
warm     the same playbook again: both cache hits (task durations, and the playbook's wall time)
boot     immutable.infra.verify with disk: boot under qemu until SSH answers and port 8000 listens
         (boot_to_ssh, boot_to_ready), then the demo's tests over SSH
packer   Debian's packer 1.6.6, qemu builder (accelerator tcg, as ours here), booting a qcow2 of the same
         base (made once by immutable.infra.disk, not timed), the ansible provisioner applying the same
         role over SSH, shutdown, output qcow2: `packer build` wall time

Usage: .venv/bin/python bench/disk.py [--runs N] [--no-packer]   (make bench-vm)
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

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
DEMO = os.path.join(REPO_ROOT, "examples", "demo")
VENV_BIN = os.path.dirname(sys.executable)
BASE = os.environ.get("IMMUTABLE_INFRA_BASE_IMAGE", "immutable-infra/base:bookworm")
CONFIG = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
          "exposed_ports": ["8000/tcp"]}


def say(message: str) -> None:
    print(message, flush=True)


def env(workdir: str) -> dict[str, str]:
    result = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    result.update(PATH=os.pathsep.join([VENV_BIN, result.get("PATH", "/usr/bin:/bin")]), ANSIBLE_NOCOLOR="1",
                  ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_ROOT, ".build", "collections"),
                  IMMUTABLE_INFRA_LEDGER=os.path.join(workdir, "ledger.jsonl"))
    return result


def play(workdir: str, name: str, tasks: list[dict]) -> tuple[float, dict[str, dict]]:
    """Runs tasks in one playbook; (wall seconds, each task's registered result by name)."""
    saved = []
    for index, task in enumerate(tasks):
        saved.append(dict(task, register=f"r{index}"))
        saved.append({"name": f"save {index}", "ansible.builtin.copy": {
            "content": f"{{{{ r{index} | to_json }}}}", "dest": os.path.join(workdir, f"{name}-{index}.json"),
            "mode": "0644"}})
    path = os.path.join(workdir, f"{name}.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": saved}], handle)
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "ansible.cli.playbook", path], cwd=workdir, env=env(workdir),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{process.stdout[-3000:]}")
    results = {}
    for index, task in enumerate(tasks):
        with open(os.path.join(workdir, f"{name}-{index}.json"), encoding="utf-8") as handle:
            results[task["name"]] = json.load(handle)
    return wall, results


def build_tasks(nonce: str, dest: str, image: str) -> list[dict]:
    return [
        {"name": "bake", "immutable.infra.bake": {"name": image, "base": BASE, "roles": ["hello"],
                                                  "vars": {"bench_nonce": nonce}, "config": CONFIG}},
        {"name": "disk", "immutable.infra.disk": {"name": "hello", "image": "{{ r0.image_id }}", "dest": dest}},
    ]


PACKER_TEMPLATE = {
    "builders": [{
        "type": "qemu", "disk_image": True, "iso_url": "", "iso_checksum": "none", "use_backing_file": False,
        "format": "qcow2", "accelerator": "tcg", "headless": True, "memory": 1024, "disk_interface": "virtio",
        "net_device": "virtio-net", "output_directory": "", "vm_name": "hello.qcow2", "ssh_username": "root",
        "ssh_private_key_file": "", "ssh_timeout": "15m", "shutdown_command": "poweroff",
        "vnc_bind_address": "127.0.0.1", "disk_size": "2048M"}],
    "provisioners": [{"type": "ansible", "playbook_file": "", "user": "root", "use_proxy": False,
                      "ansible_env_vars": ["ANSIBLE_HOST_KEY_CHECKING=False", "ANSIBLE_NOCOLOR=1"]}],
}


def packer_setup(workdir: str) -> dict[str, str]:
    """A qcow2 of the bare base with a key for Packer's SSH, and the template; made once, not timed."""
    if not shutil.which("packer"):
        subprocess.run(["apt-get", "install", "-y", "-q", "packer"], check=True, stdout=subprocess.DEVNULL)
    key = os.path.join(workdir, "packer_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub", encoding="utf-8") as handle:
        public = handle.read().strip()
    _seconds, results = play(workdir, "packer-base", [{"name": "disk", "immutable.infra.disk": {
        "name": "base", "image": BASE, "dest": os.path.join(workdir, "base"), "ssh_authorized_keys": [public],
        "command_unit": "never"}}])
    site = os.path.join(workdir, "site.yml")
    with open(site, "w", encoding="utf-8") as handle:
        json.dump([{"hosts": "all", "roles": [os.path.join(DEMO, "roles", "hello")]}], handle)
    return {"base": results["disk"]["disk"], "key": key, "site": site}


def packer_round(workdir: str, setup: dict[str, str], index: int) -> float:
    template = json.loads(json.dumps(PACKER_TEMPLATE))
    builder = template["builders"][0]
    builder.update(iso_url="file://" + setup["base"], output_directory=os.path.join(workdir, f"packer-out-{index}"),
                   ssh_private_key_file=setup["key"])
    template["provisioners"][0]["playbook_file"] = setup["site"]
    template["provisioners"][0]["extra_arguments"] = ["--private-key", setup["key"]]
    path = os.path.join(workdir, f"packer-{index}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(template, handle)
    packer_env = dict(env(workdir), CHECKPOINT_DISABLE="1", PACKER_LOG="0")
    started = time.monotonic()
    process = subprocess.run(["packer", "build", path], cwd=workdir, env=packer_env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, check=False)
    wall = time.monotonic() - started
    shutil.rmtree(os.path.join(workdir, f"packer-out-{index}"), ignore_errors=True)
    if process.returncode != 0:
        raise SystemExit(f"packer build failed:\n{process.stdout[-3000:]}")
    return wall


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-packer", action="store_true")
    options = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-disk-", dir="/var/tmp")
    shutil.copytree(os.path.join(DEMO, "roles"), os.path.join(workdir, "roles"))  # where the bake finds hello
    image = f"bench-{uuid.uuid4().hex[:6]}/hello"
    rows: list[dict] = []
    try:
        setup = None
        if not options.no_packer:
            try:
                setup = packer_setup(workdir)
            except (SystemExit, subprocess.CalledProcessError) as error:
                say(f"packer set-up failed, measuring ours only: {str(error)[-1500:]}")
        for index in range(options.runs):
            dest = os.path.join(workdir, f"disks-{index}")
            tasks = build_tasks(uuid.uuid4().hex, dest, image)
            cold_wall, cold = play(workdir, f"cold-{index}", tasks)
            warm_wall, warm = play(workdir, f"warm-{index}", tasks)
            assert warm["disk"]["cache_hit"] and warm["bake"]["cache_hit"]
            _seconds, booted = play(workdir, f"boot-{index}", [{"name": "verify", "immutable.infra.verify": {
                "disk": cold["disk"]["disk"], "tests": [os.path.join(DEMO, "tests")], "wait_for_ports": [8000]}}])
            timings = booted["verify"]["timings"]
            row = {"cold_wall": round(cold_wall, 3), "cold_bake": cold["bake"]["duration"],
                   "cold_disk": cold["disk"]["duration"], "warm_wall": round(warm_wall, 3),
                   "warm_disk": warm["disk"]["duration"], "warm_bake": warm["bake"]["duration"],
                   "boot_to_ssh": timings["boot_to_ssh"], "boot_to_ready": timings["boot_to_ready"],
                   "tests": timings["tests"], "verify_total": timings["total"], "accel": booted["verify"]["accel"],
                   "passed": booted["verify"]["passed"]}
            if setup:
                try:
                    row["packer"] = round(packer_round(workdir, setup, index), 3)
                except SystemExit as error:
                    say(f"packer round failed: {str(error)[-2500:]}")
                    setup = None
            say(json.dumps(row))
            rows.append(row)
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        subprocess.run(["docker", "image", "ls", "-q", image], check=False, stdout=subprocess.DEVNULL)
        tags = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", image],
                              stdout=subprocess.PIPE, text=True, check=False).stdout.split()
        if tags:
            subprocess.run(["docker", "image", "rm", *tags], check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)
    keys = [key for key in rows[0] if isinstance(rows[0][key], float) and all(key in row for row in rows)]
    summary = {key: median([row[key] for row in rows]) for key in keys}
    if "packer" in summary:
        summary["packer_over_cold"] = round(summary["packer"] / summary["cold_wall"], 2)
    say("medians: " + json.dumps(summary))
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", f"disk-{time.strftime('%Y%m%dT%H%M%S')}.json"), "w",
              encoding="utf-8") as handle:
        json.dump({"rows": rows, "medians": summary}, handle, indent=2)


if __name__ == "__main__":
    main()
