"""doctor's analysis and gc's decisions, from hand-made facts (no host, no root, no commands)."""

from __future__ import annotations

import io
import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tests.unit.fakes import FakeHost
from wrapdock import doctor, gc
from wrapdock.cgroups import CgroupLayout
from wrapdock.cli import main
from wrapdock.doctor import Facts, Finding, Link, Mount, Route, Rule, Runtime
from wrapdock.ipam import RecordStore
from wrapdock.leases import LeaseStore
from wrapdock.model import Network
from wrapdock.plan import Step
from wrapdock.plans import iptables as ipt
from wrapdock.plans.endpoint import container_comment, host_ifname
from wrapdock.render import render_script
from wrapdock.runner import Runner, Trail
from wrapdock.session import Session
from wrapdock.shell import brief
from wrapdock.state import StateStore

ID_A = "a" * 64
ID_B = "b" * 64
ID_GHOST = "c0ffee" + "0" * 58
DATA = Path("/data")


# -- building facts -----------------------------------------------------------------------------------
def net(name: str = "n1", subnet: str = "10.77.0.0/24", internal: bool = False) -> Network:
    s = IPv4Network(subnet)
    return Network(name=name, id="e" * 64, driver="bridge", subnet=s, gateway=s.network_address + 1, bridge=name,
                   internal=internal)


def rules_of(steps: list[Step]) -> list[Rule]:
    """The rules that the add steps of a plan would leave in iptables-save."""
    rules = []
    for step in steps:
        argv = step.argv
        if "-A" not in argv and "-I" not in argv:
            continue
        at = argv.index("-A") if "-A" in argv else argv.index("-I")
        spec = argv[at + 2:]
        if argv[at] == "-I" and spec and spec[0].isdigit():
            spec = spec[1:]
        rules.append(Rule(argv[argv.index("-t") + 1], argv[at + 1], tuple(spec)))
    return rules


def skeleton_chains() -> set[tuple[str, str]]:
    return {(s.argv[3], s.argv[5]) for s in ipt.ensure_skeleton() if "-N" in s.argv}


def healthy(*networks: Network) -> Facts:
    """A host where every network is exactly as its create plan left it."""
    facts = Facts(data_dir=DATA, sysctl={"ip_forward": "1", "bridge-nf-call-iptables": "1", "rp_filter.all": "0",
                                         "rp_filter.default": "0"})
    facts.links = {"lo": Link("lo", "", up=True, addresses=("127.0.0.1/8",))}
    rules: list[Rule] = []
    for network in networks:
        facts.networks.append(network)
        facts.links[network.bridge] = Link(network.bridge, "bridge", addresses=(network.gateway_cidr,))
        facts.routes.append(Route(network.subnet, network.bridge, f"{network.subnet} dev {network.bridge}"))
        facts.sysctl[f"route_localnet.{network.bridge}"] = "1"
        facts.ipam[network.name] = RecordStore.new_record(network.name, network.subnet, network.gateway)
        rules += rules_of(doctor.expected_rules(network))
    chains: set[tuple[str, str]] = set()
    if networks:
        rules = rules_of(ipt.ensure_skeleton()) + rules
        chains = skeleton_chains()
    facts.iptables = doctor.Iptables(frozenset(chains), {}, tuple(rules))
    return facts


def container(facts: Facts, cid: str, name: str, network: Network | None = None, address: str = "10.77.0.2",
              ports: bool = False, phase: str = "ready", owner_pid: int | None = None, runtime: Runtime | None = None,
              link: bool = True, netns: bool = True) -> dict:
    endpoints = []
    if network is not None:
        endpoints = [{"network": network.name, "ifname": "eth0", "host_ifname": host_ifname(cid, 0),
                      "address": address}]
        if network.name in facts.ipam:
            RecordStore(facts.ipam[network.name]).put(address, cid, round_robin=True)
        if link:
            facts.links[host_ifname(cid, 0)] = Link(host_ifname(cid, 0), "veth", master=network.bridge, netnsid=0)
    record = {"id": cid, "name": name, "netns": name, "phase": phase, "owner_pid": owner_pid, "endpoints": endpoints,
              "ports": [{"host_ip": None, "host_port": 8080, "container_port": 80, "proto": "tcp"}] if ports else [],
              "command": ["sleep", "1"], "image": "busybox", "env": [], "hostname": name, "workdir": "/",
              "volumes": [], "limits": {"memory": None, "cpus": None, "cpu_shares": None, "cpuset_cpus": None,
                                        "pids": None}, "caps": [], "privileged": False}
    facts.containers.append(record)
    facts.runtime[cid] = runtime or Runtime(live=True, started=True)
    facts.container_dirs[cid] = DATA / "containers" / cid
    if netns:
        facts.netns[name] = 0
    return record


def checks(facts: Facts) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in doctor.findings(facts, doctor.assess(facts))]


def plans_of(facts: Facts) -> list[gc.Action]:
    return gc.decide(facts, doctor.assess(facts))


def argvs(actions: list[gc.Action]) -> list[tuple[str, ...]]:
    return [s.argv for a in actions if a.plan for s in a.plan.steps]


