"""The VM rollout benchmark: 3 VM hosts of the example hello service replaced under steady load, three ways.

Two versions of the hello role are baked, made disks (immutable.infra.disk, with acpi-support-base) and
verified by booting them (immutable.infra.verify), once (bench/vm-release.yml). Every VM runs on this
machine's hypervisor (qemu:///system, TCG), on the collection's own libvirt network, with 512 MiB and
2 vCPUs. One HAProxy on 127.0.0.1 fronts two fleets of 3 VMs, one frontend and backend each, checked
with GET /healthz every 250 ms (rise 1, fall 2). Every round, each approach replaces its 3 VMs running
version A with 3 running version B (A and B swap every round) while scripts/steady_load.py sends
LOAD_RATE requests per second to that approach's frontend and counts the ones that fail:

ours   immutable.infra.rollout, rolling, batch_size 1, health GET /healthz every 0.25 s, defaults
       otherwise, in a real ansible-playbook run (bench/vm-ours.yml); a new vm.memory each round, so
       that every round makes new VMs (the generation kept shut off is never started again)
naive  the way a Terraform-style tool replaces a VM whose disk changed: for each VM in turn, destroy
       and undefine it, make a new overlay of the new disk, define and start it with the same MAC (so
       the same reserved address, which HAProxy holds as a static server), and wait until it answers
       /healthz with 200; the time runs until HAProxy reports all 3 servers up again
floor  3 new VMs of version B made one after another with virsh (qemu-img overlay, virsh define,
       virsh start), each followed by polling its /healthz every 20 ms until the first 200; nothing is
       stopped or swapped (the load goes to ours' fleet meanwhile, whose 3 VMs keep running)

The order of the approaches rotates by one place per round. Every domain, overlay, address and image
made here carries the run's id in its name (bench-<run>-..., service bvm<run>) and is removed at the
end with the HAProxy process, however the benchmark ends.

Usage: .venv/bin/python bench/run.py vm_rollout [--runs N] [--base IMAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from measure import (
    BENCH_DIR,
    COLLECTIONS_PATH,
    HAPROXY,
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    bench_env,
    command_version,
    ensure_base_image,
    ensure_collection_link,
    first_200,
    free_port,
    machine_facts,
    play_results,
    run_checked,
    run_timed,
    say,
    server_stats,
    servers_up,
    start_haproxy_process,
    stop_haproxy,
    summary,
    under_steady_load,
)

sys.path.insert(0, COLLECTIONS_PATH)

ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]
NETWORK = "immutable-infra"
REPLICAS = 3
PORT = 8000
VERSIONS = ("1.0", "2.0")
LOAD_RATE = 30.0
BOOT_TIMEOUT = 300.0
FLOOR_POLL = 0.02
APPROACHES = ("ours", "naive", "floor")
FIRST_STATIC = 200  # the naive fleet's and the floor's addresses: .200 and up of the network's /24
DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>512</memory><vcpu>2</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{overlay}'/>
<target dev='vda' bus='virtio'/></disk><interface type='network'><source network='{network}'/>
<mac address='{mac}'/><model type='virtio'/></interface><rng model='virtio'><backend model='random'>/dev/urandom</backend>
</rng><memballoon model='none'/></devices></domain>"""


