"""Multi-host labs without root: the file format's rules, each host's share, the plans (golden files).

Regenerate the golden files with WRAPDOCK_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.unit.test_plans_container import check_golden
from wrapdock import cgroups, lab, labhosts
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.render import script_body

LAB_DIR = Path("/var/run/wrapdock/labs/overlay")


@pytest.fixture
def plain_cgroups(monkeypatch):
    """Plans the same on every machine: the default parent, the v2 layout (no hierarchy found)."""
    monkeypatch.setenv("WRAPDOCK_CGROUP_PARENT", "wrapdock")

    def no_hierarchy(parent=None):
        raise EnvironmentProblem("no cgroup hierarchy")

    monkeypatch.setattr(cgroups, "detect", no_hierarchy)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return str(path)


GOOD = """
name: t
hosts:
  h1: {address: 198.51.100.11}
  h2: {address: ADDRESS}
networks:
  ov: {driver: vxlan, subnet: 10.210.0.0/16, hosts: [h1, h2]}
  lan: {subnet: 10.3.0.0/24, host: h1}
containers:
  a: {host: h1, networks: [ov, lan]}
  b: {host: h2, networks: [ov]}
checks:
  - {from: a, ping: b}
"""

BAD = [
    ("192.0.2.7", "", "hosts.h2.address: 192.0.2.7 is not in the lab underlay 198.51.100.0/24"),
    ("198.51.100.1", "", "hosts.h2.address: 198.51.100.1 is not in the lab underlay"),
    ("198.51.100.255", "", "is not in the lab underlay"),
    ("10.1.2.3", "", "is not in the lab underlay"),
    ("2001:db8::1", "", "is not in the lab underlay"),
    ("h2.example", "", "'h2.example' is not an IPv4 address"),
    ("198.51.100.11", "", "hosts.h2.address: 198.51.100.11 is host h1's already"),
    ("198.51.100.12", "  c: {host: h3}\n", "containers.c.host: unknown host 'h3'"),
    ("198.51.100.12", "  c: {networks: [ov]}\n", "containers.c.host: say which host the container runs on"),
    ("198.51.100.12", "  c: {host: h2, networks: [lan]}\n", "containers.c.networks[0]: network lan is not on host h2"),
]


@pytest.mark.parametrize("address,extra,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_hosts_are_one_line_errors(tmp_path, address, extra, message) -> None:
    text = GOOD.replace("ADDRESS", address).replace("checks:", extra + "checks:") if extra else \
        GOOD.replace("ADDRESS", address)
    with pytest.raises(UsageError) as caught:
        lab.load(write(tmp_path, text))
    assert message in caught.value.message
    assert "\n" not in caught.value.message


BAD_NETWORKS = [
    ("  x: {subnet: 10.9.0.0/24}\n", "networks.x.host: a bridge network is on one host"),
    ("  x: {subnet: 10.9.0.0/24, hosts: [h1, h2]}\n", "networks.x.host: a bridge network is on one host"),
    ("  x: {subnet: 10.9.0.0/24, host: h7}\n", "networks.x: unknown host 'h7'"),
    ("  x: {driver: vxlan, subnet: 10.9.0.0/16}\n", "networks.x.hosts: say which hosts the network spans"),
    ("  x: {driver: vxlan, subnet: 10.9.0.0/16, hosts: [h1], peers: [198.51.100.9]}\n", "peers and vtep come from"),
    ("  x: {subnet: 198.51.100.0/25, host: h1}\n", "overlaps the lab's underlay (198.51.100.0/24)"),
    ("  x: {subnet: 203.0.113.128/25, host: h1}\n", "overlaps the lab's internet (203.0.113.0/24)"),
    ("  x: {subnet: 10.9.0.0/24, host: h1, cluster: true}\n", "only a vxlan network can be a cluster network"),
    ("  x: {driver: vxlan, subnet: 10.9.0.0/16, host_subnet_size: 20, hosts: [h1, h2]}\n",
     "would both get host range"),
    ("  x: {driver: geneve, subnet: 10.9.0.0/16, hosts: [h1]}\n", "networks.x.driver: 'geneve' is not one of"),
]


@pytest.mark.parametrize("network,message", BAD_NETWORKS, ids=[m for _, m in BAD_NETWORKS])
def test_bad_networks_are_one_line_errors(tmp_path, network, message) -> None:
    address = "198.51.100.27" if "host_subnet_size: 20" in network else "198.51.100.12"
    text = GOOD.replace("ADDRESS", address).replace("containers:", network + "containers:")
    with pytest.raises(UsageError) as caught:
        lab.load(write(tmp_path, text))
    assert message in caught.value.message


@pytest.mark.parametrize("check,message", [
    ("{from: h9, ping: a}", "checks[1].from: 'h9' is no container or host of this lab"),
    ("{from: a, udp: 'b:53', listener: b}", "checks[1].listener: a udp check's listener must be on the host"),
])
def test_bad_checks(tmp_path, check, message) -> None:
    text = GOOD.replace("ADDRESS", "198.51.100.12") + f"  - {check}\n"
    with pytest.raises(UsageError) as caught:
        lab.load(write(tmp_path, text))
    assert message in caught.value.message


def test_one_host_labs_refuse_host_fields(tmp_path) -> None:
    text = "name: t\nnetworks:\n  lan: {subnet: 10.3.0.0/24, host: h1}\n"
    with pytest.raises(UsageError, match="only a lab with `hosts:` places objects on hosts"):
        lab.load(write(tmp_path, text))
    text = "name: t\nnetworks:\n  ov: {driver: vxlan, subnet: 10.3.0.0/16, cluster: true}\n"
    with pytest.raises(UsageError, match="a cluster network needs a lab with `hosts:`"):
        lab.load(write(tmp_path, text))


def test_each_host_gets_its_share_with_vtep_and_peers(tmp_path) -> None:
    data = lab.load("overlay")
    h1, h2, _h3 = labhosts.hosts_of(data)
    assert (h2.name, h2.index, str(h2.address), str(h2.uplink)) == ("h2", 2, "198.51.100.12", "203.0.113.12")
    share = labhosts.share(data, h2)
    assert share["name"] == "overlay"
    assert share["networks"]["blue"] == {"driver": "vxlan", "subnet": "10.210.0.0/16", "isolated": True,
                                         "vtep": "198.51.100.12", "peers": ["198.51.100.11", "198.51.100.13"]}
    assert share["networks"]["green"] == {"driver": "vxlan", "subnet": "10.220.0.0/16", "external": True}
    # planned for a script: a static stand-in (the bridge and range the cluster gives a fresh lab)
    assert labhosts.share(data, h2, standin=True)["networks"]["green"]["vtep"] == "198.51.100.12"
    assert "lan" not in share["networks"]
    assert sorted(share["containers"]) == ["g2", "web"]
    assert "host" not in share["containers"]["web"]
    assert sorted(labhosts.share(data, h1)["networks"]) == ["blue", "lan"]
    # a host's share is a valid one-host lab
    path = tmp_path / "share.json"
    path.write_text(json.dumps(share))
    assert lab.load(str(path)) == share
    assert labhosts.source_host(data, "a1") == "h1"
    assert labhosts.source_host(data, "h3") == "h3"
    assert labhosts.source_host(data, "outside") is None


def test_checks_are_rewritten_for_the_host_that_runs_them() -> None:
    data = lab.load("overlay")
    addresses = {"web": "10.210.12.10", "g3": "10.220.13.2", "a1": "10.210.11.2"}
    by_name = {"from": "a1", "http": "http://web/", "contains": "hello"}
    assert labhosts.rewrite_check(data, by_name, "h1", addresses)["http"] == "http://10.210.12.10/"
    assert labhosts.rewrite_check(data, {"from": "a3", "tcp": "web:80"}, "h3", addresses)["tcp"] == "10.210.12.10:80"
    # a target on the same host stays a name (the host's own wrapdock resolves it)
    assert labhosts.rewrite_check(data, {"from": "g2", "ping": "web"}, "h2", addresses)["ping"] == "web"
    assert labhosts.rewrite_check(data, {"from": "h3", "ping": "a1"}, "h3", addresses) == {"from": "host",
                                                                                         "ping": "10.210.11.2"}


def test_placeholders_become_command_substitutions() -> None:
    word = labhosts.pid_word(None, LAB_DIR / "h1.pid")
    line = shlex.join(["nsenter", "--target", word, "--all", "--", "true"])
    assert labhosts.render_pids(line) == 'nsenter --target "$(cat /var/run/wrapdock/labs/overlay/h1.pid)" --all -- true'
    assert labhosts.pid_word(42, LAB_DIR / "h1.pid") == "42"


def test_start_and_wire_plans_match_golden(plain_cgroups) -> None:
    data = lab.load("overlay")
    plans = [labhosts.start_plan(data, LAB_DIR), labhosts.wire_plan(data, LAB_DIR, {"": 100, "h1": 101, "h2": 102,
                                                                                      "h3": 103})]
    check_golden("lab-overlay-up.txt", script_body(plans) + "\n")


def test_stop_plan_matches_golden(plain_cgroups) -> None:
    data = lab.load("overlay")
    check_golden("lab-overlay-down.txt",
                 script_body([labhosts.stop_plan(data, LAB_DIR, ["100", "110", "111", "112"])]) + "\n")


def test_the_host_and_etcd_plans_match_golden(plain_cgroups) -> None:
    data = lab.load("overlay")
    host = labhosts.hosts_of(data)[1]
    text = script_body([labhosts.handover_plan(data, host, "102"), labhosts.etcd_plan(LAB_DIR, "100")])
    check_golden("lab-overlay-host-etcd.txt", text + "\n")


def test_no_command_is_made_in_the_callers_namespaces() -> None:
    """Every link is made inside the lab namespace or a host (nsenter), every mount inside a host's init."""
    data = lab.load("overlay")
    wire = labhosts.wire_plan(data, LAB_DIR, {"": 100, "h1": 101, "h2": 102, "h3": 103})
    assert all(step.argv[0] == "nsenter" for step in wire.steps)
    start = labhosts.start_plan(data, LAB_DIR)
    for step in start.steps[1:]:
        for line in step.stdin:  # mounts and links only in the init that unshare runs (in the new namespaces)
            if "mount " in line or "ip link" in line or "ip addr" in line:
                assert line.startswith("setsid unshare --net --mount --pid"), line


