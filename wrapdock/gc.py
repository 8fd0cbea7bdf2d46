"""`wrapdock gc`: reconcile the state and the host after crashes, kills and reboots.

It acts on doctor's assessment (doctor.assess), under the state lock, in this order:

1. wrapdock-* mounts left in the data directory are unmounted (a killed commit);
2. containers still in phase "creating" whose wrapdock process is gone are removed as `rm -f` would
   (process, port rules, veths, netns, cgroups, directory), then their leases and record;
3. what no record owns but is provably wrapdock's goes: a container process running from an
   unrecorded directory, rules whose owner comment names no record (deleted by that comment), veths
   wd<10 hex><n>, namespaces holding such a veth, bridges named only by orphaned rules, bridges and
   VXLAN devices whose alias names a network that has no record (with or without FDB entries), cgroups
   and directories named by an unrecorded container id, image layers (and their links) no image names;
   the FDB of a vxlan network with static peers goes back to its recorded peers (what `network sync`
   does: a `join` or `leave` killed half-way);
4. stopped containers: a missing exit code is recorded (255: unknown); endpoints whose plumbing is
   gone (no netns, no veth, or no network record) are dropped and their leases released;
5. CNI attachments whose veth is gone (their namespace went without a DEL: `ctr run -d`) are taken away as
   their DEL would (rules by tag, lease, record); leases whose holder has no record of them are released;
   allocations of unrecorded networks forgotten;
6. the shared WRAPDOCK-* chains are removed when no network record remains (restored when one does);
7. a network whose bridge, address or rules are missing gets its create plan re-run (the bridge
   guarded, the address with `replace`, every rule an ensure), and containers' veths go back on it.

Each repair (one object: a mount, a container, a rule tag, a veth, a cgroup, a network, ...) is a
plan of its own, run on its own through session.carry_out: a failing one is rolled back alone and
stops no other repair (`rmdir` of a cgroup whose processes are still exiting, or live in another PID
namespace, fails "busy"). gc does all the others, then names each failed repair with its failed
command and stderr; a second gc finds only those left. The commands show in the trail, and
`--print-only` prints them as a script in which each repair also runs on its own (state edits appear
there as comments and are not made). State edits happen only after the plan of their repair
succeeded. Nothing that is not provably wrapdock's is touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from wrapdock import cniattach, containerviews, doctor, hostsindex, leases, nameindex, overlaycheck
from wrapdock.doctor import Assessment, Facts
from wrapdock.errors import EnvironmentProblem, StateError
from wrapdock.leases import LeaseStore
from wrapdock.plan import Plan
from wrapdock.plans import gc as gc_plans
from wrapdock.plans import iptables as ipt
from wrapdock.plans.container import ContainerPaths
from wrapdock.runner import CommandFailed
from wrapdock.session import Session


@dataclass(frozen=True)
class Edit:
    """A change to wrapdock's records (not a command): made after the action's plan succeeded."""

    kind: str  # release | drop-endpoints | forget-container | forget-ipam | forget-cni
    text: str
    container: str = ""
    network: str = ""
    addresses: tuple[str, ...] = ()  # release: only these (empty: all the container holds there)
    networks: tuple[str, ...] = ()  # drop-endpoints; forget-container: the networks it was on
    drop_ports: bool = False


@dataclass
class Action:
    """One repair: its plan runs on its own (a failure undoes only this plan and stops no other repair);
    its edits are made only once the plan succeeded."""

    task: str  # what it does, named when it fails: "remove cgroup /sys/fs/cgroup/pids/wrapdock/ID"
    summary: list[str]  # what it did, once done
    plan: Plan | None = None
    edits: list[Edit] = field(default_factory=list)


@dataclass
class Outcome:
    """What gc did and what it could not do."""

    done: list[str] = field(default_factory=list)  # one line per thing done
    failed: list[str] = field(default_factory=list)  # one line per repair not done: what, and why


def _paths(facts: Facts, container_id: str) -> ContainerPaths:
    return ContainerPaths(facts.data_dir / "containers" / container_id)


def _release_all(record: dict[str, Any]) -> list[Edit]:
    return [Edit("release", f"release {record['name']}'s address on {network}", container=record["id"],
                 network=network) for network in dict.fromkeys(e["network"] for e in record["endpoints"])]


def _tables_after_orphans(facts: Facts, a: Assessment) -> ipt.Tables | None:
    if facts.iptables is None:
        return None
    return ipt.from_rules(facts.iptables.chains, [(r.table, r.chain, r.spec) for r in facts.iptables.rules
                                                  if r.comment not in a.orphan_rules])


def decide(facts: Facts, a: Assessment) -> list[Action]:
    """What gc does about an assessment, in order, one repair per object (pure: nothing carried out)."""
    actions: list[Action] = []
    points = [m.point for m in a.mounts if doctor.under(m.point, facts.data_dir)]
    for point in sorted(points, key=lambda p: (-p.count("/"), p)):  # the deepest first
        actions.append(Action(f"unmount {point}", [f"unmounted {point}"], gc_plans.unmount(point)))

    for record in a.abandoned:
        running = facts.runtime.get(record["id"], doctor.Runtime()).live
        plan = gc_plans.remove_abandoned(record, _paths(facts, record["id"]), facts.cgroup_layout, running)
        what = f"container {record['name']} ({record['id'][:12]})"
        actions.append(Action(f"remove {what}, abandoned half-way", [f"removed {what}, abandoned half-way"],
                              plan, [*_release_all(record),
                                     Edit("forget-container", f"forget container {record['name']}",
                                          container=record["id"],
                                          networks=tuple(e["network"] for e in record["endpoints"]))]))

    # what no record owns: a process first, with its directory (which goes only once the process is gone),
    # then veths (deleting one is immediate) before namespaces
    dirs = {d.name: d for d in a.orphan_dirs}
    for cid, pid in sorted(a.orphan_processes.items()):
        directory = dirs.pop(cid, None)
        killed = f"the process {pid} of unrecorded container {cid[:12]}"
        actions.append(Action(f"kill {killed}" + (f" and remove its directory {directory}" if directory else ""),
                              [f"killed {killed}", *([f"removed directory {directory}"] if directory else [])],
                              gc_plans.orphan_process(cid, _paths(facts, cid), directory)))
    for comment in sorted(a.orphan_rules):
        actions.append(Action(f"delete the iptables rules tagged {comment}",
                              [f"deleted {len(a.orphan_rules[comment])} iptables rule(s) tagged {comment}"],
                              gc_plans.orphan_rules(comment)))
    actions += [Action(f"delete veth {v.name}", [f"deleted veth {v.name}"], gc_plans.orphan_veth(v.name))
                for v in a.orphan_veths]
    actions += [Action(f"delete network namespace {n}", [f"deleted network namespace {n}"], gc_plans.orphan_netns(n))
                for n in a.orphan_netns]
    actions += [Action(f"delete VXLAN device {v.name}", [f"deleted VXLAN device {v.name}"],
                       gc_plans.orphan_vxlan(v.name)) for v in a.orphan_vxlans]
    actions += [Action(f"delete bridge {b.name}", [f"deleted bridge {b.name}"], gc_plans.orphan_bridge(b.name))
                for b in a.orphan_bridges]
    networks_by_name = {n.name: n for n in facts.networks}
    for name, issues in sorted(a.overlays.items()):  # a join or leave killed half-way, a hand-made entry
        if issues.fdb_out_of_sync and name in facts.overlay.fdb:
            plan = overlaycheck.fdb_repair(networks_by_name[name], facts.overlay.fdb[name],
                                           facts.overlay.bridge_macs.get(name, frozenset()))
            actions.append(Action(f"sync the FDB of overlay {name}",
                                  [f"synced the FDB of overlay {name} to its recorded peers ({len(plan.steps)} "
                                   "change(s))"], plan))
    # a cgroup that still holds processes is tried too: its `rmdir` fails (busy) and gc names it
    actions += [Action(f"remove cgroup {d}", [f"removed cgroup {d}"], gc_plans.orphan_cgroup(d))
                for d in [*a.orphan_cgroups, *a.busy_cgroups]]
    actions += [Action(f"remove directory {d}", [f"removed directory {d}"], gc_plans.orphan_dir(d))
                for d in dirs.values()]
    actions += [Action(f"remove image layer {p}", [f"removed image layer {p}"], gc_plans.orphan_layer(p))
                for p in a.orphan_layers]

    by_id = {r["id"]: r for r in facts.containers}
    for record in a.exit_unrecorded:
        actions.append(Action(f"record the exit of {record['name']}",
                              [f"recorded the exit of {record['name']} (code unknown: {gc_plans.UNKNOWN_EXIT})"],
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
        actions.append(Action(f"drop {record['name']}'s endpoint(s) on {', '.join(cut_networks)}",
                              [f"dropped {record['name']}'s endpoint on {c.network}: {c.reason}" for c in cuts],
                              Plan(f"drop what is left of {record['name']}'s network endpoints", steps) if steps
                              else None, edits))

    for record in a.cni_gone:  # as the DEL that never came: rules by tag, lease, record
        owner = cniattach.lease_owner(record["container_id"], record["ifname"])
        what = f"CNI attachment {owner} on {record['network']}"
        steps = cniattach.del_steps(networks_by_name[record["network"]], record["container_id"], record["ifname"],
                                    record)
        actions.append(Action(f"remove {what}, whose veth is gone", [f"removed {what}, whose veth was gone"],
                              Plan(f"remove what is left of {what}", steps),
                              [Edit("release", f"release {record['address']} on {record['network']} ({owner})",
                                    container=owner, network=record["network"], addresses=(record["address"],)),
                               Edit("forget-cni", f"forget {what}", network=record["network"],
                                    container=cniattach.record_name(record["network"], record["container_id"],
                                                                    record["ifname"]))]))

    lease_edits = [Edit("release", f"release {address} on {network} (its holder {owner[:12]} has no record of it)",
                        container=owner, network=network, addresses=(address,))
                   for network, address, owner in a.orphan_leases]
    lease_edits += [Edit("forget-ipam", f"forget the allocations of network {name}, which has no record",
                         network=name) for name in a.orphan_ipam]
    if lease_edits:
        actions.append(Action("release the leases that no record holds",
                              [f"released {address} on {network} (held by {owner[:12]}, which has no record of it)"
                               for network, address, owner in a.orphan_leases]
                              + [f"forgot the allocations of network {name}, which has no record"
                                 for name in a.orphan_ipam], None, lease_edits))

    # the tables as gc's read showed them, without the orphan rules deleted above; each repair's edits are
    # folded in, so the next plan is decided against what the ones before it leave
    tables = _tables_after_orphans(facts, a)
    if a.skeleton_orphaned:
        actions.append(Action("remove wrapdock's shared iptables chains",
                              ["removed wrapdock's shared iptables chains (no network left)"],
                              gc_plans.skeleton(remove=True, tables=tables)))
    repairs = a.repairs
    if a.skeleton_missing and not repairs:
        actions.append(Action("restore wrapdock's shared iptables chains",
                              ["restored wrapdock's shared iptables chains"], gc_plans.skeleton(remove=False)))
    if a.forwarding_off:
        actions.append(Action("turn IPv4 forwarding back on", ["turned IPv4 forwarding back on"],
                              gc_plans.ensure_forwarding()))
    networks = {n.name: n for n in facts.networks}
    detached: dict[str, list[str]] = {}
    for _record, endpoint, network in a.detached_veths:
        detached.setdefault(network.name, []).append(endpoint["host_ifname"])
    gone = {n.name for n in a.bridge_gone}
    for name in repairs:
        reasons = (["bridge gone"] if name in gone else []) + [f"no {m}" for m in a.incomplete.get(name, [])]
        if name in a.missing_rules:
            reasons.append(f"{len(a.missing_rules[name])} rule(s) missing")
        plan = gc_plans.repair_network(networks[name], reasons, detached.pop(name, []), tables)
        tables = ipt.after(tables, plan.steps)
        actions.append(Action(f"repair network {name}", [f"repaired network {name} ({', '.join(reasons)})"], plan))
    for name, veths in sorted(detached.items()):
        put = f"{', '.join(veths)} back on bridge {networks[name].bridge}"
        actions.append(Action(f"put {put}", [f"put {put}"],
                              Plan(f"reattach veths to network {name}", [gc_plans.reattach(networks[name], veths)])))
    return actions


# -- state edits ------------------------------------------------------------------------------------
def apply_edit(session: Session, edit: Edit) -> None:
    store = session.state
    if edit.kind == "release":
        held = LeaseStore.of(store, edit.network)
        if held is None:
            return
        if edit.addresses:
            held.release_addresses(edit.container, list(edit.addresses))
        else:
            held.ipam().release(edit.container)
        held.save()
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
        leases.forget(store, edit.network)
        store.remove("ipam", edit.network)
    elif edit.kind == "forget-cni":
        store.remove("cni", edit.container)
    else:  # pragma: no cover - decide() makes only the kinds above
        raise ValueError(edit.kind)


def _refresh_hosts(session: Session, network_names: set[str]) -> None:
    from wrapdock import containerhosts

    containerhosts.refresh_hosts(session, network_names)


# -- the operation -------------------------------------------------------------------------------
def _why(failure: CommandFailed) -> str:
    """The failed command and its stderr, and the rollback only when there was one."""
    return failure.cause if not (failure.undone or failure.undo_errors) else f"{failure.cause}; {failure.rollback_text}"


def _carry_out(session: Session, action: Action) -> str | None:
    """Run one repair's plan on its own; returns why it failed (None: done, or printed)."""
    assert action.plan is not None
    try:
        session.carry_out(dataclasses.replace(action.plan, repair=action.task))
    except CommandFailed as failure:
        session.runner.trail.remark(f"failed (exit {failure.result.exit_code}): {failure.error}; gc goes on with "
                                    "its other repairs")
        return f"{action.task}: {_why(failure)}"
    return None


