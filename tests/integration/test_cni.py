"""wrapdock-cni called directly, as a CNI caller calls it, in a sandbox host: ADD puts a namespace on a
wrapdock network beside CLI containers (real packets both ways, a published port from `outside`),
CHECK compares the host with the record, DEL never fails and leaves nothing, GC keeps only the
attachments it is told to, STATUS says whether the network can take ADDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.ctnet import Host, assert_nothing_left, web_root
from tests.sandbox import OUTSIDE_NS, UPLINK_IP, Sandbox
from wrapdock.cniattach import host_ifname

pytestmark = pytest.mark.integration

PLUGIN = str(Path(sys.executable).with_name("wrapdock-cni"))
NET, SUBNET, GATEWAY = "wdnet", "10.88.0.0/24", "10.88.0.1"
SLEEP = ("busybox", "sleep", "3600")


class Caller:
    """Runs the plugin in the sandbox host the way podman's libcni does: CNI_* variables, config on stdin."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def call(self, command: str, container: str = "", ifname: str = "eth0", netns: str | None = None,
             version: str = "1.0.0", runtime: dict | None = None, env: dict | None = None,
             **extra: object) -> tuple[int, dict | None]:
        conf = {"cniVersion": version, "name": NET, "type": "wrapdock", "network": NET,
                "capabilities": {"portMappings": True, "ips": True, "mac": True}, **extra}
        if runtime is not None:
            conf["runtimeConfig"] = runtime
        variables = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": ifname,
                     "CNI_NETNS": f"/run/netns/{container}" if netns is None else netns,
                     "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "IgnoreUnknown=1", **(env or {})}
        done = self.sandbox.sh(PLUGIN, input=json.dumps(conf), env=variables, check=False, timeout=120)
        assert "Traceback" not in done.stdout + done.stderr
        answer = json.loads(done.stdout) if done.stdout.strip() else None
        if done.returncode != 0:
            assert answer is not None and isinstance(answer.get("code"), int), done.stdout
        return done.returncode, answer

    def add(self, container: str, **kwargs) -> dict:
        code, answer = self.call("ADD", container, **kwargs)
        assert code == 0 and answer is not None, answer
        return answer

    def ok(self, command: str, container: str = "", **kwargs) -> None:
        code, answer = self.call(command, container, **kwargs)
        assert (code, answer) == (0, None), answer


def adds_at_once(sandbox: Sandbox, pods: tuple[str, ...], version: str = "1.0.0") -> list[dict]:
    """ADDs of these namespaces' eth0, all started before any is done; their results (each succeeded)."""
    conf = json.dumps({"cniVersion": version, "name": NET, "type": "wrapdock"})
    calls = [subprocess.Popen([*sandbox.enter_argv(), PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **sandbox.env, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod,
                                   "CNI_IFNAME": "eth0", "CNI_NETNS": f"/run/netns/{pod}"}) for pod in pods]
    results = [json.loads(call.communicate(conf, timeout=120)[0]) for call in calls]
    assert [call.returncode for call in calls] == [0] * len(pods), results
    return results


def netns(sandbox: Sandbox, *names: str) -> None:
    for name in names:
        sandbox.sh("ip", "netns", "add", name)


def pod_ping(sandbox: Sandbox, pod: str, address: str) -> bool:
    return sandbox.sh("ip", "netns", "exec", pod, "busybox", "ping", "-c1", "-W3", address, check=False).returncode == 0


def cni_records(sandbox: Sandbox) -> list[str]:
    return sandbox.state_records("cni/attachments")


def assert_cni_gone(sandbox: Sandbox, host: Host, veths: list[str]) -> None:
    links = sandbox.sh("ip", "-o", "link", "show").stdout
    for veth in veths:
        assert veth not in links
    assert "wrapdock:cni=" not in sandbox.sh("iptables-save").stdout
    assert [a for a in host.leases(NET) if a["owner"].startswith("cni:")] == []
    assert cni_records(sandbox) == []


