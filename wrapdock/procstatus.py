"""Is a container running? Read from the files its init and shim wrote, never from the PID alone.

The init writes its host PID and its /proc/PID/stat line when it starts; a PID counts as the
container only while /proc/PID/stat shows the same start time, so a reused PID is never mistaken
for it. The shim writes the exit code when the process ends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wrapdock.cgroups import CgroupLayout, oom_kills
from wrapdock.containerpaths import ContainerPaths


def start_time(stat_line: str) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot); the name in (...) may hold spaces."""
    _, _, rest = stat_line.rpartition(")")
    fields = rest.split()
    return fields[19] if len(fields) > 19 else None


def _read(path: Path | str) -> str | None:
    """A small file's text (os.read: `ps` reads three per container, and the text layer is the cost)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Status:
    """A container's state as read from its status files and /proc."""

    state: str  # created | running | exited | oom-killed
    pid: int | None
    exit_code: int | None
    oom_kills: int

    def text(self) -> str:
        if self.state == "running":
            return "running"
        if self.state == "created":
            return "created"
        code = "unknown" if self.exit_code is None else str(self.exit_code)
        return f"OOM-killed ({code})" if self.state == "oom-killed" else f"exited ({code})"


def live_pid(paths: ContainerPaths) -> int | None:
    return live_pid_in(str(paths.dir))


def live_pid_in(container_dir: str) -> int | None:
    """live_pid from the directory's name as a string (`ps` asks for every container: no Paths)."""
    pid_text, stat_text = _read(f"{container_dir}/pid"), _read(f"{container_dir}/stat")
    if not pid_text or not stat_text or not pid_text.isdigit():
        return None
    now = _read(f"/proc/{pid_text}/stat")
    if now is None or start_time(now) != start_time(stat_text):
        return None
    return int(pid_text)


def status(paths: ContainerPaths, cgroups: CgroupLayout | None, container_id: str) -> Status:
    memory_dir = cgroups.memory_dir(container_id) if cgroups else None
    return status_in(str(paths.dir), str(memory_dir) if memory_dir is not None else None)


def status_in(container_dir: str, memory_dir: str | None) -> Status:
    """A container's status from its directory and its memory cgroup's, both as strings."""
    pid = live_pid_in(container_dir)
    if pid is not None:  # as with Docker, OOM-killed says how a container ended: not asked while it runs
        return Status("running", pid, None, 0)
    kills = oom_kills(memory_dir)
    code_text = _read(f"{container_dir}/exit_code")
    if code_text is None and not os.path.exists(f"{container_dir}/pid"):
        return Status("created", None, None, kills)
    code = int(code_text) if code_text and code_text.lstrip("-").isdigit() else None
    return Status("oom-killed" if kills else "exited", None, code, kills)