# -- parsers ------------------------------------------------------------------------------------------
SAVE = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:345]
:WRAPDOCK-FORWARD - [0:0]
-A FORWARD -m comment --comment wrapdock -j WRAPDOCK-FORWARD
-A FORWARD -i foreignbr -j ACCEPT
-A WRAPDOCK-FORWARD -i n1 ! -o n1 -m comment --comment "wrapdock:network=n1" -j ACCEPT
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.0.0.0/8 -m comment --comment "a \\"quoted\\" note" -j MASQUERADE
COMMIT
"""


def test_parse_iptables_save() -> None:
    view = doctor.parse_iptables_save(SAVE)
    assert view.policies[("filter", "FORWARD")] == "DROP"
    assert ("filter", "WRAPDOCK-FORWARD") in view.chains and ("filter", "WRAPDOCK-FORWARD") not in view.policies
    jump, foreign, own, nat = view.rules
    assert (jump.comment, jump.target, jump.wrapdocks) == ("wrapdock", "WRAPDOCK-FORWARD", True)
    assert (foreign.comment, foreign.interfaces, foreign.wrapdocks) == (None, {"foreignbr"}, False)
    assert own.comment == "wrapdock:network=n1" and own.interfaces == {"n1"}
    assert own.delete_argv() == ("iptables", "-w", "-t", "filter", "-D", "WRAPDOCK-FORWARD", "-i", "n1", "!", "-o",
                                 "n1", "-m", "comment", "--comment", "wrapdock:network=n1", "-j", "ACCEPT")
    assert nat.table == "nat" and nat.comment == 'a "quoted" note' and not nat.wrapdocks
    assert doctor.has_rules(SAVE) and not doctor.has_rules("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")


def test_parse_links_routes_netns() -> None:
    text = json.dumps([
        {"ifname": "n1", "flags": ["BROADCAST", "UP"], "linkinfo": {"info_kind": "bridge"},
         "addr_info": [{"family": "inet", "local": "10.77.0.1", "prefixlen": 24},
                       {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
        {"ifname": "wdaaaaaaaaaa0", "flags": ["BROADCAST"], "master": "n1", "link_netnsid": 3,
         "linkinfo": {"info_kind": "veth"}}])
    links = doctor.parse_links(text)
    assert links["n1"] == Link("n1", "bridge", None, True, ("10.77.0.1/24",), None)
    assert links["wdaaaaaaaaaa0"] == Link("wdaaaaaaaaaa0", "veth", "n1", False, (), 3)
    routes = doctor.parse_routes(json.dumps([{"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
                                             {"dst": "10.77.0.0/24", "dev": "n1"},
                                             {"type": "blackhole", "dst": "10.99.0.0/16"},
                                             {"dst": "192.0.2.7", "dev": "eth0"}]))
    assert [(str(r.dst), r.dev, r.text) for r in routes] == [
        ("10.77.0.0/24", "n1", "10.77.0.0/24 dev n1"), ("10.99.0.0/16", None, "blackhole 10.99.0.0/16"),
        ("192.0.2.7/32", "eth0", "192.0.2.7 dev eth0")]
    assert doctor.parse_netns("") == {}  # `ip -j netns list` prints nothing when there is none
    assert doctor.parse_netns('[{"name":"c1","id":0},{"name":"other"}]') == {"c1": 0, "other": None}


def test_parse_mountinfo_and_versions() -> None:
    text = ("36 25 0:32 / /run rw - tmpfs wdsandbox-run rw\n"
            "90 36 0:50 / /data/containers/x/my\\040commit ro,relatime shared:5 - overlay wrapdock-commit-img ro\n")
    assert doctor.parse_mountinfo(text) == [Mount("wdsandbox-run", "/run", "tmpfs"),
                                            Mount("wrapdock-commit-img", "/data/containers/x/my commit", "overlay")]
    assert doctor.parse_util_linux("setsid from util-linux 2.38.1\n") == (2, 38)
    assert doctor.parse_util_linux("setsid from util-linux 2.9") == (2, 9)
    assert doctor.parse_util_linux("busybox") is None


def _elf(interp: bool) -> bytes:
    """A minimal little-endian ELF64 header with two program headers (PT_LOAD, then PT_INTERP or PT_NOTE)."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[0x20:0x28] = (64).to_bytes(8, "little")  # e_phoff
    header[0x36:0x38] = (56).to_bytes(2, "little")  # e_phentsize
    header[0x38:0x3A] = (2).to_bytes(2, "little")  # e_phnum
    load = (1).to_bytes(4, "little") + bytes(52)
    second = (3 if interp else 4).to_bytes(4, "little") + bytes(52)
    return bytes(header) + load + second


def test_elf_is_static() -> None:
    assert doctor.elf_is_static(_elf(interp=False)) is True
    assert doctor.elf_is_static(_elf(interp=True)) is False
    assert doctor.elf_is_static(b"#!/bin/sh\necho not elf\n" + bytes(64)) is None


# -- a clean host --------------------------------------------------------------------------------------
def test_clean_host_without_networks_has_no_finding_even_with_forwarding_off() -> None:
    facts = healthy()
    facts.sysctl.update({"ip_forward": "0", "rp_filter.all": "1"})
    facts.iptables = doctor.parse_iptables_save(SAVE.replace("-A FORWARD -m comment --comment wrapdock "
                                                             "-j WRAPDOCK-FORWARD\n", "").replace(
        '-A WRAPDOCK-FORWARD -i n1 ! -o n1 -m comment --comment "wrapdock:network=n1" -j ACCEPT\n', "").replace(
        ":WRAPDOCK-FORWARD - [0:0]\n", ""))
    assert checks(facts) == []
    assert plans_of(facts) == []


def test_healthy_networks_and_containers_have_no_finding_and_nothing_to_do() -> None:
    n1, n2 = net(), net("n2", "10.78.0.0/24", internal=True)
    facts = healthy(n1, n2)
    container(facts, ID_A, "web", n1, ports=True)
    container(facts, ID_B, "stopped", n1, address="10.77.0.3",
              runtime=Runtime(live=False, started=True, exit_recorded=True))
    assert checks(facts) == []
    assert plans_of(facts) == []


