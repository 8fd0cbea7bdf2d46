"""StateStore: round trips, atomic writes, errors that name the file, schema checks, the lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from wrapdock.errors import StateError
from wrapdock.state import StateStore, check_shape, reference_errors

NETWORK = {"version": 1, "name": "web", "id": "ab" * 32, "driver": "bridge", "subnet": "10.20.0.0/24",
           "gateway": "10.20.0.1", "bridge": "web", "mtu": None, "internal": False, "isolated": False, "lab": None,
           "created": "2024-01-02T03:04:05+00:00"}
IPAM = {"version": 1, "network": "web", "subnet": "10.20.0.0/24", "gateway": "10.20.0.1",
        "last_reserved": "10.20.0.3",
        "allocations": {"10.20.0.2": {"owner": "c1", "time": "2024-01-02T03:04:05+00:00"},
                        "10.20.0.3": {"owner": "c2"}}}


def with_(record: dict, **changes) -> dict:
    return {**record, **changes}


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- round trips ---------------------------------------------------------------------------------
def test_network_and_ipam_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.all("network") == []
    assert store.get("network", "web") is None
    assert store.get("ipam", "web") is None
    store.put("network", "web", NETWORK)
    store.put("ipam", "web", IPAM)
    assert store.get("network", "web") == NETWORK
    assert store.get("ipam", "web") == IPAM
    other = with_(NETWORK, name="api", bridge="api", subnet="10.21.0.0/24", gateway="10.21.0.1", mtu=1400)
    store.put("network", "api", other)
    assert [r["name"] for r in store.all("network")] == ["api", "web"]
    assert (tmp_path / "state" / "networks" / "web.json").is_file()
    assert (tmp_path / "state" / "ipam" / "web.json").is_file()
    assert store.path("network", "web") == tmp_path / "state" / "networks" / "web.json"
    assert json.loads((tmp_path / "state" / "networks" / "api.json").read_text()) == other
    store.remove("ipam", "web")
    store.remove("network", "web")
    assert store.get("network", "web") is None and store.get("ipam", "web") is None
    store.remove("network", "web")  # removing twice is harmless
    assert [r["name"] for r in store.all("network")] == ["api"]


def test_small_records_are_written_indented_big_ones_in_one_line(tmp_path: Path) -> None:
    """People read the small files; an IPAM record of a crowded network is written with json's C encoder."""
    store = StateStore(tmp_path / "state")
    store.put("ipam", "web", IPAM)
    assert (tmp_path / "state" / "ipam" / "web.json").read_text().count("\n") > 5
    crowded = with_(IPAM, subnet="10.20.0.0/16", allocations={
        f"10.20.{i // 250}.{i % 250 + 2}": {"owner": f"c{i}", "time": "2024-01-02T03:04:05+00:00"} for i in range(200)})
    store.put("ipam", "crowd", crowded)
    text = (tmp_path / "state" / "ipam" / "crowd.json").read_text()
    assert text.count("\n") == 1 and store.get("ipam", "crowd") == crowded


def test_overwrite_replaces_whole_record(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.put("ipam", "web", IPAM)
    store.put("ipam", "web", with_(IPAM, allocations={}, last_reserved=None))
    assert store.get("ipam", "web") == with_(IPAM, allocations={}, last_reserved=None)


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i in range(5):
        store.put("network", "web", with_(NETWORK, mtu=1400 + i))
        store.put("ipam", "web", IPAM)
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["ipam/web.json", "networks/web.json"]
    assert oct((tmp_path / "networks" / "web.json").stat().st_mode & 0o777) == "0o644"


def test_failed_write_leaves_old_record_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    store = StateStore(tmp_path)
    store.put("network", "web", NETWORK)
    before = snapshot(tmp_path)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.put("network", "web", with_(NETWORK, mtu=9000))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert store.get("network", "web") == NETWORK


def test_invalid_record_is_never_written(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(StateError, match=r"networks/web\.json"):
        store.put("network", "web", with_(NETWORK, subnet="10.20.0.0/31"))
    assert snapshot(tmp_path) == {}


# -- damaged files ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ('{"version": 1, "name": "web"', "not valid JSON"),
    (json.dumps(with_(NETWORK, mtu=12)), "$.mtu"),
    (json.dumps(without(NETWORK, "bridge")), "'bridge' is a required property"),
    (json.dumps(with_(NETWORK, name="bad name")), "$.name"),
    (json.dumps([NETWORK]), "is not of type 'object'"),
])
def test_damaged_network_file_names_the_path_and_is_left_alone(tmp_path: Path, content: str, why: str) -> None:
    store = StateStore(tmp_path)
    path = tmp_path / "networks" / "web.json"
    path.parent.mkdir()
    path.write_text(content)
    for read in (lambda: store.get("network", "web"), lambda: store.all("network")):
        with pytest.raises(StateError) as caught:
            read()
        message = caught.value.message
        assert message.startswith(f"{path}: ")
        assert why in message
        assert "\n" not in message
        assert caught.value.exit_code == 3
    assert path.read_text() == content
    assert sorted(p.name for p in path.parent.iterdir()) == ["web.json"]