def test_add_puts_a_namespace_beside_a_cli_container_and_publishes_its_port(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.add_outside()
    start = sandbox.snapshot()
    host, caller = Host(sandbox), Caller(sandbox)
    host.network(NET, SUBNET)
    host.run("--name", "web", "--net", NET, *SLEEP)
    netns(sandbox, "pod1")
    result = caller.add("pod1", runtime={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})

    assert result["cniVersion"] == "1.0.0"
    assert result["ips"] == [{"interface": 0, "address": "10.88.0.3/24", "gateway": GATEWAY}]
    assert result["interfaces"] == [{"name": "eth0", "mac": "02:42:0a:58:00:03", "sandbox": "/run/netns/pod1"}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}]
    web = host.address("web", NET)
    assert pod_ping(sandbox, "pod1", web), "the CNI namespace reaches the CLI container"
    assert host.ping("web", "10.88.0.3"), "the CLI container reaches the CNI namespace"

    pid = host.serve("pod1", web_root(tmp_path, "from-pod1"), 80)
    host.wait_http(f"http://{UPLINK_IP}:8080/", "from-pod1", where=OUTSIDE_NS)

    view = host.network_view(NET)
    assert [(a["container_id"], a["ifname"], a["address"]) for a in view["cni_attachments"]] == [
        ("pod1", "eth0", "10.88.0.3")]
    assert {a["owner"] for a in view["allocations"]} >= {"cni:pod1/eth0"}
    refused = sandbox.wrapdock("network", "rm", NET, check=False)
    assert refused.returncode == 2 and "cni:pod1/eth0" in refused.stderr
    trail = sandbox.sh("bash", "-c", "cat /run/wrapdock/cni/trail/*-ADD-pod1-eth0.log").stdout
    assert "nsenter --net=/run/netns/pod1 ip -batch -" in trail and "# result: " in trail
    assert "wrapdock:cni=pod1/eth0" in sandbox.sh("cat", "/run/wrapdock/audit.log").stdout

    sandbox.sh("kill", pid)
    veth = json.loads(sandbox.sh("bash", "-c", "cat /run/wrapdock/cni/attachments/*.json").stdout)["host_ifname"]
    caller.ok("DEL", "pod1")
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") is None
    assert_cni_gone(sandbox, host, [veth])
    sandbox.sh("ip", "netns", "del", "pod1")
    host.teardown(start, ["web"], [NET])


def test_check_compares_the_host_with_the_record(sandbox: Sandbox) -> None:
    start = sandbox.snapshot()
    host, caller = Host(sandbox), Caller(sandbox)
    host.network(NET, SUBNET)
    netns(sandbox, "pod1")
    result = caller.add("pod1", version="0.4.0",
                        runtime={"portMappings": [{"hostPort": 8081, "containerPort": 81, "protocol": "udp"}]})
    assert result["ips"] == [{"interface": 0, "address": "10.88.0.2/24", "gateway": GATEWAY, "version": "4"}]
    caller.ok("CHECK", "pod1", version="0.4.0", prevResult=result)

    sandbox.sh("ip", "-n", "pod1", "addr", "del", "10.88.0.2/24", "dev", "eth0")
    code, answer = caller.call("CHECK", "pod1", version="0.4.0", prevResult=result)
    assert code == 1 and answer["code"] == 104 and "lacks its address 10.88.0.2/24" in answer["msg"]
    assert "no default route" in answer["msg"]  # it went with the address

    sandbox.sh("iptables", "-w", "-t", "nat", "-F", "WRAPDOCK-DNAT")
    code, answer = caller.call("CHECK", "pod1", version="0.4.0")
    assert "iptables rule missing: -t nat -A WRAPDOCK-DNAT -p udp --dport 8081" in answer["msg"]

    code, answer = caller.call("CHECK", "nobody", netns="/run/netns/pod1")
    assert (code, answer["code"]) == (1, 3)
    caller.ok("DEL", "pod1")
    sandbox.sh("ip", "netns", "del", "pod1")
    assert_cni_gone(sandbox, host, [])
    host.teardown(start, [], [NET])


