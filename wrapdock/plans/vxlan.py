"""The vxlan driver, static peers: one L2 subnet across hosts, learning on, head-end replication.

Per host: the network's bridge (this host's gateway address on it) with a VXLAN device as one more
port. The VXLAN device gets an explicit `dstport`, `local` (the VTEP address), `dev` (the underlay),
a MAC derived from the VTEP address and the overlay MTU (underlay - 50), as do the bridge and every
veth. Each peer is one all-zero FDB entry on the VXLAN device (`bridge fdb append
00:00:00:00:00:00 ... dst PEER`): broadcasts and unknown unicasts go to every peer, and the kernel
learns which VTEP each remote MAC sits behind. A container start touches no other host. Forwarding,
NAT and published ports are the bridge driver's steps, unchanged.

`sync` compares the desired peers with `bridge -j fdb show` and plans only the difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address

from wrapdock import names
from wrapdock.model import Network, Vxlan
from wrapdock.plan import Plan, Step, cmd, inline
from wrapdock.plans import iptables as ipt
from wrapdock.plans import network as bridge_plans

ALL_ZEROS = "00:00:00:00:00:00"  # the FDB entry for broadcast/unknown destinations: one per peer


def _vxlan(network: Network) -> Vxlan:
    if network.vxlan is None:
        raise ValueError(f"network {network.name} is not a vxlan network")
    return network.vxlan


def _her_add(vx: Vxlan, peer: IPv4Address, note: str) -> Step:
    """`append`, not `replace`: the kernel refuses to replace a non-unicast entry; a duplicate append is a no-op."""
    return cmd("bridge", "fdb", "append", ALL_ZEROS, "dev", vx.device, "dst", str(peer), "self", "permanent",
               note=note, undo=_her_del(vx, peer, note))


def _her_del(vx: Vxlan, peer: IPv4Address, note: str) -> Step:
    return cmd("bridge", "fdb", "del", ALL_ZEROS, "dev", vx.device, "dst", str(peer), "self", note=note)


def peers_note(vx: Vxlan) -> str:
    return f"the peers: flood broadcasts and unknown destinations to each VTEP ({vx.device} learns the rest)"


def _bridge_lines(network: Network) -> list[str]:
    """The bridge as create makes it (MTU, owner in its alias, gateway address, up): create's batch and
    the undo of leave's bridge deletion both run these lines."""
    br = network.bridge
    return [f"link add name {br} mtu {network.mtu} type bridge",
            f"link set dev {br} alias {names.network_comment(network.name)}",
            f"addr add {network.gateway_cidr} dev {br}",
            f"link set dev {br} up"]


def _device_lines(network: Network) -> list[str]:
    """The VXLAN device as create makes it (derived MAC, dstport, local, dev, learning, on the bridge, up)."""
    vx = _vxlan(network)
    return [f"link add name {vx.device} address {vx.mac} mtu {network.mtu} type vxlan id {vx.vni} "
            f"dstport {vx.port} local {vx.vtep} dev {vx.underlay} learning",
            f"link set dev {vx.device} alias {names.network_comment(network.name)}",
            f"link set dev {vx.device} master {network.bridge}",
            f"link set dev {vx.device} up"]


def _links_batch(lines: list[str], note: str, undo: Step | None = None) -> Step:
    return cmd("ip", "-batch", "-", note=note, partial=True, stdin=lines, undo=undo)


def _flood_list(vx: Vxlan) -> Step:
    """No undo of its own: deleting the device deletes its FDB."""
    return cmd("bridge", "-batch", "-", note=peers_note(vx), stdin=[
        f"fdb append {ALL_ZEROS} dev {vx.device} dst {peer} self permanent" for peer in vx.peers])


def _link_note(network: Network) -> str:
    vx = _vxlan(network)
    return (f"bridge {network.bridge} with gateway {network.gateway_cidr}, VXLAN device {vx.device} on it "
            f"(MTU {network.mtu} = underlay {vx.underlay_mtu} - 50 or less)")


def create(network: Network, tables: ipt.Tables | None, forwarding: bool | None = None) -> Plan:
    vx = _vxlan(network)
    br = network.bridge
    plan = Plan(f"create vxlan network {network.name} ({network.subnet}, VNI {vx.vni}, UDP port {vx.port}; "
                f"this host: VTEP {vx.vtep} on {vx.underlay}, range {vx.host_range}, gateway {network.gateway}, "
                f"bridge {br})")
    link_note = _link_note(network)
    # one batch, both links carry their owner in their alias from the start (gc can tell they are ours);
    # with the flood list and route_localnet in one `sh -s` (one process), undone by deleting the links
    links = _links_batch([*_bridge_lines(network), *_device_lines(network)], link_note, undo=cmd(
        "sh", "-s", note=link_note, stdin=(
            "set -e",
            f"[ ! -e /sys/class/net/{vx.device} ] || ip link del dev {vx.device}",
            f"[ ! -d /sys/class/net/{br}/bridge ] || ip link del dev {br}",
        )))
    flood = [_flood_list(vx)] if vx.peers else []
    plan.add(bridge_plans.with_route_localnet(network, [links, *flood]))
    plan.extend(bridge_plans.host_steps(network, tables, forwarding))
    return plan


