"""Turn what a user typed for `network create` into a checked Network, or one clear error.

Pure: the caller passes the existing networks and what the host already has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_interface

from wrapdock import names, overlayspec
from wrapdock.errors import UsageError
from wrapdock.model import Network, Vxlan

DRIVERS = ("bridge", "vxlan")
PREFIX_MIN, PREFIX_MAX = 8, 30
# Ranges that cannot carry a container network: "this" network, loopback, link-local, multicast,
# reserved and broadcast.
_SPECIAL = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                                     "240.0.0.0/4")]


@dataclass(frozen=True)
class NetworkRequest:
    """A `network create` as the user gave it, before validation."""

    name: str
    subnet: str
    driver: str = "bridge"
    gateway: str | None = None
    bridge_name: str | None = None
    mtu: int | None = None
    internal: bool = False
    isolated: bool = False
    lab: str | None = None  # the lab that made it (lab down removes only its own)
    # driver vxlan only
    vni: int | None = None
    port: int | None = None
    host_subnet_size: int | None = None
    host_range: str | None = None
    peers: tuple[str, ...] = ()
    vtep: str | None = None

    def vxlan_options(self) -> list[str]:
        given = {"--vni": self.vni, "--port": self.port, "--host-subnet-size": self.host_subnet_size,
                 "--host-range": self.host_range, "--peer": self.peers or None, "--vtep": self.vtep}
        return [option for option, value in given.items() if value is not None]


@dataclass(frozen=True)
class HostPrefix:
    """An address or route already on the host, as `ip` showed it."""

    network: IPv4Network
    what: str  # e.g. "address 10.0.0.5/24 on eth0" or "route 10.1.0.0/16 dev eth1"


def parse_subnet(text: str) -> IPv4Interface:
    """Accept `162.16.0.0/24` and the series' `162.16.0.1/24` (host bits set: names the gateway)."""
    if "/" not in text:
        raise UsageError(f"invalid subnet {text!r}: give an address and a prefix length, e.g. 10.20.0.0/24")
    try:
        iface = ip_interface(text)
    except ValueError:
        raise UsageError(f"invalid subnet {text!r}: not an IPv4 address with a prefix length") from None
    if iface.version != 4:
        raise UsageError(f"invalid subnet {text!r}: only IPv4 subnets are supported")
    assert isinstance(iface, IPv4Interface)
    prefix = iface.network.prefixlen
    if prefix < PREFIX_MIN or prefix > PREFIX_MAX:
        raise UsageError(
            f"invalid subnet {text!r}: the prefix length must be between /{PREFIX_MIN} and /{PREFIX_MAX}"
        )
    for special in _SPECIAL:
        if iface.network.overlaps(special):
            raise UsageError(f"invalid subnet {text!r}: it overlaps the reserved range {special}")
    return iface


def _usable(subnet: IPv4Network, address: IPv4Address, what: str) -> IPv4Address:
    if address not in subnet:
        raise UsageError(f"{what} {address} is not in subnet {subnet}")
    if address in (subnet.network_address, subnet.broadcast_address):
        raise UsageError(f"{what} {address} is the network or broadcast address of {subnet}")
    return address