def test_del_never_fails_and_leaves_nothing(sandbox: Sandbox) -> None:
    start = sandbox.snapshot()
    host, caller = Host(sandbox), Caller(sandbox)
    host.network(NET, SUBNET)
    netns(sandbox, "pod1", "pod2")
    ports = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    caller.add("pod1", runtime=ports)
    veth1 = json.loads(sandbox.sh("bash", "-c", "cat /run/wrapdock/cni/attachments/*.json").stdout)["host_ifname"]

    # the namespace goes first (its veth with it), then DEL with its stale path, then containerd's empty one
    sandbox.sh("ip", "netns", "del", "pod1")
    caller.ok("DEL", "pod1")
    caller.ok("DEL", "pod1", netns="")
    caller.ok("DEL", "never-added", netns="")
    assert_cni_gone(sandbox, host, [veth1])

    # a failed ADD is rolled back (nothing recorded); the DEL podman sends after it, without prevResult, succeeds
    # (a fault at its second command, the port rules: its first made the veth, address and route)
    code, answer = caller.call("ADD", "pod2", runtime=ports, env={"WRAPDOCK_FAIL_AT": "2"})
    assert (code, answer["code"]) == (1, 101) and "rolled back" in answer["msg"]
    caller.ok("DEL", "pod2")
    assert_cni_gone(sandbox, host, [])
    assert sandbox.sh("ip", "-n", "pod2", "-o", "link", "show").stdout.count("\n") == 1  # only lo

    # ctr reuses container names and `ctr run -d` sends no DEL: an ADD of the same container and interface
    # replaces an attachment whose namespace is gone (its rules and lease too); a live one is refused
    netns(sandbox, "pod3", "pod4")
    caller.add("reused", netns="/run/netns/pod3", runtime=ports)
    code, answer = caller.call("ADD", "reused", netns="/run/netns/pod4")
    assert (code, answer["code"]) == (1, 100) and "already attached" in answer["msg"]
    sandbox.sh("ip", "netns", "del", "pod3")
    result = caller.add("reused", netns="/run/netns/pod4")
    assert result["interfaces"][0]["sandbox"] == "/run/netns/pod4"
    assert [a["owner"] for a in host.leases(NET)] == ["cni:reused/eth0"]
    assert "wrapdock:cni=reused/eth0" not in sandbox.sh("iptables-save").stdout  # this ADD published nothing
    assert pod_ping(sandbox, "pod4", GATEWAY)
    caller.ok("DEL", "reused", netns="/run/netns/pod4")
    sandbox.sh("ip", "netns", "del", "pod4")
    assert_cni_gone(sandbox, host, [])

    # a port published by a CLI container is refused, with nothing done
    host.run("--name", "web", "--net", NET, "-p", "8080:80", *SLEEP)
    code, answer = caller.call("ADD", "pod2", runtime=ports)
    assert (code, answer["code"]) == (1, 100) and "already published by container web" in answer["msg"]
    assert_cni_gone(sandbox, host, [])
    sandbox.sh("ip", "netns", "del", "pod2")
    host.teardown(start, ["web"], [NET])


