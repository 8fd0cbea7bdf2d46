"""Network operations: check the request against state and host, plan, carry out, record.

Order matters for safety: everything that can refuse (input, state, host) is checked before the first
command runs; state is written only after the plan succeeded, and a failure to write it rolls the
plan back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wrapdock import names
from wrapdock.errors import UsageError
from wrapdock.ipam import RecordStore
from wrapdock.model import Network
from wrapdock.session import Session

if TYPE_CHECKING:  # `run` needs only load(): what create and remove use is imported there
    from wrapdock import netspec
    from wrapdock.plan import Plan
    from wrapdock.plans.iptables import Tables
    from wrapdock.runner import Result


def load(session: Session, name: str) -> Network:
    """A network by name, or one clear error (also when --cluster names another cluster than its own)."""
    names.check_object_name("network", name)
    record = session.state.get("network", name)
    if record is None:
        raise UsageError(f"no such network: {name}")
    network = Network.from_record(record)
    recorded = network.vxlan.cluster if network.vxlan is not None else None
    if session.cluster is not None and recorded is not None and session.cluster.url != recorded:
        raise UsageError(f"network {name!r} belongs to cluster {recorded}, not {session.cluster.url}")
    return network


def all_networks(session: Session) -> list[Network]:
    return [Network.from_record(record) for record in session.state.all("network")]


def create(session: Session, request: netspec.NetworkRequest) -> Network:
    from wrapdock import hostinfo, netspec
    from wrapdock.plans import driver

    if request.driver == "vxlan" and session.cluster is not None:
        from wrapdock import cluster

        return cluster.create(session, request)
    network = netspec.build_network(request)
    session.require_root()
    with session.lock():
        netspec.check_against_networks(network, all_networks(session))
        host = hostinfo.read(session.runner)
        if network.driver == "vxlan":  # this host's part: its VTEP, underlay and range
            network = netspec.place_overlay(network, request, host.interfaces, host.default_dev)
            netspec.check_against_networks(network, all_networks(session))
        netspec.check_against_host(network, host.links, host.prefixes)
        plan = driver.create(network, read_tables(session, host.iptables), forwarding(session, host.forwarding))
        carry_out_and_record(session, network, plan)
    return network


def carry_out_and_record(session: Session, network: Network, plan: Plan) -> None:
    """Carry out a new network's plan, then record the network and its IPAM record (create, and a
    cluster create or join). State is written only after the plan succeeded; a failure to write it
    rolls the plan back (an etcd claim included) and drops what was written, so host and state agree."""
    completed = session.carry_out(plan)
    if not session.records_state:
        return
    try:
        session.state.put("network", network.name, network.to_record())
        session.state.put("ipam", network.name,
                          RecordStore.new_record(network.name, network.ipam_range, network.gateway))
        if not session.print_only:  # no container on it yet: no /etc/hosts file lists it
            from wrapdock import hostsindex

            hostsindex.write(session, network.name, ())
    except BaseException:
        session.runner.rollback(completed)
        _forget(session, network.name)
        raise


def remove(session: Session, names: list[str], force: bool = False) -> list[Network]:
    from wrapdock.plans import driver
    from wrapdock.plans.iptables import after

    session.require_root()
    doomed_names = list(dict.fromkeys(names))
    clustered: list[Network] = []
    for name in doomed_names:
        network = load(session, name)
        if network.scope == "cluster":
            clustered.append(network)
    if clustered:  # this host leaves them (their definition goes with the last host)
        from wrapdock import cluster

        done = [cluster.leave(session, network.name, force) for network in clustered]
        rest = [name for name in doomed_names if name not in {n.name for n in clustered}]
        return done + (remove(session, rest, force) if rest else [])
    if force:  # containers first: their veths and leases, through the container operations
        from wrapdock import cniattach, containers

        for name in doomed_names:
            for record in containers.attached_to(session, name):
                containers.disconnect(session, name, record["id"], force=True)
            cniattach.remove_all(session, name)  # and what CNI callers attached (as their DEL would)
    with session.lock():
        doomed = [load(session, name) for name in doomed_names]
        for network in doomed:
            holders = sorted(set(allocations(session, network.name).values()))
            if holders and (session.records_state or not force):  # print-only -f printed the disconnects
                raise UsageError(
                    f"network {network.name!r} still has {len(holders)} attached container(s) "
                    f"({', '.join(_holder_names(session, holders[:3]))}{', ...' if len(holders) > 3 else ''}): "
                    "remove them first or use -f"
                )
        survivors = {n.name for n in all_networks(session)} - {n.name for n in doomed}
        tables = read_tables(session)
        for position, network in enumerate(doomed, start=1):
            last = not survivors and position == len(doomed)
            plan = driver.remove(network, last, tables)
            session.carry_out(plan)
            tables = after(tables, plan.steps)  # what this removal left, for the next one
            if session.records_state:
                _forget(session, network.name)
    return doomed


def forwarding(session: Session, read: bool | None) -> bool | None:
    """What a plan may take as known of IPv4 forwarding: live, what the host read showed (on: no step);
    --print-only: nothing (the script runs later, maybe elsewhere: it checks for itself)."""
    return None if session.print_only else read


def read_tables(session: Session, saved: Result | None = None) -> Tables | None:
    """The host's iptables, read (iptables-save, shown in the trail) for the plans to decide against;
    `saved`: iptables-save as the host read (hostinfo.read) already ran it, so no second process.

    Live, under the lock: read each time, a read that fails is an error. --print-only (no root needed): read
    once per run, later plans see it as the plans printed before would leave it; unreadable -> None (the
    plans assume the host matches the state, and say so)."""
    from wrapdock.errors import EnvironmentProblem
    from wrapdock.plans import iptables as ipt

    if not session.iptables_read:
        result = saved if saved is not None else session.runner.query(ipt.SAVE_QUERY, ipt.SAVE_NOTE)
        tables = ipt.parse_save(result.stdout) if result.ok else None
        if not session.print_only:
            if tables is None:
                raise EnvironmentProblem(f"`{' '.join(result.argv)}` failed (exit {result.exit_code}): cannot tell "
                                         f"which iptables rules exist: {result.stderr.strip()}")
            return tables
        session.iptables_read.append(tables)
    return ipt.after(session.iptables_read[0], [step for plan in session.printed for step in plan.steps])


def _holder_names(session: Session, owners: list[str]) -> list[str]:
    names_by_id = {r["id"]: r["name"] for r in session.state.all("container")}
    return [names_by_id.get(owner, owner if owner.startswith("cni:") else owner[:12]) for owner in owners]


def _forget(session: Session, name: str) -> None:
    """Drop a network's records: allocations first, so a crash in between leaves a network without leases."""
    from wrapdock import hostsindex, leases

    hostsindex.forget(session, name)
    leases.forget(session.state, name)
    session.state.remove("ipam", name)
    session.state.remove("network", name)


