"""doctor and gc on real sandbox hosts: planted problems are found, crashes are cleaned up, exactly.

Every test ends with the sandbox as it started (snapshot and cgroups), apart from the foreign objects
it planted on purpose to prove that gc leaves them alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.sandbox import Sandbox

pytestmark = pytest.mark.integration

BUSYBOX = "/usr/bin/busybox"
ORPHAN_ID = "0123456789abcdef" * 4
ORPHAN_VETH = "wdfedcba98760"


# -- helpers ----------------------------------------------------------------------------------------
def wd(sandbox: Sandbox, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = sandbox.wrapdock(*args, check=False, env=env)
    assert proc.returncode == 0, f"wrapdock {shlex.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def doctor(sandbox: Sandbox) -> tuple[int, set[tuple[str, str]], list[dict]]:
    proc = sandbox.wrapdock("doctor", "--format", "json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    found = json.loads(proc.stdout)
    assert all(f["severity"] in ("error", "warning") and f["finding"] and f["fix"] for f in found)
    return proc.returncode, {(f["check"], f["subject"]) for f in found}, found


def changes(stderr: str) -> list[list[str]]:
    """argv of every command that changed the host, from a `--trail json` run."""
    return [r["argv"] for r in map(json.loads, filter(None, stderr.splitlines())) if r["phase"] == "do"]


def container_id(sandbox: Sandbox, name: str) -> str:
    return json.loads(wd(sandbox, "inspect", name).stdout)[0]["id"]


def state_of(sandbox: Sandbox, name: str) -> dict:
    return json.loads(wd(sandbox, "inspect", name).stdout)[0]


def kill_unseen(sandbox: Sandbox, name: str) -> None:
    """kill -9 a container's process and its shim first, so that no exit code gets written (a crash)."""
    pid = state_of(sandbox, name)["state"]["pid"]
    sandbox.bash(f"unshare_pid=$(cut -d' ' -f4 /proc/{pid}/stat); shim=$(cut -d' ' -f4 /proc/$unshare_pid/stat); "
                 f"kill -9 $shim; kill -9 {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.01; done")


def kill(sandbox: Sandbox, name: str) -> None:
    """kill -9 a container's process; its shim records the exit (137)."""
    pid = state_of(sandbox, name)["state"]["pid"]
    sandbox.bash(f"kill -9 {pid}")
    deadline = time.monotonic() + 30
    while state_of(sandbox, name)["state"]["exit_code"] is None:
        assert time.monotonic() < deadline, f"{name}: no exit code after kill -9"
        time.sleep(0.02)


def netns_names(sandbox: Sandbox) -> set[str]:
    return {entry["name"] for entry in json.loads(sandbox.sh("ip", "-j", "netns", "list").stdout or "[]")}


def read_json(sandbox: Sandbox, path: str) -> dict:
    return json.loads(sandbox.sh("cat", path).stdout)


def write_json(sandbox: Sandbox, path: str, data: dict) -> None:
    sandbox.sh("sh", "-c", 'cat > "$1"', "write", path, input=json.dumps(data))


def state_text(sandbox: Sandbox) -> str:
    """Every state record, for "nothing changed" checks."""
    return sandbox.bash("cd /run/wrapdock && for f in networks/* ipam/* containers/*; do [ -f \"$f\" ] && "
                        "{ echo \"== $f\"; cat \"$f\"; }; done; true").stdout


def cgroup_dir(sandbox: Sandbox, container: str) -> Path:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").is_file():
        return root / sandbox.cgroup_parent / container
    return root / "pids" / sandbox.cgroup_parent / container


def plant_foreign(sandbox: Sandbox) -> None:
    """Things that are not wrapdock's, some of them look alike: gc must leave every one of them alone."""
    sandbox.bash("""
        set -e
        ip link add foreignbr type bridge
        iptables -A FORWARD -i foreignbr -j ACCEPT
        ip netns add foreignns
        ip link add fveth0 type veth peer name eth0 netns foreignns
        ip link set fveth0 master foreignbr
    """)


def remove_foreign(sandbox: Sandbox) -> None:
    sandbox.bash("ip link del fveth0; ip netns del foreignns; iptables -D FORWARD -i foreignbr -j ACCEPT; "
                 "ip link del foreignbr")


def teardown(sandbox: Sandbox, containers: list[str], networks: list[str]) -> None:
    if containers:
        wd(sandbox, "rm", "-f", *containers)
    if networks:
        wd(sandbox, "network", "rm", *networks)