@dataclass
class Bench:
    run_id: str
    base: str
    workdir: str
    disks: dict[str, str] = field(default_factory=dict)  # version -> disk file
    digests: dict[str, str] = field(default_factory=dict)  # version -> its digest
    key: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    haproxy: subprocess.Popen | None = None
    static: list[tuple[str, str, str]] = field(default_factory=list)  # (name, mac, address) of naive + floor VMs

    @property
    def service(self) -> str:
        return f"bvm{self.run_id}"

    @property
    def runtime_api(self) -> str:
        return os.path.join(self.workdir, "admin.sock")

    def url(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.ports[backend]}/"

    def ansible_env(self) -> dict[str, str]:
        return bench_env({"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS_PATH, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                          "IMMUTABLE_INFRA_LEDGER": os.path.join(self.workdir, "ledger.jsonl")})


def virsh(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*VIRSH, *arguments], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BenchError(f"virsh {' '.join(arguments)} failed: {done.stderr.strip()}")
    return done


def release(bench: Bench) -> None:
    """Bakes, builds and verifies both disks (reused when they exist with a passing verdict)."""
    extra = {"bench_image": f"bench-vm-{bench.run_id}/hello", "bench_disks": os.path.join(bench.workdir, "disks"),
             "bench_base": bench.base}
    timed = run_checked([ANSIBLE_PLAYBOOK, os.path.join(BENCH_DIR, "vm-release.yml"), "-e", json.dumps(extra)],
                        env=bench.ansible_env(), cwd=os.path.join(REPO_ROOT, "examples", "demo"))
    built = play_results(timed)[1]["results"]
    bench.disks = {entry["item"]["item"]: entry["disk"] for entry in built}
    bench.digests = {entry["item"]["item"]: entry["disk_digest"] for entry in built}
    bench.key = os.path.join(bench.workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", bench.key], check=True)


def ours(bench: Bench, version: str, round_label: str) -> dict[str, Any]:
    extra = {"bench_service": bench.service, "bench_disk": bench.disks[version], "bench_key": bench.key,
             "bench_memory": 512 + int(round_label), "bench_runtime_api": bench.runtime_api, "bench_backend": "ours"}
    timed = run_timed([ANSIBLE_PLAYBOOK, os.path.join(BENCH_DIR, "vm-ours.yml"), "-e", json.dumps(extra)],
                      env=bench.ansible_env(), cwd=BENCH_DIR)
    result = play_results(timed)[0]
    if timed.returncode != 0 or result.get("failed") or not result.get("changed"):
        raise BenchError(f"the VM rollout to {version} failed: {result.get('msg')}\n{timed.tail()}")
    if servers_up(bench.runtime_api, "ours") != REPLICAS:
        servers = [(row.get("svname"), row.get("addr"), row.get("status"), row.get("check_desc"))
                   for row in server_stats(bench.runtime_api, "ours")]
        raise BenchError(f"after the VM rollout HAProxy does not report 3 servers up: {servers}\n{timed.tail()}")
    healthy = [float(line.split("healthy after ")[1].split(" s")[0]) for _offset, line in timed.lines
               if "healthy after" in line]
    return {"wall": round(timed.wall, 3), "task": result["duration"], "generation": result["generation"],
            "until_healthy": healthy}


# the naive fleet and the floor: VMs made with virsh --------------------------------------------
def static_vm(bench: Bench, name: str, disk: str) -> None:
    """An overlay of the disk and a domain with the VM's fixed MAC (defined, not started)."""
    _name, mac, _address = next(entry for entry in bench.static if entry[0] == name)
    overlay = os.path.join(bench.workdir, "overlays", f"{name}.qcow2")
    if os.path.exists(overlay):
        os.unlink(overlay)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, overlay], check=True)
    path = os.path.join(bench.workdir, f"{name}.xml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(DOMAIN.format(name=name, overlay=overlay, network=NETWORK, mac=mac))
    virsh("define", path)


def remove_vm(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, check=False)


def address_of(bench: Bench, name: str) -> str:
    return next(address for entry_name, _mac, address in bench.static if entry_name == name)


def naive(bench: Bench, version: str) -> dict[str, Any]:
    started = time.monotonic()
    for index in range(1, REPLICAS + 1):
        name = f"bench-{bench.run_id}-naive-{index}"
        remove_vm(name)
        static_vm(bench, name, bench.disks[version])
        virsh("start", name)
        first_200(address_of(bench, name), PORT, BOOT_TIMEOUT, FLOOR_POLL)
    command = time.monotonic() - started
    while servers_up(bench.runtime_api, "naive") < REPLICAS:
        if time.monotonic() - started > command + 60:
            raise BenchError("HAProxy did not report the naive fleet up within 60 s of its last VM answering")
        time.sleep(0.05)
    return {"command": round(command, 3), "wall": round(time.monotonic() - started, 3)}


def floor(bench: Bench, version: str, round_label: str) -> dict[str, Any]:
    """3 new VMs of the version, one after another with virsh, each until its first 200; removed afterwards."""
    names = [f"bench-{bench.run_id}-floor-{index}" for index in range(1, REPLICAS + 1)]
    until_200 = []
    try:
        started = time.monotonic()
        for name in names:
            static_vm(bench, name, bench.disks[version])
            virsh("start", name)
            running = time.monotonic()
            first_200(address_of(bench, name), PORT, BOOT_TIMEOUT, FLOOR_POLL)
            until_200.append(time.monotonic() - running)
        wall = time.monotonic() - started
    finally:
        for name in names:
            remove_vm(name)
    return {"wall": round(wall, 3), "until_200": round(sum(until_200), 3), "round": round_label}


# set-up --------------------------------------------------------------------------------------------
def reserve_static(bench: Bench) -> None:
    """Fixed MACs and addresses (.200 up) on the collection's network for the naive fleet and the floor."""
    xml = virsh("net-dumpxml", NETWORK).stdout
    gateway = xml.split("<ip address='", 1)[1].split("'", 1)[0]
    prefix = gateway.rsplit(".", 1)[0]
    names = [f"bench-{bench.run_id}-{kind}-{index}" for kind in ("naive", "floor") for index in range(1, REPLICAS + 1)]
    for offset, name in enumerate(names):
        mac, address = f"52:54:00:be:{offset:02x}:{int(bench.run_id[:2], 16):02x}", f"{prefix}.{FIRST_STATIC + offset}"
        virsh("net-update", NETWORK, "add", "ip-dhcp-host", f"<host mac='{mac}' name='{name}' ip='{address}'/>",
              "--live", "--config")
        bench.static.append((name, mac, address))


def haproxy_config(bench: Bench) -> str:
    naive = [f"    server naive{index} {address_of(bench, f'bench-{bench.run_id}-naive-{index}')}:{PORT} check"
             for index in range(1, REPLICAS + 1)]
    lines = ["global", f"    stats socket {bench.runtime_api} mode 600 level admin", "defaults", "    mode http",
             "    timeout connect 1s", "    timeout client 10s", "    timeout server 10s", "    timeout check 1s",
             "    option redispatch", "    retries 3"]
    for backend in ("ours", "naive"):
        lines += [f"frontend fe_{backend}", f"    bind 127.0.0.1:{bench.ports[backend]}", f"    default_backend {backend}",
                  f"backend {backend}", "    balance roundrobin", "    option httpchk GET /healthz",
                  "    http-check expect status 200", "    default-server inter 250ms rise 1 fall 2"]
        lines += naive if backend == "naive" else ["    server-template slot 1-8 0.0.0.0:80 check disabled"]
    path = os.path.join(bench.workdir, "haproxy.cfg")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def prepare(bench: Bench) -> None:
    """The collection's network (made as a rollout makes it), the static addresses, HAProxy, and both fleets
    on VERSIONS[0]."""
    from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import Hypervisor
    from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.network import VmNetwork

    VmNetwork(Hypervisor("default", "qemu:///system"), NETWORK, owned=True, local=True)
    reserve_static(bench)
    bench.ports = {backend: free_port() for backend in ("ours", "naive")}
    bench.haproxy = start_haproxy_process(haproxy_config(bench), bench.runtime_api,
                                          os.path.join(bench.workdir, "haproxy.log"))
    say(f"  first rollout of ours ({VERSIONS[0]}) and the naive fleet")
    ours(bench, VERSIONS[0], "0")
    naive(bench, VERSIONS[0])


# rounds and the report -----------------------------------------------------------------------------
def measure_round(bench: Bench, round_index: int, runs: int) -> dict[str, Any]:
    source, target = VERSIONS if round_index % 2 == 0 else VERSIONS[::-1]
    label = str(round_index + 1)
    steps = {"ours": ("ours", lambda: ours(bench, target, label)), "naive": ("naive", lambda: naive(bench, target)),
             "floor": ("ours", lambda: floor(bench, target, label))}
    shift = round_index % len(APPROACHES)
    order = list(APPROACHES[shift:] + APPROACHES[:shift])
    measured: dict[str, Any] = {"round": round_index + 1, "from": source, "to": target, "order": order}
    for approach in order:
        load_average = os.getloadavg()[0]
        backend, action = steps[approach]
        measured[approach] = dict(under_steady_load(bench.url(backend), LOAD_RATE, action),
                                  load_before=round(load_average, 2))
        entry = measured[approach]
        task = f" (task {entry['task']:.2f} s)" if "task" in entry else ""
        say(f"  round {round_index + 1}/{runs}: {approach} {source} -> {target} {entry['wall']:.2f} s{task}, "
            f"{entry['sent']} requests, {entry['failed']} failed (load average {load_average:.2f})")
    return measured


MEASUREMENTS = (("ours", "wall", "ours, rolling: ansible-playbook"), ("ours", "task", "ours, rolling: task duration"),
                ("naive", "command", "naive: destroy, create, wait (each VM)"),
                ("naive", "wall", "naive ... until HAProxy has all 3 up"),
                ("floor", "wall", "floor: 3 x (virsh define, start, first 200)"),
                ("floor", "until_200", "floor: of which until the first 200"))


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    stats = {f"{approach}.{key}": summary(measured[approach][key] for measured in rounds)
             for approach, key, _title in MEASUREMENTS}
    floor_median, naive_median = stats["floor.wall"]["median"], stats["naive.wall"]["median"]
    return {"stats": stats,
            "ratios": {f"{key}/floor": round(stats[key]["median"] / floor_median, 3) for key in stats}
            | {f"{key}/naive": round(stats[key]["median"] / naive_median, 3) for key in stats},
            "per_round": {f"ours.{key}/floor": [round(measured["ours"][key] / measured["floor"]["wall"], 3)
                                                for measured in rounds] for key in ("wall", "task")},
            "failed": {approach: [measured[approach]["failed"] for measured in rounds] for approach in APPROACHES},
            "sent": {approach: [measured[approach]["sent"] for measured in rounds] for approach in APPROACHES}}


def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = result["summary"]
    rows = []
    for approach, key, title in MEASUREMENTS:
        stats = found["stats"][f"{approach}.{key}"]
        rows.append([title, f"{stats['median']:.2f}", f"{stats['min']:.2f}", f"{stats['max']:.2f}",
                     f"{found['ratios'][f'{approach}.{key}/floor']:.2f}x", f"{found['ratios'][f'{approach}.{key}/naive']:.2f}x",
                     sum(found["sent"][approach]) if key in ("wall",) else "",
                     sum(found["failed"][approach]) if key in ("wall",) else ""])
    anchor = found["ratios"]["ours.wall/floor"]
    return [{"title": "VM rollout: 3 VMs replaced under load (seconds; medians over the rounds)",
             "header": ["approach", "median", "min", "max", "/ floor", "/ naive", "requests", "failed"], "rows": rows},
            {"title": "anchor", "header": ["anchor", "target", "measured", "met"],
             "rows": [["ours ansible-playbook / floor", "<= 1.3x", f"{anchor:.2f}x", "yes" if anchor <= 1.3 else "no"],
                      ["ours, failed requests", "0", str(sum(found["failed"]["ours"])),
                       "yes" if not sum(found["failed"]["ours"]) else "no"]]}]


def cleanup(bench: Bench) -> None:
    """Removes the VMs, addresses, overlays, disks, images and the HAProxy process this run made."""
    stop_haproxy(bench.haproxy)
    from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
        service_record_name,
        verdict_volume_name,
    )
    from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
    from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import disk as disks
    from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import pool as pools
    from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.fleet import open_vm_fleet
    from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.hosts import VmHosts
    from ansible_collections.immutable.infra.plugins.plugin_utils.service.backend import HostRecord

    fleet = open_vm_fleet(parse_engines([{"name": "default", "libvirt_uri": "qemu:///system"}]))
    backend = VmHosts(fleet, bench.service)
    for host in backend.hosts():
        backend.remove(HostRecord(host.name, host.host_id, engine=host.engine))
    site = fleet.sites["default"]
    for digest in bench.digests.values():  # the disks' copies in the pool, their records and verdicts
        record = site.disk_record(digest) or {}
        for volume in [record.get(disks.LABEL_DISK_VOLUME), *disks.boot_volumes(record).values()]:
            if volume:
                pools.delete_volume(site.hypervisor, site.pool, volume)
        for name in (disks.disk_record_name(digest), verdict_volume_name(digest)):
            site.store.remove(name)
    site.store.remove(service_record_name(bench.service))
    for name, mac, address in bench.static:
        remove_vm(name)
        virsh("net-update", NETWORK, "delete", "ip-dhcp-host", f"<host mac='{mac}' name='{name}' ip='{address}'/>",
              "--live", "--config", check=False)
    images = subprocess.run(["docker", "images", "-q", f"bench-vm-{bench.run_id}/hello"], capture_output=True,
                            text=True, check=False).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True, check=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Replaces 3 hello VMs three ways for args.runs rounds; returns raw rounds, summary and tables."""
    ensure_base_image(args.base)
    ensure_collection_link()
    bench = Bench(run_id=uuid.uuid4().hex[:6], base=args.base, workdir=f"/var/tmp/bench-vm-{uuid.uuid4().hex[:6]}")
    os.makedirs(os.path.join(bench.workdir, "overlays"), mode=0o755)
    os.chmod(bench.workdir, 0o755)  # qemu runs as libvirt-qemu: it must reach the disks and overlays
    result: dict[str, Any] = {"benchmark": "vm_rollout", "run_id": bench.run_id,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "settings": {"runs": args.runs, "base": args.base, "replicas": REPLICAS,
                                           "load_rate": LOAD_RATE},
                              "machine": dict(machine_facts(), haproxy=command_version([HAPROXY, "-v"]),
                                              qemu=command_version(["qemu-system-x86_64", "--version"]),
                                              libvirt=command_version(["virsh", "--version"])), "rounds": []}
    say(f"vm_rollout: {args.runs} rounds, {REPLICAS} VMs, base {args.base}, run id {bench.run_id}")
    try:
        say("  baking, building and verifying hello 1.0 and 2.0 as disks")
        release(bench)
        prepare(bench)
        for round_index in range(args.runs):
            result["rounds"].append(measure_round(bench, round_index, args.runs))
    finally:
        cleanup(bench)
        shutil.rmtree(bench.workdir, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["summary"] = summarize(result["rounds"])
    result["tables"] = tables(result)
    return result
