"""IP leases, one file per address: STATE_DIR/leases/NETWORK@ADDRESS.json (state/lease.schema.json).

As the CNI host-local plugin keeps them: allocating or releasing an address reads and writes that
address's file and the network's small IPAM record (its range and the last address handed out),
whatever the number of leases. The IPAM record used to hold every allocation: at 1000 containers
every run and rm read, checked and wrote ~130 KB for one address (3-7 ms).

Records an earlier wrapdock wrote still list their allocations: those count as leases, and the next
change on the network moves them into lease files (the leases first, then the emptied record: a
crash in between leaves each lease in both places, which reads the same).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from wrapdock.ipam import Ipam, RecordStore
from wrapdock.state import StateStore

KIND = "lease"


def lease_name(network: str, address: str) -> str:
    return f"{network}@{address}"


class LeaseStore:
    """A network's leases for the allocator (ipam.IpamStore): read one file at a time, changes kept
    until save() (a --print-only run plans the same addresses and writes nothing)."""

    def __init__(self, state: StateStore, record: dict[str, Any]) -> None:
        self.state = state
        self.record = record
        self.network = record["network"]
        self._legacy = {address: entry["owner"] for address, entry in record["allocations"].items()}
        self._pending: dict[str, str | None] = {}  # address -> new owner; None: released
        self._last_changed = False
        self._listed: list[str] | None = None

    @classmethod
    def of(cls, state: StateStore, network: str, subnet: IPv4Network | None = None,
           gateway: IPv4Address | None = None) -> LeaseStore | None:
        """The store of a network's IPAM record; a new record when given its range, else None if it has none."""
        record = state.get("ipam", network)
        if record is None:
            if subnet is None or gateway is None:
                return None
            record = RecordStore.new_record(network, subnet, gateway)
        return cls(state, record)

    def ipam(self, subnet: IPv4Network | None = None, gateway: IPv4Address | None = None) -> Ipam:
        return Ipam(IPv4Network(self.record["subnet"]) if subnet is None else subnet,
                    IPv4Address(self.record["gateway"]) if gateway is None else gateway, self)

    # -- ipam.IpamStore ---------------------------------------------------------------------------------
    def allocations(self) -> Mapping[str, str]:
        return _Leases(self)

    def last_reserved(self) -> str | None:
        return self.record["last_reserved"]

    def put(self, address: str, owner: str, *, round_robin: bool) -> None:
        self._pending[address] = owner
        if round_robin:
            self.record["last_reserved"] = address
            self._last_changed = True

    def remove(self, address: str) -> None:
        self._pending[address] = None

    # -- reading -----------------------------------------------------------------------------------------
    def owner(self, address: str) -> str | None:
        if address in self._pending:
            return self._pending[address]
        lease = self.state.get(KIND, lease_name(self.network, address))
        if lease is not None:
            return lease["owner"]
        return self._legacy.get(address)

    def _files(self) -> list[str]:
        """The addresses that have a lease file (listed once)."""
        if self._listed is None:
            prefix = self.network + "@"
            self._listed = [name[len(prefix):] for name in self.state.names(KIND) if name.startswith(prefix)]
        return self._listed

    def held(self) -> set[str]:
        """Every address that has a lease (its file, the old record's list, the changes not saved yet)."""
        held = {*self._files(), *self._legacy}
        for address, owner in self._pending.items():
            (held.add if owner is not None else held.discard)(address)
        return held

    def entries(self) -> dict[str, dict[str, Any]]:
        """address -> {"owner", "time"} of every lease, as the IPAM record used to list them (inspect, doctor)."""
        found = {address: dict(entry) for address, entry in self.record["allocations"].items()}
        for address in self._files():
            lease = self.state.get(KIND, lease_name(self.network, address))
            if lease is not None:
                found[address] = {key: lease[key] for key in ("owner", "time") if key in lease}
        return dict(sorted(found.items(), key=lambda item: IPv4Address(item[0])))

    # -- changing ----------------------------------------------------------------------------------------
    def release_addresses(self, owner: str, addresses: list[str]) -> list[str]:
        """Release these addresses where `owner` holds them (its record says which): one file each."""
        mine = [address for address in addresses if self.owner(address) == owner]
        for address in mine:
            self.remove(address)
        return mine

    def save(self) -> None:
        """Write the changes (the caller holds the state lock): lease files first, then the record."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        moved = {address: owner for address, owner in self._legacy.items() if address not in self._pending}
        for address, owner in [*moved.items(), *self._pending.items()]:
            if owner is None:
                self.state.remove(KIND, lease_name(self.network, address))
            else:
                time = self.record["allocations"].get(address, {}).get("time", now) if address in moved else now
                self.state.put(KIND, lease_name(self.network, address),
                               {"version": 1, "network": self.network, "address": address, "owner": owner,
                                "time": time})
        if self._legacy or self._last_changed or self.state.get("ipam", self.network) is None:
            self.record["allocations"] = {}
            self.state.put("ipam", self.network, self.record)
        self._legacy, self._pending, self._last_changed, self._listed = {}, {}, False, None


class _Leases(Mapping[str, str]):
    """address -> owner, read a file at a time: the allocator asks whether a few addresses are taken."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store

    def __getitem__(self, address: str) -> str:
        owner = self.store.owner(address)
        if owner is None:
            raise KeyError(address)
        return owner

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.store.owner(address) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.store.held(), key=IPv4Address))

    def __len__(self) -> int:
        return len(self.store.held())


def forget(state: StateStore, network: str) -> None:
    """A network's leases go with it (network rm, gc)."""
    prefix = network + "@"
    for name in state.names(KIND):
        if name.startswith(prefix):
            state.remove(KIND, name)

