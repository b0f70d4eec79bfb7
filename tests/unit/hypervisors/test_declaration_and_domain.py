"""Hypervisors as engines, and a VM host's domain as libvirt is given it: pure, no libvirt."""

from __future__ import annotations

import dataclasses
import json
import random
from xml.etree import ElementTree

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.domain import (
    METADATA_URI,
    DomainSpec,
    domain_xml,
    host_of_volume,
    labels_from_metadata,
    marker_xml,
    new_mac,
    status_of,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.task import VM_DEFAULTS, check_kind
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.plan import SEED_SERIAL

SPEC = DomainSpec(name="web-3-1", labels={"immutable.infra.service": "web", "immutable.infra.generation": "3"},
                  memory_mib=512, vcpus=2, accel="tcg", pool="immutable-infra", overlay="web-3-1.qcow2",
                  seed="web-3-1.seed", network="immutable-infra", mac="52:54:00:01:02:03")


def test_hypervisors_are_declared_with_a_libvirt_uri():
    local, remote = parse_engines([{"name": "hv1", "libvirt_uri": "qemu:///system"},
                                   {"name": "hv2", "libvirt_uri": "qemu+ssh://deploy@10.0.0.5/system", "weight": 2,
                                    "network": "lan", "accel": "kvm"}])
    assert (local.hypervisor, local.machine, local.network, local.accel) == (True, None, "immutable-infra", "auto")
    assert (remote.machine, remote.weight, remote.network, remote.accel) == ("10.0.0.5", 2, "lan", "kvm")
    assert local.as_dict()["libvirt_uri"] == "qemu:///system" and "docker_host" not in local.as_dict()


@pytest.mark.parametrize("engines, message", [
    ([{"name": "a", "libvirt_uri": "qemu:///system"}, {"name": "b", "docker_host": "unix:///a.sock"}],
     "mixes Docker engines"),
    ([{"name": "a", "libvirt_uri": "xen:///system"}], "not a libvirt URI of a QEMU hypervisor"),
    ([{"name": "a", "libvirt_uri": "qemu+ssh:///system"}], "needs a host name"),
    ([{"name": "a", "libvirt_uri": "qemu:///system", "docker_host": "unix:///a.sock"}], "applies to Docker engines"),
    ([{"name": "a", "docker_host": "unix:///a.sock", "network": "lan"}], "applies to hypervisors"),
    ([{"name": "a", "docker_host": "qemu:///system"}], "a hypervisor is declared with libvirt_uri"),
    ([{"name": "a", "libvirt_uri": "qemu:///system"}, {"name": "b", "libvirt_uri": "qemu:///system"}],
     "are the same engine"),
])
def test_bad_hypervisor_declarations_say_what_to_change(engines, message):
    with pytest.raises(InfraError, match=message):
        parse_engines(engines)


def test_the_domain_boots_its_overlay_with_the_seed_beside_it_and_carries_its_labels():
    domain = ElementTree.fromstring(domain_xml(SPEC))
    assert domain.get("type") == "qemu" and domain.findtext("name") == "web-3-1"
    assert domain.find("memory").text == "512" and domain.find("memory").get("unit") == "MiB"
    disks = domain.findall("./devices/disk")
    assert [disk.find("source").get("volume") for disk in disks] == ["web-3-1.qcow2", "web-3-1.seed"]
    assert disks[0].find("boot").get("order") == "1" and disks[1].find("boot") is None
    assert disks[1].findtext("serial") == SEED_SERIAL and disks[1].find("readonly") is not None
    assert domain.find("./devices/interface/mac").get("address") == "52:54:00:01:02:03"
    labels = domain.find(f"./metadata/{{{METADATA_URI}}}labels")
    assert json.loads(labels.text) == SPEC.labels
    assert labels_from_metadata(ElementTree.tostring(labels, encoding="unicode")) == SPEC.labels


def test_kvm_and_direct_kernel_boot():
    spec = dataclasses.replace(SPEC, accel="kvm", kernel="/pool/k", initrd="/pool/i", cmdline="root=x")
    domain = ElementTree.fromstring(domain_xml(spec))
    assert domain.get("type") == "kvm" and domain.find("cpu").get("mode") == "host-passthrough"
    assert [domain.findtext(f"./os/{tag}") for tag in ("kernel", "initrd", "cmdline")] == ["/pool/k", "/pool/i", "root=x"]


def test_a_marker_is_a_domain_that_names_its_uuid_and_labels():
    marker = ElementTree.fromstring(marker_xml("immutable-infra-lock-web", "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                                               {"immutable.infra.lock": "web"}))
    assert marker.findtext("uuid") == "1b4e28ba-2fa1-11d2-883f-0016d3cca427" and marker.find("devices") is None


@pytest.mark.parametrize("text", [None, "", "<labels>not json</labels>", "<labels>[1]</labels>", "<labels"])
def test_unreadable_labels_read_as_none(text):
    assert labels_from_metadata(text) == {}


@pytest.mark.parametrize("state, reason, expected", [
    (1, 1, (True, "running")), (4, 1, (True, "running")), (3, 1, (False, "paused")), (5, 0, (False, "created")),
    (5, 1, (False, "exited")), (5, 2, (False, "exited")), (5, 3, (False, "dead")), (6, 0, (False, "dead")),
])
def test_domain_states_in_the_words_hosts_use(state, reason, expected):
    assert status_of(state, reason) == expected


def test_macs_are_in_qemus_range_and_volumes_name_their_host():
    assert new_mac(random.Random(1)).startswith("52:54:00:") and len(new_mac()) == 17
    assert host_of_volume("web-api-3-1.qcow2") == "web-api-3-1" and host_of_volume("web-3-1.seed") == "web-3-1"
    assert host_of_volume("disk.3ce5d87ed49f.4a4d35.qcow2") is None and host_of_volume("notes.txt") is None


def test_under_plain_emulation_the_cpu_announces_no_virtualisation_extension():
    cpu = ElementTree.fromstring(domain_xml(SPEC)).find("cpu")
    assert cpu.findtext("model") == "qemu64" and cpu.find("feature").attrib == {"policy": "disable", "name": "svm"}


def test_containers_take_no_vm_settings_but_a_task_that_leaves_vm_out_or_at_its_defaults_is_fine():
    docker = parse_engines(None, {"docker_host": "unix:///var/run/docker.sock"})
    check_kind({"image": "acme/web:1"}, docker)  # a rollback's rollout of containers passes no vm at all
    check_kind({"image": "acme/web:1", "vm": dict(VM_DEFAULTS)}, docker)
    with pytest.raises(InfraError, match="vm applies to VM hosts"):
        check_kind({"image": "acme/web:1", "vm": {"memory": 2048}}, docker)
    with pytest.raises(InfraError, match="give disk instead of image"):
        check_kind({"image": "acme/web:1"}, parse_engines([{"name": "hv", "libvirt_uri": "qemu:///system"}], None))
