"""doctor's checks of vxlan networks with static peers: what breaks an overlay silently.

The same three layers as doctor.py (which calls these):

  gather(session, facts, probe)   reads: each overlay's FDB (`bridge -j fdb show dev DEV`), its
                                  containers' MTU (`ip -n NETNS -j link show dev IF`) and, for doctor,
                                  one bounded probe per peer over the underlay
                                  (`busybox ping -c 1 -W 2 -I VTEP PEER`); all through runner.query
  assess(facts) -> {name: OverlayIssues}   pure
  findings(facts, issues)                  pure: a Finding with the fixing commands each

What is checked, and why it matters (see README "Multi-host networks"):
- the VTEP address still on the underlay interface, the VXLAN device still sending from it: otherwise
  every packet to the peers is dropped;
- the VXLAN device's MAC is the one derived from the VTEP (flannel's most reported bug is a VTEP MAC
  that changed under its peers);
- the flood list (one all-zero FDB entry per peer) against the desired peers: a missing entry cuts
  that peer off, an extra one (or entries learned behind a VTEP that is no peer) sends traffic to a
  host that left;
- MTU: the VXLAN device, the bridge, its ports (the host veth ends) and the containers' interfaces at
  most underlay MTU - 50 (the underlay as it is now, it may have shrunk since create): a bridged
  overlay drops larger packets silently, no ICMP comes back;
- another VXLAN device on the same UDP port and VNI, or a collect-metadata (`external`) device on the
  same port: whichever comes up second fails (`Address already in use`), after a reboot it may be ours;
- each peer answers a ping from this host's VTEP. A probe that could not run is an error too, never a
  pass. It proves the underlay path between the VTEPs, not that the VXLAN UDP port is open.

The desired peers are the static ones of the network record; a network whose peers live elsewhere
(scope other than "local") gets only the host-side checks (desired_peers returns None).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from wrapdock.findings import ERROR, WARNING, Finding
from wrapdock.model import Network
from wrapdock.overlayspec import VXLAN_OVERHEAD
from wrapdock.plan import Plan
from wrapdock.plans import vxlan as vxlan_plans
from wrapdock.plans.vxlan import ALL_ZEROS, FdbEntry
from wrapdock.shell import quote

if TYPE_CHECKING:
    from wrapdock.doctor import Facts, Link
    from wrapdock.session import Session

PROBE_WAIT_S = 2  # per peer: a live peer answers in milliseconds, a dead one costs this much


@dataclass(frozen=True)
class VxlanInfo:
    """`ip -d` linkinfo of a VXLAN device."""

    vni: int
    port: int
    local: str | None
    dev: str | None
    external: bool  # collect-metadata: receives every VNI no other device claims


def parse_vxlan_info(entry: dict[str, Any]) -> VxlanInfo | None:
    info = entry.get("linkinfo", {})
    if info.get("info_kind") != "vxlan":
        return None
    data = info.get("info_data", {})
    return VxlanInfo(vni=data.get("id", 0), port=data.get("port", 0), local=data.get("local"),
                     dev=data.get("link"), external=bool(data.get("external")))


@dataclass(frozen=True)
class Probe:
    """Whether a joined host's VTEP answered (or why the probe could not run)."""

    peer: str
    answered: bool
    error: str | None = None  # the probe could not run (why): neither an answer nor silence


@dataclass
class OverlayFacts:
    """What doctor read of the overlays on this host: FDB entries, bridge MACs, MTUs, probes."""

    fdb: dict[str, list[FdbEntry]] = field(default_factory=dict)  # network -> its device's entries
    bridge_macs: dict[str, frozenset[str]] = field(default_factory=dict)  # network -> the bridge's on the port
    fdb_errors: dict[str, str] = field(default_factory=dict)  # network -> why the FDB could not be read
    # (container name, network) -> (netns, ifname, MTU); MTU None: could not be read
    inner_mtu: dict[tuple[str, str], tuple[str, str, int | None]] = field(default_factory=dict)
    probes: dict[str, list[Probe]] = field(default_factory=dict)  # network -> one per peer (doctor only)


def desired_peers(network: Network) -> tuple[IPv4Address, ...] | None:
    """The peers this host's FDB must list, when this host's state alone knows them (static peers)."""
    if network.vxlan is None or network.scope != "local":
        return None
    return network.vxlan.peers


def probe_argv(busybox: str, vtep: IPv4Address, peer: IPv4Address) -> tuple[str, ...]:
    """One echo request from the VTEP address, bounded: busybox's ping (wrapdock needs busybox anyway)."""
    return (busybox, "ping", "-c", "1", "-W", str(PROBE_WAIT_S), "-I", str(vtep), str(peer))


