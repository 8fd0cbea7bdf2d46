"""Cluster-mode vxlan networks: the network, its hosts and their ranges live in etcd.

The operations read first (this host's links with `ip -j`, the cluster with `etcdctl get`), plan
purely, then run one plan through the runner: etcd writes are Steps like any other (an atomic
`etcdctl txn` claim, undone by a delete), so a failure half-way releases what was claimed.

A host's identity is its VTEP address (like flannel's leases): the key of its registration, which
also holds its VTEP MAC, host name and address range. A host that registered before (its local state
is gone, /run is a tmpfs) gets its own registration and range back when it joins again.

Data plane as in static mode (wrapdock/plans/vxlan.py): the peers are the hosts registered in etcd.
A container start reads and writes nothing in etcd.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from wrapdock import clusterstore as cs
from wrapdock import names, netspec, overlayspec
from wrapdock.clusterstore import Cluster, EtcdStore
from wrapdock.errors import EnvironmentProblem, OperationFailed, UsageError
from wrapdock.model import Network, Vxlan
from wrapdock.plan import Plan, Step
from wrapdock.session import Session


@dataclass(frozen=True)
class Definition:
    """What every host of a cluster network must agree on (the `config` key)."""

    name: str
    subnet: IPv4Network
    vni: int
    port: int
    host_subnet_size: int
    mtu: int | None  # as requested (None: each host's underlay MTU - 50)
    internal: bool = False
    isolated: bool = False

    def to_value(self) -> str:
        return cs.encode({"name": self.name, "subnet": str(self.subnet), "vni": self.vni, "port": self.port,
                          "host_subnet_size": self.host_subnet_size, "mtu": self.mtu, "internal": self.internal,
                          "isolated": self.isolated})

    @classmethod
    def from_value(cls, text: str) -> Definition:
        data = json.loads(text)
        return cls(data["name"], IPv4Network(data["subnet"]), data["vni"], data["port"], data["host_subnet_size"],
                   data.get("mtu"), data.get("internal", False), data.get("isolated", False))

    def describe(self) -> str:
        mtu = f", MTU {self.mtu}" if self.mtu else ""
        return (f"subnet {self.subnet}, VNI {self.vni}, port {self.port}, host subnet size /{self.host_subnet_size}"
                f"{mtu}{', internal' if self.internal else ''}{', isolated' if self.isolated else ''}")


@dataclass(frozen=True)
class HostRecord:
    """One joined host as etcd keeps it: its VTEP, the MAC derived from it, its name and address range."""

    vtep: IPv4Address
    mac: str
    hostname: str
    host_range: IPv4Network

    def to_value(self) -> str:
        return cs.encode({"vtep": str(self.vtep), "mac": self.mac, "hostname": self.hostname,
                          "range": str(self.host_range)})

    @classmethod
    def from_value(cls, text: str) -> HostRecord:
        data = json.loads(text)
        return cls(IPv4Address(data["vtep"]), data["mac"], data.get("hostname", ""), IPv4Network(data["range"]))


@dataclass(frozen=True)
class View:
    """What etcd holds of one network (one `etcdctl get --prefix`)."""

    name: str
    values: dict[str, str]
    vni_holder: str | None = None  # the value of the definition's VNI claim (the network's name)

    @property
    def definition(self) -> Definition | None:
        text = self.values.get(cs.config_key(self.name))
        return Definition.from_value(text) if text is not None else None

    @property
    def hosts(self) -> dict[IPv4Address, HostRecord]:
        start = cs.host_key(self.name, "")
        found = [HostRecord.from_value(v) for k, v in self.values.items() if k.startswith(start)]
        return {h.vtep: h for h in sorted(found, key=lambda h: h.vtep)}

    def under(self, folder: str) -> dict[str, str]:
        start = f"{cs.network_prefix(self.name)}{folder}/"
        return {k: v for k, v in self.values.items() if k.startswith(start)}

    def owned_by(self, vtep: IPv4Address) -> dict[str, str]:
        """Every key this host holds: its registration, its range claim(s), the names of its containers."""
        owned = {k: v for k, v in self.under("ranges").items() if v == str(vtep)}
        owned.update({k: v for k, v in self.under("names").items() if json.loads(v).get("host") == str(vtep)})
        key = cs.host_key(self.name, vtep)
        if key in self.values:
            owned[key] = self.values[key]
        return owned

    def definition_keys(self) -> dict[str, str]:
        """The network's own keys, deleted with its last host: its config and its VNI claim."""
        keys = {cs.config_key(self.name): self.values[cs.config_key(self.name)]} if self.definition else {}
        if self.definition is not None and self.vni_holder == self.name:
            keys[cs.vni_key(self.definition.vni)] = self.name
        return keys


