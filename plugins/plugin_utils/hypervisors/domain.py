# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM host as libvirt defines it: the domain's XML, its labels, its state. Pure; no libvirt here.

A host is a domain named like every host (<service>-<generation>-<index>). Its disk is a
copy-on-write overlay over the verified disk in the hypervisor's pool, a small seed drive gives it
its host name and SSH keys at first boot, and its NIC has a MAC whose address the network reserved
for it. What the collection must remember about the host (service, generation, spec, address...)
is a label set kept as JSON in the domain's metadata, so any controller reaching the hypervisor reads
it. Markers of the service's store (its lock) are domains too, never started (store.py).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from xml.etree import ElementTree

from ansible_collections.immutable.infra.plugins.plugin_utils.machine.plan import SEED_SERIAL

METADATA_URI = "https://immutable-infra.invalid/libvirt/1"  # names our metadata element; never fetched
METADATA_KEY = "ii"
LABEL_ADDRESS = "immutable.infra.address"  # the IPv4 address the network reserved for the host
LABEL_MAC = "immutable.infra.mac"
LABEL_CREATED = "immutable.infra.created"  # a marker's creation time, on the store's clock

# libvirt's domain states and shut-off reasons (virDomainState, virDomainShutoffReason)
RUNNING, BLOCKED, PAUSED, SHUTTING_DOWN, SHUTOFF, CRASHED, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
SHUTOFF_UNKNOWN, SHUTOFF_CRASHED, SHUTOFF_FAILED = 0, 3, 6


@dataclass(frozen=True)
class DomainSpec:
    """What a VM host's domain is made of."""

    name: str
    labels: dict[str, str]
    memory_mib: int
    vcpus: int
    accel: str  # kvm or tcg
    pool: str  # the storage pool holding its overlay and seed
    overlay: str  # volume names in the pool
    seed: str
    network: str
    mac: str
    kernel: str | None = None  # paths on the hypervisor, for direct kernel boot
    initrd: str | None = None
    cmdline: str | None = None
    console_log: str | None = None


def _element(parent: ElementTree.Element, tag: str, text: str | None = None, **attributes: str) -> ElementTree.Element:
    child = ElementTree.SubElement(parent, tag, attributes)
    if text is not None:
        child.text = text
    return child


def _disk(devices: ElementTree.Element, spec: DomainSpec, volume: str, disk_format: str, target: str) -> ElementTree.Element:
    disk = _element(devices, "disk", type="volume", device="disk")
    _element(disk, "driver", name="qemu", type=disk_format)
    _element(disk, "source", pool=spec.pool, volume=volume)
    _element(disk, "target", dev=target, bus="virtio")
    return disk


def domain_xml(spec: DomainSpec) -> str:
    domain = ElementTree.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _element(domain, "name", spec.name)
    _element(domain, "memory", str(spec.memory_mib), unit="MiB")
    _element(domain, "vcpu", str(spec.vcpus))
    metadata = _element(domain, "metadata")
    _element(metadata, f"{{{METADATA_URI}}}labels", json.dumps(spec.labels, sort_keys=True))
    os_element = _element(domain, "os")
    _element(os_element, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _element(os_element, "kernel", spec.kernel)
        if spec.initrd:
            _element(os_element, "initrd", spec.initrd)
        if spec.cmdline:
            _element(os_element, "cmdline", spec.cmdline)
    _element(_element(domain, "features"), "acpi")
    if spec.accel == "kvm":
        _element(domain, "cpu", mode="host-passthrough")
    else:
        # qemu's default CPU under plain emulation, without the virtualisation extension it announces, so that
        # the guest loads no KVM module it could not use anyway.
        cpu = _element(domain, "cpu", mode="custom", match="exact")
        _element(cpu, "model", "qemu64", fallback="allow")
        _element(cpu, "feature", policy="disable", name="svm")
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        _element(domain, event, action)
    devices = _element(domain, "devices")
    # The firmware boots the overlay only: the seed drive holds no boot sector and would stall it.
    _element(_disk(devices, spec, spec.overlay, "qcow2", "vda"), "boot", order="1")
    seed = _disk(devices, spec, spec.seed, "raw", "vdb")
    _element(seed, "serial", SEED_SERIAL)
    _element(seed, "readonly")
    interface = _element(devices, "interface", type="network")
    _element(interface, "source", network=spec.network)
    _element(interface, "mac", address=spec.mac)
    _element(interface, "model", type="virtio")
    serial = _element(devices, "serial", type="pty")
    if spec.console_log:
        _element(serial, "log", file=spec.console_log, append="off")
    _element(devices, "console", type="pty")
    rng = _element(devices, "rng", model="virtio")
    _element(rng, "backend", "/dev/urandom", model="random")
    _element(devices, "memballoon", model="none")
    ElementTree.register_namespace(METADATA_KEY, METADATA_URI)
    return ElementTree.tostring(domain, encoding="unicode")


def marker_xml(name: str, uuid: str, labels: dict[str, str]) -> str:
    """A domain that is never started: it exists only for its name (created atomically) and its labels."""
    domain = ElementTree.Element("domain", type="qemu")
    _element(domain, "name", name)
    _element(domain, "uuid", uuid)
    _element(domain, "memory", "16", unit="MiB")
    _element(_element(domain, "metadata"), f"{{{METADATA_URI}}}labels", json.dumps(labels, sort_keys=True))
    _element(_element(domain, "os"), "type", "hvm", arch="x86_64")
    ElementTree.register_namespace(METADATA_KEY, METADATA_URI)
    return ElementTree.tostring(domain, encoding="unicode")


def labels_from_metadata(text: str | None) -> dict[str, str]:
    """The labels a domain's metadata element holds (libvirt returns the element alone); {} when unreadable."""
    if not text:
        return {}
    try:
        element = ElementTree.fromstring(text)
        value = json.loads(element.text or "")
    except (ElementTree.ParseError, ValueError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items()}


def status_of(state: int, reason: int) -> tuple[bool, str]:
    """(running, status) of a domain in the words hosts use: running, paused, created (defined, never
    started as far as libvirt knows), exited (shut off) or dead (crashed)."""
    if state in (RUNNING, BLOCKED, SHUTTING_DOWN):
        return True, "running"
    if state in (PAUSED, SUSPENDED):
        return False, "paused"
    if state == CRASHED or (state == SHUTOFF and reason in (SHUTOFF_CRASHED, SHUTOFF_FAILED)):
        return False, "dead"
    if state == SHUTOFF and reason == SHUTOFF_UNKNOWN:
        return False, "created"
    return False, "exited"


def new_mac(chooser: random.Random | None = None) -> str:
    """A MAC in QEMU's range (52:54:00), random in its last three bytes."""
    chooser = chooser or random.SystemRandom()
    return "52:54:00:" + ":".join(f"{chooser.randrange(256):02x}" for _byte in range(3))


def overlay_volume(host: str) -> str:
    return f"{host}.qcow2"


def seed_volume(host: str) -> str:
    return f"{host}.seed"


def host_of_volume(volume: str) -> str | None:
    """The host an overlay or seed volume belongs to, or None for other volumes (a host's name holds no '.',
    an artifact's does: disk.<digest>.qcow2)."""
    for suffix in (".qcow2", ".seed"):
        host = volume[: -len(suffix)]
        if volume.endswith(suffix) and host and "." not in host:
            return host
    return None
