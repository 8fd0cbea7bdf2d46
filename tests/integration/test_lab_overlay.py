"""Multi-host labs end to end, inside a sandbox host: the bundled overlay lab's three hosts (sandbox hosts of
their own, made by `lab up` itself), real VXLAN packets between them, and nothing left after `lab down`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LABS = "/run/wrapdock/labs"


def lab_state(sandbox, name: str) -> dict:
    return json.loads(sandbox.sh("cat", f"{LABS}/{name}/state.json").stdout)


def lab_processes_alive(sandbox, state: dict) -> list[int]:
    """The lab's PIDs (numbers in the sandbox's PID namespace) that are still running (zombies are not:
    the sandbox's PID 1 does not reap, and a zombie holds no namespace)."""
    pids = [state["lab"], *state["hosts"].values(), *state["holders"].values(), *([state["etcd"]] if state.get("etcd")
                                                                                 else [])]
    script = "for p; do grep -qs '^State:[[:space:]]*[A-Y]' /proc/$p/status && echo $p; done; true"
    return [int(p) for p in sandbox.sh("sh", "-c", script, "-", *map(str, pids)).stdout.split()]


def lab_cgroups(sandbox) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [*root.glob(f"{sandbox.cgroup_parent}-lab-*"), *root.glob(f"*/{sandbox.cgroup_parent}-lab-*")]


def assert_nothing_left(sandbox, start: dict, state: dict) -> None:
    assert sandbox.snapshot() == start
    assert sandbox.sh("ls", "-A", LABS, check=False).stdout.strip() == ""
    assert lab_processes_alive(sandbox, state) == []
    assert lab_cgroups(sandbox) == []


def test_overlay_lab_up_check_down_leaves_nothing(sandbox) -> None:
    start = sandbox.snapshot()
    up = sandbox.wrapdock("lab", "up", "overlay", check=False, timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    assert "lab overlay is up: 3 host(s), 3 network(s), 6 container(s)" in up.stdout
    # the trail shows the hosts, the wiring and each host's own commands (its VXLAN device, its peers)
    assert "setsid unshare --net --mount --pid --uts --ipc --fork --kill-child" in up.stderr
    assert "type veth peer name eth0 netns" in up.stderr
    assert "type vxlan id" in up.stderr and "local 198.51.100.12 dev eth0" in up.stderr
    state = lab_state(sandbox, "overlay")
    assert sorted(state["hosts"]) == ["h1", "h2", "h3"] and len(lab_processes_alive(sandbox, state)) == 8
    # the cluster network green: created on h2, joined on h3, in the lab's etcd (bound to the underlay)
    assert "--cluster etcd://198.51.100.1:2379 network create --driver vxlan --subnet 10.220.0.0/16" in up.stderr
    assert "--cluster etcd://198.51.100.1:2379 network join green --vtep 198.51.100.13" in up.stderr
    assert f"--data-dir {LABS}/overlay/etcd" in up.stderr.replace("/var/run/", "/run/")
    # the machine (here: the sandbox) got no link, address, route or rule: they are all in the lab's namespaces
    assert sandbox.snapshot() == start

    checked = sandbox.wrapdock("--quiet", "lab", "check", "overlay", "--format", "json", check=False, timeout=300)
    results = json.loads(checked.stdout)
    assert checked.returncode == 0, checked.stdout
    assert len(results) == 14 and all(r["agrees"] for r in results), [r for r in results if not r["agrees"]]
    assert [r["got"] for r in results] == ["ok"] * 10 + ["fail"] * 4
    assert results[4]["target"] == "g2"  # resolved by g3 itself, from the names `network sync` wrote
    assert results[0]["target"] == "10.210.12.10" and results[2]["target"] == "10.210.12.10"  # web, on h2
    hosts = sandbox.wrapdock("lab", "hosts", "overlay").stdout
    assert f"h2      198.51.100.12  203.0.113.12   {state['hosts']['h2']:>4}  nsenter --target" in hosts

    # inside a host: its own wrapdock state (only its containers), its own links
    h2 = state["hosts"]["h2"]
    inside = ["nsenter", "--target", str(h2), "--all", "--", "env", "WRAPDOCK_STATE_DIR=/run/wrapdock"]
    names = sandbox.sh(*inside, "ls", "/run/wrapdock/containers").stdout.split()
    assert len(names) == 2
    assert "wdvx" in sandbox.sh(*inside, "ip", "-br", "link").stdout

    down = sandbox.wrapdock("--quiet", "lab", "down", "overlay", timeout=300)
    assert "lab overlay is down: stopped 3 host(s)" in down.stdout
    assert_nothing_left(sandbox, start, state)
    again = sandbox.wrapdock("--quiet", "lab", "down", "overlay")
    assert "stopped 0 host(s)" in again.stdout
    gone = sandbox.wrapdock("--quiet", "lab", "check", "overlay", check=False)
    assert gone.returncode == 1 and "lab overlay is not up" in gone.stderr


def test_a_host_that_fails_its_share_stops_the_whole_lab(sandbox, tmp_path) -> None:
    """h2's share cannot come up (its container's image does not exist): h1 was up already; all of it goes."""
    lab_file = tmp_path / "broken.yaml"
    lab_file.write_text("""
name: broken
hosts:
  h1: {address: 198.51.100.21}
  h2: {address: 198.51.100.22}
networks:
  ov: {driver: vxlan, subnet: 10.230.0.0/16, hosts: [h1, h2]}
containers:
  a: {host: h1, command: [sleep, "600"], networks: [ov]}
  b: {host: h2, image: no-such-image, command: [sleep, "600"], networks: [ov]}
""")
    start = sandbox.snapshot()
    up = sandbox.wrapdock("lab", "up", str(lab_file), check=False, timeout=300)
    assert up.returncode == 1, up.stderr[-2000:]
    last = up.stderr.strip().splitlines()[-1]
    assert last.startswith("wrapdock: error: host h2: `wrapdock lab up` failed"), last
    assert "==> lab broken failed: stopping its hosts" in up.stderr
    assert sandbox.snapshot() == start
    assert sandbox.sh("ls", "-A", LABS, check=False).stdout.strip() == ""
    assert lab_cgroups(sandbox) == []
    survivors = sandbox.sh("sh", "-c", "ps -e -o stat=,comm= | awk '$1 !~ /^Z/ && $2 == \"sleep\"' | wc -l").stdout
    assert survivors.strip() == "1", survivors  # the sandbox's own PID 1 only


def test_bad_lab_files_change_nothing(sandbox, tmp_path) -> None:
    start = sandbox.snapshot()
    lab_file = tmp_path / "bad.yaml"
    lab_file.write_text("name: bad\nhosts:\n  h1: {address: 192.0.2.10}\n")
    refused = sandbox.wrapdock("lab", "up", str(lab_file), check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"wrapdock: error: {lab_file}: hosts.h1.address: 192.0.2.10 is not in the lab underlay 198.51.100.0/24 "
        "(.2 to .254; .1 is the lab's own): labs never use addresses of this machine's networks"]
    assert sandbox.snapshot() == start
    assert sandbox.sh("ls", "-A", LABS, check=False).stdout.strip() == ""


def test_the_scripts_build_the_lab_without_wrapdock(sandbox, tmp_path) -> None:
    """`lab script --output-dir`: the underlay's script (with etcd), then each host's inside that host (its
    part of the cluster network by wrapdock itself), a sync on each once all are up, then the checks of
    each; the underlay's `down` leaves nothing (the hosts' scripts need not run theirs). The containers a
    script starts are not in wrapdock's state, so `network sync` writes no names for them: the check that
    needs a synced name errs (and says so), every other one passes."""
    start = sandbox.snapshot()
    out = tmp_path / "scripts"
    written = sandbox.wrapdock("--quiet", "lab", "script", "overlay", "--output-dir", str(out)).stdout.split()
    assert [Path(p).name for p in written] == ["underlay.sh", "h1.sh", "h2.sh", "h3.sh"]
    sandbox.sh("bash", str(out / "underlay.sh"), "up", timeout=120)
    state_pids = {h: sandbox.sh("cat", f"{LABS}/overlay/{h}.pid").stdout.strip() for h in ("h1", "h2", "h3")}
    for host, pid in state_pids.items():
        sandbox.sh("nsenter", "--target", pid, "--all", "--", "bash", str(out / f"{host}.sh"), "up", timeout=120)
    from tests.sandbox import wrapdock_argv

    for host in ("h2", "h3"):  # h2 created green before h3 joined: each learns of the others by a sync
        sandbox.sh("nsenter", "--target", state_pids[host], "--all", "--", *wrapdock_argv(), "--quiet", "network",
                   "sync", "green")
    passes, errors = [], []
    for host, pid in state_pids.items():
        done = sandbox.sh("nsenter", "--target", pid, "--all", "--", "bash", str(out / f"{host}.sh"), "check",
                          check=False, timeout=120)
        passes += [line for line in done.stdout.splitlines() if line.startswith("PASS")]
        errors += [line for line in done.stdout.splitlines() if line.startswith(("FAIL", "ERROR"))]
    outside = sandbox.sh("bash", str(out / "underlay.sh"), "check", check=False, timeout=120)
    assert outside.returncode == 0, outside.stdout
    passes += [line for line in outside.stdout.splitlines() if line.startswith("PASS")]
    assert len(passes) == 13, (passes, errors)
    assert len(errors) == 1 and "by name as g3 resolves it" in errors[0] and "bad address 'g2'" in errors[0], errors
    pids = sandbox.sh("sh", "-c", f"cat {LABS}/overlay/*.pid").stdout.split()
    sandbox.sh("bash", str(out / "underlay.sh"), "down", timeout=120)
    assert sandbox.snapshot() == start
    assert sandbox.sh("ls", "-A", LABS, check=False).stdout.strip() == ""
    script = "for p; do grep -qs '^State:[[:space:]]*[A-Y]' /proc/$p/status && echo $p; done; true"
    assert sandbox.sh("sh", "-c", script, "-", *pids).stdout.split() == []
