"""Readers for the formats images come in: an OCI image layout (a directory or a tar: oci-archive) and
`docker save` tarballs (Docker 20.10's manifest.json + <id>/layer.tar; Docker >= 25's OCI layout with a
manifest.json; containers/image's docker-archive with symlinked members).

A reader only reads: it yields images (their names, config and layer blobs, each blob with where it
lies on the host, so the unpacking command can read it there). Nothing is extracted here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import tarfile
from dataclasses import dataclass
from typing import IO, Any

from wrapdock.errors import UsageError

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}


class BadArchive(UsageError):
    """An archive that does not hold what its format promises."""


def host_architecture() -> str:
    machine = platform.machine()
    return _ARCHES.get(machine, machine)


@dataclass(frozen=True)
class Blob:
    """A layer blob: `member` of the tar `host_path`, or the file `host_path` itself (member None)."""

    host_path: str
    member: str | None
    digest: str | None  # sha256:HEX of the blob's bytes when the format names it
    size: int | None
    media_type: str  # "" when the format has none (docker-archive)


@dataclass
class SourceImage:
    """One image of an archive or layout as read: its names, config and layer blobs."""

    refs: list[str]  # as the archive names them; none: the image needs --name
    config: dict[str, Any]
    config_digest: str
    layers: list[Blob]


class _Source:
    """A directory or a tar, read by relative member paths (symlinked members resolved)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dir = os.path.isdir(path)
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if not self.dir:
            try:
                self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
                for member in self.tar.getmembers():
                    self.members[_clean(member.name)] = member
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BadArchive(f"{path}: not an image archive (not a readable tar: {exc})") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def _checked(self, name: str) -> str:
        clean = _clean(name)
        if name.startswith("/") or ".." in clean.split("/") or not clean:
            raise BadArchive(f"{self.path}: refers to {name!r}, outside the archive")
        return clean

    def resolve(self, name: str) -> str:
        """The regular file (dir) or member (tar) that `name` is, following in-archive symlinks."""
        clean = self._checked(name)
        if self.dir:
            root = os.path.realpath(self.path)
            real = os.path.realpath(os.path.join(root, clean))
            if not real.startswith(root + "/") or not os.path.isfile(real):
                raise BadArchive(f"{self.path}: {name} is missing or not a file inside the layout")
            return real
        for _ in range(16):
            member = self.members.get(clean)
            if member is None:
                raise BadArchive(f"{self.path}: has no {name}")
            if member.isfile():
                return member.name
            if not member.issym():
                raise BadArchive(f"{self.path}: {name} is not a file")
            clean = self._checked(os.path.normpath(os.path.join(os.path.dirname(clean), member.linkname)))
        raise BadArchive(f"{self.path}: {name}: too many symlinks")

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.path, name)) if self.dir else _clean(name) in self.members

    def open(self, name: str) -> IO[bytes]:
        where = self.resolve(name)
        if self.dir:
            return open(where, "rb")
        assert self.tar is not None
        handle = self.tar.extractfile(where)
        if handle is None:
            raise BadArchive(f"{self.path}: {name} is not a file")
        return handle

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open(name) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise BadArchive(f"{self.path}: {name} is too large for a manifest or config")
        return data

    def blob(self, name: str, digest: str | None, size: int | None, media_type: str) -> Blob:
        where = self.resolve(name)
        return Blob(where if self.dir else self.path, None if self.dir else where, digest, size, media_type)


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _json(source: _Source, name: str, digest: str | None = None, size: int | None = None) -> tuple[Any, str]:
    data = source.read(name)
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if digest is not None and actual != digest:
        raise BadArchive(f"{source.path}: {name} does not match its digest {digest}")
    if size is not None and len(data) != size:
        raise BadArchive(f"{source.path}: {name} is {len(data)} bytes, its descriptor says {size}")
    try:
        return json.loads(data), actual
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadArchive(f"{source.path}: {name} is not valid JSON") from None