# -- doctor ---------------------------------------------------------------------------------------------
def test_doctor_finds_each_planted_problem_and_calls_clean_hosts_clean(sandbox: Sandbox) -> None:
    start = sandbox.snapshot()
    assert sandbox.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"
    proc = wd(sandbox, "doctor")  # a fresh host: forwarding off does not matter without a network
    assert proc.stdout == "no problems found\n"
    assert "+ iptables-save" in proc.stderr and "+ ip -j -d addr show" in proc.stderr  # reads are in the trail

    for name, subnet in (("n1", "10.77.0.0/24"), ("n2", "10.78.0.0/24"), ("n3", "10.79.0.0/24")):
        wd(sandbox, "network", "create", "--subnet", subnet, name)
    wd(sandbox, "run", "-d", "--name", "run1", "--net", "n1", "-p", "8080:80", "sleep", "1000")
    wd(sandbox, "run", "-d", "--name", "dead1", "--net", "n1", "sleep", "1000")
    plant_foreign(sandbox)
    assert doctor(sandbox)[:2] == (0, set())  # networks, containers, foreign objects: all fine

    bridge_nf = sandbox.sh("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables", check=False).stdout.strip() == "1"
    kill_unseen(sandbox, "dead1")
    record = read_json(sandbox, f"/run/wrapdock/containers/{container_id(sandbox, 'run1')}.json")
    dead_pid = sandbox.sh("sh", "-c", "echo $$").stdout.strip()
    record.update(id="f" * 64, name="halfmade", netns="halfmade", phase="creating", owner_pid=int(dead_pid),
                  endpoints=[], ports=[])
    write_json(sandbox, f"/run/wrapdock/containers/{'f' * 64}.json", record)
    ipam = read_json(sandbox, "/run/wrapdock/ipam/n1.json")
    ipam["allocations"]["10.77.0.200"] = {"owner": "e" * 64, "time": "2024-01-01T00:00:00+00:00"}
    write_json(sandbox, "/run/wrapdock/ipam/n1.json", ipam)
    legacy = ("iptables-legacy", "INPUT", "-m", "comment", "--comment", "planted", "-j", "ACCEPT")
    both_backends = sandbox.sh(legacy[0], "-A", *legacy[1:], check=False).returncode == 0  # (kernel support)
    orphan_dir = f"/run/wrapdock-data/containers/{ORPHAN_ID}"
    cgroup = cgroup_dir(sandbox, ORPHAN_ID)
    cgroup.mkdir(parents=True)
    sandbox.bash(f"""
        set -e
        sysctl -qw net.ipv4.ip_forward=0
        sysctl -qw net.ipv4.conf.all.rp_filter=1
        iptables -P FORWARD DROP
        ip link del n2
        iptables -t nat -D WRAPDOCK-POSTROUTING -s 10.79.0.0/24 '!' -o n3 -m comment --comment wrapdock:network=n3 \
            -j WRAPDOCK-MASQ
        ip link add overlapbr type bridge
        ip link set overlapbr up
        ip route add 10.77.0.128/25 dev overlapbr
        ip netns add ghostns
        ip link add {ORPHAN_VETH} type veth peer name eth0 netns ghostns
        ip link add ghost type bridge
        iptables -A FORWARD -i ghost -o ghost -m comment --comment wrapdock:network=ghost -j ACCEPT
        mkdir -p {orphan_dir}/upper {orphan_dir}/commit
        mount -t tmpfs wrapdock-commit-planted {orphan_dir}/commit
    """)

    code, found, details = doctor(sandbox)
    expected = {
        ("ip-forward-off", "net.ipv4.ip_forward"),
        ("rp-filter-strict", "net.ipv4.conf.all.rp_filter=1"),
        ("network-bridge-gone", "n2"),
        ("network-masquerade-missing", "n3"),
        ("network-overlap", "n1"),
        ("container-exit-unrecorded", "dead1"),
        ("container-abandoned", "halfmade"),
        ("orphan-veth", ORPHAN_VETH),
        ("orphan-netns", "ghostns"),
        ("orphan-rules", "wrapdock:network=ghost"),
        ("orphan-bridge", "ghost"),
        ("orphan-cgroup", str(cgroup)),
        ("orphan-dir", orphan_dir),
        ("orphan-lease", "n1 10.77.0.200"),
        ("leftover-mount", f"{orphan_dir}/commit"),
    }
    if bridge_nf:
        expected.add(("forward-drop", "filter FORWARD policy DROP"))
    if both_backends:
        expected.add(("iptables-both-backends", "iptables-legacy and iptables-nft"))
    assert code == 1
    assert found == expected, f"missing: {expected - found}\nunexpected: {found - expected}"
    fixes = {f["check"]: f["fix"] for f in details}
    assert fixes["orphan-veth"] == [f"ip link del {ORPHAN_VETH}"]
    assert fixes["network-masquerade-missing"][0] == (
        "iptables -w -t nat -A WRAPDOCK-POSTROUTING -s 10.79.0.0/24 '!' -o n3 -m comment --comment "
        "wrapdock:network=n3 -j WRAPDOCK-MASQ")
    table = sandbox.wrapdock("doctor", check=False)
    assert table.returncode == 1 and table.stdout.split("\n")[0].split() == ["SEVERITY", "FINDING", "FIX"]

    gc = wd(sandbox, "gc")
    assert "repaired network n2" in gc.stdout and "removed container halfmade" in gc.stdout
    assert wd(sandbox, "gc").stdout == "nothing to do: the state and the host agree\n"
    # what gc does not own: the operator's call
    sandbox.bash("""
        set -e
        iptables -P FORWARD ACCEPT
        sysctl -qw net.ipv4.conf.all.rp_filter=0
        ip link del overlapbr
    """)
    if both_backends:
        sandbox.sh(legacy[0], "-D", *legacy[1:])
    assert doctor(sandbox)[:2] == (0, set())
    assert state_of(sandbox, "dead1")["state"]["exit_code"] == 255

    teardown(sandbox, ["run1", "dead1"], ["n1", "n2", "n3"])
    remove_foreign(sandbox)
    assert sandbox.snapshot() == start
    assert sandbox.cgroup_dirs() == []


