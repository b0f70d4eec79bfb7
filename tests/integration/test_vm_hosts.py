"""VM hosts through libvirt: the example service's disks rolled out as VMs on this machine's hypervisor
(qemu:///system, TCG), behind a real HAProxy under load, with real ansible-playbook runs.

make test runs the short form (2 VMs: the gate, a rollout, the inventory reaching exactly the live VMs,
a second run that changes nothing). make test-vm (IMMUTABLE_INFRA_VM=long) also rolls 3 VMs to a second
version and back, heals drift by replacement, prunes, kills the controller at random moments, and runs
a second hypervisor reached over qemu+ssh://. VM boots are CPU-heavy: run these under the shared lock.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid

import libvirt
import pytest
from haproxy_support import BackendConfig
from rollout_support import SteadyLoad
from support import Playbooks
from test_fleet_trace import unwrapped
from test_rollout import in_balancer, kill_controller, run_in_background
from vm_support import (
    URI,
    LoopbackSshd,
    build_disks,
    key_pairs,
    leftovers,
    record_disk_verdict,
    remove_disk_copies,
    remove_service,
    service_name,
    settled,
    ssh_key,
)

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import Hypervisor
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.site import Site
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.stop_watch import start_watch

LONG = os.environ.get("IMMUTABLE_INFRA_VM") == "long"
long_form = pytest.mark.skipif(not LONG, reason="the long form runs in make test-vm (IMMUTABLE_INFRA_VM=long)")
HEALTH = {"http_path": "/healthz", "timeout": 300, "interval": 0.25}
# Checks every 250 ms as in the demo, and three missed in a row to take a VM out. A VM under TCG on two cores
# can miss one while others boot beside it or while Python starts in it for an ad hoc command; the container
# tests' timing (every 100 ms, fall 1) takes it out of the balancer then, and both VMs out at once are 503s
# that say nothing about the rollout.
VM_BACKEND = BackendConfig("web", slots=12, health_path="/healthz", check_interval="250ms", fall=3)


@pytest.fixture
def proxy(start_haproxy):
    """A real HAProxy with a `web` backend of template slots, checking /healthz at that timing."""
    return start_haproxy(VM_BACKEND)


@pytest.fixture(scope="module")
def vm_project(tmp_path_factory, base_image):
    project = str(tmp_path_factory.mktemp("vm-hosts"))
    os.symlink(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo", "roles"),
               os.path.join(project, "roles"))
    ledger = os.path.join(project, "ledger.jsonl")
    key_pairs(project, "release", "other")
    disks = build_disks(project, ["1.0", "2.0"] if LONG else ["1.0"], ledger, signing_key="release.key")
    for disk in disks.values():
        record_disk_verdict(disk)
    yield {"project": project, "ledger": ledger, "disks": disks, "key": ssh_key(project)}
    remove_disk_copies(list(disks.values()))


@pytest.fixture
def vm_service():
    name = service_name()
    yield name
    remove_service(name)


def rollout(vm_project, service, proxy, version, replicas=2, **options):
    arguments = {"service": service, "disk": vm_project["disks"][version]["disk"], "replicas": replicas, "port": 8000,
                 "vm": {"memory": 512, "vcpus": 2, "ssh_key": vm_project["key"]}, "health": HEALTH,
                 "drain_timeout": 5, "stop_timeout": 20, "ledger": vm_project["ledger"],
                 "balancer": {"runtime_api": proxy.runtime_api, "backend": "web"}}
    arguments.update(options)
    return {"name": "rollout", "immutable.infra.rollout": arguments}


def run(vm_project, *tasks, check=False):
    return Playbooks(vm_project["project"]).run(list(tasks), check=check, timeout=1800)


def ready_addresses(proxy):
    """The addresses of the web backend's servers that take traffic."""
    return sorted(address for address, state in in_balancer(proxy).values() if state == "ready")


def inventory(vm_project, service):
    config = os.path.join(vm_project["project"], f"{service}.fleet.yml")
    with open(config, "w", encoding="utf-8") as handle:
        json.dump({"plugin": "immutable.infra.fleet", "services": [service],
                   "engines": [{"name": "default", "libvirt_uri": "qemu:///system"}]}, handle)
    listed = subprocess.run([sys.executable, "-m", "ansible.cli.inventory", "-i", config, "--list"],
                            capture_output=True, text=True, check=True)
    return config, unwrapped(json.loads(listed.stdout))


def start_sshd(tmp_path, request) -> LoopbackSshd:
    """A LoopbackSshd that is stopped after the test, however it ends."""
    sshd = LoopbackSshd(str(tmp_path), ssh_key(str(tmp_path)))
    request.addfinalizer(sshd.stop)
    sshd.start()
    return sshd


