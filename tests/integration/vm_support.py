"""Helpers for VM host tests: disks of the example service, an SSH key, what a service leaves on the local
hypervisor (qemu:///system), and its removal.

The disks are built with immutable.infra.disk from baked hello images (with acpi-support-base, so that a
VM powers off when its ACPI power button is pressed). Their passing verdict is written into each
manifest here, as rollout tests record image verdicts (rollout_support.py); booting a disk to verify it
is tested in test_disk.py, and the long form verifies one disk for real.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree

import libvirt
from support import BASE_IMAGE, Playbooks, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import new_key_pair

HELLO_CONFIG = {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"], "user": "hello",
                "exposed_ports": ["8000/tcp"]}
METADATA_URI = "https://immutable-infra.invalid/libvirt/1"
URI = "qemu:///system"
HOSTS_POOL, STATE_POOL, NETWORK = "immutable-infra", "immutable-infra-state", "immutable-infra"

libvirt.registerErrorHandler(lambda _context, _error: None, None)


def build_disks(project: str, versions: list[str], ledger: str, signing_key: str | None = None) -> dict[str, dict]:
    """Bakes hello at each version and builds its disk (its provenance and SBOM signed with signing_key, when
    given); returns each disk task's result by version."""
    dest = os.path.join(project, "disks")
    signing = {"signing_key": signing_key} if signing_key else {}
    tasks: list[dict] = []
    for version in versions:
        tasks += [
            {"name": f"bake {version}", "immutable.infra.bake": {
                "name": image_name("hello-vm"), "base": BASE_IMAGE, "roles": ["hello"], "config": HELLO_CONFIG,
                "vars": {"hello_version": version}, "ledger": ledger}},
            {"name": f"keep {version}", "ansible.builtin.set_fact": {"baked": "{{ step_result }}"}},
            {"name": f"disk {version}", "immutable.infra.disk": {
                "name": "hello", "image": "{{ baked.image_id }}", "dest": dest, "packages": ["acpi-support-base"],
                "ledger": ledger, **signing}},
        ]
    run = Playbooks(project).run(tasks, timeout=1800)
    disks = {}
    for version in versions:
        result = run[f"disk {version}"]
        assert not result.get("failed"), result.get("msg") or run.output[-3000:]
        disks[version] = result
    return disks


def record_disk_verdict(disk: dict, passed: bool = True) -> None:
    """Writes a verdict bound to the disk's digest into its manifest, as verify does after booting it."""
    with open(disk["manifest"], encoding="utf-8") as handle:
        manifest = json.load(handle)
    manifest["verdict"] = {"result": "passed" if passed else "failed", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "disk_digest": manifest["disk_digest"], "ledger_id": "test", "accel": "tcg",
                           "tests": {"total": 1, "passed": 1 if passed else 0, "failed": 0 if passed else 1}}
    with open(disk["manifest"], "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)


def key_pairs(directory: str, *names: str) -> None:
    """<name>.key and <name>.pub (P-256, PEM) in directory for each name."""
    for name in names:
        private, public = new_key_pair()
        for suffix, text in (("key", private), ("pub", public)):
            with open(os.path.join(directory, f"{name}.{suffix}"), "w", encoding="utf-8") as handle:
                handle.write(text)


def ssh_key(directory: str) -> str:
    path = os.path.join(directory, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "immutable-infra-test", "-f", path], check=True)
    return path


def service_name() -> str:
    return f"v{uuid.uuid4().hex[:7]}"


@dataclass
class Leftovers:
    """What a service holds on the hypervisor: its domains (by name, with state), and the volumes,
    reservations and store records named after it."""

    domains: dict[str, str]
    volumes: list[str]
    reservations: list[str]
    records: list[str]
    markers: list[str]

    def orphans(self) -> list[str]:
        """Storage and addresses of no domain, and any lock or journal."""
        hosts = set(self.domains)
        found = [volume for volume in self.volumes if volume.rsplit(".", 1)[0] not in hosts]
        found += [name for name in self.reservations if name not in {host.replace("_", "-") for host in hosts}]
        found += [name for name in self.records if name.startswith(("immutable-infra-rollout-", "immutable-infra-lease-",
                                                                    "immutable-infra-stopnote-"))]
        return found + self.markers


def labels_of(domain) -> dict:
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI, 0)
    except libvirt.libvirtError:
        return {}
    start, end = text.find(">") + 1, text.rfind("<")
    return json.loads(text[start:end]) if 0 < start < end else {}


