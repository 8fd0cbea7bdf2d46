"""The /etc/hosts files of containers: where each one lives, and the steps that write them.

Containers with the same networks and --add-host entries share one file (DATA_DIR/hosts/DIGEST, a
hard link in each one's etc directory); a `-h` container has its own (hostsfile.content_key). Two
ways to plan the writes:
- from the records (hosts_step): every file of the networks computed from every container on them.
  connect, disconnect, gc, a cluster sync and any --print-only run plan this way;
- from the files (joining, leaving): a live `run` or `rm` adds or takes out its container's lines in
  the files the network's index names (wrapdock/hostsindex.py), reading no other container's record.
  The two give the same files (tests/unit/test_containerhosts.py); where the second cannot tell (no
  index yet, a new file on a network whose members no file lists alone) it gives way to the first.
"""

from __future__ import annotations

import os
from typing import Any

from wrapdock import hostsfile, hostsindex
from wrapdock.containerviews import all_records, paths_of
from wrapdock.plan import Plan, Step
from wrapdock.plans import container as plans
from wrapdock.session import Session


def _write(files: list[tuple[str, list[str]]], note: str, **options: Any) -> Step:
    """plans.write_files for /etc/hosts files: their lines are data, shown and written as they read."""
    return plans.write_files(files, note, verbatim=True, **options)


def shared_hosts_dir(session: Session) -> str:
    """DATA_DIR/hosts: one /etc/hosts per group of containers with the same networks (hostsfile.content_key)."""
    return f"{session.data_dir}/hosts"


def hosts_file(session: Session, record: dict[str, Any]) -> tuple[str, str]:
    """("own" or "shared", where the container's /etc/hosts is kept): its own file in its etc
    directory, or its group's file, which its etc directory holds a hard link to."""
    return hosts_file_of(session, hostsfile.content_key(record), record["id"])


def hosts_file_of(session: Session, key: tuple[Any, ...], container_id: str) -> tuple[str, str]:
    if key[0] == "own":
        return "own", str(paths_of(session, container_id).hosts)
    return "shared", f"{shared_hosts_dir(session)}/{hostsfile.shared_file_name(key)}"


def new_container_step(session: Session, record: dict[str, Any],
                              others: list[dict[str, Any]]) -> tuple[str, Step]:
    """A new container's /etc/hosts, before it starts: its own file, or its group's file (written
    again: the group now lists it) and the link to it. Undone: the group's file as it was (or gone,
    if the container was its first member); the container's directory goes with the files' undo."""
    kind, path = hosts_file(session, record)
    network_names = {e["network"] for e in record["endpoints"]}
    remote = remote_records(session, network_names)
    lines = hostsfile.hosts_lines(record, [*others, *remote])
    paths = paths_of(session, record["id"])
    note = f"{record['name']}'s /etc/hosts" + (" (the file of the containers on the same networks)"
                                               if kind == "shared" else "")
    if kind == "own":
        return kind, _write([(path, lines)], note, mkdirs=(paths.etc_dir,))
    key = hostsfile.content_key(record)
    member = next((r for r in others if not r["id"].startswith(REMOTE) and hostsfile.content_key(r) == key), None)
    undo = (_write([(path, hostsfile.hosts_lines(member, [*others, *remote]))], note) if member
            else _write([], note, remove=(path,)))
    return kind, _write([(path, lines)], note, mkdirs=(shared_hosts_dir(session), paths.etc_dir),
                        links=((path, paths.hosts),), undo=undo)


def _directories(folder: str) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(folder) if entry.is_dir()}
    except FileNotFoundError:
        return set()


REMOTE = hostsfile.REMOTE


def remote_records(session: Session, network_names: set[str],
                   override: dict[str, tuple[tuple[str, str], ...]] | None = None) -> list[dict[str, Any]]:
    """Other hosts' containers on these cluster networks, as records /etc/hosts can list (from the
    network records' cache, which `network sync` fills from etcd: a start reads no etcd)."""
    found: list[dict[str, Any]] = []
    for name in sorted(network_names):
        if override is not None and name in override:
            pairs = override[name]
        else:
            record = session.state.get("network", name)
            pairs = tuple(sorted((record or {}).get("vxlan", {}).get("names", {}).items()))
        found += [{"id": f"{REMOTE}{name}:{container}", "name": container, "hostname": container,
                   "endpoints": [{"network": name, "address": address}]} for container, address in pairs]
    return found


