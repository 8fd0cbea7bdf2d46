"""The vxlan driver: golden files of its command sequences, the sync diff, the request checks and
the per-host range derivation (all pure: no root, no host).

Regenerate the golden files after an intended change with:
    WRAPDOCK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_plans_vxlan.py
then review the diff of tests/golden/ before committing.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from tests.unit.test_plans_network import EMPTY, OTHER, check_golden, made, plan_text
from tests.unit.test_plans_network import NETWORKS as BRIDGES
from wrapdock import overlayspec
from wrapdock.errors import UsageError
from wrapdock.model import Network, Vxlan
from wrapdock.netspec import NetworkRequest, build_network, check_against_host, check_against_networks, place_overlay
from wrapdock.overlayspec import Interface
from wrapdock.plans import driver
from wrapdock.plans import network as bridge_plans
from wrapdock.plans import vxlan as vxlan_plans
from wrapdock.state import check_shape

SUBNET = IPv4Network("10.210.0.0/16")
VTEP = IPv4Address("198.51.100.11")
PEERS = (IPv4Address("198.51.100.12"), IPv4Address("198.51.100.13"))
INTERFACES = [Interface("lo", 65536, (IPv4Address("127.0.0.1"),)),
              Interface("eth0", 1500, (IPv4Address("203.0.113.2"),)),
              Interface("ul0", 1500, (VTEP,))]


def overlay(peers: tuple[IPv4Address, ...] = PEERS, internal: bool = False) -> Network:
    vx = Vxlan(vni=42, port=4789, device="wdvx42", vtep=VTEP, underlay="ul0", underlay_mtu=1500,
               mac="02:ff:c6:33:64:0b", host_subnet_size=24, host_range=IPv4Network("10.210.11.0/24"), peers=peers)
    return Network(name="ov", id="d" * 64, driver="vxlan", subnet=SUBNET, gateway=IPv4Address("10.210.11.1"),
                   bridge="ov", mtu=1450, internal=internal, created="2024-01-02T03:04:05+00:00", vxlan=vx)


OVERLAYS = {"peers": overlay(), "alone": overlay(peers=()), "internal": overlay(internal=True)}
PLANS = {
    "create": lambda n: vxlan_plans.create(n, EMPTY),
    "remove-last": lambda n: vxlan_plans.remove(n, True, made(n)),
    "remove-not-last": lambda n: vxlan_plans.remove(n, False, made(OTHER, n)),
}


@pytest.mark.parametrize("kind", sorted(OVERLAYS))
@pytest.mark.parametrize("which", sorted(PLANS))
def test_plan_matches_golden(kind: str, which: str) -> None:
    check_golden(f"vxlan-{which}-{kind}.txt", plan_text(PLANS[which](OVERLAYS[kind])))


def test_the_seam_gives_each_driver_its_own_plans_and_bridges_their_unchanged_ones() -> None:
    for network in BRIDGES.values():
        assert plan_text(driver.create(network, EMPTY)) == plan_text(bridge_plans.create(network, EMPTY))
        tables = made(network)
        assert plan_text(driver.remove(network, True, tables)) == plan_text(bridge_plans.remove(network, True, tables))
    assert (plan_text(driver.create(OVERLAYS["peers"], EMPTY))
            == plan_text(vxlan_plans.create(OVERLAYS["peers"], EMPTY)))
    with pytest.raises(ValueError):
        driver.of(replace(OVERLAYS["peers"], driver="macvlan"))


def test_create_puts_the_device_on_the_bridge_with_its_identity_and_mtu_before_anything_else() -> None:
    plan = vxlan_plans.create(OVERLAYS["peers"], EMPTY)
    # one process: the links' batch, the flood list's batch, the bridge's route_localnet
    assert plan.steps[0].argv == ("sh", "-s")
    script = plan.steps[0].stdin
    links = script.index("ip -batch - <<'WRAPDOCK_BATCH_EOF'")
    flood = script.index("bridge -batch - <<'WRAPDOCK_BATCH_EOF'")
    batch = script[links + 1:script.index("WRAPDOCK_BATCH_EOF", links)]
    device = next(line for line in batch if "type vxlan" in line)
    assert device == ("link add name wdvx42 address 02:ff:c6:33:64:0b mtu 1450 type vxlan id 42 dstport 4789 "
                      "local 198.51.100.11 dev ul0 learning")
    assert "link add name ov mtu 1450 type bridge" in batch
    assert batch.index("link set dev wdvx42 master ov") < batch.index("link set dev wdvx42 up")
    assert script[flood + 1:flood + 1 + len(PEERS)] == tuple(
        f"fdb append 00:00:00:00:00:00 dev wdvx42 dst {p} self permanent" for p in PEERS)
    assert script[0] == "set -e" and script[-1] == "sysctl -w net/ipv4/conf/ov/route_localnet=1"
    # the rollback of the first step removes both links (and with the device, the peers)
    assert plan.steps[0].partial and plan.steps[0].undo is not None
    assert "ip link del dev wdvx42" in "\n".join(plan.steps[0].undo.stdin)


def test_the_overlay_gets_the_bridge_drivers_nat_and_forwarding_unchanged() -> None:
    net = OVERLAYS["peers"]
    for forwarding in (None, False, True):
        assert (vxlan_plans.create(net, EMPTY, forwarding).steps[1:]
                == bridge_plans.create(net, EMPTY, forwarding).steps[1:])


def test_remove_undoes_create_device_before_bridge_and_rules_first() -> None:
    steps = vxlan_plans.remove(OVERLAYS["peers"], False, made(OTHER, OVERLAYS["peers"])).steps
    dels = [s.argv for s in steps if s.argv[:3] == ("ip", "link", "del")]
    assert dels == [("ip", "link", "del", "dev", "wdvx42"), ("ip", "link", "del", "dev", "ov")]
    assert steps[0].argv[0] == "iptables-restore" and steps[0].stdin[1].startswith("-D ")  # the rules first



def test_every_remove_step_is_undone_with_the_lines_create_ran() -> None:
    """A cluster leave's etcd release comes after the deletions: each deletion's undo re-creates the
    link with create's own batch lines (the device with its flood list, the bridge with route_localnet)."""
    network = OVERLAYS["peers"]
    created = vxlan_plans.create(network, made(OTHER)).steps
    steps = vxlan_plans.remove(network, False, made(OTHER, network)).steps
    assert all(s.undo is not None for s in steps)
    device_undo, bridge_undo = (s.undo.stdin for s in steps if s.argv[:3] == ("ip", "link", "del"))
    assert device_undo[0] == "set -e" and device_undo[1] == "ip -batch - <<'WRAPDOCK_BATCH_EOF'"
    commands = ("ip -batch", "bridge -batch", "sysctl")

    def batch_lines(script) -> list[str]:
        return sorted(line for line in script if line not in ("set -e", "WRAPDOCK_BATCH_EOF")
                      and not line.startswith(commands))

    # every line create ran, nothing else
    assert batch_lines((*bridge_undo, *device_undo)) == batch_lines(created[0].stdin)
    assert "sysctl -w net/ipv4/conf/ov/route_localnet=1" in bridge_undo
    internal = vxlan_plans.remove(OVERLAYS["internal"], False, made(OTHER)).steps
    assert not [line for s in internal if s.undo for line in s.undo.stdin if "route_localnet" in line]


