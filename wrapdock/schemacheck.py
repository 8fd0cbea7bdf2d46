"""Check values against the part of JSON Schema that wrapdock's state files use, cheaply.

Every read and every write of a state record is checked against its schema (state/*.schema.json).
`ps` reads every container record, and importing jsonschema alone costs more than a whole `ps`, so
a schema is compiled here, once, into small functions that know only the keywords its nodes have.
A schema that uses any keyword outside SUPPORTED_KEYWORDS is refused rather than half-checked.
jsonschema stays the reference: tests/unit/test_state_shape.py holds both to the same verdicts, and
`wrapdock doctor` re-checks every state file with jsonschema.

Where a value sits is passed down as nested pairs ((("$", "endpoints"), 0), "address") and spelled
out ($.endpoints[0].address) only for an error: a valid record costs no string building.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

SUPPORTED_KEYWORDS = frozenset({
    "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "type", "const", "enum", "pattern",
    "minLength", "maxLength", "format", "minimum", "maximum", "exclusiveMinimum", "minItems", "items", "required",
    "properties", "additionalProperties", "propertyNames"})
_ANNOTATIONS = frozenset({"$comment", "title", "description"})
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float)}
# an IPv4 address as ipaddress accepts it (and jsonschema's "ipv4" format): four decimal octets, no
# leading zeros
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")

Where = Any  # "$", or (where, property name) / (where, item index)
Check = Callable[[Any, Where, list[str]], None]  # (value, where it sits, errors to append to)


def where_text(where: Where) -> str:
    parts: list[str] = []
    while isinstance(where, tuple):
        where, part = where
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return where + "".join(reversed(parts))


def unsupported_keywords(schema: Any) -> list[str]:
    """Keywords of this schema (at any depth) that compile_schema does not interpret."""
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


def shape_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Why `value` does not match `schema`, one line each (empty: it matches)."""
    errors: list[str] = []
    compile_schema(schema)(value, "$", errors)
    return errors


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _type_spec(schema: dict[str, Any]) -> tuple[tuple[type, ...], bool, str]:
    """(the Python types, whether a bool must be refused, the JSON type names for the message)."""
    names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    python_types = tuple({t for name in names for t in _TYPES[name]})
    # JSON's true is not a number, though Python's bool is an int
    return python_types, bool not in python_types, " or ".join(map(repr, names))


def compile_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Check:
    """The schema as one function; type, const and enum failures are the only error of their value."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    first: list[Check] = []
    if "type" in schema:
        python_types, bool_is_wrong, wanted = _type_spec(schema)

        def check_type(value: Any, where: Where, errors: list[str]) -> None:
            if not isinstance(value, python_types) or (bool_is_wrong and value.__class__ is bool):
                errors.append(f"{where_text(where)}: {value!r} is not of type {wanted}")
        first.append(check_type)
    if "const" in schema:
        const = schema["const"]

        def check_const(value: Any, where: Where, errors: list[str]) -> None:
            if value != const:
                errors.append(f"{where_text(where)}: {value!r} was expected to be {const!r}")
        first.append(check_const)
    if "enum" in schema:
        enum = schema["enum"]

        def check_enum(value: Any, where: Where, errors: list[str]) -> None:
            if value not in enum:
                errors.append(f"{where_text(where)}: {value!r} is not one of {enum!r}")
        first.append(check_enum)
    rest = [*_string_checks(schema), *_number_checks(schema), *_array_checks(schema, root),
            *_object_checks(schema, root)]
    if not first:
        return _all_of(rest)
    if not rest and len(first) == 1:
        return first[0]

    def check(value: Any, where: Where, errors: list[str]) -> None:
        before = len(errors)
        for one in first:
            one(value, where, errors)
            if len(errors) > before:
                return
        for one in rest:
            one(value, where, errors)
    return check


def _all_of(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    def check(value: Any, where: Where, errors: list[str]) -> None:
        for one in checks:
            one(value, where, errors)
    return check


def _string_checks(schema: dict[str, Any]) -> list[Check]:
    if not {"pattern", "minLength", "maxLength", "format"} & schema.keys():
        return []
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    ipv4 = schema.get("format") == "ipv4"

    def check(value: Any, where: Where, errors: list[str]) -> None:
        if not isinstance(value, str):
            return
        if pattern is not None and not pattern.search(value):
            errors.append(f"{where_text(where)}: {value!r} does not match {pattern.pattern!r}")
        if len(value) < shortest or (longest is not None and len(value) > longest):
            errors.append(f"{where_text(where)}: {value!r} has the wrong length")
        if ipv4 and not _IPV4.fullmatch(value):
            errors.append(f"{where_text(where)}: {value!r} is not a 'ipv4'")
    return [check]


def _number_checks(schema: dict[str, Any]) -> list[Check]:
    if not {"minimum", "maximum", "exclusiveMinimum"} & schema.keys():
        return []
    low, high, above = schema.get("minimum"), schema.get("maximum"), schema.get("exclusiveMinimum")

    def check(value: Any, where: Where, errors: list[str]) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        if (low is not None and value < low) or (high is not None and value > high):
            errors.append(f"{where_text(where)}: {value!r} is out of range")
        if above is not None and value <= above:
            errors.append(f"{where_text(where)}: {value!r} is out of range")
    return [check]


def _array_checks(schema: dict[str, Any], root: dict[str, Any]) -> list[Check]:
    if not {"minItems", "items"} & schema.keys():
        return []
    fewest = schema.get("minItems", 0)
    item_check = compile_schema(schema["items"], root) if "items" in schema else None

    def check(value: Any, where: Where, errors: list[str]) -> None:
        if not isinstance(value, list):
            return
        if len(value) < fewest:
            errors.append(f"{where_text(where)}: too few items")
        if item_check is not None:
            for i, item in enumerate(value):
                item_check(item, (where, i), errors)
    return [check]


def _object_checks(schema: dict[str, Any], root: dict[str, Any]) -> list[Check]:
    if not {"required", "properties", "additionalProperties", "propertyNames"} & schema.keys():
        return []
    required = schema.get("required", [])
    # properties that only name a type (most of them) are checked inline, without a call each
    plain: dict[str, tuple[tuple[type, ...], bool, str]] = {}
    nested: dict[str, Check] = {}
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if "type" in sub and sub.keys() - _ANNOTATIONS == {"type"}:
            plain[key] = _type_spec(sub)
        else:
            nested[key] = compile_schema(sub, root)
    extra = schema.get("additionalProperties", True)
    extra_check = compile_schema(extra, root) if isinstance(extra, dict) else None
    name_check = compile_schema(schema["propertyNames"], root) if "propertyNames" in schema else None

    def check(value: Any, where: Where, errors: list[str]) -> None:
        if not isinstance(value, dict):
            return
        for key in required:
            if key not in value:
                errors.append(f"{where_text(where)}: {key!r} is a required property")
        for key, item in value.items():
            if name_check is not None:
                name_check(key, (where, key), errors)
            spec = plain.get(key)
            if spec is not None:
                python_types, bool_is_wrong, wanted = spec
                if not isinstance(item, python_types) or (bool_is_wrong and item.__class__ is bool):
                    errors.append(f"{where_text((where, key))}: {item!r} is not of type {wanted}")
                continue
            known = nested.get(key)
            if known is not None:
                known(item, (where, key), errors)
            elif extra is False:
                errors.append(f"{where_text(where)}: additional property {key!r} is not allowed")
            elif extra_check is not None:
                extra_check(item, (where, key), errors)
    return [check]
