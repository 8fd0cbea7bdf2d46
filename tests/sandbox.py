"""Throwaway "sandbox hosts" for integration tests.

A sandbox is a process that is PID 1 of fresh net + mount + pid + uts + ipc namespaces, with its own /run (so
`ip netns` and /run/wrapdock are private), its own /sys (so /sys/class/net shows its links), its own
iptables and bridges. Tests drive the real CLI inside it with nsenter. The machine's root network
namespace, iptables and mounts are never touched; killing PID 1 ends everything inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

INIT = Path(__file__).with_name("sandbox_init.sh")
OUTSIDE_NS = "outside"
OUTSIDE_IP = "203.0.113.1"
UPLINK_IP = "203.0.113.2"


def wrapdock_argv() -> list[str]:
    """The installed console script next to this interpreter, else `python -m wrapdock`."""
    script = Path(sys.executable).with_name("wrapdock")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wrapdock"]


def start_host(init: list[str], what: str) -> tuple[subprocess.Popen, int]:
    """`init` (a script that prints "ready" once set up) as PID 1 of fresh net, mount, pid, uts and ipc
    namespaces; the unshare process and the PID of that init. Shared by sandbox hosts and VM hosts."""
    unshare = subprocess.Popen(
        ["unshare", "--net", "--mount", "--pid", "--uts", "--ipc", "--fork", "--mount-proc",
         "--propagation", "private", *init],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = unshare.stdout.readline().strip() if unshare.stdout else ""
    if line != "ready":
        unshare.kill()
        err = unshare.stderr.read() if unshare.stderr else ""
        unshare.wait()
        raise RuntimeError(f"{what} did not start: {line} {err}")
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = children.read_text().split()
        if text:
            return unshare, int(text[0])
        time.sleep(0.01)
    unshare.kill()
    unshare.wait()
    raise RuntimeError(f"{what}: its init was not found")


def end_host(unshare: subprocess.Popen, pid: int, seconds: float) -> None:
    """Kill the host's PID 1 (every process inside dies with it) and wait for its unshare."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    try:
        unshare.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        unshare.kill()
        unshare.wait()
    for stream in (unshare.stdout, unshare.stderr):
        if stream:
            stream.close()


class Sandbox:
    def __init__(self) -> None:
        self._unshare, self.pid = start_host(["bash", str(INIT)], "sandbox")
        self.closed = False
        # containers' layers live in the sandbox's private /run; their cgroups (the machine's
        # hierarchy: cgroups are not namespaced by mounts) under a parent named after this sandbox
        self.cgroup_parent = f"wdtest-{self.pid}"
        self.env = {"WRAPDOCK_DATA_DIR": "/run/wrapdock-data", "WRAPDOCK_CGROUP_PARENT": self.cgroup_parent}

    # -- running things inside ---------------------------------------------------------------
    def enter_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "--"]

    def sh(self, *argv: str, check: bool = True, input: str | None = None, env: dict | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command in the sandbox host; returns the completed process (text)."""
        full_env = {**os.environ, **self.env, **(env or {})}
        proc = subprocess.run([*self.enter_argv(), *argv], capture_output=True, text=True, input=input,
                              env=full_env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def wrapdock(self, *args: str, check: bool = True, env: dict | None = None, input: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the real wrapdock CLI inside the sandbox host."""
        return self.sh(*wrapdock_argv(), *args, check=check, env=env, input=input, timeout=timeout)

    def popen_wrapdock(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([*self.enter_argv(), *wrapdock_argv(), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **self.env, **(env or {})})

    def bash(self, script: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.sh("bash", "-c", script, check=check, timeout=timeout)

    # -- a simulated outside world -----------------------------------------------------------
    def add_outside(self) -> None:
        """A namespace `outside` holding 203.0.113.1/24, reached through the uplink 203.0.113.2.

        It has no route back to container subnets, like a real upstream router.
        """
        self.bash(f"""
            ip netns add {OUTSIDE_NS}
            ip link add uplink type veth peer name wan0 netns {OUTSIDE_NS}
            ip addr add {UPLINK_IP}/24 dev uplink
            ip link set uplink up
            ip -n {OUTSIDE_NS} link set lo up
            ip -n {OUTSIDE_NS} addr add {OUTSIDE_IP}/24 dev wan0
            ip -n {OUTSIDE_NS} link set wan0 up
            ip route add default via {OUTSIDE_IP}
        """)
        # the kernel marks a link running (no NO-CARRIER in `ip link`) through linkwatch, up to a second
        # later: a snapshot taken before that differs from every later one
        deadline = time.monotonic() + 10
        while self.sh("cat", "/sys/class/net/uplink/operstate").stdout.strip() != "up":
            if time.monotonic() > deadline:
                raise AssertionError("the sandbox's uplink is not up after 10 s")
            time.sleep(0.02)

    # -- what the host looks like ------------------------------------------------------------
    def snapshot(self) -> dict:
        """Links, addresses, routes, netns and iptables rules, comparable before/after."""
        def ip_json(*args: str) -> list:
            return json.loads(self.sh("ip", "-j", *args).stdout or "[]")

        links = sorted(
            (link["ifname"], link.get("master", ""), tuple(link.get("flags", [])), link.get("mtu"))
            for link in ip_json("link", "show"))
        addrs = sorted(
            (link["ifname"], a["local"], a["prefixlen"])
            for link in ip_json("addr", "show") for a in link.get("addr_info", []) if a.get("family") == "inet")
        routes = sorted(json.dumps(route, sort_keys=True) for route in ip_json("-4", "route", "show", "table", "all"))
        rules = []
        table = ""
        for line in self.sh("iptables-save").stdout.splitlines():
            line = re.sub(r" ?\[\d+:\d+\]", "", line).strip()
            if line.startswith("*"):
                table = line
            # an empty table and a built-in chain with the default policy are "nothing"
            elif line.startswith("-") or (line.startswith(":") and not line.endswith(" ACCEPT")):
                rules.append(f"{table} {line}")
        netns = sorted(self.sh("ip", "netns", "list").stdout.split())
        return {"links": links, "addrs": addrs, "routes": routes, "iptables": rules, "netns": netns}

    def state_records(self, folder: str = "networks") -> list[str]:
        out = self.sh("bash", "-c", f"ls /run/wrapdock/{folder} 2>/dev/null || true").stdout
        return sorted(out.split())

    def cgroup_dirs(self) -> list[Path]:
        """The cgroup directories wrapdock made for this sandbox's containers (should be none at the end)."""
        root = Path("/sys/fs/cgroup")
        found = []
        for parent in [root / self.cgroup_parent, *root.glob(f"*/{self.cgroup_parent}")]:
            if parent.is_dir():
                found.extend(sorted(p for p in parent.rglob("*") if p.is_dir()))
        return found

    def _remove_cgroups(self) -> None:
        root = Path("/sys/fs/cgroup")
        for parent in [root / self.cgroup_parent, *root.glob(f"*/{self.cgroup_parent}")]:
            if not parent.is_dir():
                continue
            for directory in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()

    # -- the end --------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        end_host(self._unshare, self.pid, 10)
        deadline = time.monotonic() + 30  # the killed processes leave their cgroups a moment later
        while time.monotonic() < deadline:
            self._remove_cgroups()
            if not self.cgroup_dirs() and not any(Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}")):
                break
            time.sleep(0.05)


def can_sandbox() -> str | None:
    """Why sandboxes cannot run here, or None."""
    if os.geteuid() != 0:
        return "integration tests need root"
    for tool in ("unshare", "nsenter", "ip", "iptables", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None