def _remove_unused_hosts_files(session: Session, outcome: Outcome) -> None:
    from wrapdock import containerhosts
    from wrapdock.plans.container import write_files

    unused = containerhosts.unused_hosts_files(session)
    if unused:
        task = f"remove {len(unused)} shared /etc/hosts file(s) no container uses"
        plan = Plan(task, [write_files([], task, remove=tuple(unused))])
        failed = _carry_out(session, Action(task, [task], plan))
        (outcome.failed if failed else outcome.done).append(failed or task)


def _release_stale_claims(session: Session, facts: Facts, outcome: Outcome) -> None:
    """Cluster-mode networks: this host's names in etcd whose container is gone; with --cluster also its
    registrations in networks it has no record of (wrapdock/cluster.py)."""
    if not any(n.scope == "cluster" for n in facts.networks) and session.cluster is None:
        return
    from wrapdock import cluster

    addresses = {cidr.split("/")[0] for link in facts.links.values() for cidr in link.addresses}
    try:
        repairs = cluster.stale_claims(session, facts.networks, facts.containers, addresses)
    except EnvironmentProblem as exc:
        outcome.failed.append(f"check this host's claims in etcd: {exc.message}")
        return
    for task, plan in repairs:
        failed = _carry_out(session, Action(task, [task], plan))
        (outcome.failed if failed else outcome.done).append(failed or task)