# -- gc -------------------------------------------------------------------------------------------------
def test_gc_after_kills_a_deleted_bridge_and_a_lost_record(sandbox: Sandbox) -> None:
    start = sandbox.snapshot()
    plant_foreign(sandbox)
    with_foreign = sandbox.snapshot()
    wd(sandbox, "network", "create", "--subnet", "10.77.0.0/24", "n1")
    wd(sandbox, "network", "create", "--subnet", "10.78.0.0/24", "n2")
    wd(sandbox, "run", "-d", "--name", "a", "--net", "n1", "-p", "8080:80", "sleep", "1000")
    wd(sandbox, "run", "-d", "--name", "b", "--net", "n2", "sleep", "1000")
    wd(sandbox, "run", "-d", "--name", "keep", "--net", "n1", "sleep", "1000")
    orphan = wd(sandbox, "run", "-d", "--name", "orph", "--net", "n1", "-p", "9090:90", "sleep", "1000").stdout.strip()
    a_id, b_id = container_id(sandbox, "a"), container_id(sandbox, "b")
    assert netns_names(sandbox) == {"a", "b", "keep", "orph", "foreignns"}

    kill_unseen(sandbox, "a")  # a crash: no exit code; then its namespace goes, as in a reboot
    sandbox.sh("ip", "netns", "del", "a")
    kill(sandbox, "b")  # its shim records 137; then its bridge is deleted by hand
    sandbox.sh("ip", "link", "del", "n2")
    sandbox.sh("rm", f"/run/wrapdock/containers/{orphan}.json")  # a record lost: orph runs on, owned by nothing

    # --print-only prints the script and changes nothing
    before, records = sandbox.snapshot(), state_text(sandbox)
    script = wd(sandbox, "gc", "--print-only").stdout
    assert script.startswith("#!/usr/bin/env bash")
    for line in (f"sh -c 'echo 255 > \"$1\"' wrapdock-exit /run/wrapdock-data/containers/{a_id}/exit_code",
                 "[ -d /sys/class/net/n2/bridge ] || ip link add name n2 type bridge",
                 "ip addr replace 10.78.0.1/24 dev n2", f"link set dev wd{b_id[:10]}0 master n2",
                 f"wrapdock:container={orphan}", "ip netns del orph",
                 "### state (wrapdock's records, not a command): release a's address on n1 "
                 "(its network namespace a is gone)"):
        assert line in script, line
    assert sandbox.snapshot() == before and state_text(sandbox) == records

    gc = wd(sandbox, "--trail", "json", "gc")
    done = gc.stdout.splitlines()
    assert "recorded the exit of a (code unknown: 255)" in done
    assert "dropped a's endpoint on n1: its network namespace a is gone" in done
    assert "repaired network n2 (bridge gone)" in done
    assert f"deleted veth wd{orphan[:10]}0" in done and "deleted network namespace orph" in done
    assert ["sh", "-s"] in changes(gc.stderr)  # the bridge re-made by an ensure script
    assert "[ -d /sys/class/net/n2/bridge ] || ip link add name n2 type bridge" in gc.stderr

    a, b = state_of(sandbox, "a"), state_of(sandbox, "b")
    assert (a["state"]["exit_code"], a["endpoints"], a["ports"]) == (255, [], [])
    assert b["state"]["exit_code"] == 137 and b["endpoints"]
    allocations = json.loads(wd(sandbox, "network", "inspect", "n1").stdout)[0]["allocations"]
    assert {x["owner"] for x in allocations} == {container_id(sandbox, "keep")}
    # n2 is back, b's veth is on it again: b's namespace reaches the gateway through the new bridge
    assert sandbox.sh("ip", "netns", "exec", "b", BUSYBOX, "ping", "-c1", "-W2", "10.78.0.1").returncode == 0
    after = sandbox.snapshot()
    assert [r for r in after["iptables"] if "foreignbr" in r] == [r for r in with_foreign["iptables"]
                                                                 if "foreignbr" in r]
    assert any(link[0] == "fveth0" for link in after["links"])
    assert not any(orphan in r or a_id in r for r in after["iptables"])  # no stale DNAT hijacks 8080 or 9090
    assert netns_names(sandbox) == {"b", "keep", "foreignns"}

    again = wd(sandbox, "--trail", "json", "gc")
    assert again.stdout == "nothing to do: the state and the host agree\n"
    assert changes(again.stderr) == []
    code, found, _ = doctor(sandbox)  # only what gc leaves to the user: a cannot start without its namespace
    assert (code, found) == (1, {("container-netns-gone", "a")})

    teardown(sandbox, ["a", "b", "keep"], ["n1", "n2"])
    assert sandbox.snapshot() == with_foreign
    assert sandbox.cgroup_dirs() == []
    remove_foreign(sandbox)
    assert sandbox.snapshot() == start


