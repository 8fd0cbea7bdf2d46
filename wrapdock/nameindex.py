"""Container names -> ids: STATE_DIR/container-names/NAME, a symbolic link whose target is the id.

`run` checks that a name is free, and `rm`, `stop`, `logs`, `exec`... find a container by name with one
readlink instead of reading every container's record. The records stay the truth:
- a link is written (under the state lock) before its record and removed after it, so a crash leaves
  at most a stale link, never a record without one; a link whose record is gone or names another
  container is stale and counts as absent;
- a missing folder (state from an earlier wrapdock) means the index is not kept: callers read the
  records, and the next `run` writes the folder whole, into a temporary folder renamed into place, so
  that a crash never leaves half an index that would look whole;
- it is kept by live runs only (--print-only plans from the records); `gc` writes it again from the
  records and `doctor` compares the two.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wrapdock.errors import StateError
from wrapdock.state import StateStore

FOLDER = "container-names"
_HEX = frozenset("0123456789abcdef")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def is_id(text: str) -> bool:
    """A full container id: 64 lowercase hex digits (checked without `re`: its compile is paid per command)."""
    return len(text) == 64 and _HEX.issuperset(text)


def _is_name(text: str) -> bool:
    return bool(text) and text[0] not in "_.-" and _NAME_CHARS.issuperset(text)


def folder(state: StateStore) -> Path:
    return state.root / FOLDER


def kept(state: StateStore) -> bool:
    return folder(state).is_dir()


def lookup(state: StateStore, name: str) -> str | None:
    """The id the index gives for `name` (to be checked against its record), None if it gives none."""
    if not _is_name(name):
        return None
    try:
        target = os.readlink(folder(state) / name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StateError(f"{folder(state) / name}: cannot read: {exc.strerror}") from None
    return target if is_id(target) else None


def claim(state: StateStore, name: str, container_id: str) -> None:
    """Point `name` at `container_id` (the caller holds the lock and found the name free)."""
    link = folder(state) / name
    try:
        os.symlink(container_id, link)
    except FileExistsError:  # a stale link (its record is gone): replaced in one rename
        spare = folder(state) / f".{name}.{os.urandom(6).hex()}"
        os.symlink(container_id, spare)
        os.replace(spare, link)


def release(state: StateStore, name: str, container_id: str) -> None:
    """Remove `name`'s link if it still points at `container_id`."""
    if lookup(state, name) == container_id:
        (folder(state) / name).unlink(missing_ok=True)


def build(state: StateStore, records: Iterable[dict[str, Any]]) -> None:
    """The whole index from the records, put in place with one rename (gc; the first run that keeps it)."""
    import shutil

    state.root.mkdir(parents=True, exist_ok=True)
    fresh = state.root / f".{FOLDER}.{os.urandom(6).hex()}"
    fresh.mkdir()
    try:
        for record in records:
            os.symlink(record["id"], fresh / record["name"])
        old = None
        if folder(state).exists():
            old = state.root / f".{FOLDER}.{os.urandom(6).hex()}.old"
            os.rename(folder(state), old)
        os.rename(fresh, folder(state))
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def differences(state: StateStore, records: Iterable[dict[str, Any]]) -> list[str]:
    """doctor: where the index and the records disagree (nothing when the index is not kept)."""
    if not kept(state):
        return []
    wanted = {record["name"]: record["id"] for record in records
              if record.get("phase") != "creating"}  # half-made: doctor names it, gc removes it
    present: dict[str, str | None] = {}
    for entry in os.scandir(folder(state)):
        if not entry.name.startswith("."):
            present[entry.name] = lookup(state, entry.name)
    found = [f"container {name} has no link in {folder(state)}" for name in sorted(wanted.keys() - present.keys())]
    found += [f"{folder(state)}/{name} points at {present[name]}, not at container {name} ({wanted[name][:12]})"
              for name in sorted(wanted.keys() & present.keys()) if present[name] != wanted[name]]
    return found