# -- the environment --------------------------------------------------------------------------------
def test_environment_findings() -> None:
    facts = healthy()
    facts.tools["nsenter"] = False
    facts.util_linux = (2, 36)
    facts.busybox, facts.busybox_static = "/usr/bin/busybox", False
    facts.euid = 1000
    found = {f.check: f for f in doctor.findings(facts, doctor.assess(facts))}
    assert set(found) == {"tool-missing", "util-linux-old", "busybox-dynamic", "not-root"}
    assert found["tool-missing"].fix == ("apt-get install util-linux",)
    assert found["busybox-dynamic"].fix == ("apt-get install busybox-static",)
    assert all(f.severity == "error" for f in found.values())


def test_forwarding_forward_drop_rp_filter_and_backends_matter_once_a_network_exists() -> None:
    facts = healthy(net())
    facts.sysctl.update({"ip_forward": "0", "rp_filter.default": "1"})
    facts.iptables = doctor.Iptables(facts.iptables.chains, {("filter", "FORWARD"): "DROP"}, facts.iptables.rules)
    facts.backends_with_rules = {"legacy": True, "nft": True}
    found = {f.check: f for f in doctor.findings(facts, doctor.assess(facts))}
    assert set(found) == {"ip-forward-off", "forward-drop", "rp-filter-strict", "iptables-both-backends"}
    assert found["ip-forward-off"].severity == "error"
    assert "sysctl -w net.ipv4.ip_forward=1" in found["ip-forward-off"].fix
    assert found["forward-drop"].severity == "warning"
    assert any("iptables -P FORWARD ACCEPT" in fix and "only if" in fix for fix in found["forward-drop"].fix)
    assert found["rp-filter-strict"].fix == ("sysctl -w net.ipv4.conf.default.rp_filter=2  # loose mode",)
    # gc turns forwarding back on (the networks' create plans had it on), nothing else of these
    assert argvs(plans_of(facts)) == [("sysctl", "-w", "net.ipv4.ip_forward=1")]


def test_forward_drop_without_bridge_nf_and_one_backend_are_fine() -> None:
    facts = healthy(net())
    facts.sysctl["bridge-nf-call-iptables"] = "0"
    facts.iptables = doctor.Iptables(facts.iptables.chains, {("filter", "FORWARD"): "DROP"}, facts.iptables.rules)
    facts.backends_with_rules = {"legacy": False, "nft": True}
    assert checks(facts) == []


def test_internal_network_needs_no_forwarding() -> None:
    facts = healthy(net(internal=True))
    facts.sysctl["ip_forward"] = "0"
    assert checks(facts) == []


# -- networks ----------------------------------------------------------------------------------------
def test_missing_masquerade_names_the_exact_rule_and_gc_reruns_the_create_plan() -> None:
    n1 = net()
    facts = healthy(n1)
    masq = [r for r in facts.iptables.rules if r.target == ipt.MASQ_CHAIN and r.comment == "wrapdock:network=n1"]
    assert len(masq) == 1
    facts.iptables = doctor.Iptables(facts.iptables.chains, {}, tuple(r for r in facts.iptables.rules if r not in masq))
    found = doctor.findings(facts, doctor.assess(facts))
    assert [(f.check, f.subject, f.severity) for f in found] == [("network-masquerade-missing", "n1", "error")]
    assert found[0].fix[0] == ("iptables -w -t nat -A WRAPDOCK-POSTROUTING -s 10.77.0.0/24 '!' -o n1 -m comment "
                               "--comment wrapdock:network=n1 -j WRAPDOCK-MASQ")
    (action,) = plans_of(facts)
    assert action.summary == ["repaired network n1 (1 rule(s) missing)"]
    steps = action.plan.steps
    assert steps[0].argv == ("sh", "-s")  # the bridge, its alias, address and state, each an ensure
    assert steps[0].stdin == ("set -e", "[ -d /sys/class/net/n1/bridge ] || ip link add name n1 type bridge",
                              "ip link set dev n1 alias wrapdock:network=n1", "ip addr replace 10.77.0.1/24 dev n1",
                              "ip link set dev n1 up", "sysctl -w net/ipv4/conf/n1/route_localnet=1")
    assert "gc: the state has network n1" in steps[0].note
    assert all(s.skip_if for s in steps if s.argv[:2] == ("iptables", "-w"))  # every rule step an ensure


def test_other_missing_rules_and_incomplete_bridge() -> None:
    n1 = net()
    facts = healthy(n1)
    facts.iptables = doctor.Iptables(facts.iptables.chains, {}, tuple(
        r for r in facts.iptables.rules if not (r.chain == ipt.ISO_IN_CHAIN and r.comment)))
    facts.links["n1"] = Link("n1", "bridge", up=False, addresses=())
    facts.sysctl["route_localnet.n1"] = "0"
    found = {f.check: f for f in doctor.findings(facts, doctor.assess(facts))}
    assert set(found) == {"network-rules-missing", "network-incomplete"}
    assert found["network-rules-missing"].fix[0].startswith("iptables -w -t filter -A WRAPDOCK-ISO-IN -i n1")
    assert "address 10.77.0.1/24" in found["network-incomplete"].text and "state UP" in found["network-incomplete"].text
    (action,) = plans_of(facts)
    assert action.summary == ["repaired network n1 (no address 10.77.0.1/24, no state UP, no route_localnet=1, "
                              "1 rule(s) missing)"]


