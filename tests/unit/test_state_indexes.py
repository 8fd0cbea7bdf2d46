"""The indexes beside the records (no root): container names -> ids, and which /etc/hosts files list a network."""

from __future__ import annotations

import os
from pathlib import Path

from wrapdock import hostsindex, nameindex
from wrapdock.session import Session
from wrapdock.state import StateStore

BIRD, CAT = "b" * 64, "c" * 64


def record(container_id: str, name: str, *networks: str, hostname: str = "", phase: str = "ready") -> dict:
    return {"id": container_id, "name": name, "hostname": hostname or name, "add_hosts": [], "phase": phase,
            "endpoints": [{"network": net, "address": f"10.0.{n}.2"} for n, net in enumerate(networks)]}


def test_names_are_not_kept_until_built_and_then_resolve_by_one_link(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    assert not nameindex.kept(state) and nameindex.lookup(state, "bird") is None
    nameindex.build(state, [record(BIRD, "bird")])
    assert nameindex.kept(state)
    assert nameindex.lookup(state, "bird") == BIRD
    assert os.readlink(tmp_path / "container-names" / "bird") == BIRD
    nameindex.claim(state, "cat", CAT)
    nameindex.claim(state, "cat", BIRD)  # a stale link (its record gone): replaced
    assert nameindex.lookup(state, "cat") == BIRD
    nameindex.release(state, "cat", CAT)  # not the one it points at: left
    assert nameindex.lookup(state, "cat") == BIRD
    nameindex.release(state, "cat", BIRD)
    assert nameindex.lookup(state, "cat") is None


def test_a_lookup_never_leaves_the_folder_and_ignores_what_is_not_an_id(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    nameindex.build(state, [])
    (tmp_path / "secret").symlink_to(BIRD)
    os.symlink("../secret", tmp_path / "container-names" / "odd")
    for ref in ("../secret", "", ".", "a/b", "odd"):
        assert nameindex.lookup(state, ref) is None


def test_building_again_replaces_the_whole_index_in_one_rename(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    nameindex.build(state, [record(BIRD, "bird")])
    nameindex.build(state, [record(CAT, "cat")])
    assert sorted(os.listdir(tmp_path / "container-names")) == ["cat"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_doctor_hears_of_missing_and_wrong_links_not_of_half_made_containers(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    assert nameindex.differences(state, [record(BIRD, "bird")]) == []  # not kept: nothing to compare
    nameindex.build(state, [record(CAT, "bird")])
    found = nameindex.differences(state, [record(BIRD, "bird"), record(CAT, "cat"),
                                          record("d" * 64, "dog", phase="creating")])
    assert found == [f"container cat has no link in {tmp_path}/container-names",
                     f"{tmp_path}/container-names/bird points at {CAT}, not at container bird (bbbbbbbbbbbb)"]


def test_the_hosts_index_is_a_superset_kept_by_live_runs_only(tmp_path: Path) -> None:
    session = Session(state_dir=tmp_path, data_dir=tmp_path / "data")
    crowd = [record(BIRD, "bird", "web"), record(CAT, "cat", "web", "db"), record("d" * 64, "dog", "web", hostname="h")]
    keys = hostsindex.keys_by_network(crowd, {"web", "db"})
    assert keys == {"web": {("shared", ("web",), ()), ("shared", ("db", "web"), ()), ("own", "d" * 64)},
                    "db": {("shared", ("db", "web"), ())}}
    hostsindex.add(session, keys)  # no index yet, and not asked to create one
    assert hostsindex.read(session, "web") is None
    hostsindex.add(session, keys, create=True)
    assert set(hostsindex.read(session, "web") or ()) == keys["web"]
    hostsindex.discard(session, {"web": {("own", "d" * 64)}})
    assert hostsindex.missing(session, crowd, {"web", "db"}) == {"web": {("own", "d" * 64)}}
    printing = Session(state_dir=tmp_path, data_dir=tmp_path / "data", print_only=True)
    hostsindex.add(printing, {"web": {("own", "e" * 64)}})
    assert ("own", "e" * 64) not in (hostsindex.read(session, "web") or ())
    hostsindex.rebuild(session, crowd[:1], {"web"})
    assert hostsindex.read(session, "web") == [("shared", ("web",), ())]
    assert hostsindex.read(session, "db") is None  # a network that is gone: its index went too


# -- leases: one file per address (wrapdock/leases.py) -----------------------------------------------------
def test_leases_are_files_of_their_own_written_on_save_only(tmp_path: Path) -> None:
    from ipaddress import IPv4Address, IPv4Network

    from wrapdock.leases import LeaseStore

    state = StateStore(tmp_path)
    subnet, gateway = IPv4Network("10.20.0.0/24"), IPv4Address("10.20.0.1")
    store = LeaseStore.of(state, "web", subnet, gateway)
    assert store is not None and LeaseStore.of(state, "web") is None  # no record yet, no range given
    assert str(store.ipam().allocate(BIRD)) == "10.20.0.2"
    assert state.names("lease") == [] and state.get("ipam", "web") is None  # a --print-only run stops here
    store.save()
    assert state.names("lease") == ["web@10.20.0.2"]
    assert state.get("lease", "web@10.20.0.2")["owner"] == BIRD
    assert state.get("ipam", "web")["last_reserved"] == "10.20.0.2"
    again = LeaseStore.of(state, "web")
    assert str(again.ipam().allocate(CAT)) == "10.20.0.3"  # round robin, after the last one handed out
    assert again.release_addresses(BIRD, ["10.20.0.3", "10.20.0.2"]) == ["10.20.0.2"]  # only what it holds
    again.save()
    assert state.names("lease") == ["web@10.20.0.3"]


def test_an_earlier_wrapdocks_list_counts_as_leases_and_moves_into_files(tmp_path: Path) -> None:
    from wrapdock.ipam import RecordStore
    from wrapdock.leases import LeaseStore

    state = StateStore(tmp_path)
    record = {"version": 1, "network": "web", "subnet": "10.20.0.0/24", "gateway": "10.20.0.1",
              "last_reserved": "10.20.0.3", "allocations": {}}
    RecordStore(record).put("10.20.0.2", BIRD, round_robin=False)
    RecordStore(record).put("10.20.0.3", CAT, round_robin=False)
    state.put("ipam", "web", record)
    store = LeaseStore.of(state, "web")
    assert store.owner("10.20.0.2") == BIRD and len(store.allocations()) == 2
    assert str(store.ipam().allocate("d" * 64)) == "10.20.0.4"
    store.release_addresses(CAT, ["10.20.0.3"])
    store.save()
    assert state.get("ipam", "web")["allocations"] == {}
    assert state.names("lease") == ["web@10.20.0.2", "web@10.20.0.4"]
    assert state.get("lease", "web@10.20.0.2")["time"] == record["allocations"]["10.20.0.2"]["time"]