def build_network(request: NetworkRequest) -> Network:
    """Check the request alone (no state, no host) and fill in the defaults."""
    names.check_object_name("network", request.name)
    if request.driver not in DRIVERS:
        raise UsageError(f"unknown network driver {request.driver!r}: wrapdock supports {' and '.join(DRIVERS)}")
    if request.driver != "vxlan" and request.vxlan_options():
        raise UsageError(f"{request.vxlan_options()[0]} is an option of --driver vxlan")
    bridge = names.bridge_name(request.name, request.bridge_name)
    iface = parse_subnet(request.subnet)
    subnet = iface.network
    written = iface.ip if iface.ip != subnet.network_address else None
    if request.driver == "vxlan":
        _check_vxlan_request(request, subnet, written)
    gateway: IPv4Address
    if request.gateway is not None:
        try:
            parsed = ip_address(request.gateway)
        except ValueError:
            raise UsageError(f"invalid gateway {request.gateway!r}: not an IPv4 address") from None
        if not isinstance(parsed, IPv4Address):
            raise UsageError(f"invalid gateway {request.gateway!r}: not an IPv4 address")
        if written is not None and written != parsed:
            raise UsageError(
                f"--subnet {request.subnet} names gateway {written} but --gateway says {parsed}: give one"
            )
        gateway = _usable(subnet, parsed, "gateway")
    elif written is not None:
        gateway = _usable(subnet, written, "gateway")
    else:
        gateway = subnet.network_address + 1
    if request.mtu is not None and not 68 <= request.mtu <= 65535:
        raise UsageError(f"invalid MTU {request.mtu}: it must be between 68 and 65535")
    return Network(
        name=request.name,
        id=names.new_id(),
        driver=request.driver,
        subnet=subnet,
        gateway=gateway,
        bridge=bridge,
        mtu=request.mtu,
        internal=request.internal,
        isolated=request.isolated,
        lab=request.lab,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _check_vxlan_request(request: NetworkRequest, subnet: IPv4Network, written: IPv4Address | None) -> None:
    """Everything of a vxlan request that needs no host: refused before anything is read or run."""
    if request.gateway is not None or written is not None:
        raise UsageError("a vxlan network has one gateway per host (the first address of its range): "
                         "give --subnet as a network address and no --gateway")
    overlayspec.check_vni(request.vni if request.vni is not None else overlayspec.default_vni(request.name))
    overlayspec.check_port(request.port if request.port is not None else overlayspec.DEFAULT_PORT)
    if request.host_range is not None:
        explicit = overlayspec.parse_host_range(request.host_range, subnet)
        if request.host_subnet_size not in (None, explicit.prefixlen):
            raise UsageError(f"--host-range {explicit} and --host-subnet-size {request.host_subnet_size} disagree")
    else:
        overlayspec.check_host_subnet_size(subnet, request.host_subnet_size or overlayspec.DEFAULT_HOST_SUBNET_SIZE)
    overlayspec.parse_peers(request.peers)


def place_overlay(network: Network, request: NetworkRequest, interfaces: Sequence[overlayspec.Interface],
                  default_dev: str | None) -> Network:
    """The vxlan part, once the host's interfaces are known: VTEP, underlay, MTU, this host's range."""
    underlay, vtep = overlayspec.pick_underlay(request.vtep, interfaces, default_dev)
    peers = overlayspec.parse_peers(request.peers)
    if vtep in peers:
        raise UsageError(f"peer {vtep} is this host's own VTEP address")
    explicit = overlayspec.parse_host_range(request.host_range, network.subnet) if request.host_range else None
    size = explicit.prefixlen if explicit else (request.host_subnet_size or overlayspec.DEFAULT_HOST_SUBNET_SIZE)
    host_range = overlayspec.host_range(network.subnet, size, vtep, peers, explicit)
    vni = request.vni if request.vni is not None else overlayspec.default_vni(request.name)
    vxlan = Vxlan(vni=vni, port=request.port or overlayspec.DEFAULT_PORT, device=overlayspec.device_name(vni),
                  vtep=vtep, underlay=underlay.name, underlay_mtu=underlay.mtu, mac=overlayspec.vtep_mac(vtep),
                  host_subnet_size=size, host_range=host_range, peers=peers)
    return replace(network, gateway=overlayspec.overlay_gateway(host_range),
                   mtu=overlayspec.overlay_mtu(request.mtu, underlay), vxlan=vxlan)


def check_against_networks(network: Network, existing: Iterable[Network]) -> None:
    for other in existing:
        if other.name == network.name:
            raise UsageError(f"network {network.name!r} already exists")
        if other.bridge == network.bridge:
            raise UsageError(f"bridge {network.bridge!r} is already used by network {other.name!r}")
        if other.subnet.overlaps(network.subnet):
            raise UsageError(
                f"subnet {network.subnet} overlaps subnet {other.subnet} of network {other.name!r}"
            )
        if network.vxlan and other.vxlan and other.vxlan.vni == network.vxlan.vni:
            raise UsageError(f"VNI {network.vxlan.vni} is already used by network {other.name!r} "
                             "(a host has one VXLAN device per VNI)")


def check_against_host(network: Network, links: Iterable[str], prefixes: Iterable[HostPrefix]) -> None:
    present = set(links)
    if network.bridge in present:
        raise UsageError(f"a network interface named {network.bridge!r} already exists on this host")
    if network.vxlan and network.vxlan.device in present:
        raise UsageError(f"a network interface named {network.vxlan.device!r} already exists on this host "
                         f"(another VXLAN device with VNI {network.vxlan.vni}?)")
    for prefix in prefixes:
        if prefix.network.overlaps(network.subnet):
            raise UsageError(f"subnet {network.subnet} overlaps {prefix.what} on this host")
