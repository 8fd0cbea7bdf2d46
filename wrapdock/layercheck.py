"""Decide whether a layer may be unpacked, before anything is written: every member is read here.

Python only reads the tar headers (and hashes the stream, for the diff_id); GNU tar unpacks later,
each layer into an empty directory of its own. A layer is refused, with the member named, for:
an absolute name, a `..`, a member written through a symlink (of this layer or of a lower one), a
hardlink to anything but a regular file earlier in the same layer, a device node, an xattr in
`trusted.*` or `security.*` other than `security.capability`, a whiteout of '', '.' or '..'.

What the unpacker must do besides tar comes out of the same pass: which whiteouts become 0/0
character devices, which directories get `trusted.overlay.opaque=y`, and which directories the layer
implies without an entry (they take mode, owner and mtime from the layer below, else /tmp 1777
would turn 0755 in the merged view).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

from wrapdock.errors import UsageError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
ALLOWED_SECURITY_XATTRS = ("security.capability",)


class UnsafeLayer(UsageError):
    """A layer that is refused; the message names the member."""


@dataclass(frozen=True)
class Node:
    """What one path is: its type and the attributes an implied directory copies."""

    kind: str  # dir, file, symlink, fifo
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = 0


DEFAULT_DIR = Node("dir")
View = dict[str, Node]  # a merged view: path (no leading '/', no './') -> what it is


@dataclass
class LayerIndex:
    """A layer's own content: its nodes (implied directories included), whiteouts and opaque dirs."""

    nodes: dict[str, Node] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)  # paths to turn into 0/0 character devices
    opaque: list[str] = field(default_factory=list)  # directories to mark trusted.overlay.opaque=y
    implied: dict[str, Node] = field(default_factory=dict)  # dirs without entry, with their lower attributes


@dataclass
class CheckedLayer:
    """A layer whose every member passed the checks, with the digests that name it."""

    diff_id: str  # sha256:HEX of the uncompressed stream
    size: int  # bytes of the uncompressed stream
    compression: str  # "", "gzip" or "zstd" (sniffed, never trusted from a media type)
    blob_digest: str  # sha256:HEX of the blob as stored
    blob_size: int
    index: LayerIndex


# -- reading a blob -------------------------------------------------------------------------------------
class _Hashing:
    """A read-only stream that hashes and counts what passes through it."""

    def __init__(self, raw: IO[bytes], hashing: bool = True) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.hashing = hashing  # False: only counts (the bytes are hashed elsewhere already)
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.hashing:
            self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return ""


