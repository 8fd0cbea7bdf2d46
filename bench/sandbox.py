"""Sandbox hosts for the bench: one per peer, never the machine's own namespaces.

A sandbox is PID 1 of fresh net + mount + PID namespaces (`unshare --net --mount --pid --fork
--mount-proc`), like tests/sandbox.py: a private tmpfs on /run (so `ip netns`, wrapdock's state,
Docker's and Podman's data and exec roots, CNI's IPAM state and every temporary file of the bench
live there and vanish with the sandbox), a fresh /sys (its own /sys/class/net) with the machine's
cgroup mounts carried over, and optional extra tmpfs mounts (/etc/docker, /var/lib) inside its mount
namespace only. Killing PID 1 ends everything inside; cgroup directories (cgroups are not namespaced
by mounts) are named after the sandbox and removed deepest first on close.

If the harness dies without cleaning up, unshare dies with it (PR_SET_PDEATHSIG) and takes PID 1
with it (--kill-child); stale cgroup directories are removed by the next run (`remove_stale_cgroups`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CGROUP_ROOT = Path("/sys/fs/cgroup")
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PREFIX = "wdbench-"

INIT = r"""
set -eu
mount --make-rprivate /
if mountpoint -q /run/netns; then umount -l /run/netns; fi
mount -t tmpfs -o mode=755 wdbench-run /run
mkdir -p /run/.wdbench-cgroup
mount --rbind /sys/fs/cgroup /run/.wdbench-cgroup
mount -t sysfs wdbench-sys /sys
mount --move /run/.wdbench-cgroup /sys/fs/cgroup
rmdir /run/.wdbench-cgroup
for dir in $WDBENCH_TMPFS; do
    mount -t tmpfs -o mode=755 wdbench-tmp "$dir"
done
for dir in $WDBENCH_MKDIR; do mkdir -p "$dir"; done
ip link set lo up
echo ready
exec sleep infinity
"""


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class AgentError(RuntimeError):
    pass


class Sandbox:
    """One sandbox host with an agent (bench/agent.py) inside that runs and measures commands."""

    def __init__(self, label: str, python: str, tmpfs: tuple[str, ...] = (), mkdir: tuple[str, ...] = ()) -> None:
        self.label = label
        self.name = f"{PREFIX}{label}-{os.getpid()}"  # also the cgroup parent of what runs inside
        self.python = python
        self.closed = False
        self.agent: subprocess.Popen | None = None
        self.daemon_pids: list[int] = []
        for directory in tmpfs:
            if not Path(directory).is_dir():
                raise RuntimeError(f"{directory} does not exist (the sandbox only mounts over existing directories)")
        env = {"PATH": CLEAN_PATH, "WDBENCH_TMPFS": " ".join(tmpfs), "WDBENCH_MKDIR": " ".join(mkdir)}
        self._unshare = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
             "--kill-child", "bash", "-c", INIT],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True, preexec_fn=_die_with_parent)
        assert self._unshare.stdout is not None
        line = self._unshare.stdout.readline().strip()
        if line != "ready":
            err = self._unshare.stderr.read() if self._unshare.stderr else ""
            self._unshare.kill()
            self._unshare.wait()
            raise RuntimeError(f"sandbox {label} did not start: {line} {err.strip()}")
        self.pid = self._find_init()
        self._start_agent()

    def _find_init(self) -> int:
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        for _ in range(500):
            text = children.read_text().split()
            if text:
                return int(text[0])
            time.sleep(0.01)
        raise RuntimeError("sandbox init not found")

    def enter_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "--"]

    def _start_agent(self) -> None:
        self.agent = subprocess.Popen(
            [*self.enter_argv(), self.python, str(BENCH_DIR / "agent.py"), str(REPO)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True,
            env={"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8"}, start_new_session=True)
        assert self.agent.stdout is not None
        hello = self.agent.stdout.readline()
        if not hello:
            raise RuntimeError(f"the agent in sandbox {self.label} did not start")

    # -- talking to the agent ------------------------------------------------------------------
    def request(self, op: str, **fields) -> dict:
        if self.agent is None or self.agent.poll() is not None:
            raise AgentError(f"the agent of sandbox {self.label} is gone")
        assert self.agent.stdin is not None and self.agent.stdout is not None
        self.agent.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.agent.stdin.flush()
        line = self.agent.stdout.readline()
        if not line:
            raise AgentError(f"the agent of sandbox {self.label} died")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise AgentError(answer["error"])
        return answer

    def run(self, argv: list[str], env: dict | None = None, check: bool = True, trace: bool = False,
            stdin: str | None = None, timeout: float = 300, keep_output: int = 4000) -> dict:
        """Run argv in the sandbox host: {rc, seconds, tasks, stdout (its last keep_output characters),
        stdout_lines, stderr[, trace]}."""
        full_env = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        answer = self.request("run", argv=argv, env=full_env, trace=trace, stdin=stdin, timeout=timeout,
                              keep_output=keep_output)
        if check and answer["rc"] != 0:
            raise AgentError(f"[{self.label}] {' '.join(argv)} failed ({answer['rc']}): "
                             f"{answer['stderr'].strip()[-800:]} {answer['stdout'].strip()[-300:]}")
        return answer

    def bash(self, script: str, env: dict | None = None, check: bool = True, timeout: float = 300) -> dict:
        return self.run(["bash", "-c", script], env=env, check=check, timeout=timeout)

    def spawn(self, argv: list[str], log: str, env: dict | None = None) -> int:
        full_env = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        pid = self.request("spawn", argv=argv, log=log, env=full_env)["pid"]
        self.daemon_pids.append(pid)
        return pid

    # -- the end ----------------------------------------------------------------------------------
    def close(self, extra_cgroups: tuple[str, ...] = ()) -> list[str]:
        """Kill everything inside, remove the cgroup directories; returns what could not be removed."""
        if self.closed:
            return []
        self.closed = True
        if self.agent is not None:
            with contextlib.suppress(Exception):
                assert self.agent.stdin is not None
                self.agent.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        try:
            self._unshare.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._unshare.kill()
            self._unshare.wait()
        for stream in (self._unshare.stdout, self._unshare.stderr):
            if stream:
                stream.close()
        if self.agent is not None:
            try:
                self.agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
            if self.agent.stdout:
                self.agent.stdout.close()
        names = (self.name, *extra_cgroups)
        left: list[str] = []
        for _ in range(100):  # killed processes leave their cgroups a moment later
            left = remove_cgroups(names)
            if not left:
                break
            time.sleep(0.05)
        return left


def cgroup_parents(name: str) -> list[Path]:
    return [p for p in [CGROUP_ROOT / name, *CGROUP_ROOT.glob(f"*/{name}")] if p.is_dir()]


def remove_cgroups(names: tuple[str, ...]) -> list[str]:
    """rmdir every directory under /sys/fs/cgroup/*/NAME, deepest first; returns those still there."""
    left = []
    for name in names:
        for parent in cgroup_parents(name):
            for directory in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()
            if parent.is_dir():
                left.append(str(parent))
    return left


def remove_stale_cgroups() -> list[str]:
    """Cgroup parents of earlier bench runs whose harness is gone (killed without cleaning up)."""
    stale = set()
    for path in [*CGROUP_ROOT.glob(f"{PREFIX}*"), *CGROUP_ROOT.glob(f"*/{PREFIX}*")]:
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.add(path.name)
    remove_cgroups(tuple(stale))
    return sorted(stale)