def test_bridge_gone_is_rebuilt_and_the_veths_go_back_on_it() -> None:
    n1 = net()
    facts = healthy(n1)
    container(facts, ID_A, "web", n1)
    del facts.links["n1"]
    facts.links[host_ifname(ID_A, 0)] = Link(host_ifname(ID_A, 0), "veth", master=None, netnsid=0)
    facts.routes = []
    assert checks(facts) == [("network-bridge-gone", "n1"), ("container-veth-detached", "web")]
    (action,) = plans_of(facts)
    last = action.plan.steps[-1]
    assert last.argv == ("ip", "-batch", "-")
    assert last.stdin == ("link set dev wdaaaaaaaaaa0 master n1",
                          "link set dev wdaaaaaaaaaa0 type bridge_slave hairpin on", "link set dev wdaaaaaaaaaa0 up")


def test_link_with_the_bridge_name_that_is_no_bridge_is_left_alone() -> None:
    facts = healthy(net())
    facts.links["n1"] = Link("n1", "dummy", addresses=("10.77.0.1/24",))
    assert checks(facts) == [("network-not-a-bridge", "n1")]
    assert plans_of(facts) == []


def test_subnet_overlapping_a_route_of_another_device() -> None:
    facts = healthy(net())
    facts.routes.append(Route(IPv4Network("10.77.0.128/25"), "dummy0", "10.77.0.128/25 dev dummy0"))
    facts.routes.append(Route(IPv4Network("10.78.0.0/24"), "eth0", "10.78.0.0/24 dev eth0"))  # no overlap
    found = doctor.findings(facts, doctor.assess(facts))
    assert [(f.check, f.subject) for f in found] == [("network-overlap", "n1")]
    assert found[0].fix[0] == "ip route del 10.77.0.128/25 dev dummy0  # if it is stale"


def test_skeleton_incomplete_with_networks_and_orphaned_without() -> None:
    facts = healthy(net())
    facts.iptables = doctor.Iptables(facts.iptables.chains, {}, tuple(
        r for r in facts.iptables.rules if not (r.chain == "FORWARD" and r.comment == "wrapdock")))
    assert checks(facts) == [("chains-incomplete", "WRAPDOCK-* chains")]
    assert [a.summary for a in plans_of(facts)] == [["restored wrapdock's shared iptables chains"]]

    bare = healthy()
    bare.iptables = doctor.Iptables(frozenset(skeleton_chains()), {}, tuple(rules_of(ipt.ensure_skeleton())))
    assert checks(bare) == [("chains-orphaned", "WRAPDOCK-* chains")]
    (action,) = plans_of(bare)
    view = bare.iptables
    expected = ipt.remove_skeleton(ipt.from_rules(view.chains, [(r.table, r.chain, r.spec) for r in view.rules]))
    assert [(s.argv, s.stdin) for s in action.plan.steps] == [(s.argv, s.stdin) for s in expected]
    assert [s.stdin[0] for s in expected] == ["*filter", "*nat"] and "-X WRAPDOCK-FORWARD" in expected[0].stdin


def test_a_foreign_rule_in_wrapdock_chains_keeps_them() -> None:
    bare = healthy()
    foreign = Rule("filter", "INPUT", ("-j", "WRAPDOCK-FORWARD"))
    bare.iptables = doctor.Iptables(frozenset(skeleton_chains()), {},
                                    (*rules_of(ipt.ensure_skeleton()), foreign))
    assert checks(bare) == [("chains-foreign-rule", "filter INPUT")]
    assert plans_of(bare) == []


# -- containers -------------------------------------------------------------------------------------
def test_abandoned_container_is_removed_as_rm_f_would() -> None:
    n1 = net()
    facts = healthy(n1)
    container(facts, ID_A, "half", n1, ports=True, phase="creating", owner_pid=4242,
              runtime=Runtime(live=False, owner_alive=False))
    facts.cgroup_layout = CgroupLayout(1, Path("/cg"), "wrapdock", ("memory", "pids"))
    assert checks(facts) == [("container-abandoned", "half")]
    (action,) = plans_of(facts)
    withdraw, cleanup = action.plan.steps
    assert withdraw.argv[:2] == ("sh", "-c") and withdraw.argv[-1] == container_comment(ID_A)  # delete_by_comment
    assert "iptables-save -t nat" in withdraw.argv[2]
    assert "conntrack -D -p tcp --orig-port-dst 8080" in withdraw.argv[2]
    # then one script: the netns, the cgroups, the directory, and the veth last (the netns takes it
    # along: waited for, then deleted if still there), each skipped if gone
    veth, memory, pids = host_ifname(ID_A, 0), f"/cg/memory/wrapdock/{ID_A}", f"/cg/pids/wrapdock/{ID_A}"
    assert cleanup.argv == ("sh", "-s") and not cleanup.only_if
    assert list(cleanup.stdin) == [
        "set -e",
        "[ ! -e /run/netns/half ] || ip netns del half",
        f"[ ! -d {memory} ] || rmdir {memory}",
        f"[ ! -d {pids} ] || rmdir {pids}",
        f"[ ! -d /data/containers/{ID_A} ] || rm -rf --one-file-system /data/containers/{ID_A}",
        f"n=0; while [ -e /sys/class/net/{veth} ] && [ $n -lt 400 ]; do sleep 0.002; n=$((n+1)); done",
        f"[ ! -e /sys/class/net/{veth} ] || ip link del dev {veth}",
    ]
    assert not any("kill" in " ".join(s.argv) for s in action.plan.steps)  # it never started
    assert [(e.kind, e.network) for e in action.edits] == [("release", "n1"), ("forget-container", "")]


def test_container_being_created_by_a_live_wrapdock_is_not_judged() -> None:
    facts = healthy(net())
    container(facts, ID_A, "busy", facts.networks[0], phase="creating", owner_pid=1,
              runtime=Runtime(owner_alive=True), link=False, netns=False)
    assert checks(facts) == []
    assert plans_of(facts) == []