def test_gc_after_wrapdock_was_killed_mid_run_leaves_nothing(sandbox: Sandbox) -> None:
    """`wrapdock run` killed with -9 after it made everything but the process (a setsid that never returns)."""
    start = sandbox.snapshot()
    wd(sandbox, "network", "create", "--subnet", "10.77.0.0/24", "n1")
    with_network = sandbox.snapshot()
    sandbox.bash("mkdir -p /run/stuckbin && printf '#!/bin/sh\\necho $$ > /run/stuck\\nexec sleep 1000\\n' "
                 "> /run/stuckbin/setsid && chmod +x /run/stuckbin/setsid")
    run = sandbox.popen_wrapdock("run", "-d", "--name", "half", "--net", "n1", "-p", "8080:80", "sleep", "1000",
                                 env={"PATH": "/run/stuckbin:" + os.environ["PATH"]})
    for _ in range(1000):
        if sandbox.sh("test", "-s", "/run/stuck", check=False).returncode == 0:
            break
        time.sleep(0.02)
    else:
        run.kill()
        raise AssertionError("wrapdock run never reached setsid")
    (name,) = sandbox.state_records("containers")
    record = read_json(sandbox, f"/run/wrapdock/containers/{name}")
    assert record["phase"] == "creating"
    sandbox.bash(f"kill -9 {record['owner_pid']} $(cat /run/stuck)")
    run.communicate(timeout=30)
    made = sandbox.snapshot()
    assert "half" in made["netns"] and any("wrapdock:container=" in r for r in made["iptables"])
    assert sandbox.cgroup_dirs() != []

    assert ("container-abandoned", "half") in doctor(sandbox)[1]
    gc = wd(sandbox, "gc")
    assert gc.stdout.startswith("removed container half")
    after = sandbox.snapshot()  # (the bridge's carrier flags differ once a port came and went)
    assert [link[0] for link in after["links"]] == [link[0] for link in with_network["links"]]
    assert (after["iptables"], after["netns"], after["addrs"]) == (with_network["iptables"], [], with_network["addrs"])
    assert sandbox.cgroup_dirs() == []
    assert sandbox.state_records("containers") == []
    assert json.loads(wd(sandbox, "network", "inspect", "n1").stdout)[0]["allocations"] == []
    assert sandbox.sh("ls", "/run/wrapdock-data/containers").stdout == ""
    assert wd(sandbox, "gc").stdout == "nothing to do: the state and the host agree\n"
    assert doctor(sandbox)[:2] == (0, set())

    wd(sandbox, "network", "rm", "n1")
    assert sandbox.snapshot() == start


