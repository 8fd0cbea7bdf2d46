"""Many wrapdock processes at once on one host: 30 containers started and removed side by side in one
network, and 5 containers racing for one published host port.

(Parallel creates of networks, overlapping ones included, are in test_network_reliability.py.)
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address, IPv4Network

import pytest

from tests.integration.containerlab import container_dirs, netns_list
from tests.integration.reliability import (
    assert_no_leftovers,
    assert_same,
    fetch,
    finish,
    ok,
    one_error,
    prepare,
    wait_for,
)

pytestmark = pytest.mark.integration

NET, SUBNET = "pnet", "10.80.0.0/24"
GATEWAY = "10.80.0.1"


def hosts_table(text: str) -> dict[str, str]:
    table = {}
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            for name in words[1:]:
                table[name] = words[0]
    return table


def test_thirty_parallel_runs_into_one_network_then_thirty_parallel_removals(sandbox):
    box = sandbox
    start = box.snapshot()
    before = prepare(box, (NET, SUBNET))
    names = [f"c{i:02d}" for i in range(30)]

    started = finish([box.popen_wrapdock("--quiet", "run", "-d", "--name", name, "--net", NET, "busybox", "sleep",
                                         "600") for name in names])
    for name, result in zip(names, started, strict=True):
        assert result.returncode == 0, f"{name}: exit {result.returncode}\n{result.stderr}"
        assert result.stderr == "", result.stderr

    # 30 running containers with 30 distinct addresses of the subnet, the state agreeing with itself
    views = {view["name"]: view for view in json.loads(ok(box, "ps", "--format", "json").stdout)}
    assert sorted(views) == names
    assert all(view["state"]["status"] == "running" for view in views.values())
    address = {name: view["endpoints"][0]["address"] for name, view in views.items()}
    assert len(set(address.values())) == 30, address
    for value in address.values():
        assert IPv4Address(value) in IPv4Network(SUBNET) and value != GATEWAY, value
    (network,) = json.loads(ok(box, "network", "inspect", NET).stdout)
    assert {a["address"]: a["owner"] for a in network["allocations"]} == {
        address[name]: views[name]["id"] for name in names}
    assert sorted(network["containers"]) == names
    assert len(box.state_records("containers")) == 30

    # the host and each container agree: 30 veths on the bridge, each address on its container's eth0
    ports = json.loads(box.sh("ip", "-j", "link", "show", "master", NET).stdout)
    assert sorted(port["ifname"] for port in ports) == sorted(f"wd{views[n]['id'][:10]}0" for n in names)
    inside = box.bash("for n in " + " ".join(names) + "; do echo \"$n $(ip -n $n -4 -o addr show dev eth0)\"; done")
    for line in inside.stdout.splitlines():
        name, rest = line.split(" ", 1)
        assert f" inet {address[name]}/24 " in rest, line
    # every one of them answers a real ping from the host
    pings = [subprocess.Popen([*box.enter_argv(), "busybox", "ping", "-c1", "-W3", address[name]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in names]
    unreachable = [name for name, ping in zip(names, pings, strict=True) if ping.wait(timeout=60) != 0]
    assert unreachable == []
    # started side by side, yet each one's /etc/hosts names all 30 with their addresses
    for name in names:
        hosts = (box.sh("cat", f"/run/wrapdock-data/containers/{views[name]['id']}/etc/hosts").stdout)
        table = hosts_table(hosts)
        assert {n: table.get(n) for n in names} == address, f"{name}'s /etc/hosts:\n{hosts}"

    removed = finish([box.popen_wrapdock("--quiet", "rm", "-f", name) for name in names])
    for name, result in zip(names, removed, strict=True):
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{name}\n", ""), result
    (network,) = json.loads(ok(box, "network", "inspect", NET).stdout)
    assert network["allocations"] == [] and network["containers"] == []
    assert_same(box, before, "after 30 parallel rm -f")
    ok(box, "--quiet", "network", "rm", NET)
    assert_no_leftovers(box, start)


SLOW_SH = """#!/bin/bash
# `sh` for wrapdock: a script that rewrites /etc/hosts files waits 2 s first (and says so), so that
# another wrapdock can act in between; everything else runs at once
if [ "$1" = -s ]; then
    script=$(cat)
    if [[ $script == *"/hosts"* ]]; then touch /run/slowsh/waiting; sleep 2; fi
    printf '%s\\n' "$script" | /bin/sh "$@"
    exit
