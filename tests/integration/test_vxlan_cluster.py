"""Cluster-mode vxlan networks: a real etcd, three sandbox hosts, real VXLAN packets.

A "switch" sandbox holds the underlay bridge (198.51.100.0/24) and etcd, bound to 198.51.100.1 with
its data directory in tmp_path; hosts 1-3 hang off the bridge (198.51.100.11-13). Every etcd read
and write wrapdock makes is an `etcdctl` command in its trail; the tests read etcd back with etcdctl.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.integration.containerlab import wait_for
from tests.integration.ctnet import SLEEP, Host, assert_nothing_left
from tests.integration.netlab import changing_commands, error_line
from tests.integration.test_vxlan_static import switched_underlay, wait_carrier
from tests.sandbox import wrapdock_argv

pytestmark = pytest.mark.integration

NET, SUBNET, VNI = "cov", "10.220.0.0/16", "4343"
DEVICE = f"wdvx{VNI}"
ETCD_IP = "198.51.100.1"
URL = f"etcd://{ETCD_IP}:2379"
VTEP = {i: f"198.51.100.1{i}" for i in (1, 2, 3)}
CREATE = ("network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI)
WATCHER = Path(__file__).parents[2] / "templates" / "cluster" / "wrapdock-watch"


class Etcd:
    """etcd inside the switch sandbox; stopped by its PID, restartable with the same data dir."""

    def __init__(self, switch, data_dir) -> None:
        self.switch, self.data_dir, self.pid = switch, data_dir, None
        # a MAC of its own: a bridge otherwise takes its ports' lowest, which changes when a host goes
        switch.sh("ip", "link", "set", "dev", "ul", "address", "02:00:c6:33:64:01")
        switch.sh("ip", "addr", "add", f"{ETCD_IP}/24", "dev", "ul")
        self.start()

    def start(self) -> None:
        self.pid = self.switch.bash(
            f"etcd --name wdtest --data-dir {shlex.quote(str(self.data_dir))} "
            f"--listen-client-urls http://{ETCD_IP}:2379 --advertise-client-urls http://{ETCD_IP}:2379 "
            "--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 "
            "--initial-cluster wdtest=http://127.0.0.1:2380 "
            f">>{shlex.quote(str(self.data_dir))}.log 2>&1 & echo $!").stdout.strip()
        wait_for(lambda: self.ctl("endpoint", "health", check=False).returncode == 0, what="etcd")

    def stop(self) -> None:
        if self.pid:
            self.switch.sh("kill", self.pid)
            wait_for(self._gone, what="etcd's end")
            self.pid = None

    def _gone(self) -> bool:
        """Ended: no process, or a zombie (the sandbox's PID 1 is a `sleep`, which reaps nobody)."""
        stat = self.switch.sh("cat", f"/proc/{self.pid}/stat", check=False)
        return stat.returncode != 0 or stat.stdout.rsplit(")", 1)[1].split()[0] == "Z"

    def ctl(self, *args: str, check: bool = True):
        return self.switch.sh("etcdctl", f"--endpoints=http://{ETCD_IP}:2379", "--dial-timeout=2s", *args,
                              check=check)

    def dump(self) -> dict[str, str]:
        """Every key under /wrapdock/ with its value (what the tests compare before and after)."""
        lines = self.ctl("get", "--prefix", "/wrapdock/").stdout.splitlines()
        return dict(zip(lines[0::2], lines[1::2], strict=True))


@pytest.fixture
def lab(sandbox_factory, tmp_path):
    switch, *boxes = (sandbox_factory() for _ in range(4))
    switched_underlay(switch, boxes)
    for i, box in enumerate(boxes, start=1):  # (sandbox.sh does not enter the UTS namespace: no `hostname`)
        box.env["WRAPDOCK_HOSTNAME"] = f"host{i}"
    etcd = Etcd(switch, tmp_path / "etcd")
    try:
        yield etcd, [Host(box) for box in boxes]
    finally:
        etcd.stop()


def wd(host: Host, *args: str):
    return host.wd("--cluster", URL, *args)


def her_entries(box) -> list[str]:
    entries = json.loads(box.sh("bridge", "-j", "fdb", "show", "dev", DEVICE).stdout or "[]")
    return sorted(e["dst"] for e in entries if e["mac"] == "00:00:00:00:00:00")


def test_three_hosts_create_join_sync_leave_and_nothing_is_left(lab):
    etcd, hosts = lab
    one, two, three = hosts
    starts = [h.sandbox.snapshot() for h in hosts]
    created = wd(one, *CREATE, "--vtep", VTEP[1], NET)
    # every etcd access is an etcdctl command in the trail; the claim is one txn
    assert f"etcdctl --endpoints=http://{ETCD_IP}:2379" in created.stderr
    assert "create(\"/wrapdock/v1/networks/cov/config\") = \"0\"" in created.stderr
    # host 1 runs the watcher template (etcdctl watch -> network sync), in a process group of its own
    watcher = one.sandbox.bash(f"WRAPDOCK={shlex.quote(shlex.join(wrapdock_argv()))} setsid bash {WATCHER} {NET} "
                               ">/run/watch.log 2>&1 & echo $!").stdout.strip()
    for host, i in ((two, 2), (three, 3)):
        host.wd("--cluster", URL, "network", "join", NET, "--vtep", VTEP[i])
    keys = etcd.dump()
    assert sorted(k for k in keys if "/hosts/" in k) == [f"/wrapdock/v1/networks/cov/hosts/{VTEP[i]}"
                                                         for i in (1, 2, 3)]
    assert keys["/wrapdock/v1/vnis/4343"] == NET
    assert sorted(k.rsplit("/", 1)[1] for k in keys if "/ranges/" in k) == ["10.220.11.0-24", "10.220.12.0-24",
                                                                             "10.220.13.0-24"]
    # the joiners know the hosts before them; host 1's watcher synced for each join; host 2 has no
    # watcher: it learns of host 3 with its own sync (no --cluster: the URL is in its record)
    assert her_entries(three.sandbox) == [VTEP[1], VTEP[2]]
    wait_for(lambda: her_entries(one.sandbox) == [VTEP[2], VTEP[3]], what="host 1's watcher to sync")
    one.sandbox.sh("kill", "--", f"-{watcher}")
    assert two.wd("network", "sync", NET).stdout.strip() == f"{NET}: 1 change(s)"
    again = one.wd("network", "sync", NET)
    assert again.stdout.strip() == f"{NET}: in sync, nothing to do" and "fdb append" not in again.stderr
    assert her_entries(one.sandbox) == [VTEP[2], VTEP[3]]

    view = one.network_view(NET)
    assert (view["scope"], view["vxlan"]["cluster"], view["vxlan"]["host_range"]) == ("cluster", URL, "10.220.11.0/24")
    assert [h["vtep"] for h in view["cluster"]["hosts"]] == [VTEP[1], VTEP[2], VTEP[3]]
    assert [h["hostname"] for h in view["cluster"]["hosts"]] == ["host1", "host2", "host3"]
    listing = one.wd("network", "ls").stdout
    assert "cluster" in listing

    for host, name in zip(hosts, "abc", strict=True):
        host.run("--name", name, "--net", NET, *SLEEP)
    a, b, c = (h.address(n, NET) for h, n in zip(hosts, "abc", strict=True))
    assert (a.startswith("10.220.11."), b.startswith("10.220.12."), c.startswith("10.220.13.")) == (True,) * 3
    assert one.ping("a", b) and one.ping("a", c) and two.ping("b", c) and three.ping("c", a)
    # names: run registered each in etcd; a sync writes the other hosts' names into /etc/hosts
    assert {k.rsplit("/", 1)[1] for k in etcd.dump() if "/names/" in k} == {"a", "b", "c"}
    for host in hosts:
        assert "/etc/hosts" in host.wd("network", "sync", NET).stderr
        assert host.wd("network", "sync", NET).stdout.strip() == f"{NET}: in sync, nothing to do"
    assert one.hosts("a")["b"] == b and three.hosts("c")["a"] == a
    assert one.ping("a", "b") and two.ping("b", "c") and three.ping("c", "a")

    # host 3 dies; host 1 removes its registration; host 2's sync then removes every trace of it
    three.sandbox.close()
    one.wd("network", "leave", NET, "--host", "host3", "--force")
    assert not [k for k, v in etcd.dump().items() if VTEP[3] in k + v or "10.220.13.0" in k]
    assert her_entries(one.sandbox) == [VTEP[2]]
    two.wd("network", "sync", NET)
    assert her_entries(two.sandbox) == [VTEP[1]] and "c" not in two.hosts("b")
    assert one.ping("a", b)

    # refused: leaving with containers; a live host's own VTEP with --host
    assert "attached container" in error_line(one.sandbox.wrapdock("network", "leave", NET, check=False), 2)
    assert "this host" in error_line(one.sandbox.wrapdock("network", "leave", NET, "--host", VTEP[1], "--force",
                                                          check=False), 2)
    one.wd("--quiet", "rm", "-f", "a")
    one.wd("network", "leave", NET)
    assert_nothing_left(one.sandbox, starts[0])
    assert [k for k in etcd.dump() if VTEP[1] in k] == []
    two.wd("network", "rm", "-f", NET)  # rm = leave (-f: b disconnected); the last host takes the definition
    two.wd("--quiet", "rm", "-f", "b")
    assert_nothing_left(two.sandbox, starts[1])
    assert etcd.dump() == {}


def test_unreachable_etcd_and_bad_input_change_nothing(lab):
    etcd, (one, two, _three) = lab
    start = one.sandbox.snapshot()
    down = one.sandbox.wrapdock("--cluster", "etcd://198.51.100.99:2379", *CREATE, "--vtep", VTEP[1], NET,
                                check=False)
    line = error_line(down, 4)
    assert "etcd at etcd://198.51.100.99:2379 could not be read" in line and "nothing was changed" in line
    assert one.sandbox.snapshot() == start and one.sandbox.state_records() == []
    for bad in ("198.51.100.1:2379", "http://198.51.100.1:2379", "etcd://", "etcd://host:2379",
                "etcd://198.51.100.1:99999", "etcd://198.51.100.1:2379;reboot"):
        proc = one.sandbox.wrapdock("--cluster", bad, *CREATE, NET, check=False)
        assert "invalid --cluster" in error_line(proc, 2), bad
    for name in ("c;reboot", "$(reboot)", "a b"):
        assert "invalid network name" in error_line(one.sandbox.wrapdock("--cluster", URL, *CREATE, "--vtep", VTEP[1],
                                                                          name, check=False), 2)
        assert "invalid network name" in error_line(one.sandbox.wrapdock("--cluster", URL, "network", "join", name,
                                                                          check=False), 2)
    assert "has no network" in error_line(two.sandbox.wrapdock("--cluster", URL, "network", "join", NET,
                                                                check=False), 2)
    assert one.sandbox.snapshot() == start and etcd.dump() == {}
    # --print-only reads (host, etcd) and prints the claim with its verdict check; it changes nothing
    script = one.wd("--quiet", "--cluster", URL, "--print-only", *CREATE, "--vtep", VTEP[1], NET).stdout
    assert "etcdctl --endpoints=http://198.51.100.1:2379 --dial-timeout=4s --command-timeout=8s txn " \
           "<<'WRAPDOCK_EOF' | sed -n 1p | grep -x SUCCESS >/dev/null" in script
    assert one.sandbox.snapshot() == start and etcd.dump() == {} and one.sandbox.state_records() == []
    # ... and bash runs that script (set -euo pipefail): the claim lands in etcd, the devices on the host
    other = two.wd("--quiet", "--cluster", URL, "--print-only", "network", "create", "--driver", "vxlan", "--subnet",
                   "10.230.0.0/16", "--vni", "4545", "--vtep", VTEP[2], "scripted").stdout
    two.sandbox.sh("bash", "-s", input=other)
    assert sorted(etcd.dump()) == ["/wrapdock/v1/last-created", "/wrapdock/v1/networks/scripted/config",
                                   f"/wrapdock/v1/networks/scripted/hosts/{VTEP[2]}",
                                   "/wrapdock/v1/networks/scripted/ranges/10.230.12.0-24", "/wrapdock/v1/vnis/4545"]
    assert two.sandbox.sh("ip", "link", "show", "dev", "wdvx4545", check=False).returncode == 0
    scripted = two.sandbox.snapshot()
    again = two.sandbox.sh("bash", "-s", input=other, check=False)  # the claim is taken now: the script stops
    assert again.returncode != 0 and two.sandbox.snapshot() == scripted
    etcd.ctl("del", "--prefix", "/wrapdock/v1/")
    wd(one, *CREATE, "--vtep", VTEP[1], NET)
    # another cluster for a recorded network, other parameters, a taken VNI, an overlapping subnet
    assert "belongs to cluster" in error_line(one.sandbox.wrapdock("--cluster", "etcd://198.51.100.2:2379",
                                                                    "network", "sync", NET, check=False), 2)
    assert "exists with other parameters" in error_line(two.sandbox.wrapdock(
        "--cluster", URL, "network", "create", "--driver", "vxlan", "--subnet", "10.221.0.0/16", "--vtep", VTEP[2],
        NET, check=False), 2)
    assert "VNI 4343 is already used" in error_line(two.sandbox.wrapdock(
        "--cluster", URL, *CREATE[:-2], "--vni", VNI, "--vtep", VTEP[2], "other", check=False), 2)
    assert "overlaps subnet" in error_line(two.sandbox.wrapdock(
        "--cluster", URL, "network", "create", "--driver", "vxlan", "--subnet", "10.220.16.0/20", "--vtep", VTEP[2],
        "other", check=False), 2)
    # doctor: healthy (it reads etcd: a printed etcdctl get)
    assert one.wd("doctor").stdout.strip() == "no problems found"
    # gc releases a name this host registered for a container it no longer has (a killed run)
    ghost = f"/wrapdock/v1/networks/{NET}/names/ghost"
    etcd.ctl("put", ghost, json.dumps({"address": "10.220.11.9", "host": VTEP[1]}))
    assert "release the names ghost" in one.wd("gc").stdout
    assert ghost not in etcd.dump()
    # a join killed after its claim (host 2 has no record of it): gc --cluster releases the claim
    keys = etcd.dump()
    etcd.ctl("put", f"/wrapdock/v1/networks/{NET}/ranges/10.220.12.0-24", VTEP[2])
    etcd.ctl("put", f"/wrapdock/v1/networks/{NET}/hosts/{VTEP[2]}", json.dumps(
        {"vtep": VTEP[2], "mac": "02:ff:c6:33:64:0c", "hostname": "host2", "range": "10.220.12.0/24"}))
    assert "release this host's registration (198.51.100.12)" in two.wd("--cluster", URL, "gc").stdout
    assert etcd.dump() == keys
    # etcd gone: sync and leave fail with exit 4 and change nothing; restarted, everything is still there
    wait_carrier(one.sandbox, NET)
    keys, with_net = etcd.dump(), one.sandbox.snapshot()
    etcd.stop()
    assert "could not be read" in error_line(one.sandbox.wrapdock("network", "sync", NET, check=False), 4)
    assert "could not be read" in error_line(one.sandbox.wrapdock("network", "leave", NET, check=False), 4)
    assert one.sandbox.snapshot() == with_net and one.sandbox.state_records() == [f"{NET}.json"]
    doctor = one.sandbox.wrapdock("doctor", "--format", "json", check=False)
    assert doctor.returncode == 1 and [f["check"] for f in json.loads(doctor.stdout)] == ["cluster-unreachable"]
    etcd.start()
    assert etcd.dump() == keys
    assert one.wd("network", "sync", NET).stdout.strip() == f"{NET}: in sync, nothing to do"
    one.wd("network", "leave", NET)
    assert etcd.dump() == {} and one.sandbox.snapshot() == start


# etcdctl for the race below: its first `txn` waits until the test opens the gate (both hosts have read
# the cluster's networks by then and decided; their claims then go to etcd at the same moment)
GATED_ETCDCTL = """#!/bin/sh
for last; do :; done
if [ "${last:-}" = txn ] && [ ! -e /run/gate/held ]; then
  : >/run/gate/held
  while [ ! -e /run/gate/open ]; do sleep 0.02; done
fi
exec /usr/bin/etcdctl "$@"
"""


def test_two_creates_of_overlapping_subnets_at_once_one_wins_the_other_changes_nothing(lab):
    """The subnet check is inside the claim: both hosts read an empty cluster and decide that their
    subnets are free; their claims meet in etcd; exactly one succeeds, the other's txn answers FAILURE
    (the last-created key changed since its read), it reads again, finds the overlap and stops with
    one line, nothing on its host, nothing of it in etcd. Without the check in the claim both succeed."""
    etcd, (one, two, _three) = lab
    hosts = {"blue": (one, VTEP[1], "10.220.0.0/16", "4343"), "green": (two, VTEP[2], "10.220.128.0/17", "4344")}
    starts = {name: host.sandbox.snapshot() for name, (host, *_rest) in hosts.items()}
    for host, *_rest in hosts.values():
        host.sandbox.bash(f"mkdir -p /run/gate && printf %s {shlex.quote(GATED_ETCDCTL)} >/run/gate/etcdctl "
                          "&& chmod +x /run/gate/etcdctl")
    gated = {"PATH": f"/run/gate:{os.environ['PATH']}"}
    procs = {name: host.sandbox.popen_wrapdock("--cluster", URL, "network", "create", "--driver", "vxlan",
                                               "--subnet", subnet, "--vni", vni, "--vtep", vtep, name, env=gated)
             for name, (host, vtep, subnet, vni) in hosts.items()}
    try:
        for host, *_rest in hosts.values():
            wait_for(lambda h=host: h.sandbox.sh("test", "-e", "/run/gate/held", check=False).returncode == 0,
                     what="both creates at their claim")
        for host, *_rest in hosts.values():
            host.sandbox.sh("touch", "/run/gate/open")
        done = {name: subprocess.CompletedProcess(proc.args, 0, *proc.communicate(timeout=120))
                for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        done[name].returncode = proc.returncode
    winners = [name for name, proc in done.items() if proc.returncode == 0]
    assert len(winners) == 1, {name: (p.returncode, p.stderr[-2000:]) for name, p in done.items()}
    winner, loser = winners[0], ({"blue", "green"} - set(winners)).pop()
    line = error_line(done[loser], 2)
    assert f"overlaps subnet {hosts[winner][2]} of cluster network '{winner}'" in line, line
    # the loser's claim was refused by etcd (not by a check before it), then it read again
    assert "it answered FAILURE" not in line and done[loser].stderr.count("read the cluster's networks") == 2
    loser_host = hosts[loser][0].sandbox
    assert loser_host.snapshot() == starts[loser] and loser_host.state_records() == []
    keys = etcd.dump()
    assert keys["/wrapdock/v1/last-created"] == winner and not [k for k in keys if loser in k], keys
    assert f"/wrapdock/v1/networks/{winner}/config" in keys
    # a --print-only script decided on an older read stops at its claim too (set -e), changing nothing
    script = loser_host.wrapdock("--quiet", "--cluster", URL, "--print-only", "network", "create", "--driver",
                                 "vxlan", "--subnet", "10.221.0.0/16", "--vni", "4345", "--vtep", hosts[loser][1],
                                 "red").stdout
    hosts[winner][0].wd("--cluster", URL, "network", "leave", winner)
    assert etcd.dump() == {}
    wd(hosts[winner][0], "network", "create", "--driver", "vxlan", "--subnet", "10.221.0.0/17", "--vni", "4346",
       "--vtep", hosts[winner][1], "pink")
    keys = etcd.dump()
    assert loser_host.sh("bash", "-s", input=script, check=False).returncode != 0
    assert loser_host.snapshot() == starts[loser] and etcd.dump() == keys
    hosts[winner][0].wd("network", "leave", "pink")
    assert etcd.dump() == {}
    for name, (host, *_rest) in hosts.items():
        assert_nothing_left(host.sandbox, starts[name])


def test_a_fault_at_every_changing_command_leaves_host_state_and_etcd_as_before(lab):
    etcd, (one, two, _three) = lab
    create = ("--cluster", URL, *CREATE, "--vtep", VTEP[1], NET)
    join = ("--cluster", URL, "network", "join", NET, "--vtep", VTEP[2])
    start = one.sandbox.snapshot()
    forward = one.sandbox.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    steps = changing_commands(one.wd("--trail", "json", *create).stderr)
    assert steps[0][:3] == ["timeout", "15", "etcdctl"] and steps[0][-1] == "txn", steps  # the claim first
    one.wd("network", "leave", NET)
    one.sandbox.sh("sysctl", "-qw", f"net.ipv4.ip_forward={forward}")  # leave keeps forwarding on, as rm does
    assert one.sandbox.snapshot() == start and etcd.dump() == {}
    for k in range(1, len(steps) + 1):
        line = error_line(one.sandbox.wrapdock(*create, check=False, env={"WRAPDOCK_FAIL_AT": str(k)}), 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert one.sandbox.snapshot() == start, k
        assert one.sandbox.state_records() == [] and etcd.dump() == {}, k
    one.wd(*create)
    keys, two_start = etcd.dump(), two.sandbox.snapshot()
    steps = changing_commands(two.wd("--trail", "json", *join).stderr)
    two.wd("network", "leave", NET)
    two.sandbox.sh("sysctl", "-qw", f"net.ipv4.ip_forward={forward}")
    assert etcd.dump() == keys and two.sandbox.snapshot() == two_start
    for k in range(1, len(steps) + 1):
        line = error_line(two.sandbox.wrapdock(*join, check=False, env={"WRAPDOCK_FAIL_AT": str(k)}), 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert two.sandbox.snapshot() == two_start and two.sandbox.state_records() == [], k
        assert etcd.dump() == keys, k
    # a claim that loses (the range was taken between read and claim is the race; a VTEP registered by
    # another host name is refused before anything runs)
    two.sandbox.env["WRAPDOCK_HOSTNAME"] = "impostor"
    etcd.ctl("put", f"/wrapdock/v1/networks/{NET}/hosts/{VTEP[2]}",
             json.dumps({"vtep": VTEP[2], "mac": "02:ff:c6:33:64:0c", "hostname": "host2", "range": "10.220.12.0/24"}))
    assert "registered in network cov by host 'host2'" in error_line(two.sandbox.wrapdock(*join, check=False), 2)
    etcd.ctl("del", f"/wrapdock/v1/networks/{NET}/hosts/{VTEP[2]}")
    two.sandbox.env["WRAPDOCK_HOSTNAME"] = "host2"
    # run on the overlay: a fault at the name's claim, or at any command after it, releases the name
    one.wd("--quiet", "run", "-d", "--name", "r", "--net", NET, *SLEEP)  # (the first run makes the image)
    one.wd("--quiet", "rm", "-f", "r")
    steps = changing_commands(one.wd("--trail", "json", "run", "-d", "--name", "r", "--net", NET, *SLEEP).stderr)
    # the claim runs while the started init builds its root (after the start, before the wait for it)
    claim = next(i for i, step in enumerate(steps) if step[-1] == "txn")
    assert steps[claim - 1][0] == "setsid" and "wrapdock-wait" in steps[-1], steps
    one.wd("--quiet", "rm", "-f", "r")
    wait_carrier(one.sandbox, NET)
    keys, with_net = etcd.dump(), one.sandbox.snapshot()
    for k in range(1, len(steps) + 1):
        proc = one.sandbox.wrapdock("run", "-d", "--name", "r", "--net", NET, *SLEEP, check=False,
                                    env={"WRAPDOCK_FAIL_AT": str(k)})
        line = error_line(proc, 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert etcd.dump() == keys and one.sandbox.snapshot() == with_net, k
        assert one.sandbox.state_records("containers") == [], k
    # leave (host 2 is in: host 1 has a flood list): a fault at any of its commands, the etcd release last,
    # puts back the links as create made them, the flood list, the rules, the local state and etcd
    wd(two, "network", "join", NET, "--vtep", VTEP[2])
    proc = one.sandbox.wrapdock("--trail", "json", "network", "leave", NET, check=False,
                                env={"WRAPDOCK_FAIL_AT": "999"})
    assert proc.returncode == 0, proc.stderr
    steps = changing_commands(proc.stderr)
    assert [s[:3] for s in steps[-3:-1]] == [["ip", "link", "del"]] * 2 and steps[-1][-1] == "txn", steps
    wd(one, "network", "join", NET, "--vtep", VTEP[1])
    wait_carrier(one.sandbox, NET, DEVICE)
    before = picture(one.sandbox), etcd.dump(), one.sandbox.state_records(), one.sandbox.state_records("ipam")
    assert before[0]["flood"] == [VTEP[2]]
    for k in range(1, len(steps) + 1):
        line = error_line(one.sandbox.wrapdock("network", "leave", NET, check=False,
                                               env={"WRAPDOCK_FAIL_AT": str(k)}), 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert etcd.dump() == before[1] and one.sandbox.state_records() == before[2], k
        assert one.sandbox.state_records("ipam") == before[3], k
        try:  # a re-created link gets its carrier a moment after `up`
            wait_for(lambda: picture(one.sandbox) == before[0], seconds=10, what="the links as before")
        except AssertionError:
            assert picture(one.sandbox) == before[0], f"fault at command {k}: {shlex.join(steps[k - 1])}"
    one.wd("network", "leave", NET)
    two.wd("network", "leave", NET)
    assert one.sandbox.snapshot() == start and etcd.dump() == {}


def test_network_connect_claims_the_name_across_hosts_and_disconnect_releases_it(lab):
    """connect to a cluster network claims the container's name in etcd (first, one txn; undone by a
    rollback), disconnect releases it (first too: undone by putting it back); after `network sync` on
    another host its containers reach the container by name, and after disconnect + sync the name no
    longer resolves there."""
    etcd, (one, two, _three) = lab
    starts = [one.sandbox.snapshot(), two.sandbox.snapshot()]
    wd(one, *CREATE, "--vtep", VTEP[1], NET)
    wd(two, "network", "join", NET, "--vtep", VTEP[2])
    one.run("--name", "a", "--net", NET, *SLEEP)
    two.run("--name", "b", *SLEEP)  # no network yet
    wait_carrier(two.sandbox, NET, DEVICE)
    name_key = f"/wrapdock/v1/networks/{NET}/names/b"
    connect, disconnect = ("network", "connect", NET, "b"), ("network", "disconnect", NET, "b")
    keys = etcd.dump()
    assert name_key not in keys
    steps = changing_commands(two.wd("--trail", "json", *connect).stderr)
    assert steps[0][-1] == "txn", steps  # the claim first
    assert json.loads(etcd.dump()[name_key]) == {"address": two.address("b", NET), "host": VTEP[2]}
    connected_keys = etcd.dump()
    undo = changing_commands(two.wd("--trail", "json", *disconnect).stderr)
    assert undo[0][-1] == "txn", undo  # the release first (the detach after it has no undo)
    assert etcd.dump() == keys
    unconnected = two.sandbox.snapshot()  # (after a first connect: b's netns has an id in the host's now)
    # a fault at any command of connect releases the claim; of disconnect, puts the name back
    for k in range(1, len(steps) + 1):
        line = error_line(two.sandbox.wrapdock(*connect, check=False, env={"WRAPDOCK_FAIL_AT": str(k)}), 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert etcd.dump() == keys and two.sandbox.snapshot() == unconnected, k
    two.wd("--quiet", *connect)
    address = two.address("b", NET)
    assert etcd.dump() == connected_keys | {name_key: json.dumps({"address": address, "host": VTEP[2]},
                                                                  separators=(",", ":"))}
    connected = two.sandbox.snapshot()
    for k in range(1, len(undo) + 1):
        line = error_line(two.sandbox.wrapdock(*disconnect, check=False, env={"WRAPDOCK_FAIL_AT": str(k)}), 1)
        assert f"injected fault at command {k}" in line and "rollback incomplete" not in line, line
        assert name_key in etcd.dump(), k
        try:  # a re-created veth gets its carrier a moment after `up`
            wait_for(lambda: two.sandbox.snapshot() == connected, seconds=10, what="the links as before")
        except AssertionError:
            assert two.sandbox.snapshot() == connected, f"fault at command {k}: {shlex.join(undo[k - 1])}"
    # by name from the other host, with real packets, once it synced
    assert "b" not in one.hosts("a")
    assert "/etc/hosts" in one.wd("network", "sync", NET).stderr
    assert one.hosts("a")["b"] == address
    assert one.ping("a", "b")
    two.wd("network", "sync", NET)  # (host 2 joined before a started: its sync writes a into b's /etc/hosts)
    assert two.ping("b", "a")
    two.wd("--quiet", *disconnect)
    assert name_key not in etcd.dump()
    one.wd("network", "sync", NET)
    assert "b" not in one.hosts("a")
    unresolved = one.inside("a", "ping", "-c1", "-W1", "b")
    assert unresolved.returncode != 0 and "bad address" in unresolved.stderr, unresolved
    # nothing left: the containers go, then the hosts leave
    one.wd("--quiet", "rm", "-f", "a")
    two.wd("--quiet", "rm", "-f", "b")
    one.wd("network", "leave", NET)
    two.wd("network", "leave", NET)
    assert etcd.dump() == {}
    for host, start in zip((one, two), starts, strict=True):
        assert_nothing_left(host.sandbox, start)


def picture(box) -> dict:
    """What a leave's rollback must put back: snapshot (links, addresses, routes, rules), the overlay's
    links as create made them (MAC, alias, MTU, master, VXLAN parameters), the flood list, route_localnet.
    Not the learned FDB entries: they are learned again."""
    def detail(link: dict) -> dict:
        info = link.get("linkinfo", {})
        data = {k: v for k, v in info.get("info_data", {}).items() if info.get("info_kind") == "vxlan"}
        return {"address": link.get("address"), "ifalias": link.get("ifalias"), "mtu": link.get("mtu"),
                "master": link.get("master"), "kind": info.get("info_kind"), "vxlan": data,
                "flags": link.get("flags")}

    links = {name: detail(json.loads(box.sh("ip", "-j", "-d", "link", "show", "dev", name).stdout)[0])
             for name in (NET, DEVICE) if box.sh("ip", "link", "show", "dev", name, check=False).returncode == 0}
    localnet = box.sh("cat", f"/proc/sys/net/ipv4/conf/{NET}/route_localnet", check=False).stdout.strip()
    return {**box.snapshot(), "links_detail": links, "flood": her_entries(box) if DEVICE in links else [],
            "route_localnet": localnet}
