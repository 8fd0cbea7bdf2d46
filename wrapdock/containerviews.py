"""Reading containers: their records, whether they run, and what ps, inspect and logs show.

Kept apart from wrapdock.containers (which changes containers, and imports the planning modules for
that) so that the read-only commands import little: their time is mostly Python starting.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from functools import cache
from typing import Any

from wrapdock import cgroups, portspec
from wrapdock.containerpaths import ContainerPaths
from wrapdock.errors import UsageError
from wrapdock.procstatus import Status, live_pid, status_in
from wrapdock.session import Session


def paths_of(session: Session, container_id: str) -> ContainerPaths:
    return ContainerPaths(session.data_dir / "containers" / container_id)


def all_records(session: Session) -> list[dict[str, Any]]:
    return session.state.all("container")


def summaries(session: Session) -> list[dict[str, Any]]:
    """What planning needs of every container (state.SUMMARY_FIELDS): its names, networks and ports,
    from a cache half the index's size, for the commands that change one container among many."""
    return session.state.summaries("container")


def find(session: Session, ref: str) -> dict[str, Any]:
    """A container by name, full id or unique id prefix (as Docker resolves them): through the name
    index (wrapdock/nameindex.py) and the names of the record files, reading one record; from every
    container's summary where the index is not kept."""
    from wrapdock import nameindex

    state = session.state
    if not nameindex.kept(state):
        return whole(session, find_in(summaries(session), ref))
    if nameindex.is_id(ref):
        record = state.get("container", ref)
        if record is not None:
            return record
    target = nameindex.lookup(state, ref)
    if target is not None:
        record = state.get("container", target)
        if record is not None and record["name"] == ref:
            return record
    prefix = ref.lower()
    matches = [name for name in state.names("container") if len(ref) >= 3 and name.startswith(prefix)]
    if len(matches) > 1:
        raise UsageError(f"{ref!r} matches several containers: use more of the id or the name")
    record = state.get("container", matches[0]) if matches else None
    if record is None:
        raise UsageError(f"no such container: {ref}")
    return record



def whole(session: Session, summary: dict[str, Any]) -> dict[str, Any]:
    """The record of a container found among the summaries."""
    record = session.state.get("container", summary["id"])
    if record is None:  # removed since the summaries were read (a command that does not hold the lock)
        raise UsageError(f"no such container: {summary['name']}")
    return record


def find_in(records: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """find() among records already read (an operation that needs them all reads them once)."""
    for record in records:
        if ref in (record["name"], record["id"]):
            return record
    matches = [r for r in records if len(ref) >= 3 and r["id"].startswith(ref.lower())]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"{ref!r} matches several containers: use more of the id or the name")
    raise UsageError(f"no such container: {ref}")


def current_status(session: Session, record: dict[str, Any]) -> Status:
    return status_in(_container_dir(session, record["id"]), _memory_dir(record["id"]))


def _container_dir(session: Session, container_id: str) -> str:
    return f"{session.data_dir}/containers/{container_id}"  # a string: `ps` makes n of them


def _memory_dir(container_id: str) -> str | None:
    parent = _memory_parent()
    return None if parent is None else f"{parent}/{container_id}"


@cache  # read once per process: `ps` asks for every container
def _memory_parent() -> str | None:
    """The directory under which the containers' memory cgroups are (None: no cgroups found)."""
    try:
        memory_dir = cgroups.detect().memory_dir("x")
    except Exception:
        return None
    return None if memory_dir is None else str(memory_dir.parent)


def view(session: Session, record: dict[str, Any]) -> dict[str, Any]:
    state = current_status(session, record)
    folder = _container_dir(session, record["id"])
    data = {k: v for k, v in record.items() if k not in ("version", "owner_pid")}
    data["state"] = {"status": state.state, "text": state.text(), "pid": state.pid, "exit_code": state.exit_code,
                     "oom_killed": state.oom_kills > 0}
    data["paths"] = {"dir": folder, "log": f"{folder}/container.log", "upper": f"{folder}/upper"}
    data["addresses"] = [f"{e['address']} ({e['network']}, {e['ifname']})" for e in record["endpoints"]]
    data["published"] = [portspec.from_record(p).text() for p in record["ports"]]
    return data


def _natural(text: str) -> list:
    """Docker's `port` sorts its lines in natural order (80 before 443)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def port_lines(session: Session, ref: str, port: str | None) -> list[str]:
    """`port C`: 'CONTAINER_PORT/PROTO -> HOST_IP:HOST_PORT' lines; `port C PORT[/PROTO]`: 'HOST_IP:HOST_PORT'."""
    record = find(session, ref)
    mappings = [portspec.from_record(p) for p in record["ports"]]
    if port is None:
        lines = [f"{m.container_port}/{m.proto} -> {m.host_ip or '0.0.0.0'}:{m.host_port}" for m in mappings]
        return sorted(lines, key=_natural)
    number, _, proto = port.partition("/")
    if not number.isdigit() or int(number) > 65535:
        raise UsageError(f"invalid port ({number}): expected PORT[/PROTO], PORT from 0 to 65535")
    wanted = (int(number), proto or "tcp")
    lines = [f"{m.host_ip or '0.0.0.0'}:{m.host_port}" for m in mappings if (m.container_port, m.proto) == wanted]
    if not lines:
        raise UsageError(f"no public port '{port}' published for {ref}")
    return sorted(lines, key=_natural)


def listing(session: Session, include_stopped: bool) -> list[dict[str, Any]]:
    views = [view(session, r) for r in all_records(session)]
    if not include_stopped:
        views = [v for v in views if v["state"]["status"] == "running"]
    return sorted(views, key=lambda v: v["created"], reverse=True)


def ago(iso: str) -> str:
    try:
        seconds = int(time.time() - datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return iso
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{max(seconds, 0)} seconds ago"


def logs(session: Session, ref: str, follow: bool) -> None:
    record = find(session, ref)
    paths = paths_of(session, record["id"])
    out = sys.stdout.buffer
    try:
        handle = paths.log.open("rb")
    except FileNotFoundError:
        if not record["detach"]:
            raise UsageError(f"container {record['name']} ran in the foreground: its output went to the "
                             "terminal, not to a log") from None
        return
    with handle:
        while True:
            chunk = handle.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not follow or live_pid(paths) is None:
                break
            time.sleep(0.1)


def image_users(session: Session, image: str) -> list[str]:
    return [r["name"] for r in all_records(session) if r["image"] == image]