fi
exec /bin/sh "$@"
"""


def test_parallel_removals_do_not_fail_each_other(sandbox):
    """Regression, made certain: `rm -f` rewrote its neighbours' /etc/hosts under the lock while a parallel
    `rm -f` deleted its own container's directory outside it, before removing the record; the rewrite then
    failed ("cannot create .../hosts: Directory nonexistent") and an rm -f that had removed its container
    exited 1 (and could not be retried: no such container). It showed in about one of three runs of 30
    parallel removals; here the first rm's rewrite waits (a slow `sh` on its PATH) while the second runs."""
    box = sandbox
    start = box.snapshot()
    before = prepare(box, (NET, SUBNET))
    for name in ("first", "second", "third"):
        ok(box, "--quiet", "run", "-d", "--name", name, "--net", NET, "busybox", "sleep", "600")
    box.bash(f"mkdir -p /run/slowsh/bin && cat > /run/slowsh/bin/sh <<'EOF'\n{SLOW_SH}EOF\n"
             "chmod 755 /run/slowsh/bin/sh")
    path = "/run/slowsh/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    first = box.popen_wrapdock("--quiet", "rm", "-f", "first", env={"PATH": path})
    wait_for(lambda: box.sh("test", "-e", "/run/slowsh/waiting", check=False).returncode == 0,
             what="the first rm's /etc/hosts rewrite")
    second = box.popen_wrapdock("--quiet", "rm", "-f", "second")
    results = dict(zip(("first", "second"), finish([first, second]), strict=True))
    box.sh("rm", "-rf", "/run/slowsh")
    for name, result in results.items():
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{name}\n", ""), result
    # third's /etc/hosts names neither of them any more
    third = json.loads(ok(box, "inspect", "third").stdout)[0]
    assert set(hosts_table(box.sh("cat", f"/run/wrapdock-data/containers/{third['id']}/etc/hosts").stdout)) == {
        "localhost", "ip6-localhost", "ip6-loopback", "third"}
    ok(box, "--quiet", "rm", "-f", "third")
    assert_same(box, before, "after the removals")
    ok(box, "--quiet", "network", "rm", NET)
    assert_no_leftovers(box, start)


def test_five_parallel_runs_publishing_one_port_exactly_one_wins(sandbox):
    box = sandbox
    start = box.snapshot()
    before = prepare(box, (NET, SUBNET))
    names = [f"pub{i}" for i in range(5)]

    results = dict(zip(names, finish([box.popen_wrapdock(
        "--quiet", "run", "-d", "--name", name, "--net", NET, "-p", "8080:80", "busybox", "sh", "-c",
        f"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www") for name in names]),
        strict=True))
    codes = sorted(result.returncode for result in results.values())
    assert codes == [0, 2, 2, 2, 2], {name: (r.returncode, r.stderr) for name, r in results.items()}
    (winner,) = [name for name, result in results.items() if result.returncode == 0]
    for name, result in results.items():
        if name != winner:
            line = one_error(result, 2)
            assert "host port 8080/tcp is already published by container" in line, line
            assert result.stdout == ""

    # the losers left nothing: one record, one lease, one namespace, one directory, one set of port rules
    assert len(box.state_records("containers")) == 1
    assert netns_list(box) == [winner]
    assert len(container_dirs(box)) == 1
    (network,) = json.loads(ok(box, "network", "inspect", NET).stdout)
    assert network["containers"] == [winner] and len(network["allocations"]) == 1
    dnat = [line for line in box.sh("iptables-save", "-t", "nat").stdout.splitlines()
            if "--dport 8080" in line and "-j DNAT" in line]
    assert len(dnat) == 1, dnat
    # and the port is the winner's: a real request through it reaches the winner's httpd
    got = wait_for(lambda: fetch(box, "http://127.0.0.1:8080/"), what="the published port")
    assert got == f"{winner}\n"

    ok(box, "--quiet", "rm", "-f", winner)
    assert_same(box, before, "after rm -f of the winner")
    ok(box, "--quiet", "network", "rm", NET)
    assert_no_leftovers(box, start)