def test_dead_container_gets_its_exit_recorded_and_keeps_its_plumbing() -> None:
    facts = healthy(net())
    container(facts, ID_A, "dead", facts.networks[0], runtime=Runtime(live=False, started=True))
    assert checks(facts) == [("container-exit-unrecorded", "dead")]
    (action,) = plans_of(facts)
    (step,) = action.plan.steps
    exitfile = f"/data/containers/{ID_A}/exit_code"
    assert step.argv == ("sh", "-c", 'echo 255 > "$1"', "wrapdock-exit", exitfile)
    assert step.skip_if == ("test", "-e", exitfile)
    assert action.edits == []


@pytest.mark.parametrize("runtime", [Runtime(live=False, starting=True), Runtime(live=False, started=False),
                                     Runtime(live=True, started=True)], ids=["starting", "never-started", "running"])
def test_no_exit_to_record(runtime: Runtime) -> None:
    facts = healthy(net())
    container(facts, ID_A, "c", facts.networks[0], runtime=runtime)
    assert checks(facts) == []


def test_stopped_container_whose_netns_is_gone_loses_its_endpoint_lease_and_ports() -> None:
    n1 = net()
    facts = healthy(n1)
    record = container(facts, ID_A, "rebooted", n1, ports=True, link=False, netns=False,
                       runtime=Runtime(live=False, started=True, exit_recorded=True))
    facts.iptables = doctor.Iptables(facts.iptables.chains, {}, (
        *facts.iptables.rules, Rule("nat", ipt.DNAT_CHAIN, ("-m", "comment", "--comment", container_comment(ID_A),
                                                            "-j", "DNAT"))))
    assert checks(facts) == [("container-endpoint-gone", "rebooted"), ("container-netns-gone", "rebooted")]
    (action,) = plans_of(facts)
    assert [s.argv[-1] for s in action.plan.steps][:1] == [container_comment(ID_A)]  # its port rules
    assert not any(s.argv[:3] == ("ip", "link", "del") for s in action.plan.steps)  # the veth is gone already
    release, drop = action.edits
    assert (release.kind, release.container, release.network, release.addresses) == ("release", ID_A, "n1", ())
    assert (drop.kind, drop.networks, drop.drop_ports) == ("drop-endpoints", ("n1",), True)
    assert record["endpoints"]  # decide() changes nothing itself


def test_live_container_whose_veth_is_gone_is_only_reported() -> None:
    facts = healthy(net())
    container(facts, ID_A, "web", facts.networks[0], link=False)
    assert checks(facts) == [("container-veth-gone", "web")]
    assert plans_of(facts) == []


def test_endpoint_on_a_network_without_record_is_dropped_even_when_running() -> None:
    facts = healthy(net())
    ghost = net("ghostnet", "10.90.0.0/24")
    container(facts, ID_A, "web", ghost, address="10.90.0.2")
    assert checks(facts) == [("container-endpoint-gone", "web")]
    (action,) = plans_of(facts)
    assert [s.argv for s in action.plan.steps] == [("ip", "link", "del", "dev", host_ifname(ID_A, 0))]


# -- orphans -----------------------------------------------------------------------------------------
def test_orphaned_veth_and_the_netns_holding_its_peer() -> None:
    facts = healthy()
    facts.links.update({
        "wd01234567890": Link("wd01234567890", "veth", netnsid=7),
        "wd0123456789": Link("wd0123456789", "veth", netnsid=8),  # no interface number: not wrapdock's name
        "wd01234567891": Link("wd01234567891", "bridge"),  # not a veth
        "vethfoo": Link("vethfoo", "veth", netnsid=9),
    })
    facts.netns = {"ghost": 7, "other": 8, "foreign": 9, "noid": None}
    assert checks(facts) == [("orphan-veth", "wd01234567890"), ("orphan-netns", "ghost")]
    veth, netns = plans_of(facts)  # one repair each
    assert (veth.task, netns.task) == ("delete veth wd01234567890", "delete network namespace ghost")
    assert argvs([veth, netns]) == [("ip", "link", "del", "dev", "wd01234567890"), ("ip", "netns", "del", "ghost")]


def test_orphaned_rules_and_the_bridge_only_they_name() -> None:
    facts = healthy(net())
    tagged = Rule("filter", ipt.FORWARD_CHAIN, ("-i", "oldbr", "-o", "oldbr", "-m", "comment", "--comment",
                                                "wrapdock:network=old", "-j", "ACCEPT"))
    dnat = Rule("nat", ipt.DNAT_CHAIN, ("-p", "tcp", "--dport", "80", "-m", "comment", "--comment",
                                        container_comment(ID_GHOST), "-j", "DNAT"))
    foreign = Rule("filter", "FORWARD", ("-i", "foreignbr", "-j", "ACCEPT"))
    tagged_foreign = Rule("filter", "FORWARD", ("-i", "sharedbr", "-m", "comment", "--comment",
                                                "wrapdock:network=old", "-j", "ACCEPT"))
    foreign_shared = Rule("filter", "INPUT", ("-i", "sharedbr", "-j", "ACCEPT"))
    facts.iptables = doctor.Iptables(facts.iptables.chains, {}, (*facts.iptables.rules, tagged, dnat, foreign,
                                                                 tagged_foreign, foreign_shared))
    facts.links.update({"oldbr": Link("oldbr", "bridge"), "foreignbr": Link("foreignbr", "bridge"),
                        "sharedbr": Link("sharedbr", "bridge"),
                        "wdc0ffee00000": Link("wdc0ffee00000", "veth", master="oldbr")})
    found = checks(facts)
    assert ("orphan-rules", "wrapdock:network=old") in found
    assert ("orphan-rules", container_comment(ID_GHOST)) in found
    assert ("orphan-bridge", "oldbr") in found
    assert not any("foreignbr" in subject or "sharedbr" in subject for _, subject in found)
    actions = plans_of(facts)
    assert len(actions) == 4  # one repair per rule tag, veth and bridge
    commands = argvs(actions)
    assert [c[-1] for c in commands[:2]] == sorted(["wrapdock:network=old", container_comment(ID_GHOST)])
    assert commands[2:] == [("ip", "link", "del", "dev", "wdc0ffee00000"), ("ip", "link", "del", "dev", "oldbr")]


