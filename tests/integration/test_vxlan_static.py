"""A vxlan network with static peers across sandbox hosts: real containers, real VXLAN packets.

Each host is a sandbox host (its own net, mount and pid namespaces, its own /run and wrapdock state).
The underlay is a veth pair straight between two hosts' network namespaces (198.51.100.0/24; both
ends are created directly inside the sandboxes, the machine's own namespace never holds one). Each
host also has its `outside` namespace (203.0.113.1) behind its uplink, with no route back to the
overlay: a container reaches it only through its own host's NAT.
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tests.integration.containerlab import wait_for
from tests.integration.ctnet import SLEEP, Host, assert_nothing_left, web_root
from tests.integration.netlab import changing_commands, error_line
from tests.sandbox import OUTSIDE_IP, OUTSIDE_NS
from wrapdock.shell import brief

pytestmark = pytest.mark.integration

NET, SUBNET, VNI = "ov", "10.210.0.0/16", "4242"
VTEP = {1: "198.51.100.11", 2: "198.51.100.12"}
RANGE = {1: "10.210.11.0/24", 2: "10.210.12.0/24"}  # derived: VTEP address mod 256 blocks of /24
UNDERLAY_MTU, OVERLAY_MTU = 1500, 1450
DEVICE = f"wdvx{VNI}"


def underlay(one, two) -> None:
    """A veth pair `ul0` between two sandbox hosts, addressed from 198.51.100.0/24.

    Made from inside the first host's network namespace only (nsenter -n, the machine's PID namespace,
    where the second host's PID means something): the peer end is created directly in the second host.
    """
    subprocess.run(["nsenter", "-t", str(one.pid), "-n", "--", "ip", "link", "add", "ul0", "mtu", str(UNDERLAY_MTU),
                    "type", "veth", "peer", "name", "ul0", "netns", str(two.pid), "mtu", str(UNDERLAY_MTU)],
                   check=True, capture_output=True, timeout=30)
    for box, address in ((one, VTEP[1]), (two, VTEP[2])):
        box.sh("ip", "addr", "add", f"{address}/24", "dev", "ul0")
        box.sh("ip", "link", "set", "ul0", "up")
    for box in (one, two):
        wait_carrier(box, "ul0")


def wait_carrier(box, *links: str) -> None:
    """The carrier flag comes a moment after `up`: a snapshot taken before it would differ from a later one."""
    for link in links:
        wait_for(lambda link=link: "LOWER_UP" in json.loads(box.sh("ip", "-j", "link", "show", "dev", link).stdout)[0]
                 ["flags"], what=f"{link}'s carrier")


def create(host: Host, index: int, *extra: str) -> None:
    peer = VTEP[3 - index]
    host.wd("--quiet", "network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI,
            "--vtep", VTEP[index], "--peer", peer, *extra, NET)


def usage_error(box, *args: str) -> str:
    """Refused: exit 2, one error line, last; before it only the trail of what was read."""
    return error_line(box.wrapdock(*args, check=False), 2)


def her_entries(box) -> list[str]:
    """The VXLAN device's flood list: the peers' VTEP addresses."""
    entries = json.loads(box.sh("bridge", "-j", "fdb", "show", "dev", DEVICE).stdout or "[]")
    return sorted(e["dst"] for e in entries if e["mac"] == "00:00:00:00:00:00")


@pytest.fixture
def hosts(sandbox_factory):
    boxes = [sandbox_factory(), sandbox_factory()]
    for box in boxes:
        box.add_outside()
    underlay(*boxes)
    return [Host(box) for box in boxes]


def test_containers_on_two_hosts_talk_over_the_overlay_and_leave_through_their_own_host(hosts, tmp_path):
    one, two = hosts
    under = [h.sandbox.snapshot() for h in (one, two)]  # with the underlay: what `network rm` comes back to
    create(one, 1)
    create(two, 2)
    one.run("--name", "a", "--net", NET, *SLEEP)
    two.run("--name", "b", "--net", NET, "-p", "8080:80", "-v", f"{web_root(tmp_path, 'b')}:/www",
            "busybox", "httpd", "-f", "-p", "80", "-h", "/www")
    a, b = one.address("a", NET), two.address("b", NET)
    # each host hands out addresses from its own range, with its own local IPAM
    assert a.startswith("10.210.11.") and b.startswith("10.210.12."), (a, b)

    # the view: driver, scope, VTEP, peers, this host's range
    view = one.network_view(NET)
    assert (view["driver"], view["scope"], view["gateway"], view["mtu"]) == ("vxlan", "local", "10.210.11.1",
                                                                              OVERLAY_MTU)
    assert {k: view["vxlan"][k] for k in ("vni", "port", "vtep", "underlay", "peers", "host_range", "mac")} == {
        "vni": int(VNI), "port": 4789, "vtep": VTEP[1], "underlay": "ul0", "peers": [VTEP[2]],
        "host_range": RANGE[1], "mac": "02:ff:c6:33:64:0b"}
    device = json.loads(one.sandbox.sh("ip", "-j", "-d", "link", "show", "dev", DEVICE).stdout)[0]
    info = device["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"], info["link"]) == (int(VNI), 4789, VTEP[1], "ul0")
    assert (device["address"], device["mtu"], device["master"]) == ("02:ff:c6:33:64:0b", OVERLAY_MTU, NET)

    # real packets across hosts, both ways, by address
    assert one.ping("a", b) and two.ping("b", a)
    # MTU underlay - 50 on the containers' eth0 and every link of the overlay on the host; a packet of
    # exactly that size crosses (a bridged path drops a larger one silently: no fragmentation)
    assert one.inside("a", "cat", "/sys/class/net/eth0/mtu").stdout.strip() == str(OVERLAY_MTU)
    ports = json.loads(one.sandbox.sh("ip", "-j", "link", "show", "master", NET).stdout)
    assert sorted(p["ifname"].startswith("wd") for p in ports) == [True, True]  # the device and a's veth
    assert {p["mtu"] for p in ports} == {OVERLAY_MTU}
    assert json.loads(one.sandbox.sh("ip", "-j", "link", "show", "dev", NET).stdout)[0]["mtu"] == OVERLAY_MTU
    assert one.inside("a", "ping", "-c1", "-W3", "-s", str(OVERLAY_MTU - 28), b).returncode == 0

    # TCP across hosts, with the container's own address (no NAT inside the overlay); b's published port
    # on the host where b runs, from the other host over the underlay
    one.wait_http(f"http://{b}/", "b", where="a")
    assert one.remote_addr("a", f"http://{b}/cgi-bin/ip") == a
    one.wait_http(f"http://{VTEP[2]}:8080/", "b")
    assert one.fetch("host", f"http://{VTEP[1]}:8080/") is None  # published on b's host only

    # the outside, which has no route back to the overlay, answers only thanks to each host's NAT
    assert one.sandbox.sh("ip", "-n", OUTSIDE_NS, "route", "get", a, check=False).returncode != 0
    assert one.ping("a", OUTSIDE_IP) and two.ping("b", OUTSIDE_IP)

    # the control: without the flood list (the FDB entries) nothing crosses, learned entries or not
    one.sandbox.sh("bridge", "fdb", "del", "00:00:00:00:00:00", "dev", DEVICE, "dst", VTEP[2], "self")
    one.sandbox.sh("bridge", "fdb", "flush", "dev", DEVICE, "self", "dynamic")
    one.sandbox.sh("ip", "neigh", "flush", "dev", NET)
    assert one.inside("a", "ip", "neigh", "flush", "dev", "eth0").returncode == 0
    assert not one.ping("a", b, wait=1)
    # sync finds exactly that entry missing, puts it back, and a second sync has nothing to do
    synced = one.wd("network", "sync", NET)
    assert f"bridge fdb append 00:00:00:00:00:00 dev {DEVICE} dst {VTEP[2]} self permanent" in synced.stderr
    assert synced.stdout.strip() == f"{NET}: 1 change(s)"
    assert her_entries(one.sandbox) == [VTEP[2]]
    assert one.ping("a", b)
    again = one.wd("network", "sync", NET)
    assert again.stdout.strip() == f"{NET}: in sync, nothing to do"
    assert "fdb append" not in again.stderr and "fdb del" not in again.stderr

    one.wd("--quiet", "rm", "-f", "a")
    two.wd("--quiet", "rm", "-f", "b")
    for host, start in zip((one, two), under, strict=True):
        host.wd("--quiet", "network", "rm", NET)
        assert_nothing_left(host.sandbox, start)


def test_join_leave_and_sync_change_only_the_flood_list(hosts):
    one, _two = hosts
    start = one.sandbox.snapshot()
    create(one, 1)
    assert her_entries(one.sandbox) == [VTEP[2]]
    joined = one.wd("network", "join", NET, "--peer", "198.51.100.13")
    assert joined.stdout.strip() == f"{NET}: 1 change(s)"
    assert her_entries(one.sandbox) == [VTEP[2], "198.51.100.13"]
    assert one.network_view(NET)["vxlan"]["peers"] == [VTEP[2], "198.51.100.13"]
    left = one.wd("network", "leave", NET, "--host", "198.51.100.13", "--force")
    assert "bridge fdb del 00:00:00:00:00:00 dev " + DEVICE + " dst 198.51.100.13 self" in left.stderr
    assert her_entries(one.sandbox) == [VTEP[2]]
    # an entry nobody asked for (added by hand) is taken off by sync: the desired state wins
    one.sandbox.sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", DEVICE, "dst", "198.51.100.99")
    assert "dst 198.51.100.99" in one.wd("network", "sync", NET).stderr
    assert her_entries(one.sandbox) == [VTEP[2]]
    # bad input changes nothing
    assert "already a peer" in usage_error(one.sandbox, "network", "join", NET, "--peer", VTEP[2])
    assert "own VTEP" in usage_error(one.sandbox, "network", "join", NET, "--peer", VTEP[1])
    assert "not an IPv4 address" in usage_error(one.sandbox, "network", "join", NET, "--peer", "host-3")
    assert "not a peer" in usage_error(one.sandbox, "network", "leave", NET, "--host", "198.51.100.77")
    assert "network rm" in usage_error(one.sandbox, "network", "leave", NET)
    assert her_entries(one.sandbox) == [VTEP[2]]
    one.wd("--quiet", "network", "rm", NET)
    assert_nothing_left(one.sandbox, start)


BAD = [
    (("--vni", "0"), "invalid VNI 0"),
    (("--vni", "16777216"), "invalid VNI 16777216"),
    (("--port", "0"), "invalid VXLAN port 0"),
    (("--port", "70000"), "invalid VXLAN port 70000"),
    (("--host-subnet-size", "16"), "does not fit"),
    (("--host-subnet-size", "31"), "does not fit"),
    (("--peer", "not-an-ip"), "not an IPv4 address"),
    (("--peer", "224.0.0.1"), "not a unicast address"),
    (("--peer", "10.0.1.11"), "would both get host range"),  # 10.0.1.11 mod 256 = 11, as this host's
    (("--peer", VTEP[1]), "own VTEP"),
    (("--vtep", "198.51.100.200"), "no interface of this host has that address"),
    (("--mtu", "1451"), "too large for underlay"),
    (("--host-range", "10.99.0.0/24"), "must be a part of subnet"),
    (("--gateway", "10.210.0.1"), "one gateway per host"),
]


@pytest.mark.parametrize("options,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_and_changes_nothing(hosts, options, message):
    one, _ = hosts
    start = one.sandbox.snapshot()
    argv = ["network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vtep", VTEP[1], *options, NET]
    assert message in usage_error(one.sandbox, *argv)
    assert one.sandbox.snapshot() == start and one.sandbox.state_records() == []


def test_names_and_overlaps_are_refused(hosts):
    one, _ = hosts
    start = one.sandbox.snapshot()
    assert "invalid network name" in usage_error(
        one.sandbox, "network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vtep", VTEP[1], "ov;reboot")
    one.wd("--quiet", "network", "create", "--subnet", "10.210.5.0/24", "br1")
    assert "overlaps subnet 10.210.5.0/24" in usage_error(
        one.sandbox, "network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vtep", VTEP[1], NET)
    assert "is an option of --driver vxlan" in usage_error(
        one.sandbox, "network", "create", "--subnet", "10.77.0.0/24", "--vni", "5", "br2")
    one.wd("--quiet", "network", "rm", "br1")
    create(one, 1)
    assert "VNI 4242 is already used" in usage_error(
        one.sandbox, "network", "create", "--driver", "vxlan", "--subnet", "10.211.0.0/16", "--vni", VNI,
        "--vtep", VTEP[1], "ov2")
    one.wd("--quiet", "network", "rm", NET)
    assert_nothing_left(one.sandbox, start)


def test_doctor_and_gc_know_a_vxlan_network(hosts):
    one, _ = hosts
    box = one.sandbox
    start = box.snapshot()
    create(one, 1)
    one.run("--name", "a", "--net", NET, *SLEEP)
    # healthy: nothing to report, nothing to collect
    assert one.wd("doctor").stdout.strip() == "no problems found"
    assert one.wd("gc").stdout.strip() == "nothing to do: the state and the host agree"
    # the VXLAN device deleted by hand: doctor says so; gc does not "repair" it into a plain bridge network
    before = her_entries(box)
    box.sh("ip", "link", "del", "dev", DEVICE)
    doctor = box.wrapdock("doctor", "--format", "json", check=False)
    assert doctor.returncode == 1, doctor.stderr
    findings = json.loads(doctor.stdout)
    assert [f["check"] for f in findings] == ["network-vxlan-broken"], findings
    assert f"VXLAN device {DEVICE} gone" in findings[0]["finding"]
    assert one.wd("gc").stdout.strip() == "nothing to do: the state and the host agree"
    assert box.sh("ip", "link", "show", "dev", DEVICE, check=False).returncode != 0
    assert before == [VTEP[2]]
    one.wd("--quiet", "rm", "-f", "a")
    one.wd("--quiet", "network", "rm", NET)  # removes what is left
    assert_nothing_left(box, start)
    # a create killed after its links were made: the links carry the owner's alias, gc removes both
    box.sh("ip", "-batch", "-", input="\n".join((
        "link add name ov mtu 1450 type bridge", "link set dev ov alias wrapdock:network=ov",
        f"link add name {DEVICE} mtu 1450 type vxlan id {VNI} dstport 4789 local {VTEP[1]} dev ul0",
        f"link set dev {DEVICE} alias wrapdock:network=ov", f"link set dev {DEVICE} master ov")) + "\n")
    collected = one.wd("gc").stdout
    assert f"deleted VXLAN device {DEVICE}" in collected and "deleted bridge ov" in collected, collected
    assert_nothing_left(box, start)


def test_a_fault_at_every_step_of_create_and_join_leaves_the_host_and_the_state_as_before(sandbox):
    """WRAPDOCK_FAIL_AT=k fails the k-th changing command: the rollback leaves nothing (links, FDB,
    addresses, rules, forwarding, state)."""
    box = sandbox
    box.bash(f"ip link add ul0 type veth peer name ul1 && ip addr add {VTEP[1]}/24 dev ul0 && ip link set ul0 up "
             "&& ip link set ul1 up")
    wait_carrier(box, "ul0", "ul1")
    before = box.snapshot()
    forward = box.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout
    argv = ("network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI, "--vtep", VTEP[1],
            "--peer", VTEP[2], "--peer", "198.51.100.13", NET)
    steps = changing_commands(Host(box).wd("--trail", "json", *argv).stderr)
    assert steps[0] == ["sh", "-s"], steps  # links, then the peers, then route_localnet: one process
    Host(box).wd("--quiet", "network", "rm", NET)
    box.sh("sysctl", "-qw", f"net.ipv4.ip_forward={forward.strip()}")  # rm leaves forwarding on, by design
    assert box.snapshot() == before
    for k in range(1, len(steps) + 1):
        proc = box.wrapdock(*argv, check=False, env={"WRAPDOCK_FAIL_AT": str(k)})
        line = error_line(proc, 1)
        assert f"`{brief(steps[k - 1])}` failed (exit 1): injected fault at command {k}" in line, line
        assert "rollback incomplete" not in line, line
        assert box.snapshot() == before, f"leftovers after a fault at command {k}: {shlex.join(steps[k - 1])}"
        assert box.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout == forward
        assert box.state_records() == [] and box.state_records("ipam") == []
    # join: the one changing command fails; the kernel and the recorded peers stay as they were
    Host(box).wd("--quiet", *argv)
    with_net, record = box.snapshot(), box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout
    fdb = her_entries(box)
    proc = box.wrapdock("network", "join", NET, "--peer", "198.51.100.14", check=False,
                        env={"WRAPDOCK_FAIL_AT": "1"})
    assert "injected fault at command 1" in error_line(proc, 1)
    assert (box.snapshot(), her_entries(box)) == (with_net, fdb)
    assert box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout == record
    # rm: a fault at any of its commands puts back what the earlier ones deleted (links as create made
    # them, the flood list, the rules); the state stays
    steps = changing_commands(Host(box).wd("--trail", "json", "network", "rm", NET).stderr)
    Host(box).wd("--quiet", *argv)
    wait_carrier(box, NET, DEVICE)
    with_net, record = box.snapshot(), box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout
    for k in range(1, len(steps) + 1):
        line = error_line(box.wrapdock("network", "rm", NET, check=False, env={"WRAPDOCK_FAIL_AT": str(k)}), 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert her_entries(box) == fdb and box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout == record
        wait_carrier(box, NET, DEVICE)  # a re-created link gets its carrier a moment after `up`
        assert box.snapshot() == with_net, f"fault at command {k}: {shlex.join(steps[k - 1])}"
    Host(box).wd("--quiet", "network", "rm", NET)


def switched_underlay(switch, boxes) -> None:
    """Host i's `ul0` on a bridge `ul` in the switch sandbox (198.51.100.1i/24): an underlay for 3 hosts."""
    switch.sh("ip", "link", "add", "ul", "type", "bridge")
    switch.sh("ip", "link", "set", "ul", "up")
    for i, box in enumerate(boxes, start=1):
        subprocess.run(["nsenter", "-t", str(switch.pid), "-n", "--", "ip", "link", "add", f"p{i}", "type", "veth",
                        "peer", "name", "ul0", "netns", str(box.pid)], check=True, capture_output=True, timeout=30)
        switch.sh("ip", "link", "set", f"p{i}", "master", "ul", "up")
        box.sh("ip", "addr", "add", f"198.51.100.1{i}/24", "dev", "ul0")
        box.sh("ip", "link", "set", "ul0", "up")
    for box in boxes:
        wait_carrier(box, "ul0")


