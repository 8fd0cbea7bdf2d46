"""Which cgroup hierarchy this host has, and where a container's cgroups live in it.

cgroup v1 (this project's CI machines: one hierarchy per controller under /sys/fs/cgroup/<controller>)
and v2 (one unified hierarchy with memory.max, cpu.max, pids.max). Python only reads the layout;
the directories and limit files are made and written by plan steps (plans/cgroups.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from wrapdock.errors import EnvironmentProblem

CGROUP_ROOT = Path(os.environ.get("WRAPDOCK_CGROUP_ROOT", "/sys/fs/cgroup"))
V1_CONTROLLERS = ("memory", "cpu", "cpuset", "pids")


@dataclass(frozen=True)
class CgroupLayout:
    """How this host's cgroups are laid out (v1 or v2, where, which controllers): read once per command."""

    version: int  # 1 or 2
    root: Path
    parent: str  # wrapdock's own cgroup, e.g. "wrapdock"
    controllers: tuple[str, ...]  # v1: the mounted controllers we use; v2: those enabled at the root
    swap_accounting: bool = False  # v1: memory.memsw.* exists, so memory+swap can be limited too

    def dirs(self, container_id: str) -> dict[str, Path]:
        """controller -> the container's directory (v2: one directory, keyed "unified")."""
        if self.version == 2:
            return {"unified": self.root / self.parent / container_id}
        return {c: self.root / c / self.parent / container_id for c in self.controllers}

    def parent_dirs(self) -> dict[str, Path]:
        if self.version == 2:
            return {"unified": self.root / self.parent}
        return {c: self.root / c / self.parent for c in self.controllers}

    def memory_dir(self, container_id: str) -> Path | None:
        dirs = self.dirs(container_id)
        return dirs.get("unified") or dirs.get("memory")


def detect(parent: str | None = None) -> CgroupLayout:
    parent = parent or os.environ.get("WRAPDOCK_CGROUP_PARENT", "wrapdock")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", parent):
        raise EnvironmentProblem(f"invalid WRAPDOCK_CGROUP_PARENT {parent!r}: use letters, digits, '_', '.', '-'")
    unified = CGROUP_ROOT / "cgroup.controllers"
    if unified.is_file():
        available = tuple(unified.read_text().split())
        return CgroupLayout(2, CGROUP_ROOT, parent, available)
    mounted = tuple(c for c in V1_CONTROLLERS if (CGROUP_ROOT / c / "cgroup.procs").is_file())
    if not mounted:
        raise EnvironmentProblem(f"no cgroup hierarchy found under {CGROUP_ROOT} (is cgroupfs mounted?)")
    swap = (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").is_file()
    return CgroupLayout(1, CGROUP_ROOT, parent, mounted, swap)


def oom_kills(memory_dir: Path | str | None) -> int:
    """How many processes the kernel OOM-killed in this cgroup (v1 memory.oom_control, v2 memory.events)."""
    if memory_dir is None:
        return 0
    for name in ("memory.events", "memory.oom_control"):
        try:  # os.open, not Path.read_text: `ps` asks for every stopped container
            fd = os.open(f"{memory_dir}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            text = os.read(fd, 65536).decode(errors="replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0
