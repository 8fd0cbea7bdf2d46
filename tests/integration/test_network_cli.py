"""`wrapdock network` create / list / inspect / rm, the trail, bad input and bad state, in a sandbox host."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.integration.netlab import (
    ERROR_PREFIX,
    bridges,
    error_line,
    exists,
    finish,
    json_trail,
    link,
    live,
    state_files,
)

pytestmark = pytest.mark.integration

HEADERS = ["NAME", "DRIVER", "SCOPE", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"]


def addresses(sandbox, dev: str) -> list[tuple[str, int]]:
    out = json.loads(sandbox.sh("ip", "-j", "-4", "addr", "show", "dev", dev).stdout)
    return [(a["local"], a["prefixlen"]) for entry in out for a in entry.get("addr_info", [])]


def audit_records(sandbox) -> list[dict]:
    out = sandbox.bash("cat /run/wrapdock/audit.log 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines()]


def assert_clean(sandbox, start) -> None:
    assert sandbox.snapshot() == start
    assert sandbox.state_records() == []
    assert sandbox.state_records("ipam") == []


# -- the life of a network -------------------------------------------------------------------------
def test_create_list_inspect_rm_as_in_the_series(sandbox):
    start = sandbox.snapshot()

    created = live(sandbox, "network", "create", "--driver", "bridge", "--subnet", "162.16.0.1/24", "testbridge")
    assert created.stdout == "testbridge\n"
    bridge = link(sandbox, "testbridge")
    assert bridge is not None and bridge["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in bridge["flags"]
    assert addresses(sandbox, "testbridge") == [("162.16.0.1", 24)]
    route = json.loads(sandbox.sh("ip", "-j", "route", "show", "162.16.0.0/24").stdout)
    assert [r["dev"] for r in route] == ["testbridge"]
    assert sandbox.state_records() == ["testbridge.json"]
    assert sandbox.state_records("ipam") == ["testbridge.json"]

    # read-only commands, side by side
    listed_table, ls_table, ls_json, inspected, missing = finish([sandbox.popen_wrapdock(*args) for args in (
        ["network", "list"], ["network", "ls"], ["network", "ls", "--format", "json"],
        ["network", "inspect", "testbridge"], ["network", "inspect", "testbridge", "nope"])])
    for table in (listed_table, ls_table):
        assert table.returncode == 0, table.stderr
        rows = [line.split() for line in table.stdout.splitlines()]
        assert rows == [HEADERS, ["testbridge", "bridge", "local", "162.16.0.0/24", "162.16.0.1", "testbridge", "0"]]
    listed = json.loads(ls_json.stdout)
    assert len(listed) == 1
    view = listed[0]
    assert {k: view[k] for k in ("name", "driver", "subnet", "gateway", "bridge", "mtu", "internal")} == {
        "name": "testbridge", "driver": "bridge", "subnet": "162.16.0.0/24", "gateway": "162.16.0.1",
        "bridge": "testbridge", "mtu": None, "internal": False}
    assert len(view["id"]) == 64 and int(view["id"], 16) >= 0
    assert view["allocations"] == []
    assert json.loads(inspected.stdout) == listed
    assert "allocations" in listed[0] and "last_reserved" in listed[0]
    assert "no such network: nope" in error_line(missing, 2)

    assert live(sandbox, "network", "rm", "testbridge").stdout == "testbridge\n"
    assert link(sandbox, "testbridge") is None
    assert_clean(sandbox, start)
    assert "no such network: testbridge" in error_line(sandbox.wrapdock("network", "rm", "testbridge",
                                                                        check=False), 2)


def test_create_options_canonical_subnet_gateway_bridge_name_mtu_internal(sandbox):
    start = sandbox.snapshot()
    long_name = "a-network-name-longer-than-15"
    requests = [
        ["--subnet", "162.16.0.0/24", "testbridge"],
        ["--subnet", "10.60.0.0/24", "--gateway", "10.60.0.254", "--mtu", "1400", "gw"],
        ["--subnet", "10.63.0.0/30", "--bridge-name", "wdlong0", "--internal", long_name],
    ]
    for result in finish([sandbox.popen_wrapdock("--quiet", "network", "create", *r) for r in requests]):
        assert (result.returncode, result.stderr) == (0, ""), result.stderr

    assert addresses(sandbox, "testbridge") == [("162.16.0.1", 24)]  # the canonical form: the first address
    assert addresses(sandbox, "gw") == [("10.60.0.254", 24)]
    assert addresses(sandbox, "wdlong0") == [("10.63.0.1", 30)]
    assert link(sandbox, long_name[:15]) is None
    mtus = {entry["ifname"]: entry["mtu"] for entry in json.loads(sandbox.sh("ip", "-j", "link").stdout)}
    assert mtus["gw"] == 1400
    assert mtus["testbridge"] == 1500
    assert bridges(sandbox) == {"testbridge", "gw", "wdlong0"}

    views = {v["name"]: v for v in json.loads(live(sandbox, "network", "inspect", "testbridge", "gw",
                                                   long_name).stdout)}
    assert views["testbridge"]["gateway"] == "162.16.0.1"
    assert (views["gw"]["gateway"], views["gw"]["mtu"], views["gw"]["internal"]) == ("10.60.0.254", 1400, False)
    assert (views[long_name]["bridge"], views[long_name]["internal"]) == ("wdlong0", True)

    # an internal network gets isolation DROPs and no NAT; a normal one gets its MASQUERADE path
    saved = sandbox.sh("iptables-save").stdout
    internal_rules = [line for line in saved.splitlines() if f"wrapdock:network={long_name}" in line]
    drops = [r for r in internal_rules if r.startswith("-A WRAPDOCK-ISOLATION") and r.endswith("-j DROP")]
    assert len(drops) == 2, internal_rules
    assert not any("-s 10.63.0.0/30" in r for r in internal_rules), internal_rules
    assert "-A WRAPDOCK-POSTROUTING -s 10.60.0.0/24 ! -o gw" in saved

    # `remove` is `rm`; several at once
    removed = live(sandbox, "network", "remove", "testbridge", "gw", long_name)
    assert removed.stdout.split() == ["testbridge", "gw", long_name]
    assert_clean(sandbox, start)


# -- the trail and the audit log -----------------------------------------------------------------------
def test_trail_text_quiet_json_and_audit_log(sandbox):
    start = sandbox.snapshot()

    created = live(sandbox, "network", "create", "--driver", "bridge", "--subnet", "162.16.0.1/24", "testbridge")
    lines = created.stderr.splitlines()
    assert lines[0].startswith("# ")
    assert all(line.startswith(("# ", "+ ", "  ")) for line in lines), created.stderr
    # (`name`/`dev` before the bridge, if there, keep iproute2 from reading a name such as `up` as a keyword)
    # the bridge, its owner alias, its address and its state in one `ip -batch`, and its route_localnet, in
    # one `sh -s`, every line shown
    at = lines.index("# bridge testbridge with gateway 162.16.0.1/24; published ports answer on 127.0.0.1 too "
                     "(route_localnet on the bridge)")
    assert lines[at + 1:at + 11] == ["+ sh -s <<'WRAPDOCK_EOF'", "  set -e", "  ip -batch - <<'WRAPDOCK_BATCH_EOF'",
                                     "  link add name testbridge type bridge",
                                     "  link set dev testbridge alias wrapdock:network=testbridge",
                                     "  addr add 162.16.0.1/24 dev testbridge", "  link set dev testbridge up",
                                     "  WRAPDOCK_BATCH_EOF", "  sysctl -w net/ipv4/conf/testbridge/route_localnet=1",
                                     "  WRAPDOCK_EOF"]
    # the host read once, first, in one `sh -s`: links, addresses and routes, the forwarding switch, the tables
    # (iptables-save); the shared chains, all missing, in a restore per table of their own, skipped if the
    # table's first chain is there (the probe's output is not shown); then the network's own lines
    assert lines[:2] == ["# read the host's links, addresses, routes, IPv4 forwarding and iptables",
                         "+ sh -s <<'WRAPDOCK_EOF'"]
    assert {"  ip -j -batch - <<'WRAPDOCK_BATCH_EOF'", "  cat /proc/sys/net/ipv4/ip_forward",
            "  iptables-save"} <= set(lines[2:lines.index("  WRAPDOCK_EOF")])
    at = lines.index("+ iptables -w -t filter -S WRAPDOCK-FORWARD >/dev/null 2>&1 || "
                     "iptables-restore -w --noflush <<'WRAPDOCK_EOF'")
    assert lines[at + 1:at + 3] == ["  *filter", "  -N WRAPDOCK-FORWARD"]
    at = next(i for i, line in enumerate(lines) if line.startswith("+ iptables-restore -w --noflush "))
    assert lines[at + 1] == "  *filter" and not [line for line in lines[at:] if line.startswith("  -N ")]
    assert "  -A WRAPDOCK-FORWARD -i testbridge -o testbridge -m comment --comment wrapdock:network=testbridge " \
           "-j ACCEPT" in lines[at:]
    headings = [line for line in lines if line.startswith("# ")]
    assert len(headings) >= 3  # host read, bridge, iptables: each group of commands under its note

    audit = audit_records(sandbox)
    assert audit, "audit.log is empty"
    for entry in audit:
        assert {"argv", "exit_code", "duration_ms", "phase", "pid", "time"} <= entry.keys()
    assert any(e["phase"] == "do" and e["argv"] == ["sh", "-s"]
               and "link add name testbridge type bridge" in e["stdin"] and e["exit_code"] == 0 for e in audit)
    # the audit log and the trail agree: every audited command is shown (quoted as the trail quotes it, the
    # lines of a program argument indented under the `+`)
    trail_text = created.stderr
    for entry in audit:
        assert shlex.join(entry["argv"]).replace("\n", "\n  ") in trail_text

    # --quiet: no trail at all, the answer only
    removed = live(sandbox, "--quiet", "network", "rm", "testbridge")
    assert (removed.stdout, removed.stderr) == ("testbridge\n", "")
    assert_clean(sandbox, start)
    after_rm = audit_records(sandbox)
    assert any(e["argv"][:3] == ["ip", "link", "del"] and "testbridge" in e["argv"] and e["exit_code"] == 0
               for e in after_rm[len(audit):])

    # --trail json: one JSON object per executed command, the same ones audit.log records
    created = live(sandbox, "--trail", "json", "network", "create", "--subnet", "162.16.0.1/24", "testbridge")
    records = json_trail(created.stderr)
    assert records
    for record in records:
        assert isinstance(record["argv"], list) and all(isinstance(w, str) for w in record["argv"])
        assert isinstance(record["exit_code"], int)
        assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] >= 0
    assert any(r["argv"] == ["sh", "-s"] and "link add name testbridge type bridge" in r["stdin"]
               and r["exit_code"] == 0 for r in records)
    new_audit = audit_records(sandbox)[len(after_rm):]
    assert [(e["phase"], e["argv"], e["exit_code"]) for e in new_audit] == [
        (r["phase"], r["argv"], r["exit_code"]) for r in records]

    removed = live(sandbox, "--trail", "quiet", "network", "rm", "testbridge")
    assert removed.stderr == ""
    assert_clean(sandbox, start)


# -- bad input: refused before anything changes -------------------------------------------------------
BAD_REQUESTS = {
    "no-prefix": (["--subnet", "10.20.0.0", "n1"], "invalid subnet"),
    "garbage-subnet": (["--subnet", "10.20.0/24x", "n1"], "invalid subnet"),
    "octet-too-big": (["--subnet", "300.20.0.0/24", "n1"], "invalid subnet"),
    "two-slashes": (["--subnet", "10.20.0.0/24/8", "n1"], "invalid subnet"),
    "prefix-33": (["--subnet", "10.20.0.0/33", "n1"], "invalid subnet"),
    "ipv6": (["--subnet", "fd00:1::/64", "n1"], "only IPv4"),
    "prefix-31": (["--subnet", "10.20.0.0/31", "n1"], "between /8 and /30"),
    "prefix-7": (["--subnet", "10.0.0.0/7", "n1"], "between /8 and /30"),
    "loopback-range": (["--subnet", "127.1.0.0/16", "n1"], "reserved range"),
    "gateway-outside": (["--subnet", "10.20.0.0/24", "--gateway", "10.21.0.1", "n1"], "not in subnet"),
    "gateway-broadcast": (["--subnet", "10.20.0.0/24", "--gateway", "10.20.0.255", "n1"], "broadcast"),
    "gateway-disagrees": (["--subnet", "10.20.0.1/24", "--gateway", "10.20.0.2", "n1"], "give one"),
    "missing-subnet": (["n1"], "--subnet"),
    "unknown-driver": (["--driver", "macvlan", "--subnet", "10.20.0.0/24", "n1"], "unknown network driver"),
    "name-too-long-for-bridge": (["--subnet", "10.20.0.0/24", "sixteen-chars-xx"], "--bridge-name"),
    "bridge-name-too-long": (["--subnet", "10.20.0.0/24", "--bridge-name", "sixteen-chars-xx", "n1"],
                             "at most 15"),
    "name-leading-dash": (["--subnet", "10.20.0.0/24", "--", "-n1"], "invalid network name"),
    "mtu-too-small": (["--subnet", "10.20.0.0/24", "--mtu", "67", "n1"], "--mtu"),
}


@pytest.mark.parametrize("args, expected", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_create_input_is_refused_and_changes_nothing(sandbox, args, expected):
    start = sandbox.snapshot()
    line = error_line(sandbox.wrapdock("network", "create", *args, check=False), 2)
    assert expected in line
    assert_clean(sandbox, start)
    assert [e for e in audit_records(sandbox) if e["phase"] != "query"] == []


def test_shell_metacharacters_never_reach_a_shell(sandbox, tmp_path):
    start = sandbox.snapshot()
    canaries = [tmp_path / "canary", Path("/tmp/canary")]
    fresh = [c for c in canaries if not exists(sandbox, str(c))]  # (a /tmp/canary left by others proves nothing)
    attempts = []
    for canary in canaries:
        evil = f"a'b;touch {canary}"
        attempts += [
            ["network", "create", "--subnet", "10.20.0.0/24", evil],
            ["network", "create", "--subnet", "10.20.0.0/24", "--bridge-name", evil, "n1"],
            ["network", "create", "--subnet", f"10.20.0.0/24;touch {canary}", "n1"],
            ["network", "create", "--subnet", "10.20.0.0/24", f"$(touch {canary})"],
            ["--print-only", "network", "create", "--subnet", "10.20.0.0/24", evil],
            ["network", "rm", evil],
            ["network", "inspect", evil],
        ]
    for attempt, result in zip(attempts, finish([sandbox.popen_wrapdock(*args) for args in attempts]), strict=True):
        assert result.stdout == "", attempt
        error_line(result, 2)
    for canary in fresh:
        assert not exists(sandbox, str(canary)), f"{canary} was created"
    assert_clean(sandbox, start)


def test_conflicts_with_networks_and_the_host_are_refused(sandbox):
    start = sandbox.snapshot()
    live(sandbox, "network", "create", "--subnet", "10.40.0.0/16", "net1")
    sandbox.bash("""
        ip addr add 10.77.0.1/16 dev lo
        ip link add x type dummy 2>/dev/null || ip link add x type bridge  # (no dummy module everywhere)
        ip link add dum0 type bridge
        ip link set dum0 up
        ip route add 10.78.0.0/16 dev dum0
    """)
    before = sandbox.snapshot()
    records = state_files(sandbox)
    cases = [
        (["--subnet", "10.40.5.0/24", "other"], "overlaps subnet 10.40.0.0/16 of network 'net1'"),
        (["--subnet", "10.0.0.0/8", "other"], "overlaps subnet 10.40.0.0/16 of network 'net1'"),
        (["--subnet", "10.41.0.0/24", "net1"], "already exists"),
        (["--subnet", "10.41.0.0/24", "--bridge-name", "net1", "other"], "already used by network 'net1'"),
        (["--subnet", "10.77.3.0/24", "other"], "overlaps address 10.77.0.1/16 on lo"),
        (["--subnet", "10.78.1.0/24", "other"], "overlaps route 10.78.0.0/16"),
        (["--subnet", "10.79.0.0/24", "x"], "'x' already exists on this host"),
        (["--subnet", "10.79.0.0/24", "--bridge-name", "lo", "other"], "'lo' already exists"),
    ]
    results = finish([sandbox.popen_wrapdock("network", "create", *args) for args, _ in cases])
    for (args, expected), result in zip(cases, results, strict=True):
        line = error_line(result, 2)
        assert expected in line, (args, line)
    assert sandbox.snapshot() == before
    assert state_files(sandbox) == records
    # the same checks hold for --print-only: no script for a network that cannot be made
    proc = sandbox.wrapdock("--print-only", "network", "create", "--subnet", "10.77.3.0/24", "other", check=False)
    assert "overlaps address" in error_line(proc, 2)
    assert proc.stdout == ""

    sandbox.bash("ip link del x; ip link del dum0; ip addr del 10.77.0.1/16 dev lo")
    live(sandbox, "network", "rm", "net1")
    assert_clean(sandbox, start)


def test_prefix_boundaries_8_and_30_are_accepted(sandbox):
    start = sandbox.snapshot()
    for subnet in ("10.0.0.0/8", "10.20.0.0/30"):
        proc = live(sandbox, "--print-only", "network", "create", "--subnet", subnet, "edge")
        assert re.search(r"^link add name edge type bridge$", proc.stdout, re.M)
    assert_clean(sandbox, start)


# -- state that wrapdock cannot read ------------------------------------------------------------------
def test_corrupt_state_is_reported_with_its_path_and_left_alone(sandbox):
    start = sandbox.snapshot()
    sandbox.bash("mkdir -p /run/wrapdock/networks && printf '{not json\\n' > /run/wrapdock/networks/x.json")
    garbage = state_files(sandbox)
    for args in (["network", "ls"], ["network", "list", "--format", "json"], ["network", "inspect", "x"],
                 ["network", "rm", "x"], ["network", "create", "--subnet", "10.20.0.0/24", "n1"]):
        proc = sandbox.wrapdock(*args, check=False)
        line = error_line(proc, 3)
        assert "/run/wrapdock/networks/x.json" in line, line
        assert proc.stdout == ""
        assert state_files(sandbox) == garbage
        assert sandbox.snapshot() == start

    # valid JSON that is not a network record: the same
    sandbox.bash('echo \'{"name": "x", "version": 1}\' > /run/wrapdock/networks/x.json')
    wrong = state_files(sandbox)
    line = error_line(sandbox.wrapdock("network", "ls", check=False), 3)
    assert line.startswith(ERROR_PREFIX) and "networks/x.json" in line
    assert state_files(sandbox) == wrong

    sandbox.sh("rm", "/run/wrapdock/networks/x.json")
    assert live(sandbox, "network", "ls", "-q").stdout == ""
    assert_clean(sandbox, start)