def _hosts_contents(session: Session, network_names: set[str], records: list[dict[str, Any]],
                    also: str | None = None, skip: str | None = None) -> dict[str, list[str]]:
    """path -> content of each /etc/hosts file used by these records' containers on these networks
    (and by container `also`, whatever its networks): one per group of containers with the same
    networks (computed once), one per `-h` container; not the file `skip` (written elsewhere)."""
    contents: dict[str, list[str]] = {}
    by_key: dict[Any, str] = {}
    present: set[str] | None = None
    for record in records:
        for endpoint in record["endpoints"]:  # a loop, not any(): this runs for every container of the host
            if endpoint["network"] in network_names:
                break
        else:
            if record["id"] != also:
                continue
        if record["id"].startswith(REMOTE):
            continue
        key = hostsfile.content_key(record)
        if key in by_key:
            continue
        if key[0] == "own" and not session.print_only:
            if present is None:  # listed once, and only for -h containers
                present = _directories(os.path.join(session.data_dir, "containers"))
            if record["id"] not in present:
                continue  # its directory is gone (a crash): nothing to write into
        path = by_key[key] = hosts_file_of(session, key, record["id"])[1]
        if path != skip:
            contents[path] = hostsfile.hosts_lines(record, records)
    return contents


def hosts_step(session: Session, network_names: set[str], after: list[dict[str, Any]],
                before: list[dict[str, Any]], skip: str | None = None,
                remote_after: dict[str, tuple[tuple[str, str], ...]] | None = None,
                drop: tuple[str, list[str]] | None = None, also: str | None = None) -> list[Step]:
    """The step that rewrites the /etc/hosts files of the containers on these networks to list
    `after`'s containers (in place: the bind mounts follow); its undo writes back what `before`
    listed. A group's file is one file, whatever the number of its containers. `skip`: the path of a
    file written elsewhere (a new container's). `drop`: (path, content) of a group's file whose last
    container goes (rm): removed, and written back by the undo. Other hosts' containers on cluster
    networks are listed too (`remote_after`: what a sync found). `also`: a container whose networks
    changed: its file is written even if it is on none of these networks now."""
    after = [*after, *remote_records(session, network_names, remote_after)]
    before = [*before, *remote_records(session, network_names)]
    contents_after = _hosts_contents(session, network_names, after, also, skip)
    contents_before = _hosts_contents(session, network_names, before, also, skip)
    write = {path: lines for path, lines in contents_after.items() if contents_before.get(path) != lines}
    unused = (drop[0],) if drop is not None and drop[0] not in contents_after else ()
    if unused and drop is not None:
        contents_before[drop[0]] = drop[1]
    if not write and not unused:
        return []
    note = (f"/etc/hosts of the containers on {', '.join(sorted(network_names)) or 'no network'}: "
            f"{len(write)} file(s)" + (f", {len(unused)} no longer used" if unused else ""))
    restore = [(path, contents_before[path]) for path in [*write, *unused] if path in contents_before]
    created = tuple(path for path in write if path not in contents_before)
    undo = _write(restore, note, remove=created) if restore or created else None
    mkdirs = (shared_hosts_dir(session),) if created else ()
    return [_write(list(write.items()), note, mkdirs=mkdirs, remove=unused, undo=undo)]


def last_of_its_group(session: Session, record: dict[str, Any], others: list[dict[str, Any]]
                       ) -> tuple[str, list[str]] | None:
    """rm: (path, content) of the shared /etc/hosts file this container is the last one to use, if it is.
    Told by the file's link count (the file and one link per container: 2 = this one alone), without
    reading every container's networks; a --print-only script is planned from the records."""
    kind, path = hosts_file(session, record)
    if kind != "shared":
        return None
    if session.print_only:
        key = hostsfile.content_key(record)
        if any(hostsfile.content_key(r) == key for r in others if not r["id"].startswith(REMOTE)):
            return None
    else:
        try:
            if os.stat(path).st_nlink > 2:
                return None
        except FileNotFoundError:
            return None
    remote = remote_records(session, {e["network"] for e in record["endpoints"]})
    return path, hostsfile.hosts_lines(record, [*others, *remote])


def unused_hosts_files(session: Session) -> list[str]:
    """Shared /etc/hosts files no container uses (left by network connect and disconnect; gc removes them)."""
    folder = shared_hosts_dir(session)
    try:
        present = {entry.name for entry in os.scandir(folder) if entry.is_file()}
    except FileNotFoundError:
        return []
    used = {hostsfile.shared_file_name(key) for key in {hostsfile.content_key(r) for r in all_records(session)}
            if key[0] == "shared"}
    return [f"{folder}/{name}" for name in sorted(present - used)]