# -- reading ----------------------------------------------------------------------------------------------
def cluster_for(session: Session, network: Network | None = None) -> Cluster:
    """The cluster of a network (recorded when it was made) or --cluster/WRAPDOCK_CLUSTER; never two."""
    recorded = network.vxlan.cluster if network is not None and network.vxlan is not None else None
    given = session.cluster
    if recorded is not None:
        if given is not None and given.url != recorded:
            raise UsageError(f"network {network.name!r} belongs to cluster {recorded}, not {given.url}")  # type: ignore[union-attr]
        return cs.parse_url(recorded)
    if given is None:
        raise UsageError(f"this needs the cluster: give --cluster {cs.URL_FORM} (or WRAPDOCK_CLUSTER)")
    return given


def _query(session: Session, store: EtcdStore, prefix: str, note: str) -> str:
    """One `etcdctl get --prefix -w json` (a printed query); its output, or one clear error."""
    result = session.runner.query(store.list_query(prefix), note)
    if not result.ok:
        lines = [line.strip() for line in result.stderr.strip().splitlines() if line.strip()]
        raise EnvironmentProblem(f"etcd at {store.cluster.url} could not be read "
                                 f"(etcdctl exit {result.exit_code}: {lines[-1] if lines else 'no error output'}); "
                                 "nothing was changed")
    return result.stdout


def _read(session: Session, store: EtcdStore, prefix: str, note: str) -> dict[str, str]:
    return _parsed(store, store.parse_list, _query(session, store, prefix, note))


