"""`-p` as Docker takes it, parsed into port requests. Pure.

    -p [[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/tcp|/udp]

A request names its host port (8080:80), a host range to pick one from (8000-8010:80), or none at
all (80, :80, 127.0.0.1::80): then wrapdock picks a free one from the ephemeral range
(wrapdock.hostports). The mapping that results, with its concrete host port, is a PortMapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from wrapdock.errors import UsageError

FORMS = "[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|/udp]"


@dataclass(frozen=True)
class PortMapping:
    """One published port: host address and port, container port, protocol."""

    host_ip: str | None  # None: every local address
    host_port: int
    container_port: int
    proto: str = "tcp"

    def text(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}->{self.container_port}/{self.proto}"

    def to_record(self) -> dict:
        return {"host_ip": self.host_ip, "host_port": self.host_port, "container_port": self.container_port,
                "proto": self.proto}

    def clashes_with(self, other: PortMapping) -> bool:
        return self.proto == other.proto and self.host_port == other.host_port and overlaps(self.host_ip, other.host_ip)


@dataclass(frozen=True)
class PortRequest:
    """One container port as -p asks for it, before a host port is picked."""

    spec: str  # the -p text it came from, for errors
    host_ip: str | None
    host_ports: tuple[int, int] | None  # (p, p): that port; (low, high): one of them; None: the ephemeral range
    container_port: int
    proto: str = "tcp"

    @property
    def fixed(self) -> PortMapping | None:
        """The mapping, when -p named a single host port (nothing to pick)."""
        if self.host_ports is None or self.host_ports[0] != self.host_ports[1]:
            return None
        return self.mapping(self.host_ports[0])

    def mapping(self, host_port: int) -> PortMapping:
        return PortMapping(self.host_ip, host_port, self.container_port, self.proto)


def overlaps(ip: str | None, other: str | None) -> bool:
    """Two host addresses of mappings meet: the same one, or one of them is every address."""
    return ip is None or other is None or ip == other


def _port_range(text: str, spec: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise UsageError(f"invalid port mapping {spec!r}: {text!r} is not a port or a range of ports") from None
    if not (1 <= first <= 65535 and 1 <= last <= 65535) or last < first:
        raise UsageError(f"invalid port mapping {spec!r}: ports go from 1 to 65535, ranges low-high")
    return first, last


def parse(spec: str) -> list[PortRequest]:
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"invalid port mapping {spec!r}: the protocol must be tcp or udp")
    parts = body.split(":")
    if len(parts) > 3:
        raise UsageError(f"invalid port mapping {spec!r}: expected {FORMS} (ranges a-b too)")
    host_ip, host, container = [""] * (3 - len(parts)) + parts
    if host_ip:
        try:
            IPv4Address(host_ip)
        except ValueError:
            raise UsageError(f"invalid port mapping {spec!r}: {host_ip!r} is not an IPv4 address") from None
    if not container:
        raise UsageError(f"invalid port mapping {spec!r}: no container port (expected {FORMS})")
    low, high = _port_range(container, spec)
    container_ports = range(low, high + 1)
    ip = None if host_ip in ("", "0.0.0.0") else host_ip  # Docker's 0.0.0.0 is every address too
    if not host:  # Docker: each container port gets a free host port of its own
        return [PortRequest(spec, ip, None, c, proto) for c in container_ports]
    host_low, host_high = _port_range(host, spec)
    if len(container_ports) == 1:  # one host port, or any free one of a host range (Docker's 8000-8010:80)
        return [PortRequest(spec, ip, (host_low, host_high), low, proto)]
    if host_high - host_low + 1 != len(container_ports):
        raise UsageError(f"invalid port mapping {spec!r}: the two ranges differ in length")
    return [PortRequest(spec, ip, (h, h), c, proto)
            for h, c in zip(range(host_low, host_high + 1), container_ports, strict=True)]


def parse_all(specs: tuple[str, ...]) -> list[PortRequest]:
    """Every -p, with the host ports given twice refused (the ones still to pick are wrapdock's to keep apart)."""
    requests: list[PortRequest] = []
    for spec in specs:
        for request in parse(spec):
            mine = request.fixed
            if mine and any(r.fixed and mine.clashes_with(r.fixed) for r in requests):
                raise UsageError(f"port mapping {spec!r}: host port {mine.host_port}/{mine.proto} is given twice")
            requests.append(request)
    return requests


def from_record(record: dict) -> PortMapping:
    return PortMapping(record["host_ip"], record["host_port"], record["container_port"], record["proto"])
