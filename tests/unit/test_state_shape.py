"""State records are checked with wrapdock.schemacheck; jsonschema is the reference: same verdicts.

Both of schemacheck's compilations are held to them: the generated predicate (the fast path) and
the explaining checker (the messages).
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from wrapdock import resources
from wrapdock.errors import StateError
from wrapdock.schemacheck import (
    SUPPORTED_KEYWORDS,
    compile_predicate,
    shape_errors,
    statecheck_source,
    unsupported_keywords,
)
from wrapdock.state import StateStore

NETWORK = {"version": 1, "name": "web", "id": "a" * 64, "driver": "bridge", "subnet": "10.20.0.0/24",
           "gateway": "10.20.0.1", "bridge": "web", "mtu": None, "internal": False, "isolated": False, "lab": None,
           "created": "2026-01-01T00:00:00+00:00"}
IPAM = {"version": 1, "network": "web", "subnet": "10.20.0.0/24", "gateway": "10.20.0.1", "last_reserved": "10.20.0.2",
        "allocations": {"10.20.0.2": {"owner": "b" * 64, "time": "t"}}}
CONTAINER = {
    "version": 1, "id": "c" * 64, "name": "bird", "image": "busybox", "command": ["top"], "env": ["bird=123"],
    "hostname": "bird", "workdir": "/", "volumes": [{"source": "/srv", "target": "/www", "readonly": True}],
    "limits": {"memory": 67108864, "cpus": 0.5, "cpu_shares": None, "cpuset_cpus": None, "pids": 64},
    "caps": ["chown"], "privileged": False, "netns": "bird", "created": "t", "detach": True, "auto_remove": False,
    "tty": False, "phase": "ready", "owner_pid": None, "net_mode": "bridge",
    "endpoints": [{"network": "web", "ifname": "eth0", "host_ifname": "wdcccccccccc0", "address": "10.20.0.2"}],
    "ports": [{"host_ip": None, "host_port": 8080, "container_port": 80, "proto": "tcp"}], "dns": [],
    "add_hosts": ["db:10.9.9.9"], "lab": None}
IMAGE = {"version": 1, "name": "busybox", "id": "d" * 64, "created": "t", "source": "busybox-static /bin/busybox"}
CNI = {"version": 1, "network": "web", "cni_network": "web", "container_id": "e" * 64, "ifname": "eth0",
       "netns": "/run/netns/netns-1", "host_ifname": "wdc0123456789ab", "address": "10.20.0.3",
       "mac": "02:42:0a:14:00:03", "primary": True,
       "ports": [{"host_ip": None, "host_port": 8080, "container_port": 80, "proto": "tcp"}], "created": "t"}
HOSTS = {"version": 1, "network": "web",
         "files": [{"networks": ["web"], "add_hosts": ["db:10.9.9.9"]}, {"own": "c" * 64}]}
LEASE = {"version": 1, "network": "web", "address": "10.20.0.2", "owner": "b" * 64, "time": "t"}
VALID = {"network": NETWORK, "ipam": IPAM, "container": CONTAINER, "image": IMAGE, "cni": CNI, "hosts": HOSTS,
         "lease": LEASE}


def mutations(record: dict) -> list[tuple[str, dict]]:
    """Records broken in the ways hand edits break them: one change each, at every level."""
    out = []

    def walk(value, path):
        if isinstance(value, dict):
            for key in list(value):
                yield from walk(value[key], [*path, key])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, [*path, i])
        yield path, value

    for path, value in list(walk(record, [])):
        if not path:
            continue
        for label, replacement in (("none", None), ("str", "x y/z"), ("int", -5), ("list", []), ("dict", {}),
                                   ("bool", True), ("ip", "999.1.1.1")):
            if replacement == value:
                continue
            broken = copy.deepcopy(record)
            target = broken
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = replacement
            out.append((f"{'.'.join(map(str, path))}={label}", broken))
        broken = copy.deepcopy(record)
        target = broken
        for part in path[:-1]:
            target = target[part]
        if isinstance(target, dict):
            del target[path[-1]]
            out.append((f"{'.'.join(map(str, path))}=deleted", broken))
    extra = copy.deepcopy(record)
    extra["surprise"] = 1
    out.append(("extra key", extra))
    return out


@pytest.mark.parametrize("kind", sorted(VALID))
def test_reads_and_writes_agree(kind: str) -> None:
    schema = json.loads(resources.schema_text(kind))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    from wrapdock import statecheck

    matches = getattr(statecheck, kind)
    assert shape_errors(schema, VALID[kind]) == []
    assert matches(VALID[kind])
    assert validator.is_valid(VALID[kind])
    cases = mutations(VALID[kind])
    assert len(cases) > 20
    disagreements = [label for label, record in cases
                     if bool(shape_errors(schema, record)) == validator.is_valid(record)]
    assert disagreements == []
    fast_disagreements = [label for label, record in cases if matches(record) != validator.is_valid(record)]
    assert fast_disagreements == []


@pytest.mark.parametrize("kind", sorted(VALID))
def test_state_schemas_use_only_keywords_the_checker_knows(kind: str) -> None:
    schema = json.loads(resources.schema_text(kind))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert unsupported_keywords(schema) == []


def test_a_keyword_the_checker_lacks_is_found_at_any_depth() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"oneOf": [{"type": "string"}]}}},
              "$defs": {"b": {"minProperties": 1}}}
    assert unsupported_keywords(schema) == ["minProperties", "oneOf"]
    assert "oneOf" not in SUPPORTED_KEYWORDS


def test_writes_refuse_what_jsonschema_refuses(tmp_path) -> None:
    store = StateStore(tmp_path)
    schema = json.loads(resources.schema_text("container"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    refused = 0
    for _label, record in mutations(CONTAINER):
        if validator.is_valid(record):
            store.put("container", "c" * 64, record)
            continue
        with pytest.raises(StateError):
            store.put("container", "c" * 64, record)
        refused += 1
    assert refused > 20


@pytest.mark.parametrize("text", [
    "0.0.0.0", "10.20.0.2", "255.255.255.255", "1.2.3.04", "01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5",
    " 1.2.3.4", "1.2.3.4\n", "1.2.3.-4", "1..3.4", "\u0661.\u0662.\u0663.\u0664", "1.2.3.4/24", "a.b.c.d", ""])
def test_the_ipv4_format_accepts_what_ipaddress_accepts(text: str) -> None:
    from ipaddress import IPv4Address

    try:
        IPv4Address(text)
        expected: list[str] = []
    except ValueError:
        expected = [f"$: {text!r} is not a 'ipv4'"]
    assert shape_errors({"type": "string", "format": "ipv4"}, text) == expected
    assert compile_predicate({"type": "string", "format": "ipv4"})(text) == (not expected)


@pytest.mark.parametrize(("schema", "value", "verdict"), [
    ({"type": "integer"}, True, False), ({"type": "number", "minimum": 1}, 0.5, False),
    ({"type": "number", "exclusiveMinimum": 0}, 0, False), ({"type": ["string", "null"], "maxLength": 2}, None, True),
    ({"type": "array", "minItems": 2, "items": {"type": "integer"}}, [1], False),
    ({"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}, {"A": 1}, False),
    ({"type": "object", "additionalProperties": {"type": "string"}}, {"a": "b", "c": 1}, False),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/s"}}, "$defs": {"s": {"enum": ["x"]}}},
     {"a": "y"}, False),
    ({"const": 1}, 1, True), ({"enum": [1, 2]}, 3, False)])
def test_the_predicate_covers_every_keyword(schema: dict, value: object, verdict: bool) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    assert validator.is_valid(value) == verdict
    assert compile_predicate(schema)(value) == verdict
    assert (not shape_errors(schema, value)) == verdict


def test_statecheck_is_generated_from_the_schemas_as_they_are() -> None:
    """wrapdock/statecheck.py is what `python -m wrapdock.schemacheck` makes of state/*.schema.json now."""
    from pathlib import Path

    from wrapdock import state, statecheck

    assert Path(statecheck.__file__).read_text() == statecheck_source(), "run: python -m wrapdock.schemacheck"
    for kind in state.FOLDERS:
        assert state._matcher(kind) is getattr(statecheck, kind)
        assert state._matcher(kind)(VALID[kind])


def test_a_record_the_predicate_refuses_is_reported_with_where_it_breaks(tmp_path) -> None:
    broken = copy.deepcopy(CONTAINER)
    broken["endpoints"][0]["ifname"] = "wlan0"
    with pytest.raises(StateError, match=r"\$\.endpoints\[0\]\.ifname: 'wlan0' does not match"):
        StateStore(tmp_path).put("container", "c" * 64, broken)


def test_errors_name_where_the_value_sits() -> None:
    schema = json.loads(resources.schema_text("container"))
    broken = copy.deepcopy(CONTAINER)
    broken["endpoints"][0]["address"] = "10.20.0"
    broken["limits"]["pids"] = "64"
    broken["ports"][0]["proto"] = "icmp"
    assert shape_errors(schema, broken) == [
        "$.limits.pids: '64' is not of type 'integer' or 'null'",
        "$.endpoints[0].address: '10.20.0' is not a 'ipv4'",
        "$.ports[0].proto: 'icmp' is not one of ['tcp', 'udp']"]