def _parsed(store: EtcdStore, parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvironmentProblem(f"etcd at {store.cluster.url}: unexpected answer from etcdctl ({exc})") from None


def read_view(session: Session, store: EtcdStore, name: str) -> View:
    values = _read(session, store, cs.network_prefix(name), f"read network {name} from the cluster")
    definition = values.get(cs.config_key(name))
    holder = None
    if definition is not None:  # who holds its VNI: one more key, read with the same kind of command
        vni = Definition.from_value(definition).vni
        holder = _read(session, store, cs.vni_key(vni), f"read network {name} from the cluster").get(cs.vni_key(vni))
    return View(name, values, holder)


@dataclass(frozen=True)
class Catalogue:
    """Every cluster network's definition and VNI claim, read at one revision (one `get --prefix`),
    and the mod revision of the last-created key then: a create decides on this read, and its claim
    requires that revision unchanged (another create since fails the claim: read again)."""

    definitions: dict[str, Definition]
    vnis: dict[int, str]
    last_created: int  # 0: the key was absent


def read_definitions(session: Session, store: EtcdStore) -> Catalogue:
    """What create checks against: every definition, every VNI claim, the last-created key's revision."""
    text = _query(session, store, cs.PREFIX + "/", "read the cluster's networks and VNIs")
    values, revisions = _parsed(store, store.parse_list, text), _parsed(store, cs.parse_revisions, text)
    definitions = {v_name: Definition.from_value(v) for k, v in values.items()
                   if k.startswith(cs.NETWORKS_PREFIX) and k.endswith("/config")
                   for v_name in [k[len(cs.NETWORKS_PREFIX):-len("/config")]]}
    vnis = {int(k[len(cs.VNIS_PREFIX):]): v for k, v in values.items() if k.startswith(cs.VNIS_PREFIX)}
    return Catalogue(definitions, vnis, revisions.get(cs.LAST_CREATED_KEY, 0))


def check_definition(definition: Definition, known: Catalogue) -> Definition | None:
    """The definition already in etcd under this name (then this host joins it), or None (a new
    network: its VNI is free and its subnet overlaps no other cluster network's); else one clear error."""
    existing = known.definitions.get(definition.name)
    if existing is not None and existing != definition:
        raise UsageError(f"cluster network {definition.name!r} exists with other parameters "
                         f"({existing.describe()}): join it with `wrapdock network join {definition.name}`")
    if existing is None:
        if definition.vni in known.vnis:
            raise UsageError(f"VNI {definition.vni} is already used by cluster network {known.vnis[definition.vni]!r}")
        for other in known.definitions.values():
            if other.subnet.overlaps(definition.subnet):
                raise UsageError(f"subnet {definition.subnet} overlaps subnet {other.subnet} of cluster "
                                 f"network {other.name!r}")
    return existing


# -- create and join --------------------------------------------------------------------------------------
def definition_of(request: netspec.NetworkRequest, subnet: IPv4Network) -> Definition:
    return Definition(request.name, subnet,
                      request.vni if request.vni is not None else overlayspec.default_vni(request.name),
                      request.port or overlayspec.DEFAULT_PORT,
                      request.host_subnet_size or overlayspec.DEFAULT_HOST_SUBNET_SIZE,
                      request.mtu, request.internal, request.isolated)


def create(session: Session, request: netspec.NetworkRequest) -> Network:
    """Define the network in etcd (refused if it exists otherwise, its VNI or subnet is taken) and join."""
    from wrapdock import networks

    if request.peers:
        raise UsageError("--peer is for static networks: with --cluster the peers are the hosts registered in etcd")
    if request.host_range is not None:
        raise UsageError("--host-range is for static networks: with --cluster each host claims a free range")
    checked = netspec.build_network(request)
    definition = definition_of(request, checked.subnet)
    cluster = cluster_for(session)
    session.require_root()
    with session.lock():
        netspec.check_against_networks(checked, networks.all_networks(session))
        from wrapdock import hostinfo

        host = hostinfo.read(session.runner)
        store = EtcdStore(cluster)
        for _attempt in range(CLAIM_ATTEMPTS):  # the checks decided on a read another create outdated: again
            known = read_definitions(session, store)
            existing = check_definition(definition, known)
            fence = None if existing else cs.Fence(cs.LAST_CREATED_KEY, known.last_created, definition.name)
            try:
                return _claiming(session, store, definition, host, request.vtep, new=existing is None, fence=fence)
            except _LostRace:
                continue
        raise OperationFailed(f"cluster network {definition.name!r}: other cluster networks were created while this "
                              f"host checked VNI and subnet ({CLAIM_ATTEMPTS} times); nothing was changed: run the "
                              "command again")


def join(session: Session, name: str, vtep: str | None) -> Network:
    """This host joins a network defined in etcd: claims a free range, registers, creates its devices."""
    from wrapdock import hostinfo, networks

    names.check_object_name("network", name)
    cluster = cluster_for(session)
    session.require_root()
    with session.lock():
        if session.state.get("network", name) is not None:
            raise UsageError(f"this host is already in network {name!r} (`wrapdock network sync {name}` "
                             "brings it up to date)")
        host = hostinfo.read(session.runner)
        store = EtcdStore(cluster)
        view = read_view(session, store, name)
        if view.definition is None:
            raise UsageError(f"cluster {cluster.url} has no network {name!r}: create it with "
                             f"`wrapdock --cluster {cluster.url} network create --driver vxlan --subnet ... {name}`")
        networks.all_networks(session)  # a broken state file is reported before anything runs
        return _claiming(session, store, view.definition, host, vtep, new=False, view=view)


CLAIM_ATTEMPTS = 3


class _LostRace(Exception):
    """A new network's claim answered FAILURE: another create came first (nothing ran); create reads
    the cluster's networks again and decides again."""


def _claiming(session: Session, store: EtcdStore, definition: Definition, host: Any, vtep: str | None, new: bool,
              view: View | None = None, fence: cs.Fence | None = None) -> Network:
    """Read, plan, run; a claim that lost a race (another host took the range first: the txn answered
    FAILURE, nothing else ran) is planned again from a fresh read, up to CLAIM_ATTEMPTS times; a new
    network's lost claim goes back to create (its checks decide again)."""
    from wrapdock.runner import CommandFailed

    for attempt in range(1, CLAIM_ATTEMPTS + 1):
        view = view or read_view(session, store, definition.name)
        try:
            return _join(session, store, definition, view, host, vtep, new, fence)
        except CommandFailed as failed:
            if not failed.result.refused or failed.result.argv[-1] != "txn":
                raise
            if new:
                raise _LostRace() from None
            if attempt == CLAIM_ATTEMPTS:
                raise
            view = None
    raise AssertionError("unreachable")


def free_range(definition: Definition, taken: set[IPv4Network], vtep: IPv4Address) -> IPv4Network:
    """The block derived from the VTEP address if free (as static mode would pick), else the first free."""
    size = definition.host_subnet_size
    preferred = overlayspec.derived_range(definition.subnet, size, vtep)
    if preferred not in taken:
        return preferred
    for block in definition.subnet.subnets(new_prefix=size):
        if block not in taken:
            return block
    raise UsageError(f"network {definition.name}: every /{size} range of {definition.subnet} is claimed by a host")


def _join(session: Session, store: EtcdStore, definition: Definition, view: View, host: Any, vtep_option: str | None,
          new: bool, fence: cs.Fence | None = None) -> Network:
    from wrapdock import networks
    from wrapdock.plans import vxlan as vxlan_plans

    underlay, vtep = overlayspec.pick_underlay(vtep_option, host.interfaces, host.default_dev)
    mtu = overlayspec.overlay_mtu(definition.mtu, underlay)
    hostname = this_hostname()
    registered = view.hosts.get(vtep)
    if registered is not None and registered.hostname != hostname:
        raise UsageError(f"VTEP {vtep} is registered in network {definition.name} by host {registered.hostname!r}: "
                         f"if that host is gone, `wrapdock network leave {definition.name} --host {vtep} --force`")
    taken = {IPv4Network(k.rsplit("/", 1)[1].replace("-", "/")) for k in view.under("ranges")}
    host_range = registered.host_range if registered else free_range(definition, taken, vtep)
    mac = overlayspec.vtep_mac(vtep)
    peers = tuple(p for p in view.hosts if p != vtep)
    vxlan = Vxlan(vni=definition.vni, port=definition.port, device=overlayspec.device_name(definition.vni), vtep=vtep,
                  underlay=underlay.name, underlay_mtu=underlay.mtu, mac=mac,
                  host_subnet_size=definition.host_subnet_size, host_range=host_range, peers=peers,
                  cluster=store.cluster.url, hostname=hostname, names=remote_names(view, vtep))
    network = Network(name=definition.name, id=names.new_id(), driver="vxlan", subnet=definition.subnet,
                      gateway=overlayspec.overlay_gateway(host_range), bridge=names.bridge_name(definition.name, None),
                      mtu=mtu, internal=definition.internal, isolated=definition.isolated,
                      created=datetime.now(UTC).isoformat(timespec="seconds"), vxlan=vxlan)
    netspec.check_against_networks(network, networks.all_networks(session))
    netspec.check_against_host(network, host.links, host.prefixes)
    plan = vxlan_plans.create(network, networks.read_tables(session, host.iptables),
                              networks.forwarding(session, host.forwarding))
    me = HostRecord(vtep, mac, hostname, host_range)
    claims = {cs.config_key(definition.name): definition.to_value(),
              cs.vni_key(definition.vni): definition.name} if new else {}
    if registered is None:  # a host that registered before gets its own registration back: nothing to claim
        claims.update({cs.range_key(definition.name, str(host_range)): str(vtep),
                       cs.host_key(definition.name, vtep): me.to_value()})
    if claims:
        note = (f"cluster: define network {definition.name} and register this host (VTEP {vtep}, range {host_range})"
                if new else f"cluster: claim range {host_range} and register this host (VTEP {vtep}) in "
                f"network {definition.name}")
        require = () if new else (cs.config_key(definition.name),)
        plan.steps.insert(0, store.claim(claims, note, require=require, fence=fence))
    plan.title = f"{'create' if new else 'join'} cluster {plan.title.removeprefix('create ')}"
    networks.carry_out_and_record(session, network, plan)
    return network


def this_hostname() -> str:
    """The name this host registers under: WRAPDOCK_HOSTNAME (hosts that share one UTS namespace, such
    as test sandboxes), else its host name. Shown only: the VTEP address is the key."""
    name = os.environ.get("WRAPDOCK_HOSTNAME") or socket.gethostname()
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63]  # safe in a txn line and a table


