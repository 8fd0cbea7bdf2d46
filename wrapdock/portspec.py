"""`-p [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]` parsed into port mappings. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from wrapdock.errors import UsageError


@dataclass(frozen=True)
class PortMapping:
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
        same_address = self.host_ip is None or other.host_ip is None or self.host_ip == other.host_ip
        return self.proto == other.proto and self.host_port == other.host_port and same_address


def _port_range(text: str, spec: str) -> list[int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise UsageError(f"invalid port mapping {spec!r}: {text!r} is not a port or a range of ports") from None
    if not (1 <= first <= 65535 and 1 <= last <= 65535) or last < first:
        raise UsageError(f"invalid port mapping {spec!r}: ports go from 1 to 65535, ranges low-high")
    return list(range(first, last + 1))


def parse(spec: str) -> list[PortMapping]:
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"invalid port mapping {spec!r}: the protocol must be tcp or udp")
    parts = body.split(":")
    if len(parts) == 2:
        host_ip, host, container = None, parts[0], parts[1]
    elif len(parts) == 3:
        host_ip, host, container = parts
        try:
            IPv4Address(host_ip)
        except ValueError:
            raise UsageError(f"invalid port mapping {spec!r}: {host_ip!r} is not an IPv4 address") from None
    else:
        raise UsageError(f"invalid port mapping {spec!r}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]")
    host_ports, container_ports = _port_range(host, spec), _port_range(container, spec)
    if len(host_ports) != len(container_ports):
        raise UsageError(f"invalid port mapping {spec!r}: the two ranges differ in length")
    return [PortMapping(host_ip, h, c, proto) for h, c in zip(host_ports, container_ports, strict=True)]


def parse_all(specs: tuple[str, ...]) -> list[PortMapping]:
    mappings: list[PortMapping] = []
    for spec in specs:
        for mapping in parse(spec):
            if any(mapping.clashes_with(m) for m in mappings):
                raise UsageError(f"port mapping {spec!r}: host port {mapping.host_port}/{mapping.proto} is given twice")
            mappings.append(mapping)
    return mappings


def from_record(record: dict) -> PortMapping:
    return PortMapping(record["host_ip"], record["host_port"], record["container_port"], record["proto"])
