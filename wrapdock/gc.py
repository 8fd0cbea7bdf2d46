"""`wrapdock gc`: reconcile the state and the host after crashes, kills and reboots.

It acts on doctor's assessment (doctor.assess), under the state lock, in this order:

1. wrapdock-* mounts left in the data directory are unmounted (a killed commit);
2. containers still in phase "creating" whose wrapdock process is gone are removed as `rm -f` would
   (process, port rules, veths, netns, cgroups, directory), then their leases and record;
3. what no record owns but is provably wrapdock's goes: a container process running from an
   unrecorded directory, rules whose owner comment names no record (deleted by that comment), veths
   wd<10 hex><n>, namespaces holding such a veth, bridges named only by orphaned rules, cgroups and
   directories named by an unrecorded container id;
4. stopped containers: a missing exit code is recorded (255: unknown); endpoints whose plumbing is
   gone (no netns, no veth, or no network record) are dropped and their leases released;
5. leases whose holder has no record of them are released; allocations of unrecorded networks forgotten;
6. the shared WRAPDOCK-* chains are removed when no network record remains (restored when one does);
7. a network whose bridge, address or rules are missing gets its create plan re-run (the bridge
   guarded, the address with `replace`, every rule an ensure), and containers' veths go back on it.

Commands go through session.carry_out, so they show in the trail and `--print-only` prints them as a
script (state edits appear there as comments and are not made). State edits happen only after the
commands they follow succeeded. Nothing that is not provably wrapdock's is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from wrapdock import doctor
from wrapdock.doctor import Assessment, Facts
from wrapdock.errors import EnvironmentProblem, StateError
from wrapdock.ipam import Ipam, RecordStore
from wrapdock.plan import Plan
from wrapdock.plans import gc as gc_plans
from wrapdock.plans.container import ContainerPaths
from wrapdock.session import Session


@dataclass(frozen=True)
class Edit:
    """A change to wrapdock's records (not a command): made after the action's plan succeeded."""

    kind: str  # release | drop-endpoints | forget-container | forget-ipam
    text: str
    container: str = ""
    network: str = ""
    addresses: tuple[str, ...] = ()  # release: only these (empty: all the container holds there)
    networks: tuple[str, ...] = ()  # drop-endpoints
    drop_ports: bool = False


@dataclass
class Action:
    summary: list[str]
    plan: Plan | None = None
    edits: list[Edit] = field(default_factory=list)


def _paths(facts: Facts, container_id: str) -> ContainerPaths:
    return ContainerPaths(facts.data_dir / "containers" / container_id)


def _release_all(record: dict[str, Any]) -> list[Edit]:
    return [Edit("release", f"release {record['name']}'s address on {network}", container=record["id"],
                 network=network) for network in dict.fromkeys(e["network"] for e in record["endpoints"])]


def decide(facts: Facts, a: Assessment) -> list[Action]:
    """What gc does about an assessment, in order (pure: plans and edits, nothing carried out)."""
    actions: list[Action] = []
    points = [m.point for m in a.mounts if doctor.under(m.point, facts.data_dir)]
    if points:
        actions.append(Action([f"unmounted {p}" for p in points], gc_plans.unmount(points)))

    for record in a.abandoned:
        running = facts.runtime.get(record["id"], doctor.Runtime()).live
        plan = gc_plans.remove_abandoned(record, _paths(facts, record["id"]), facts.cgroup_layout, running)
        actions.append(Action([f"removed container {record['name']} ({record['id'][:12]}), abandoned half-way"],
                              plan, [*_release_all(record),
                                     Edit("forget-container", f"forget container {record['name']}",
                                          container=record["id"])]))

    processes = {cid: _paths(facts, cid) for cid in a.orphan_processes}
    comments = sorted(a.orphan_rules)
    veths = [v.name for v in a.orphan_veths]
    bridges = [b.name for b in a.orphan_bridges]
    vxlans = [v.name for v in a.orphan_vxlans]
    summary = ([f"killed the process {pid} of unrecorded container {cid[:12]}" for cid, pid in
                sorted(a.orphan_processes.items())]
               + [f"deleted {len(a.orphan_rules[c])} iptables rule(s) tagged {c}" for c in comments]
               + [f"deleted veth {v}" for v in veths] + [f"deleted network namespace {n}" for n in a.orphan_netns]
               + [f"deleted VXLAN device {v}" for v in vxlans]
               + [f"deleted bridge {b}" for b in bridges] + [f"removed cgroup {d}" for d in a.orphan_cgroups]
               + [f"removed directory {d}" for d in a.orphan_dirs])
    if summary:
        actions.append(Action(summary, gc_plans.orphans(processes, comments, veths, a.orphan_netns, bridges,
                                                        a.orphan_cgroups, a.orphan_dirs, vxlans)))

    by_id = {r["id"]: r for r in facts.containers}
    for record in a.exit_unrecorded:
        actions.append(Action([f"recorded the exit of {record['name']} (code unknown: {gc_plans.UNKNOWN_EXIT})"],
                              Plan(f"record the exit of container {record['name']}",
                                   [gc_plans.record_exit(record["name"], _paths(facts, record["id"]))])))
    cut_ids = list(dict.fromkeys(c.container for c in a.cuts))
    for container_id in cut_ids:
        record = by_id[container_id]
        cuts = [c for c in a.cuts if c.container == container_id]
        primary = record["endpoints"][0]["network"] if record["endpoints"] else None
        drop_ports = bool(record["ports"]) and any(c.network == primary for c in cuts)
        steps = gc_plans.cut_endpoints(record, [c.host_ifname for c in cuts if c.veth_present], drop_ports)
        cut_networks = tuple(c.network for c in cuts)
        edits = [Edit("release", f"release {record['name']}'s address on {c.network} ({c.reason})",
                      container=container_id, network=c.network) for c in cuts]
        edits.append(Edit("drop-endpoints", f"drop {record['name']}'s endpoint(s) on {', '.join(cut_networks)}"
                          + (" and its published ports" if drop_ports else ""),
                          container=container_id, networks=cut_networks, drop_ports=drop_ports))
        actions.append(Action([f"dropped {record['name']}'s endpoint on {c.network}: {c.reason}" for c in cuts],
                              Plan(f"drop what is left of {record['name']}'s network endpoints", steps) if steps
                              else None, edits))

    lease_edits = [Edit("release", f"release {address} on {network} (its holder {owner[:12]} has no record of it)",
                        container=owner, network=network, addresses=(address,))
                   for network, address, owner in a.orphan_leases]
    lease_edits += [Edit("forget-ipam", f"forget the allocations of network {name}, which has no record",
                         network=name) for name in a.orphan_ipam]
    if lease_edits:
        actions.append(Action([f"released {address} on {network} (held by {owner[:12]}, which has no record of it)"
                               for network, address, owner in a.orphan_leases]
                              + [f"forgot the allocations of network {name}, which has no record"
                                 for name in a.orphan_ipam], None, lease_edits))

    if a.skeleton_orphaned:
        actions.append(Action(["removed wrapdock's shared iptables chains (no network left)"],
                              gc_plans.skeleton(remove=True)))
    repairs = a.repairs
    if a.skeleton_missing and not repairs:
        actions.append(Action(["restored wrapdock's shared iptables chains"], gc_plans.skeleton(remove=False)))
    if a.forwarding_off:
        actions.append(Action(["turned IPv4 forwarding back on"], gc_plans.ensure_forwarding()))
    networks = {n.name: n for n in facts.networks}
    detached: dict[str, list[str]] = {}
    for _record, endpoint, network in a.detached_veths:
        detached.setdefault(network.name, []).append(endpoint["host_ifname"])
    gone = {n.name for n in a.bridge_gone}
    for name in repairs:
        reasons = (["bridge gone"] if name in gone else []) + [f"no {m}" for m in a.incomplete.get(name, [])]
        if name in a.missing_rules:
            reasons.append(f"{len(a.missing_rules[name])} rule(s) missing")
        plan = gc_plans.repair_network(networks[name], reasons, detached.pop(name, []))
        actions.append(Action([f"repaired network {name} ({', '.join(reasons)})"], plan))
    for name, veths in sorted(detached.items()):
        actions.append(Action([f"put {', '.join(veths)} back on bridge {networks[name].bridge}"],
                              Plan(f"reattach veths to network {name}", [gc_plans.reattach(networks[name], veths)])))
    return actions


# -- state edits ------------------------------------------------------------------------------------
def apply_edit(session: Session, edit: Edit) -> None:
    store = session.state
    if edit.kind == "release":
        record = store.get("ipam", edit.network)
        if record is None:
            return
        if edit.addresses:
            for address in edit.addresses:
                if record["allocations"].get(address, {}).get("owner") == edit.container:
                    RecordStore(record).remove(address)
        else:
            Ipam(IPv4Network(record["subnet"]), IPv4Address(record["gateway"]), RecordStore(record)).release(
                edit.container)
        store.put("ipam", edit.network, record)
    elif edit.kind == "drop-endpoints":
        record = store.get("container", edit.container)
        if record is None:
            return
        record["endpoints"] = [e for e in record["endpoints"] if e["network"] not in edit.networks]
        if edit.drop_ports:
            record["ports"] = []
        store.put("container", edit.container, record)
    elif edit.kind == "forget-container":
        store.remove("container", edit.container)
    elif edit.kind == "forget-ipam":
        store.remove("ipam", edit.network)
    else:  # pragma: no cover - decide() makes only the kinds above
        raise ValueError(edit.kind)


def _refresh_hosts(session: Session, network_names: set[str]) -> None:
    from wrapdock import containers

    containers.refresh_hosts(session, network_names)


# -- the operation -------------------------------------------------------------------------------
def reconcile(session: Session) -> list[str]:
    """Carry out (or, with --print-only, collect) what gc decides; returns one line per thing done."""
    session.require_root()
    with session.lock():
        facts = doctor.gather(session, environment=False)
        if facts.broken_state:
            raise StateError("gc needs every state file readable, or it would take their objects for leftovers: "
                             + "; ".join(facts.broken_state))
        if facts.iptables is None:
            raise EnvironmentProblem(f"gc cannot read the iptables rules ({facts.iptables_error})")
        actions = decide(facts, doctor.assess(facts))
        changed_networks: set[str] = set()
        for action in actions:
            if action.plan is not None and action.plan.steps:
                session.carry_out(action.plan)
            for edit in action.edits:
                if session.print_only:
                    session.printed.append(Plan(f"state (wrapdock's records, not a command): {edit.text}"))
                    continue
                session.runner.trail.heading(f"state: {edit.text}")
                apply_edit(session, edit)
                if edit.kind == "drop-endpoints":
                    changed_networks.update(edit.networks)
        if changed_networks and not session.print_only:
            _refresh_hosts(session, changed_networks & {n.name for n in facts.networks})
    return [line for action in actions for line in action.summary]