def allocations(session: Session, name: str) -> dict[str, str]:
    return {address: entry["owner"] for address, entry in _leases(session, name).items()}


def _leases(session: Session, name: str) -> dict[str, dict[str, Any]]:
    """address -> {"owner", "time"} of every lease on the network (wrapdock/leases.py)."""
    from wrapdock.leases import LeaseStore

    store = LeaseStore.of(session.state, name)
    return store.entries() if store is not None else {}


def describe(session: Session, network: Network) -> dict[str, Any]:
    """The inspect/list view of a network: its record plus who holds which address."""
    record = session.state.get("ipam", network.name)
    view = network.to_record()
    del view["version"]
    view["scope"] = network.scope
    view["allocations"] = [{"address": address, **entry} for address, entry in _leases(session, network.name).items()]
    view["last_reserved"] = (record or {}).get("last_reserved")
    names_by_id = {r["id"]: r["name"] for r in session.state.all("container")}
    view["containers"] = sorted({names_by_id.get(a["owner"], a["owner"]) for a in view["allocations"]})
    from wrapdock import cniattach

    view["cni_attachments"] = cniattach.views(session, network.name)
    return view


def inspect(session: Session, names: list[str]) -> list[dict[str, Any]]:
    """describe(); a cluster network also with what etcd holds of it (its hosts: one printed etcdctl get)."""
    views = []
    for network in [load(session, name) for name in names]:
        view = describe(session, network)
        if network.scope == "cluster":
            from wrapdock import cluster

            view["cluster"] = cluster.describe(session, network)
        views.append(view)
    return views


# -- multi-host networks: this host's view of its peers ----------------------------------------------
def _overlay(session: Session, name: str) -> Network:
    network = load(session, name)
    if network.vxlan is None:
        raise UsageError(f"network {name!r} is a {network.driver} network: it has no other hosts to join, "
                         "leave or sync")
    return network


def sync(session: Session, name: str) -> Plan:
    """Make this host's kernel match the desired state (the static peers, or the hosts registered in
    the cluster): read, diff, run the difference."""
    session.require_root()
    network = _overlay(session, name)
    if network.scope == "cluster":
        from wrapdock import cluster

        return cluster.sync(session, network)[1]
    with session.lock():
        return _sync(session, _overlay(session, name))