class _Peeked:
    """A stream whose first bytes were read already to sniff the compression."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.raw.read(n)


class _Zstd:
    """`zstd -dc` as a stream: Python 3.11 has no zstd module. A thread feeds it the blob."""

    def __init__(self, source: IO[bytes]) -> None:
        import subprocess
        import threading

        try:
            self.proc = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except FileNotFoundError:
            from wrapdock.errors import EnvironmentProblem

            raise EnvironmentProblem("a zstd layer needs the zstd command (Debian: apt-get install zstd)") from None

        def feed() -> None:
            try:
                while chunk := source.read(1 << 20):
                    self.proc.stdin.write(chunk)
            except (BrokenPipeError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()

        self.feeder = threading.Thread(target=feed, daemon=True)
        self.feeder.start()

    def read(self, n: int = -1) -> bytes:
        return self.proc.stdout.read(n)

    def close(self) -> str:
        self.proc.stdout.read()
        self.feeder.join()
        self.proc.wait()
        return self.proc.stderr.read().decode(errors="replace").strip() if self.proc.returncode else ""


# -- names --------------------------------------------------------------------------------------------
def normalize_member(name: str, what: str = "member") -> str:
    """`./etc/passwd` -> `etc/passwd`; `.`/`./` -> ''; refuse absolute names and `..`."""
    if name.startswith("/"):
        raise UnsafeLayer(f"{what} {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"{what} {name!r} holds '..'")
    if any(ch in name for ch in "\0"):
        raise UnsafeLayer(f"{what} {name!r} holds a NUL byte")
    return "/".join(parts)


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _xattr_names(member: tarfile.TarInfo) -> Iterable[str]:
    for key in member.pax_headers:
        if key.startswith("SCHILY.xattr."):
            yield key[len("SCHILY.xattr."):]
        elif key.startswith("LIBARCHIVE.xattr."):
            encoded = key[len("LIBARCHIVE.xattr."):]
            from urllib.parse import unquote

            try:
                yield unquote(base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode(errors="replace"))
            except ValueError:
                yield encoded


def _node(member: tarfile.TarInfo, kind: str) -> Node:
    return Node(kind, stat.S_IMODE(member.mode), member.uid, member.gid, int(member.mtime))


# -- the check ---------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, lower: View) -> None:
        self.lower = lower
        self.index = LayerIndex()
        self.whited: set[str] = set()

    def _parents(self, path: str, member: str) -> None:
        """Every ancestor must be a directory of this layer, or implied: then not a symlink below."""
        nodes = self.index.nodes
        for ancestor in _ancestors(path):
            node = nodes.get(ancestor)
            if node is not None:
                if node.kind != "dir":
                    raise UnsafeLayer(f"member {member!r} is written through {ancestor!r}, a {node.kind} of this "
                                      "layer")
                continue
            below = None if self._hidden(ancestor) else self.lower.get(ancestor)
            if below is not None and below.kind == "symlink":
                raise UnsafeLayer(f"member {member!r} is written through the symlink {ancestor!r} of a lower layer")
            implied = below if below is not None and below.kind == "dir" else DEFAULT_DIR
            nodes[ancestor] = implied
            self.index.implied[ancestor] = implied

    def _hidden(self, path: str) -> bool:
        """Whether this layer's whiteouts hide the lower layers' `path` (then its parent dir is new)."""
        return any(w == path or path.startswith(w + "/") for w in self.whited)

    def add(self, member: tarfile.TarInfo) -> None:
        path = normalize_member(member.name)
        base = path.rpartition("/")[2]
        if base.startswith(WHITEOUT):
            self._whiteout(path, member.name)
            return
        if any(part.startswith(WHITEOUT) for part in path.split("/")[:-1]):
            raise UnsafeLayer(f"member {member.name!r} lies below a whiteout name")
        for xattr in _xattr_names(member):
            if xattr.startswith("trusted.") or (xattr.startswith("security.")
                                                and xattr not in ALLOWED_SECURITY_XATTRS):
                raise UnsafeLayer(f"member {member.name!r} sets the xattr {xattr}")
        if member.ischr() or member.isblk():
            raise UnsafeLayer(f"member {member.name!r} is a device node")
        if member.isdir():
            kind = "dir"
        elif member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "file"
            target = normalize_member(member.linkname, "hardlink target")
            found = self.index.nodes.get(target)
            if found is None or found.kind != "file" or target in self.index.implied:
                raise UnsafeLayer(f"member {member.name!r} is a hardlink to {member.linkname!r}, which is not a "
                                  "regular file of this layer")
        elif member.isfifo():
            kind = "fifo"
        elif member.isreg():
            kind = "file"
        else:
            raise UnsafeLayer(f"member {member.name!r} has an unsupported type {member.type!r}")
        if not path:
            if kind != "dir":
                raise UnsafeLayer(f"member {member.name!r} makes the layer's root a {kind}")
            return
        self._parents(path, member.name)
        existing = self.index.nodes.get(path)
        if existing is not None and existing.kind == "dir" and kind != "dir":
            raise UnsafeLayer(f"member {member.name!r} replaces a directory of this layer")
        self.index.nodes[path] = _node(member, kind)
        self.index.implied.pop(path, None)

    def _whiteout(self, path: str, member: str) -> None:
        parent, _, base = path.rpartition("/")
        if base == OPAQUE:
            self._parents(path, member)
            if parent:
                self.index.opaque.append(parent)
            else:
                raise UnsafeLayer(f"member {member!r} makes the layer's root opaque")
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # other aufs metadata (.wh..wh.plnk): dropped
        target = base[len(WHITEOUT):]
        if target in ("", ".", ".."):
            raise UnsafeLayer(f"member {member!r} is a whiteout of {target!r}")
        self._parents(path, member)
        whited = f"{parent}/{target}" if parent else target
        self.index.whiteouts.append(whited)
        self.whited.add(whited)

    def finish(self) -> LayerIndex:
        """A whiteout of something this layer also makes: a directory becomes opaque, a file is just new."""
        index = self.index
        whiteouts = []
        for path in dict.fromkeys(index.whiteouts):
            node = index.nodes.get(path)
            if node is None:
                whiteouts.append(path)
            elif node.kind == "dir":
                index.opaque.append(path)
        index.whiteouts = whiteouts
        index.opaque = list(dict.fromkeys(index.opaque))
        for path in index.nodes:  # a non-directory with entries below it cannot be unpacked
            parent = _parent(path)
            if parent and index.nodes.get(parent, DEFAULT_DIR).kind != "dir":
                raise UnsafeLayer(f"member {path!r} lies below {parent!r}, which is not a directory")
        return index


def check_layer(blob: IO[bytes], lower: View) -> CheckedLayer:
    """Read one layer blob to its end: its members checked, its diff_id and sizes computed."""
    outer = _Hashing(blob)
    head = outer.read(4)
    compression = sniff(head)
    peeked = _Peeked(head, outer)
    zstd = None
    if compression == "gzip":
        import gzip

        stream: IO[bytes] = gzip.GzipFile(fileobj=peeked, mode="rb")  # type: ignore[arg-type]
    elif compression == "zstd":
        zstd = _Zstd(peeked)  # type: ignore[arg-type]
        stream = zstd  # type: ignore[assignment]
    else:
        stream = peeked  # type: ignore[assignment]
    # an uncompressed blob is its own uncompressed stream: its digest is the diff_id, hashed once
    inner = _Hashing(stream, hashing=bool(compression))
    checker = _Checker(lower)
    try:
        with tarfile.open(fileobj=inner, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                checker.add(member)
        inner.drain()
    except (tarfile.TarError, EOFError, OSError) as exc:
        if zstd is not None:
            zstd.close()
        raise UnsafeLayer(f"not a readable tar layer ({compression or 'uncompressed'}): {exc}") from None
    if zstd is not None:
        problem = zstd.close()
        if problem:
            raise UnsafeLayer(f"not a readable zstd layer: {problem}")
    outer.drain()
    index = checker.finish()
    blob_digest = f"sha256:{outer.sha.hexdigest()}"
    return CheckedLayer(f"sha256:{inner.sha.hexdigest()}" if compression else blob_digest, inner.size, compression,
                        blob_digest, outer.size, index)


# -- merged views ---------------------------------------------------------------------------------------
def _drop(view: View, path: str, keep_self: bool = False) -> None:
    prefix = path + "/" if path else ""
    for key in [k for k in view if k.startswith(prefix) or (k == path and not keep_self)]:
        del view[key]


def apply(view: View, index: LayerIndex) -> View:
    """The view of the layers below with this layer on top (overlayfs's rules)."""
    merged = dict(view)
    for directory in index.opaque:
        _drop(merged, directory, keep_self=True)
    for path in index.whiteouts:
        _drop(merged, path)
    for path, node in sorted(index.nodes.items()):
        old = merged.get(path)
        if old is not None and not (old.kind == "dir" and node.kind == "dir"):
            _drop(merged, path)
        if path in index.implied and old is not None and old.kind == "dir":
            continue
        merged[path] = node
    return merged


def scan_layer_dir(root: str) -> LayerIndex:
    """The index of a layer unpacked in the store, read back from its directory (a shared base layer)."""
    index = LayerIndex()
    root = root.rstrip("/")
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir:
            try:
                if os.getxattr(directory, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                    index.opaque.append(rel_dir)
            except OSError:
                pass
        for name in [*dirs, *files]:
            full = os.path.join(directory, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            info = os.lstat(full)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                index.whiteouts.append(rel)
                continue
            kind = ("dir" if stat.S_ISDIR(info.st_mode) else "symlink" if stat.S_ISLNK(info.st_mode)
                    else "fifo" if stat.S_ISFIFO(info.st_mode) else "file")
            index.nodes[rel] = Node(kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, int(info.st_mtime))
    return index
