# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMs' network on a hypervisor, and an address reserved for each host.

The collection's own network (engines[].network, default immutable-infra) is isolated: the
hypervisor's machine reaches its VMs and they reach it, nothing else. It gets a /24 of its own that no
other network or route of the hypervisor uses, and dnsmasq does not ping an address before leasing it
(which costs seconds per boot). Before a host is made, its address is reserved: a DHCP host entry
mapping a new MAC to a free address. libvirt refuses an entry whose MAC, name or address is taken,
so two controllers cannot reserve the same address; the host's address is known before it boots,
and a stale lease of an earlier host can never be mistaken for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.connection import (
    ERR_OPERATION_INVALID,
    Hypervisor,
    binding,
)

DNSMASQ_URI = "http://libvirt.org/schemas/network/dnsmasq/1.0"
CANDIDATE_SUBNETS = [f"10.214.{third}.0/24" for third in range(256)]
FIRST_HOST, LAST_HOST = 10, 249  # reserved addresses (the range .10-.254 is dnsmasq's; see network_xml)
LEASE_MINUTES = 10  # a destroyed VM's lease holds its address this long at most
ATTEMPTS = 20


@dataclass(frozen=True)
class Reservation:
    mac: str
    name: str
    address: str
    lease_minutes: int | None = None  # as the entry was made (a delete must name it the same way)

    def xml(self, lease_minutes: int | None = None) -> str:
        host = ElementTree.Element("host", mac=self.mac, name=self.name, ip=self.address)
        if lease_minutes:
            ElementTree.SubElement(host, "lease", expiry=str(lease_minutes), unit="minutes")
        return ElementTree.tostring(host, encoding="unicode")


def bridge_name(network: str) -> str:
    """A bridge name of at most 15 characters, the same for a network name on every hypervisor."""
    return "iivm" + hashlib.sha256(network.encode("utf-8")).hexdigest()[:8]


def network_xml(name: str, subnet: str) -> str:
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())
    network = ElementTree.Element("network")
    ElementTree.SubElement(network, "name").text = name
    ElementTree.SubElement(network, "bridge", name=bridge_name(name), stp="off", delay="0")
    address = ElementTree.SubElement(network, "ip", address=str(hosts[0]), netmask=str(net.netmask))
    dhcp = ElementTree.SubElement(address, "dhcp")
    # libvirt caps dnsmasq's leases (dhcp-lease-max) at the size of the range, reserved hosts' included, and
    # dnsmasq never hands a reserved address to another MAC: so the range covers every address hosts get.
    ElementTree.SubElement(dhcp, "range", start=str(hosts[FIRST_HOST - 1]), end=str(hosts[-1]))
    options = ElementTree.SubElement(network, f"{{{DNSMASQ_URI}}}options")
    ElementTree.SubElement(options, f"{{{DNSMASQ_URI}}}option", value="no-ping")
    ElementTree.register_namespace("dnsmasq", DNSMASQ_URI)
    return ElementTree.tostring(network, encoding="unicode")


def subnet_of(xml: str) -> ipaddress.IPv4Network | None:
    """The IPv4 subnet a network's XML declares, or None (a network without one)."""
    for element in ElementTree.fromstring(xml).findall("./ip"):
        if element.get("family", "ipv4") != "ipv4" or not element.get("address"):
            continue
        prefix = element.get("prefix") or element.get("netmask") or "24"
        return ipaddress.IPv4Network(f"{element.get('address')}/{prefix}", strict=False)
    return None


def reservations(xml: str) -> list[Reservation]:
    return [Reservation(host.get("mac", ""), host.get("name", ""), host.get("ip", ""), _lease_minutes(host))
            for host in ElementTree.fromstring(xml).findall("./ip/dhcp/host")]


def _lease_minutes(host: ElementTree.Element) -> int | None:
    lease = host.find("lease")
    if lease is None or not (lease.get("expiry") or "").isdigit():
        return None
    return int(lease.get("expiry") or 0) * (60 if lease.get("unit") == "hours" else 1)


def pick_subnet(in_use: Iterable[ipaddress.IPv4Network]) -> str | None:
    """The first candidate /24 that overlaps none of the networks in use."""
    used = list(in_use)
    for candidate in CANDIDATE_SUBNETS:
        if not any(ipaddress.IPv4Network(candidate).overlaps(other) for other in used):
            return candidate
    return None


def free_address(subnet: ipaddress.IPv4Network, taken: Iterable[str]) -> str | None:
    """The lowest address of the reserved range no reservation holds."""
    held = set(taken)
    hosts = list(subnet.hosts())
    for address in hosts[FIRST_HOST - 1:LAST_HOST]:
        if str(address) not in held:
            return str(address)
    return None


def dhcp_name(host: str) -> str:
    """A host's name as a DHCP host entry takes it (no '_')."""
    return host.replace("_", "-")


