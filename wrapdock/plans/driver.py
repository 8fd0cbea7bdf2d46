"""The network driver seam: what a network's plans are, whichever kind of network it is.

Modelled on libnetwork's driver API and the CNI plugins: the operations (wrapdock/networks.py)
check, lock, record and run; a driver only plans. Two drivers:
- bridge (wrapdock/plans/network.py): a bridge on one host;
- vxlan (wrapdock/plans/vxlan.py): the same bridge with a VXLAN port to other hosts (static peers, or
  in cluster mode the hosts registered in etcd: wrapdock/cluster.py adds the etcd claims, through the
  store seam of wrapdock/clusterstore.py, around the same plans).
Endpoints (a container's veth on the network's bridge, wrapdock/plans/endpoint.py) are the same for
both, so attach and detach are shared, not per driver, until a driver needs its own.
`tables`: the host's iptables as the operation read them (None: unreadable, in --print-only only);
`forwarding`: IPv4 forwarding as a live create read it (None: unknown, --print-only: the plan checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wrapdock.model import Network
from wrapdock.plan import Plan
from wrapdock.plans import network as bridge_plans
from wrapdock.plans import vxlan as vxlan_plans
from wrapdock.plans.iptables import Tables


class Driver(Protocol):
    name: str
    multi_host: bool  # has peers to join, leave and sync

    def create(self, network: Network, tables: Tables | None, forwarding: bool | None = None) -> Plan: ...
    def remove(self, network: Network, last: bool, tables: Tables | None) -> Plan: ...


@dataclass(frozen=True)
class _Module:
    """A driver as a module of plan functions."""

    name: str
    multi_host: bool
    module: object

    def create(self, network: Network, tables: Tables | None, forwarding: bool | None = None) -> Plan:
        return self.module.create(network, tables, forwarding)  # type: ignore[attr-defined]

    def remove(self, network: Network, last: bool, tables: Tables | None) -> Plan:
        return self.module.remove(network, last, tables)  # type: ignore[attr-defined]


DRIVERS: dict[str, Driver] = {
    "bridge": _Module("bridge", False, bridge_plans),
    "vxlan": _Module("vxlan", True, vxlan_plans),
}


def of(network: Network) -> Driver:
    try:
        return DRIVERS[network.driver]
    except KeyError:
        raise ValueError(f"network {network.name} has an unknown driver {network.driver!r}") from None


def create(network: Network, tables: Tables | None, forwarding: bool | None = None) -> Plan:
    return of(network).create(network, tables, forwarding)


def remove(network: Network, last: bool, tables: Tables | None) -> Plan:
    return of(network).remove(network, last, tables)