def test_print_only_up_is_one_script_with_pid_placeholders(tmp_path) -> None:
    from wrapdock.session import Session

    data = lab.load("overlay")
    session = Session(state_dir=tmp_path, print_only=True, trail_mode="quiet")
    lab.up(session, data)
    text = labhosts.render_pids(script_body(session.printed))
    assert f'nsenter --target "$(cat {tmp_path}/labs/overlay/h2.pid)" --all -- env' in text
    assert "lab up /run/wrapdock-lab/lab.json" in text
    assert not list(tmp_path.iterdir())  # nothing written


def test_graph_draws_hosts_as_clusters() -> None:
    dot = lab.graph(lab.load("overlay"))
    for host in ("h1", "h2", "h3"):
        assert f'subgraph "cluster_{host}"' in dot
    assert '"net:blue" [shape=ellipse' in dot and "vxlan, static peers" in dot
    assert '"host:h1" -- underlay [label="eth0 198.51.100.11"]' in dot
    assert 'etcd [shape=cylinder, label="etcd 198.51.100.1:2379"]' in dot and "cluster (etcd)" in dot


def test_scripts_one_per_host_plus_the_underlay() -> None:
    texts = labhosts.scripts({"state_dir": Path("/var/run/wrapdock")}, lab.load("overlay"),
                             ["lab", "script", "overlay"])
    assert list(texts) == ["underlay", "h1", "h2", "h3"]
    assert "link add name wdvx" in texts["h2"] and "local 198.51.100.12 dev eth0" in texts["h2"]
    assert "dst 198.51.100.11 self permanent" in texts["h2"]
    # checks from h1 to a container on h2 go to its address; checks from outside are in the underlay's script
    assert "busybox ping -c 1 -W 2 10.210.12.10" in texts["h1"]
    assert 'nsenter --target "$(cat /var/run/wrapdock/labs/overlay/lab.pid)" --net -- timeout 5 busybox wget' \
        in texts["underlay"]
    assert "@pid:" not in "".join(texts.values())


