"""Turn what a user typed for a vxlan network into checked values, or one clear error.

Pure, like netspec: the caller passes what the host has (its interfaces and default route).

Static mode has no store in which hosts could agree on anything, so everything the hosts must share
is derived from what each of them is given anyway:
- the VNI: --vni, or one derived from the network name (every host that creates NAME gets the same);
- each host's address range: block number (VTEP address mod number of blocks) of the subnet cut into
  /host-subnet-size blocks: 198.51.100.11 with 10.210.0.0/16 and /24 -> 10.210.11.0/24. Every host
  computes every other host's range from its VTEP address alone, so create refuses a peer set in which
  two hosts would share a range (without talking to them); --host-range overrides this host's range;
- the VTEP MAC: 02:ff + the four octets of the VTEP address, the same after a re-create or a reboot.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from wrapdock import names
from wrapdock.errors import UsageError

VNI_MAX = 16777215  # 24 bits
DEFAULT_PORT = 4789  # IANA's; the kernel's own default (8472) predates it: always printed explicitly
DEFAULT_HOST_SUBNET_SIZE = 24
HOST_SUBNET_MAX = 30  # 4 addresses: network, gateway, one container, broadcast
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MIN_OVERLAY_MTU = 68


@dataclass(frozen=True)
class Interface:
    """A host interface as `ip -j addr show` shows it."""

    name: str
    mtu: int
    addresses: tuple[IPv4Address, ...]


def default_vni(network_name: str) -> int:
    """The same on every host for the same network name (crc32: stable across Python versions)."""
    return 1 + zlib.crc32(network_name.encode()) % VNI_MAX


def check_vni(vni: int) -> int:
    if not 1 <= vni <= VNI_MAX:
        raise UsageError(f"invalid VNI {vni}: it must be between 1 and {VNI_MAX}")
    return vni


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid VXLAN port {port}: it must be between 1 and 65535")
    return port


def device_name(vni: int) -> str:
    """wdvx + the VNI: at most 12 characters, and a host has one device per VNI anyway."""
    return names.check_ifname(f"wdvx{vni}", "VXLAN device")


def vtep_mac(vtep: IPv4Address) -> str:
    """A locally administered unicast MAC from the VTEP address (flannel's most reported bug is a
    VTEP MAC that changed under its peers' feet)."""
    return "02:ff:" + ":".join(f"{octet:02x}" for octet in vtep.packed)


def parse_ipv4(text: str, what: str) -> IPv4Address:
    try:
        address = ip_address(text)
    except ValueError:
        raise UsageError(f"invalid {what} {text!r}: not an IPv4 address") from None
    if not isinstance(address, IPv4Address):
        raise UsageError(f"invalid {what} {text!r}: not an IPv4 address")
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_link_local \
            or address == IPv4Address("255.255.255.255"):
        raise UsageError(f"invalid {what} {text!r}: not a unicast address another host can reach")
    return address


def parse_peers(texts: Iterable[str]) -> tuple[IPv4Address, ...]:
    peers: list[IPv4Address] = []
    for text in texts:
        peer = parse_ipv4(text, "peer")
        if peer in peers:
            raise UsageError(f"peer {peer} is given twice")
        peers.append(peer)
    return tuple(peers)


def check_host_subnet_size(subnet: IPv4Network, size: int) -> int:
    if not subnet.prefixlen < size <= HOST_SUBNET_MAX:
        raise UsageError(
            f"host subnet size /{size} does not fit subnet {subnet}: it must be longer than "
            f"/{subnet.prefixlen} (at least two hosts) and at most /{HOST_SUBNET_MAX}")
    return size


def derived_range(subnet: IPv4Network, size: int, vtep: IPv4Address) -> IPv4Network:
    """Block (VTEP mod number of blocks) of `subnet` cut into /size blocks."""
    blocks = 1 << (size - subnet.prefixlen)
    index = int(vtep) % blocks
    return IPv4Network((int(subnet.network_address) + index * (1 << (32 - size)), size))


def parse_host_range(text: str, subnet: IPv4Network) -> IPv4Network:
    try:
        network = ip_network(text)
    except ValueError:
        raise UsageError(f"invalid host range {text!r}: not an IPv4 network such as 10.210.7.0/24") from None
    if not isinstance(network, IPv4Network) or not network.subnet_of(subnet) or network == subnet:
        raise UsageError(f"invalid host range {text!r}: it must be a part of subnet {subnet}")
    check_host_subnet_size(subnet, network.prefixlen)
    return network


def host_range(subnet: IPv4Network, size: int, vtep: IPv4Address, peers: Sequence[IPv4Address],
               explicit: IPv4Network | None = None) -> IPv4Network:
    """This host's range, refused when it (or two peers') would collide with another host's."""
    mine = explicit or derived_range(subnet, size, vtep)
    owners: dict[IPv4Network, IPv4Address] = {mine: vtep}
    for peer in peers:
        theirs = derived_range(subnet, size, peer)
        other = owners.get(theirs)
        if other is not None:
            raise UsageError(
                f"peers {other} and {peer} would both get host range {theirs} (each host's range is its "
                f"VTEP address mod {1 << (size - subnet.prefixlen)} blocks of /{size}): choose another "
                "--host-subnet-size, or give --host-range on each host")
        owners[theirs] = peer
    return mine


def overlay_gateway(host_range: IPv4Network) -> IPv4Address:
    """This host's address on the overlay: the first of its range (its containers' default route)."""
    return host_range.network_address + 1


def pick_underlay(vtep: str | None, interfaces: Sequence[Interface], default_dev: str | None,
                  bridges: Iterable[str] = ()) -> tuple[Interface, IPv4Address]:
    """The underlay interface and VTEP address: --vtep IP (the interface holding it), --vtep IFACE
    (its first IPv4 address), or the interface of the default route."""
    if vtep is None:
        if default_dev is None:
            raise UsageError("this host has no default route to pick the underlay by: give --vtep IP|IFACE")
        vtep, by = default_dev, "the default route's interface"
    else:
        by = "--vtep"
    try:
        wanted: IPv4Address | None = IPv4Address(vtep)
    except ValueError:
        wanted = None
    if wanted is not None:
        for iface in interfaces:
            if wanted in iface.addresses:
                return _usable_underlay(iface, bridges), wanted
        raise UsageError(f"--vtep {vtep}: no interface of this host has that address")
    names.check_ifname(vtep, "underlay interface")
    for iface in interfaces:
        if iface.name == vtep:
            if not iface.addresses:
                raise UsageError(f"underlay interface {vtep} ({by}) has no IPv4 address: give --vtep IP")
            return _usable_underlay(iface, bridges), iface.addresses[0]
    raise UsageError(f"--vtep {vtep}: no such interface on this host")


def _usable_underlay(iface: Interface, bridges: Iterable[str]) -> Interface:
    if iface.name == "lo" or iface.name in set(bridges):
        raise UsageError(f"interface {iface.name} cannot carry VXLAN packets to other hosts: give --vtep")
    if iface.mtu - VXLAN_OVERHEAD < MIN_OVERLAY_MTU:
        raise UsageError(f"underlay {iface.name} has MTU {iface.mtu}: too small for VXLAN's {VXLAN_OVERHEAD} bytes")
    return iface


def overlay_mtu(requested: int | None, underlay: Interface) -> int:
    """Underlay MTU - 50, or less if asked: a larger one is dropped silently on a bridged overlay."""
    limit = underlay.mtu - VXLAN_OVERHEAD
    if requested is None:
        return limit
    if requested > limit:
        raise UsageError(f"MTU {requested} is too large for underlay {underlay.name} (MTU {underlay.mtu}): "
                         f"at most {limit} (VXLAN adds {VXLAN_OVERHEAD} bytes)")
    return requested
