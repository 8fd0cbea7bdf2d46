"""What the host already has (links, IPv4 addresses, routes), read with `ip -j` and parsed purely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from wrapdock.errors import EnvironmentProblem
from wrapdock.netspec import HostPrefix
from wrapdock.overlayspec import Interface
from wrapdock.runner import Runner

ADDR_QUERY = ("ip", "-j", "addr", "show")
ROUTE_QUERY = ("ip", "-j", "-4", "route", "show", "table", "main")


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


def read(runner: Runner) -> HostNetworking:
    note = "read the host's links, addresses and routes"
    results = [runner.query(ADDR_QUERY, note), runner.query(ROUTE_QUERY, note)]
    for result in results:
        if not result.ok:
            raise EnvironmentProblem(f"`{' '.join(result.argv)}` failed: {result.stderr.strip()}")
    links, addr_prefixes = parse_addresses(results[0].stdout)
    return HostNetworking(tuple(links), tuple(addr_prefixes + parse_routes(results[1].stdout)),
                          tuple(parse_interfaces(results[0].stdout)), parse_default_dev(results[1].stdout))
