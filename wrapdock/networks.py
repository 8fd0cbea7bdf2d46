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


def load(session: Session, name: str) -> Network:
    """A network by name, or one clear error."""
    names.check_object_name("network", name)
    record = session.state.get("network", name)
    if record is None:
        raise UsageError(f"no such network: {name}")
    return Network.from_record(record)


def all_networks(session: Session) -> list[Network]:
    return [Network.from_record(record) for record in session.state.all("network")]


def create(session: Session, request: netspec.NetworkRequest) -> Network:
    from wrapdock import hostinfo, netspec
    from wrapdock.plans import network as network_plans

    network = netspec.build_network(request)
    session.require_root()
    with session.lock():
        netspec.check_against_networks(network, all_networks(session))
        host = hostinfo.read(session.runner)
        netspec.check_against_host(network, host.links, host.prefixes)
        completed = session.carry_out(network_plans.create(network))
        if not session.records_state:
            return network
        try:
            session.state.put("network", network.name, network.to_record())
            session.state.put("ipam", network.name,
                              RecordStore.new_record(network.name, network.subnet, network.gateway))
        except BaseException:
            session.runner.rollback(completed)
            _forget(session, network.name)
            raise
    return network


def remove(session: Session, names: list[str], force: bool = False) -> list[Network]:
    from wrapdock.plans import network as network_plans

    session.require_root()
    doomed_names = list(dict.fromkeys(names))
    for name in doomed_names:
        load(session, name)
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
        for position, network in enumerate(doomed, start=1):
            last = not survivors and position == len(doomed)
            session.carry_out(network_plans.remove(network, last=last))
            if session.records_state:
                _forget(session, network.name)
    return doomed


def _holder_names(session: Session, owners: list[str]) -> list[str]:
    names_by_id = {r["id"]: r["name"] for r in session.state.all("container")}
    return [names_by_id.get(owner, owner if owner.startswith("cni:") else owner[:12]) for owner in owners]


def _forget(session: Session, name: str) -> None:
    """Drop a network's records: allocations first, so a crash in between leaves a network without leases."""
    session.state.remove("ipam", name)
    session.state.remove("network", name)


def allocations(session: Session, name: str) -> dict[str, str]:
    record = session.state.get("ipam", name)
    return dict(RecordStore(record).allocations()) if record else {}


def describe(session: Session, network: Network) -> dict[str, Any]:
    """The inspect/list view of a network: its record plus who holds which address."""
    record = session.state.get("ipam", network.name)
    view = network.to_record()
    del view["version"]
    view["allocations"] = [
        {"address": address, **entry}
        for address, entry in sorted((record or {}).get("allocations", {}).items(),
                                     key=lambda item: tuple(int(part) for part in item[0].split(".")))
    ]
    view["last_reserved"] = (record or {}).get("last_reserved")
    names_by_id = {r["id"]: r["name"] for r in session.state.all("container")}
    view["containers"] = sorted({names_by_id.get(a["owner"], a["owner"]) for a in view["allocations"]})
    from wrapdock import cniattach

    view["cni_attachments"] = cniattach.views(session, network.name)
    return view


def inspect(session: Session, names: list[str]) -> list[dict[str, Any]]:
    return [describe(session, load(session, name)) for name in names]
