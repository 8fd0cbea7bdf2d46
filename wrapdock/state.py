"""JSON state under /var/run/wrapdock: one file per object, validated, written atomically, locked.

Layout (STATE_DIR = --state-dir, $WRAPDOCK_STATE_DIR or /var/run/wrapdock):
  networks/NAME.json   a network                    (state/network.schema.json)
  ipam/NAME.json       its IP allocations           (state/ipam.schema.json)
  containers/ID.json   a container's configuration  (state/container.schema.json)
  audit.log            every command run, as JSON lines
  lock                 flock'd by every operation that changes something
Images outlive a reboot, so their records live in the data directory (DATA_DIR/images/NAME.json,
state/image.schema.json) through a second StateStore rooted there.

Writes go to a temporary file that is fsync'd and renamed over the old one, so a reader (or a crash)
sees either the old or the new record, never half of one. A file that does not parse or does not
match its schema is reported with its path and left alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wrapdock import resources
from wrapdock.errors import StateError

DEFAULT_STATE_DIR = Path("/var/run/wrapdock")
FOLDERS = {"network": "networks", "ipam": "ipam", "container": "containers", "image": "images"}
_validators: dict[str, Any] = {}


def validate(kind: str, record: Any, where: str) -> None:
    """Check a record against state/KIND.schema.json; jsonschema is imported only when needed."""
    validator = _validators.get(kind)
    if validator is None:
        import jsonschema

        schema = json.loads(resources.schema_text(kind))
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        _validators[kind] = validator
    error = next(iter(sorted(validator.iter_errors(record), key=lambda e: list(e.path))), None)
    if error is not None:
        raise StateError(f"{where}: {error.json_path}: {error.message}")


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- files ---------------------------------------------------------------------------------
    def path(self, kind: str, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise StateError(f"invalid {kind} name {name!r}")
        return self.root / FOLDERS[kind] / f"{name}.json"

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The record, None if there is none, StateError if the file is broken."""
        path = self.path(kind, name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        validate(kind, record, str(path))
        return record

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        path = self.path(kind, name)
        validate(kind, record, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def remove(self, kind: str, name: str) -> None:
        self.path(kind, name).unlink(missing_ok=True)

    def all(self, kind: str) -> list[dict[str, Any]]:
        folder = self.root / FOLDERS[kind]
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob("*.json")):
            record = self.get(kind, path.stem)
            if record is not None:
                records.append(record)
        return records

    # -- locking and the audit log -----------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize every read-modify-write of the state across wrapdock processes."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"{self.root}: cannot use the state directory: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def audit(self, entry: dict[str, Any]) -> None:
        """Append one executed command to audit.log (O_APPEND: lines from many processes interleave whole)."""
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "audit.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
