"""The VMs' network and the disk gate: pure parts, no libvirt."""

from __future__ import annotations

import ipaddress
import json
from xml.etree import ElementTree

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors import disk as disks
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.network import (
    Reservation,
    bridge_name,
    free_address,
    local_routes,
    network_xml,
    pick_subnet,
    reservations,
    subnet_of,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.store import decode, encode
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.assemble import file_digest

DIGEST = "sha256:" + "ab" * 32


def test_the_network_is_isolated_with_a_range_over_every_reserved_address_and_no_ping():
    xml = network_xml("immutable-infra", "10.214.3.0/24")
    network = ElementTree.fromstring(xml)
    assert network.find("forward") is None  # isolated: the hypervisor's machine and its VMs only
    assert len(network.find("bridge").get("name")) <= 15 and network.find("bridge").get("name") == bridge_name("immutable-infra")
    assert network.find("./ip/dhcp/range").attrib == {"start": "10.214.3.10", "end": "10.214.3.254"}
    assert "no-ping" in xml and subnet_of(xml) == ipaddress.IPv4Network("10.214.3.0/24")


def test_a_subnet_is_picked_that_nothing_else_uses():
    used = [ipaddress.IPv4Network("10.214.0.0/24"), ipaddress.IPv4Network("10.214.1.128/25")]
    assert pick_subnet(used) == "10.214.2.0/24"
    assert pick_subnet([ipaddress.IPv4Network("10.0.0.0/8")]) is None


def test_addresses_are_reserved_from_the_lowest_free_one():
    subnet = ipaddress.IPv4Network("10.214.0.0/24")
    assert free_address(subnet, []) == "10.214.0.10"
    assert free_address(subnet, ["10.214.0.10", "10.214.0.11", "10.214.0.13"]) == "10.214.0.12"
    assert free_address(subnet, [f"10.214.0.{last}" for last in range(10, 249)]) == "10.214.0.249"  # the last one
    assert free_address(subnet, [f"10.214.0.{last}" for last in range(10, 250)]) is None


def test_reservations_are_read_with_their_lease_so_that_they_can_be_deleted_as_made():
    entry = Reservation("52:54:00:00:00:01", "web-1-1", "10.214.0.10")
    xml = (f"<network><ip address='10.214.0.1' netmask='255.255.255.0'><dhcp>{entry.xml(10)}"
           "<host mac='52:54:00:00:00:02' name='web-1-2' ip='10.214.0.11'/></dhcp></ip></network>")
    found = reservations(xml)
    assert found == [Reservation("52:54:00:00:00:01", "web-1-1", "10.214.0.10", 10),
                     Reservation("52:54:00:00:00:02", "web-1-2", "10.214.0.11", None)]
    assert found[0].xml(found[0].lease_minutes) == entry.xml(10)


def test_routes_are_read_from_the_kernels_table(tmp_path):
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                     "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
                     "iirig1\t0001E70A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")
    assert local_routes(str(table)) == [ipaddress.IPv4Network("10.231.1.0/24")]


def test_records_are_json_and_an_empty_one_reads_as_absent():
    assert decode(encode({"a": "1"})) == {"a": "1"}
    assert decode(b"") is None and decode(b"[1]") is None and decode(b"{no") is None


def artifact(verdict=None):
    return disks.DiskArtifact(DIGEST, {"name": "hello", "inputs_hash": "f" * 64, "disk_format": "qcow2"},
                              "/disks/hello-ffff.qcow2", "/disks/hello-ffff.json", verdict)


def verdict(result, time, digest=DIGEST):
    return {"result": result, "time": time, "disk_digest": digest, "ledger_id": "l1", "tests": {"total": 5, "passed": 5}}


def test_the_gate_passes_a_disk_whose_newest_verdict_passed():
    assert disks.require_disk_verified(artifact(verdict("passed", "2026-12-01T00:00:00Z")), {}).passed
    # a failed verification on a hypervisor, older than the manifest's pass, does not count
    older = {"hypervisor hv1": {"immutable.infra.verdict": "failed", "immutable.infra.time": "2026-11-01T00:00:00Z"}}
    assert disks.require_disk_verified(artifact(verdict("passed", "2026-12-01T00:00:00Z")), older).passed


@pytest.mark.parametrize("manifest_verdict, recorded, message", [
    (None, {}, "has no passing verdict"),
    (verdict("passed", "2026-12-01T00:00:00Z", digest="sha256:" + "cd" * 32), {}, "has no passing verdict"),
    (verdict("failed", "2026-12-01T00:00:00Z"), {}, "failed verification at 2026-12-01T00:00:00Z"),
    (verdict("passed", "2026-12-01T00:00:00Z"),
     {"hypervisor hv2": {"immutable.infra.verdict": "failed", "immutable.infra.time": "2026-12-02T00:00:00Z"}},
     "recorded in hypervisor hv2"),
])
def test_the_gate_refuses_with_a_sentence(manifest_verdict, recorded, message):
    with pytest.raises(InfraError, match=message):
        disks.require_disk_verified(artifact(manifest_verdict), recorded)


def test_a_disk_file_changed_after_its_build_is_refused(tmp_path):
    path = tmp_path / "hello.qcow2"
    path.write_bytes(b"changed")
    changed = disks.DiskArtifact(DIGEST, {}, str(path))
    with pytest.raises(InfraError, match="changed after it was built"):
        disks.require_unchanged(changed)


def test_a_disk_record_carries_its_manifest_back():
    labels = disks.record_labels(artifact(), "disk.abab.123456.qcow2")
    assert labels[disks.LABEL_DISK_VOLUME] == "disk.abab.123456.qcow2"
    back = disks.from_record(DIGEST, labels)
    assert back.manifest == artifact().manifest and back.path is None and back.disk_format == "qcow2"
    assert json.loads(labels[disks.LABEL_DISK_MANIFEST])["name"] == "hello"
    assert disks.disk_volume_name(DIGEST, "qcow2").startswith("disk.abababab") and "." in disks.disk_volume_name(DIGEST, "raw")


def test_a_disk_built_for_direct_boot_brings_its_kernel_and_initramfs(tmp_path):
    disk, kernel, initrd = (tmp_path / name for name in ("hello.qcow2", "hello.vmlinuz", "hello.initrd"))
    for path, content in ((disk, b"disk"), (kernel, b"kernel"), (initrd, b"initrd")):
        path.write_bytes(content)
    boot = {"kernel": "hello.vmlinuz", "kernel_digest": file_digest(str(kernel)), "initrd": "hello.initrd",
            "initrd_digest": file_digest(str(initrd)), "command_line": "root=UUID=x rw quiet"}
    found = disks.DiskArtifact(file_digest(str(disk)), {"boot": boot}, str(disk))
    assert found.boot_file("kernel") == str(kernel) and found.boot["command_line"] == "root=UUID=x rw quiet"
    disks.require_unchanged(found)
    initrd.write_bytes(b"changed")
    with pytest.raises(InfraError, match="hello.initrd is not the file the manifest of disk"):
        disks.require_unchanged(found)
    labels = disks.record_labels(found, "disk.x.1.qcow2", {"kernel": "kernel.x.1.raw", "initrd": "initrd.x.1.raw"})
    assert disks.boot_volumes(labels) == {"kernel": "kernel.x.1.raw", "initrd": "initrd.x.1.raw"}
    assert disks.boot_volumes(disks.record_labels(found, "disk.x.1.qcow2")) == {}
    assert disks.DiskArtifact(DIGEST, {}).boot == {}  # a disk its firmware boots