def test_damaged_ipam_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    path = tmp_path / "ipam" / "web.json"
    path.parent.mkdir()
    content = json.dumps(with_(IPAM, allocations={"10.20.0.2": {}}))
    path.write_text(content)
    with pytest.raises(StateError, match=r"ipam/web\.json: .*'owner' is a required property"):
        store.get("ipam", "web")
    assert path.read_text() == content


def test_unreadable_state_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    (tmp_path / "networks" / "web.json").mkdir(parents=True)  # a directory where a file should be
    with pytest.raises(StateError, match=r"networks/web\.json: cannot read"):
        store.get("network", "web")


# -- schemas ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("record", [
    NETWORK,
    with_(NETWORK, mtu=68),
    with_(NETWORK, mtu=65535, internal=True),
    with_(NETWORK, subnet="10.0.0.0/8", gateway="10.0.0.1"),
    with_(NETWORK, name="a" * 64, bridge="b" * 15),
])
def test_valid_network_records(record: dict) -> None:
    check_shape("network", record, "here")
    assert reference_errors("network", record) == []


@pytest.mark.parametrize("record", [
    with_(NETWORK, version=2),
    with_(NETWORK, id="ab" * 31),
    with_(NETWORK, id="AB" * 32),
    with_(NETWORK, driver="overlay"),
    with_(NETWORK, subnet="10.0.0.0/7"),
    with_(NETWORK, subnet="10.0.0.0/31"),
    with_(NETWORK, subnet="10.0.0.0"),
    with_(NETWORK, gateway="10.0.0.300"),
    with_(NETWORK, gateway="fe80::1"),
    with_(NETWORK, bridge="b" * 16),
    with_(NETWORK, bridge="a b"),
    with_(NETWORK, name="-web"),
    with_(NETWORK, name="a" * 65),
    with_(NETWORK, mtu=67),
    with_(NETWORK, mtu=65536),
    with_(NETWORK, mtu="1500"),
    with_(NETWORK, internal="no"),
    with_(NETWORK, extra=1),
    without(NETWORK, "created"),
    without(NETWORK, "mtu"),
])
def test_invalid_network_records(record: dict) -> None:
    with pytest.raises(StateError) as caught:
        check_shape("network", record, "the/place.json")
    assert caught.value.message.startswith("the/place.json: $")
    assert reference_errors("network", record)


@pytest.mark.parametrize("record", [
    IPAM,
    with_(IPAM, last_reserved=None, allocations={}),
    with_(IPAM, subnet="10.0.0.0/8"),
])
def test_valid_ipam_records(record: dict) -> None:
    check_shape("ipam", record, "here")
    assert reference_errors("ipam", record) == []


@pytest.mark.parametrize("record", [
    with_(IPAM, version=0),
    with_(IPAM, network="bad name"),
    with_(IPAM, last_reserved="10.20.0"),
    with_(IPAM, allocations={"10.20.0.x": {"owner": "a"}}),
    with_(IPAM, allocations={"10.20.0.2": {"owner": ""}}),
    with_(IPAM, allocations={"10.20.0.2": {"owner": "a", "note": "x"}}),
    with_(IPAM, allocations={"10.20.0.2": "a"}),
    with_(IPAM, allocations=[]),
    with_(IPAM, subnet="10.20.0.0/32"),
    without(IPAM, "last_reserved"),
    with_(IPAM, extra=True),
])
def test_invalid_ipam_records(record: dict) -> None:
    with pytest.raises(StateError, match=r"^x\.json: \$"):
        check_shape("ipam", record, "x.json")
    assert reference_errors("ipam", record)