# -- leave ------------------------------------------------------------------------------------------------
def leave(session: Session, name: str, force: bool) -> Network:
    """This host leaves: its devices and rules go, then its registration, range and names in etcd; with
    the last host the network's definition and VNI claim go too. Refused while it has containers unless -f."""
    from wrapdock import networks
    from wrapdock.plans import vxlan as vxlan_plans

    session.require_root()
    network = _local(session, name)
    store = EtcdStore(cluster_for(session, network))
    if force:
        from wrapdock import cniattach, containers

        read_view(session, store, name)  # unreachable: exit 4 before a container is touched
        for record in containers.attached_to(session, name):
            containers.disconnect(session, name, record["id"], force=True)
        cniattach.remove_all(session, name)
    with session.lock():
        network = _local(session, name)
        assert network.vxlan is not None
        view = read_view(session, store, name)
        holders = sorted(set(networks.allocations(session, name).values()))
        if holders and (session.records_state or not force):
            raise UsageError(f"network {name!r} still has {len(holders)} attached container(s) on this host: "
                             "remove them first or use -f")
        survivors = {n.name for n in networks.all_networks(session)} - {name}
        plan = vxlan_plans.remove(network, not survivors, networks.read_tables(session))
        plan.title = f"leave cluster {plan.title.removeprefix('remove ')}"
        release = view.owned_by(network.vxlan.vtep)
        if not set(view.hosts) - {network.vxlan.vtep}:
            release.update(view.definition_keys())
        if release:
            plan.add(_release_host(store, name, network.vxlan.vtep, release))
        session.carry_out(plan)
        if session.records_state:
            networks._forget(session, name)
    return network