def leftovers(service: str) -> Leftovers:
    conn = libvirt.open(URI)
    try:
        domains, markers = {}, []
        for domain in conn.listAllDomains(0):
            if labels_of(domain).get("immutable.infra.service") == service:
                domains[domain.name()] = "running" if domain.isActive() else "shut off"
            elif domain.name() == f"immutable-infra-lock-{service}":
                markers.append(domain.name())
        prefix = f"{service}-"
        volumes = [name for name in _volume_names(conn, HOSTS_POOL) if name.startswith(prefix)]
        records = [name for name in _volume_names(conn, STATE_POOL) if name.endswith(f"-{service}") or f"-{service}-" in name]
        reservations = [host.get("name", "") for host in _reservations(conn, service)]
        return Leftovers(domains, volumes, reservations, records, markers)
    finally:
        conn.close()


def settled(service: str, live: list[str], timeout: float = 60) -> Leftovers:
    """What the service holds once exactly its live VMs run: a retired VM is out of the balancer when its
    rollout returns, but its guest may still be powering off (the rollout reports it in `stopping`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = leftovers(service)
        if sorted(name for name, state in found.domains.items() if state == "running") == sorted(live) \
                or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _lookup(function, name):
    try:
        return function(name)
    except libvirt.libvirtError:
        return None


def _reservations(conn, service: str) -> list[ElementTree.Element]:
    """The DHCP host entries of the service's hosts on the collection's network."""
    network = _lookup(conn.networkLookupByName, NETWORK)
    if network is None:
        return []
    prefix = f"{service.replace('_', '-')}-"
    return [host for host in ElementTree.fromstring(network.XMLDesc(0)).findall("./ip/dhcp/host")
            if host.get("name", "").startswith(prefix)]


def _volume_names(conn, pool_name: str) -> list[str]:
    pool = _lookup(conn.storagePoolLookupByName, pool_name)
    return [volume.name() for volume in pool.listAllVolumes(0)] if pool is not None else []


def remove_disk_copies(disks: list[dict]) -> None:
    """Removes what rollouts copied of these disks (immutable.infra.disk results) to the hypervisor: each disk
    and its boot files in the hosts' pool and its records in the state pool. The digest names them all."""
    digests = []
    for disk in disks:
        with open(disk["manifest"], encoding="utf-8") as handle:
            digests.append(json.load(handle)["disk_digest"].split(":", 1)[-1])
    conn = libvirt.open(URI)
    try:
        for pool_name in (HOSTS_POOL, STATE_POOL):
            pool = _lookup(conn.storagePoolLookupByName, pool_name)
            for volume in pool.listAllVolumes(0) if pool is not None else []:
                if any(f".{digest[:24]}." in volume.name() or volume.name().endswith(digest) for digest in digests):
                    volume.delete(0)
    finally:
        conn.close()


def remove_service(service: str) -> None:
    """Removes everything the service holds on the hypervisor: domains, volumes, reservations, records."""
    conn = libvirt.open(URI)
    try:
        for domain in conn.listAllDomains(0):
            if labels_of(domain).get("immutable.infra.service") == service or \
                    domain.name() == f"immutable-infra-lock-{service}":
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
        found = leftovers(service)
        for pool_name, names in ((HOSTS_POOL, found.volumes), (STATE_POOL, found.records)):
            pool = _lookup(conn.storagePoolLookupByName, pool_name)
            for name in names:
                volume = _lookup(pool.storageVolLookupByName, name) if pool else None
                if volume is not None:
                    volume.delete(0)
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        for host in _reservations(conn, service):
            conn.networkLookupByName(NETWORK).update(
                libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                ElementTree.tostring(host, encoding="unicode"), flags)
    finally:
        conn.close()


class LoopbackSshd:
    """An sshd of the test's own on 127.0.0.1 that lets the test's key in as root: the way a second
    hypervisor is reached (qemu+ssh://) when it is this machine's own libvirtd. A libvirtd in a container
    would need a bridge, NAT and its VMs' routes of its own; through SSH, the transport, the second
    engine's name and its failure are the real ones."""

    def __init__(self, directory: str, key: str) -> None:
        self.directory, self.key = directory, key
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        host_key = os.path.join(self.directory, "sshd_host_ed25519")
        if not os.path.exists(host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
        authorized = os.path.join(self.directory, "authorized_keys")
        with open(self.key + ".pub", encoding="utf-8") as source, open(authorized, "w", encoding="utf-8") as target:
            target.write(source.read())
        config = os.path.join(self.directory, "sshd_config")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(f"ListenAddress 127.0.0.1:{self.port}\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
                         "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
                         f"PidFile {self.directory}/sshd.pid\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    @property
    def uri(self) -> str:
        return f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={self.key}&no_verify=1&no_tty=1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
