"""doctor's overlay checks and gc's FDB repair, from hand-made facts (no host, no root, no commands)."""

from __future__ import annotations

import json
from dataclasses import replace

from tests.unit.test_doctor import container, healthy
from tests.unit.test_plans_vxlan import overlay
from wrapdock import doctor, gc, overlaycheck
from wrapdock.doctor import Facts, Link
from wrapdock.overlaycheck import Probe, VxlanInfo
from wrapdock.plans import vxlan as vxlan_plans
from wrapdock.plans.vxlan import ALL_ZEROS, FdbEntry

NETWORK = overlay()  # ov: VNI 42 on port 4789, VTEP 198.51.100.11 on ul0, peers .12 and .13, MTU 1450
VX = NETWORK.vxlan
assert VX is not None
CID = "a" * 64


def healthy_overlay() -> Facts:
    """The overlay exactly as create left it: device, bridge, flood list, both peers answering."""
    facts = healthy(NETWORK)
    facts.links["ov"] = replace(facts.links["ov"], mtu=1450)
    facts.links["ul0"] = Link("ul0", "veth", addresses=("198.51.100.11/24",), mtu=1500)
    facts.links[VX.device] = Link(VX.device, "vxlan", master="ov", mtu=1450, mac=VX.mac,
                                  vxlan=VxlanInfo(42, 4789, "198.51.100.11", "ul0", False))
    facts.overlay.fdb["ov"] = [FdbEntry(ALL_ZEROS, str(p), True) for p in VX.peers]
    facts.overlay.probes["ov"] = [Probe(str(p), True) for p in VX.peers]
    return facts


def found(facts: Facts) -> dict[str, doctor.Finding]:
    return {f.check: f for f in doctor.findings(facts, doctor.assess(facts)) if f.check.startswith("overlay-")}


def test_parse_vxlan_info_reads_ip_d_link() -> None:
    entry = json.loads('{"ifname": "wdvx42", "mtu": 1450, "address": "02:ff:c6:33:64:0b", "linkinfo": '
                       '{"info_kind": "vxlan", "info_data": {"id": 42, "local": "198.51.100.11", "link": "ul0", '
                       '"port": 4789, "learning": true}}}')
    assert overlaycheck.parse_vxlan_info(entry) == VxlanInfo(42, 4789, "198.51.100.11", "ul0", False)
    meta = {"linkinfo": {"info_kind": "vxlan", "info_data": {"external": True, "id": 0, "port": 4789}}}
    assert overlaycheck.parse_vxlan_info(meta) == VxlanInfo(0, 4789, None, None, True)
    assert overlaycheck.parse_vxlan_info({"linkinfo": {"info_kind": "bridge"}}) is None
    link = doctor.parse_links(json.dumps([{**entry, "flags": ["UP"], "master": "ov"}]))["wdvx42"]
    assert (link.mtu, link.mac, link.vxlan) == (1450, "02:ff:c6:33:64:0b", VxlanInfo(42, 4789, "198.51.100.11",
                                                                                     "ul0", False))


def test_a_healthy_overlay_has_no_finding_and_gc_leaves_it_alone() -> None:
    facts = healthy_overlay()
    assert found(facts) == {}
    assert [a.task for a in gc.decide(facts, doctor.assess(facts))] == []


def test_the_flood_list_against_the_peers_and_gc_runs_the_sync_diff() -> None:
    facts = healthy_overlay()
    facts.overlay.fdb["ov"] = [FdbEntry(ALL_ZEROS, "198.51.100.12", True),  # .13 missing
                               FdbEntry(ALL_ZEROS, "198.51.100.14", True),  # a half-done join
                               FdbEntry("02:42:0a:d2:0e:02", "198.51.100.14", False),  # learned behind it
                               FdbEntry("02:42:0a:d2:0c:02", "198.51.100.12", False)]  # learned, a peer: kept
    facts.overlay.bridge_macs["ov"] = frozenset({"02:42:0a:d2:0e:02", "02:42:0a:d2:0c:02"})
    got = found(facts)
    assert set(got) == {"overlay-fdb-missing", "overlay-fdb-stale"}
    assert "198.51.100.13" in got["overlay-fdb-missing"].text and got["overlay-fdb-missing"].severity == "error"
    assert "flood entries to 198.51.100.14 and 1 learned MAC(s) behind 198.51.100.14" in got["overlay-fdb-stale"].text
    assert got["overlay-fdb-stale"].fix[0] == "wrapdock network sync ov"
    actions = gc.decide(facts, doctor.assess(facts))
    assert [a.task for a in actions] == ["sync the FDB of overlay ov"]
    assert [s.argv for s in actions[0].plan.steps] == [
        ("bridge", "fdb", "append", ALL_ZEROS, "dev", "wdvx42", "dst", "198.51.100.13", "self", "permanent"),
        ("bridge", "fdb", "del", ALL_ZEROS, "dev", "wdvx42", "dst", "198.51.100.14", "self"),
        ("bridge", "fdb", "del", "02:42:0a:d2:0e:02", "dev", "wdvx42", "dst", "198.51.100.14", "self"),
        ("bridge", "fdb", "del", "02:42:0a:d2:0e:02", "dev", "wdvx42", "master")]  # the bridge's entry too
    # learned entries age out by themselves: each delete is guarded, it cannot fail on a vanished entry
    assert actions[0].plan.steps[2].only_if == ("bridge", "fdb", "get", "02:42:0a:d2:0e:02", "dev", "wdvx42", "self")


