"""What the host already has (links, IPv4 addresses, routes), read with `ip -j` and parsed purely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from wrapdock.errors import EnvironmentProblem
from wrapdock.netspec import HostPrefix
from wrapdock.overlayspec import Interface
from wrapdock.runner import Runner

# one `ip` process for both reads (each command wrapdock runs costs ~3 ms beyond its own run); `route
# show` lists IPv4 routes when no family is given (a global -4 would also leave out the links that
# have no IPv4 address, which a new bridge's name must not clash with either)
HOST_QUERY = ("ip", "-j", "-batch", "-")
HOST_QUERY_LINES = ("addr show", "route show table main")


@dataclass(frozen=True)
class HostNetworking:
    """The host's links, addresses and default interface: what a new network must not clash with."""

    links: tuple[str, ...]
    prefixes: tuple[HostPrefix, ...]
    interfaces: tuple[Interface, ...] = ()  # with their MTU and IPv4 addresses (a vxlan underlay)
    default_dev: str | None = None  # the default route's interface


def parse_interfaces(text: str) -> list[Interface]:
    return [Interface(link["ifname"], int(link.get("mtu", 0)),
                      tuple(IPv4Address(a["local"]) for a in link.get("addr_info", []) if a.get("family") == "inet"))
            for link in json.loads(text or "[]")]


def parse_default_dev(text: str) -> str | None:
    return next((r.get("dev") for r in json.loads(text or "[]") if r.get("dst") == "default"), None)


def parse_addresses(text: str) -> tuple[list[str], list[HostPrefix]]:
    links: list[str] = []
    prefixes: list[HostPrefix] = []
    for link in json.loads(text or "[]"):
        links.append(link["ifname"])
        for addr in link.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            iface = IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
            prefixes.append(HostPrefix(iface.network, f"address {iface} on {link['ifname']}"))
    return links, prefixes


def parse_routes(text: str) -> list[HostPrefix]:
    prefixes: list[HostPrefix] = []
    for route in json.loads(text or "[]"):
        dst = route.get("dst", "default")
        if dst == "default":
            continue
        network = IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        prefixes.append(HostPrefix(network, f"route {dst} dev {route.get('dev', '?')}"))
    return prefixes


def split_batch(text: str, count: int) -> list[str]:
    """The JSON documents `ip -j -batch` printed one after the other, each as text."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            break
        start = at
        _, at = decoder.raw_decode(text, at)
        documents.append(text[start:at])
    if len(documents) != count:
        raise ValueError(f"{len(documents)} JSON documents, not {count}")
    return documents


def read(runner: Runner) -> HostNetworking:
    note = "read the host's links, addresses and routes"
    result = runner.query(HOST_QUERY, note, stdin=HOST_QUERY_LINES)
    if not result.ok:
        raise EnvironmentProblem(f"`{' '.join(result.argv)}` failed: {result.stderr.strip()}")
    try:
        addresses, routes = split_batch(result.stdout, len(HOST_QUERY_LINES))
    except ValueError as exc:
        raise EnvironmentProblem(f"`{' '.join(result.argv)}` printed what is not its JSON: {exc}") from None
    links, addr_prefixes = parse_addresses(addresses)
    return HostNetworking(tuple(links), tuple(addr_prefixes + parse_routes(routes)),
                          tuple(parse_interfaces(addresses)), parse_default_dev(routes))