def learned_behind(box, vtep: str) -> list[str]:
    entries = json.loads(box.sh("bridge", "-j", "fdb", "show", "dev", DEVICE).stdout or "[]")
    return [e["mac"] for e in entries if e.get("dst") == vtep and e["mac"] != "00:00:00:00:00:00"]


def test_a_third_host_joins_and_leaves_and_the_others_forget_it(sandbox_factory):
    switch, *boxes = (sandbox_factory() for _ in range(4))
    switched_underlay(switch, boxes)
    hosts = [Host(box) for box in boxes]
    starts = [box.snapshot() for box in boxes]
    vtep = {i: f"198.51.100.1{i}" for i in (1, 2, 3)}
    base = ("--quiet", "network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI)
    hosts[0].wd(*base, "--vtep", vtep[1], "--peer", vtep[2], NET)
    hosts[1].wd(*base, "--vtep", vtep[2], "--peer", vtep[1], NET)
    for host, name in zip(hosts[:2], "ab", strict=True):
        host.run("--name", name, "--net", NET, *SLEEP)
    a, b = hosts[0].address("a", NET), hosts[1].address("b", NET)
    assert hosts[0].ping("a", b)

    # host 3 comes: it creates the network with both peers; the others learn of it with `join`
    hosts[2].wd(*base, "--vtep", vtep[3], "--peer", vtep[1], "--peer", vtep[2], NET)
    hosts[2].run("--name", "c", "--net", NET, *SLEEP)
    c = hosts[2].address("c", NET)
    assert c.startswith("10.210.13."), c
    # host 1 does not flood to host 3 yet: a's ARP request for c never reaches c
    assert not hosts[0].ping("a", c, wait=1)
    for host in hosts[:2]:
        host.wd("--quiet", "network", "join", NET, "--peer", vtep[3])
    assert hosts[2].ping("c", a) and hosts[2].ping("c", b) and hosts[0].ping("a", c)
    assert learned_behind(boxes[0], vtep[3])  # host 1 learned c's MAC behind host 3's VTEP

    # host 3 goes; the others drop it: its flood entry and what they learned behind it
    hosts[2].wd("--quiet", "rm", "-f", "c")
    hosts[2].wd("--quiet", "network", "rm", NET)
    assert_nothing_left(boxes[2], starts[2])
    for i, (host, box) in enumerate(zip(hosts[:2], boxes[:2], strict=True), start=1):
        host.wd("--quiet", "network", "leave", NET, "--host", vtep[3])
        other = vtep[3 - i]
        assert her_entries(box) == [other]
        assert host.network_view(NET)["vxlan"]["peers"] == [other]
        assert learned_behind(box, vtep[3]) == []
    assert hosts[0].ping("a", b) and hosts[1].ping("b", a)
    for host, box, start, name in zip(hosts[:2], boxes[:2], starts[:2], "ab", strict=True):
        host.wd("--quiet", "rm", "-f", name)
        host.wd("--quiet", "network", "rm", NET)
        assert_nothing_left(box, start)


def test_the_print_only_script_builds_what_create_builds(sandbox_factory):
    """--print-only changes nothing; its script, run by bash on a host without wrapdock state, leaves the
    same links, addresses, routes, rules and FDB as a live create on an identical host."""
    scripted, live = sandbox_factory(), sandbox_factory()
    for box in (scripted, live):
        box.bash(f"ip link add ul0 type veth peer name ul1 && ip addr add {VTEP[1]}/24 dev ul0 && "
                 "ip link set ul0 up && ip link set ul1 up")
        wait_carrier(box, "ul0", "ul1")
    argv = ("network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI, "--vtep", "ul0",
            "--peer", VTEP[2], NET)
    before = scripted.snapshot()
    script = Host(scripted).wd("--quiet", "--print-only", *argv).stdout
    assert scripted.snapshot() == before and scripted.state_records() == []
    assert f"dstport 4789 local {VTEP[1]} dev ul0 learning" in script
    scripted.sh("bash", "-s", input=script)
    Host(live).wd("--quiet", *argv)
    for box in (scripted, live):  # the bridge's carrier follows its VXLAN port a moment later (link watch)
        wait_carrier(box, NET)
    assert scripted.snapshot() == live.snapshot()
    assert her_entries(scripted) == her_entries(live) == [VTEP[2]]
    Host(live).wd("--quiet", "network", "rm", NET)


def overlay_findings(box) -> dict[str, dict]:
    """doctor's findings by check (exit 1 when there are any), each with its one-line text and its fixes."""
    proc = box.wrapdock("doctor", "--format", "json", check=False)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    found = json.loads(proc.stdout)
    assert (proc.returncode == 1) == bool(found), proc.stdout
    return {f["check"]: f for f in found}


def test_doctor_finds_what_breaks_an_overlay_silently_and_gc_syncs_the_fdb(hosts):
    """Each planted problem is found with its repair; gc brings the flood list back; a network whose
    record is gone leaves nothing behind gc."""
    one, two = hosts
    box = one.sandbox
    start = box.snapshot()
    create(one, 1)
    create(two, 2)
    one.run("--name", "a", "--net", NET, *SLEEP)
    two.run("--name", "b", "--net", NET, *SLEEP)
    assert one.ping("a", two.address("b", NET))
    assert overlay_findings(box) == {}  # the peer answers, the FDB, MACs and MTUs are right

    # the FDB: the peer's flood entry gone, one to a host that is no peer, a MAC learned behind it
    box.sh("bridge", "fdb", "del", "00:00:00:00:00:00", "dev", DEVICE, "dst", VTEP[2], "self")
    box.sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", DEVICE, "dst", "198.51.100.99")
    box.sh("bridge", "fdb", "add", "02:42:0a:d2:63:05", "dev", DEVICE, "dst", "198.51.100.99", "self", "dynamic")
    # the device's MAC, the underlay's MTU shrunk under the overlay, two other VXLAN devices on its port
    box.sh("ip", "link", "set", "dev", DEVICE, "address", "02:aa:bb:cc:dd:ee")
    box.sh("ip", "link", "set", "dev", "ul0", "mtu", "1400")
    box.sh("ip", "link", "add", "vxother", "type", "vxlan", "id", VNI, "dstport", "4789", "gbp", "dev", "ul0")
    box.sh("ip", "link", "add", "vxmeta", "type", "vxlan", "external", "dstport", "4789")
    # the peer stops answering
    two.sandbox.sh("ip", "addr", "del", f"{VTEP[2]}/24", "dev", "ul0")
    found = overlay_findings(box)
    assert set(found) == {"overlay-fdb-missing", "overlay-fdb-stale", "overlay-mac-changed", "overlay-mtu",
                          "overlay-vni-clash", "overlay-port-shared", "overlay-peer-silent"}, found
    assert VTEP[2] in found["overlay-fdb-missing"]["finding"]
    assert found["overlay-fdb-missing"]["fix"][0] == f"wrapdock network sync {NET}"
    assert "198.51.100.99" in found["overlay-fdb-stale"]["finding"]
    assert "1 learned MAC(s)" in found["overlay-fdb-stale"]["finding"]
    assert found["overlay-mac-changed"]["fix"] == [f"ip link set dev {DEVICE} address 02:ff:c6:33:64:0b"]
    mtu = found["overlay-mtu"]
    assert "1400 - 50 = 1350" in mtu["finding"], mtu
    for what in (f"VXLAN device {DEVICE}", f"bridge {NET}", "container a's eth0"):
        assert what in mtu["finding"], mtu
    assert f"ip link set dev {DEVICE} mtu 1350" in mtu["fix"] and f"ip link set dev {NET} mtu 1350" in mtu["fix"]
    assert any(f.startswith("ip -n ") and f.endswith("link set dev eth0 mtu 1350") for f in mtu["fix"]), mtu
    assert "vxother" in found["overlay-vni-clash"]["finding"]
    assert "vxmeta" in found["overlay-port-shared"]["finding"]
    assert VTEP[2] in found["overlay-peer-silent"]["finding"]

    # gc puts the flood list back to the recorded peers, exactly as `network sync` would
    collected = one.wd("gc").stdout
    assert f"synced the FDB of overlay {NET} to its recorded peers (3 change(s))" in collected, collected
    assert her_entries(box) == [VTEP[2]] and learned_behind(box, "198.51.100.99") == []
    assert one.wd("network", "sync", NET).stdout.strip() == f"{NET}: in sync, nothing to do"
    # the repairs doctor names, run as printed, clear their findings
    box.bash(found["overlay-mac-changed"]["fix"][0])
    box.sh("ip", "link", "set", "dev", "ul0", "mtu", "1500")
    box.sh("ip", "link", "del", "vxother")
    box.sh("ip", "link", "del", "vxmeta")
    two.sandbox.sh("ip", "addr", "add", f"{VTEP[2]}/24", "dev", "ul0")
    assert overlay_findings(box) == {}
    assert one.ping("a", two.address("b", NET))

    # this host's VTEP address gone: the packets cannot leave; the peers are not probed (nothing to ask from)
    box.sh("ip", "addr", "del", f"{VTEP[1]}/24", "dev", "ul0")
    found = overlay_findings(box)
    assert set(found) == {"overlay-vtep-changed"}, found
    assert f"VTEP address {VTEP[1]} is no longer on ul0" in found["overlay-vtep-changed"]["finding"]
    box.sh("ip", "addr", "add", f"{VTEP[1]}/24", "dev", "ul0")
    # a probe that cannot run (no route to the peer) is an error, not a pass
    box.sh("ip", "route", "add", "blackhole", f"{VTEP[2]}/32")
    found = overlay_findings(box)
    assert set(found) == {"overlay-probe-failed"}, found
    assert f"could not probe peer {VTEP[2]}" in found["overlay-probe-failed"]["finding"]
    box.sh("ip", "route", "del", "blackhole", f"{VTEP[2]}/32")
    assert overlay_findings(box) == {}

    # the network's records gone (a lost /run/wrapdock): gc removes its bridge, its VXLAN device (with
    # its FDB entries and learned MACs), its rules and the container left over
    one.wd("--quiet", "rm", "-f", "a")
    box.sh("rm", f"/run/wrapdock/networks/{NET}.json", f"/run/wrapdock/ipam/{NET}.json")
    collected = one.wd("gc").stdout
    assert f"deleted VXLAN device {DEVICE}" in collected and f"deleted bridge {NET}" in collected, collected
    assert one.wd("gc").stdout.strip() == "nothing to do: the state and the host agree"
    assert_nothing_left(box, start)
    two.wd("--quiet", "rm", "-f", "b")
    two.wd("--quiet", "network", "rm", NET)


def test_a_cni_attachment_on_one_host_reaches_a_container_on_the_other_over_the_overlay(hosts):
    """wrapdock-cni on a vxlan network (called as libcni calls it): the namespace gets an address of this
    host's range, the overlay MTU on its eth0 (a packet of that size crosses), pings a
    CLI container on the other host and is pinged back; DEL leaves the host as `network create` left it."""
    from tests.integration.test_cni import Caller

    one, two = hosts
    create(one, 1)
    create(two, 2)
    start = one.sandbox.snapshot()
    two.run("--name", "b", "--net", NET, *SLEEP)
    b = two.address("b", NET)
    caller = Caller(one.sandbox)
    one.sandbox.sh("ip", "netns", "add", "pod1")
    result = caller.add("pod1", name=NET, network=NET)
    [ip] = result["ips"]
    address = ip["address"].split("/")[0]
    assert ip["address"].endswith("/16") and address.startswith("10.210.11.") and ip["gateway"] == "10.210.11.1"

    def pod(*argv: str) -> subprocess.CompletedProcess:
        return one.sandbox.sh("ip", "netns", "exec", "pod1", *argv, check=False)

    assert pod("cat", "/sys/class/net/eth0/mtu").stdout.strip() == str(OVERLAY_MTU)
    assert pod("busybox", "ping", "-c1", "-W3", b).returncode == 0
    assert two.ping("b", address)
    # a packet of exactly the overlay MTU crosses (with eth0 at the underlay's 1500, a larger one would leave
    # eth0 whole and be dropped silently where the overlay encapsulates it)
    assert pod("busybox", "ping", "-c1", "-W3", "-s", str(OVERLAY_MTU - 28), b).returncode == 0
    assert [a["owner"] for a in one.leases(NET)] == ["cni:pod1/eth0"]
    caller.ok("DEL", "pod1", name=NET, network=NET)
    caller.ok("DEL", "pod1", name=NET, network=NET)
    one.sandbox.sh("ip", "netns", "del", "pod1")
    assert one.leases(NET) == [] and one.network_view(NET)["cni_attachments"] == []
    assert one.sandbox.snapshot() == start
    two.wd("--quiet", "rm", "-f", "b")
    for host in (one, two):
        host.wd("--quiet", "network", "rm", NET)


def test_podman_runs_a_container_on_a_vxlan_network_that_reaches_the_other_host(hosts, tmp_path):
    """podman 4.3 (CNI backend) with wrapdock-cni on one host of a vxlan network: its container gets the
    overlay MTU on eth0 and pings a CLI container on the other host, and that container pings it back."""
    from tests.integration.test_cni_clients import IMAGE, Podman, missing_tools

    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    one, two = hosts
    create(one, 1)
    create(two, 2)
    two.run("--name", "b", "--net", NET, *SLEEP)
    b = two.address("b", NET)
    podman = Podman(one.sandbox, tmp_path)
    one.wd("network", "cni-config", NET)
    podman("run", "-d", "--name", "p1", "--cap-add", "NET_RAW", "--network", NET, IMAGE, "sleep", "600")
    [attached] = one.network_view(NET)["cni_attachments"]
    assert attached["address"].startswith("10.210.11.")
    assert podman("exec", "p1", "cat", "/sys/class/net/eth0/mtu").stdout.strip() == str(OVERLAY_MTU)
    out = podman("exec", "p1", "ping", "-c1", "-W3", "-s", str(OVERLAY_MTU - 28), b).stdout
    assert "1 packets received" in out, out
    assert two.ping("b", attached["address"])
    podman("rm", "-f", "-t", "0", "p1")
    assert one.network_view(NET)["cni_attachments"] == [] and one.leases(NET) == []
    two.wd("--quiet", "rm", "-f", "b")
    for host in (one, two):
        host.wd("--quiet", "network", "rm", NET)