def _vtep_present(links: dict[str, Link], network: Network) -> bool:
    assert network.vxlan is not None
    underlay = links.get(network.vxlan.underlay)
    return underlay is not None and any(a.split("/")[0] == str(network.vxlan.vtep) for a in underlay.addresses)


# -- gather (reads the host) ----------------------------------------------------------------------
def gather(session: Session, facts: Facts, probe: bool) -> None:
    overlays = [n for n in facts.networks if n.vxlan is not None]
    if not overlays:
        return
    found = facts.overlay
    for network in overlays:
        assert network.vxlan is not None
        if network.vxlan.device not in facts.links:
            continue  # doctor reports the device gone
        result = session.runner.query(vxlan_plans.fdb_query(network),
                                      f"read the flood list and learned entries of {network.vxlan.device}")
        if result.ok:
            found.fdb[network.name] = vxlan_plans.parse_fdb(result.stdout)
            found.bridge_macs[network.name] = vxlan_plans.parse_bridge_macs(result.stdout)
        else:
            found.fdb_errors[network.name] = f"`{quote(result.argv)}` failed: {result.stderr.strip()}"
    by_name = {n.name: n for n in overlays}
    for record in facts.containers:
        netns = record.get("netns")
        if not netns or netns not in facts.netns:
            continue  # stopped: its interfaces are gone with its namespace
        for endpoint in record["endpoints"]:
            if endpoint["network"] not in by_name:
                continue
            argv = ("ip", "-n", netns, "-j", "link", "show", "dev", endpoint["ifname"])
            result = session.runner.query(argv, f"read the MTU of container {record['name']}'s "
                                          f"{endpoint['ifname']} on overlay {endpoint['network']}")
            mtu = json.loads(result.stdout or "[{}]")[0].get("mtu") if result.ok else None
            found.inner_mtu[(record["name"], endpoint["network"])] = (netns, endpoint["ifname"], mtu)
    if not probe:
        return
    for network in overlays:
        assert network.vxlan is not None
        peers = desired_peers(network) or ()
        if not peers or not _vtep_present(facts.links, network):
            continue  # no peers to ask, or no VTEP to ask from (reported as such)
        found.probes[network.name] = [_probe(session, facts.busybox, network.vxlan.vtep, peer) for peer in peers]


def _probe(session: Session, busybox: str | None, vtep: IPv4Address, peer: IPv4Address) -> Probe:
    if busybox is None:
        return Probe(str(peer), False, "busybox is not installed (doctor pings peers with it)")
    result = session.runner.query(probe_argv(busybox, vtep, peer),
                                  f"does peer {peer} answer over the underlay (from VTEP {vtep}, at most "
                                  f"{PROBE_WAIT_S} s)?")
    if result.ok:
        return Probe(str(peer), True)
    # busybox ping: exit 1 both for no answer (nothing on stderr) and for a failure to send (said on stderr)
    if result.exit_code == 1 and not result.stderr.strip():
        return Probe(str(peer), False)
    return Probe(str(peer), False, f"exit {result.exit_code}: {result.stderr.strip() or result.stdout.strip()}")


# -- assessment (pure) ---------------------------------------------------------------------------
@dataclass
class OverlayIssues:
    """What is wrong with one vxlan network on this host (empty lists: nothing)."""

    limit: int = 0  # MTU limit: underlay MTU (now) - 50
    underlay_mtu: int = 0
    vtep: list[str] = field(default_factory=list)  # the VTEP address or the device's local/dev is wrong
    mac: tuple[str, str] | None = None  # (the device's, the derived one)
    her_missing: list[str] = field(default_factory=list)  # peers without their flood entry
    her_stale: list[str] = field(default_factory=list)  # flood entries to VTEPs that are no peers
    learned_stale: list[FdbEntry] = field(default_factory=list)  # learned behind VTEPs that are no peers
    fdb_unreadable: str | None = None
    too_big: list[tuple[str, str, int]] = field(default_factory=list)  # (what, fix command, MTU)
    record_mtu: int | None = None  # the network's own MTU, when it is above the limit (new containers)
    clashes: list[str] = field(default_factory=list)  # other devices with the same VNI and port
    shared_port: list[str] = field(default_factory=list)  # collect-metadata devices on the same port
    silent: list[str] = field(default_factory=list)  # peers that did not answer
    unprobed: list[tuple[str, str]] = field(default_factory=list)  # (peer, why the probe could not run)

    @property
    def fdb_out_of_sync(self) -> bool:
        return bool(self.her_missing or self.her_stale or self.learned_stale)

    def __bool__(self) -> bool:
        return bool(self.vtep or self.mac or self.fdb_out_of_sync or self.fdb_unreadable or self.too_big
                    or self.record_mtu or self.clashes or self.shared_port or self.silent or self.unprobed)