def remove(network: Network, last: bool, tables: ipt.Tables | None) -> Plan:
    """Exactly what create made, backwards; the FDB entries go with the device.

    Every step has an undo, so a fault at any later one (a cluster leave's etcd release comes last)
    leaves the host as it was: a deletion is undone by create's own lines (the device with its flood
    list, the bridge with its address and route_localnet). What the device had learned is not put back:
    it is learned again from the next packets.
    """
    vx = _vxlan(network)
    br = network.bridge
    plan = Plan(f"remove vxlan network {network.name} ({network.subnet}, VNI {vx.vni}, bridge {br})")
    plan.extend(bridge_plans.remove_rules(network, tables, last))
    device_note = f"VXLAN device {vx.device} (its FDB entries, the peers, go with it)"
    redo_device = [_links_batch(_device_lines(network), device_note), *([_flood_list(vx)] if vx.peers else [])]
    plan.add(cmd("ip", "link", "del", "dev", vx.device, note=device_note,
                 only_if=("test", "-e", f"/sys/class/net/{vx.device}"), undo=inline(redo_device, device_note)))
    bridge_note = f"bridge {br} (its address and routes go with it)"
    redo_bridge = [_links_batch(_bridge_lines(network), bridge_note)]
    if not network.internal:
        redo_bridge.append(bridge_plans.route_localnet(network))
    plan.add(cmd("ip", "link", "del", "dev", br, note=bridge_note,
                 only_if=("test", "-d", f"/sys/class/net/{br}/bridge"), undo=inline(redo_bridge, bridge_note)))
    return plan


# -- sync: the kernel's FDB against the desired peers -------------------------------------------------
@dataclass(frozen=True)
class FdbEntry:
    """One FDB entry of a VXLAN device as `bridge -j fdb show` lists it."""

    mac: str
    dst: str
    permanent: bool


def fdb_query(network: Network) -> tuple[str, ...]:
    return ("bridge", "-j", "fdb", "show", "dev", _vxlan(network).device)


LINKS_QUERY = ("ip", "-j", "link", "show")


def own_links(network: Network) -> tuple[str, ...]:
    return (network.bridge, _vxlan(network).device)


def parse_missing(text: str, wanted: tuple[str, ...]) -> list[str]:
    present = {link["ifname"] for link in json.loads(text or "[]")}
    return [name for name in wanted if name not in present]


def parse_fdb(text: str) -> list[FdbEntry]:
    """The VXLAN device's own entries (those with a remote `dst`); the bridge's entries have none."""
    return [FdbEntry(e["mac"], e["dst"], e.get("state") == "permanent")
            for e in json.loads(text or "[]") if "dst" in e]


def parse_bridge_macs(text: str) -> frozenset[str]:
    """MACs the bridge itself learned on the VXLAN port (`master` entries, not permanent): after a host
    leaves, those of its containers would otherwise keep pointing into the VXLAN port for 300 s."""
    return frozenset(e["mac"] for e in json.loads(text or "[]") if "master" in e and e.get("state") != "permanent")


def parse_down(text: str, wanted: tuple[str, ...]) -> list[str]:
    """Which of `wanted` are not administratively up (from `ip -j link show`)."""
    flags = {link["ifname"]: link.get("flags", []) for link in json.loads(text or "[]")}
    return [name for name in wanted if name in flags and "UP" not in flags[name]]


def sync(network: Network, fdb: list[FdbEntry], down: list[str], bridge_macs: frozenset[str] = frozenset()) -> Plan:
    """The difference between the desired peers and the kernel, as steps; empty when in sync.

    Learned entries pointing at a VTEP that is no peer any more are deleted one by one (otherwise they
    would stay for the 300 s ageing time), with the bridge's own entry for the same MAC on the VXLAN
    port (`bridge_macs`); the learned entries of the remaining peers are kept. Learned entries may
    age out between the read and the delete: each delete is guarded by a `bridge fdb get`.
    """
    vx = _vxlan(network)
    wanted = {str(p) for p in vx.peers}
    present = {e.dst for e in fdb if e.mac == ALL_ZEROS}
    plan = Plan(f"sync vxlan network {network.name}: this host's kernel to its {len(wanted)} static peer(s)")
    for name in down:
        plan.add(cmd("ip", "link", "set", "dev", name, "up", note=f"{name} is down: bring it up"))
    for peer in vx.peers:
        if str(peer) not in present:
            plan.add(_her_add(vx, peer, f"peer {peer} is missing from {vx.device}'s flood list: add it"))
    for dst in sorted(present - wanted, key=lambda d: tuple(int(x) for x in d.split("."))):
        address = IPv4Address(dst)
        step = _her_del(vx, address, f"{dst} is no peer (any more): take it off {vx.device}'s flood list")
        plan.add(Step(step.argv, step.note, undo=_her_add(vx, address, step.note)))
    for entry in fdb:
        if entry.mac != ALL_ZEROS and not entry.permanent and entry.dst not in wanted:
            note = f"forget what {vx.device} learned behind {entry.dst}, which is no peer"
            # undone (a later step failed) as a learned entry again: dynamic, it ages out as before
            plan.add(cmd("bridge", "fdb", "del", entry.mac, "dev", vx.device, "dst", entry.dst, "self", note=note,
                         only_if=("bridge", "fdb", "get", entry.mac, "dev", vx.device, "self"),
                         undo=cmd("bridge", "fdb", "replace", entry.mac, "dev", vx.device, "dst", entry.dst, "self",
                                  "dynamic", note=note)))
            if entry.mac in bridge_macs:
                plan.add(cmd("bridge", "fdb", "del", entry.mac, "dev", vx.device, "master", note=note,
                             only_if=("bridge", "fdb", "get", entry.mac, "dev", vx.device, "master"),
                             undo=cmd("bridge", "fdb", "replace", entry.mac, "dev", vx.device, "master", "dynamic",
                                      note=note)))
    return plan
