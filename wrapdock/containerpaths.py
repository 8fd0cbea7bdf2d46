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
    def starting(self) -> Path:
        """Written right before a start: a start's undo waits for the init only if it is there."""
        return self.dir / "starting"

    @cached_property
    def tty_input(self) -> Path:
        """A FIFO nobody writes to: the terminal's input under -t without -i (made when needed)."""
        return self.dir / "tty-input"

    def etc_file(self, name: str) -> Path:
        """resolv.conf, hostname: kept by wrapdock, bind-mounted over the image's /etc/NAME."""
        return self.dir / name

    @cached_property
    def etc_dir(self) -> Path:
        """Holds `hosts`: a file of the container's own, or a hard link to the file its group of
        containers shares (DATA_DIR/hosts/...). A shared one reaches the container through this
        directory, bind-mounted read-only at /dev/.wrapdock: a later `network connect` links another
        file here and binds it over /etc/hosts from inside (a mount of the host's tree could not be)."""
        return self.dir / "etc"

    @cached_property
    def hosts(self) -> Path:
        return self.etc_dir / "hosts"

    def runtime_files(self) -> list[Path]:
        return [self.pidfile, self.statfile, self.ready, self.exitfile, self.starting]
