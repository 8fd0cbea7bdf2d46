"""Steps that make a container's cgroups and write its limits (v1 and v2), and remove them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from wrapdock.cgroups import CgroupLayout
from wrapdock.plan import Step, cmd

CPU_PERIOD_US = 100_000


def _q(word: object) -> str:
    return shlex.quote(str(word))


@dataclass(frozen=True)
class Limits:
    """A container's resource limits (-m, --cpus, ...) in the units the cgroup files take."""

    memory: int | None = None  # bytes
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids: int | None = None



def _v1_writes(layout: CgroupLayout, container_id: str, limits: Limits) -> list[tuple[str, str]]:
    dirs = layout.dirs(container_id)
    writes: list[tuple[str, str]] = []
    if limits.memory is not None and "memory" in dirs:
        writes.append((f"{dirs['memory']}/memory.limit_in_bytes", str(limits.memory)))
        if layout.swap_accounting:  # no swapping around the limit: over it means OOM, as with Docker
            writes.append((f"{dirs['memory']}/memory.memsw.limit_in_bytes", str(limits.memory)))
        else:
            writes.append((f"{dirs['memory']}/memory.swappiness", "0"))
    if "cpu" in dirs:
        if limits.cpus is not None:
            writes.append((f"{dirs['cpu']}/cpu.cfs_period_us", str(CPU_PERIOD_US)))
            writes.append((f"{dirs['cpu']}/cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US))))
        if limits.cpu_shares is not None:
            writes.append((f"{dirs['cpu']}/cpu.shares", str(limits.cpu_shares)))
    if "cpuset" in dirs and limits.cpuset_cpus is not None:
        writes.append((f"{dirs['cpuset']}/cpuset.cpus", limits.cpuset_cpus))
    if limits.pids is not None and "pids" in dirs:
        writes.append((f"{dirs['pids']}/pids.max", "max" if limits.pids < 0 else str(limits.pids)))
    return writes


def _v2_writes(layout: CgroupLayout, container_id: str, limits: Limits) -> list[tuple[str, str]]:
    d = layout.dirs(container_id)["unified"]
    writes: list[tuple[str, str]] = []
    if limits.memory is not None:
        writes.append((f"{d}/memory.max", str(limits.memory)))
        writes.append((f"{d}/memory.swap.max", "0"))
    if limits.cpus is not None:
        writes.append((f"{d}/cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}"))
    if limits.cpu_shares is not None:  # Docker's conversion of shares (2..262144) to weight (1..10000)
        writes.append((f"{d}/cpu.weight", str(1 + ((limits.cpu_shares - 2) * 9999) // 262142)))
    if limits.cpuset_cpus is not None:
        writes.append((f"{d}/cpuset.cpus", limits.cpuset_cpus))
    if limits.pids is not None:
        writes.append((f"{d}/pids.max", "max" if limits.pids < 0 else str(limits.pids)))
    return writes


def create(layout: CgroupLayout, container_id: str, limits: Limits) -> list[Step]:
    """One `sh -s`: mkdir the container's cgroups and write its limits (undo: rmdir them)."""
    note = f"cgroup v{layout.version}: the container's cgroups and limits"
    lines = ["set -e"]
    if layout.version == 2:
        parent = layout.parent_dirs()["unified"]
        enable = " ".join(f"+{c}" for c in ("memory", "pids", "cpu", "cpuset") if c in layout.controllers)
        lines += [f"mkdir -p {_q(parent)}", f"echo '{enable}' > {_q(layout.root / 'cgroup.subtree_control')}",
                  f"echo '{enable}' > {_q(parent / 'cgroup.subtree_control')}"]
    parents = layout.parent_dirs()
    wanted = {c: path for c, path in layout.dirs(container_id).items() if c in needed(limits)}
    lines.append("mkdir -p " + " ".join(_q(path) for path in wanted.values()))  # one process for all
    if "cpuset" in wanted:  # a v1 cpuset holds no process until its cpus and mems are set
        root = layout.root / "cpuset"
        for directory in (parents["cpuset"], wanted["cpuset"]):
            lines += [f"cat {_q(root / name)} > {_q(directory / name)}" for name in ("cpuset.cpus", "cpuset.mems")]
    writes = _v2_writes(layout, container_id, limits) if layout.version == 2 else _v1_writes(
        layout, container_id, limits)
    lines += [f"echo {_q(value)} > {_q(path)}" for path, value in writes]
    return [cmd("sh", "-s", note=note, stdin=lines, partial=True,
                undo=remove(layout, container_id)[0])]


def remove(layout: CgroupLayout, container_id: str) -> list[Step]:
    """One `sh -s`: rmdir the container's cgroups; what is gone already is skipped."""
    lines = [f"[ ! -d {_q(path)} ] || rmdir {_q(path)}" for path in layout.dirs(container_id).values()]
    return [cmd("sh", "-s", note="remove the container's cgroups", stdin=["set -e", *lines])]


def needed(limits: Limits) -> set[str]:
    """The v1 controllers a container gets a cgroup in: memory and pids always (OOM status, a place
    for exec'd processes), cpu and cpuset only when limited (each costs processes to set up)."""
    wanted = {"unified", "memory", "pids"}
    if limits.cpus is not None or limits.cpu_shares is not None:
        wanted.add("cpu")
    if limits.cpuset_cpus is not None:
        wanted.add("cpuset")
    return wanted


def join_commands(layout: CgroupLayout, container_id: str, who: str = "$$") -> list[str]:
    """Shell lines that move a process into the container's cgroups (nsenter does not do it)."""
    return [f"[ ! -d {_q(path)} ] || echo {who} > {_q(path / 'cgroup.procs')}"
            for path in layout.dirs(container_id).values()]