def test_bridge_with_a_foreign_port_is_not_provably_wrapdocks() -> None:
    facts = healthy()
    tagged = Rule("filter", "FORWARD", ("-i", "oldbr", "-m", "comment", "--comment", "wrapdock:network=old",
                                        "-j", "ACCEPT"))
    facts.iptables = doctor.Iptables(frozenset(), {}, (tagged,))
    facts.links.update({"oldbr": Link("oldbr", "bridge"), "eth1": Link("eth1", "veth", master="oldbr")})
    assert checks(facts) == [("orphan-rules", "wrapdock:network=old")]


def test_orphaned_cgroups_directories_processes_and_mounts() -> None:
    facts = healthy()
    ghost_dir = DATA / "containers" / ID_GHOST
    facts.cgroups = {ID_GHOST: [Path(f"/cg/pids/wrapdock/{ID_GHOST}")], ID_B: [Path(f"/cg/pids/wrapdock/{ID_B}")],
                     ID_A: [Path(f"/cg/pids/wrapdock/{ID_A}")]}
    facts.busy_cgroups = {Path(f"/cg/pids/wrapdock/{ID_GHOST}"), Path(f"/cg/pids/wrapdock/{ID_B}")}
    facts.container_dirs = {ID_GHOST: ghost_dir}
    facts.dir_pids = {ID_GHOST: 321}
    facts.mounts = [Mount("wrapdock-commit-x", f"{ghost_dir}/commit", "overlay"),
                    Mount("wrapdock-other", "/mnt/elsewhere", "tmpfs")]
    found = checks(facts)
    assert found == [("orphan-process", ID_GHOST[:12]), ("orphan-cgroup", f"/cg/pids/wrapdock/{ID_A}"),
                     ("orphan-cgroup", f"/cg/pids/wrapdock/{ID_GHOST}"),
                     ("orphan-cgroup-busy", f"/cg/pids/wrapdock/{ID_B}"), ("orphan-dir", str(ghost_dir)),
                     ("leftover-mount", f"{ghost_dir}/commit"), ("leftover-mount", "/mnt/elsewhere")]
    unmount, process, *cgroups = plans_of(facts)
    assert [s.argv for s in unmount.plan.steps] == [("umount", f"{ghost_dir}/commit")]  # not the one outside
    commands = [s.argv for s in process.plan.steps]  # its directory goes once the process is gone
    assert commands[0][-2:] == ("wrapdock-kill", f"{ghost_dir}/pid")
    assert commands[1:] == [("rm", "-rf", "--one-file-system", str(ghost_dir))]
    # the busy cgroup is tried too, on its own: its rmdir fails (busy) and gc names it
    assert [a.task for a in cgroups] == [f"remove cgroup /cg/pids/wrapdock/{i}" for i in (ID_A, ID_GHOST, ID_B)]
    assert argvs(cgroups) == [("rmdir", f"/cg/pids/wrapdock/{i}") for i in (ID_A, ID_GHOST, ID_B)]


def test_image_layers_no_image_names_are_orphans_unless_an_image_record_is_unreadable() -> None:
    used, unused = "a" * 64, "b" * 64
    facts = healthy()
    facts.layer_dirs = {used: DATA / "layers" / used, unused: DATA / "layers" / unused,
                        f"{used}.partial": DATA / "layers" / f"{used}.partial"}
    facts.layer_links = {used[:20]: DATA / "l" / used[:20], unused[:20]: DATA / "l" / unused[:20]}
    facts.used_layers = {used}
    assert checks(facts) == [("orphan-layer", str(DATA / "l" / unused[:20])),
                             ("orphan-layer", str(DATA / "layers" / f"{used}.partial")),
                             ("orphan-layer", str(DATA / "layers" / unused))]
    assert argvs(plans_of(facts)) == [("rm", "-rf", "--one-file-system", str(p)) for p in (
        DATA / "l" / unused[:20], DATA / "layers" / f"{used}.partial", DATA / "layers" / unused)]
    facts.used_layers = None  # an image record could not be read: no layer is provably unused
    assert checks(facts) == []


def test_orphaned_leases_and_allocations() -> None:
    n1 = net()
    facts = healthy(n1)
    container(facts, ID_A, "web", n1)
    RecordStore(facts.ipam["n1"]).put("10.77.0.9", ID_GHOST, round_robin=False)  # holder has no record
    RecordStore(facts.ipam["n1"]).put("10.77.0.10", ID_A, round_robin=False)  # holder does not list it
    facts.ipam["gone"] = RecordStore.new_record("gone", IPv4Network("10.80.0.0/24"), IPv4Address("10.80.0.1"))
    assert checks(facts) == [("orphan-lease", "n1 10.77.0.10"), ("orphan-lease", "n1 10.77.0.9"),
                             ("orphan-ipam", "gone")]
    (action,) = plans_of(facts)
    assert action.plan is None
    assert [(e.kind, e.network, e.container, e.addresses) for e in action.edits] == [
        ("release", "n1", ID_A, ("10.77.0.10",)), ("release", "n1", ID_GHOST, ("10.77.0.9",)),
        ("forget-ipam", "gone", "", ())]