def reconcile(session: Session) -> Outcome:
    """Carry out (or, with --print-only, collect) what gc decides, each repair on its own."""
    session.require_root()
    outcome = Outcome()
    with session.lock():
        facts = doctor.gather(session, environment=False)
        if facts.broken_state:
            raise StateError("gc needs every state file readable, or it would take their objects for leftovers: "
                             + "; ".join(facts.broken_state))
        if facts.iptables is None:
            raise EnvironmentProblem(f"gc cannot read the iptables rules ({facts.iptables_error})")
        changed_networks: set[str] = set()
        for action in decide(facts, doctor.assess(facts)):
            if action.plan is not None and action.plan.steps:
                failed = _carry_out(session, action)
                if failed is not None:  # its edits wait for the repair: the next gc finds it again
                    outcome.failed.append(failed)
                    continue
            for edit in action.edits:
                if session.print_only:
                    session.printed.append(Plan(f"state (wrapdock's records, not a command): {edit.text}"))
                    continue
                session.runner.trail.heading(f"state: {edit.text}")
                apply_edit(session, edit)
                if edit.kind in ("drop-endpoints", "forget-container"):  # /etc/hosts lines to take out
                    changed_networks.update(edit.networks)
            outcome.done.extend(action.summary)
        _release_stale_claims(session, facts, outcome)
        changed_networks &= {n.name for n in facts.networks}
        if not session.print_only:  # and the files a run or rm left wrong (they edit the files in place)
            from wrapdock import containerhosts

            drifted = containerhosts.out_of_date(session, containerviews.all_records(session),
                                                 {n.name for n in facts.networks})
            changed_networks.update(*drifted.values())
        if changed_networks and not session.print_only:
            try:
                _refresh_hosts(session, changed_networks)
            except CommandFailed as failure:
                outcome.failed.append(f"update /etc/hosts of the containers on {', '.join(sorted(changed_networks))}: "
                                      + _why(failure))
        _remove_unused_hosts_files(session, outcome)
        if not session.print_only:  # the caches and indexes of the records: written from the records alone
            session.state.rebuild_index("container")
            records = containerviews.all_records(session)
            nameindex.build(session.state, records)
            hostsindex.rebuild(session, records, set(session.state.names("network")))
    return outcome