def _sort_addresses(addresses: set[str]) -> list[str]:
    return sorted(addresses, key=lambda a: IPv4Address(a))


def _assess_one(facts: Facts, network: Network) -> OverlayIssues:
    vx = network.vxlan
    assert vx is not None
    issues = OverlayIssues()
    device = facts.links.get(vx.device)
    underlay = facts.links.get(vx.underlay)
    issues.underlay_mtu = underlay.mtu if underlay is not None else vx.underlay_mtu
    issues.limit = issues.underlay_mtu - VXLAN_OVERHEAD
    if underlay is None:
        issues.vtep.append(f"its underlay interface {vx.underlay} is gone")
    elif not _vtep_present(facts.links, network):
        issues.vtep.append(f"VTEP address {vx.vtep} is no longer on {vx.underlay}")
    if device is not None and device.vxlan is not None:
        if device.vxlan.local != str(vx.vtep) or device.vxlan.dev != vx.underlay:
            issues.vtep.append(f"{vx.device} sends from {device.vxlan.local or 'any address'} via "
                               f"{device.vxlan.dev or 'any interface'}, not from {vx.vtep} via {vx.underlay}")
        if device.mac.lower() != vx.mac:
            issues.mac = (device.mac.lower(), vx.mac)
    # the flood list against the desired peers
    wanted = desired_peers(network)
    entries = facts.overlay.fdb.get(network.name)
    issues.fdb_unreadable = facts.overlay.fdb_errors.get(network.name)
    if wanted is not None and entries is not None:
        want = {str(p) for p in wanted}
        flood = {e.dst for e in entries if e.mac == ALL_ZEROS}
        issues.her_missing = [str(p) for p in wanted if str(p) not in flood]
        issues.her_stale = _sort_addresses(flood - want)
        issues.learned_stale = [e for e in entries if e.mac != ALL_ZEROS and not e.permanent and e.dst not in want]
    # MTU: every link of the overlay on this host, and its containers' interfaces
    limit = issues.limit
    if network.mtu is not None and network.mtu > limit:
        issues.record_mtu = network.mtu
    for link in facts.links.values():
        on_it = link.name in (vx.device, network.bridge) or link.master == network.bridge
        if on_it and link.mtu > limit:
            what = {vx.device: "VXLAN device", network.bridge: "bridge"}.get(link.name, "bridge port")
            issues.too_big.append((f"{what} {link.name}", f"ip link set dev {link.name} mtu {limit}", link.mtu))
    for (container, net), (netns, ifname, mtu) in sorted(facts.overlay.inner_mtu.items()):
        if net == network.name and mtu is not None and mtu > limit:
            issues.too_big.append((f"container {container}'s {ifname}",
                                   f"ip -n {netns} link set dev {ifname} mtu {limit}", mtu))
    # other VXLAN devices that compete for this network's packets
    for link in facts.links.values():
        info = link.vxlan
        if link.name == vx.device or info is None or info.port != vx.port:
            continue
        if info.external:
            issues.shared_port.append(link.name)
        elif info.vni == vx.vni:
            issues.clashes.append(link.name)
    for probe in facts.overlay.probes.get(network.name, []):
        if probe.error is not None:
            issues.unprobed.append((probe.peer, probe.error))
        elif not probe.answered:
            issues.silent.append(probe.peer)
    return issues


def assess(facts: Facts) -> dict[str, OverlayIssues]:
    found = {}
    for network in facts.networks:
        if network.vxlan is not None:
            issues = _assess_one(facts, network)
            if issues:
                found[network.name] = issues
    return found


# -- findings (pure) -----------------------------------------------------------------------------
SYNC = "wrapdock network sync {name}"


