"""Published ports without a host port (`-p 80`, `-p HOST_IP::80`): wrapdock picks a free host port from
the sandbox host's ephemeral range under its state lock, `ps` and `port` show it, and the outside
reaches the container through it (issue 12, item 5).

The ephemeral range and /proc/net are per network namespace: each test narrows its sandbox host's
own ip_local_port_range where it needs the pick to be predictable.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.ctnet import HOST, SLEEP, Host, web_root
from tests.sandbox import OUTSIDE_NS, UPLINK_IP

pytestmark = pytest.mark.integration

NET = "rpnet"
RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def begin(sandbox) -> tuple[Host, dict]:
    sandbox.add_outside()
    start = sandbox.snapshot()
    host = Host(sandbox)
    host.network(NET, "10.77.0.0/24")
    return host, start


def httpd(root) -> tuple[str, ...]:
    return ("-v", f"{root}:/www", "busybox", "httpd", "-f", "-p", "80", "-h", "/www")


def ephemeral_range(sandbox) -> tuple[int, int]:
    low, high = sandbox.sh("cat", RANGE).stdout.split()
    return int(low), int(high)


def published(host: Host, name: str) -> list[str]:
    """`port NAME`'s lines."""
    return host.wd("port", name).stdout.splitlines()


def host_port(host: Host, name: str, port: str = "80") -> int:
    """`port NAME PORT`: the one host port (on every address) of that container port."""
    (line,) = host.wd("port", name, port).stdout.splitlines()
    address, _, number = line.rpartition(":")
    assert address == "0.0.0.0", line
    return int(number)


def ps_ports(host: Host) -> dict[str, str]:
    """The PORTS column of the `ps` table (the text after ADDRESSES), by container name."""
    lines = host.wd("ps").stdout.splitlines()
    column = lines[0].index("PORTS")
    return {line.split()[1]: line[column:].strip() for line in lines[1:]}


def dnat_ports(sandbox) -> list[int]:
    """The host ports wrapdock's DNAT rules catch."""
    rules = sandbox.sh("iptables-save", "-t", "nat").stdout
    return sorted(int(port) for port in re.findall(r"-A WRAPDOCK-DNAT .*--dport (\d+) .*-j DNAT", rules))


