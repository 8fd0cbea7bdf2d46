"""The objects wrapdock manages, as plain data, with their JSON record form."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any


@dataclass(frozen=True)
class Network:
    """A bridge network: iproute2's vocabulary (bridge = the link, gateway = the bridge's address)."""

    name: str
    id: str
    driver: str
    subnet: IPv4Network
    gateway: IPv4Address
    bridge: str
    mtu: int | None = None
    internal: bool = False
    isolated: bool = False
    lab: str | None = None
    created: str = ""

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.subnet.prefixlen}"

    def to_record(self) -> dict[str, Any]:
        return {
            "version": 1,
            "name": self.name,
            "id": self.id,
            "driver": self.driver,
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "bridge": self.bridge,
            "mtu": self.mtu,
            "internal": self.internal,
            "isolated": self.isolated,
            "lab": self.lab,
            "created": self.created,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Network:
        return cls(
            name=record["name"],
            id=record["id"],
            driver=record["driver"],
            subnet=IPv4Network(record["subnet"]),
            gateway=IPv4Address(record["gateway"]),
            bridge=record["bridge"],
            mtu=record.get("mtu"),
            internal=record.get("internal", False),
            isolated=record.get("isolated", False),
            lab=record.get("lab"),
            created=record.get("created", ""),
        )