def test_findings_put_errors_first_and_report_broken_state() -> None:
    facts = healthy()
    facts.links["wd01234567890"] = Link("wd01234567890", "veth")
    facts.broken_state = ["/s/containers/x.json: not valid JSON"]
    found = doctor.findings(facts, doctor.assess(facts))
    assert [(f.severity, f.check) for f in found] == [("error", "state-broken"), ("warning", "orphan-veth")]


# -- gc's state edits ---------------------------------------------------------------------------------
def test_apply_edits(tmp_path: Path) -> None:
    from wrapdock.session import Session

    session = Session(state_dir=tmp_path / "state", data_dir=tmp_path / "data")
    n1 = net()
    store = StateStore(tmp_path / "state")
    store.put("network", "n1", n1.to_record())
    record = RecordStore.new_record("n1", n1.subnet, n1.gateway)
    for address, owner in (("10.77.0.2", ID_A), ("10.77.0.3", ID_A), ("10.77.0.4", ID_B)):
        RecordStore(record).put(address, owner, round_robin=True)
    store.put("ipam", "n1", record)
    gc.apply_edit(session, gc.Edit("release", "", container=ID_A, network="n1", addresses=("10.77.0.3", "10.77.0.4")))
    held = lambda: LeaseStore.of(store, "n1").held()  # noqa: E731 (wrapdock/leases.py: one file per lease)
    assert held() == {"10.77.0.2", "10.77.0.4"}  # only its own
    assert store.get("ipam", "n1")["allocations"] == {}  # an earlier wrapdock's list: moved into lease files
    gc.apply_edit(session, gc.Edit("release", "", container=ID_A, network="n1"))
    assert held() == {"10.77.0.4"}
    gc.apply_edit(session, gc.Edit("release", "", container=ID_A, network="absent"))  # nothing to do
    gc.apply_edit(session, gc.Edit("forget-ipam", "", network="n1"))
    assert store.get("ipam", "n1") is None and store.get("network", "n1") is not None
    assert store.names("lease") == []


# -- gc goes on past a repair that fails --------------------------------------------------------------
BUSY = "rmdir: failed to remove '/cg/pids/wrapdock/{}': Device or resource busy"


def orphans_with_a_busy_cgroup() -> Facts:
    """Leftovers of unrecorded containers: a rule tag, a veth, two cgroups, a directory, a network's leases."""
    facts = healthy()
    dnat = Rule("nat", ipt.DNAT_CHAIN, ("-p", "tcp", "--dport", "80", "-m", "comment", "--comment",
                                        container_comment(ID_GHOST), "-j", "DNAT"))
    facts.iptables = doctor.Iptables(facts.iptables.chains, {}, (*facts.iptables.rules, dnat))
    facts.links["wd01234567890"] = Link("wd01234567890", "veth")
    facts.cgroups = {ID_GHOST: [Path(f"/cg/pids/wrapdock/{ID_GHOST}")], ID_B: [Path(f"/cg/pids/wrapdock/{ID_B}")]}
    facts.container_dirs = {ID_B: DATA / "containers" / ID_B}
    facts.ipam["gone"] = RecordStore.new_record("gone", IPv4Network("10.80.0.0/24"), IPv4Address("10.80.0.1"))
    return facts


def gc_on_a_fake_host(monkeypatch, tmp_path: Path, facts: Facts, host: FakeHost,
                      print_only: bool = False) -> tuple[gc.Outcome, Session, str]:
    """gc.reconcile on hand-made facts, its commands run by the recording fake host (no root needed)."""
    session = Session(state_dir=tmp_path / "state", data_dir=DATA, print_only=print_only)
    trail = io.StringIO()
    session.__dict__["runner"] = Runner(Trail("text", trail), execute=host)
    monkeypatch.setattr(doctor, "gather", lambda session, environment: facts)
    monkeypatch.setattr("wrapdock.session.os.geteuid", lambda: 0)
    return gc.reconcile(session), session, trail.getvalue()


def test_gc_goes_on_past_a_repair_that_fails_and_names_it(monkeypatch, tmp_path: Path) -> None:
    facts = orphans_with_a_busy_cgroup()
    StateStore(tmp_path / "state").put("ipam", "gone", facts.ipam["gone"])
    busy = f"/cg/pids/wrapdock/{ID_GHOST}"
    host = FakeHost(failing={("rmdir", busy): BUSY.format(ID_GHOST)})
    outcome, session, trail = gc_on_a_fake_host(monkeypatch, tmp_path, facts, host)

    # every other repair ran, those after the failing one included, and their state edits were made
    changes = [argv for argv in host.argvs if argv[0] not in ("test", "ip") or argv[:3] == ("ip", "link", "del")]
    assert [c[-1] for c in changes] == [container_comment(ID_GHOST), "wd01234567890", f"/cg/pids/wrapdock/{ID_B}",
                                        busy, str(DATA / "containers" / ID_B)]
    assert outcome.done == [f"deleted 1 iptables rule(s) tagged {container_comment(ID_GHOST)}",
                            "deleted veth wd01234567890", f"removed cgroup /cg/pids/wrapdock/{ID_B}",
                            f"removed directory {DATA / 'containers' / ID_B}",
                            "forgot the allocations of network gone, which has no record"]
    assert session.state.get("ipam", "gone") is None
    # the one that failed: named with its command and that command's error, and in the trail
    assert outcome.failed == [f"remove cgroup {busy}: `rmdir {busy}` failed (exit 1): {BUSY.format(ID_GHOST)}"]
    lines = trail.splitlines()
    assert lines[lines.index(f"+ if test -d {busy}; then rmdir {busy}; fi") + 1] == (
        f"  (failed (exit 1): {BUSY.format(ID_GHOST)}; gc goes on with its other repairs)")