def test_parse_bridge_macs_keeps_what_the_bridge_learned_on_the_port() -> None:
    text = json.dumps([{"mac": "02:42:0a:00:00:05", "master": "ov", "state": ""},
                       {"mac": "c2:05:b2:41:c2:2a", "master": "ov", "state": "permanent"},
                       {"mac": "02:42:0a:00:00:05", "dst": "198.51.100.13", "flags": ["self"], "state": ""}])
    assert vxlan_plans.parse_bridge_macs(text) == frozenset({"02:42:0a:00:00:05"})


def test_vtep_mac_mtu_and_other_devices_on_the_port() -> None:
    facts = healthy_overlay()
    facts.links["ul0"] = replace(facts.links["ul0"], addresses=(), mtu=1400)
    facts.links[VX.device] = replace(facts.links[VX.device], mac="02:AA:BB:CC:DD:EE")
    facts.links["vxother"] = Link("vxother", "vxlan", vxlan=VxlanInfo(42, 4789, None, "ul0", False))
    facts.links["vxmeta"] = Link("vxmeta", "vxlan", vxlan=VxlanInfo(0, 4789, None, None, True))
    facts.links["vxelse"] = Link("vxelse", "vxlan", vxlan=VxlanInfo(42, 8472, None, None, False))  # other port: fine
    container(facts, CID, "web", NETWORK, address="10.210.11.2")
    facts.overlay.inner_mtu[("web", "ov")] = ("web", "eth0", 1450)
    got = found(facts)
    assert set(got) == {"overlay-vtep-changed", "overlay-mac-changed", "overlay-mtu", "overlay-vni-clash",
                        "overlay-port-shared"}
    assert "VTEP address 198.51.100.11 is no longer on ul0" in got["overlay-vtep-changed"].text
    assert got["overlay-mac-changed"].fix == ("ip link set dev wdvx42 address 02:ff:c6:33:64:0b",)
    mtu = got["overlay-mtu"]
    assert "1400 - 50 = 1350" in mtu.text and "the network itself has MTU 1450" in mtu.text
    assert {"ip link set dev wdvx42 mtu 1350", "ip link set dev ov mtu 1350",
            "ip -n web link set dev eth0 mtu 1350"} <= set(mtu.fix)
    assert "vxother" in got["overlay-vni-clash"].text and "vxelse" not in got["overlay-vni-clash"].text
    assert "vxmeta" in got["overlay-port-shared"].text


def test_a_silent_peer_and_a_probe_that_could_not_run_are_both_errors() -> None:
    facts = healthy_overlay()
    facts.overlay.probes["ov"] = [Probe("198.51.100.12", False), Probe("198.51.100.13", False, "exit 1: sendto: "
                                                                       "Network is unreachable")]
    got = found(facts)
    assert set(got) == {"overlay-peer-silent", "overlay-probe-failed"}
    assert all(f.severity == "error" for f in got.values())
    assert "198.51.100.12" in got["overlay-peer-silent"].text
    assert "network leave ov --host 198.51.100.12 --force" in got["overlay-peer-silent"].fix[1]
    assert "Network is unreachable" in got["overlay-probe-failed"].text


def test_probe_argv_is_bounded() -> None:
    argv = overlaycheck.probe_argv("/bin/busybox", VX.vtep, VX.peers[0])
    assert argv == ("/bin/busybox", "ping", "-c", "1", "-W", "2", "-I", "198.51.100.11", "198.51.100.12")
