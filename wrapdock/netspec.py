"""Turn what a user typed for `network create` into a checked Network, or one clear error.

Pure: the caller passes the existing networks and what the host already has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_interface

from wrapdock import names
from wrapdock.errors import UsageError
from wrapdock.model import Network

DRIVERS = ("bridge",)
PREFIX_MIN, PREFIX_MAX = 8, 30
# Ranges that cannot carry a container network: "this" network, loopback, link-local, multicast,
# reserved and broadcast.
_SPECIAL = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                                     "240.0.0.0/4")]


@dataclass(frozen=True)
class NetworkRequest:
    name: str
    subnet: str
    driver: str = "bridge"
    gateway: str | None = None
    bridge_name: str | None = None
    mtu: int | None = None
    internal: bool = False
    isolated: bool = False
    lab: str | None = None  # the lab that made it (lab down removes only its own)


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
        raise UsageError(f"unknown network driver {request.driver!r}: wrapdock supports only 'bridge'")
    bridge = names.bridge_name(request.name, request.bridge_name)
    iface = parse_subnet(request.subnet)
    subnet = iface.network
    written = iface.ip if iface.ip != subnet.network_address else None
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


def check_against_host(network: Network, links: Iterable[str], prefixes: Iterable[HostPrefix]) -> None:
    if network.bridge in set(links):
        raise UsageError(f"a network interface named {network.bridge!r} already exists on this host")
    for prefix in prefixes:
        if prefix.network.overlaps(network.subnet):
            raise UsageError(f"subnet {network.subnet} overlaps {prefix.what} on this host")
