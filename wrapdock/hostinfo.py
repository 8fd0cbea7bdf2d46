"""What the host already has (links, IPv4 addresses, routes, IPv4 forwarding, iptables), read by one
`sh -s` query (`ip -j -batch`, `cat`, `iptables-save`) and parsed purely."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from wrapdock.errors import EnvironmentProblem
from wrapdock.netspec import HostPrefix
from wrapdock.overlayspec import Interface
from wrapdock.plan import INLINE_END
from wrapdock.plans.network import IP_FORWARD
from wrapdock.runner import Result, Runner

# One process for every read a network create needs (each command wrapdock runs costs ~3 ms beyond its own
# run): one `ip` for links, addresses and routes (`route show` lists IPv4 routes when no family is given; a
# global -4 would also leave out the links that have no IPv4 address, which a new bridge's name must not
# clash with either), the forwarding switch, and the iptables the plan decides against (networks.read_tables).
# A marker line before each later part; iptables-save comes last, so a script that stopped after its
# marker tells that iptables-save (alone) failed, which --print-only without root may live with.
FORWARD_MARK = "-- ip_forward --"
SAVE_MARK = "-- iptables-save --"
IP_LINES = ("addr show", "route show table main")
HOST_QUERY = ("sh", "-s")
HOST_QUERY_LINES = ("set -e", f"ip -j -batch - <<'{INLINE_END}'", *IP_LINES, INLINE_END,
                    f"echo '{FORWARD_MARK}'", f"cat {IP_FORWARD}",
                    f"echo '{SAVE_MARK}'", "iptables-save")
HOST_QUERY_NOTE = "read the host's links, addresses, routes, IPv4 forwarding and iptables"
SAVE_ARGV = ("iptables-save",)


@dataclass(frozen=True)
class HostNetworking:
    """The host's links, addresses and default interface: what a new network must not clash with."""

    links: tuple[str, ...]
    prefixes: tuple[HostPrefix, ...]
    interfaces: tuple[Interface, ...] = ()  # with their MTU and IPv4 addresses (a vxlan underlay)
    default_dev: str | None = None  # the default route's interface
    forwarding: bool | None = None  # net.ipv4.ip_forward is 1 (None: not read)
    iptables: Result | None = None  # iptables-save as the read ran it (None: not read; networks.read_tables)


def is_host_query(argv: Sequence[str], stdin: str | None) -> bool:
    """Whether a command is this module's read (for executors that answer it: lab plans, tests)."""
    return tuple(argv) == HOST_QUERY and stdin == "\n".join(HOST_QUERY_LINES) + "\n"


def host_answer(addresses: str, routes: str, forward: str = "1", save: str = "") -> str:
    """What the read prints for these parts (`ip -j` JSON texts, the ip_forward value, iptables-save)."""
    return f"{addresses}\n{routes}\n{FORWARD_MARK}\n{forward}\n{SAVE_MARK}\n{save}"


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


def split_read(result: Result) -> tuple[str, str, Result]:
    """The read's output cut at its marker lines: ip's JSON, the ip_forward value, and iptables-save as a
    Result of its own (failed if the script stopped in it). A failure before it is an error: the part
    that failed is named, with the script's stderr."""
    lines = result.stdout.split("\n")
    for mark, before in ((FORWARD_MARK, "ip -j -batch -"), (SAVE_MARK, f"cat {IP_FORWARD}")):
        if mark not in lines:
            if result.exit_code == 0:
                raise EnvironmentProblem(f"the host read printed no {mark!r} line: {result.stdout[-200:]!r}")
            raise EnvironmentProblem(f"`{before}` failed (exit {result.exit_code}): {result.stderr.strip()}")
    forward_at, save_at = lines.index(FORWARD_MARK), lines.index(SAVE_MARK)
    save = Result(SAVE_ARGV, result.exit_code, "\n".join(lines[save_at + 1:]), result.stderr, result.seconds)
    return "\n".join(lines[:forward_at]), "\n".join(lines[forward_at + 1:save_at]).strip(), save


def read(runner: Runner) -> HostNetworking:
    result = runner.query(HOST_QUERY, HOST_QUERY_NOTE, stdin=HOST_QUERY_LINES)
    ip_json, forward, save = split_read(result)
    try:
        addresses, routes = split_batch(ip_json, len(IP_LINES))
    except ValueError as exc:
        raise EnvironmentProblem(f"`ip -j -batch -` printed what is not its JSON: {exc}") from None
    if forward not in ("0", "1"):
        raise EnvironmentProblem(f"{IP_FORWARD} reads {forward!r}, not 0 or 1")
    links, addr_prefixes = parse_addresses(addresses)
    return HostNetworking(tuple(links), tuple(addr_prefixes + parse_routes(routes)),
                          tuple(parse_interfaces(addresses)), parse_default_dev(routes), forward == "1", save)
