"""Helpers for the container integration tests: run wrapdock in a sandbox, read what it left behind.

Everything here runs inside a sandbox host (tests/sandbox.py); nothing touches the machine's own
namespaces, mounts or /run. Cgroups are the machine's (they are not namespaced by mounts), but only
the ones under the sandbox's own parent (sandbox.cgroup_parent) are ever looked at or removed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

from tests.sandbox import Sandbox

ERROR_PREFIX = "wrapdock: error:"
DATA_DIR = "/run/wrapdock-data"
CONTAINERS_DIR = f"{DATA_DIR}/containers"
# Docker's default capability set (CapEff/CapBnd of a default container): chown, dac_override,
# fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_raw, sys_chroot, mknod,
# audit_write, setfcap.
DOCKER_DEFAULT_CAPS = "00000000a80425fb"


# -- running wrapdock ------------------------------------------------------------------------------
def details(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def wd(box: Sandbox, *args: str, code: int | None = 0, timeout: float = 60) -> subprocess.CompletedProcess:
    """`wrapdock --quiet ARGS` in the sandbox; insists on exit `code` (None: any) and no traceback."""
    proc = box.wrapdock("--quiet", *args, check=False, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, details(proc)
    assert "internal error" not in proc.stderr, details(proc)
    if code is not None:
        assert proc.returncode == code, f"wrapdock {shlex.join(args)}: {details(proc)}"
    return proc


def usage_error(box: Sandbox, *args: str, code: int = 2) -> str:
    """A refused command: exit `code`, exactly one stderr line `wrapdock: error: ...`, nothing else.

    Run with the trail on (no --quiet), so a command that ran anything would show it.
    """
    proc = box.wrapdock(*args, check=False)
    text = details(proc)
    assert proc.returncode == code, text
    assert "Traceback" not in proc.stdout + proc.stderr, text
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith(ERROR_PREFIX), text
    assert proc.stdout == "", text
    return lines[0]


def ps_all(box: Sandbox) -> list[dict]:
    return json.loads(wd(box, "ps", "-a", "--format", "json").stdout)


def inspect(box: Sandbox, ref: str) -> dict:
    (data,) = json.loads(wd(box, "inspect", ref).stdout)
    return data


def wait_for(predicate, seconds: float = 30.0, step: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(step)


# -- what the sandbox host holds ---------------------------------------------------------------------
def container_dirs(box: Sandbox) -> list[str]:
    out = box.bash(f"ls -A {CONTAINERS_DIR} 2>/dev/null || true").stdout
    return sorted(out.split())


def netns_list(box: Sandbox) -> list[str]:
    return sorted(line.split()[0] for line in box.sh("ip", "netns", "list").stdout.splitlines() if line.strip())


def mountinfo(box: Sandbox) -> list[list[str]]:
    """The sandbox host's mount table (its own mount namespace), one split line per mount."""
    return [line.split() for line in box.sh("cat", "/proc/self/mountinfo").stdout.splitlines()]


def fstype(fields: list[str]) -> str:
    return fields[fields.index("-") + 1]


def leftover_mounts(box: Sandbox) -> list[str]:
    """Overlays and network-namespace bind mounts in the sandbox host: none may outlive a container."""
    return [" ".join(f) for f in mountinfo(box) if fstype(f) in ("overlay", "nsfs") or "wrapdock-" in " ".join(f)]


def processes(box: Sandbox) -> list[str]:
    """'PID cmdline' of every process in the sandbox except its init and this probe."""
    out = box.bash(
        'for d in /proc/[0-9]*; do p=${d#/proc/}; { [ "$p" = 1 ] || [ "$p" = $$ ]; } && continue; '
        'c=$(tr "\\0" " " < "$d/cmdline" 2>/dev/null) || continue; [ -n "$c" ] && echo "$p $c"; done; true'
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def assert_clean(box: Sandbox, extra_cgroup_boxes: tuple[Sandbox, ...] = ()) -> None:
    """Nothing of any container is left: directory, netns, cgroup, record, mount or process."""
    # processes of a killed container (the shim, a -d --rm watcher) leave a moment after it
    wait_for(lambda: not processes(box), seconds=30, what=f"no container processes: {processes(box)}")
    assert container_dirs(box) == []
    assert netns_list(box) == []
    assert box.cgroup_dirs() == []
    for other in extra_cgroup_boxes:
        assert other.cgroup_dirs() == []
    assert box.state_records("containers") == []
    assert leftover_mounts(box) == []


def remove_cgroup_dirs(dirs: list[Path], seconds: float = 30.0) -> None:
    """rmdir cgroup directories deepest first, retrying while their last processes leave."""
    pending = sorted(dirs, key=lambda p: -len(p.parts))
    deadline = time.monotonic() + seconds
    while pending:
        for directory in list(pending):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            pending.remove(directory)
        if pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"cgroups still busy: {pending}")
            time.sleep(0.05)


# -- inside a container ---------------------------------------------------------------------------------
def mount_points(mountinfo_text: str) -> dict[str, tuple[str, str, str]]:
    """mount point -> (fstype, source, root within the source) from a container's /proc/self/mountinfo."""
    points = {}
    for line in mountinfo_text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        points[fields[4]] = (fields[sep + 1], fields[sep + 2], fields[3])
    return points


def link_kind_args(box: Sandbox) -> list[str]:
    """`ip link add` arguments for a link that needs CAP_NET_ADMIN: a dummy when this kernel has the
    dummy driver, else a veth pair (some kernels are built without dummy)."""
    probe = box.bash("ip link add wdprobe0 type dummy 2>/dev/null && ip link del wdprobe0", check=False)
    if probe.returncode == 0:
        return ["d0", "type", "dummy"]
    return ["d0", "type", "veth", "peer", "name", "d1"]