def test_state_round_trip(tmp_path, plain_cgroups) -> None:
    data = lab.load("overlay")
    labhosts._write_state(tmp_path, data, {"lab": 1, "hosts": {"h1": 2}, "holders": {"h1": 3}})
    state = labhosts.read_state(tmp_path)
    assert state["hosts"] == {"h1": 2} and state["cgroup_parents"]["h1"] == "wrapdock-lab-overlay-h1"
    assert labhosts.read_state(tmp_path / "nothing") is None
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1


CLUSTER = """
name: c
hosts:
  h1: {address: 198.51.100.11}
  h2: {address: 198.51.100.12}
networks:
  ov: {driver: vxlan, subnet: 10.240.0.0/16, hosts: [h1, h2], cluster: true, vni: 77}
containers:
  a: {host: h2, networks: [ov]}
"""


def test_cluster_networks_need_cluster_mode(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(labhosts, "has_cluster_mode", lambda: False)
    with pytest.raises(UsageError, match=r"networks\.ov\.cluster: this wrapdock has no cluster mode"):
        lab.load(write(tmp_path, CLUSTER))


def test_cluster_networks_are_created_on_the_first_host_and_joined_on_the_others(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(labhosts, "has_cluster_mode", lambda: True)
    data = lab.load(write(tmp_path, CLUSTER))
    h1, h2 = labhosts.hosts_of(data)
    assert labhosts.needs_etcd(data)
    assert labhosts.cluster_commands(data, h1) == [
        ["--cluster", "etcd://198.51.100.1:2379", "network", "create", "--driver", "vxlan", "--subnet",
         "10.240.0.0/16", "--vtep", "198.51.100.11", "--vni=77", "ov"]]
    assert labhosts.cluster_commands(data, h2) == [
        ["--cluster", "etcd://198.51.100.1:2379", "network", "join", "ov", "--vtep", "198.51.100.12"]]
    # the host's share attaches to it and never creates or removes it
    assert labhosts.share(data, h2)["networks"]["ov"] == {"driver": "vxlan", "subnet": "10.240.0.0/16",
                                                          "external": True}
    wire = labhosts.wire_plan(data, LAB_DIR, {"": 1, "h1": 2, "h2": 3})
    assert "addr add 198.51.100.1/24 dev underlay" in wire.steps[0].stdin
    etcd = "\n".join(labhosts.etcd_plan(LAB_DIR, "1").steps[0].stdin)
    assert f"--data-dir {LAB_DIR}/etcd" in etcd and "--listen-client-urls http://198.51.100.1:2379" in etcd


def test_external_networks_are_neither_created_nor_removed(tmp_path) -> None:
    from wrapdock.session import Session

    text = "name: x\nnetworks:\n  ov: {subnet: 10.3.0.0/24, external: true}\n"
    data = lab.load(write(tmp_path, text))
    session = Session(state_dir=tmp_path / "state", print_only=True, trail_mode="quiet")
    lab.up(session, data)
    assert session.printed == []


def test_a_lab_that_died_before_its_state_is_taken_down_by_its_pid_files(tmp_path) -> None:
    data = lab.load("overlay")
    directory = labhosts.lab_dir(tmp_path, "overlay")
    directory.mkdir(parents=True)
    (directory / "lab.pid").write_text("4242\n")
    (directory / "h1.holder.pid").write_text("4243\n")
    state = labhosts._state_from_pid_files(directory, data)
    assert state == {"lab": 4242, "etcd": None, "hosts": {}, "holders": {"h1": 4243}}


@pytest.mark.skipif(__import__("shutil").which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_scripts_pass_shellcheck(tmp_path) -> None:
    import subprocess

    texts = labhosts.scripts({"state_dir": Path("/var/run/wrapdock")}, lab.load("overlay"), ["lab", "script"])
    for name, text in texts.items():
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        done = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{name}.sh:\n{done.stdout}"
