"""Check values against the part of JSON Schema that wrapdock's state files use, cheaply.

Every read and every write of a state record is checked against its schema (state/*.schema.json).
`ps` reads every container record, and importing jsonschema alone costs more than a whole `ps`, so
a schema is compiled here, once, into small functions that know only the keywords its nodes have.
A schema that uses any keyword outside SUPPORTED_KEYWORDS is refused rather than half-checked.
jsonschema stays the reference: tests/unit/test_state_shape.py holds both to the same verdicts, and
`wrapdock doctor` re-checks every state file with jsonschema.

Two translations of one schema. `predicate_source` writes Python source with one function that only
answers "does it match?" (one `if` per condition, no call per node: the fast path for the valid
records every command reads); wrapdock/statecheck.py is that source for the state schemas, generated
once by `python -m wrapdock.schemacheck` so that a command imports it compiled. `compile_schema`
builds small functions that explain a failure: where a value sits is passed down as nested pairs
((("$", "endpoints"), 0), "address") and spelled out ($.endpoints[0].address) only for an error.
tests/unit/test_state_shape.py holds both, and jsonschema, to the same verdicts.
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


def compile_predicate(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """The schema as one generated function: True when the value matches (same verdict as compile_schema)."""
    namespace: dict[str, Any] = {}
    exec(compile(predicate_source({"matches": schema}), "<schema predicate>", "exec"), namespace)
    return namespace["matches"]


def predicate_source(schemas: dict[str, dict[str, Any]], header: str = "", preamble: tuple[str, ...] = ()) -> str:
    """Python source of a module with one predicate per schema (`name(value) -> bool`): one
    `if ...: return False` per condition, a loop per array, no call per node."""
    source = _PredicateSource()
    for name, schema in schemas.items():
        source.function(name, schema)
    constants = [f"{name} = {expression}" for expression, name in source.constants.items()]
    return "\n".join([*([header] if header else []), "import re", "", *preamble, "NoneType = type(None)",
                      "MISSING = object()", *constants, *source.lines]) + "\n"


_TYPE_SOURCE = {dict: "dict", list: "list", str: "str", bool: "bool", int: "int", float: "float",
                type(None): "NoneType"}


class _PredicateSource:
    def __init__(self) -> None:
        self.constants: dict[str, str] = {}  # source expression -> its module-level name
        self.lines: list[str] = []
        self.root: dict[str, Any] = {}
        self.variables = 0

    def function(self, name: str, schema: dict[str, Any]) -> None:
        self.root, self.variables = schema, 0
        self.lines += ["", "", f"def {name}(v0):"]
        self._emit(schema, "v0", 1)
        self.lines.append("    return True")

    def _constant(self, expression: str) -> str:
        return self.constants.setdefault(expression, f"K{len(self.constants)}")

    def _variable(self) -> str:
        self.variables += 1
        return f"v{self.variables}"

    def _fail_if(self, condition: str, indent: int) -> None:
        self.lines.append(f"{'    ' * indent}if {condition}: return False")

    def _block(self, header: str, indent: int, body: Callable[[], None]) -> None:
        """`header:` and its body, or nothing when the body checks nothing."""
        self.lines.append(f"{'    ' * indent}{header}:")
        before = len(self.lines)
        body()
        if len(self.lines) == before:
            self.lines.pop()

    def _emit(self, schema: dict[str, Any], var: str, indent: int) -> None:
        schema = _resolve(schema, self.root)
        exact = None  # the one Python type the value is known to have after the type check
        if "type" in schema:
            python_types, bool_is_wrong, _ = _type_spec(schema)
            names = sorted(map(_TYPE_SOURCE.__getitem__, python_types))
            types = names[0] if len(names) == 1 else self._constant(f"({', '.join(names)})")
            # a bool is an int to isinstance, and to nothing else here
            wrong_bool = f" or {var}.__class__ is bool" if bool_is_wrong and int in python_types else ""
            self._fail_if(f"not isinstance({var}, {types}){wrong_bool}", indent)
            exact = names[0] if len(names) == 1 else None
        if "const" in schema:
            self._fail_if(f"{var} != {schema['const']!r}", indent)
        if "enum" in schema:
            self._fail_if(f"{var} not in {self._constant(repr(schema['enum']))}", indent)

        def string(at: int) -> None:
            if "pattern" in schema:
                search = self._constant(f"re.compile({schema['pattern']!r}).search")
                self._fail_if(f"not {search}({var})", at)
            if schema.get("minLength", 0):
                self._fail_if(f"len({var}) < {int(schema['minLength'])}", at)
            if "maxLength" in schema:
                self._fail_if(f"len({var}) > {int(schema['maxLength'])}", at)
            if schema.get("format") == "ipv4":
                self._fail_if(f"not {self._constant(f're.compile({_IPV4.pattern!r}).fullmatch')}({var})", at)

        def number(at: int) -> None:
            for keyword, operator in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<=")):
                if keyword in schema:
                    self._fail_if(f"{var} {operator} {schema[keyword]!r}", at)

        def array(at: int) -> None:
            if schema.get("minItems", 0):
                self._fail_if(f"len({var}) < {int(schema['minItems'])}", at)
            if "items" in schema:
                item = self._variable()
                self._block(f"for {item} in {var}", at, lambda: self._emit(schema["items"], item, at + 1))

        for python_type, guard, body in (
                ("str", f"isinstance({var}, str)", string),
                ("int", f"isinstance({var}, int | float) and not isinstance({var}, bool)", number),
                ("list", f"isinstance({var}, list)", array),
                ("dict", f"isinstance({var}, dict)", lambda at: self._emit_object(schema, var, at))):
            if exact == python_type:  # checked above: no need to ask again
                body(indent)
            elif exact is None:
                self._block(f"if {guard}", indent, lambda body=body: body(indent + 1))

    def _emit_object(self, schema: dict[str, Any], var: str, indent: int) -> None:
        properties = schema.get("properties", {})
        known = self._constant(f"frozenset({sorted(properties)!r})") if properties else "()"
        extra = schema.get("additionalProperties", True)
        if schema.get("required"):
            required = self._constant(f"frozenset({sorted(schema['required'])!r})")
            self._fail_if(f"not {var}.keys() >= {required}", indent)
        if extra is False:
            self._fail_if(f"not {var}.keys() <= {known}", indent)
        if "propertyNames" in schema:
            key = self._variable()
            self._block(f"for {key} in {var}", indent, lambda: self._emit(schema["propertyNames"], key, indent + 1))
        for name, sub in properties.items():
            value = self._variable()
            self.lines.append(f"{'    ' * indent}{value} = {var}.get({name!r}, MISSING)")
            self._block(f"if {value} is not MISSING", indent,
                        lambda sub=sub, value=value: self._emit(sub, value, indent + 1))
            if self.lines[-1].endswith(f"{value} = {var}.get({name!r}, MISSING)"):
                self.lines.pop()  # nothing to check about it
        if isinstance(extra, dict):
            value = self._variable()
            if properties:
                key = self._variable()
                self._block(f"for {key}, {value} in {var}.items()", indent, lambda: self._block(
                    f"if {key} not in {known}", indent + 1, lambda: self._emit(extra, value, indent + 2)))
            else:
                self._block(f"for {value} in {var}.values()", indent, lambda: self._emit(extra, value, indent + 1))


def statecheck_source() -> str:
    """wrapdock/statecheck.py: the predicates of the state schemas, generated once, so that a command
    imports them compiled (from __pycache__) instead of compiling them (~9 ms) every time it starts."""
    import json
    import zlib

    from wrapdock import resources
    from wrapdock.state import FOLDERS

    texts = {kind: resources.schema_text(kind) for kind in FOLDERS}
    schemas = {kind: json.loads(text) for kind, text in texts.items()}
    for kind, schema in schemas.items():
        unknown = unsupported_keywords(schema)
        if unknown:
            raise SystemExit(f"state/{kind}.schema.json uses keywords the checker lacks: {unknown}")
    header = ['"""Generated by `python -m wrapdock.schemacheck` from state/*.schema.json: do not edit.',
              "",
              "One predicate per kind of state record, True when the record matches its schema. wrapdock.state",
              "uses one only while its schema's CRC-32 is the one below (else it compiles the schema itself),",
              'and tests/unit/test_state_shape.py fails until this file is generated again."""', ""]
    crcs = ", ".join(f"{kind!r}: {zlib.crc32(text.encode())}" for kind, text in texts.items())
    return predicate_source(schemas, "\n".join(header), (f"SCHEMA_CRC32 = {{{crcs}}}", ""))


if __name__ == "__main__":
    from pathlib import Path

    Path(__file__).with_name("statecheck.py").write_text(statecheck_source())