def _release_host(store: EtcdStore, name: str, vtep: IPv4Address, keys: dict[str, str]) -> Step:
    """One txn: a host's keys go; with the last host the definition too, and the last-created key
    while it names this network (as a create's rollback would: nothing of the network is left)."""
    last = cs.config_key(name) in keys
    also = " and the network's definition (its last host)" if last else ""
    note = f"cluster: release {vtep}'s registration, range and names in network {name}{also}"
    return store.release(keys, note, fence=cs.Fence(cs.LAST_CREATED_KEY, 0, name) if last else None)


def drop_host(session: Session, name: str, host: str, force: bool) -> tuple[Network | None, Plan]:
    """From any host: a dead host's registration and claims go from etcd; this host (if in the network)
    syncs at once, the others with their next `network sync`."""
    session.require_root()
    names.check_object_name("network", name)
    if not force:
        raise UsageError(f"--host {host} removes another host's registration: give --force too (only for a host "
                         "that is gone for good; a live host leaves with `network leave NAME` on itself)")
    with session.lock():
        record = session.state.get("network", name)
        network = Network.from_record(record) if record is not None else None
        if network is not None and (network.vxlan is None or network.vxlan.cluster is None):
            raise UsageError(f"network {name!r} is not a cluster network")
        store = EtcdStore(cluster_for(session, network))
        view = read_view(session, store, name)
        if view.definition is None:
            raise UsageError(f"cluster {store.cluster.url} has no network {name!r}")
        target = next((h for h in view.hosts.values() if host in (str(h.vtep), h.hostname)), None)
        if target is None:
            raise UsageError(f"no host {host!r} (VTEP address or host name) is registered in network {name}")
        if network is not None and network.vxlan is not None and target.vtep == network.vxlan.vtep:
            raise UsageError(f"{host} is this host: it leaves with `wrapdock network leave {name}`")
        release = view.owned_by(target.vtep)
        if not set(view.hosts) - {target.vtep}:
            release.update(view.definition_keys())
        step = _release_host(store, name, target.vtep, release)
        if network is None:
            plan = Plan(f"remove host {target.vtep} ({target.hostname}) from cluster network {name}", [step])
            session.carry_out(plan)
            return None, plan
        remaining = View(name, {k: v for k, v in view.values.items() if k not in release}, view.vni_holder)
        return _sync_to(session, network, remaining, first=[step])