def test_a_lost_hypervisor_connection_is_made_again_for_the_calls_after_it(tmp_path, request):
    """The SSH tunnel of a qemu+ssh:// hypervisor breaks (sshd ends its session): the call that finds it lost
    fails with a sentence naming the hypervisor, and the calls after it go through on a new connection, where
    the pools looked up on the old one are looked up again."""
    sshd = start_sshd(tmp_path, request)
    hypervisor = Hypervisor("hv2", sshd.uri)
    try:
        site = Site(Engine("hv2", None, libvirt_uri=sshd.uri), hypervisor)
        pool, state_pool = site.pool, site.store.pool
        hypervisor.call("list the domains", hypervisor.conn.listAllDomains, 0)
        subprocess.run(["pkill", "-P", str(sshd.process.pid)], check=True)  # the session; sshd itself listens on
        deadline = time.monotonic() + 10
        while subprocess.run(["pgrep", "-P", str(sshd.process.pid)], check=False, capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "sshd's session did not end"
            time.sleep(0.05)
        with pytest.raises(EngineUnreachable, match=r"^hypervisor hv2 \(qemu\+ssh://.*\) stopped answering while this "
                                                    r"run tried to list the domains"):
            hypervisor.call("list the domains", hypervisor.conn.listAllDomains, 0)
        again = site.pool  # the new connection is made inside it, which holds the site's lock for making pools
        assert again is not pool and again.name() == pool.name() and again.isActive()
        assert site.store.readable_pool() is not state_pool and site.store.readable_pool().isActive()
        assert isinstance(hypervisor.call("list the domains", hypervisor.conn.listAllDomains, 0), list)
        assert hypervisor.connections == 2
    finally:
        hypervisor.close()


def test_a_guest_that_ignores_its_stop_is_destroyed_at_the_deadline_through_a_lost_connection(tmp_path, request):
    """A VM whose guest ignores the ACPI power button (here no operating system at all: its firmware finds
    nothing to boot), its stop left to the detached watch over qemu+ssh://, and sshd ends the watch's session:
    the watch connects again and destroys the VM at its deadline."""
    sshd = start_sshd(tmp_path, request)
    conn = libvirt.open(URI)
    request.addfinalizer(conn.close)
    domain = conn.createXML(f"<domain type='qemu'><name>it-no-os-{uuid.uuid4().hex[:8]}</name>"
                            "<memory unit='MiB'>32</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
                            "<features><acpi/></features><devices/></domain>", 0)
    try:
        domain.shutdown()
        deadline = time.time() + 4
        start_watch(sshd.uri, domain.UUIDString(), domain.ID(), deadline)
        first = sessions_of(sshd, lambda found: found)
        subprocess.run(["kill", *first], check=True)
        again = sessions_of(sshd, lambda found: found and not set(found) & set(first))
        assert again, "the watch did not connect again"
        while running(domain) and time.time() < deadline + 20:
            time.sleep(0.2)
        assert not running(domain), "the watch did not destroy the VM"
        assert time.time() >= deadline
    finally:
        if running(domain):
            domain.destroy()


def running(domain) -> bool:
    try:
        return bool(domain.isActive())
    except libvirt.libvirtError:
        return False  # a transient domain is gone once it stops


def sessions_of(sshd: LoopbackSshd, until) -> list[str]:
    """The PIDs of sshd's sessions, once until(them) holds (within 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        found = subprocess.run(["pgrep", "-P", str(sshd.process.pid)], check=False, capture_output=True,
                               text=True).stdout.split()
        if until(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_an_unverified_disk_is_refused_and_nothing_is_made(vm_project, vm_service, proxy, tmp_path):
    copy = dict(vm_project["disks"]["1.0"])
    with open(copy["manifest"], encoding="utf-8") as handle:
        manifest = json.load(handle)
    manifest["verdict"] = None
    copy["manifest"] = str(tmp_path / os.path.basename(copy["manifest"]))
    os.symlink(copy["disk"], tmp_path / os.path.basename(copy["disk"]))
    with open(copy["manifest"], "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    task = rollout(vm_project, vm_service, proxy, "1.0")
    task["immutable.infra.rollout"]["disk"] = str(tmp_path / os.path.basename(copy["disk"]))
    result = run(vm_project, task)["rollout"]
    assert result["failed"] and "has no passing verdict" in result["msg"], result["msg"]
    assert "Nothing was changed" in result["msg"]
    assert leftovers(vm_service).domains == {}


def test_a_disk_its_trusted_key_did_not_sign_is_refused_and_nothing_is_made(vm_project, vm_service, proxy):
    other = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0", trust={"keys": ["other.pub"]}))["rollout"]
    assert other["failed"] and "is not trusted: its provenance is signed by another key" in other["msg"], other["msg"]
    unverified = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0", trust={"keys": ["release.pub"]}))
    message = unverified["rollout"]["msg"]
    assert unverified["rollout"]["failed"] and message.startswith("Disk hello-"), message
    assert message.endswith("is not trusted: it has no test result attestation. Nothing was changed."), message
    assert leftovers(vm_service).domains == {}


def test_two_vms_roll_out_and_the_inventory_reaches_exactly_the_live_ones(vm_project, vm_service, proxy):
    trust = {"keys": ["release.pub"], "require": ["provenance", "sbom"]}  # the test result comes from verify
    first = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0", trust=trust))["rollout"]
    assert not first.get("failed"), first.get("msg")
    with open(vm_project["ledger"], encoding="utf-8") as handle:
        record = [json.loads(line) for line in handle if f'"{first["rollout_id"]}"' in line][-1]
    assert record["result"] == "succeeded" and set(record["trusted"]) == {"provenance", "sbom"}, record
    assert first["live"] == [f"{vm_service}-1-1", f"{vm_service}-1-2"]
    assert first["image_id"] == vm_project["disks"]["1.0"]["disk_digest"]
    config, listed = inventory(vm_project, vm_service)
    live = sorted(listed[f"{vm_service}_live"]["hosts"])
    assert live == first["live"]
    addresses = sorted(listed["_meta"]["hostvars"][name]["ansible_host"] for name in live)
    assert ready_addresses(proxy) == addresses
    for name in live:
        variables = listed["_meta"]["hostvars"][name]
        assert variables["ansible_user"] == "root" and variables["ansible_ssh_private_key_file"] == vm_project["key"]
    with SteadyLoad(proxy.url(), rate=20, max_seconds=600) as load:
        pinged = subprocess.run([sys.executable, "-m", "ansible.cli.adhoc", "-i", config, f"{vm_service}_live", "-m",
                                 "ansible.builtin.ping"], capture_output=True, text=True, check=False,
                                env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
        again = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0"))["rollout"]
    assert pinged.returncode == 0, pinged.stdout[-2000:] + pinged.stderr[-2000:]
    assert sorted(line.split(" |")[0] for line in pinged.stdout.splitlines() if "| SUCCESS" in line) == live
    assert again["changed"] is False and again["kind"] == "noop", again.get("msg")
    assert load.summary()["failed"] == 0 and load.summary()["answers_by_version"] == {"1.0": load.summary()["sent"]}, \
        (load.summary(), proxy.server_events())
    assert leftovers(vm_service).orphans() == []


@long_form
def test_three_vms_to_a_second_version_and_back_drop_no_request(vm_project, vm_service, proxy):
    run(vm_project, rollout(vm_project, vm_service, proxy, "1.0", replicas=3))
    with SteadyLoad(proxy.url(), rate=30, max_seconds=1800) as load:
        second = run(vm_project, rollout(vm_project, vm_service, proxy, "2.0", replicas=3))["rollout"]
        back = run(vm_project, {"name": "rollback", "immutable.infra.rollback": {
            "service": vm_service, "ledger": vm_project["ledger"], "drain_timeout": 5, "stop_timeout": 20}})["rollback"]
    assert not second.get("failed"), second.get("msg")
    assert second["live"] == [f"{vm_service}-2-{index}" for index in (1, 2, 3)]
    assert not back.get("failed"), back.get("msg")
    assert back["fast_path"] and back["live"] == [f"{vm_service}-1-{index}" for index in (1, 2, 3)]
    assert load.summary()["failed"] == 0, load.summary()
    assert set(load.summary()["answers_by_version"]) == {"1.0", "2.0"}
    found = settled(vm_service, back["live"])
    assert sorted(name for name, state in found.domains.items() if state == "running") == back["live"]
    assert found.orphans() == []
    history = run(vm_project, {"name": "history", "immutable.infra.history": {
        "service": vm_service, "ledger": vm_project["ledger"]}})["history"]
    assert history["live_revision"] == 3 and history["revisions"][0]["verdict"]["result"] == "passed"


@long_form
def test_drift_is_found_over_ssh_and_healed_by_replacement(vm_project, vm_service, proxy):
    first = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0"))["rollout"]
    _config, listed = inventory(vm_project, vm_service)
    address = listed["_meta"]["hostvars"][first["live"][0]]["ansible_host"]
    drift = {"name": "drift", "immutable.infra.drift": {"service": vm_service, "ledger": vm_project["ledger"],
                                                        "drain_timeout": 5, "stop_timeout": 20}}
    assert run(vm_project, drift)["drift"]["drifted"] == []
    subprocess.run(["ssh", "-i", vm_project["key"], "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    f"root@{address}", "echo edited >> /etc/hello/hello.json"], check=True, capture_output=True)
    found = run(vm_project, drift)["drift"]
    assert [entry["host"] for entry in found["drifted"]] == [first["live"][0]]
    assert found["drifted"][0]["reasons"] == ["filesystem: file /etc/hello/hello.json changed since boot"]
    with SteadyLoad(proxy.url(), rate=20, max_seconds=900) as load:
        healed = run(vm_project, {"name": "heal", "immutable.infra.drift": dict(drift["immutable.infra.drift"],
                                                                                heal=True)})["heal"]
    assert healed["healed"] == [{"host": first["live"][0], "replacement": f"{vm_service}-1-3"}], healed.get("msg")
    assert load.summary()["failed"] == 0, load.summary()
    assert leftovers(vm_service).orphans() == []


@long_form
def test_prune_removes_old_generations_and_keeps_what_is_needed(vm_project, vm_service, proxy):
    for version, memory in (("1.0", 512), ("2.0", 512), ("1.0", 640)):  # three generations
        rolled = run(vm_project, rollout(vm_project, vm_service, proxy, version, replicas=1, keep_previous=2,
                                         vm={"memory": memory, "vcpus": 2, "ssh_key": vm_project["key"]}))["rollout"]
    settled(vm_service, rolled["live"])  # a VM still powering off counts as running, so its generation as live
    pruned = run(vm_project, {"name": "prune", "immutable.infra.prune": {
        "service": vm_service, "keep_previous": 1, "min_age": 0, "ledger": vm_project["ledger"],
        "engines": [{"name": "default", "libvirt_uri": "qemu:///system"}]}})["prune"]
    assert not pruned.get("failed"), pruned.get("msg")
    assert [entry["name"] for entry in pruned["removed"]["hosts"]] == [f"{vm_service}-1-1"]
    used = {vm_project["disks"][version]["disk_digest"] for version in ("1.0", "2.0")}  # by generations that stay
    assert not used & {entry["id"] for entry in pruned["removed"]["images"]}
    found = leftovers(vm_service)
    assert sorted(found.domains) == [f"{vm_service}-2-1", f"{vm_service}-3-1"]
    assert found.orphans() == []


@long_form
def test_a_controller_killed_at_random_moments_converges_on_the_next_run(vm_project, vm_service, proxy, tmp_path):
    run(vm_project, rollout(vm_project, vm_service, proxy, "1.0"))
    chooser = random.Random(int(os.environ.get("IMMUTABLE_INFRA_SEED", "0")) or None)
    with SteadyLoad(proxy.url(), rate=20, max_seconds=3600) as load:
        for round_number in range(5):
            # Another version and memory each round: every round makes new VMs and removes old ones.
            version = "2.0" if round_number % 2 == 0 else "1.0"
            task = rollout(vm_project, vm_service, proxy, version, vm={
                "memory": 520 + 8 * round_number, "vcpus": 2, "ssh_key": vm_project["key"]})
            process = run_in_background(str(tmp_path), task)
            time.sleep(chooser.uniform(3, 60))
            kill_controller(process.pid)
            process.wait()
            rerun = run(vm_project, task)["rollout"]
            assert not rerun.get("failed"), rerun.get("msg")
            found = settled(vm_service, rerun["live"])
            assert sorted(name for name, state in found.domains.items() if state == "running") == rerun["live"]
            assert found.orphans() == [], f"round {round_number}: {found}"
    assert load.summary()["failed"] == 0, (load.summary(), proxy.server_events())


@long_form
def test_two_hypervisors_one_over_ssh_and_a_hypervisor_that_is_down_is_one_sentence(vm_project, vm_service, proxy,
                                                                                    tmp_path):
    sshd = LoopbackSshd(str(tmp_path), vm_project["key"])
    sshd.start()
    try:
        engines = [{"name": "hv1", "libvirt_uri": "qemu:///system"}, {"name": "hv2", "libvirt_uri": sshd.uri}]
        first = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0", engines=engines))["rollout"]
        assert not first.get("failed"), first.get("msg")
        assert first["hosts"] == {f"{vm_service}-1-1": "hv1", f"{vm_service}-1-2": "hv2"}
        assert [engine["up"] for engine in first["engines"]] == [True, True]
        sshd.stop()
        down = run(vm_project, rollout(vm_project, vm_service, proxy, "1.0", replicas=3, engines=engines))["rollout"]
        assert down["failed"] and down["msg"].startswith("Hypervisor(s) hv2 cannot be reached"), down["msg"]
        assert down["msg"].endswith("Nothing was changed.") and down["engines_down"] == ["hv2"]
        assert sorted(leftovers(vm_service).domains) == first["live"]
    finally:
        sshd.stop()