# -- audit log and lock ----------------------------------------------------------------------------
def test_audit_appends_json_lines(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "new")
    store.audit({"argv": ["ip", "link"], "exit_code": 0})
    store.audit({"argv": ["iptables", "-w"], "exit_code": 1})
    lines = (tmp_path / "new" / "audit.log").read_text().splitlines()
    assert [json.loads(line)["argv"] for line in lines] == [["ip", "link"], ["iptables", "-w"]]


def _bump_counter(root: str, times: int) -> None:
    store = StateStore(Path(root))
    counter = Path(root) / "counter"
    for _ in range(times):
        with store.locked():
            value = int(counter.read_text())
            time.sleep(0.0005)  # widen the race window: without the lock, increments get lost
            counter.write_text(str(value + 1))


def test_locked_serializes_processes(tmp_path: Path) -> None:
    (tmp_path / "counter").write_text("0")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_bump_counter, args=(str(tmp_path), 50)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert (tmp_path / "counter").read_text() == "100"


def test_locked_is_exclusive_within_the_holder(tmp_path: Path) -> None:
    """While one process holds the lock, another cannot take it (checked with a non-blocking flock)."""
    import fcntl

    store = StateStore(tmp_path)
    with store.locked():
        fd = os.open(tmp_path / "lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the block
    finally:
        os.close(fd)


def test_locked_reports_unusable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match=r"file/sub: cannot use the state directory"), \
            StateStore(blocker / "sub").locked():
        pass


def test_locked_with_a_bound_gives_up_while_another_holds_it(tmp_path: Path) -> None:
    """The bounded wait (the CNI plugin's: "try again later" rather than hanging the engine)."""
    import fcntl

    from wrapdock.state import LockTimeout

    store = StateStore(tmp_path)
    with store.locked():  # creates the lock file
        pass
    fd = os.open(tmp_path / "lock", os.O_RDWR)  # another holder (flock locks belong to open files)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockTimeout, match=r"locked by another command for over 0 s"), store.locked(0.1):
            pass
    finally:
        os.close(fd)
    with store.locked(0.1):  # free again
        pass


# -- the index of container records ----------------------------------------------------------------
def _container(number: int) -> dict:
    from tests.unit.test_state_shape import CONTAINER

    return {**CONTAINER, "id": f"{number:064x}", "name": f"c{number}", "hostname": f"c{number}"}


def _names(store: StateStore) -> list[str]:
    return [r["name"] for r in store.all("container")]


@pytest.mark.parametrize("cache", ["index", "summary"])
def test_a_cache_follows_the_record_files(tmp_path: Path, monkeypatch, cache: str) -> None:
    file, value, read = CACHES[cache]
    monkeypatch.setattr("wrapdock.state.INDEX_REWRITE_AFTER", 1)
    root = tmp_path / "state"
    writer = StateStore(root)
    for number in (1, 2, 3):
        writer.put("container", f"{number:064x}", _container(number))
    assert read(StateStore(root)) == ["c1", "c2", "c3"]
    content = json.loads((root / file).read_text())
    assert sorted(content["files"]) == [f"{n:064x}.json" for n in (1, 2, 3)]
    # changed (a new inode), added and removed behind the cache's back: the files win, the cache catches up
    writer.put("container", f"{2:064x}", {**_container(2), "name": "renamed"})
    writer.put("container", f"{4:064x}", _container(4))
    writer.remove("container", f"{1:064x}")
    assert read(StateStore(root)) == ["renamed", "c3", "c4"]
    content = json.loads((root / file).read_text())
    assert sorted(content["files"]) == [f"{n:064x}.json" for n in (2, 3, 4)]
    assert content["files"][f"{2:064x}.json"][value]["name"] == "renamed"


# the two caches beside the container records: (file, where an entry keeps its value, how it is read)
CACHES = {"index": ("containers.index.json", "record", lambda store: _names(store)),
          "summary": ("containers.summary.json", "summary", lambda store: _summary_names(store))}


