"""Which /etc/hosts files list a network's containers: STATE_DIR/hosts/NETWORK.json (state/hosts.schema.json).

A start or an `rm` next to N containers used to compute every /etc/hosts file of the network from
every container's record: O(N) records read at every start and rm. With this index they read only the
files it names and add or take out their container's lines (hostsfile.with_member, without_member):
the file is the state of who it lists, the records say who should be listed, and `gc` and `doctor`
compare the two.

Rules that keep the index safe to trust:
- it is a superset. An entry whose file is gone, or that lists nobody of the network any more, costs
  a read. A file missing from it would go stale, so an entry is added before its file is written and
  taken out only after its file is gone (or no longer used);
- it is kept by live runs only: a --print-only run (simulated or not) plans from the records;
- a network without an index (made by an earlier wrapdock) is planned from the records, and that
  run writes its index; `network create` writes an empty one; `gc` writes every one again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from wrapdock import hostsfile

if TYPE_CHECKING:
    from wrapdock.session import Session

KIND = "hosts"
Key = tuple[Any, ...]  # hostsfile.content_key: ("own", ID) or ("shared", NETWORKS, ADD_HOSTS)


def entry_of(key: Key) -> dict[str, Any]:
    if key[0] == "own":
        return {"own": key[1]}
    return {"networks": list(key[1]), "add_hosts": list(key[2])}


def key_of(entry: dict[str, Any]) -> Key:
    if "own" in entry:
        return ("own", entry["own"])
    return ("shared", tuple(entry.get("networks", ())), tuple(entry.get("add_hosts", ())))


def read(session: Session, network: str) -> list[Key] | None:
    """The keys of the files that list `network`'s containers; None: no index (plan from the records)."""
    record = session.state.get(KIND, network)
    return None if record is None else [key_of(entry) for entry in record["files"]]


def write(session: Session, network: str, keys: Iterable[Key]) -> None:
    entries = sorted((entry_of(key) for key in set(keys)), key=lambda e: (e.get("own", ""), e.get("networks", []),
                                                                         e.get("add_hosts", [])))
    session.state.put(KIND, network, {"version": 1, "network": network, "files": entries})


def keys_by_network(records: Iterable[dict[str, Any]], networks: set[str]) -> dict[str, set[Key]]:
    """From the records: network -> the keys of the files that list its containers (local ones only)."""
    found: dict[str, set[Key]] = {name: set() for name in networks}
    for record in records:
        if record["id"].startswith(hostsfile.REMOTE):
            continue
        key = None
        for endpoint in record.get("endpoints", []):
            if endpoint["network"] in found:
                key = key or hostsfile.content_key(record)
                found[endpoint["network"]].add(key)
    return found


def add(session: Session, keys: dict[str, set[Key]], create: bool = False) -> None:
    """Add entries before their files are written (the index stays a superset through a crash).
    Networks without an index get one only with `create` (the caller knows every container on them)."""
    if session.print_only:
        return
    for network, wanted in sorted(keys.items()):
        present = read(session, network)
        if present is None:
            if create:
                write(session, network, wanted)
            continue
        if not wanted <= set(present):
            write(session, network, {*present, *wanted})


def discard(session: Session, keys: dict[str, set[Key]]) -> None:
    """Take entries out once their files are gone or unused."""
    if session.print_only:
        return
    for network, gone in sorted(keys.items()):
        present = read(session, network)
        if present is not None and set(present) & gone:
            write(session, network, set(present) - gone)


def forget(session: Session, network: str) -> None:
    session.state.remove(KIND, network)


def rebuild(session: Session, records: list[dict[str, Any]], networks: set[str]) -> None:
    """Every network's index from the records alone (gc); indexes of networks that are gone go too."""
    for network, keys in keys_by_network(records, networks).items():
        write(session, network, keys)
    folder = session.state.root / "hosts"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if path.stem not in networks:
                path.unlink(missing_ok=True)


def missing(session: Session, records: list[dict[str, Any]], networks: set[str]) -> dict[str, set[Key]]:
    """doctor: entries the records call for that an existing index lacks (those files would go stale)."""
    lacking: dict[str, set[Key]] = {}
    for network, keys in keys_by_network(records, networks).items():
        present = read(session, network)
        if present is not None and not keys <= set(present):
            lacking[network] = keys - set(present)
    return lacking