def refresh_hosts(session: Session, network_names: set[str]) -> None:
    """Write the /etc/hosts files of the containers on these networks whose content is not what the
    records make (gc: after its edits, and files a run or rm left wrong)."""
    expected = _expected(session, all_records(session), network_names)
    write = [(path, lines) for path, lines in expected.items() if _lines_of(path) != lines]
    if not write:
        return
    before = [(path, _lines_of(path)) for path, _ in write]
    note = _note(network_names, len(write))
    undo = _write([(p, lines) for p, lines in before if lines is not None], note,
                  remove=tuple(p for p, lines in before if lines is None))
    step = _write(write, note, mkdirs=(shared_hosts_dir(session),), undo=undo)
    session.carry_out(Plan("update /etc/hosts of the containers on " + ", ".join(sorted(network_names)), [step]))


def _expected(session: Session, records: list[dict[str, Any]], network_names: set[str]) -> dict[str, list[str]]:
    """path -> content of every /etc/hosts file of the containers on these networks, from the records."""
    local = [r for r in records if not r["id"].startswith(REMOTE)]
    return _hosts_contents(session, network_names, [*local, *remote_records(session, network_names)])


# -- from the files: a live run or rm, next to any number of containers --------------------------------
def _lines_of(path: str) -> list[str] | None:
    """A file's lines; None if it is not there, or is not text (a `-h` container may write its own:
    such a file is left as it is, and doctor names it)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def _in_use(path: str) -> bool:
    """A shared file some container links to (one that none does may be stale: gc removes it)."""
    try:
        return os.stat(path).st_nlink > 1
    except FileNotFoundError:
        return False


def _path_of(session: Session, key: hostsindex.Key) -> str:
    return hosts_file_of(session, key, key[1] if key[0] == "own" else "")[1]


def _indexed_files(session: Session, network_names: set[str]) -> dict[hostsindex.Key, list[str]] | None:
    """The files the networks' indexes name, as they are now (files that are gone left out); None: a
    network has no index."""
    keys: set[hostsindex.Key] = set()
    for name in network_names:
        found = hostsindex.read(session, name)
        if found is None:
            return None
        keys.update(found)
    files = {}
    for key in keys:
        lines = _lines_of(_path_of(session, key))
        if lines is not None:
            files[key] = lines
    return files


def _layout(session: Session, key: hostsindex.Key) -> tuple[frozenset[str], int, int] | None:
    """Of a file: the networks it lists, its own container's lines (first), its --add-host lines (last);
    None: the `-h` container whose file it is has no record any more."""
    if key[0] == "shared":
        return frozenset(key[1]), 0, len(key[2])
    owner = session.state.get("container", key[1])
    if owner is None:
        return None
    networks = frozenset(e["network"] for e in owner["endpoints"])
    return networks, len(hostsfile.member_lines(owner, networks)), len(owner.get("add_hosts") or ())


def _note(network_names: set[str], written: int, unused: int = 0) -> str:
    return (f"/etc/hosts of the containers on {', '.join(sorted(network_names)) or 'no network'}: "
            f"{written} file(s)" + (f", {unused} no longer used" if unused else ""))


def _members(session: Session, network_names: set[str], files: dict[hostsindex.Key, list[str]]) -> list[str] | None:
    """The lines that list the containers of the (one) network, from a shared file of that network
    alone; None: no such file (plan from the records)."""
    if len(network_names) != 1:
        return [] if not network_names else None
    (name,) = network_names
    for key, lines in files.items():
        if key[0] == "shared" and key[1] == (name,) and _in_use(_path_of(session, key)):
            return lines[hostsfile.LOCAL_LINES:len(lines) - len(key[2])]
    return None


def _its_files(session: Session, record: dict[str, Any]
               ) -> tuple[set[str], dict[hostsindex.Key, list[str]], hostsindex.Key, str, str] | None:
    """(its networks, the files their indexes name, its file's key, kind and path); None: no index."""
    network_names = {e["network"] for e in record["endpoints"]}
    files = _indexed_files(session, network_names)
    if files is None:
        return None
    return network_names, files, hostsfile.content_key(record), *hosts_file(session, record)


def joining(session: Session, record: dict[str, Any]) -> tuple[tuple[str, Step], list[Step]] | None:
    """A live run: (the new container's /etc/hosts step, the steps that list it in the other files of
    its network), from the files the network's index names; None: plan from the records. Same steps,
    notes and undos as new_container_step and hosts_step would make."""
    found = _its_files(session, record)
    if found is None:
        return None
    network_names, files, key, kind, path = found
    networks = frozenset(network_names)
    own_view = hostsfile.hosts_lines(record, [])  # the header, its own lines, its --add-host lines
    extra = len(record.get("add_hosts") or ())
    head, added = own_view[:hostsfile.LOCAL_LINES], own_view[len(own_view) - extra:]
    current = _lines_of(path) if kind == "shared" and _in_use(path) else None
    if current is not None:  # its group's file, which its members keep: it joins them
        lines = hostsfile.with_member(current, record, networks, tail=extra)
    elif not files:  # nobody of this host on its network: the other hosts' containers, if any
        lines = hostsfile.hosts_lines(record, remote_records(session, network_names))
    else:
        members = _members(session, network_names, files)
        if members is None:
            return None
        mine = hostsfile.member_lines(record, networks)
        lines = ([*head, *mine, *members, *added] if kind == "own"
                 else hostsfile.with_member([*head, *members, *added], record, networks, tail=extra))
    paths = paths_of(session, record["id"])
    note = f"{record['name']}'s /etc/hosts" + (" (the file of the containers on the same networks)"
                                               if kind == "shared" else "")
    if kind == "own":
        mine_step = _write([(path, lines)], note, mkdirs=(paths.etc_dir,))
    else:
        before = _lines_of(path)
        undo = (_write([(path, before)], note) if before is not None
                else _write([], note, remove=(path,)))
        mine_step = _write([(path, lines)], note, mkdirs=(shared_hosts_dir(session), paths.etc_dir),
                           links=((path, paths.hosts),), undo=undo)
    write: list[tuple[str, list[str]]] = []
    restore: list[tuple[str, list[str]]] = []
    for other, content in sorted(files.items()):
        layout = _layout(session, other) if other != key else None
        if layout is None:
            continue
        edited = hostsfile.with_member(content, record, *layout)
        if edited != content:
            write.append((_path_of(session, other), edited))
            restore.append((_path_of(session, other), content))
    if not write:
        return (kind, mine_step), []
    note = _note(network_names, len(write))
    return (kind, mine_step), [_write(write, note, undo=_write(restore, note))]


def leaving(session: Session, record: dict[str, Any]) -> tuple[list[Step], dict[str, set[hostsindex.Key]]] | None:
    """A live rm: the step that takes the container out of the other files of its networks (and removes
    its group's file if it is the last to use it), and the index entries to take out once it is gone;
    None: plan from the records."""
    found = _its_files(session, record)
    if found is None:
        return None
    network_names, files, key, kind, path = found
    unused: tuple[str, ...] = ()
    dropped: list[tuple[str, list[str]]] = []
    gone: dict[str, set[hostsindex.Key]] = {name: {key} for name in network_names} if kind == "own" else {}
    files.pop(key, None)
    if kind == "shared":
        lines = _lines_of(path)
        try:
            last = os.stat(path).st_nlink <= 2  # the file and this container's link
        except FileNotFoundError:
            last = False
        if last and lines is not None:
            unused, gone = (path,), {name: {key} for name in network_names}
            dropped.append((path, lines))
        elif lines is not None:
            files[key] = lines  # its group stays: it leaves the group's file
    write: list[tuple[str, list[str]]] = []
    restore: list[tuple[str, list[str]]] = []
    for other, content in sorted(files.items()):
        layout = _layout(session, other)
        if layout is None:
            continue
        edited = hostsfile.without_member(content, record, tail=layout[2])
        if edited != content:
            write.append((_path_of(session, other), edited))
            restore.append((_path_of(session, other), content))
    if not write and not unused:
        return [], gone
    note = _note(network_names, len(write), len(unused))
    undo = _write([*restore, *dropped], note)
    return [_write(write, note, remove=unused, undo=undo)], gone


# -- checks: the files against the records (doctor, gc) -----------------------------------------------
def out_of_date(session: Session, records: list[dict[str, Any]], network_names: set[str]) -> dict[str, set[str]]:
    """The /etc/hosts files of containers on these networks whose content is not what the records
    make (a run or rm edits the files, so a file that went wrong would stay wrong): path -> the
    networks whose containers it lists."""
    networks_of: dict[str, set[str]] = {}
    for record in records:
        on = {e["network"] for e in record["endpoints"]} & network_names
        if on and not record["id"].startswith(REMOTE):
            networks_of.setdefault(hosts_file(session, record)[1], set()).update(on)
    return {path: networks_of.get(path, set()) for path, lines in _expected(session, records, network_names).items()
            if _lines_of(path) != lines}