def _sync(session: Session, network: Network, first: list | None = None, last: list | None = None) -> Plan:
    from wrapdock.errors import EnvironmentProblem, OperationFailed
    from wrapdock.plans import vxlan as vxlan_plans

    note = f"read what this host's kernel has of network {network.name}"
    links, fdb = (session.runner.query(vxlan_plans.LINKS_QUERY, note),
                  session.runner.query(vxlan_plans.fdb_query(network), note))
    if not links.ok:
        raise EnvironmentProblem(f"`{' '.join(links.argv)}` failed: {links.stderr.strip()}")
    missing = vxlan_plans.parse_missing(links.stdout, vxlan_plans.own_links(network))
    if missing:
        raise OperationFailed(
            f"network {network.name}: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} gone from this "
            f"host: remove the network (wrapdock network rm {network.name}) and create it again")
    if not fdb.ok:
        raise EnvironmentProblem(f"`{' '.join(fdb.argv)}` failed: {fdb.stderr.strip()}")
    down = vxlan_plans.parse_down(links.stdout, vxlan_plans.own_links(network))
    plan = vxlan_plans.sync(network, vxlan_plans.parse_fdb(fdb.stdout), down,
                            vxlan_plans.parse_bridge_macs(fdb.stdout))
    plan.steps[:0] = first or []
    plan.steps += last or []
    if plan.steps:
        session.carry_out(plan)
    return plan


def join(session: Session, name: str, peers: list[str], vtep: str | None = None) -> tuple[Network, Plan]:
    """Static mode: more hosts joined (their VTEP addresses become peers); then sync. Without peers:
    this host joins a cluster network (see wrapdock/cluster.py)."""
    from wrapdock import overlayspec

    if not peers:
        from wrapdock import cluster
        from wrapdock.plan import Plan

        joined = cluster.join(session, name, vtep)
        return joined, Plan(f"join {name}", [])
    if vtep is not None:
        raise UsageError("--vtep is for joining a cluster network (this host's VTEP is fixed at create)")
    if session.cluster is not None:
        raise UsageError("--peer is for static networks: with --cluster the peers are the hosts registered in etcd")
    session.require_root()
    with session.lock():
        network = _overlay(session, name)
        assert network.vxlan is not None
        new = overlayspec.parse_peers(peers)
        for peer in new:
            if peer == network.vxlan.vtep:
                raise UsageError(f"peer {peer} is this host's own VTEP address")
            if peer in network.vxlan.peers:
                raise UsageError(f"{peer} is already a peer of network {name}")
        vx = network.vxlan
        all_peers = (*vx.peers, *new)
        explicit = vx.host_range if vx.host_range != overlayspec.derived_range(
            network.subnet, vx.host_subnet_size, vx.vtep) else None
        overlayspec.host_range(network.subnet, vx.host_subnet_size, vx.vtep, all_peers, explicit)
        return _change_peers(session, network, all_peers)


def leave(session: Session, name: str, host: str | None, force: bool) -> tuple[Network | None, Plan]:
    """Static mode: another host left (or died: --force changes nothing here, there is no one to ask).
    Cluster mode: this host leaves (no --host), or a dead host's registration goes (--host --force)."""
    from wrapdock import overlayspec

    names.check_object_name("network", name)
    record = session.state.get("network", name)
    if record is None or Network.from_record(record).scope == "cluster":
        from wrapdock import cluster
        from wrapdock.plan import Plan

        if host is not None:
            return cluster.drop_host(session, name, host, force)
        if record is None:
            load(session, name)  # "no such network"
        return cluster.leave(session, name, force), Plan(f"leave {name}", [])
    session.require_root()
    with session.lock():
        network = _overlay(session, name)
        assert network.vxlan is not None
        if host is None:
            raise UsageError(f"network {name!r} has static peers and no cluster: this host leaves it with "
                             f"`wrapdock network rm {name}`; `network leave {name} --host VTEP` drops a peer")
        gone = overlayspec.parse_ipv4(host, "--host")
        if gone not in network.vxlan.peers:
            raise UsageError(f"{gone} is not a peer of network {name}")
        return _change_peers(session, network, tuple(p for p in network.vxlan.peers if p != gone))


def _change_peers(session: Session, network: Network, peers: tuple) -> tuple[Network, Plan]:
    """Sync to the new peers first, record them after: a failed sync rolls back and records nothing."""
    from dataclasses import replace

    assert network.vxlan is not None
    changed = replace(network, vxlan=replace(network.vxlan, peers=peers))
    return changed, sync_and_record(session, changed)


def sync_and_record(session: Session, changed: Network, first: list | None = None, last: list | None = None) -> Plan:
    """Sync the kernel to `changed`'s peers (after the `first` steps, e.g. an etcd release), then
    record them; a failure rolls the whole plan back and records nothing."""
    plan = _sync(session, changed, first, last)
    if session.records_state:
        try:
            session.state.put("network", changed.name, changed.to_record())
        except BaseException:
            if not session.print_only:
                session.runner.rollback(plan.steps)
            raise
    return plan