def test_gc_rolls_back_only_the_repair_that_failed(monkeypatch, tmp_path: Path) -> None:
    """A repair of several steps that fails half-way undoes its own steps, and only those; its state edits
    wait for a gc in which it succeeds."""
    n1 = net()
    facts = healthy(n1)
    facts.links.pop(n1.bridge)  # the bridge is gone: gc re-runs n1's create plan
    facts.links["wd01234567890"] = Link("wd01234567890", "veth")
    view = facts.iptables  # and its rules: the plan adds them, one iptables-restore per table
    facts.iptables = doctor.Iptables(view.chains, {}, tuple(r for r in view.rules
                                                          if r.comment != "wrapdock:network=n1"))
    rules = [s for s in gc.decide(facts, doctor.assess(facts))[-1].plan.steps if s.undo is not None]
    added, failing = rules[0], rules[1]
    assert added.argv[0] == "sysctl" and failing.argv == ipt.RESTORE and failing.stdin[0] == "*filter"
    host = FakeHost(failing={failing.argv: "iptables: No chain/target/match by that name."})
    host.declare_probes(s.skip_if for s in rules if s.skip_if)  # every rule missing: each ensure adds it
    outcome, _, trail = gc_on_a_fake_host(monkeypatch, tmp_path, facts, host)
    assert outcome.done == ["deleted veth wd01234567890"]
    (failed,) = outcome.failed
    assert failed.startswith(f"repair network n1: `{brief(failing.argv)}` failed (exit 1): iptables: No chain")
    # one restore for both tables, which may have applied filter's block before nat's failed: its undo checks
    # each table for its block's first rule and deletes the blocks that went in; then the step before it
    assert failing.partial and failing.undo is not None and failing.undo.argv == ("sh", "-s")
    assert failed.endswith("; rolled back 2 step(s)")
    assert host.argvs[-2:] == [failing.undo.argv, added.undo.argv]  # what this repair added, nothing else
    assert "rollback: undo 2 completed step(s), last first" in trail


def test_gc_print_only_keeps_each_repair_on_its_own(monkeypatch, tmp_path: Path) -> None:
    outcome, session, _ = gc_on_a_fake_host(monkeypatch, tmp_path, orphans_with_a_busy_cgroup(), FakeHost(),
                                            print_only=True)
    assert outcome.failed == []
    repairs = [p.repair for p in session.printed if p.steps]
    assert repairs == [f"delete the iptables rules tagged {container_comment(ID_GHOST)}", "delete veth wd01234567890",
                       f"remove cgroup /cg/pids/wrapdock/{ID_B}", f"remove cgroup /cg/pids/wrapdock/{ID_GHOST}",
                       f"remove directory {DATA / 'containers' / ID_B}"]
    script = render_script(session.printed, ["gc"])
    assert f"[ \"$repair_status\" -eq 0 ] || failed_repairs+=('remove cgroup /cg/pids/wrapdock/{ID_GHOST}')" in script


# -- the CLI -----------------------------------------------------------------------------------------
FINDING = Finding("warning", "orphan-veth", "wd01234567890", "veth wd01234567890 is wrapdock's but no container "
                  "owns it", ("ip link del wd01234567890",))


@pytest.mark.parametrize(("found", "code"), [([], 0), ([FINDING], 1)])
def test_doctor_cli_exit_code_and_formats(monkeypatch, capsys, tmp_path: Path, found: list, code: int) -> None:
    monkeypatch.setattr(doctor, "examine", lambda session: found)
    assert main(["--state-dir", str(tmp_path), "doctor"]) == code
    out = capsys.readouterr().out
    if found:
        assert out.split("\n")[0].split() == ["SEVERITY", "FINDING", "FIX"]
        assert "ip link del wd01234567890" in out
    else:
        assert out == "no problems found\n"
    assert main(["--state-dir", str(tmp_path), "doctor", "--format", "json"]) == code
    assert json.loads(capsys.readouterr().out) == [f.to_dict() for f in found]


def test_gc_cli_names_each_failed_repair_on_stderr_and_exits_1(monkeypatch, capsys, tmp_path: Path) -> None:
    failed = [f"remove cgroup /cg/{ID_GHOST}: `rmdir /cg/{ID_GHOST}` failed (exit 1): rmdir: ... busy",
              f"remove cgroup /cg/{ID_B}: `rmdir /cg/{ID_B}` failed (exit 1): rmdir: ... busy"]
    monkeypatch.setattr(gc, "reconcile", lambda session: gc.Outcome(["deleted veth wd01234567890"], failed))
    for args, out in ((["gc"], "deleted veth wd01234567890\n"),
                      (["gc", "--format", "json"], json.dumps(["deleted veth wd01234567890"], indent=2) + "\n")):
        assert main(["--state-dir", str(tmp_path), *args]) == 1
        captured = capsys.readouterr()
        assert captured.out == out
        assert captured.err.splitlines() == [f"wrapdock: error: gc could not {line}" for line in failed]
    monkeypatch.setattr(gc, "reconcile", lambda session: gc.Outcome([], failed[:1]))
    assert main(["--state-dir", str(tmp_path), "gc"]) == 1
    assert capsys.readouterr().out == ""  # not "nothing to do"


def test_gc_cli_reports_what_it_did(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(gc, "reconcile", lambda session: gc.Outcome())
    assert main(["--state-dir", str(tmp_path), "gc"]) == 0
    assert capsys.readouterr().out == "nothing to do: the state and the host agree\n"
    monkeypatch.setattr(gc, "reconcile", lambda session: gc.Outcome(["deleted veth wd01234567890"]))
    assert main(["--state-dir", str(tmp_path), "gc", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["deleted veth wd01234567890"]
