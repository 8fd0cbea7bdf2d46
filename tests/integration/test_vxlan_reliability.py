"""Reliability of vxlan networks with static peers, on sandbox hosts (issue 13, item 8).

- kill -9 of `network join` and of `network create --driver vxlan` after a seeded number of their
  changing commands (the crash trials' way: counted in audit.log, never a time delay), then gc: the
  FDB matches the recorded peers again, a second gc and a `network sync` find nothing to do, and the
  host is as before once what the trial made is removed;
- a fault at every changing command of `run -d --net OVERLAY -p ...`: rolled back, host as before;
- 3 hosts x 10 `run -d --net OVERLAY` at once on each: 30 distinct addresses, each answering a ping
  from a container on every host; then one host is killed outright (its sandbox ended): the others
  `network leave --host VTEP --force` it and `sync`, and no FDB entry (flood or learned) names it;
- bad input for vxlan networks beyond test_vxlan_static.py's catalogue: one line, nothing changed.
"""

from __future__ import annotations

import json
import random
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.containerlab import wait_for
from tests.integration.ctnet import Host, assert_nothing_left
from tests.integration.reliability import (
    NOTHING_TO_DO,
    assert_names_failed_step,
    assert_same,
    call,
    changing_steps,
    details,
    link_flags,
    ok,
    picture,
)
from tests.integration.test_crash_safety import after_crash, calibrate, crash
from tests.integration.test_vxlan_static import (
    DEVICE,
    SUBNET,
    VNI,
    VTEP,
    her_entries,
    learned_behind,
    switched_underlay,
    usage_error,
    wait_carrier,
)
from tests.sandbox import Sandbox

pytestmark = pytest.mark.integration

NET = "ov"
SEED = 1313
JOIN_PEERS = tuple(f"198.51.100.{n}" for n in range(21, 27))  # 6 peers: 6 changing commands
CREATE = ("network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI, "--vtep", VTEP[1],
          "--peer", VTEP[2], NET)
JOIN = ("network", "join", NET, *(w for p in JOIN_PEERS for w in ("--peer", p)))
TRIALS = {"join": 5, "create": 5}


def with_underlay(box: Sandbox) -> None:
    """A veth pair ul0/ul1 inside the sandbox, ul0 holding this host's VTEP address."""
    box.bash(f"ip link add ul0 type veth peer name ul1 && ip addr add {VTEP[1]}/24 dev ul0 && ip link set ul0 up "
             "&& ip link set ul1 up")
    wait_carrier(box, "ul0", "ul1")


def recorded_peers(box: Sandbox) -> list[str]:
    return json.loads(box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout)["vxlan"]["peers"]


# -- kill -9 --------------------------------------------------------------------------------------
def join_trials(box: Sandbox) -> list:
    """Seeded kills of `network join` (6 new peers); after each: gc, and the FDB is the recorded peers."""
    rng = random.Random(f"{SEED}-join")
    ok(box, "--quiet", *CREATE)
    wait_carrier(box, NET, DEVICE)  # the carrier comes a moment after create: snapshots before it differ
    before = picture(box)
    total = calibrate(box, JOIN)
    assert total == len(JOIN_PEERS), total
    for peer in JOIN_PEERS:
        ok(box, "--quiet", "network", "leave", NET, "--host", peer)
    assert_same(box, before, "join: the calibration run and its leaves")
    crashes = []
    for trial in range(TRIALS["join"]):
        result = crash(box, JOIN, rng.randint(1, total - 1), 0)
        crashes.append(result)
        what = f"join trial {trial} (seed {SEED}-join): {result.text()}"
        ok(box, "network", "ls")
        ok(box, "gc")
        again = ok(box, "gc")
        assert again.stdout == NOTHING_TO_DO, f"{what}: a second gc still found work:\n{again.stdout}"
        assert ok(box, "network", "sync", NET).stdout.strip() == f"{NET}: in sync, nothing to do", what
        peers = recorded_peers(box)
        assert her_entries(box) == sorted(peers), what  # the kernel's flood list is the recorded one
        for peer in peers[1:]:  # a join that finished before the kill: its peers go again
            ok(box, "--quiet", "network", "leave", NET, "--host", peer)
        assert_same(box, before, what)
    ok(box, "--quiet", "network", "rm", NET)
    return crashes