def local_routes(path: str = "/proc/net/route") -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this machine routes (for a hypervisor on this machine)."""
    routes = []
    try:
        with open(path, encoding="ascii") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        routes.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return routes


class VmNetwork:
    """One hypervisor's network for the VMs: made when it is the collection's own and missing."""

    def __init__(self, hypervisor: Hypervisor, name: str, owned: bool, local: bool) -> None:
        self.hypervisor = hypervisor
        self.name = name
        self.network = self._ensure(owned, local)
        subnet = subnet_of(hypervisor.call(f"read network {name}", self.network.XMLDesc, 0))
        if subnet is None:
            raise InfraError(f"Network {name} on hypervisor {hypervisor.name} has no IPv4 subnet, so its VMs get no "
                             "address the balancer can reach; give a network with an <ip> element (or leave "
                             "engines[].network out to use the collection's own).")
        self.subnet: ipaddress.IPv4Network = subnet

    def _ensure(self, owned: bool, local: bool) -> Any:
        conn = self.hypervisor.conn
        found = self.hypervisor.find(f"look up network {self.name}", conn.networkLookupByName, self.name)
        if found is None and not owned:
            raise InfraError(f"Network {self.name} (engines[].network) does not exist on hypervisor "
                             f"{self.hypervisor.name}; create it, or leave engines[].network out to use the "
                             "collection's own.")
        collided: list[ipaddress.IPv4Network] = []
        for _attempt in range(ATTEMPTS):
            if found is None:
                found = self._define(local, collided)
            if self.hypervisor.call(f"read network {self.name}", found.isActive):
                return found
            try:
                self.hypervisor.call(f"start network {self.name}", found.create)
                self.hypervisor.call(f"mark network {self.name} to start with libvirt", found.setAutostart, 1)
                return found
            except InfraError as error:
                if not owned or "in use" not in error.message:
                    raise
                # Its subnet is routed on the hypervisor already: define it again on the next candidate.
                collided += [subnet for subnet in [subnet_of(found.XMLDesc(0))] if subnet]
                self.hypervisor.call(f"remove network {self.name}", found.undefine)
                found = None
        raise InfraError(f"No free subnet was found for network {self.name} on hypervisor {self.hypervisor.name}.")

    def _define(self, local: bool, collided: list[ipaddress.IPv4Network]) -> Any:
        conn = self.hypervisor.conn
        networks = self.hypervisor.call("list the networks", conn.listAllNetworks, 0)
        used = [subnet for subnet in (subnet_of(net.XMLDesc(0)) for net in networks) if subnet]
        subnet = pick_subnet(used + collided + (local_routes() if local else []))
        if subnet is None:
            raise InfraError(f"Every candidate subnet for network {self.name} is in use on hypervisor "
                             f"{self.hypervisor.name}; create the network yourself and name it in engines[].network.")
        try:
            return self.hypervisor.call(f"define network {self.name}", conn.networkDefineXML, network_xml(self.name, subnet))
        except InfraError:
            found = self.hypervisor.find(f"look up network {self.name}", conn.networkLookupByName, self.name)
            if found is None:
                raise
            return found  # defined meanwhile by another controller

    def reservations(self) -> list[Reservation]:
        return reservations(self.hypervisor.call(f"read network {self.name}", self.network.XMLDesc, 0))

    def leased(self) -> list[str]:
        """Addresses dnsmasq has leased and not yet seen expire: a destroyed VM's stays leased to its MAC, and
        dnsmasq would not hand it to another one meanwhile."""
        leases = self.hypervisor.call(f"read the leases of network {self.name}", self.network.DHCPLeases)
        return [str(lease.get("ipaddr")) for lease in leases or []]

    def reserve(self, host: str, mac: str) -> str:
        """Reserves an address nobody holds (no reservation, no lease) for the MAC; returns it."""
        libvirt = binding()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        for _attempt in range(ATTEMPTS):
            address = free_address(self.subnet, [entry.address for entry in self.reservations()] + self.leased())
            if address is None:
                break
            entry = Reservation(mac, dhcp_name(host), address)
            try:
                self.network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                                    -1, entry.xml(LEASE_MINUTES), flags)
                return address
            except libvirt.libvirtError as error:
                if getattr(error, "get_error_code", lambda: None)() != ERR_OPERATION_INVALID:
                    raise self.hypervisor.failure(f"reserve an address for {host}", error) from None
        raise InfraError(f"Network {self.name} on hypervisor {self.hypervisor.name} has no free address for {host} "
                         f"(addresses .{FIRST_HOST} to .{LAST_HOST} are reserved); remove hosts (prune) first.")

    def release(self, host: str, address: str | None = None) -> None:
        """Removes the reservations of a host (by its name, or its address)."""
        libvirt = binding()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        for entry in self.reservations():
            if entry.name == dhcp_name(host) or (address and entry.address == address):
                try:
                    self.network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                                        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, entry.xml(entry.lease_minutes), flags)
                except libvirt.libvirtError as error:
                    if not any(held == entry for held in self.reservations()):
                        continue  # released meanwhile
                    raise self.hypervisor.failure(f"release the address of {host}", error) from None