@pytest.mark.parametrize("cache", sorted(CACHES))
def test_a_cache_is_used_only_while_the_file_is_the_one_it_saw(tmp_path: Path, cache: str) -> None:
    file, value, read = CACHES[cache]
    root = tmp_path / "state"
    store = StateStore(root)
    store.put("container", f"{1:064x}", _container(1))
    assert read(StateStore(root)) == ["c1"]
    path = root / file
    content = json.loads(path.read_text())
    content["files"][f"{1:064x}.json"][value]["name"] = "from-the-cache"
    path.write_text(json.dumps(content))
    assert read(StateStore(root)) == ["from-the-cache"]  # the stamp matches: read from the cache
    if cache == "summary":
        assert _names(StateStore(root)) == ["c1"]  # all() never reads the summaries
    store.put("container", f"{1:064x}", _container(1))  # a new file (new inode): the entry is stale
    assert read(StateStore(root)) == ["c1"]


@pytest.mark.parametrize("cache", sorted(CACHES))
@pytest.mark.parametrize("content", ["", "{", "[]", '{"version": 1, "kind": "container", "files": {"x": 1}}',
                                     '{"version": 1, "kind": "container", "schema_crc32": 1, "files": {}}'])
def test_a_broken_cache_costs_reads_only(tmp_path: Path, content: str, cache: str) -> None:
    file, _, read = CACHES[cache]
    root = tmp_path / "state"
    store = StateStore(root)
    store.put("container", f"{1:064x}", _container(1))
    (root / file).write_text(content)
    assert read(StateStore(root)) == ["c1"]
    assert json.loads((root / file).read_text())["version"] == 1  # written again