def test_gc_keeps_the_valid_attachments_and_status_sees_the_bridge(sandbox: Sandbox) -> None:
    start = sandbox.snapshot()
    host, caller = Host(sandbox), Caller(sandbox)
    host.network(NET, SUBNET)
    pods = ("pod1", "pod2", "pod3")
    netns(sandbox, *pods)
    # three ADDs at once (podman starts containers in parallel): one address each, under the state lock
    results = adds_at_once(sandbox, pods)
    assert sorted(r["ips"][0]["address"] for r in results) == ["10.88.0.2/24", "10.88.0.3/24", "10.88.0.4/24"]
    caller.ok("STATUS", version="1.1.0")

    caller.ok("GC", version="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "pod1", "ifname": "eth0"}]})
    view = host.network_view(NET)
    assert [a["container_id"] for a in view["cni_attachments"]] == ["pod1"]
    assert [a["owner"] for a in view["allocations"]] == ["cni:pod1/eth0"]
    for pod in ("pod2", "pod3"):
        assert sandbox.sh("ip", "-n", pod, "-o", "link", "show").stdout.count("\n") == 1  # only lo
    assert pod_ping(sandbox, "pod1", GATEWAY)

    sandbox.sh("ip", "link", "set", NET, "down")
    code, answer = caller.call("STATUS", version="1.1.0")
    assert (code, answer["code"]) == (1, 50) and f"bridge {NET} is down" in answer["msg"]
    sandbox.sh("ip", "link", "set", NET, "up")
    caller.ok("STATUS", version="1.1.0")

    # network rm -f takes the CNI attachments away as their DEL would
    sandbox.wrapdock("--quiet", "network", "rm", "-f", NET)
    assert cni_records(sandbox) == []
    for pod in ("pod1", "pod2", "pod3"):
        sandbox.sh("ip", "netns", "del", pod)
    assert_nothing_left(sandbox, start)



def test_gc_takes_away_what_a_missing_del_left(sandbox: Sandbox) -> None:
    """`ctr run -d` never sends DEL: once the namespace is gone, doctor names the attachment and gc takes
    it away as that DEL would have (rules, lease, record); an attachment whose namespace lives stays."""
    start = sandbox.snapshot()
    host, caller = Host(sandbox), Caller(sandbox)
    host.network(NET, SUBNET)
    netns(sandbox, "pod1", "pod2")
    ports = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    caller.add("pod1")
    caller.add("pod2", runtime=ports)
    sandbox.sh("ip", "netns", "del", "pod2")

    doctor = sandbox.wrapdock("doctor", "--format", "json", check=False)
    assert [(f["check"], f["subject"]) for f in json.loads(doctor.stdout) if f["check"].startswith("cni")] == [
        ("cni-attachment-gone", f"{NET} 10.88.0.3")]
    done = sandbox.wrapdock("gc")
    assert "removed CNI attachment cni:pod2/eth0 on wdnet, whose veth was gone" in done.stdout
    assert [a["container_id"] for a in host.network_view(NET)["cni_attachments"]] == ["pod1"]
    assert [a["owner"] for a in host.leases(NET)] == ["cni:pod1/eth0"]
    assert "wrapdock:cni=pod2/eth0" not in sandbox.sh("iptables-save").stdout
    assert sandbox.wrapdock("gc").stdout.startswith("nothing to do"), "a second gc finds nothing"
    assert pod_ping(sandbox, "pod1", GATEWAY)

    # the bridge goes: gc re-creates it and puts the CNI veth back on it, as it does a container's
    sandbox.sh("ip", "link", "del", NET)
    assert not pod_ping(sandbox, "pod1", GATEWAY)
    sandbox.wrapdock("gc")
    assert pod_ping(sandbox, "pod1", GATEWAY)

    caller.ok("DEL", "pod1")
    sandbox.sh("ip", "netns", "del", "pod1")
    assert_cni_gone(sandbox, host, [])
    host.teardown(start, [], [NET])


def test_cni_print_scripts_do_what_the_calls_do(sandbox: Sandbox) -> None:
    """`wrapdock cni print ADD` is a script that connects the namespace as the plugin would; the DEL
    script takes it away again (neither records anything)."""
    start = sandbox.snapshot()
    host = Host(sandbox)
    host.network(NET, SUBNET)
    netns(sandbox, "pod1")
    conf = json.dumps({"cniVersion": "1.0.0", "name": NET, "type": "wrapdock",
                       "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}})
    env = {"CNI_CONTAINERID": "pod1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/pod1"}
    add = sandbox.wrapdock("cni", "print", "ADD", input=conf, env=env).stdout
    sandbox.sh("bash", "-s", input=add)
    assert pod_ping(sandbox, "pod1", GATEWAY)
    assert "wrapdock:cni=pod1/eth0" in sandbox.sh("iptables-save", "-t", "nat").stdout
    assert cni_records(sandbox) == [] and host.leases(NET) == []  # a script records nothing

    delete = sandbox.wrapdock("cni", "print", "DEL", input=conf, env=env).stdout
    sandbox.sh("bash", "-s", input=delete)
    assert "wrapdock:cni=" not in sandbox.sh("iptables-save").stdout
    assert host_ifname("pod1", "eth0") in add and host_ifname("pod1", "eth0") not in sandbox.sh("ip", "link").stdout
    sandbox.sh("ip", "netns", "del", "pod1")
    host.teardown(start, [], [NET])
