"""Small images written by hand (tarfile, gzip, json, hashlib) for the unit tests and the hostile-layer
catalogue: layers member by member, as OCI layouts (dir or tar) and docker-save tarballs.

The images made by real tools (umoci, buildah, skopeo, debootstrap) are in tests/integration/realimages.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Member:
    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, blk, fifo
    data: bytes = b""
    target: str = ""  # symlink / hardlink target
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0


def layer_tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mode, info.uid, info.gid, info.mtime = m.mode, m.uid, m.gid, 1700000000
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                         "fifo": tarfile.FIFOTYPE}[m.kind]
            info.linkname = m.target
            info.devmajor, info.devminor = m.devmajor, m.devminor
            if m.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in m.xattrs.items()}
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config(diff_ids: list[str], settings: dict | None) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": settings or {},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def oci_layout(root: Path, images: dict[str, tuple[list[list[Member]], dict | None]], compress: bool = True) -> Path:
    """An OCI image layout directory: name -> (layers, config settings)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    manifests = []
    for name, (layers, settings) in images.items():
        raws = [layer_tar(members) for members in layers]
        blobs_of = [gzip.compress(raw, mtime=0) if compress else raw for raw in raws]
        config = _config([sha(r) for r in raws], settings)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else ""),
                        "digest": put(b), "size": len(b)} for b in blobs_of]}).encode()
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
                          "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": name}})
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return root


def docker_archive(path: Path, images: dict[str, tuple[list[list[Member]], dict | None]]) -> Path:
    """A Docker 20.10 `docker save` tarball: manifest.json, <id>/layer.tar, <config>.json."""
    entries: dict[str, bytes] = {}
    manifest = []
    for name, (layers, settings) in images.items():
        raws = [layer_tar(members) for members in layers]
        config = _config([sha(r) for r in raws], settings)
        config_name = sha(config).split(":")[1] + ".json"
        entries[config_name] = config
        paths = []
        for raw in raws:
            layer_id = hashlib.sha256(b"v1" + raw).hexdigest()
            entries[f"{layer_id}/layer.tar"] = raw
            entries[f"{layer_id}/VERSION"] = b"1.0"
            paths.append(f"{layer_id}/layer.tar")
        manifest.append({"Config": config_name, "RepoTags": [f"{name}:latest"], "Layers": paths})
    entries["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for member_name, data in entries.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def static_program(code: bytes) -> bytes:
    """A static x86-64 ELF executable of one loadable segment: no libc, no loader, no shell."""
    import struct

    base, offset = 0x400000, 64 + 56
    header = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 2, 0x3E, 1, base + offset, 64, 0, 0,
                         64, 56, 1, 0, 0, 0)
    size = offset + len(code)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + segment + code


def hello_program(text: bytes = b"hello from a static binary\n") -> bytes:
    """write(1, text); exit(0)."""
    import struct

    code = (b"\xb8\x01\x00\x00\x00" + b"\xbf\x01\x00\x00\x00" + b"\x48\x8d\x35" + struct.pack("<i", 16)
            + b"\xba" + struct.pack("<I", len(text)) + b"\x0f\x05" + b"\xb8\x3c\x00\x00\x00" + b"\x31\xff\x0f\x05")
    return static_program(code + text)


def pause_program() -> bytes:
    """pause() forever: a PID 1 that only a signal with a default action it cannot ignore ends."""
    return static_program(b"\xb8\x22\x00\x00\x00\x0f\x05\xeb\xf7")
