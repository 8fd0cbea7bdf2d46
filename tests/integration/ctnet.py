"""Helpers for the container networking tests: real containers made by wrapdock, real packets between
them, the sandbox host and the `outside` namespace, and the "nothing left" check at the end.

Traffic goes only to namespaces inside the sandbox (containers, `outside`) and to loopback.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.sandbox import OUTSIDE_NS, Sandbox

BUSYBOX = "/bin/busybox"
# busybox httpd CGI: answers with the client address as the receiving server saw it
REMOTE_ADDR_CGI = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n'
HOST = "host"  # "where" for the sandbox host itself
SLEEP = ("busybox", "sleep", "3600")


def web_root(base: Path, text: str) -> Path:
    """A document root: index.html saying `text`, and /cgi-bin/ip answering with REMOTE_ADDR."""
    root = base / text
    cgi = root / "cgi-bin" / "ip"
    cgi.parent.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(text + "\n")
    cgi.write_text(REMOTE_ADDR_CGI)
    cgi.chmod(0o755)
    root.chmod(0o755)
    return root


def plain_address(remote_addr: str | None) -> str | None:
    """busybox httpd on a dual-stack socket says [::ffff:a.b.c.d]; keep a.b.c.d."""
    if remote_addr is None:
        return None
    text = remote_addr.strip().strip("[]")
    return text.removeprefix("::ffff:")


class Host:
    """One sandbox host driven through the wrapdock CLI."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._views: dict[str, dict] | None = None  # `ps -a` by name, until wrapdock changes something

    # -- wrapdock ------------------------------------------------------------------------------
    def wd(self, *args: str) -> subprocess.CompletedProcess:
        """Run wrapdock and insist that it succeeds (its output in the failure message)."""
        self._views = None
        proc = self.sandbox.wrapdock(*args, check=False)
        details = f"wrapdock {shlex.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, details
        assert "Traceback" not in proc.stderr
        return proc

    def network(self, name: str, subnet: str, *options: str) -> None:
        self.wd("--quiet", "network", "create", "--subnet", subnet, *options, name)

    def run(self, *args: str) -> None:
        """`run -d ARGS...` (detached)."""
        self.wd("--quiet", "run", "-d", *args)

    def run_all(self, *runs: tuple[str, ...]) -> None:
        """Several `run -d ARGS...` side by side, to save time. Only for containers started together
        whose /etc/hosts the test does not read before some later change rewrites it."""
        self._views = None
        procs = [self.sandbox.popen_wrapdock("--quiet", "run", "-d", *args) for args in runs]
        for args, proc in zip(runs, procs, strict=True):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"run -d {shlex.join(args)}: exit {proc.returncode}\n{out}\n{err}"

    def inspect(self, name: str) -> dict:
        return json.loads(self.wd("inspect", name).stdout)[0]

    def listing(self) -> list[dict]:
        """`ps -a --format json`."""
        return json.loads(self.wd("ps", "-a", "--format", "json").stdout)

    def view(self, name: str) -> dict:
        """A container as `ps -a --format json` shows it (one ps for all, until the next change)."""
        if self._views is None or name not in self._views:
            self._views = {v["name"]: v for v in self.listing()}
        return self._views[name]

    def address(self, name: str, network: str) -> str:
        for endpoint in self.view(name)["endpoints"]:
            if endpoint["network"] == network:
                return endpoint["address"]
        raise AssertionError(f"{name} has no address on {network}")

    def network_view(self, name: str) -> dict:
        return json.loads(self.wd("network", "inspect", name).stdout)[0]

    def exec(self, name: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """`wrapdock exec NAME ARGV...`."""
        return self.sandbox.wrapdock("exec", name, *argv, check=False, timeout=timeout)

    def inside(self, name: str, *argv: str) -> subprocess.CompletedProcess:
        """A busybox applet run in the container's namespaces and root, as `wrapdock exec` runs it but
        entered directly with nsenter (without its cgroups and capability limits): the same packets and
        the same /etc files, without starting wrapdock for each probe."""
        return self.sandbox.sh(*self._argv(name, *argv), check=False)

    def file(self, name: str, path: str) -> str:
        proc = self.inside(name, "cat", path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def hosts(self, name: str) -> dict[str, str]:
        """The container's /etc/hosts as {name: address}, read inside it."""
        table: dict[str, str] = {}
        for line in self.file(name, "/etc/hosts").splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            for host_name in words[1:]:
                table.setdefault(host_name, words[0])
        return table

    def links(self, name: str) -> list[str]:
        """Interface names as the container sees them (busybox ip inside it)."""
        proc = self.inside(name, "ip", "-o", "link", "show")
        assert proc.returncode == 0, proc.stderr
        return [line.split(":")[1].strip().split("@")[0] for line in proc.stdout.splitlines() if ":" in line]

    # -- packets ---------------------------------------------------------------------------------
    def _argv(self, where: str, *argv: str) -> list[str]:
        """A busybox applet run by the sandbox host, the outside namespace, or a container (see inside())."""
        if where == HOST:
            return [BUSYBOX, *argv]
        if where == OUTSIDE_NS:
            return ["ip", "netns", "exec", OUTSIDE_NS, BUSYBOX, *argv]
        pid = self.view(where)["state"]["pid"]
        assert pid, f"{where} is not running"
        return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", "busybox", *argv]

    def ping(self, where: str, address: str, wait: int = 3) -> bool:
        """One ICMP echo from `where` to `address`: did the reply come back?"""
        proc = self.sandbox.sh(*self._argv(where, "ping", "-c1", f"-W{wait}", address), check=False)
        return proc.returncode == 0

    def pings(self, *pairs: tuple[str, str], wait: int = 1) -> list[bool]:
        """Several pings side by side (the ones expected to time out): [(where, address), ...] -> replies?"""
        env = {**os.environ, **self.sandbox.env}
        procs = [subprocess.Popen([*self.sandbox.enter_argv(), *self._argv(where, "ping", "-c1", f"-W{wait}", address)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                 for where, address in pairs]
        return [proc.wait(timeout=60) == 0 for proc in procs]

    def fetch(self, where: str, url: str) -> str | None:
        """GET `url` from `where` with busybox wget (bounded by `timeout`: its -T crashes); None on failure."""
        proc = self.sandbox.sh(*self._argv(where, "timeout", "5", "wget", "-qO-", url), check=False, timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def remote_addr(self, where: str, url: str) -> str | None:
        """The address `where` shows up as at the server behind `url` (its /cgi-bin/ip)."""
        return plain_address(self.fetch(where, url))

    def wait_http(self, url: str, expected: str, where: str = HOST, seconds: float = 30) -> None:
        """Until the server behind `url` answers `expected` (a detached httpd needs a moment to listen)."""
        deadline = time.monotonic() + seconds
        while (got := self.fetch(where, url)) != expected:
            assert time.monotonic() < deadline, f"{url} from {where}: {got!r}, expected {expected!r}"
            time.sleep(0.1)

    def udp_listen(self, netns: str, port: int) -> subprocess.Popen:
        """A one-datagram UDP receiver in network namespace `netns`; prints 'SOURCE_IP PAYLOAD' and exits."""
        code = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.bind(('0.0.0.0', {port})); print('bound', flush=True); "
                "data, peer = s.recvfrom(512); print(peer[0], data.decode().strip(), flush=True)")
        proc = subprocess.Popen([*self.sandbox.enter_argv(), "timeout", "30", "ip", "netns", "exec", netns,
                                 sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "bound", proc.stderr
        return proc

    def udp_send_until_received(self, listener: subprocess.Popen, netns: str, address: str, port: int,
                                payload: str) -> str:
        """Send `payload` from `netns` to address:port (again every 0.2 s, UDP may be lost) until the
        listener got it; returns what the listener printed ('' if it never did)."""
        code = ("import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                ".sendto(sys.argv[1].encode(), (sys.argv[2], int(sys.argv[3])))")
        deadline = time.monotonic() + 15
        while listener.poll() is None and time.monotonic() < deadline:
            self.sandbox.sh("ip", "netns", "exec", netns, sys.executable, "-c", code, payload, address, str(port))
            time.sleep(0.2)
        if listener.poll() is None:
            listener.kill()
        out, _ = listener.communicate(timeout=10)
        return out.strip()

    def serve(self, netns: str, root: Path, port: int) -> str:
        """busybox httpd (IPv4) in a namespace that is no container (e.g. `outside`); returns its pid."""
        pid = self.sandbox.bash(
            f"ip netns exec {netns} {BUSYBOX} httpd -f -p 0.0.0.0:{port} -h {shlex.quote(str(root))} "
            ">/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
        assert pid.isdigit(), pid
        return pid

    # -- the end ---------------------------------------------------------------------------------
    def leases(self, network: str) -> list[dict]:
        return self.network_view(network)["allocations"]

    def teardown(self, start: dict, containers: list[str], networks: list[str]) -> None:
        """rm -f the containers, check the networks hold no lease, remove them, insist nothing is left."""
        if containers:
            self.wd("--quiet", "rm", "-f", *containers)
        if networks:  # no lease, no container left on them (one `network inspect` for all)
            views = json.loads(self.wd("network", "inspect", *networks).stdout)
            assert [v["name"] for v in views] == networks
            for view in views:
                assert view["allocations"] == [], view
                assert view["containers"] == [], view
            self.wd("--quiet", "network", "rm", *networks)
        assert_nothing_left(self.sandbox, start)


class WrapdockBug(Exception):
    """Raised (instead of AssertionError) where a test shows a known wrapdock bug, so that an
    `xfail(raises=WrapdockBug)` does not also hide an unrelated failure such as a leftover."""


def assert_nothing_left(sandbox: Sandbox, start: dict) -> None:
    now = sandbox.snapshot()
    left = {key: (sorted(set(now[key]) - set(start[key])), sorted(set(start[key]) - set(now[key])))
            for key in start if now[key] != start[key]}
    assert not left, f"(left over, gone) since the start: {left}"
    for folder in ("containers", "networks", "ipam", "leases"):
        assert sandbox.state_records(folder) == [], folder
    assert sandbox.cgroup_dirs() == []


def masquerade_jump(sandbox: Sandbox, subnet: str, bridge: str) -> list[str]:
    """The network's `-A WRAPDOCK-POSTROUTING -s SUBNET ! -o BRIDGE ... -j WRAPDOCK-MASQ` rule, as words."""
    for line in sandbox.sh("iptables-save", "-t", "nat").stdout.splitlines():
        words = shlex.split(line)
        if (words[:2] == ["-A", "WRAPDOCK-POSTROUTING"] and words[-2:] == ["-j", "WRAPDOCK-MASQ"]
                and f"-s {subnet} ! -o {bridge}" in line):
            return words
    raise AssertionError(f"no MASQUERADE jump for {subnet} in:\n{sandbox.sh('iptables-save', '-t', 'nat').stdout}")
