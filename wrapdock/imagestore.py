"""The image store: layers by diff_id, each unpacked in a directory of its own; images as records over them.

  DATA_DIR/layers/HEX          a layer's files (HEX: its diff_id), whiteouts as 0/0 character devices
  DATA_DIR/l/SHORT             a short link to it: the overlay mount data is one page (4096 bytes)
  DATA_DIR/images/KEY.json     an image record: its name, config and layers (bottom first)
  DATA_DIR/images/KEY/rootfs   the single root filesystem of the default busybox image (made from the
                               host's busybox, not from a tar): a record without "layers" uses it as
                               its only layer

The container side asks for one thing only: `lowerdirs(record)`, the directories to stack, topmost first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wrapdock import imagerefs
from wrapdock.errors import UsageError
from wrapdock.session import Session

SHORT = 20  # hex digits of a diff_id in its link's name
MOUNT_DATA_LIMIT = 4096


def layers_dir(session: Session) -> Path:
    return session.data_dir / "layers"


def links_dir(session: Session) -> Path:
    return session.data_dir / "l"


def hex_of(diff_id: str) -> str:
    return diff_id.split(":", 1)[1]


def layer_dir(session: Session, diff_id: str) -> Path:
    return layers_dir(session) / hex_of(diff_id)


def partial_dir(session: Session, diff_id: str) -> Path:
    """Where a layer is unpacked first; renamed to its place once complete."""
    return layers_dir(session) / f"{hex_of(diff_id)}.partial"


def link(session: Session, diff_id: str) -> Path:
    return links_dir(session) / hex_of(diff_id)[:SHORT]


def has_layer(session: Session, diff_id: str) -> bool:
    return layer_dir(session, diff_id).is_dir()


def legacy_dir(session: Session, record: dict[str, Any]) -> Path:
    """The directory of a record without layers (its rootfs is DIR/rootfs)."""
    return session.data_dir / "images" / imagerefs.file_key(record.get("rootfs_of") or record["name"])


def get(session: Session, name: str) -> dict[str, Any] | None:
    try:
        canonical = imagerefs.normalize(name)
    except UsageError:
        return None
    return session.images.get("image", imagerefs.file_key(canonical))


def put(session: Session, record: dict[str, Any]) -> None:
    session.images.put("image", imagerefs.file_key(record["name"]), record)


def forget(session: Session, name: str) -> None:
    session.images.remove("image", imagerefs.file_key(name))


def all_records(session: Session) -> list[dict[str, Any]]:
    return session.images.all("image")


def diff_ids(record: dict[str, Any]) -> list[str]:
    return [layer["diff_id"] for layer in record.get("layers") or []]


def lowerdirs(session: Session, record: dict[str, Any]) -> list[str]:
    """The image's layer directories for overlayfs's lowerdir, topmost first (short links)."""
    if "layers" not in record:
        return [str(legacy_dir(session, record) / "rootfs")]
    return [str(link(session, d)) for d in reversed(diff_ids(record))]


def check_mount_data(lower: list[str], upper: str, work: str) -> None:
    data = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    if len(data) >= MOUNT_DATA_LIMIT:
        raise UsageError(f"the image has {len(lower)} layers: their overlay mount options ({len(data)} bytes) "
                         f"exceed the kernel's {MOUNT_DATA_LIMIT}-byte limit")
    for path in (*lower, upper, work):
        if ":" in path or "," in path:
            raise UsageError(f"path {path!r} holds ':' or ',', which the overlay mount options cannot carry")


def layer_users(session: Session, exclude: set[str]) -> set[str]:
    """The diff_ids that images other than `exclude` (names) still use."""
    return {d for r in all_records(session) if r["name"] not in exclude for d in diff_ids(r)}


def legacy_users(session: Session, exclude: set[str]) -> set[str]:
    return {str(legacy_dir(session, r)) for r in all_records(session) if r["name"] not in exclude
            and "layers" not in r}


def size(session: Session, record: dict[str, Any]) -> int:
    if "layers" in record:
        return sum(layer["size"] for layer in record["layers"])
    total = 0
    for path in (legacy_dir(session, record) / "rootfs").rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total