def create_trials(box: Sandbox) -> list:
    """Seeded kills of `network create --driver vxlan`; after each, crash safety's checks (gc twice, ...)."""
    rng = random.Random(f"{SEED}-create")
    ok(box, "--quiet", "run", "--rm", "busybox", "true")  # the image: like the other trials' hosts
    before = picture(box)
    total = calibrate(box, CREATE)
    ok(box, "--quiet", "network", "rm", NET)
    assert_same(box, before, "create: the calibration run")
    crashes = []
    for trial in range(TRIALS["create"]):
        result = crash(box, CREATE, rng.randint(1, total - 1), 0)  # right after command k, as join
        crashes.append(result)
        after_crash(box, before, f"create trial {trial} (seed {SEED}-create): {result.text()}", set())
    return crashes


def test_kill_9_during_join_and_create_then_gc_leaves_host_and_state_consistent(sandbox, sandbox_factory):
    boxes = {"join": sandbox, "create": sandbox_factory()}
    starts = {}
    for op, box in boxes.items():
        with_underlay(box)
        starts[op] = box.snapshot()
    with ThreadPoolExecutor(len(boxes)) as pool:
        futures = {op: pool.submit({"join": join_trials, "create": create_trials}[op], box)
                   for op, box in boxes.items()}
        results = {op: future.result() for op, future in futures.items()}
    summary = "\n".join(f"{op}: " + "; ".join(c.text() for c in crashes) for op, crashes in results.items())
    for crashes in results.values():  # the kills landed, at different points
        assert sum(c.killed for c in crashes) >= 3, summary
        assert len({c.done for c in crashes if c.killed}) >= 2, summary
    for op, box in boxes.items():
        assert_nothing_left(box, starts[op])


# -- a fault at every changing command of run ---------------------------------------------------------
RUN = ("run", "-d", "--name", "web", "--net", NET, "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80")


def test_run_on_an_overlay_rolls_back_a_fault_at_every_step(sandbox):
    box = sandbox
    with_underlay(box)
    start = box.snapshot()
    ok(box, "--quiet", *CREATE)
    ok(box, "--quiet", "run", "--rm", "--net", NET, "busybox", "true")  # the image
    ok(box, "--quiet", "run", "-d", "--name", "nbr", "--net", NET, "busybox", "sleep", "600")
    wait_for(lambda: "LOWER_UP" in link_flags(box, NET), what=f"{NET} with carrier")
    before = picture(box)

    steps = changing_steps(ok(box, "--trail", "json", *RUN).stderr)
    ok(box, "--quiet", "rm", "-f", "web")
    assert_same(box, before, "run then rm -f")
    scripts = "\n".join(line for step in steps for line in step.get("stdin", []))  # (two: prepare, start)
    assert all(f"\n{word} " in scripts for word in ("ip -batch", "iptables-restore", "setsid -f")), steps
    for k, step in enumerate(steps, start=1):
        proc = call(box, "--quiet", *RUN, env={"WRAPDOCK_FAIL_AT": str(k)})
        line = assert_names_failed_step(proc, step, k)
        assert proc.stdout == "" and "; rolled back " in line, line
        assert_same(box, before, f"fault at command {k} ({shlex.join(step['argv'][:3])})")
    assert her_entries(box) == [VTEP[2]]  # a container start never touches the flood list

    ok(box, "--quiet", "rm", "-f", "nbr")
    ok(box, "--quiet", "network", "rm", NET)
    assert_nothing_left(box, start)


# -- 3 hosts x 10 parallel runs, then one host dies --------------------------------------------------
PER_HOST = 10


def run_many(host: Host, index: int) -> list[subprocess.Popen]:
    return [host.sandbox.popen_wrapdock("--quiet", "run", "-d", "--name", f"c{index}x{n}", "--net", NET, "busybox",
                                        "sleep", "3600") for n in range(PER_HOST)]


