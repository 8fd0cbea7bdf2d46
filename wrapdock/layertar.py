"""A layer directory as an OCI layer tar, byte for byte the same every time: `python3 -m wrapdock.layertar DIR`.

The store keeps layers as overlayfs wants them (a whiteout is a 0/0 character device, an opaque
directory has trusted.overlay.opaque=y); an archive wants them as the image spec writes them
(`.wh.NAME`, `DIR/.wh..wh..opq`). This is the one conversion back, run as a printed command by
`image save` and `commit`; the same code hashes the stream beforehand (`diff_id`), so the config an
archive carries names the layers that the command will write.

Deterministic: names sorted, PAX headers, numeric owners only, integer mtimes, hardlinks to the
first name of an inode; xattrs: `security.capability` only.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tarfile
from collections.abc import Iterator
from typing import IO

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# what the container's init makes in its upper directory (mount points, empty /etc files): not the image's
INIT_ARTIFACTS = ("dev", "proc", "sys", ".wrapdock-oldroot", "etc/hosts", "etc/resolv.conf", "etc/hostname")


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def _capability(path: str) -> dict[str, str]:
    try:
        value = os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return {}
    return {"SCHILY.xattr.security.capability": value.decode("utf-8", "surrogateescape")}


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _skipped(rel: str, st: os.stat_result, upper: bool) -> bool:
    """In a container's upper directory: the init's mount points and empty /etc files."""
    if not upper or rel not in INIT_ARTIFACTS:
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def entries(root: str, upper: bool = False) -> Iterator[tuple[tarfile.TarInfo, str | None]]:
    """(header, file to read or None) for every entry under root, sorted, whiteouts converted."""
    links: dict[tuple[int, int], str] = {}

    def walk(directory: str, rel_dir: str) -> Iterator[tuple[tarfile.TarInfo, str | None]]:
        names = sorted(os.listdir(directory))
        if rel_dir and _opaque(directory):
            st = os.lstat(directory)
            marker = _info(f"{rel_dir}/{OPAQUE}", st, tarfile.REGTYPE)
            marker.mode = 0
            yield marker, None
        for name in names:
            path = os.path.join(directory, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(path)
            if _skipped(rel, st, upper):
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                whiteout = _info(f"{rel_dir}/{WHITEOUT}{name}" if rel_dir else f"{WHITEOUT}{name}", st,
                                 tarfile.REGTYPE)
                whiteout.mode = 0
                yield whiteout, None
                continue
            if stat.S_ISDIR(st.st_mode):
                yield _info(rel, st, tarfile.DIRTYPE), None
                yield from walk(path, rel)
            elif stat.S_ISLNK(st.st_mode):
                info = _info(rel, st, tarfile.SYMTYPE)
                info.linkname = os.readlink(path)
                yield info, None
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info = _info(rel, st, tarfile.LNKTYPE)
                    info.linkname = links[key]
                    yield info, None
                    continue
                links[key] = rel
                info = _info(rel, st, tarfile.REGTYPE)
                info.size = st.st_size
                info.pax_headers = _capability(path)
                yield info, path
            elif stat.S_ISFIFO(st.st_mode):
                yield _info(rel, st, tarfile.FIFOTYPE), None
            # sockets and device nodes other than whiteouts are not part of an image

    yield from walk(root, "")


def write(root: str, out: IO[bytes], upper: bool = False) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for info, path in entries(root, upper):
            if path is None:
                archive.addfile(info)
            else:
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)


class _Sink:
    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def digest(root: str, upper: bool = False) -> tuple[str, int]:
    """(sha256:HEX, size) of what `write` produces for root: the layer's diff_id in an archive."""
    sink = _Sink()
    write(root, sink, upper)  # type: ignore[arg-type]
    return f"sha256:{sink.sha.hexdigest()}", sink.size


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("--layer", "--upper"):
        sys.exit("usage: python3 -m wrapdock.layertar --layer|--upper DIR > LAYER.tar  (--upper: a container's "
                 "upper directory, without the init's mount points)")
    write(sys.argv[2], sys.stdout.buffer, sys.argv[1] == "--upper")
    sys.stdout.buffer.flush()
