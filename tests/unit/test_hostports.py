"""Picking free host ports: the ephemeral range, other containers' mappings, the host's sockets (fake
/proc contents), and a clear error when none is left."""

from __future__ import annotations

import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from wrapdock import hostports
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.hostports import HostPorts, Socket
from wrapdock.portspec import PortMapping, parse_all

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the /proc/net samples are a little-endian host's")

TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
TCP6_HEADER = ("  sl  local_address                         remote_address                        st tx_queue "
               "rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
TAIL = " 00000000:00000000 00:00000000 00000000     0        0 1567 1 000000003a1a5f1f 100 0 0 10 0\n"


def line(n: int, local: str, remote: str, state: str) -> str:
    return f"   {n}: {local} {remote} {state}{TAIL}"


def fake_proc(tmp_path: Path, port_range: str = "40000\t40009", reserved: str = "", tcp: str = "", tcp6: str = "",
              udp: str = "", udp6: str = "") -> Path:
    proc = tmp_path / "proc"
    (proc / "sys/net/ipv4").mkdir(parents=True)
    (proc / "net").mkdir()
    (proc / hostports.RANGE_FILE).write_text(port_range + "\n")
    (proc / hostports.RESERVED_FILE).write_text(reserved + "\n")
    for name, header, body in (("tcp", TCP_HEADER, tcp), ("tcp6", TCP6_HEADER, tcp6), ("udp", TCP_HEADER, udp),
                               ("udp6", TCP6_HEADER, udp6)):
        (proc / "net" / name).write_text(header + body)
    return proc


def test_reads_range_reserved_ports_listeners_and_bound_udp_sockets(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path, reserved="40001,40005-40006",
        tcp=(line(0, "00000000:9C40", "00000000:0000", "0A")     # 0.0.0.0:40000 listening
             + line(1, "0100007F:9C42", "00000000:0000", "0A")   # 127.0.0.1:40002 listening
             + line(2, "0100007F:9C43", "0100007F:0016", "01")), # 127.0.0.1:40003, a connection: not held
        # [::1]:40004 listening
        tcp6=line(0, "00000000000000000000000001000000:9C44", "00000000000000000000000000000000:0000", "0A"),
        udp=line(0, "0100007F:9C47", "00000000:0000", "07"),      # 127.0.0.1:40007, bound
        udp6=line(0, "0000000000000000FFFF00000100007F:9C48", "00000000000000000000000000000000:0000", "07"))
    host = hostports.read(proc)
    assert host.ephemeral == (40000, 40009)
    assert host.reserved == {40001, 40005, 40006}
    assert host.sockets == (Socket("tcp", ip_address("0.0.0.0"), 40000), Socket("tcp", ip_address("127.0.0.1"), 40002),
                            Socket("tcp", ip_address("::1"), 40004), Socket("udp", ip_address("127.0.0.1"), 40007),
                            Socket("udp", ip_address("::ffff:127.0.0.1"), 40008))
    # every address: the lowest port no socket holds and not reserved is 40003 (a connection holds none)
    assert hostports.choose(parse_all(("80",)), [], host) == [PortMapping(None, 40003, 80, "tcp")]
    # UDP: 40007 and 40008 are held (the latter by a v4-mapped IPv6 socket), the TCP listeners are not UDP
    picked = hostports.choose(parse_all(("53/udp", "54/udp", "55/udp", "56/udp", "57/udp")), [], host)
    assert [m.host_port for m in picked] == [40000, 40002, 40003, 40004, 40009]


def test_a_socket_on_another_address_does_not_hold_a_port_bound_to_one_address() -> None:
    host = HostPorts((40000, 40009), sockets=(Socket("tcp", ip_address("127.0.0.1"), 40000),
                                              Socket("tcp", ip_address("::"), 40001),
                                              Socket("tcp", ip_address("::ffff:10.0.0.1"), 40002)))
    assert [m.host_port for m in hostports.choose(parse_all(("10.0.0.1::80",)), [], host)] == [40000]
    assert [m.host_port for m in hostports.choose(parse_all(("127.0.0.1::80",)), [], host)] == [40002]
    assert [m.host_port for m in hostports.choose(parse_all(("80",)), [], host)] == [40003]


def test_skips_other_containers_ports_of_the_same_protocol_on_an_overlapping_address() -> None:
    host = HostPorts((40000, 40009))
    published = [PortMapping(None, 40000, 80, "tcp"), PortMapping("127.0.0.1", 40001, 80, "tcp"),
                 PortMapping("10.0.0.1", 40002, 80, "tcp"), PortMapping(None, 40003, 80, "udp")]
    assert [m.host_port for m in hostports.choose(parse_all(("80",)), published, host)] == [40003]
    assert [m.host_port for m in hostports.choose(parse_all(("127.0.0.1::80",)), published, host)] == [40002]
    assert [m.host_port for m in hostports.choose(parse_all(("80/udp",)), published, host)] == [40000]


def test_picks_distinct_ports_around_the_ones_named(tmp_path: Path) -> None:
    host = HostPorts((40000, 40009), reserved=frozenset({40002}))
    chosen = hostports.choose(parse_all(("80-82", "40001:8080", "9000-9001:90-91")), [], host)
    assert chosen == [PortMapping(None, 40000, 80), PortMapping(None, 40003, 81), PortMapping(None, 40004, 82),
                      PortMapping(None, 40001, 8080), PortMapping(None, 9000, 90), PortMapping(None, 9001, 91)]
    # a host range for one container port: its lowest free port (the range need not be ephemeral, and the
    # reserved ports, which only keep the kernel's own picks away, may be taken when named)
    ranged = hostports.choose(parse_all(("40002-40005:80",)), [PortMapping(None, 40003, 1)], host)
    assert ranged == [PortMapping(None, 40002, 80)]
    ranged = hostports.choose(parse_all(("40003-40005:80",)), [PortMapping(None, 40003, 1)], host)
    assert ranged == [PortMapping(None, 40004, 80)]


def test_no_free_port_left_is_a_clear_error() -> None:
    host = HostPorts((40000, 40001), sockets=(Socket("tcp", ip_address("0.0.0.0"), 40000),))
    with pytest.raises(UsageError) as caught:
        hostports.choose(parse_all(("80", "81")), [PortMapping(None, 5, 1)], host)
    assert caught.value.message == (
        "port mapping '81': no free host port for 81/tcp in the ephemeral range 40000-40001 "
        "(/proc/sys/net/ipv4/ip_local_port_range): each is published by a container or in use on this host")
    with pytest.raises(UsageError, match="no free host port for 80/tcp in 7000-7001"):
        hostports.choose(parse_all(("7000-7001:80",)), [PortMapping(None, 7000, 1), PortMapping(None, 7001, 2)], host)


def test_an_unreadable_proc_is_an_error_not_an_empty_host(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    (proc / "net" / "udp").unlink()
    with pytest.raises(EnvironmentProblem, match="cannot read which host ports are free"):
        hostports.read(proc)
    proc = fake_proc(tmp_path / "other", port_range="garbage")
    with pytest.raises(EnvironmentProblem, match="cannot read which host ports are free"):
        hostports.read(proc)


def test_reads_this_hosts_own_proc() -> None:
    host = hostports.read()
    low, high = host.ephemeral
    assert 1 <= low <= high <= 65535
