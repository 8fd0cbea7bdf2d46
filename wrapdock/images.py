"""Image operations: the default busybox image, import, list, remove, and the records behind them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wrapdock import names
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.plans import image as image_plans
from wrapdock.session import Session

DEFAULT_IMAGE = "busybox"
_IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def check_image_name(name: str) -> str:
    if not _IMAGE_NAME.fullmatch(name):
        raise UsageError(f"invalid image name {name!r}: use lower-case letters, digits, '_', '.' and '-'")
    return name


def image_dir(session: Session, name: str) -> Path:
    return session.data_dir / "images" / name


def rootfs(session: Session, name: str) -> Path:
    return image_dir(session, name) / "rootfs"


def get(session: Session, name: str) -> dict[str, Any] | None:
    return session.images.get("image", name) if _IMAGE_NAME.fullmatch(name) else None


def all_images(session: Session) -> list[dict[str, Any]]:
    return session.images.all("image")


def host_busybox() -> str:
    """The host's static busybox (Debian: busybox-static), needed for the default image and every init."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return candidate
    import shutil  # ~6 ms to import (it brings bz2, lzma, zlib): only a host without /bin/busybox pays

    found = shutil.which("busybox")
    if found:
        return found
    raise EnvironmentProblem("busybox is not installed (Debian: apt-get install busybox-static)")


def _record(name: str, source: str) -> dict[str, Any]:
    return {"version": 1, "name": name, "id": names.new_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "source": source}


def make(session: Session, name: str, plan, source: str) -> dict[str, Any]:
    """Carry out an image plan and record the image; undo the plan if recording fails."""
    completed = session.carry_out(plan)
    record = _record(name, source)
    if not session.records_state:
        return record
    try:
        session.images.put("image", name, record)
    except BaseException:
        session.runner.rollback(completed)
        raise
    return record


def ensure_default(session: Session) -> dict[str, Any]:
    """The busybox image, made from the host's static busybox the first time it is needed."""
    existing = get(session, DEFAULT_IMAGE)
    if existing is not None:
        return existing
    busybox = host_busybox()
    with session.lock():
        existing = get(session, DEFAULT_IMAGE)  # another wrapdock may have made it meanwhile
        if existing is not None:
            return existing
        plan = image_plans.busybox(image_dir(session, DEFAULT_IMAGE), busybox)
        return make(session, DEFAULT_IMAGE, plan, f"busybox-static {busybox}")


def import_tarball(session: Session, tarball: str, name: str) -> dict[str, Any]:
    check_image_name(name)
    session.require_root()
    if not Path(tarball).is_file():
        raise UsageError(f"no such file: {tarball}")
    with session.lock():
        if get(session, name) is not None:
            raise UsageError(f"image {name!r} already exists")
        plan = image_plans.import_tarball(image_dir(session, name), str(Path(tarball).resolve()), name)
        return make(session, name, plan, f"import {Path(tarball).resolve()}")


def remove(session: Session, name: str, users: list[str]) -> None:
    session.require_root()
    if get(session, name) is None:
        raise UsageError(f"no such image: {name}")
    if users:
        raise UsageError(f"image {name!r} is used by container(s) {', '.join(users)}: remove them first")
    session.carry_out(image_plans.remove(image_dir(session, name), name))
    if session.records_state:
        session.images.remove("image", name)


def size(session: Session, name: str) -> int:
    total = 0
    for path in rootfs(session, name).rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total
