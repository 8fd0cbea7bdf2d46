"""-p as Docker takes it: the forms with and without a host port, and what is refused."""

from __future__ import annotations

import pytest

from wrapdock.errors import UsageError
from wrapdock.portspec import PortMapping, PortRequest, parse, parse_all


def req(spec: str, host_ip, host_ports, container: int, proto: str = "tcp") -> PortRequest:
    return PortRequest(spec, host_ip, host_ports, container, proto)


@pytest.mark.parametrize("spec,expected", [
    # a host port named: nothing to pick
    ("8080:80", [req("8080:80", None, (8080, 8080), 80)]),
    ("127.0.0.1:8080:80/udp", [req("127.0.0.1:8080:80/udp", "127.0.0.1", (8080, 8080), 80, "udp")]),
    ("0.0.0.0:8080:80", [req("0.0.0.0:8080:80", None, (8080, 8080), 80)]),  # Docker: every address
    ("9000-9001:80-81", [req("9000-9001:80-81", None, (9000, 9000), 80),
                         req("9000-9001:80-81", None, (9001, 9001), 81)]),
    # no host port: one is picked from the ephemeral range
    ("80", [req("80", None, None, 80)]),
    ("53/udp", [req("53/udp", None, None, 53, "udp")]),
    (":80", [req(":80", None, None, 80)]),
    ("127.0.0.1::80", [req("127.0.0.1::80", "127.0.0.1", None, 80)]),
    ("80-82", [req("80-82", None, None, 80), req("80-82", None, None, 81), req("80-82", None, None, 82)]),
    # a host range for one container port: any free port of it (Docker's form)
    ("8000-8010:80", [req("8000-8010:80", None, (8000, 8010), 80)]),
])
def test_forms(spec: str, expected: list[PortRequest]) -> None:
    assert parse(spec) == expected


def test_only_a_single_host_port_is_fixed() -> None:
    assert parse("8080:80")[0].fixed == PortMapping(None, 8080, 80, "tcp")
    assert parse("80")[0].fixed is None
    assert parse("8000-8010:80")[0].fixed is None


@pytest.mark.parametrize("spec,message", [
    ("0:80", "ports go from 1 to 65535"),
    ("0", "ports go from 1 to 65535"),
    ("70000", "ports go from 1 to 65535"),
    ("82-80", "ranges low-high"),
    ("a:b", "is not a port or a range of ports"),
    ("http", "'http' is not a port"),
    ("8080:", "no container port"),
    ("127.0.0.1:8080:", "no container port"),
    ("1.2.3.4:1:2:3", "expected [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT"),
    ("host::80", "'host' is not an IPv4 address"),
    ("8000-8001:80-82", "the two ranges differ in length"),
    ("8080:80-81", "the two ranges differ in length"),
    ("80/sctp", "the protocol must be tcp or udp"),
])
def test_refused(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(spec)
    assert message in caught.value.message


def test_a_host_port_given_twice_is_refused_but_ports_to_pick_are_not() -> None:
    with pytest.raises(UsageError, match="host port 8080/tcp is given twice"):
        parse_all(("8080:80", "127.0.0.1:8080:81"))
    assert len(parse_all(("8080:80", "8080:80/udp", "80", "80"))) == 4  # wrapdock keeps the picks apart