# -- sync -------------------------------------------------------------------------------------------
def fdb_json(*entries: tuple[str, str, str]) -> str:
    own = {"mac": "02:ff:c6:33:64:0b", "flags": [], "master": "ov", "state": "permanent"}
    return json.dumps([own, *({"mac": m, "dst": d, "flags": ["self"], "state": s} for m, d, s in entries)])


ZERO = "00:00:00:00:00:00"


def sync_argv(text: str, down: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    net = OVERLAYS["peers"]
    return [s.argv for s in vxlan_plans.sync(net, vxlan_plans.parse_fdb(text), list(down)).steps]


def test_sync_has_nothing_to_do_when_the_kernel_has_every_peer() -> None:
    text = fdb_json((ZERO, "198.51.100.12", "permanent"), (ZERO, "198.51.100.13", "permanent"),
                    ("0a:58:0a:d2:0c:02", "198.51.100.12", ""))  # learned behind a peer: kept
    assert sync_argv(text) == []


def test_sync_adds_missing_peers_and_removes_strangers_and_what_was_learned_behind_them() -> None:
    text = fdb_json((ZERO, "198.51.100.12", "permanent"), (ZERO, "198.51.100.99", "permanent"),
                    ("0a:58:0a:d2:63:02", "198.51.100.99", ""))
    assert sync_argv(text, down=("wdvx42",)) == [
        ("ip", "link", "set", "dev", "wdvx42", "up"),
        ("bridge", "fdb", "append", ZERO, "dev", "wdvx42", "dst", "198.51.100.13", "self", "permanent"),
        ("bridge", "fdb", "del", ZERO, "dev", "wdvx42", "dst", "198.51.100.99", "self"),
        ("bridge", "fdb", "del", "0a:58:0a:d2:63:02", "dev", "wdvx42", "dst", "198.51.100.99", "self"),
    ]


def test_sync_steps_undo_each_other() -> None:
    plan = vxlan_plans.sync(OVERLAYS["peers"], vxlan_plans.parse_fdb(fdb_json((ZERO, "198.51.100.99", "permanent"))),
                            [])
    add, remove = plan.steps[0], plan.steps[-1]
    assert add.undo is not None and add.undo.argv[:3] == ("bridge", "fdb", "del")
    assert remove.undo is not None and remove.undo.argv[:3] == ("bridge", "fdb", "append")


def test_link_parsing_finds_missing_and_down_links() -> None:
    text = json.dumps([{"ifname": "ov", "flags": ["BROADCAST", "UP"]}, {"ifname": "wdvx42", "flags": ["BROADCAST"]}])
    assert vxlan_plans.parse_down(text, ("ov", "wdvx42")) == ["wdvx42"]
    assert vxlan_plans.parse_missing(json.dumps([{"ifname": "ov"}]), ("ov", "wdvx42")) == ["wdvx42"]


# -- derivation ---------------------------------------------------------------------------------------
def test_each_hosts_range_follows_from_its_vtep_address_alone() -> None:
    assert overlayspec.derived_range(SUBNET, 24, VTEP) == IPv4Network("10.210.11.0/24")
    assert overlayspec.derived_range(SUBNET, 24, IPv4Address("198.51.100.12")) == IPv4Network("10.210.12.0/24")
    assert overlayspec.derived_range(SUBNET, 20, IPv4Address("192.168.56.11")) == IPv4Network("10.210.176.0/20")
    assert overlayspec.derived_range(IPv4Network("10.0.0.0/8"), 24, IPv4Address("172.16.3.9")) == \
        IPv4Network("10.3.9.0/24")  # the last 16 bits: 3.9
    # all the hosts of a /24 underlay get distinct ranges with the default size
    ranges = {overlayspec.derived_range(SUBNET, 24, IPv4Address(f"198.51.100.{i}")) for i in range(1, 255)}
    assert len(ranges) == 254


def test_colliding_ranges_are_refused_and_an_explicit_range_avoids_them() -> None:
    with pytest.raises(UsageError, match=re.escape("would both get host range 10.210.11.0/24")):
        overlayspec.host_range(SUBNET, 24, VTEP, (IPv4Address("10.0.0.11"),))
    with pytest.raises(UsageError, match=re.escape("198.51.100.12 and 10.9.9.12")):
        overlayspec.host_range(SUBNET, 24, VTEP, (IPv4Address("198.51.100.12"), IPv4Address("10.9.9.12")))
    explicit = IPv4Network("10.210.200.0/24")
    assert overlayspec.host_range(SUBNET, 24, VTEP, (IPv4Address("10.0.0.12"),), explicit) == explicit


def test_mac_gateway_vni_and_device_name_are_deterministic() -> None:
    assert overlayspec.vtep_mac(VTEP) == "02:ff:c6:33:64:0b"
    assert overlayspec.overlay_gateway(IPv4Network("10.210.11.0/24")) == IPv4Address("10.210.11.1")
    assert overlayspec.default_vni("ov") == overlayspec.default_vni("ov")
    assert 1 <= overlayspec.default_vni("x" * 64) <= overlayspec.VNI_MAX
    assert overlayspec.device_name(overlayspec.VNI_MAX) == "wdvx16777215"


def request(**kwargs) -> NetworkRequest:
    base = {"name": "ov", "subnet": "10.210.0.0/16", "driver": "vxlan", "vtep": "198.51.100.11",
            "peers": ("198.51.100.12",)}
    return NetworkRequest(**{**base, **kwargs})


def placed(**kwargs) -> Network:
    req = request(**kwargs)
    return place_overlay(build_network(req), req, INTERFACES, "eth0")


def test_a_request_becomes_this_hosts_part_of_the_overlay() -> None:
    net = placed(vni=42)
    assert (net.gateway, net.mtu, net.ipam_range) == (IPv4Address("10.210.11.1"), 1450, IPv4Network("10.210.11.0/24"))
    assert net.vxlan is not None
    assert (net.vxlan.underlay, net.vxlan.underlay_mtu, net.vxlan.port, net.vxlan.device) == ("ul0", 1500, 4789,
                                                                                               "wdvx42")
    check_shape("network", net.to_record(), "test")  # the record matches state/network.schema.json
    assert Network.from_record(json.loads(json.dumps(net.to_record()))) == net
    # by interface name; by the default route; an explicit MTU below the limit
    assert placed(vtep="ul0").vxlan.vtep == VTEP
    assert placed(vtep=None, peers=()).vxlan.underlay == "eth0"
    assert placed(mtu=1400).mtu == 1400
    assert placed(host_range="10.210.99.0/24").gateway == IPv4Address("10.210.99.1")


BAD = [
    ({"vni": 0}, "invalid VNI 0"),
    ({"vni": 16777216}, "invalid VNI 16777216"),
    ({"port": 0}, "invalid VXLAN port"),
    ({"port": 65536}, "invalid VXLAN port"),
    ({"host_subnet_size": 16}, "does not fit"),
    ({"host_subnet_size": 8}, "does not fit"),
    ({"host_subnet_size": 31}, "does not fit"),
    ({"subnet": "10.210.0.0/24"}, "does not fit"),  # the default /24 is not longer than the subnet's
    ({"host_range": "10.211.0.0/24"}, "must be a part of subnet"),
    ({"host_range": "10.210.0.0/16"}, "must be a part of subnet"),
    ({"host_range": "nonsense"}, "invalid host range"),
    ({"host_range": "10.210.1.0/24", "host_subnet_size": 25}, "disagree"),
    ({"peers": ("198.51.100.12", "198.51.100.12")}, "given twice"),
    ({"peers": ("2001:db8::1",)}, "not an IPv4 address"),
    ({"peers": ("198.51.100.12;reboot",)}, "not an IPv4 address"),
    ({"peers": ("127.0.0.1",)}, "not a unicast address"),
    ({"gateway": "10.210.0.1"}, "one gateway per host"),
    ({"subnet": "10.210.0.1/16"}, "one gateway per host"),
    ({"name": "ov;rm"}, "invalid network name"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_requests_are_refused_before_the_host_is_read(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        build_network(request(**kwargs))


PLACE_BAD = [
    ({"vtep": "198.51.100.200"}, "no interface of this host has that address"),
    ({"vtep": "eth9"}, "no such interface"),
    ({"vtep": "lo"}, "cannot carry VXLAN"),
    ({"vtep": "bad name!"}, "invalid underlay interface name"),
    ({"peers": ("198.51.100.11",)}, "own VTEP"),
    ({"peers": ("10.1.2.11",)}, "would both get"),
    ({"mtu": 1451}, "too large for underlay ul0"),
]


@pytest.mark.parametrize("kwargs,message", PLACE_BAD, ids=[str(k) for k, _ in PLACE_BAD])
def test_bad_requests_are_refused_once_the_host_is_known(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        placed(**kwargs)


def test_no_default_route_and_no_vtep_is_an_error() -> None:
    req = request(vtep=None)
    with pytest.raises(UsageError, match="give --vtep"):
        place_overlay(build_network(req), req, INTERFACES, None)


def test_vxlan_options_belong_to_the_vxlan_driver() -> None:
    with pytest.raises(UsageError, match="--peer is an option of --driver vxlan"):
        build_network(NetworkRequest(name="b", subnet="10.1.0.0/24", peers=("198.51.100.12",)))


def test_conflicts_with_other_networks_and_the_host() -> None:
    net = placed(vni=42)
    with pytest.raises(UsageError, match="VNI 42 is already used"):
        check_against_networks(net, [replace(placed(vni=42), name="other", bridge="other",
                                              subnet=IPv4Network("10.99.0.0/16"))])
    with pytest.raises(UsageError, match="overlaps subnet"):
        check_against_networks(net, [BRIDGES["normal"].__class__(**{**BRIDGES["normal"].__dict__,
                                                                     "subnet": IPv4Network("10.210.3.0/24")})])
    with pytest.raises(UsageError, match="'wdvx42' already exists"):
        check_against_host(net, ["lo", "wdvx42"], [])


def test_the_underlay_facts_come_from_ip_json() -> None:
    from wrapdock.hostinfo import parse_default_dev, parse_interfaces

    addr = json.dumps([{"ifname": "lo", "mtu": 65536, "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
                       {"ifname": "ul0", "mtu": 1500, "addr_info": [{"family": "inet6", "local": "fe80::1"},
                                                                   {"family": "inet", "local": "198.51.100.11"}]},
                       {"ifname": "down0", "mtu": 1400}])
    assert parse_interfaces(addr)[1:] == [Interface("ul0", 1500, (VTEP,)), Interface("down0", 1400, ())]
    routes = json.dumps([{"dst": "198.51.100.0/24", "dev": "ul0"}, {"dst": "default", "gateway": "203.0.113.1",
                                                                     "dev": "uplink"}])
    assert parse_default_dev(routes) == "uplink"
    assert parse_default_dev("[]") is None
