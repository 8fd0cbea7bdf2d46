"""Read a file of an image as a container will see it, from its layer directories, without mounting.

Python decides with it (is the command there? who is user `app` in the image's /etc/passwd?): the
layers are searched top-down as overlayfs does (a 0/0 character device hides what is below, an opaque
directory hides the lower directories' entries), and symlinks resolve inside the image, never on the host.
"""

from __future__ import annotations

import os
import stat


class ImageTree:
    def __init__(self, lowerdirs: list[str]) -> None:
        self.layers = list(lowerdirs)  # topmost first

    def _entry(self, dirs: list[str], name: str) -> tuple[str | None, list[str]]:
        """(the topmost path of `name` under these merged directories, the directories it merges)."""
        found: str | None = None
        merged: list[str] = []
        for directory in dirs:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                break  # a whiteout: nothing below counts
            if found is None:
                found = path
            if not stat.S_ISDIR(info.st_mode):
                break
            if found != path and not stat.S_ISDIR(os.lstat(found).st_mode):
                break
            merged.append(path)
            if _opaque(path):
                break
        return found, merged

    def resolve(self, path: str, follow_last: bool = True) -> str | None:
        """The host path of the topmost file behind the container path `path`, or None."""
        parts = [p for p in path.split("/") if p]
        dirs = list(self.layers)
        where: list[str] = []  # the container path resolved so far
        hops = 0
        found: str | None = self.layers[0] if self.layers else None
        while parts:
            name = parts.pop(0)
            if name == ".":
                continue
            if name == "..":
                where = where[:-1]
                dirs, found = self._dirs_of(where)
                continue
            found, merged = self._entry(dirs, name)
            if found is None:
                return None
            if os.path.islink(found) and (parts or follow_last):
                hops += 1
                if hops > 40:
                    return None
                target = os.readlink(found)
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    where = []
                dirs, _ = self._dirs_of(where)
                continue
            where.append(name)
            if parts and not merged:
                return None  # a file used as a directory
            dirs = merged
        return found

    def _dirs_of(self, where: list[str]) -> tuple[list[str], str | None]:
        dirs = list(self.layers)
        found = self.layers[0] if self.layers else None
        for name in where:
            found, dirs = self._entry(dirs, name)
        return dirs, found

    def exists(self, path: str) -> bool:
        return self.resolve(path, follow_last=False) is not None

    def read_text(self, path: str) -> str | None:
        host = self.resolve(path)
        if host is None or not os.path.isfile(host):
            return None
        try:
            with open(host, encoding="utf-8", errors="replace") as handle:
                return handle.read(1 << 20)
        except OSError:
            return None


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
