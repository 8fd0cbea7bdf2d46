"""JSON state under /var/run/wrapdock: one file per object, validated, written atomically, locked.

Layout (STATE_DIR = --state-dir, $WRAPDOCK_STATE_DIR or /var/run/wrapdock):
  networks/NAME.json   a network                    (state/network.schema.json)
  ipam/NAME.json       its address range            (state/ipam.schema.json)
  leases/NAME@ADDRESS.json  one IP lease             (state/lease.schema.json, wrapdock/leases.py)
  containers/ID.json   a container's configuration  (state/container.schema.json)
  hosts/NAME.json      which /etc/hosts files list network NAME's containers (state/hosts.schema.json,
                       wrapdock/hostsindex.py)
  container-names/NAME a link to the id of container NAME (wrapdock/nameindex.py)
  cni/attachments/*.json  an interface made for a CNI caller (state/cni.schema.json); cni/trail/: one
                       trail file per CNI call (the plugin's stdout is its result)
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from wrapdock import resources
from wrapdock.errors import StateError
from wrapdock.schemacheck import compile_predicate, compile_schema, unsupported_keywords

INDENTED_UP_TO = 4096  # characters: records up to this size are written indented, for people to read


def _record_text(record: dict[str, Any]) -> str:
    """A record as its file holds it: indented when small (most are); in one line when big (an IPAM
    record with hundreds of addresses), with json's C encoder, which `indent` would turn off: writing
    the IPAM record of a network with 1000 containers took ~8 ms indented, <1 ms this way."""
    compact = json.dumps(record, sort_keys=True)
    if len(compact) > INDENTED_UP_TO:
        return compact + "\n"
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


class LockTimeout(Exception):
    """The state lock was not free within the time the caller can wait."""

DEFAULT_STATE_DIR = Path("/var/run/wrapdock")
FOLDERS = {"network": "networks", "ipam": "ipam", "container": "containers", "image": "images",
           "cni": "cni/attachments", "hosts": "hosts", "lease": "leases"}
INDEXED = {"container"}  # kinds read whole by common commands (ps, every run and rm): FOLDER.index.json
INDEX_REWRITE_AFTER = 16  # records read from their files (or gone) before a cache is written again
SUMMARIZED = {"container"}  # kinds whose records' planning fields are also kept apart: FOLDER.summary.json
SUMMARY_FIELDS = {  # what run, rm, connect, disconnect and /etc/hosts planning read of the other containers
    "container": ("id", "name", "hostname", "endpoints", "ports", "add_hosts", "net_mode", "netns", "phase"),
}
_validators: dict[str, Any] = {}
_schemas: dict[str, dict[str, Any]] = {}


def reference_errors(kind: str, record: Any) -> list[str]:
    """Why `record` fails state/KIND.schema.json according to jsonschema itself (doctor, tests)."""
    validator = _validators.get(kind)
    if validator is None:
        import jsonschema  # ~100 ms to import: only doctor and the tests pay for it

        validator = jsonschema.Draft202012Validator(_schema(kind), format_checker=jsonschema.FormatChecker())
        _validators[kind] = validator
    return [f"{error.json_path}: {error.message}"
            for error in sorted(validator.iter_errors(record), key=lambda e: list(e.path))]


def _schema(kind: str) -> dict[str, Any]:
    if kind not in _schemas:
        schema = json.loads(resources.schema_text(kind))
        unknown = unsupported_keywords(schema)
        if unknown:  # the built-in checker would silently ignore them: a bug in wrapdock, not in the state
            raise RuntimeError(f"state/{kind}.schema.json uses keywords the state checker lacks: {unknown}")
        _schemas[kind] = schema
    return _schemas[kind]


@cache
def _matcher(kind: str) -> Callable[[Any], bool]:
    """The predicate generated into wrapdock/statecheck.py, while the schema is the one it was made from."""
    import zlib

    from wrapdock import statecheck

    if statecheck.SCHEMA_CRC32.get(kind) == zlib.crc32(resources.schema_text(kind).encode()):
        return getattr(statecheck, kind)
    return compile_predicate(_schema(kind))  # the schema changed since: compile it here (~9 ms)


def prepare_checks() -> None:
    """The checks of every kind of record, made ready now (a resident process: wrapdock cni serve)."""
    for kind in FOLDERS:
        _matcher(kind)
        _schema_crc32(kind)


@cache
def _schema_crc32(kind: str) -> int:
    """Which schema the records of an index were checked against (another one: the index is not used)."""
    import zlib

    return zlib.crc32(resources.schema_text(kind).encode())


def check_shape(kind: str, record: Any, where: str) -> None:
    """Check a record against state/KIND.schema.json (wrapdock.schemacheck: on every read and write)."""
    if _matcher(kind)(record):
        return
    errors: list[str] = []
    compile_schema(_schema(kind))(record, "$", errors)  # only now: it explains what is wrong
    raise StateError(f"{where}: {errors[0] if errors else f'does not match state/{kind}.schema.json'}")


class _CacheFile:
    """A cache beside a folder of records, FOLDER.SUFFIX.json: per record file, its stamp and what the
    cache keeps of it under the key `value` (the whole record: `fields` None; else those keys). A plain
    class, not a dataclass: state.py is imported by every command, and dataclasses compile at import."""

    __slots__ = ("fields", "suffix", "value")

    def __init__(self, suffix: str, value: str, fields: tuple[str, ...] | None = None) -> None:
        self.suffix = suffix
        self.value = value
        self.fields = fields

    def keep(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.fields is None:
            return record
        return {key: record[key] for key in self.fields if key in record}

    def header(self, kind: str) -> dict[str, Any]:
        """What a cache file must say of itself to be used (another version, kind, schema or fields: not)."""
        header: dict[str, Any] = {"version": 1, "kind": kind, "schema_crc32": _schema_crc32(kind)}
        if self.fields is not None:
            header["fields"] = list(self.fields)
        return header


_INDEX = _CacheFile("index", "record")


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._seen: dict[str, tuple[tuple[int, int, int], bytes]] = {}  # checked files by (inode, mtime, size)

    # -- files ---------------------------------------------------------------------------------
    def path(self, kind: str, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise StateError(f"invalid {kind} name {name!r}")
        return self.root / FOLDERS[kind] / f"{name}.json"

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The record, None if there is none, StateError if the file is broken."""
        return self._read(kind, str(self.path(kind, name)))

    def _read(self, kind: str, path: str) -> dict[str, Any] | None:
        # os.open/os.read rather than Path.read_text: `ps` reads every container record, and the
        # text layer costs more than the read itself
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            stat = os.fstat(fd)
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            seen = self._seen.get(path)
            if seen is not None and seen[0] == key:  # read and checked before, unchanged since
                return json.loads(seen[1])
            data = os.read(fd, stat.st_size + 1)  # one read: wrapdock replaces files, never grows them
            if len(data) > stat.st_size:  # something else is appending to it: read the rest
                data += b"".join(iter(lambda: os.read(fd, 65536), b""))
        except OSError as exc:
            raise StateError(f"{path}: cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)
        try:
            record = json.loads(data)
        except json.JSONDecodeError as exc:
            raise StateError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except UnicodeDecodeError:
            raise StateError(f"{path}: not valid JSON (not UTF-8 text)") from None
        check_shape(kind, record, path)
        self._seen[path] = (key, data)
        return record

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        path = self.path(kind, name)
        check_shape(kind, record, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary name of our own (O_EXCL), as tempfile.mkstemp would make, without its imports
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        os.fchmod(fd, 0o644)  # whatever the umask
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(_record_text(record))
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

    def names(self, kind: str) -> list[str]:
        """The names of the records of `kind` (their files' names), sorted, none of them read."""
        listing = self._listing(kind)
        return [] if listing is None else [name[:-5] for name in listing[1]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        listing = self._listing(kind)
        if listing is None:
            return []
        prefix, names = listing
        if kind in INDEXED:
            return self._through_cache(kind, _INDEX, prefix, names)
        records = []
        for name in names:
            record = self._read(kind, prefix + name)
            if record is not None:
                records.append(record)
        return records

    def summaries(self, kind: str) -> list[dict[str, Any]]:
        """What planning needs of every record of `kind` (SUMMARY_FIELDS[kind]; keys a record lacks
        are left out), for the same records in the same order as all(kind).

        run, rm, connect and disconnect read a few fields of every other container: at 1000 containers
        (bench/state_summaries.py) FOLDER.summary.json is ~470 KiB against the index's ~1 MiB, and
        parsing it ~1.8 ms against ~5 ms; the stat of each record file (~3 ms) both still pay. Same
        cache rules as the index (see _through_cache): a record whose file changed is read and
        checked from its file."""
        if kind not in SUMMARIZED:
            raise ValueError(f"no summaries are kept for {kind!r} records (SUMMARIZED: {sorted(SUMMARIZED)})")
        listing = self._listing(kind)
        if listing is None:
            return []
        return self._through_cache(kind, _CacheFile("summary", "summary", SUMMARY_FIELDS[kind]), *listing)

    def _listing(self, kind: str) -> tuple[str, list[str]] | None:
        """The folder of `kind` as a path prefix and its record files' names, sorted; None: no folder."""
        folder = self.root / FOLDERS[kind]
        try:
            names = sorted(entry.name for entry in os.scandir(folder)
                           if entry.name.endswith(".json") and not entry.name.startswith("."))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{folder}: cannot read: {exc.strerror}") from None
        return f"{folder}/", names  # strings, not Paths: `ps` reads n of them

    # -- the caches beside a folder: the index (whole records) and the summaries ------------------------
    def index_path(self, kind: str) -> Path:
        return self._cache_path(kind, _INDEX)

    def summary_path(self, kind: str) -> Path:
        return self._cache_path(kind, _CacheFile("summary", "summary", SUMMARY_FIELDS[kind]))

    def _cache_path(self, kind: str, cache: _CacheFile) -> Path:
        return self.root / f"{FOLDERS[kind]}.{cache.suffix}.json"

    def _through_cache(self, kind: str, cache: _CacheFile, prefix: str, names: list[str]) -> list[dict[str, Any]]:
        """What `cache` keeps of each record of `kind`, taken from the cache file while the record's file
        is the one the cache saw (same inode, mtime and size: a write replaces the file, so it gets a
        new inode), else read and checked from its file; then the cache is written again if it was out
        of date.

        The index: one stat per record instead of open, read, parse and check: at 1000 containers 182 M
        -> ~85 M instructions for each `ps`, start and rm. A cache of the record files, never the
        truth: a stale, missing or broken cache (or one made under another version of the schema, or
        of the summary's fields) costs the reads it would have saved, nothing else (doctor reads the
        files; gc rewrites the caches). Rewriting one (the index: ~1 MB at 1000) costs far more than
        reading a few changed records, so it is rewritten once INDEX_REWRITE_AFTER entries are out of
        date, not after every change (every start and rm changes one or two).
        """
        cached = self._load_cache(kind, cache)
        fresh: dict[str, Any] = {}
        values = []
        for name in names:
            path = prefix + name
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue  # removed since the listing
            except OSError as exc:
                raise StateError(f"{path}: cannot read: {exc.strerror}") from None
            stamp = [stat.st_ino, stat.st_mtime_ns, stat.st_size]
            entry = cached.get(name)
            if entry is not None and entry["stamp"] == stamp:
                value = entry[cache.value]
                fresh[name] = entry
            else:
                record = self._read(kind, path)
                if record is None:
                    continue
                value = cache.keep(record)
                seen = self._seen.get(path)  # the stamp of what _read checked (the file may have changed since)
                if seen is not None:
                    fresh[name] = {"stamp": list(seen[0]), cache.value: value}
            values.append(value)
        stale = sum(fresh[n] is not cached.get(n) for n in fresh) + len(cached.keys() - fresh.keys())
        if stale >= INDEX_REWRITE_AFTER or (stale and not cached):
            self._write_cache(kind, cache, fresh)
        return values

    def _load_cache(self, kind: str, cache: _CacheFile) -> dict[str, Any]:
        """name -> {"stamp": [inode, mtime_ns, size], VALUE: {...}}; {} if missing or not this cache's."""
        try:  # read each time (no copy kept in memory): the records handed out are the caller's to change
            with open(self._cache_path(kind, cache), "rb") as handle:
                content = json.loads(handle.read())
        except (OSError, ValueError):
            return {}
        if not (isinstance(content, dict) and isinstance(content.get("files"), dict)
                and all(content.get(key) == value for key, value in cache.header(kind).items())):
            return {}
        files = content["files"]
        if not all(isinstance(e, dict) and isinstance(e.get("stamp"), list) and isinstance(e.get(cache.value), dict)
                   for e in files.values()):
            return {}
        return files

    def _write_cache(self, kind: str, cache: _CacheFile, files: dict[str, Any]) -> None:
        """Atomically, as a record is written (temporary file, rename); a failure only costs speed."""
        path = self._cache_path(kind, cache)
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w") as handle:  # dumps, compact: the C encoder (dump and indent use Python's)
                handle.write(json.dumps({**cache.header(kind), "files": files}))
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)

    def rebuild_index(self, kind: str) -> None:
        """Write the index (and the summaries, if kept) from the record files alone (gc)."""
        self.index_path(kind).unlink(missing_ok=True)
        if kind in SUMMARIZED:
            self.summary_path(kind).unlink(missing_ok=True)
        self._seen.clear()
        self.all(kind)
        if kind in SUMMARIZED:
            self.summaries(kind)

    # -- locking and the audit log -----------------------------------------------------------------
    @contextmanager
    def locked(self, seconds: float | None = None) -> Iterator[None]:
        """Serialize every read-modify-write of the state across wrapdock processes. With `seconds`,
        wait at most that long, then raise LockTimeout (a CNI caller is told to try again instead of
        hanging)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"{self.root}: cannot use the state directory: {exc.strerror}") from None
        try:
            if seconds is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + seconds
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise LockTimeout(f"wrapdock's state is locked by another command for over "
                                              f"{seconds:.0f} s") from None
                        time.sleep(0.02)
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