def blob_path(source_path: str, digest: Any) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BadArchive(f"{source_path}: invalid digest {digest!r} (only sha256:<64 hex> is read)")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _check_config(path: str, config: Any, layer_count: int) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise BadArchive(f"{path}: an image config is not a JSON object")
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise BadArchive(f"{path}: an image config's rootfs.type is not 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise BadArchive(f"{path}: an image config's rootfs.diff_ids are not sha256 digests")
    if len(diff_ids) != layer_count:
        raise BadArchive(f"{path}: an image has {layer_count} layer(s) but its config {len(diff_ids)} diff_id(s)")
    if config.get("os", "linux") != "linux":
        raise BadArchive(f"{path}: an image is for {config.get('os')!r}, not linux")
    arch = config.get("architecture")
    if arch and arch != host_architecture():
        raise BadArchive(f"{path}: an image is for {arch}, this host is {host_architecture()}")
    return config


def _docker(source: _Source) -> list[SourceImage]:
    manifest, _ = _json(source, "manifest.json")
    if not isinstance(manifest, list):
        raise BadArchive(f"{source.path}: manifest.json is not a list")
    images = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(
                entry.get("Layers"), list):
            raise BadArchive(f"{source.path}: manifest.json has an entry without Config or Layers")
        config_name = entry["Config"]
        expected = None
        hex_name = os.path.basename(config_name).removesuffix(".json")
        if re.fullmatch(r"[a-f0-9]{64}", hex_name):
            expected = "sha256:" + hex_name
        config, digest = _json(source, config_name, expected)
        layers = []
        for name in entry["Layers"]:
            if not isinstance(name, str):
                raise BadArchive(f"{source.path}: manifest.json names a layer that is not a path")
            base = os.path.basename(name)
            digest_hint = "sha256:" + base if name.startswith("blobs/sha256/") and re.fullmatch(
                r"[a-f0-9]{64}", base) else None
            layers.append(source.blob(name, digest_hint, None, ""))
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadArchive(f"{source.path}: manifest.json has RepoTags that are not names")
        images.append(SourceImage(list(tags), _check_config(source.path, config, len(layers)), digest, layers))
    return images


def _manifests(source: _Source, descriptor: dict[str, Any], refs: list[str], depth: int = 0) -> list[SourceImage]:
    media = descriptor.get("mediaType")
    path = blob_path(source.path, descriptor.get("digest"))
    body, _ = _json(source, path, descriptor["digest"], descriptor.get("size"))
    if not isinstance(body, dict):
        raise BadArchive(f"{source.path}: {path} is not a JSON object")
    media = media or body.get("mediaType")
    if media in (OCI_INDEX, DOCKER_LIST) or (media is None and "manifests" in body):
        if depth > 2:
            raise BadArchive(f"{source.path}: indexes nested too deep")
        chosen = [d for d in body.get("manifests", []) if isinstance(d, dict) and _for_this_host(d)]
        if not chosen:
            raise BadArchive(f"{source.path}: no image for linux/{host_architecture()} in {path}")
        return _manifests(source, chosen[0], refs, depth + 1)
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST, None):
        raise BadArchive(f"{source.path}: unsupported manifest media type {media!r}")
    config_descriptor = body.get("config")
    layer_descriptors = body.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layer_descriptors, list):
        raise BadArchive(f"{source.path}: {path} is not an image manifest (no config or layers)")
    if config_descriptor.get("mediaType") not in CONFIG_TYPES:
        raise BadArchive(f"{source.path}: unsupported config media type {config_descriptor.get('mediaType')!r}")
    config, digest = _json(source, blob_path(source.path, config_descriptor.get("digest")),
                           config_descriptor["digest"], config_descriptor.get("size"))
    layers = []
    for layer in layer_descriptors:
        if not isinstance(layer, dict) or layer.get("mediaType") not in LAYER_TYPES:
            kind = layer.get("mediaType") if isinstance(layer, dict) else layer
            raise BadArchive(f"{source.path}: unsupported layer media type {kind!r}")
        size = layer.get("size")
        layers.append(source.blob(blob_path(source.path, layer.get("digest")), layer["digest"],
                                  size if isinstance(size, int) else None, layer["mediaType"]))
    return [SourceImage(refs, _check_config(source.path, config, len(layers)), digest, layers)]


def _for_this_host(descriptor: dict[str, Any]) -> bool:
    wanted = descriptor.get("platform")
    if not isinstance(wanted, dict):
        return True
    return wanted.get("os") == "linux" and wanted.get("architecture") == host_architecture()


def _oci(source: _Source) -> list[SourceImage]:
    index, _ = _json(source, "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise BadArchive(f"{source.path}: index.json has no manifests")
    images: list[SourceImage] = []
    for descriptor in index["manifests"]:
        if not isinstance(descriptor, dict):
            raise BadArchive(f"{source.path}: index.json lists something that is not a descriptor")
        annotations = descriptor.get("annotations") or {}
        ref = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
        found = _manifests(source, descriptor, [ref] if isinstance(ref, str) and ref else [])
        for image in found:  # one image under several names: one entry with all of them
            same = next((i for i in images if i.config_digest == image.config_digest
                         and [b.digest for b in i.layers] == [b.digest for b in image.layers]), None)
            if same is None:
                images.append(image)
            else:
                same.refs += [r for r in image.refs if r not in same.refs]
    return images


def read(path: str) -> list[SourceImage]:
    """Every image in an OCI layout (dir or tar) or a docker-save tarball; BadArchive if none."""
    if not os.path.exists(path):
        raise UsageError(f"no such file or directory: {path}")
    source = _Source(path)
    try:
        # Docker >= 25 writes both: its manifest.json is the reliable one (moby/moby#47065)
        if source.has("manifest.json"):
            images = _docker(source)
        elif source.has("index.json"):
            if not source.has("oci-layout"):
                raise BadArchive(f"{path}: has index.json but no oci-layout file")
            images = _oci(source)
        else:
            raise BadArchive(f"{path}: not an image archive (neither manifest.json nor index.json)")
    finally:
        source.close()
    if not images:
        raise BadArchive(f"{path}: holds no image")
    return images


def open_blob(blob: Blob) -> IO[bytes]:
    """The blob's bytes, from the file or from its member of the archive (read in place)."""
    if blob.member is None:
        return open(blob.host_path, "rb")
    archive = tarfile.open(blob.host_path, "r:*")  # noqa: SIM115 (closed with the handle)
    handle = archive.extractfile(blob.member)
    if handle is None:
        archive.close()
        raise BadArchive(f"{blob.host_path}: {blob.member} is not a file")
    return _Closing(handle, archive)


class _Closing(io.RawIOBase):
    def __init__(self, handle: IO[bytes], archive: tarfile.TarFile) -> None:
        super().__init__()
        self.handle, self.archive = handle, archive

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.handle.read(n)

    def close(self) -> None:
        self.archive.close()
        super().close()

