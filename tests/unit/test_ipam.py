"""IPAM: round-robin allocation, reservations, release, full subnets, big subnets; every store (in memory, an
ipam record's list, lease files saved after each change)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from wrapdock import state
from wrapdock.errors import UsageError
from wrapdock.ipam import Ipam, MemoryStore, RecordStore
from wrapdock.leases import LeaseStore


def new_store(kind: str, subnet: IPv4Network, gateway: IPv4Address, folder=None):
    if kind == "memory":
        return MemoryStore()
    if kind == "leases":
        return SavingLeases(state.StateStore(folder), RecordStore.new_record("net", subnet, gateway))
    return RecordStore(RecordStore.new_record("net", subnet, gateway))


class SavingLeases(LeaseStore):
    """Lease files, each change saved at once (as a run saves its one change): the tests read them back."""

    def put(self, address: str, owner: str, *, round_robin: bool) -> None:
        super().put(address, owner, round_robin=round_robin)
        self.save()

    def remove(self, address: str) -> None:
        super().remove(address)
        self.save()


@pytest.fixture(params=["memory", "record", "leases"])
def make_ipam(request, tmp_path):
    def make(subnet: str, gateway: str | None = None) -> Ipam:
        net = IPv4Network(subnet)
        gw = IPv4Address(gateway) if gateway else net.network_address + 1
        return Ipam(net, gw, new_store(request.param, net, gw, tmp_path / subnet.replace("/", "_")))

    return make


def test_a_long_run_of_taken_addresses_is_walked_and_a_full_subnet_told(make_ipam) -> None:
    """After 64 taken addresses in a row the allocator asks whether the subnet is full (counting the
    leases reads a folder); until it is, the one free address is found however far it is."""
    ipam = make_ipam("10.0.0.0/24")
    got = [ipam.allocate(f"c{i}") for i in range(ipam.capacity)]
    ipam.store.remove(str(got[100]))
    assert ipam.allocate("late") == got[100]  # 150 taken addresses after the last one handed out
    with pytest.raises(UsageError, match=r"subnet 10\.0\.0\.0/24 is full: all 253 addresses"):
        ipam.allocate("one-too-many")


def test_never_hands_out_network_broadcast_or_gateway(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/28")
    got = [ipam.allocate(f"c{i}") for i in range(ipam.capacity)]
    assert ipam.capacity == 13
    assert len(set(got)) == 13
    assert set(got) == set(IPv4Network("10.0.0.0/28").hosts()) - {IPv4Address("10.0.0.1")}
    with pytest.raises(UsageError, match="full"):
        ipam.allocate("one-too-many")


def test_allocates_in_order_after_the_last(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/24")
    assert [str(ipam.allocate(o)) for o in "abc"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert ipam.store.last_reserved() == "10.0.0.4"
    assert dict(ipam.store.allocations()) == {"10.0.0.2": "a", "10.0.0.3": "b", "10.0.0.4": "c"}


def test_just_released_address_is_not_reused_at_once(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/24")
    first = ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") != first
    assert ipam.allocate("c") == first + 2


def test_round_robin_continues_after_the_last_even_when_lower_ones_are_free(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/24")
    for owner in "abcd":
        ipam.allocate(owner)
    ipam.release("a")
    ipam.release("b")
    assert str(ipam.allocate("e")) == "10.0.0.6"


def test_wraps_around_at_the_end(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/29")  # usable .2-.6 (gateway .1)
    assert [str(ipam.allocate(f"c{i}")) for i in range(5)] == [f"10.0.0.{i}" for i in range(2, 7)]
    ipam.release("c1")  # frees .3
    assert str(ipam.allocate("again")) == "10.0.0.3"  # after .6 comes .1 (gateway, skipped), .2 (taken), .3


def test_wraps_when_last_reserved_is_the_last_address(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/29")
    ipam.reserve("10.0.0.6", "x")
    ipam.allocate("a")  # .2
    for _ in range(3):
        ipam.allocate("fill")  # .3 .4 .5
    ipam.release("a")
    ipam.release("x")
    # last handed out is .5, so the next is .6 (free again), then wrap to .2
    assert str(ipam.allocate("b")) == "10.0.0.6"
    assert str(ipam.allocate("c")) == "10.0.0.2"


def test_gateway_in_the_middle_is_skipped(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/29", gateway="10.0.0.4")
    got = [str(ipam.allocate(f"c{i}")) for i in range(5)]
    assert got == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(UsageError):
        ipam.allocate("more")


def test_gateway_at_the_top_is_skipped(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/30", gateway="10.0.0.2")
    assert str(ipam.allocate("a")) == "10.0.0.1"
    with pytest.raises(UsageError):
        ipam.allocate("b")


def test_slash_30_with_gateway_has_exactly_one_address(make_ipam) -> None:
    ipam = make_ipam("192.168.7.4/30")
    assert ipam.capacity == 1
    assert str(ipam.allocate("only")) == "192.168.7.6"
    with pytest.raises(UsageError, match=r"subnet 192\.168\.7\.4/30 is full: all 1 addresses"):
        ipam.allocate("second")
    ipam.release("only")
    assert str(ipam.allocate("third")) == "192.168.7.6"


def test_ipam_refuses_subnets_smaller_than_slash_30() -> None:
    with pytest.raises(ValueError):
        Ipam(IPv4Network("10.0.0.0/31"), IPv4Address("10.0.0.0"), MemoryStore())


# -- reserve ---------------------------------------------------------------------------------
def test_reserve_specific_address(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/24")
    assert ipam.reserve("10.0.0.50", "web") == IPv4Address("10.0.0.50")
    assert ipam.store.allocations()["10.0.0.50"] == "web"
    # a reservation does not move the round-robin pointer
    assert ipam.store.last_reserved() is None
    assert str(ipam.allocate("next")) == "10.0.0.2"


def test_allocate_skips_a_reserved_address(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/24")
    ipam.reserve("10.0.0.2", "fixed")
    assert str(ipam.allocate("dyn")) == "10.0.0.3"


@pytest.mark.parametrize(("address", "why"), [
    ("10.0.0.7", "already allocated to holder"),
    ("10.0.1.7", "not in subnet"),
    ("10.0.0.1", "is the gateway"),
    ("10.0.0.0", "network or broadcast"),
    ("10.0.0.255", "network or broadcast"),
    ("10.0.0", "invalid IP address"),
    ("fe80::1", "not in subnet"),
    ("10.0.0.7; rm -rf /", "invalid IP address"),
])
def test_reserve_refuses(make_ipam, address: str, why: str) -> None:
    ipam = make_ipam("10.0.0.0/24")
    ipam.reserve("10.0.0.7", "holder")
    before = dict(ipam.store.allocations())
    with pytest.raises(UsageError, match=why.replace(" ", r"\s")):
        ipam.reserve(address, "me")
    assert dict(ipam.store.allocations()) == before


# -- release ---------------------------------------------------------------------------------
def test_release_by_owner_frees_all_and_is_idempotent(make_ipam) -> None:
    ipam = make_ipam("10.0.0.0/24")
    a1 = ipam.allocate("a")
    ipam.allocate("b")
    a2 = ipam.reserve("10.0.0.99", "a")
    assert sorted(ipam.release("a")) == sorted([a1, a2])
    assert dict(ipam.store.allocations()) == {"10.0.0.3": "b"}
    assert ipam.release("a") == []
    assert ipam.release("nobody") == []
    assert dict(ipam.store.allocations()) == {"10.0.0.3": "b"}


# -- big subnets -----------------------------------------------------------------------------
def test_slash_8_allocates_quickly_and_its_record_stays_small() -> None:
    subnet, gateway = IPv4Network("10.0.0.0/8"), IPv4Address("10.0.0.1")
    store = RecordStore(RecordStore.new_record("big", subnet, gateway))
    ipam = Ipam(subnet, gateway, store)
    got = [ipam.allocate(f"c{i}") for i in range(100)]
    assert len(set(got)) == 100
    size = len(json.dumps(store.record))
    assert size < 100 * 120, size  # ~a line per allocation, nothing per address of the /8
    state.check_shape("ipam", store.record, "test")
    assert state.reference_errors("ipam", store.record) == []


class ProbeCounter(dict):
    """An allocation map that counts the addresses the allocator asks about."""

    probes = 0

    def __contains__(self, key: object) -> bool:
        ProbeCounter.probes += 1
        return super().__contains__(key)


def test_slash_8_allocation_probes_one_address_each_not_the_subnet() -> None:
    subnet, gateway = IPv4Network("10.0.0.0/8"), IPv4Address("10.0.0.1")
    store = MemoryStore()
    store._allocations = ProbeCounter(store._allocations)
    ipam = Ipam(subnet, gateway, store)
    ProbeCounter.probes = 0
    for i in range(3000):
        ipam.allocate(f"c{i}")
    assert len(set(store.allocations())) == 3000
    assert ProbeCounter.probes <= 3000 + 2  # round robin: the next address is free, no scan of the /8
    assert ipam.capacity == 2**24 - 3


def test_record_store_round_trips_through_the_schema() -> None:
    subnet, gateway = IPv4Network("172.16.0.0/16"), IPv4Address("172.16.0.1")
    record = RecordStore.new_record("n1", subnet, gateway)
    ipam = Ipam(subnet, gateway, RecordStore(record))
    ipam.allocate("a")
    ipam.reserve("172.16.3.4", "b")
    state.check_shape("ipam", record, "test")
    assert state.reference_errors("ipam", record) == []
    again = Ipam(subnet, gateway, RecordStore(json.loads(json.dumps(record))))
    assert dict(again.store.allocations()) == {"172.16.0.2": "a", "172.16.3.4": "b"}
    assert str(again.allocate("c")) == "172.16.0.3"
    assert set(record["allocations"]["172.16.0.2"]) == {"owner", "time"}
