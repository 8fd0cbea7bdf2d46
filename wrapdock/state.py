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
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from wrapdock import resources
from wrapdock.errors import StateError

DEFAULT_STATE_DIR = Path("/var/run/wrapdock")
FOLDERS = {"network": "networks", "ipam": "ipam", "container": "containers", "image": "images"}
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


def unsupported_keywords(schema: Any) -> list[str]:
    """Keywords of this schema (at any depth) that shape_errors does not interpret."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        found.update(node.keys() - SUPPORTED_KEYWORDS)
        for key in ("properties", "$defs"):
            for sub in node.get(key, {}).values():
                walk(sub)
        for key in ("items", "additionalProperties", "propertyNames"):
            walk(node.get(key))

    walk(schema)
    return sorted(found)


# -- checking: the schema files, interpreted without importing jsonschema ---------------------------
# Every read and every write checks its record against state/KIND.schema.json. Importing jsonschema
# costs ~100 ms, more than a whole `ps`, so records are checked by this small interpreter of the
# keywords the state schemas use (SUPPORTED_KEYWORDS; a schema using any other is refused).
# jsonschema stays the reference: tests/unit/test_state_shape.py holds both to the same verdicts on
# hundreds of broken records, and `wrapdock doctor` re-checks every state file with jsonschema.
SUPPORTED_KEYWORDS = frozenset({
    "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "type", "const", "enum", "pattern",
    "minLength", "maxLength", "format", "minimum", "maximum", "exclusiveMinimum", "minItems", "items", "required",
    "properties", "additionalProperties", "propertyNames"})
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None), "integer": int,
    "number": (int, float)}
Check = Callable[[Any, str, list[str]], None]  # (value, its path, errors to append to)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def compile_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Check:
    """A checker for `schema`, built once: `ps` checks every container record, so each record pays
    only for the keywords its schema nodes have, not for looking all of them up."""
    root = root if root is not None else schema
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    checks: list[Check] = []
    final: list[Check] = []  # type, const and enum: the first failure is the only error reported
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        wanted = " or ".join(map(repr, names))
        python_types = tuple({t for n in names for t in _as_tuple(_TYPES[n])})
        bool_is_wrong = bool not in python_types  # JSON: true is not a number, though Python says so

        def check_type(value: Any, path: str, errors: list[str]) -> None:
            if not isinstance(value, python_types) or (bool_is_wrong and value.__class__ is bool):
                errors.append(f"{path}: {value!r} is not of type {wanted}")
        final.append(check_type)
    if "const" in schema:
        const = schema["const"]

        def check_const(value: Any, path: str, errors: list[str]) -> None:
            if value != const:
                errors.append(f"{path}: {value!r} was expected to be {const!r}")
        final.append(check_const)
    if "enum" in schema:
        enum = schema["enum"]

        def check_enum(value: Any, path: str, errors: list[str]) -> None:
            if value not in enum:
                errors.append(f"{path}: {value!r} is not one of {enum!r}")
        final.append(check_enum)
    checks += _string_checks(schema) + _number_checks(schema) + _array_checks(schema, root)
    checks += _object_checks(schema, root)

    if not final:
        return _all_of(checks)
    if not checks and len(final) == 1:
        return final[0]

    def check(value: Any, path: str, errors: list[str]) -> None:
        before = len(errors)
        for first in final:
            first(value, path, errors)
            if len(errors) > before:
                return
        for one in checks:
            one(value, path, errors)
    return check


def _all_of(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    def check(value: Any, path: str, errors: list[str]) -> None:
        for one in checks:
            one(value, path, errors)
    return check


def _string_checks(schema: dict[str, Any]) -> list[Check]:
    keys = {"pattern", "minLength", "maxLength", "format"} & schema.keys()
    if not keys:
        return []
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    ipv4 = schema.get("format") == "ipv4"

    def check(value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, str):
            return
        if pattern is not None and not pattern.search(value):
            errors.append(f"{path}: {value!r} does not match {pattern.pattern!r}")
        if len(value) < shortest or (longest is not None and len(value) > longest):
            errors.append(f"{path}: {value!r} has the wrong length")
        if ipv4:
            try:
                IPv4Address(value)
            except ValueError:
                errors.append(f"{path}: {value!r} is not a 'ipv4'")
    return [check]


def _number_checks(schema: dict[str, Any]) -> list[Check]:
    if not {"minimum", "maximum", "exclusiveMinimum"} & schema.keys():
        return []
    low, high, above = schema.get("minimum"), schema.get("maximum"), schema.get("exclusiveMinimum")

    def check(value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        if (low is not None and value < low) or (high is not None and value > high):
            errors.append(f"{path}: {value!r} is out of range")
        if above is not None and value <= above:
            errors.append(f"{path}: {value!r} is out of range")
    return [check]


def _array_checks(schema: dict[str, Any], root: dict[str, Any]) -> list[Check]:
    if not {"minItems", "items"} & schema.keys():
        return []
    fewest = schema.get("minItems", 0)
    item_check = compile_schema(schema["items"], root) if "items" in schema else None

    def check(value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, list):
            return
        if len(value) < fewest:
            errors.append(f"{path}: too few items")
        if item_check is not None:
            for i, item in enumerate(value):
                item_check(item, f"{path}[{i}]", errors)
    return [check]


def _object_checks(schema: dict[str, Any], root: dict[str, Any]) -> list[Check]:
    if not {"required", "properties", "additionalProperties", "propertyNames"} & schema.keys():
        return []
    required = schema.get("required", [])
    properties = {key: compile_schema(sub, root) for key, sub in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    extra_check = compile_schema(extra, root) if isinstance(extra, dict) else None
    name_check = compile_schema(schema["propertyNames"], root) if "propertyNames" in schema else None

    def check(value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, dict):
            return
        errors += [f"{path}: {key!r} is a required property" for key in required if key not in value]
        for key, item in value.items():
            if name_check is not None:
                name_check(key, f"{path}.{key}", errors)
            known = properties.get(key)
            if known is not None:
                known(item, f"{path}.{key}", errors)
            elif extra is False:
                errors.append(f"{path}: additional property {key!r} is not allowed")
            elif extra_check is not None:
                extra_check(item, f"{path}.{key}", errors)
    return [check]


def shape_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Why `value` does not match `schema` (the subset of JSON Schema the state files use)."""
    errors: list[str] = []
    compile_schema(schema)(value, "$", errors)
    return errors