# -- sync -------------------------------------------------------------------------------------------------
def sync(session: Session, network: Network) -> tuple[Network, Plan]:
    """Read the hosts from etcd, diff them against the kernel's flood list, run only the difference."""
    session.require_root()
    with session.lock():
        store = EtcdStore(cluster_for(session, network))
        return _sync_to(session, network, read_view(session, store, network.name))


def _sync_to(session: Session, network: Network, view: View, first: list[Step] | None = None
             ) -> tuple[Network, Plan]:
    from wrapdock import networks

    assert network.vxlan is not None
    if view.definition is None or network.vxlan.vtep not in view.hosts:
        raise OperationFailed(
            f"this host (VTEP {network.vxlan.vtep}) is not registered in cluster network {network.name} any more "
            f"(removed with `leave --host`?): `wrapdock network rm {network.name}`, then join again")
    from wrapdock import containerhosts, containerviews

    peers = tuple(p for p in view.hosts if p != network.vxlan.vtep)
    names_now = remote_names(view, network.vxlan.vtep)
    changed = replace(network, vxlan=replace(network.vxlan, peers=peers, names=names_now))
    last: list[Step] = []
    if names_now != network.vxlan.names:  # the other hosts' containers changed: this host's /etc/hosts
        records = containerviews.all_records(session)
        last = containerhosts.hosts_step(session, {network.name}, records, records,
                                         remote_after={network.name: names_now})
    return changed, networks.sync_and_record(session, changed, first or [], last)


def _local(session: Session, name: str) -> Network:
    from wrapdock import networks

    network = networks.load(session, name)
    if network.vxlan is None or network.vxlan.cluster is None:
        raise UsageError(f"network {name!r} is not a cluster network")
    return network


# -- names across hosts -------------------------------------------------------------------------------------
def remote_names(view: View, vtep: IPv4Address) -> tuple[tuple[str, str], ...]:
    prefix = f"{cs.network_prefix(view.name)}names/"
    found = []
    for key, value in view.under("names").items():
        data = json.loads(value)
        if data.get("host") != str(vtep):
            found.append((key[len(prefix):], data["address"]))
    return tuple(sorted(found))


# -- doctor and gc ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """A doctor finding about a cluster network (doctor turns it into its Finding)."""

    severity: str  # error | warning
    check: str
    subject: str
    text: str
    fix: tuple[str, ...]


