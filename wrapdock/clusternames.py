"""Names across hosts on a cluster network: the one etcd command of a container start (`run --net`,
`network connect`) and its release (`rm`, `network disconnect`).

A module of its own so that a start imports only the store's command lines (wrapdock/clusterstore.py),
not the rest of cluster mode (wrapdock/cluster.py: create, join, sync, doctor): that import was a third
of what a start on a cluster overlay cost beyond its claim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wrapdock import clusterstore as cs

if TYPE_CHECKING:
    from wrapdock.model import Network
    from wrapdock.plan import Step


def _value(network: Network, address: str) -> str:
    assert network.vxlan is not None
    return cs.encode({"address": address, "host": str(network.vxlan.vtep)})


def _store(network: Network) -> cs.EtcdStore:
    assert network.vxlan is not None and network.vxlan.cluster is not None
    return cs.EtcdStore(cs.parse_url(network.vxlan.cluster))


def register_name(network: Network, container: str, address: str) -> Step:
    """run and network connect: the container's name and address for the other hosts (their next sync
    writes it into their containers' /etc/hosts); a claim, so one name is one container across the cluster."""
    return _store(network).claim({cs.name_key(network.name, container): _value(network, address)},
                                 f"cluster: register the name {container} ({address}) in network {network.name}")


def release_name(network: Network, container: str, address: str) -> Step:
    """rm and network disconnect: the name goes (undone by writing it back)."""
    return _store(network).release({cs.name_key(network.name, container): _value(network, address)},
                                   f"cluster: release the name {container} in network {network.name}")
