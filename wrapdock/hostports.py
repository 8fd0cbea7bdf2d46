"""Picking free host ports for `-p CONTAINER_PORT` (and host ranges), as Docker's port allocator does.

A port is free for a request when no other wrapdock container publishes it (same protocol, an
overlapping host address) and no socket of this host's network namespace holds it (a listening TCP
socket, a bound UDP socket, read from /proc/net). Picks come from the ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range, minus ip_local_reserved_ports; both per network namespace),
lowest first. Called under the state lock, between reading every record and writing the new one, so
two runs never pick the same port. Reading is here; choosing (`choose`) is pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.portspec import PortMapping, PortRequest, overlaps

RANGE_FILE = "sys/net/ipv4/ip_local_port_range"
RESERVED_FILE = "sys/net/ipv4/ip_local_reserved_ports"
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Socket:
    """A host socket holding a port: a TCP listener or a bound UDP socket."""

    proto: str
    address: IPv4Address | IPv6Address
    port: int

    def holds(self, mapping: PortMapping) -> bool:
        """Would publishing `mapping` take this socket's port from it?"""
        if self.proto != mapping.proto or self.port != mapping.host_port:
            return False
        if self.address.is_unspecified or mapping.host_ip is None:
            return True
        v4 = self.address if isinstance(self.address, IPv4Address) else self.address.ipv4_mapped
        return str(v4) == mapping.host_ip


@dataclass(frozen=True)
class HostPorts:
    """What this host's network namespace says about its ports."""

    ephemeral: tuple[int, int]
    reserved: frozenset[int] = frozenset()
    sockets: tuple[Socket, ...] = ()


def _proc_address(text: str) -> IPv4Address | IPv6Address:
    """/proc/net/tcp* print addresses as 32-bit words in host byte order."""
    words = [struct.pack("=I", int(text[i:i + 8], 16)) for i in range(0, len(text), 8)]
    return ip_address(b"".join(words))


def parse_proc_net(text: str, proto: str) -> list[Socket]:
    """The sockets holding a port in one /proc/net/{tcp,tcp6,udp,udp6} table."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[1].partition(":")
        if proto == "tcp" and fields[3] != _TCP_LISTEN:
            continue  # connections: a DNAT of new connections to that port does not disturb them
        sockets.append(Socket(proto, _proc_address(address), int(port, 16)))
    return sockets


def parse_range(text: str) -> tuple[int, int]:
    low, high = (int(word) for word in text.split())
    return low, high


def parse_reserved(text: str) -> frozenset[int]:
    ports: set[int] = set()
    for part in text.replace(",", " ").split():
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return frozenset(ports)


def read(proc: Path = Path("/proc")) -> HostPorts:
    """This network namespace's ephemeral range and port-holding sockets; an unreadable file is an error."""
    try:
        ephemeral = parse_range((proc / RANGE_FILE).read_text())
        reserved_file = proc / RESERVED_FILE
        reserved = parse_reserved(reserved_file.read_text()) if reserved_file.exists() else frozenset()
        sockets: list[Socket] = []
        for table, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
            path = proc / "net" / table
            if table.endswith("6") and not path.exists():
                continue  # a kernel without IPv6
            sockets += parse_proc_net(path.read_text(), proto)
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot read which host ports are free ({exc}): no host port can be "
                                 "picked for -p") from None
    return HostPorts(ephemeral, reserved, tuple(sockets))


def needs_picking(requests: list[PortRequest]) -> bool:
    return any(r.fixed is None for r in requests)


def choose(requests: list[PortRequest], published: list[PortMapping], host: HostPorts) -> list[PortMapping]:
    """Each request with its host port: the one it names, else the lowest free one of its range."""
    taken = [*published, *(r.fixed for r in requests if r.fixed)]
    chosen: list[PortMapping] = []
    for request in requests:
        mapping = request.fixed or _pick(request, taken, host)
        if not request.fixed:
            taken.append(mapping)
        chosen.append(mapping)
    return chosen


def _pick(request: PortRequest, taken: list[PortMapping], host: HostPorts) -> PortMapping:
    low, high = request.host_ports or host.ephemeral
    skip = host.reserved if request.host_ports is None else frozenset()
    busy = {m.host_port for m in taken if m.proto == request.proto and overlaps(m.host_ip, request.host_ip)}
    busy |= {s.port for s in host.sockets if s.holds(request.mapping(s.port))}
    for port in range(low, high + 1):
        if port not in busy and port not in skip:
            return request.mapping(port)
    where = (f"the ephemeral range {low}-{high} (/proc/{RANGE_FILE})" if request.host_ports is None
             else f"{low}-{high}")
    raise UsageError(f"port mapping {request.spec!r}: no free host port for {request.container_port}/"
                     f"{request.proto} in {where}: each is published by a container or in use on this host")
