"""Where a container's files live: DATA_DIR/containers/ID and the files in it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class ContainerPaths:
    """Where a container's files live under its directory (layer, work dir, mount point, status files)."""

    dir: Path

    @cached_property
    def upper(self) -> Path:
        return self.dir / "upper"

    @cached_property
    def work(self) -> Path:
        return self.dir / "work"

    @cached_property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @cached_property
    def init(self) -> Path:
        return self.dir / "init.sh"

    @cached_property
    def log(self) -> Path:
        return self.dir / "container.log"

    @cached_property
    def pidfile(self) -> Path:
        return self.dir / "pid"

    @cached_property
    def statfile(self) -> Path:
        return self.dir / "stat"

    @cached_property
    def ready(self) -> Path:
        return self.dir / "ready"

    @cached_property
    def exitfile(self) -> Path:
        return self.dir / "exit_code"

    @cached_property
    def tty_input(self) -> Path:
        """A FIFO nobody writes to: the terminal's input under -t without -i (made when needed)."""
        return self.dir / "tty-input"

    def etc_file(self, name: str) -> Path:
        """hosts, resolv.conf, hostname: kept by wrapdock, bind-mounted over the image's /etc/NAME."""
        return self.dir / name

    def runtime_files(self) -> list[Path]:
        return [self.pidfile, self.statfile, self.ready, self.exitfile]
