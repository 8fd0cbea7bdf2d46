"""The objects wrapdock manages, as plain data, with their JSON record form."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any


@dataclass(frozen=True)
class Vxlan:
    """What a vxlan network adds on this host: its VXLAN device, this host's VTEP and address range,
    and the static peers (the other hosts' VTEP addresses)."""

    vni: int
    port: int
    device: str  # the VXLAN link, a port of the network's bridge
    vtep: IPv4Address  # `local`: the outer source address
    underlay: str  # `dev`: the interface that carries the VXLAN packets
    underlay_mtu: int
    mac: str  # derived from the VTEP address: the same after a re-create or a reboot
    host_subnet_size: int  # prefix length of each host's range
    host_range: IPv4Network  # this host's share of the subnet: its containers' addresses
    peers: tuple[IPv4Address, ...] = ()
    # cluster mode: the etcd endpoints (etcd://IP:PORT,...) that hold the network, its hosts and their
    # ranges; `peers` is then what the last sync found there. None: static peers, local state only.
    cluster: str | None = None
    hostname: str = ""  # cluster mode: this host's name as registered (shown; the VTEP is the key)
    # cluster mode: the other hosts' containers on this network (name -> address), as the last sync
    # found them in etcd: written into this host's containers' /etc/hosts; a start reads no etcd
    names: tuple[tuple[str, str], ...] = ()

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"vni": self.vni, "port": self.port, "device": self.device, "vtep": str(self.vtep),
                "underlay": self.underlay, "underlay_mtu": self.underlay_mtu, "mac": self.mac,
                "host_subnet_size": self.host_subnet_size, "host_range": str(self.host_range),
                "peers": [str(p) for p in self.peers]}
        if self.cluster is not None:
            record["cluster"], record["hostname"] = self.cluster, self.hostname
            record["names"] = dict(self.names)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Vxlan:
        return cls(vni=record["vni"], port=record["port"], device=record["device"],
                   vtep=IPv4Address(record["vtep"]), underlay=record["underlay"],
                   underlay_mtu=record["underlay_mtu"], mac=record["mac"],
                   host_subnet_size=record["host_subnet_size"], host_range=IPv4Network(record["host_range"]),
                   peers=tuple(IPv4Address(p) for p in record["peers"]), cluster=record.get("cluster"),
                   hostname=record.get("hostname", ""), names=tuple(sorted(record.get("names", {}).items())))


@dataclass(frozen=True)
class Network:
    """A network: iproute2's vocabulary (bridge = the link, gateway = the bridge's address).

    A vxlan network is a bridge network whose bridge also has a VXLAN port: `subnet` is the whole
    overlay, `gateway` this host's address on it (the first of its range), `vxlan` the rest.
    """

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
    vxlan: Vxlan | None = None

    @property
    def scope(self) -> str:
        """Docker's word: "local" = this host's state alone, "cluster" = defined in the cluster store."""
        return "cluster" if self.vxlan is not None and self.vxlan.cluster is not None else "local"

    @property
    def ipam_range(self) -> IPv4Network:
        """Where this host hands out container addresses: the subnet, or its own range of an overlay."""
        return self.vxlan.host_range if self.vxlan else self.subnet

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.subnet.prefixlen}"

    def to_record(self) -> dict[str, Any]:
        record = {
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
        if self.vxlan is not None:
            record["vxlan"] = self.vxlan.to_record()
        return record

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
            vxlan=Vxlan.from_record(record["vxlan"]) if "vxlan" in record else None,
        )