BUSY_ID = "0000feed" * 8  # sorts before ORPHAN_ID: gc meets the busy cgroup before the other one


def plant_orphans(sandbox: Sandbox) -> list[str]:
    """Leftovers gc can remove: a wd veth, a stale rule, an empty cgroup, a directory; what gc says it did."""
    cgroup = cgroup_dir(sandbox, ORPHAN_ID)
    cgroup.mkdir()
    directory = f"/run/wrapdock-data/containers/{ORPHAN_ID}"
    sandbox.bash(f"""
        set -e
        ip link add {ORPHAN_VETH} type veth peer name fpeer0
        iptables -A FORWARD -i ghost -o ghost -m comment --comment wrapdock:network=ghost -j ACCEPT
        mkdir -p {directory}/upper
    """)
    return ["deleted 1 iptables rule(s) tagged wrapdock:network=ghost", f"deleted veth {ORPHAN_VETH}",
            f"removed cgroup {cgroup}", f"removed directory {directory}"]


def orphans_gone(sandbox: Sandbox, start: dict) -> bool:
    return (sandbox.snapshot() == start and not cgroup_dir(sandbox, ORPHAN_ID).exists()
            and sandbox.sh("ls", "/run/wrapdock-data/containers", check=False).stdout == "")


def test_gc_goes_on_past_a_cgroup_it_cannot_remove_and_names_it(sandbox: Sandbox) -> None:
    """A cgroup named by an unrecorded container id holds a live process of another PID namespace (this
    test's `sleep`: the sandbox's wrapdock cannot see it, nor kill it): its rmdir fails "busy". gc removes
    every other orphan, names that one with its command and error and exits 1; the next gc has only that
    one left; once the process is gone gc removes it too, and a further gc finds nothing."""
    start = sandbox.snapshot()
    busy = cgroup_dir(sandbox, BUSY_ID)
    busy.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "1000"])  # the machine's PID namespace, not the sandbox's
    try:
        (busy / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        failure = re.compile(re.escape(f"wrapdock: error: gc could not remove cgroup {busy}: `rmdir {busy}` failed "
                                       "(exit 1): ") + r"\S*rmdir: failed to remove " + re.escape(f"'{busy}'")
                             + ": Device or resource busy")  # (rmdir names itself by its path, or not)

        # the --print-only script does the same when run: each repair on its own, the busy one named, exit 1
        plant_orphans(sandbox)
        script = wd(sandbox, "gc", "--print-only").stdout
        assert f"failed_repairs+=('remove cgroup {busy}')" in script
        sandbox.sh("sh", "-c", 'cat > "$1"', "write", "/run/gc.sh", input=script)
        ran = sandbox.sh("bash", "/run/gc.sh", check=False)
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert ran.stderr.splitlines()[-1] == f"could not remove cgroup {busy} (its failing command is shown above)"
        assert orphans_gone(sandbox, start) and busy.is_dir()

        done = plant_orphans(sandbox)
        first = sandbox.wrapdock("gc", check=False)
        assert first.returncode == 1, first.stdout + first.stderr
        assert first.stdout.splitlines() == done  # every other orphan, also those gc met after the busy cgroup
        (error,) = [line for line in first.stderr.splitlines() if line.startswith("wrapdock:")]
        assert failure.fullmatch(error), error
        assert "Device or resource busy; gc goes on with its other repairs)\n" in first.stderr  # in the trail
        assert orphans_gone(sandbox, start) and busy.is_dir()

        second = sandbox.wrapdock("--trail", "json", "gc", check=False)
        assert (second.returncode, second.stdout) == (1, "")
        assert failure.fullmatch(second.stderr.splitlines()[-1]), second.stderr
        assert changes("\n".join(second.stderr.splitlines()[:-1])) == [["rmdir", str(busy)]]  # only that one
    finally:
        sleeper.kill()
        sleeper.wait()

    assert wd(sandbox, "gc").stdout == f"removed cgroup {busy}\n"
    assert wd(sandbox, "gc").stdout == "nothing to do: the state and the host agree\n"
    assert doctor(sandbox)[:2] == (0, set())
    assert sandbox.snapshot() == start
    assert sandbox.cgroup_dirs() == []
