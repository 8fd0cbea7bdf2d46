"""`wrapdock cni serve` in a sandbox host: while it runs, the plugin's ADD and DEL are carried out by it
(its trail files say so) with the same result and real packets; stopped, killed (its socket left
behind) or switched off with WRAPDOCK_CNI_SERVER=off, the plugin carries the calls out itself; a second
server is refused. podman with the server: tests/integration/test_cni_clients.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.ctnet import Host
from tests.integration.test_cni import NET, SUBNET, Caller, adds_at_once, assert_cni_gone, netns, pod_ping
from tests.sandbox import Sandbox

pytestmark = pytest.mark.integration

SOCKET = "/var/run/wrapdock/cni/server.sock"


def start_server(sandbox: Sandbox) -> tuple[subprocess.Popen, str]:
    """The server in the sandbox host, and its PID there (from its first line)."""
    server = sandbox.popen_wrapdock("cni", "serve")
    line = server.stderr.readline()
    assert f"listening on {SOCKET}" in line, line + server.stderr.read()
    return server, line.split("pid ", 1)[1].split(",", 1)[0]


def stop_server(sandbox: Sandbox, server: subprocess.Popen, pid: str, signal: str = "TERM") -> str:
    sandbox.sh("kill", "-s", signal, pid)
    _, rest = server.communicate(timeout=30)  # nsenter ends with the server
    return rest


def trail(sandbox: Sandbox, command: str, container: str) -> str:
    return sandbox.sh("bash", "-c", f"cat /run/wrapdock/cni/trail/*-{command}-{container}-eth0.log").stdout


def socket_exists(sandbox: Sandbox) -> bool:
    return sandbox.sh("test", "-S", SOCKET, check=False).returncode == 0


def test_the_server_carries_the_calls_out_and_the_plugin_works_without_it(sandbox: Sandbox) -> None:
    start = sandbox.snapshot()
    host, caller = Host(sandbox), Caller(sandbox)
    host.network(NET, SUBNET)
    host.run("--name", "web", "--net", NET, "busybox", "sleep", "3600")
    web = host.address("web", NET)
    netns(sandbox, "pod1", "pod2", "pod3", "pod4")
    server, pid = start_server(sandbox)
    served = f"(by wrapdock cni serve, pid {pid})"

    # with the server: the same answer as the plugin gives, packets both ways, its trail says who did it
    result = caller.add("pod1")
    assert result["ips"] == [{"interface": 0, "address": "10.88.0.3/24", "gateway": "10.88.0.1"}]
    assert pod_ping(sandbox, "pod1", web) and host.ping("web", "10.88.0.3")
    assert served in trail(sandbox, "ADD", "pod1")
    veth1 = json.loads(sandbox.sh("bash", "-c", "cat /run/wrapdock/cni/attachments/*.json").stdout)["host_ifname"]
    caller.ok("DEL", "pod1")
    assert served in trail(sandbox, "DEL", "pod1")
    assert_cni_gone(sandbox, host, [veth1])

    # three ADDs at once through the server (its children share the state lock), then STATUS and GC
    pods = ("para", "parb", "parc")
    netns(sandbox, *pods)
    results = adds_at_once(sandbox, pods, version="1.1.0")
    addresses = {r["ips"][0]["address"] for r in results}  # one each (the IPAM goes on past a released one)
    assert len(addresses) == 3 and all(a.startswith("10.88.0.") and a.endswith("/24") for a in addresses)
    assert all(served in trail(sandbox, "ADD", pod) for pod in pods)
    assert all(pod_ping(sandbox, pod, web) for pod in pods)
    caller.ok("STATUS", version="1.1.0")
    caller.ok("GC", version="1.1.0", **{"cni.dev/valid-attachments": []})
    assert host.network_view(NET)["cni_attachments"] == []
    for pod in pods:
        sandbox.sh("ip", "netns", "del", pod)

    # WRAPDOCK_CNI_SERVER=off: the plugin does it itself, beside a running server
    caller.add("pod2", env={"WRAPDOCK_CNI_SERVER": "off"})
    assert pod_ping(sandbox, "pod2", web)
    assert "by wrapdock cni serve" not in trail(sandbox, "ADD", "pod2")
    caller.ok("DEL", "pod2")

    # a second server is refused, in one line
    second = sandbox.wrapdock("cni", "serve", check=False, timeout=30)
    assert second.returncode != 0 and "already listens" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr

    # stopped: its socket goes, the plugin works alone
    assert "stopped" in stop_server(sandbox, server, pid)
    assert not socket_exists(sandbox)
    caller.add("pod3")
    assert pod_ping(sandbox, "pod3", web)
    assert "by wrapdock cni serve" not in trail(sandbox, "ADD", "pod3")
    caller.ok("DEL", "pod3")

    # killed: its socket is left, nobody answers on it: the plugin works alone; a new server replaces it
    server, pid = start_server(sandbox)
    stop_server(sandbox, server, pid, signal="KILL")
    assert socket_exists(sandbox)
    caller.add("pod4")
    assert pod_ping(sandbox, "pod4", web)
    assert "by wrapdock cni serve" not in trail(sandbox, "ADD", "pod4")
    server, pid = start_server(sandbox)
    caller.ok("DEL", "pod4")
    assert f"(by wrapdock cni serve, pid {pid})" in trail(sandbox, "DEL", "pod4")
    stop_server(sandbox, server, pid)

    assert_cni_gone(sandbox, host, [])
    for pod in ("pod1", "pod2", "pod3", "pod4"):
        sandbox.sh("ip", "netns", "del", pod)
    host.teardown(start, ["web"], [NET])
