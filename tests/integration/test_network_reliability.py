"""Failures half-way, removal of what is already gone, and many wrapdock processes at once."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.netlab import (
    bridges,
    changing_commands,
    error_line,
    finish,
    ip_forward,
    json_trail,
    live,
    state_files,
)
from tests.integration.reliability import failing_once
from wrapdock.shell import brief

pytestmark = pytest.mark.integration

CREATE = ("network", "create", "--driver", "bridge", "--subnet", "162.16.0.1/24", "testbridge")


def assert_clean(sandbox, start) -> None:
    assert sandbox.snapshot() == start
    assert sandbox.state_records() == []
    assert sandbox.state_records("ipam") == []


def fail_at(sandbox, k: int, *args: str) -> subprocess.CompletedProcess:
    return sandbox.wrapdock(*args, check=False, env={"WRAPDOCK_FAIL_AT": str(k)})


def assert_names_failed_command(proc: subprocess.CompletedProcess, argv: list[str], k: int) -> str:
    line = error_line(proc, 1)
    assert f"`{brief(argv)}` failed (exit 1)" in line, line
    assert f"injected fault at command {k}" in line, line
    assert "rollback incomplete" not in line, line
    assert proc.stdout == ""
    return line


# The fault loops are the slow part (one wrapdock run each): they are spread over a few identical
# sandboxes that run side by side.
WORKERS = max(2, min(4, os.cpu_count() or 2))


def spread(boxes: Sequence, items: Sequence, work: Callable) -> None:
    """Run work(box, item) for every item, each box taking every len(boxes)-th item, boxes in parallel."""
    def chunk(index: int) -> None:
        for item in items[index::len(boxes)]:
            work(boxes[index], item)

    with ThreadPoolExecutor(len(boxes)) as pool:
        for future in [pool.submit(chunk, i) for i in range(len(boxes))]:
            future.result()


def check_every_create_fault(boxes: Sequence) -> list[list[str]]:
    """Make each changing command of `create` fail in turn: each time, the host is as it was.

    `boxes` are sandboxes in the same state; the first also finds out which commands change the host.
    """
    first = boxes[0]
    before = first.snapshot()
    records = state_files(first)
    forward = ip_forward(first)
    for box in boxes[1:]:
        assert (box.snapshot(), state_files(box).keys(), ip_forward(box)) == (before, records.keys(), forward)

    # which commands change the host here (skipped "ensures" do not count): a real run tells
    trail = live(first, "--trail", "json", *CREATE).stderr
    steps = changing_commands(trail)
    inputs = [record.get("stdin", []) for record in json_trail(trail) if record["phase"] == "do"]
    live(first, "network", "rm", "testbridge")
    first.sh("sysctl", "-qw", f"net.ipv4.ip_forward={forward}")  # rm leaves forwarding on, by design
    assert first.snapshot() == before
    # the bridge, its alias, address and state in one batch, and its route_localnet, in one `sh -s` (beside
    # another network, the network's rules too: see the test below)
    assert steps[0] == ["sh", "-s"]
    assert inputs[0][1] == "ip -batch - <<'WRAPDOCK_BATCH_EOF'", inputs[0]
    assert any(line.endswith("/route_localnet=1") for line in inputs[0]), inputs[0]

    def fault(box, k: int) -> None:
        argv = steps[k - 1]
        proc = fail_at(box, k, *CREATE)
        assert_names_failed_command(proc, argv, k)
        assert box.snapshot() == before, f"leftovers after a fault at command {k}: {shlex.join(argv)}"
        assert ip_forward(box) == forward, f"ip_forward changed by a fault at command {k}"
        assert state_files(box).keys() == records.keys(), k

    spread(boxes, range(1, len(steps) + 1), fault)
    assert state_files(first) == records
    # each command with its input lines (a batch's rules), for the callers' checks
    return [[*argv, *lines] for argv, lines in zip(steps, inputs, strict=True)]


def test_create_rolls_back_a_fault_at_every_step_on_a_fresh_host(sandbox, sandbox_factory):
    start = sandbox.snapshot()
    forwarding_was_off = ip_forward(sandbox) == "0"
    steps = check_every_create_fault([sandbox, *(sandbox_factory() for _ in range(WORKERS - 1))])
    # on a fresh host the faults also hit the shared chains (one batch with the rules) and the forwarding switch
    assert any(word.startswith("-N WRAPDOCK-") for argv in steps for word in argv)
    assert (["sysctl", "-w", "net.ipv4.ip_forward=1"] in steps) is forwarding_was_off
    assert_clean(sandbox, start)


def test_create_rolls_back_a_fault_at_every_step_next_to_another_network(sandbox, sandbox_factory):
    boxes = [sandbox, *(sandbox_factory() for _ in range(WORKERS - 1))]
    start = sandbox.snapshot()
    for result in finish([box.popen_wrapdock("--quiet", "network", "create", "--subnet", "10.99.0.0/24", "other")
                          for box in boxes]):
        assert result.returncode == 0, result.stderr
    steps = check_every_create_fault(boxes)
    # the shared chains and forwarding are in place: the batch only adds the network's own rules (decided when it
    # runs: its input still names the chains), and forwarding is not switched
    assert not any("net.ipv4.ip_forward=1" in argv for argv in steps), steps
    # the network's own steps only: one script, the links and the rules (decided against the read)
    assert steps[0][:4] == ["sh", "-s", "set -e", "ip -batch - <<'WRAPDOCK_BATCH_EOF'"]
    assert len(steps) == 1 and "iptables-restore -w --noflush <<'WRAPDOCK_BATCH_EOF'" in steps[0], steps
    saved = sandbox.sh("iptables-save").stdout
    assert ":WRAPDOCK-FORWARD" in saved and "wrapdock:network=other" in saved
    live(sandbox, "network", "rm", "other")
    assert_clean(sandbox, start)


def test_create_rolls_back_a_fault_inside_its_script(sandbox, tmp_path):
    """Next to another network, create is one script (the links, route_localnet, the rules): a command of
    it that fails leaves the host as it was (the rules by the tables whose block went in, then the bridge
    if it is there)."""
    start = sandbox.snapshot()
    live(sandbox, "--quiet", "network", "create", "--subnet", "10.99.0.0/24", "other")
    before, records = sandbox.snapshot(), state_files(sandbox)
    for program, when in (("ip", '"-batch -"'), ("sysctl", "*"), ("iptables-restore", "*")):  # (not the read's ip -j)
        proc = sandbox.wrapdock(*CREATE, check=False, env=failing_once(tmp_path, program, when))
        line = error_line(proc, 1)
        assert f"injected fault in {program}" in line and "rollback incomplete" not in line, line
        assert sandbox.snapshot() == before, f"leftovers after a fault in {program}"
        assert state_files(sandbox) == records, program
    live(sandbox, "network", "rm", "other")
    assert_clean(sandbox, start)


# a create's own rules go to one iptables-restore for both tables, which commits table by table: a failure in
# nat leaves filter's block applied. Its undo must delete exactly that block (a real restore that fails half-way:
# the host has filter's shared chains but not nat's, which the plan was told are there).
HALF_APPLIED = """
import subprocess, sys
from ipaddress import IPv4Network
from wrapdock.model import Network
from wrapdock.plans import iptables as ipt
from wrapdock.plans.network import create