def problems(session: Session, local: list[Network]) -> list[Problem]:
    """doctor: each cluster network's etcd answers (error: a check that could not run is no pass), this
    host is registered, and the kernel's flood list and the cached names match etcd (else: sync)."""
    from wrapdock.plans import vxlan as vxlan_plans

    found: list[Problem] = []
    for network in local:
        if network.vxlan is None or network.vxlan.cluster is None:
            continue
        store = EtcdStore(cs.parse_url(network.vxlan.cluster))
        try:
            view = read_view(session, store, network.name)
        except EnvironmentProblem as exc:
            found.append(Problem("error", "cluster-unreachable", network.name, exc.message.replace(
                "; nothing was changed", "") + ": the network's hosts, ranges and names cannot be checked or synced",
                (f"etcdctl --endpoints={store.cluster.etcdctl()[1].split('=', 1)[1]} endpoint health",)))
            continue
        if network.vxlan.vtep not in view.hosts:
            found.append(Problem("error", "cluster-host-gone", network.name,
                                 f"cluster network {network.name}: this host (VTEP {network.vxlan.vtep}) is not "
                                 "registered in etcd any more (removed with leave --host?)",
                                 (f"wrapdock network rm -f {network.name}", f"wrapdock --cluster "
                                  f"{store.cluster.url} network join {network.name}")))
            continue
        fdb = session.runner.query(vxlan_plans.fdb_query(network), f"doctor: {network.name}'s flood list")
        flood = {e.dst for e in vxlan_plans.parse_fdb(fdb.stdout) if e.mac == vxlan_plans.ALL_ZEROS} if fdb.ok else None
        wanted = {str(p) for p in view.hosts if p != network.vxlan.vtep}
        if flood != wanted or remote_names(view, network.vxlan.vtep) != network.vxlan.names:
            found.append(Problem("warning", "cluster-out-of-sync", network.name,
                                 f"cluster network {network.name}: this host's flood list or names differ from etcd's "
                                 f"hosts and names (a host joined or left, a container started elsewhere)",
                                 (f"wrapdock network sync {network.name}",)))
    return found


def stale_claims(session: Session, local: list[Network], containers: list[dict[str, Any]],
                 addresses: set[str] | None = None) -> list[tuple[str, Plan]]:
    """gc: names this host registered in etcd for containers it no longer has on that network (a killed
    run, rm, connect or disconnect); with --cluster also the registrations of this host's addresses in
    cluster networks it has no record of (a killed join, state lost). Each as (task, plan)."""
    found: list[tuple[str, Plan]] = []
    if session.cluster is not None and addresses:
        found += _orphan_registrations(session, EtcdStore(session.cluster), {n.name for n in local}, addresses)
    for network in local:
        if network.vxlan is None or network.vxlan.cluster is None:
            continue
        store = EtcdStore(cs.parse_url(network.vxlan.cluster))
        view = read_view(session, store, network.name)
        names_here = {r["name"] for r in containers if any(e["network"] == network.name for e in r["endpoints"])}
        prefix = f"{cs.network_prefix(network.name)}names/"
        stale = {k: v for k, v in view.owned_by(network.vxlan.vtep).items()
                 if k.startswith(prefix) and k[len(prefix):] not in names_here}
        if stale:
            task = f"release the names {', '.join(k[len(prefix):] for k in sorted(stale))} in cluster network " \
                   f"{network.name} (no such container on it on this host)"
            found.append((task, Plan(task, [store.release(stale, f"cluster: {task}")])))
    return found


def _orphan_registrations(session: Session, store: EtcdStore, local: set[str], addresses: set[str]
                          ) -> list[tuple[str, Plan]]:
    values = _read(session, store, cs.NETWORKS_PREFIX, "gc: this host's registrations in the cluster")
    found: list[tuple[str, Plan]] = []
    for name in sorted({k[len(cs.NETWORKS_PREFIX):].split("/", 1)[0] for k in values} - local):
        view = View(name, {k: v for k, v in values.items() if k.startswith(cs.network_prefix(name))})
        for vtep in [v for v in view.hosts if str(v) in addresses]:
            release = view.owned_by(vtep)
            task = (f"release this host's registration ({vtep}) in cluster network {name}, which it has no "
                    "record of (a killed join?)")
            found.append((task, Plan(task, [store.release(release, f"cluster: {task}")])))
    return found


# -- views ------------------------------------------------------------------------------------------------
def describe(session: Session, network: Network) -> dict[str, Any]:
    """inspect's cluster part, read from etcd (a printed query)."""
    view = read_view(session, EtcdStore(cluster_for(session, network)), network.name)
    return {"url": network.vxlan.cluster if network.vxlan else None,
            "definition": json.loads(view.definition.to_value()) if view.definition else None,
            "hosts": [{"vtep": str(h.vtep), "mac": h.mac, "hostname": h.hostname, "range": str(h.host_range)}
                      for h in view.hosts.values()]}
