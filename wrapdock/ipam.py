"""IP address management for one network, like CNI's host-local plugin.

Addresses are handed out round-robin after the last one handed out, so a just-freed address is not
reused at once (a late packet for the old holder does not reach the new one). The network, broadcast
and gateway addresses are never handed out. Work and storage grow with the number of allocations,
never with the size of the subnet, so a /8 costs what a /24 does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any, Protocol

from wrapdock.errors import UsageError


class IpamStore(Protocol):
    """The narrow store the allocator needs; the disk form is RecordStore, tests use MemoryStore."""

    def allocations(self) -> Mapping[str, str]: ...  # address -> owner
    def last_reserved(self) -> str | None: ...
    def put(self, address: str, owner: str, *, round_robin: bool) -> None: ...
    def remove(self, address: str) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._allocations: dict[str, str] = {}
        self._last: str | None = None

    def allocations(self) -> Mapping[str, str]:
        return self._allocations

    def last_reserved(self) -> str | None:
        return self._last

    def put(self, address: str, owner: str, *, round_robin: bool) -> None:
        self._allocations[address] = owner
        if round_robin:
            self._last = address

    def remove(self, address: str) -> None:
        self._allocations.pop(address, None)


class RecordStore:
    """Reads and edits an ipam state record (state/ipam.schema.json) in memory; the caller saves it."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    @staticmethod
    def new_record(network: str, subnet: IPv4Network, gateway: IPv4Address) -> dict[str, Any]:
        return {"version": 1, "network": network, "subnet": str(subnet), "gateway": str(gateway),
                "last_reserved": None, "allocations": {}}

    def allocations(self) -> Mapping[str, str]:
        return {address: entry["owner"] for address, entry in self.record["allocations"].items()}

    def last_reserved(self) -> str | None:
        return self.record["last_reserved"]

    def put(self, address: str, owner: str, *, round_robin: bool) -> None:
        self.record["allocations"][address] = {
            "owner": owner, "time": datetime.now(UTC).isoformat(timespec="seconds")}
        if round_robin:
            self.record["last_reserved"] = address

    def remove(self, address: str) -> None:
        self.record["allocations"].pop(address, None)


class Ipam:
    def __init__(self, subnet: IPv4Network, gateway: IPv4Address, store: IpamStore) -> None:
        if subnet.prefixlen > 30:
            raise ValueError("IPAM needs a subnet of at least 4 addresses (/30)")
        self.subnet = subnet
        self.gateway = gateway
        self.store = store
        self.first = subnet.network_address + 1
        self.last = subnet.broadcast_address - 1

    @property
    def capacity(self) -> int:
        """Addresses that can be handed out: all but network, broadcast and gateway."""
        return self.subnet.num_addresses - 3

    def allocate(self, owner: str) -> IPv4Address:
        """The next free address after the last one handed out, wrapping around. Whether the subnet is
        full is asked only after a long run of taken addresses: counting the leases reads a whole
        folder (wrapdock/leases.py), and after the last one handed out the next is usually free."""
        taken = self.store.allocations()
        last = self.store.last_reserved()
        start = IPv4Address(last) + 1 if last and self.first <= IPv4Address(last) < self.last else self.first
        candidate = start
        for steps in range(self.capacity + 1):  # every address of the range once (the gateway is one of them)
            if candidate != self.gateway and str(candidate) not in taken:
                self.store.put(str(candidate), owner, round_robin=True)
                return candidate
            if steps == 64 and len(taken) >= self.capacity:
                break
            candidate = candidate + 1 if candidate < self.last else self.first
        raise UsageError(f"subnet {self.subnet} is full: all {self.capacity} addresses are allocated")

    def reserve(self, address: str, owner: str) -> IPv4Address:
        """A specific address (`--ip`), refused if it is not usable or already taken."""
        try:
            wanted = ip_address(address)
        except ValueError:
            raise UsageError(f"invalid IP address {address!r}") from None
        if not isinstance(wanted, IPv4Address) or wanted not in self.subnet:
            raise UsageError(f"address {address} is not in subnet {self.subnet}")
        if wanted in (self.subnet.network_address, self.subnet.broadcast_address):
            raise UsageError(f"address {address} is the network or broadcast address of {self.subnet}")
        if wanted == self.gateway:
            raise UsageError(f"address {address} is the gateway of {self.subnet}")
        holder = self.store.allocations().get(str(wanted))
        if holder is not None:
            raise UsageError(f"address {address} is already allocated to {holder}")
        self.store.put(str(wanted), owner, round_robin=False)
        return wanted

    def release(self, owner: str) -> list[IPv4Address]:
        """Free every address held by `owner`; releasing twice is harmless."""
        mine = [address for address, holder in self.store.allocations().items() if holder == owner]
        for address in mine:
            self.store.remove(address)
        return [IPv4Address(address) for address in mine]