def findings(facts: Facts, overlays: dict[str, OverlayIssues]) -> list[Finding]:
    out: list[Finding] = []
    by_name = {n.name: n for n in facts.networks}
    for name, issues in sorted(overlays.items()):
        network = by_name[name]
        vx = network.vxlan
        assert vx is not None
        sync = SYNC.format(name=name)
        recreate = (f"wrapdock network rm -f {name}; wrapdock network create --driver vxlan --subnet "
                    f"{network.subnet} --vni {vx.vni} --port {vx.port} --vtep IP_OR_IFACE "
                    + " ".join(f"--peer {p}" for p in vx.peers) + f" {name}  # then: network join {name} --peer "
                    "NEW_VTEP on every peer")
        if issues.vtep:
            out.append(Finding(ERROR, "overlay-vtep-changed", name,
                               f"overlay {name}: " + "; ".join(issues.vtep) + ": its VXLAN packets cannot leave",
                               (f"ip addr add {vx.vtep}/PREFIX dev {vx.underlay}  # put the address back", recreate)))
        if issues.mac is not None:
            have, want = issues.mac
            out.append(Finding(ERROR, "overlay-mac-changed", name,
                               f"overlay {name}: {vx.device} has MAC {have}, not {want} (derived from VTEP {vx.vtep}): "
                               "entries on the peers that name the old MAC go nowhere",
                               (f"ip link set dev {vx.device} address {want}",)))
        if issues.fdb_unreadable:
            out.append(Finding(ERROR, "overlay-fdb-unreadable", name,
                               f"overlay {name}: its FDB could not be read ({issues.fdb_unreadable})",
                               (f"bridge fdb show dev {vx.device}",)))
        if issues.her_missing:
            out.append(Finding(ERROR, "overlay-fdb-missing", name,
                               f"overlay {name}: no flood entry for peer(s) {', '.join(issues.her_missing)} on "
                               f"{vx.device}: broadcasts (ARP) never reach them, their containers are cut off",
                               (sync, "or: wrapdock gc")))
        if issues.her_stale or issues.learned_stale:
            parts = []
            if issues.her_stale:
                parts.append(f"flood entries to {', '.join(issues.her_stale)}")
            if issues.learned_stale:
                behind = _sort_addresses({e.dst for e in issues.learned_stale})
                parts.append(f"{len(issues.learned_stale)} learned MAC(s) behind {', '.join(behind)}")
            out.append(Finding(WARNING, "overlay-fdb-stale", name,
                               f"overlay {name}: {' and '.join(parts)}, which {'is' if len(parts) == 1 else 'are'} "
                               "no peer: traffic still goes to a host that left (learned entries age out after "
                               "300 s)", (sync, "or: wrapdock gc")))
        if issues.too_big or issues.record_mtu:
            what = ", ".join(f"{w} ({mtu})" for w, _, mtu in issues.too_big)
            text = (f"overlay {name}: MTU above underlay {vx.underlay}'s {issues.underlay_mtu} - 50 = {issues.limit}"
                    + (f": {what}" if what else "")
                    + (f"; the network itself has MTU {issues.record_mtu}, new containers get it" if issues.record_mtu
                       else "")
                    + ": larger packets are dropped silently (no ICMP on a bridged overlay)")
            fix = tuple(command for _, command, _ in issues.too_big)
            if issues.record_mtu:
                fix += (f"wrapdock network rm -f {name}; wrapdock network create --mtu {issues.limit} ... {name}",)
            out.append(Finding(ERROR, "overlay-mtu", name, text, fix))
        if issues.clashes:
            out.append(Finding(ERROR, "overlay-vni-clash", name,
                               f"overlay {name}: {', '.join(issues.clashes)} also has VNI {vx.vni} on UDP port "
                               f"{vx.port}: only one of them can be up, the other fails with 'Address already in use'",
                               (f"ip -d link show dev {issues.clashes[0]}  # whose is it? if nothing needs it: "
                                f"ip link del dev {issues.clashes[0]}",)))
        if issues.shared_port:
            out.append(Finding(WARNING, "overlay-port-shared", name,
                               f"overlay {name}: collect-metadata VXLAN device(s) {', '.join(issues.shared_port)} "
                               f"(another tool's: OVS, Cilium, FRR) on UDP port {vx.port}: whichever comes up second "
                               "fails with 'Address already in use' (after a reboot it may be this network's)",
                               (f"ip -d link show dev {issues.shared_port[0]}  # whose is it?",
                                f"or give this network another port: wrapdock network create --port N ... {name} "
                                "(on every host)")))
        if issues.silent:
            out.append(Finding(ERROR, "overlay-peer-silent", name,
                               f"overlay {name}: peer(s) {', '.join(issues.silent)} did not answer a ping from VTEP "
                               f"{vx.vtep} within {PROBE_WAIT_S} s: down, unreachable over {vx.underlay}, or "
                               "dropping ICMP",
                               (f"ping -c 3 -I {vx.vtep} {issues.silent[0]}",
                                f"gone for good: wrapdock network leave {name} --host {issues.silent[0]} --force")))
        for peer, why in issues.unprobed:
            out.append(Finding(ERROR, "overlay-probe-failed", name,
                               f"overlay {name}: could not probe peer {peer} ({why}): whether it answers is unknown",
                               (f"ip route get {peer} from {vx.vtep}",)))
    return out


# -- gc (pure) -------------------------------------------------------------------------------------
def fdb_repair(network: Network, entries: list[FdbEntry], bridge_macs: frozenset[str] = frozenset()) -> Plan:
    """The flood list back to the recorded peers: exactly what `network sync` would run."""
    plan = vxlan_plans.sync(network, entries, [], bridge_macs)
    plan.title = f"sync the FDB of overlay {network.name} to its recorded peers (as `network sync` does)"
    return plan