def net(name, subnet):
    n = IPv4Network(subnet)
    return Network(name=name, id="a" * 64, driver="bridge", subnet=n, gateway=n.network_address + 1, bridge=name,
                   created="2024-01-02T03:04:05+00:00")

def run(step):
    return subprocess.run(list(step.argv), input="\\n".join(step.stdin) + "\\n", text=True, capture_output=True)

def rules():
    return [line for line in subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
            .stdout.splitlines() if not line.startswith("#")]

first = create(net("other", "10.99.0.0/24"), ipt.Tables())
assert run(next(s for s in first.steps if s.argv == ipt.RESTORE and s.stdin[0] == "*filter")).returncode == 0
before = rules()
(combined,) = [s for s in create(net("web", "10.20.0.0/24"), ipt.after(ipt.Tables(), first.steps)).steps
               if s.argv == ipt.RESTORE]
failed = run(combined)
half = sum("wrapdock:network=web" in line for line in rules())
undone = run(combined.undo)
print(failed.returncode, half, undone.returncode, undone.stderr.strip(), rules() == before)
"""


def test_a_combined_restore_that_failed_in_nat_is_undone_exactly(sandbox):
    start = sandbox.snapshot()
    out = sandbox.sh(sys.executable, "-c", HALF_APPLIED).stdout.split()
    # the restore failed; filter's 6 lines of the network went in; the undo ran and left the tables as before
    assert out == ["1", "6", "0", "True"], out
    sandbox.sh("iptables", "-w", "-F", "FORWARD")
    for chain in ("WRAPDOCK-FORWARD", "WRAPDOCK-ISOLATION", "WRAPDOCK-ISO-OUT", "WRAPDOCK-ISO-IN"):
        sandbox.sh("iptables", "-w", "-F", chain)
    for chain in ("WRAPDOCK-FORWARD", "WRAPDOCK-ISOLATION", "WRAPDOCK-ISO-OUT", "WRAPDOCK-ISO-IN"):
        sandbox.sh("iptables", "-w", "-X", chain)
    assert sandbox.snapshot() == start


def test_rm_finishes_when_the_bridge_was_deleted_by_hand(sandbox):
    start = sandbox.snapshot()
    live(sandbox, *CREATE)
    sandbox.sh("ip", "link", "del", "testbridge")
    removed = live(sandbox, "network", "rm", "testbridge")
    assert removed.stdout == "testbridge\n"
    assert "(already gone)" in removed.stderr
    assert_clean(sandbox, start)


def test_rm_that_fails_half_way_is_finished_by_running_rm_again(sandbox, sandbox_factory):
    boxes = [sandbox, *(sandbox_factory() for _ in range(WORKERS - 1))]
    start = sandbox.snapshot()
    live(sandbox, *CREATE)
    steps = changing_commands(live(sandbox, "--trail", "json", "network", "rm", "testbridge").stderr)
    assert_clean(sandbox, start)
    link_del = next(i for i, argv in enumerate(steps, start=1) if argv[:3] == ["ip", "link", "del"])
    assert "testbridge" in steps[link_del - 1]
    # the network's rules with the shared chains (one iptables-restore per table), then the bridge
    assert [argv[0] for argv in steps[:link_del - 1]] == ["iptables-restore", "iptables-restore"]
    assert link_del == len(steps) == 3

    def fault(box, k: int) -> None:
        assert box.snapshot() == start
        live(box, "--quiet", *CREATE)
        proc = fail_at(box, k, "network", "rm", "testbridge")
        assert_names_failed_command(proc, steps[k - 1], k)
        assert box.state_records() == ["testbridge.json"], "a failed rm must stay retryable"
        assert box.snapshot() != start  # the failed command's object is still there for the second rm
        assert live(box, "network", "rm", "testbridge").stdout == "testbridge\n"
        assert_clean(box, start)

    # a fault at the filter table (nothing is gone), at nat, at the bridge (each rolls the ones before it back)
    spread(boxes, [1, 2, link_del], fault)


# -- many processes at once ---------------------------------------------------------------------------
def test_ten_parallel_creates_and_ten_parallel_removes(sandbox):
    start = sandbox.snapshot()
    names = [f"par{i}" for i in range(10)]
    subnets = {f"par{i}": f"10.{100 + i}.0.0/24" for i in range(10)}
    results = finish([sandbox.popen_wrapdock("--quiet", "network", "create", "--subnet", subnets[n], n)
                      for n in names])
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""

    views = json.loads(live(sandbox, "network", "ls", "--format", "json").stdout)
    assert sorted(v["name"] for v in views) == names
    assert {v["name"]: v["subnet"] for v in views} == subnets
    assert len({v["subnet"] for v in views}) == 10
    assert bridges(sandbox) == set(names)
    addrs = json.loads(sandbox.sh("ip", "-j", "-4", "addr", "show", "type", "bridge").stdout)
    assert {a["ifname"]: a["addr_info"][0]["local"] for a in addrs if a.get("addr_info")} == {
        n: subnets[n].replace(".0/24", ".1") for n in names}

    # two removals side by side, five networks each: whichever finishes last also removes the shared chains
    results = finish([sandbox.popen_wrapdock("--quiet", "network", "rm", *names[i::2]) for i in (0, 1)])
    for result in results:
        assert result.returncode == 0, result.stderr
    assert_clean(sandbox, start)


def test_parallel_overlapping_creates_exactly_one_wins(sandbox):
    start = sandbox.snapshot()
    requests = {"wide": "10.50.0.0/16", "narrow": "10.50.1.0/24"}
    results = dict(zip(requests, finish([
        sandbox.popen_wrapdock("network", "create", "--subnet", subnet, name) for name, subnet in requests.items()
    ]), strict=True))
    assert sorted(r.returncode for r in results.values()) == [0, 2], {n: r.stderr for n, r in results.items()}
    winner = next(name for name, r in results.items() if r.returncode == 0)
    loser = next(name for name in requests if name != winner)
    assert "overlaps" in error_line(results[loser], 2)
    assert bridges(sandbox) == {winner}
    assert sandbox.state_records() == [f"{winner}.json"]
    assert live(sandbox, "network", "ls", "-q").stdout == f"{winner}\n"
    live(sandbox, "network", "rm", winner)
    assert_clean(sandbox, start)
