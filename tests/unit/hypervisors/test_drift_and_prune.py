"""The VM drift probe's parsing and prune's leftovers: pure, no libvirt, no SSH."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.drift import (
    config_drift,
    parse_probe,
    probe_finished,
    probe_script,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.network import Reservation
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.prune import plan_leftovers


def test_a_fresh_vm_has_no_drift():
    output = ("boot 1796620694\nchanged f /etc/hostname\nchanged d /etc/ssh\nchanged f /etc/ssh/ssh_host_ed25519_key\n"
              "changed d /root\nchanged d /\nend\n")
    assert probe_finished(output) and parse_probe(output, []) == []


def test_files_and_packages_changed_in_place_are_named():
    output = ("boot 1\nchanged d /etc/hello\nchanged f /etc/hello/hello.json\nchanged f /usr/local/bin/tool\n"
              "changed d /opt/gone\nchanged f /srv/data/x\npackage install curl:amd64 7.88.1\n"
              "package remove nano:amd64 <none>\npackage upgrade openssl:amd64 3.0.20\nend\n")
    assert parse_probe(output, ["/srv/data"]) == [
        "filesystem: file /etc/hello/hello.json changed since boot",
        "filesystem: file /usr/local/bin/tool changed since boot",
        "filesystem: directory /opt/gone changed since boot",
        "package curl installed in place (7.88.1)", "package nano removed in place",
        "package openssl upgraded in place (3.0.20)"]


def test_a_probe_cut_short_is_not_read_as_no_drift():
    assert not probe_finished("boot 1\nchanged f /etc/x\n") and not probe_finished("")


def test_the_probe_looks_below_the_volatile_paths_only_once():
    script = probe_script()
    assert "-newerct" in script and "-path /var/log" in script and "/var/log/dpkg.log" in script


def test_memory_and_cpus_changed_on_the_domain_are_drift():
    assert config_drift([1, 2097152, 2097152, 4, 0], {"memory": 1024, "vcpus": 2}) == [
        "memory changed from 1024 MiB to 2048 MiB", "vcpus changed from 2 to 4"]
    assert config_drift([1, 1048576, 1048576, 2, 0], {"memory": 1024, "vcpus": 2}) == []


def observed(volumes, domains=("web-1-1",), reservations=()):
    return {"containers": [{"name": name} for name in domains],
            "images": [{"id": "sha256:aa", "volume": "disk.aa.111111.qcow2"}],
            "host_volumes": [{"name": name, "created": created, "bytes": 10} for name, created in volumes],
            "reservations": list(reservations)}


def test_leftovers_are_storage_and_addresses_of_no_domain_old_enough():
    seen = observed([("web-1-1.qcow2", 0), ("web-1-2.qcow2", 0), ("web-1-2.seed", 990), ("disk.aa.111111.qcow2", 0),
                     ("disk.aa.222222.qcow2", 0)],
                    reservations=[Reservation("m1", "web-1-1", "10.0.0.10"), Reservation("m2", "web-1-3", "10.0.0.11"),
                                  Reservation("m3", "printer", "10.0.0.12")])
    found = plan_leftovers(seen, min_age=600, now=1000)
    assert [(entry["name"], entry["kind"]) for entry in found] == [
        ("web-1-2.qcow2", "volume"), ("disk.aa.222222.qcow2", "volume"), ("web-1-3 (10.0.0.11)", "reservation")]
    assert "web-1-2.seed" not in [entry["name"] for entry in found]  # younger than min_age: its host may be being made
