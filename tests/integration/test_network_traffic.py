"""Real packets: endpoints (namespaces on veths) on wrapdock's bridges talk to the gateway, to each
other, to other networks with their own addresses, and to the outside through MASQUERADE only."""

from __future__ import annotations

import pytest

from tests.integration.netlab import Lab, bridge_nf_call_iptables, bridges, ip_forward, live
from tests.sandbox import OUTSIDE_IP, OUTSIDE_NS, UPLINK_IP

pytestmark = pytest.mark.integration

FORWARD_JUMP = ("-t", "filter", "FORWARD", "-m", "comment", "--comment", "wrapdock", "-j", "WRAPDOCK-FORWARD")


def remove_outside(sandbox) -> None:
    sandbox.bash(f"ip link del uplink && ip netns del {OUTSIDE_NS}")


def assert_clean(sandbox, start) -> None:
    assert sandbox.snapshot() == start
    assert sandbox.state_records() == []


def test_outside_is_reached_through_masquerade_and_internal_networks_stay_inside(sandbox, tmp_path):
    start = sandbox.snapshot()
    sandbox.add_outside()
    live(sandbox, "network", "create", "--driver", "bridge", "--subnet", "162.16.0.1/24", "testbridge")
    live(sandbox, "network", "create", "--subnet", "10.32.0.0/24", "--internal", "priv")
    lab = Lab(sandbox)
    try:
        pub = lab.attach("p1", "testbridge", "162.16.0.2/24", gateway="162.16.0.1")
        priv1 = lab.attach("i1", "priv", "10.32.0.2/24", gateway="10.32.0.1")
        priv2 = lab.attach("i2", "priv", "10.32.0.3/24", gateway="10.32.0.1")

        # the outside has no way back to the container subnet: only address translation brings replies
        no_route = sandbox.sh("ip", "-n", OUTSIDE_NS, "route", "get", pub, check=False)
        assert no_route.returncode != 0, no_route.stdout

        assert lab.ping("p1", "162.16.0.1")
        assert lab.ping("p1", OUTSIDE_IP)
        lab.serve_remote_addr(OUTSIDE_NS, tmp_path / "outside")
        assert lab.fetch("p1", f"http://{OUTSIDE_IP}:8000/cgi-bin/ip") == UPLINK_IP  # masqueraded

        # internal: its gateway and its own bridge, nothing beyond (forwarding is on for the other network)
        assert ip_forward(sandbox) == "1"
        assert lab.ping("i1", "10.32.0.1")
        assert lab.ping("i1", priv2)
        assert lab.ping("i2", priv1)
        # no way out, nor to the other network, nor in from it (timeouts: run side by side)
        assert lab.pings(("i1", OUTSIDE_IP), ("i1", pub), ("p1", priv1), wait=1) == [False, False, False]
    finally:
        lab.close()
    live(sandbox, "network", "rm", "testbridge", "priv")
    remove_outside(sandbox)
    assert_clean(sandbox, start)


def test_forward_policy_drop_still_lets_endpoints_out_and_to_each_other(sandbox):
    sandbox.sh("iptables", "-P", "FORWARD", "DROP")
    start = sandbox.snapshot()
    assert "*filter :FORWARD DROP" in start["iptables"]
    sandbox.add_outside()
    live(sandbox, "network", "create", "--subnet", "10.33.0.0/24", "web")
    lab = Lab(sandbox)
    try:
        one = lab.attach("e1", "web", "10.33.0.2/24", gateway="10.33.0.1")
        two = lab.attach("e2", "web", "10.33.0.3/24", gateway="10.33.0.1")
        assert lab.ping("e1", "10.33.0.1")
        assert lab.ping("e1", two)
        assert lab.ping("e2", one)
        assert lab.ping("e1", OUTSIDE_IP)
        assert lab.ping("e2", OUTSIDE_IP)

        # the control: without wrapdock's jump out of FORWARD the DROP policy stops what it let through
        sandbox.sh("iptables", "-w", *FORWARD_JUMP[:2], "-D", *FORWARD_JUMP[2:])
        # (same-bridge traffic meets iptables only when bridge-nf-call-iptables is on)
        outward, on_bridge = lab.pings(("e1", OUTSIDE_IP), ("e1", two), wait=1)
        assert not outward
        assert on_bridge is not bridge_nf_call_iptables(sandbox)
        sandbox.sh("iptables", "-w", *FORWARD_JUMP[:2], "-I", FORWARD_JUMP[2], "1", *FORWARD_JUMP[3:])
        assert lab.ping("e1", OUTSIDE_IP)
        assert lab.ping("e2", one)
    finally:
        lab.close()
    live(sandbox, "network", "rm", "web")
    remove_outside(sandbox)
    assert_clean(sandbox, start)


def test_networks_reach_each_other_with_their_real_addresses(sandbox, tmp_path):
    start = sandbox.snapshot()
    live(sandbox, "network", "create", "--subnet", "10.34.0.0/24", "neta")
    live(sandbox, "network", "create", "--subnet", "10.35.0.0/24", "netb")
    lab = Lab(sandbox)
    try:
        a1 = lab.attach("a1", "neta", "10.34.0.2/24", gateway="10.34.0.1")
        b1 = lab.attach("b1", "netb", "10.35.0.2/24", gateway="10.35.0.1")
        assert lab.ping("a1", "10.34.0.1")
        assert lab.ping("b1", "10.35.0.1")
        assert lab.ping("a1", b1)
        lab.serve_remote_addr("a1", tmp_path / "a")
        lab.serve_remote_addr("b1", tmp_path / "b")
        # the receiver sees the sender itself, not the gateway or a translated address
        assert lab.fetch("a1", f"http://{b1}:8000/cgi-bin/ip") == a1
        assert lab.fetch("b1", f"http://{a1}:8000/cgi-bin/ip") == b1
    finally:
        lab.close()
    live(sandbox, "network", "rm", "neta", "netb")
    assert_clean(sandbox, start)


def test_bridge_names_that_look_like_ip_keywords(sandbox):
    # (was a bug: `ip link add up type bridge` made a stray bridge0, `ip link add br ...` failed)
    start = sandbox.snapshot()
    live(sandbox, "network", "create", "--subnet", "10.36.0.0/24", "up")
    live(sandbox, "network", "create", "--subnet", "10.38.0.0/24", "--bridge-name", "br", "mtu")
    assert bridges(sandbox) == {"up", "br"}  # and no stray bridge0
    lab = Lab(sandbox)
    try:
        lab.attach("k1", "up", "10.36.0.2/24", gateway="10.36.0.1")
        lab.attach("k2", "br", "10.38.0.2/24", gateway="10.38.0.1")
        assert lab.ping("k1", "10.36.0.1")
        assert lab.ping("k1", "10.38.0.2")
    finally:
        lab.close()
    live(sandbox, "network", "rm", "up", "mtu")
    assert_clean(sandbox, start)


def test_network_names_with_dots(sandbox):
    # (was a bug: `sysctl -w net.ipv4.conf.lab.0.route_localnet=1` split the bridge name at its dots)
    start = sandbox.snapshot()
    created = sandbox.wrapdock("network", "create", "--subnet", "10.37.0.0/24", "lab.0", check=False)
    assert created.returncode == 0, created.stderr.splitlines()[-1]
    lab = Lab(sandbox)
    try:
        lab.attach("d1", "lab.0", "10.37.0.2/24")
        assert lab.ping("d1", "10.37.0.1")
    finally:
        lab.close()
    live(sandbox, "network", "rm", "lab.0")
    assert_clean(sandbox, start)