def test_a_broken_record_is_reported_despite_the_index(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = StateStore(root)
    store.put("container", f"{1:064x}", _container(1))
    assert _names(StateStore(root)) == ["c1"]
    (root / "containers" / f"{1:064x}.json").write_text("{broken")
    with pytest.raises(StateError, match="not valid JSON"):
        StateStore(root).all("container")


def test_rebuild_index(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = StateStore(root)
    store.put("container", f"{1:064x}", _container(1))
    (root / "containers.index.json").write_text("{")
    store.rebuild_index("container")
    assert list(json.loads((root / "containers.index.json").read_text())["files"]) == [f"{1:064x}.json"]
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("cache", ["index", "summary"])
def test_a_cache_is_rewritten_only_when_enough_is_out_of_date(tmp_path: Path, monkeypatch, cache: str) -> None:
    file, _, read = CACHES[cache]
    monkeypatch.setattr("wrapdock.state.INDEX_REWRITE_AFTER", 3)
    root = tmp_path / "state"
    store = StateStore(root)
    for number in (1, 2, 3, 4):
        store.put("container", f"{number:064x}", _container(number))
    assert read(StateStore(root)) == ["c1", "c2", "c3", "c4"]  # no cache yet: written
    path = root / file
    written = path.read_bytes()
    store.put("container", f"{1:064x}", {**_container(1), "name": "one"})
    store.remove("container", f"{2:064x}")
    assert read(StateStore(root)) == ["one", "c3", "c4"]  # two out of date: read from their files
    assert path.read_bytes() == written
    store.put("container", f"{3:064x}", {**_container(3), "name": "three"})
    assert read(StateStore(root)) == ["one", "three", "c4"]  # three: written again
    assert sorted(json.loads(path.read_text())["files"]) == [f"{n:064x}.json" for n in (1, 3, 4)]


@pytest.mark.parametrize("cache", ["index", "summary"])
def test_a_cache_made_under_another_schema_is_not_used(tmp_path: Path, cache: str) -> None:
    file, value, read = CACHES[cache]
    root = tmp_path / "state"
    StateStore(root).put("container", f"{1:064x}", _container(1))
    assert read(StateStore(root)) == ["c1"]
    path = root / file
    content = json.loads(path.read_text())
    content["files"][f"{1:064x}.json"][value]["name"] = "from-the-cache"
    path.write_text(json.dumps({**content, "schema_crc32": content["schema_crc32"] + 1}))
    assert read(StateStore(root)) == ["c1"]  # its records were checked against another schema


# -- the summaries of container records ------------------------------------------------------------
def _summary_names(store: StateStore) -> list[str]:
    return [s["name"] for s in store.summaries("container")]


def _projection(records: list[dict]) -> list[dict]:
    from wrapdock.state import SUMMARY_FIELDS

    return [{k: r[k] for k in SUMMARY_FIELDS["container"] if k in r} for r in records]


def test_summaries_are_the_planning_fields_of_all(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = StateStore(root)
    assert store.summaries("container") == []  # no folder yet
    for number in (3, 1, 2):
        store.put("container", f"{number:064x}", _container(number))
    summaries = StateStore(root).summaries("container")
    assert summaries == _projection(StateStore(root).all("container"))
    assert [s["name"] for s in summaries] == ["c1", "c2", "c3"]  # all()'s order
    assert set(summaries[0]) == {"id", "name", "hostname", "endpoints", "ports", "add_hosts", "net_mode", "netns",
                                 "phase"}
    cache = json.loads((root / "containers.summary.json").read_text())  # written: there was none
    assert cache["files"][f"{1:064x}.json"]["summary"] == summaries[0]
    assert StateStore(root).summaries("container") == summaries  # now from the file


def test_summaries_only_for_summarized_kinds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="network"):
        StateStore(tmp_path).summaries("network")


def test_a_foreign_summary_file_is_not_used(tmp_path: Path) -> None:
    """The index's entries (whole records under "record") or another kind's: never taken as summaries."""
    root = tmp_path / "state"
    store = StateStore(root)
    store.put("container", f"{1:064x}", _container(1))
    assert _names(StateStore(root)) == ["c1"]
    index = json.loads((root / "containers.index.json").read_text())
    index["files"][f"{1:064x}.json"]["record"]["name"] = "from-the-index"
    path = root / "containers.summary.json"
    path.write_text(json.dumps(index))
    assert _summary_names(StateStore(root)) == ["c1"]
    summary = json.loads(path.read_text())  # written again, a summary file now
    summary["files"][f"{1:064x}.json"]["summary"]["name"] = "elsewhere"
    path.write_text(json.dumps({**summary, "kind": "network"}))
    assert _summary_names(StateStore(root)) == ["c1"]


def test_summaries_made_with_other_fields_are_not_used(tmp_path: Path, monkeypatch) -> None:
    from wrapdock.state import SUMMARY_FIELDS

    root = tmp_path / "state"
    StateStore(root).put("container", f"{1:064x}", _container(1))
    assert _summary_names(StateStore(root)) == ["c1"]
    monkeypatch.setitem(SUMMARY_FIELDS, "container", (*SUMMARY_FIELDS["container"], "image", "user"))
    StateStore(root).put("container", f"{2:064x}", {**_container(2), "user": "1000:1000"})
    summaries = StateStore(root).summaries("container")
    assert summaries[0]["image"] == "busybox"  # not the old entry without it
    assert "user" not in summaries[0] and summaries[1]["user"] == "1000:1000"  # a key a record lacks is left out
    cache = json.loads((root / "containers.summary.json").read_text())
    assert cache["fields"][-2:] == ["image", "user"]  # written again, with the fields it holds


def test_a_broken_record_is_reported_despite_the_summaries(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = StateStore(root)
    store.put("container", f"{1:064x}", _container(1))
    assert _summary_names(StateStore(root)) == ["c1"]
    path = root / "containers" / f"{1:064x}.json"
    path.write_text(json.dumps({**_container(1), "phase": "nonsense"}))  # valid JSON, not the schema
    with pytest.raises(StateError, match=r"phase") as summaries_error:
        StateStore(root).summaries("container")
    with pytest.raises(StateError) as all_error:
        StateStore(root).all("container")
    assert str(summaries_error.value) == str(all_error.value)
    path.write_text("{broken")
    with pytest.raises(StateError, match="not valid JSON"):
        StateStore(root).summaries("container")


def test_rebuild_index_rebuilds_the_summaries(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = StateStore(root)
    for number in (1, 2):
        store.put("container", f"{number:064x}", _container(number))
    assert _summary_names(StateStore(root)) == ["c1", "c2"]
    path = root / "containers.summary.json"
    cache = json.loads(path.read_text())
    cache["files"][f"{1:064x}.json"]["summary"]["name"] = "wrong"  # a stamp that matches, a wrong entry
    path.write_text(json.dumps(cache))
    store.rebuild_index("container")
    files = json.loads(path.read_text())["files"]
    assert [e["summary"]["name"] for e in files.values()] == ["c1", "c2"]
    assert json.loads((root / "containers.index.json").read_text())["files"].keys() == files.keys()
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    store.remove("container", f"{1:064x}")
    store.remove("container", f"{2:064x}")
    store.rebuild_index("container")  # nothing left: neither file is kept
    assert not path.exists() and not (root / "containers.index.json").exists()