@cache
def _checker(kind: str) -> Check:
    return compile_schema(_schema(kind))


def check_shape(kind: str, record: Any, where: str) -> None:
    errors: list[str] = []
    _checker(kind)(record, "$", errors)
    if errors:
        raise StateError(f"{where}: {errors[0]}")


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._seen: dict[Path, tuple[tuple[int, int, int], bytes]] = {}  # checked files by (inode, mtime, size)

    # -- files ---------------------------------------------------------------------------------
    def path(self, kind: str, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise StateError(f"invalid {kind} name {name!r}")
        return self.root / FOLDERS[kind] / f"{name}.json"

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The record, None if there is none, StateError if the file is broken."""
        return self._read(kind, self.path(kind, name))

    def _read(self, kind: str, path: Path) -> dict[str, Any] | None:
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
            chunks = []
            while chunk := os.read(fd, max(stat.st_size, 65536)):
                chunks.append(chunk)
            data = b"".join(chunks)
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
        check_shape(kind, record, str(path))
        self._seen[path] = (key, data)
        return record

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        path = self.path(kind, name)
        check_shape(kind, record, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # only writes need it (and its imports): not `ps`

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
        try:
            names = sorted(entry.name for entry in os.scandir(folder)
                           if entry.name.endswith(".json") and not entry.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"{folder}: cannot read: {exc.strerror}") from None
        records = []
        for name in names:
            record = self._read(kind, folder / name)
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