def listen_tcp(sandbox, port: int) -> str:
    """busybox nc listening on PORT (every address) in the sandbox host (not a container); its pid, once it listens."""
    pid = sandbox.bash(f"busybox nc -l -p {port} >/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
    assert pid.isdigit(), pid
    deadline = time.monotonic() + 30
    # (busybox nc listens on [::], the dual-stack socket: tcp6)
    while not re.search(rf":{port:04X} 0+:0000 0A", sandbox.sh("cat", "/proc/net/tcp", "/proc/net/tcp6").stdout):
        assert time.monotonic() < deadline, f"nc never listened on {port}"
        time.sleep(0.1)
    return pid


def test_run_p_80_picks_an_ephemeral_port_that_ps_and_port_show_and_the_outside_reaches(sandbox, tmp_path):
    host, start = begin(sandbox)
    low, high = ephemeral_range(sandbox)
    # (and Docker's 0.0.0.0, which means every address, as no HOST_IP does)
    host.run("--name", "web", "--net", NET, "-p", "80", "-p", "127.0.0.1::80", "-p", "0.0.0.0:8085:80",
             *httpd(web_root(tmp_path, "web")))
    found = [line.split(":") for line in host.wd("port", "web", "80").stdout.splitlines()]
    assert [address for address, _ in found] == ["0.0.0.0", "0.0.0.0", "127.0.0.1"], found
    assert found[0] == ["0.0.0.0", "8085"], found  # natural order, as Docker's: 8085 before 32768
    port, local_port = int(found[1][1]), int(found[2][1])
    assert low <= port <= high and low <= local_port <= high and port != local_port
    assert published(host, "web") == ["80/tcp -> 0.0.0.0:8085", f"80/tcp -> 0.0.0.0:{port}",
                                      f"80/tcp -> 127.0.0.1:{local_port}"]
    assert ps_ports(host)["web"] == f"0.0.0.0:{port}->80/tcp, 127.0.0.1:{local_port}->80/tcp, 0.0.0.0:8085->80/tcp"
    assert dnat_ports(sandbox) == sorted([port, local_port, 8085])

    # real packets: the outside through the uplink address and the picked port; the host via 127.0.0.1
    host.wait_http(f"http://{host.address('web', NET)}/", "web")
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:{port}/") == "web"
    assert host.fetch(HOST, f"http://127.0.0.1:{local_port}/") == "web"
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:{local_port}/") is None  # bound to 127.0.0.1 only
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8085/") == "web"

    host.teardown(start, ["web"], [NET])


def test_ports_in_use_are_skipped_the_pick_is_in_the_script_and_start_keeps_it(sandbox, tmp_path):
    host, start = begin(sandbox)
    sandbox.sh("sh", "-c", f"echo '40000 40002' > {RANGE}")  # this sandbox host's own network namespace
    assert ephemeral_range(sandbox) == (40000, 40002)
    listener = listen_tcp(sandbox, 40000)  # a host process (no container) holds the first candidate
    host.run("--name", "a", "--net", NET, "-p", "40001:80", *SLEEP)  # a container holds the second

    # --print-only decides the same way, and its script carries the port it picked
    script = host.wd("--print-only", "run", "-d", "--name", "b", "--net", NET, "-p", "80", *SLEEP).stdout
    assert re.findall(r"-A WRAPDOCK-DNAT -p tcp --dport (\d+) ", script) == ["40002"], script

    host.run("--name", "b", "--net", NET, "-p", "80", *httpd(web_root(tmp_path, "b")))
    assert host_port(host, "b") == 40002
    assert published(host, "b") == ["80/tcp -> 0.0.0.0:40002"]
    assert ps_ports(host) == {"a": "0.0.0.0:40001->80/tcp", "b": "0.0.0.0:40002->80/tcp"}
    # fetched from the outside only: with the host's own range cut to 3 ports, the host's client sockets
    # would run out of source ports (a wget killed by its timeout on a loaded machine leaves a TIME_WAIT)
    host.wait_http(f"http://{UPLINK_IP}:40002/", "b", where=OUTSIDE_NS)
    # UDP is apart: the TCP listener and a's TCP port do not hold UDP's 40000
    host.run("--name", "c", "--net", NET, "-p", "53/udp", *SLEEP)
    assert published(host, "c") == ["53/udp -> 0.0.0.0:40000"]

    # every TCP port of the range taken: refused with a clear line, nothing changed
    before = sandbox.snapshot()
    full = sandbox.wrapdock("run", "-d", "--name", "d", "--net", NET, "-p", "80", *SLEEP, check=False)
    assert full.returncode == 2, full.stderr
    assert full.stderr.strip().splitlines() == [
        "wrapdock: error: port mapping '80': no free host port for 80/tcp in the ephemeral range 40000-40002 "
        "(/proc/sys/net/ipv4/ip_local_port_range): each is published by a container or in use on this host"]
    assert sandbox.snapshot() == before
    assert sorted(v["name"] for v in host.listing()) == ["a", "b", "c"]

    # a stopped container keeps its port (its rules stay with it); start serves on it again
    host.wd("--quiet", "stop", "-t", "1", "b")
    host.wd("--quiet", "start", "b")
    assert host_port(host, "b") == 40002
    host.wait_http(f"http://{UPLINK_IP}:40002/", "b", where=OUTSIDE_NS)

    sandbox.sh("kill", listener)
    host.teardown(start, ["a", "b", "c"], [NET])


def test_parallel_runs_get_distinct_ports(sandbox):
    host, start = begin(sandbox)
    low, high = ephemeral_range(sandbox)
    names = [f"p{i}" for i in range(5)]
    host.run_all(*(("--name", name, "--net", NET, "-p", "80", *SLEEP) for name in names))
    ports = {name: host_port(host, name) for name in names}
    assert len(set(ports.values())) == 5, ports
    assert all(low <= port <= high for port in ports.values()), ports
    assert dnat_ports(sandbox) == sorted(ports.values())
    views = json.loads(host.wd("ps", "--format", "json").stdout)
    assert {v["name"]: v["published"] for v in views} == {name: [f"0.0.0.0:{port}->80/tcp"]
                                                           for name, port in ports.items()}
    host.teardown(start, names, [NET])