def unreachable(host: Host, where: str, addresses: list[str]) -> list[str]:
    """The addresses that did not answer one ping from container `where` (all pinged side by side)."""
    script = ("for a in " + " ".join(addresses) + "; do (ping -c 1 -W 3 $a >/dev/null 2>&1 || echo $a) & done; wait")
    proc = host.inside(where, "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split())


def test_three_hosts_ten_parallel_runs_each_then_one_host_dies(sandbox_factory):
    switch, *boxes = (sandbox_factory() for _ in range(4))
    switched_underlay(switch, boxes)
    hosts = [Host(box) for box in boxes]
    starts = [box.snapshot() for box in boxes]
    vtep = {i: f"198.51.100.1{i}" for i in (1, 2, 3)}
    for i, host in enumerate(hosts, start=1):
        peers = [w for j in (1, 2, 3) if j != i for w in ("--peer", vtep[j])]
        host.wd("--quiet", "network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI,
                "--vtep", vtep[i], *peers, NET)
        host.wd("--quiet", "run", "--rm", "busybox", "true")  # the image, so that the 10 runs race only on the network

    # 10 runs at once on each host, 30 at once in all
    procs = [p for i, host in enumerate(hosts, start=1) for p in run_many(host, i)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, details(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    addresses: dict[str, str] = {}
    for i, host in enumerate(hosts, start=1):
        for n in range(PER_HOST):
            address = host.address(f"c{i}x{n}", NET)
            assert address.startswith(f"10.210.1{i}."), (i, address)  # each host's own range
            addresses[f"c{i}x{n}"] = address
    assert len(set(addresses.values())) == 3 * PER_HOST, addresses

    # every address answers a ping from a container on every host (across the overlay, both ways)
    everyone = sorted(addresses.values(), key=lambda a: tuple(map(int, a.split("."))))
    for i, host in enumerate(hosts, start=1):
        deadline = time.monotonic() + 30
        missing = everyone
        while missing := unreachable(host, f"c{i}x0", missing):
            assert time.monotonic() < deadline, f"from host {i}: no answer from {missing}"
    gone_macs = set()
    for box in boxes[:2]:
        gone_macs |= set(learned_behind(box, vtep[3]))  # they learned host 3's containers behind its VTEP
        assert learned_behind(box, vtep[3])

    # host 3 dies outright: its sandbox ends, nothing of it says goodbye
    boxes[2].close()
    doctor = json.loads(boxes[0].wrapdock("doctor", "--format", "json", check=False).stdout)
    assert [(f["check"], vtep[3] in f["finding"]) for f in doctor] == [("overlay-peer-silent", True)], doctor
    for i, (host, box) in enumerate(zip(hosts[:2], boxes[:2], strict=True), start=1):
        left = host.wd("network", "leave", NET, "--host", vtep[3], "--force")
        assert f"dst {vtep[3]}" in left.stderr
        assert host.wd("network", "sync", NET).stdout.strip() == f"{NET}: in sync, nothing to do"
        entries = json.loads(box.sh("bridge", "-j", "fdb", "show", "dev", DEVICE).stdout or "[]")
        assert [e for e in entries if e.get("dst") == vtep[3]] == [], entries  # no flood, no learned entry
        # nor the bridge's own forwarding entries for those MACs on the VXLAN port
        assert [e for e in entries if e["mac"] in gone_macs] == [], entries
        assert her_entries(box) == [vtep[3 - i]]
        assert host.network_view(NET)["vxlan"]["peers"] == [vtep[3 - i]]
        assert box.wrapdock("doctor").stdout.strip() == "no problems found"
    assert unreachable(hosts[0], "c1x0", [addresses["c2x0"]]) == []
    assert unreachable(hosts[1], "c2x0", [addresses["c1x0"]]) == []

    for i, (host, box, start) in enumerate(zip(hosts[:2], boxes[:2], starts[:2], strict=True), start=1):
        host.wd("--quiet", "rm", "-f", *(f"c{i}x{n}" for n in range(PER_HOST)))
        host.wd("--quiet", "network", "rm", NET)
        assert_nothing_left(box, start)


# -- bad input ------------------------------------------------------------------------------------
BAD_CREATE = [
    (("--vni", "-1"), "invalid VNI -1"),
    (("--port", "-1"), "invalid VXLAN port -1"),
    (("--port", "65536"), "invalid VXLAN port 65536"),
    (("--vni", "forty-two"), "--vni"),
    (("--host-subnet-size", "8"), "does not fit"),  # shorter than the subnet's /16
    (("--host-range", "10.210.11.0/33"), "invalid host range"),
    (("--vtep", "ul0;reboot"), "ul0;reboot"),
    (("--peer", "$(reboot)"), "not an IPv4 address"),
    (("--peer", "198.51.100.12;reboot"), "not an IPv4 address"),
    (("--peer", VTEP[2], "--peer", VTEP[2]), "given twice"),
]


def test_more_bad_input_is_one_line_and_changes_nothing(sandbox):
    box = sandbox
    with_underlay(box)
    base = ("network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vtep", VTEP[1])
    start = box.snapshot()
    for options, message in BAD_CREATE:
        line = usage_error(box, *base, *options, NET)
        assert message in line, (options, line)
        assert box.snapshot() == start and box.state_records() == [], options
    ok(box, "--quiet", *CREATE)
    ok(box, "--quiet", "network", "create", "--subnet", "10.99.0.0/24", "br1")
    wait_carrier(box, NET, DEVICE)  # the carrier comes a moment after create: snapshots before it differ
    with_net = (box.snapshot(), box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout, her_entries(box))
    refused = [
        # another overlay, or a bridge network, inside this overlay's subnet
        (("network", "create", "--driver", "vxlan", "--subnet", "10.210.128.0/17", "--vni", "7", "--vtep", VTEP[1],
          "ov2"), "overlaps subnet 10.210.0.0/16"),
        (("network", "create", "--subnet", "10.210.200.0/24", "br2"), "overlaps subnet 10.210.0.0/16"),
        # names with shell metacharacters, on every overlay command
        (("network", "join", "ov;reboot", "--peer", "198.51.100.30"), "invalid network name"),
        (("network", "leave", "ov$(reboot)", "--host", VTEP[2]), "invalid network name"),
        (("network", "sync", "ov`reboot`"), "invalid network name"),
        (("network", "leave", NET, "--host", "198.51.100.12;reboot"), "not an IPv4 address"),
        (("network", "join", NET, "--peer", "198.51.100.30", "--peer", "|reboot"), "not an IPv4 address"),
        # the overlay commands on what is no overlay
        (("network", "sync", "br1"), "is a bridge network"),
        (("network", "join", "nosuch", "--peer", "198.51.100.30"), "no such network: nosuch"),
        # a peer whose derived range is this host's (198.51.100.11 and 10.1.2.11: both block 11)
        (("network", "join", NET, "--peer", "10.1.2.11"), "would both get host range"),
    ]
    for argv, message in refused:
        line = usage_error(box, *argv)
        assert message in line, (argv, line)
        assert (box.snapshot(), box.sh("cat", f"/run/wrapdock/networks/{NET}.json").stdout,
                her_entries(box)) == with_net, argv
        assert box.state_records() == sorted(["br1.json", f"{NET}.json"]), argv
    ok(box, "--quiet", "network", "rm", NET, "br1")
    assert_nothing_left(box, start)


# -- a fault at every changing command of leave ------------------------------------------------------
def fdb_dump(box: Sandbox) -> list[str]:
    """Every entry on the VXLAN device (flood, learned, the bridge's), as comparable text."""
    entries = json.loads(box.sh("bridge", "-j", "fdb", "show", "dev", DEVICE).stdout or "[]")
    return sorted(json.dumps(e, sort_keys=True) for e in entries)


def test_leave_rolls_back_a_fault_at_every_step(sandbox):
    """The leaving peer's flood entry, and two MACs learned behind it (on the device and on the bridge):
    a fault at any of the 5 deletes puts back what the earlier ones took."""
    box = sandbox
    with_underlay(box)
    start = box.snapshot()
    gone = "198.51.100.13"
    ok(box, "--quiet", *CREATE[:-1], "--peer", gone, NET)
    for mac in ("02:42:0a:d2:0d:02", "02:42:0a:d2:0d:03"):
        box.sh("bridge", "fdb", "add", mac, "dev", DEVICE, "dst", gone, "self", "dynamic")
        box.sh("bridge", "fdb", "add", mac, "dev", DEVICE, "master", "dynamic")
    wait_carrier(box, NET, DEVICE)  # the carrier comes a moment after create: snapshots before it differ
    before = (picture(box), fdb_dump(box))
    leave = ("network", "leave", NET, "--host", gone, "--force")
    for k in range(1, 6):
        proc = call(box, "--quiet", *leave, env={"WRAPDOCK_FAIL_AT": str(k)})
        assert f"injected fault at command {k}" in proc.stderr and proc.returncode == 1, details(proc)
        assert "rollback incomplete" not in proc.stderr, details(proc)
        assert (picture(box), fdb_dump(box)) == before, f"fault at command {k}"
    steps = changing_steps(ok(box, "--trail", "json", *leave).stderr)
    assert [s["argv"][2] for s in steps] == ["del"] * 5, steps
    assert her_entries(box) == [VTEP[2]] and learned_behind(box, gone) == []
    assert not [e for e in fdb_dump(box) if "02:42:0a:d2:0d:0" in e]
    ok(box, "--quiet", "network", "rm", NET)
    assert_nothing_left(box, start)
