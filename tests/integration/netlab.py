"""Helpers for the network integration tests: endpoints attached to bridges, real packets, checks.

Everything here runs inside a sandbox host (tests/sandbox.py). An "endpoint" is a network namespace
created in the sandbox and plugged into a bridge with a veth pair, like a container without an image.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

from tests.sandbox import Sandbox

ERROR_PREFIX = "wrapdock: error:"
BUSYBOX = "/usr/bin/busybox"

# A CGI script for busybox httpd: answers with the address the request came from, as the server saw it.
REMOTE_ADDR_CGI = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n'


# -- what wrapdock printed ---------------------------------------------------------------------
def error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """Assert a failure: exit `code`, no traceback, one `wrapdock: error:` line, last; the rest is trail."""
    details = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, details
    assert "Traceback" not in proc.stderr + proc.stdout, details
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, details
    assert lines[-1] == errors[0], details
    for line in lines[:-1]:
        assert line.startswith(("# ", "+ ", "  ")), f"not a trail line: {line!r}\n{details}"
    return errors[0]


def json_trail(stderr: str) -> list[dict]:
    """The records of a `--trail json` run (every stderr line is one JSON object)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def changing_commands(stderr: str) -> list[list[str]]:
    """argv of the commands that changed the host (phase "do"), in order, from a `--trail json` run."""
    return [record["argv"] for record in json_trail(stderr) if record["phase"] == "do"]


def live(sandbox: Sandbox, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run wrapdock in the sandbox and insist that it succeeds, with its output in the failure message."""
    proc = sandbox.wrapdock(*args, check=False, env=env)
    assert proc.returncode == 0, f"wrapdock {shlex.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def finish(procs: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    """Wait for processes started with sandbox.popen_wrapdock; their results, in order."""
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


# -- the sandbox host beyond snapshot() --------------------------------------------------------
def ip_forward(sandbox: Sandbox) -> str:
    return sandbox.sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


def state_files(sandbox: Sandbox) -> dict[str, str]:
    """Every network and ipam record, by path, with its exact text (for "left alone" checks)."""
    out = sandbox.bash(
        'cd /run/wrapdock 2>/dev/null || exit 0\n'
        'for f in networks/* ipam/*; do [ -f "$f" ] && printf "%s\\0%s\\0" "$f" "$(base64 -w0 "$f")"; done\n'
        'true'
    ).stdout
    parts = out.split("\0")
    return dict(zip(parts[0:-1:2], parts[1::2], strict=True))


def exists(sandbox: Sandbox, path: str) -> bool:
    return sandbox.sh("test", "-e", path, check=False).returncode == 0


def link(sandbox: Sandbox, name: str) -> dict | None:
    proc = sandbox.sh("ip", "-j", "-d", "link", "show", "dev", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def bridges(sandbox: Sandbox) -> set[str]:
    return {entry["ifname"] for entry in json.loads(sandbox.sh("ip", "-j", "link", "show", "type", "bridge").stdout)}


def bridge_nf_call_iptables(sandbox: Sandbox) -> bool:
    """Whether bridged (same-bridge) IPv4 traffic goes through iptables in this sandbox."""
    proc = sandbox.sh("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables", check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "1"


# -- endpoints: namespaces on a bridge ---------------------------------------------------------
class Lab:
    """Namespaces plugged into bridges in one sandbox, and the servers started in them.

    `close()` removes all of it (veth first, so the host side is gone at once), so that the test can
    then compare the sandbox with its starting snapshot.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.namespaces: list[str] = []
        self.veths: list[str] = []
        self.pids: list[str] = []

    def attach(self, ns: str, bridge: str, address: str, gateway: str | None = None) -> str:
        """A namespace `ns` with eth0 = `address` (CIDR) plugged into `bridge`; returns the bare address."""
        veth = f"v-{ns}"
        assert len(veth) <= 15
        self.namespaces.append(ns)
        self.veths.append(veth)
        route = f"ip -n {ns} route add default via {gateway}" if gateway else ""
        self.sandbox.bash(f"""
            set -e
            ip netns add {ns}
            ip -n {ns} link set lo up
            ip link add {veth} type veth peer name eth0 netns {ns}
            ip link set {veth} master {bridge} up
            ip -n {ns} addr add {address} dev eth0
            ip -n {ns} link set eth0 up
            {route}
        """)
        return address.split("/")[0]

    def run(self, ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.sandbox.sh("ip", "netns", "exec", ns, *argv, check=False, timeout=timeout)

    def ping(self, ns: str, address: str, wait: int = 2) -> bool:
        """One real ICMP echo from `ns` to `address`: did the reply come back?"""
        return self.run(ns, BUSYBOX, "ping", "-c1", f"-W{wait}", address).returncode == 0

    def pings(self, *pairs: tuple[str, str], wait: int = 2) -> list[bool]:
        """Several pings at once (e.g. the ones expected to time out): [(ns, address), ...] -> replies?"""
        procs = [subprocess.Popen([*self.sandbox.enter_argv(), "ip", "netns", "exec", ns, BUSYBOX, "ping", "-c1",
                                   f"-W{wait}", address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for ns, address in pairs]
        return [proc.wait(timeout=30) == 0 for proc in procs]

    def serve_remote_addr(self, ns: str, root: Path, port: int = 8000) -> None:
        """busybox httpd in `ns` whose /cgi-bin/ip answers with the client address it saw.

        It listens on IPv4 only, so that REMOTE_ADDR is a plain IPv4 address (not [::ffff:a.b.c.d]).
        """
        cgi = root / "cgi-bin" / "ip"
        cgi.parent.mkdir(parents=True, exist_ok=True)
        cgi.write_text(REMOTE_ADDR_CGI)
        cgi.chmod(0o755)
        pid = self.sandbox.bash(
            f"ip netns exec {ns} {BUSYBOX} httpd -f -p 0.0.0.0:{port} -h {shlex.quote(str(root))} "
            f">/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
        assert pid.isdigit(), pid
        self.pids.append(pid)
        deadline = time.monotonic() + 30
        # ready when it answers locally (which also proves the CGI works)
        while self.fetch(ns, f"http://127.0.0.1:{port}/cgi-bin/ip") != "127.0.0.1":
            assert time.monotonic() < deadline, f"httpd in {ns} does not answer"
            time.sleep(0.05)

    def fetch(self, ns: str, url: str) -> str | None:
        """GET `url` from `ns` (busybox wget; `timeout` instead of its -T); None if it failed."""
        proc = self.run(ns, "timeout", "5", BUSYBOX, "wget", "-qO-", url)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def close(self) -> None:
        for pid in self.pids:
            self.sandbox.sh("kill", pid, check=False)
        for veth in self.veths:
            self.sandbox.sh("ip", "link", "del", "dev", veth, check=False)
        for ns in self.namespaces:
            self.sandbox.sh("ip", "netns", "del", ns, check=False)
        self.pids, self.veths, self.namespaces = [], [], []
