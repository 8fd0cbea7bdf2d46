"""Request validation (netspec, names) and parsing what the host has (hostinfo)."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Address, IPv4Network

import pytest

from wrapdock import hostinfo, names, netspec
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.model import Network
from wrapdock.netspec import HostPrefix, NetworkRequest, build_network
from wrapdock.runner import Result, Runner, Trail


def build(name: str = "web", subnet: str = "10.20.0.0/24", **kwargs) -> Network:
    return build_network(NetworkRequest(name=name, subnet=subnet, **kwargs))


# -- accepted forms ------------------------------------------------------------------------------
@pytest.mark.parametrize(("subnet", "gateway", "want_subnet", "want_gateway"), [
    ("162.16.0.1/24", None, "162.16.0.0/24", "162.16.0.1"),
    ("162.16.0.0/24", None, "162.16.0.0/24", "162.16.0.1"),
    ("162.16.0.77/24", None, "162.16.0.0/24", "162.16.0.77"),
    ("162.16.0.0/24", "162.16.0.254", "162.16.0.0/24", "162.16.0.254"),
    ("162.16.0.9/24", "162.16.0.9", "162.16.0.0/24", "162.16.0.9"),
    ("10.0.0.0/8", None, "10.0.0.0/8", "10.0.0.1"),
    ("192.168.1.4/30", None, "192.168.1.4/30", "192.168.1.5"),
])
def test_accepted_subnets(subnet: str, gateway: str | None, want_subnet: str, want_gateway: str) -> None:
    network = build(subnet=subnet, gateway=gateway)
    assert network.subnet == IPv4Network(want_subnet)
    assert network.gateway == IPv4Address(want_gateway)
    assert network.gateway_cidr == f"{want_gateway}/{network.subnet.prefixlen}"


def test_defaults_and_fresh_identity() -> None:
    one, two = build(), build()
    assert (one.driver, one.bridge, one.mtu, one.internal) == ("bridge", "web", None, False)
    assert re.fullmatch(r"[0-9a-f]{64}", one.id)
    assert one.id != two.id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", one.created)


def test_options_are_kept() -> None:
    network = build(name="a-very-long-network-name", bridge_name="br-long", mtu=1400, internal=True)
    assert (network.bridge, network.mtu, network.internal) == ("br-long", 1400, True)


def test_record_round_trip() -> None:
    from wrapdock import state

    network = build(mtu=9000)
    record = network.to_record()
    state.check_shape("network", record, "test")
    assert state.reference_errors("network", record) == []
    assert Network.from_record(json.loads(json.dumps(record))) == network


# -- refused forms --------------------------------------------------------------------------------
BAD_SUBNETS = [
    "10.0.0.0", "10.0.0.0/33", "300.1.1.1/24", "abc/24", "10.0.0.0/", "/24", "", "10.0.0.0/24/1",
    "10.0.0.0/-1", " 10.0.0.0/24; reboot", "fd00::/64", "::1/128", "2001:db8::1/64",
    "10.0.0.0/7", "10.0.0.0/0", "10.0.0.0/31", "10.0.0.0/32",
    "127.0.0.0/24", "127.1.2.3/16", "224.0.0.0/24", "239.1.0.0/16", "169.254.0.0/16", "169.254.3.0/24",
    "0.0.0.0/8", "0.1.0.0/16", "240.0.0.0/8", "255.255.255.0/24",
    "10.0.0.0/ 24", "10.0.0.0/24 ", "\uff11\uff10.0.0.0/24", "10.0.0.0/2\u0664",
]


@pytest.mark.parametrize("subnet", BAD_SUBNETS)
def test_refused_subnets(subnet: str) -> None:
    with pytest.raises(UsageError) as caught:
        build(subnet=subnet)
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 2


def test_overlap_with_reserved_range_is_named() -> None:
    with pytest.raises(UsageError, match=r"reserved range 127\.0\.0\.0/8"):
        build(subnet="127.0.0.0/16")
    with pytest.raises(UsageError, match=r"between /8 and /30"):
        build(subnet="10.0.0.0/31")


@pytest.mark.parametrize(("subnet", "gateway", "why"), [
    ("10.0.0.0/24", "10.0.1.1", "not in subnet"),
    ("10.0.0.0/24", "10.0.0.255", "network or broadcast"),
    ("10.0.0.0/24", "10.0.0.0", "network or broadcast"),
    ("10.0.0.255/24", None, "network or broadcast"),
    ("10.0.0.7/24", "10.0.0.8", "names gateway 10.0.0.7 but --gateway says 10.0.0.8"),
    ("10.0.0.0/24", "10.0.0", "invalid gateway"),
    ("10.0.0.0/24", "fe80::1", "invalid gateway"),
    ("10.0.0.0/24", "", "invalid gateway"),
    ("10.0.0.0/24", "10.0.0.1/24", "invalid gateway"),
])
def test_refused_gateways(subnet: str, gateway: str | None, why: str) -> None:
    with pytest.raises(UsageError, match=re.escape(why)):
        build(subnet=subnet, gateway=gateway)


def test_unknown_driver() -> None:
    with pytest.raises(UsageError, match="unknown network driver 'overlay'"):
        build(driver="overlay")


BAD_NAMES = [
    "", "-web", ".web", "_web", "a b", "a;b", "a'b", 'a"b', "a$(id)", "a`id`", "a|b", "a&b", "a/b", "a\\b",
    "a\nb", "web\n", "a\tb", "café", "ωmega", "a:b", "a*", "a>b", "a" * 65,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_refused_names(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        build(name=name, bridge_name="br0")
    assert "\n" not in caught.value.message


def test_names_up_to_the_limits() -> None:
    assert build(name="a" * 15).bridge == "a" * 15
    assert build(name="a" * 64, bridge_name="b" * 15).bridge == "b" * 15


def test_long_name_needs_bridge_name() -> None:
    with pytest.raises(UsageError, match="--bridge-name"):
        build(name="a" * 16)


@pytest.mark.parametrize("bridge", ["", ".", "..", "a" * 16, "a b", "a/b", "a:b", "é", "a'b", "a\nb", "a;b"])
def test_refused_bridge_names(bridge: str) -> None:
    with pytest.raises(UsageError):
        build(bridge_name=bridge)


@pytest.mark.parametrize("mtu", [0, 67, 65536, -1])
def test_refused_mtu(mtu: int) -> None:
    with pytest.raises(UsageError, match="MTU"):
        build(mtu=mtu)


@pytest.mark.parametrize("mtu", [68, 1500, 65535])
def test_accepted_mtu(mtu: int) -> None:
    assert build(mtu=mtu).mtu == mtu


def test_names_module_directly() -> None:
    assert names.check_object_name("network", "ok.name_1-2") == "ok.name_1-2"
    assert names.check_ifname("eth0.100") == "eth0.100"
    assert names.bridge_name("web", None) == "web"
    assert names.bridge_name("web", "br-x") == "br-x"
    assert names.network_comment("web") == "wrapdock:network=web"


# -- against existing networks ------------------------------------------------------------------
def net(name: str, subnet: str, bridge: str | None = None) -> Network:
    s = IPv4Network(subnet)
    return Network(name=name, id="0" * 64, driver="bridge", subnet=s, gateway=s.network_address + 1,
                   bridge=bridge or name)


def test_check_against_networks_accepts_disjoint() -> None:
    netspec.check_against_networks(net("a", "10.1.0.0/24"), [net("b", "10.2.0.0/24"), net("c", "10.1.1.0/24")])
    netspec.check_against_networks(net("a", "10.1.0.0/24"), [])


@pytest.mark.parametrize(("new", "old", "why"), [
    (net("a", "10.1.0.0/24"), net("a", "10.9.0.0/24", bridge="other"), "network 'a' already exists"),
    (net("a", "10.1.0.0/24", bridge="br"), net("b", "10.9.0.0/24", bridge="br"), "bridge 'br' is already used"),
    (net("a", "10.1.0.0/24"), net("b", "10.0.0.0/8"), "overlaps subnet 10.0.0.0/8 of network 'b'"),
    (net("a", "10.0.0.0/8"), net("b", "10.1.0.0/24"), "overlaps subnet 10.1.0.0/24 of network 'b'"),
    (net("a", "10.1.0.0/24"), net("b", "10.1.0.0/24"), "overlaps"),
    (net("a", "10.1.0.0/30"), net("b", "10.1.0.0/24"), "overlaps"),
])
def test_check_against_networks_refuses(new: Network, old: Network, why: str) -> None:
    others = [net("z", "192.168.99.0/24"), old]
    with pytest.raises(UsageError, match=re.escape(why)):
        netspec.check_against_networks(new, others)


# -- against the host ---------------------------------------------------------------------------
def test_check_against_host_accepts_free_subnet() -> None:
    prefixes = [HostPrefix(IPv4Network("192.168.1.0/24"), "address 192.168.1.5/24 on eth0")]
    netspec.check_against_host(net("web", "10.20.0.0/24"), ["lo", "eth0"], prefixes)


def test_check_against_host_refuses_existing_link() -> None:
    with pytest.raises(UsageError, match="named 'web' already exists"):
        netspec.check_against_host(net("web", "10.20.0.0/24"), ["lo", "web"], [])


@pytest.mark.parametrize(("prefix", "what"), [
    ("10.20.0.0/24", "address 10.20.0.9/24 on eth1"),
    ("10.0.0.0/8", "route 10.0.0.0/8 dev tun0"),
    ("10.20.0.128/25", "route 10.20.0.128/25 dev eth2"),
    ("10.20.0.7/32", "route 10.20.0.7 dev eth3"),
])
def test_check_against_host_refuses_overlap(prefix: str, what: str) -> None:
    with pytest.raises(UsageError, match=re.escape(f"overlaps {what} on this host")):
        netspec.check_against_host(net("web", "10.20.0.0/24"), ["lo"], [HostPrefix(IPv4Network(prefix), what)])


# -- parsing `ip -j` output ---------------------------------------------------------------------
IP_ADDR_JSON = json.dumps([
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536, "qdisc": "noqueue",
     "operstate": "UNKNOWN", "group": "default", "txqlen": 1000, "link_type": "loopback",
     "address": "00:00:00:00:00:00", "broadcast": "00:00:00:00:00:00",
     "addr_info": [
         {"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host", "label": "lo",
          "valid_life_time": 4294967295, "preferred_life_time": 4294967295},
         {"family": "inet6", "local": "::1", "prefixlen": 128, "scope": "host",
          "valid_life_time": 4294967295, "preferred_life_time": 4294967295}]},
    {"ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500,
     "qdisc": "fq_codel", "operstate": "UP", "group": "default", "txqlen": 1000, "link_type": "ether",
     "address": "52:54:00:12:34:56", "broadcast": "ff:ff:ff:ff:ff:ff",
     "addr_info": [
         {"family": "inet", "local": "192.168.122.15", "prefixlen": 24, "broadcast": "192.168.122.255",
          "scope": "global", "dynamic": True, "noprefixroute": True, "label": "eth0",
          "valid_life_time": 3071, "preferred_life_time": 3071},
         {"family": "inet", "local": "10.99.0.5", "prefixlen": 16, "scope": "global", "secondary": True,
          "label": "eth0:1", "valid_life_time": 4294967295, "preferred_life_time": 4294967295},
         {"family": "inet6", "local": "fe80::5054:ff:fe12:3456", "prefixlen": 64, "scope": "link",
          "valid_life_time": 4294967295, "preferred_life_time": 4294967295}]},
    {"ifindex": 3, "ifname": "docker0", "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"], "mtu": 1500,
     "qdisc": "noqueue", "operstate": "DOWN", "group": "default", "link_type": "ether",
     "address": "02:42:ac:11:00:01", "broadcast": "ff:ff:ff:ff:ff:ff",
     "addr_info": [{"family": "inet", "local": "172.17.0.1", "prefixlen": 16, "broadcast": "172.17.255.255",
                    "scope": "global", "label": "docker0", "valid_life_time": 4294967295,
                    "preferred_life_time": 4294967295}]},
    {"ifindex": 7, "link_index": 6, "ifname": "veth1a2b3c", "flags": ["BROADCAST", "MULTICAST", "UP"],
     "mtu": 1500, "qdisc": "noqueue", "master": "docker0", "operstate": "UP", "link_netnsid": 0,
     "addr_info": []},
    {"ifindex": 8, "ifname": "wg0", "flags": ["POINTOPOINT", "NOARP", "UP"], "mtu": 1420},
])

IP_ROUTE_JSON = json.dumps([
    {"dst": "default", "gateway": "192.168.122.1", "dev": "eth0", "protocol": "dhcp", "prefsrc": "192.168.122.15",
     "metric": 100, "flags": []},
    {"dst": "10.8.0.0/16", "gateway": "192.168.122.254", "dev": "eth0", "flags": []},
    {"dst": "172.17.0.0/16", "dev": "docker0", "protocol": "kernel", "scope": "link", "prefsrc": "172.17.0.1",
     "flags": ["linkdown"]},
    {"dst": "192.168.122.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link",
     "prefsrc": "192.168.122.15", "metric": 100, "flags": []},
    {"dst": "192.168.122.1", "dev": "eth0", "protocol": "dhcp", "scope": "link", "metric": 100, "flags": []},
    {"type": "blackhole", "dst": "198.18.0.0/15", "flags": []},
])


def test_parse_addresses() -> None:
    links, prefixes = hostinfo.parse_addresses(IP_ADDR_JSON)
    assert links == ["lo", "eth0", "docker0", "veth1a2b3c", "wg0"]
    assert [(str(p.network), p.what) for p in prefixes] == [
        ("127.0.0.0/8", "address 127.0.0.1/8 on lo"),
        ("192.168.122.0/24", "address 192.168.122.15/24 on eth0"),
        ("10.99.0.0/16", "address 10.99.0.5/16 on eth0"),
        ("172.17.0.0/16", "address 172.17.0.1/16 on docker0"),
    ]


def test_parse_routes() -> None:
    prefixes = hostinfo.parse_routes(IP_ROUTE_JSON)
    assert [(str(p.network), p.what) for p in prefixes] == [
        ("10.8.0.0/16", "route 10.8.0.0/16 dev eth0"),
        ("172.17.0.0/16", "route 172.17.0.0/16 dev docker0"),
        ("192.168.122.0/24", "route 192.168.122.0/24 dev eth0"),
        ("192.168.122.1/32", "route 192.168.122.1 dev eth0"),
        ("198.18.0.0/15", "route 198.18.0.0/15 dev ?"),
    ]


@pytest.mark.parametrize("text", ["", "[]"])
def test_parse_empty_output(text: str) -> None:
    assert hostinfo.parse_addresses(text) == ([], [])
    assert hostinfo.parse_routes(text) == []


def test_host_sample_refuses_overlapping_networks() -> None:
    links, addr = hostinfo.parse_addresses(IP_ADDR_JSON)
    prefixes = addr + hostinfo.parse_routes(IP_ROUTE_JSON)
    with pytest.raises(UsageError, match="docker0"):
        netspec.check_against_host(net("n", "172.17.5.0/24"), links, prefixes)
    with pytest.raises(UsageError, match=r"route 10\.8\.0\.0/16"):
        netspec.check_against_host(net("n", "10.8.0.0/24"), links, prefixes)
    with pytest.raises(UsageError, match="'docker0' already exists"):
        netspec.check_against_host(net("docker0", "10.50.0.0/24"), links, prefixes)
    netspec.check_against_host(net("n", "10.50.0.0/24"), links, prefixes)


class HostRead:
    """Answers the host read (one `sh -s`) with its parts, or fails it as the script would stop."""

    def __init__(self, stdout: str, exit_code: int = 0, stderr: str = "") -> None:
        self.stdout, self.exit_code, self.stderr = stdout, exit_code, stderr
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def __call__(self, argv, stdin: str | None) -> Result:
        self.calls.append((tuple(argv), stdin))
        assert hostinfo.is_host_query(argv, stdin), argv
        return Result(tuple(argv), self.exit_code, self.stdout, self.stderr, 0.0)


SAVED = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"


def test_read_runs_one_query_through_the_runner() -> None:
    host = HostRead(hostinfo.host_answer(IP_ADDR_JSON, IP_ROUTE_JSON, "1", SAVED))
    info = hostinfo.read(Runner(Trail("quiet"), execute=host))
    assert len(host.calls) == 1
    assert "eth0" in info.links
    assert IPv4Network("10.8.0.0/16") in {p.network for p in info.prefixes}
    assert IPv4Network("172.17.0.0/16") in {p.network for p in info.prefixes}
    assert info.forwarding is True
    assert info.iptables is not None and info.iptables.ok and info.iptables.stdout == SAVED
    assert info.iptables.argv == ("iptables-save",)


def test_the_query_shows_every_command_it_runs() -> None:
    script = "\n".join(hostinfo.HOST_QUERY_LINES)
    assert "ip -j -batch -" in script and "cat /proc/sys/net/ipv4/ip_forward" in script
    assert hostinfo.HOST_QUERY_LINES[-1] == "iptables-save"  # last: its failure alone leaves the rest readable


def test_read_tells_forwarding_off() -> None:
    host = HostRead(hostinfo.host_answer(IP_ADDR_JSON, IP_ROUTE_JSON, "0", SAVED))
    assert hostinfo.read(Runner(Trail("quiet"), execute=host)).forwarding is False


def test_a_failed_iptables_save_is_reported_as_its_own_result() -> None:
    host = HostRead(hostinfo.host_answer(IP_ADDR_JSON, IP_ROUTE_JSON, "1", ""), 4, "Permission denied (must be root)")
    info = hostinfo.read(Runner(Trail("quiet"), execute=host))
    assert info.iptables is not None and not info.iptables.ok and info.iptables.exit_code == 4
    assert "must be root" in info.iptables.stderr
    assert info.links  # the rest was read


def test_read_of_output_that_is_not_two_json_documents_is_an_environment_problem() -> None:
    for ip_json in (IP_ADDR_JSON, IP_ADDR_JSON + "\nnot json"):
        host = HostRead(f"{ip_json}\n{hostinfo.FORWARD_MARK}\n1\n{hostinfo.SAVE_MARK}\n")
        with pytest.raises(EnvironmentProblem, match="not its JSON"):
            hostinfo.read(Runner(Trail("quiet"), execute=host))


def test_an_unreadable_forwarding_value_is_an_environment_problem() -> None:
    host = HostRead(hostinfo.host_answer(IP_ADDR_JSON, IP_ROUTE_JSON, "", SAVED))
    with pytest.raises(EnvironmentProblem, match="ip_forward reads ''"):
        hostinfo.read(Runner(Trail("quiet"), execute=host))


def test_read_failure_is_an_environment_problem_that_names_the_failed_part() -> None:
    host = HostRead("", 1, "Error: ipv4: FIB table does not exist.")
    with pytest.raises(EnvironmentProblem, match=r"`ip -j -batch -` failed \(exit 1\): .*FIB table does not exist"):
        hostinfo.read(Runner(Trail("quiet"), execute=host))
    host = HostRead(f"[]\n[]\n{hostinfo.FORWARD_MARK}\n", 1, "cat: /proc/sys/net/ipv4/ip_forward: No such file")
    with pytest.raises(EnvironmentProblem, match=r"`cat /proc/sys/net/ipv4/ip_forward` failed"):
        hostinfo.read(Runner(Trail("quiet"), execute=host))
