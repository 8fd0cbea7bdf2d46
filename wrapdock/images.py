"""Image operations: the default busybox image, load, import, tag, list, inspect, remove.

Everything that can refuse is decided before the first command: an archive is read, every layer's
every member checked (wrapdock.layercheck), then one plan unpacks the new layers (GNU tar and the
whiteout conversions, printed), and the records are written last.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wrapdock import imagerefs, imagestore, names
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.plan import Plan
from wrapdock.plans import image as image_plans
from wrapdock.session import Session

DEFAULT_IMAGE = "busybox"


def check_image_name(name: str) -> str:
    """The canonical name (`x:latest` -> `x`), or UsageError."""
    return imagerefs.normalize(name)


def image_dir(session: Session, name: str) -> Path:
    """The directory of an image made as one root filesystem (busybox, commit): DIR/rootfs."""
    return session.data_dir / "images" / imagerefs.file_key(name)


def get(session: Session, name: str) -> dict[str, Any] | None:
    return imagestore.get(session, name)


def require(session: Session, name: str) -> dict[str, Any]:
    record = get(session, name)
    if record is None:
        raise UsageError(f"no such image: {name}")
    return record


def all_images(session: Session) -> list[dict[str, Any]]:
    return imagestore.all_records(session)


def lowerdirs(session: Session, name: str) -> list[str]:
    """What a container of this image stacks under its own layer, topmost first."""
    return imagestore.lowerdirs(session, require(session, name))


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


def _record(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"version": 1, "name": name, "id": names.new_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "source": source, **extra}


def _write(session: Session, completed: list, records: list[dict[str, Any]]) -> None:
    """Write image records after their plan; if that fails, undo the plan."""
    if not session.records_state:
        return
    try:
        for record in records:
            imagestore.put(session, record)
    except BaseException:
        for record in records:
            imagestore.forget(session, record["name"])
        session.runner.rollback(completed)
        raise


def make(session: Session, name: str, plan, source: str) -> dict[str, Any]:
    """Carry out a plan that makes a one-directory image (busybox, commit) and record the image."""
    completed = session.carry_out(plan)
    record = _record(name, source)
    _write(session, completed, [record])
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


# -- layers into the store ------------------------------------------------------------------------------
def _checked_layers(session: Session, blobs: list, expected: list[str] | None, what: str,
                    checked: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """Check each layer of one image on the view of the layers below; (diff_id, size, unpack or None)."""
    from wrapdock import imagearchives, layercheck

    view: layercheck.View = {}
    result = []
    for position, blob in enumerate(blobs):
        diff_id = expected[position] if expected else None
        if diff_id and imagestore.has_layer(session, diff_id) and diff_id not in checked:
            index = layercheck.scan_layer_dir(str(imagestore.layer_dir(session, diff_id)))
            result.append((diff_id, _dir_size(imagestore.layer_dir(session, diff_id)), None))
            view = layercheck.apply(view, index)
            continue
        with imagearchives.open_blob(blob) as handle:
            try:
                layer = layercheck.check_layer(handle, view)
            except layercheck.UnsafeLayer as exc:
                raise layercheck.UnsafeLayer(f"{what}, layer {position + 1}: {exc.message}") from None
        if blob.digest and blob.digest != layer.blob_digest:
            raise UsageError(f"{what}, layer {position + 1}: the blob does not match its digest {blob.digest}")
        if blob.size is not None and blob.size != layer.blob_size:
            raise UsageError(f"{what}, layer {position + 1}: the blob's size differs from its descriptor's")
        if diff_id and diff_id != layer.diff_id:
            raise UsageError(f"{what}, layer {position + 1}: its content is {layer.diff_id}, the config says "
                             f"{diff_id}")
        unpack = None
        if not imagestore.has_layer(session, layer.diff_id) and layer.diff_id not in checked:
            unpack = image_plans.LayerUnpack(
                layer.diff_id, blob.host_path, blob.member, layer.compression,
                imagestore.layer_dir(session, layer.diff_id), imagestore.partial_dir(session, layer.diff_id),
                imagestore.link(session, layer.diff_id), layer.index)
            checked[layer.diff_id] = unpack
        result.append((layer.diff_id, layer.size, unpack))
        view = layercheck.apply(view, layer.index)
    return result


def _dir_size(path: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            total += info.st_size
    return total


def _config_subset(config: dict[str, Any]) -> dict[str, Any]:
    """What wrapdock keeps of an image config (and writes back on save)."""
    keep = ("architecture", "os", "variant", "created", "author", "config", "history")
    return {k: config[k] for k in keep if k in config}


def load(session: Session, path: str, rename: str | None) -> list[dict[str, Any]]:
    """`image load -i PATH`: every image of an OCI layout, oci-archive or docker-save tarball."""
    from wrapdock import imagearchives

    session.require_root()
    found = imagearchives.read(path)
    if rename is not None:
        if len(found) != 1:
            raise UsageError(f"{path} holds {len(found)} images: --name renames only an archive's single image")
        found[0].refs = [rename]
    targets: list[tuple[str, Any]] = []
    for position, image in enumerate(found, start=1):
        if not image.refs:
            raise UsageError(f"image {position} of {path} has no name: give it one with --name")
        for ref in image.refs:
            name = imagerefs.normalize(ref)
            if name not in (t[0] for t in targets):
                targets.append((name, image))
    source = str(Path(path).resolve())
    with session.lock():
        for name, image in targets:
            existing = get(session, name)
            if existing is not None and existing["id"] != image.config_digest.split(":", 1)[1]:
                raise UsageError(f"image {name!r} already exists (another image): remove it first (image rm {name})")
        # the same image under the same name again: nothing to do for it (as docker load)
        present = {name for name, _ in targets if get(session, name) is not None}
        targets = [(name, image) for name, image in targets if name not in present]
        found = [image for image in found if any(image is i for _, i in targets)]
        checked: dict[str, Any] = {}
        layers_of: dict[int, list[tuple[str, int, Any]]] = {}
        for image in found:
            layers_of[id(image)] = _checked_layers(session, image.layers, image.config["rootfs"]["diff_ids"],
                                                   f"{path}: image {image.refs[0]}", checked)
        plan = Plan(f"load {', '.join(n for n, _ in targets)} from {path}")
        for unpack in checked.values():
            plan.extend(image_plans.unpack_layer(unpack))
        records = []
        for name, image in targets:
            records.append({**_record(name, f"load {source}"), "id": image.config_digest.split(":", 1)[1],
                            "layers": [{"diff_id": d, "size": s} for d, s, _ in layers_of[id(image)]],
                            "config": _config_subset(image.config)})
        completed = session.carry_out(plan) if plan.steps else []
        _write(session, completed, records)
    return [*records, *(get(session, name) or {"name": name} for name in sorted(present))]


def import_tarball(session: Session, tarball: str, name: str) -> dict[str, Any]:
    """A root filesystem tarball (`docker export`) as a one-layer image, checked like any layer."""
    from wrapdock import imagearchives

    name = check_image_name(name)
    session.require_root()
    if not Path(tarball).is_file():
        raise UsageError(f"no such file: {tarball}")
    full = str(Path(tarball).resolve())
    with session.lock():
        if get(session, name) is not None:
            raise UsageError(f"image {name!r} already exists")
        blob = imagearchives.Blob(full, None, None, None, "")
        ((diff_id, size, unpack),) = _checked_layers(session, [blob], None, tarball, {})
        plan = Plan(f"import image {name} from {full}")
        if unpack is not None:
            plan.extend(image_plans.unpack_layer(unpack))
        record = _record(name, f"import {full}", layers=[{"diff_id": diff_id, "size": size}])
        completed = session.carry_out(plan) if plan.steps else []
        _write(session, completed, [record])
    return record


def tag(session: Session, source: str, target: str) -> dict[str, Any]:
    """Another name for an image: a second record over the same layers (or root filesystem)."""
    name = check_image_name(target)
    session.require_root()
    with session.lock():
        record = require(session, source)
        existing = get(session, name)
        if existing is not None and existing["id"] != record["id"]:
            raise UsageError(f"image {name!r} already exists: remove it first")
        tagged = {**record, "name": name}
        if "layers" not in record:
            tagged["rootfs_of"] = record.get("rootfs_of") or record["name"]
        if session.records_state:
            imagestore.put(session, tagged)
    return tagged


def remove(session: Session, name: str, users: list[str]) -> None:
    """Remove an image's name; its layers go when no other image uses them."""
    session.require_root()
    record = get(session, name)
    if record is None:
        raise UsageError(f"no such image: {name}")
    if users:
        raise UsageError(f"image {name!r} is used by container(s) {', '.join(users)}: remove them first")
    with session.lock():
        plan = Plan(f"remove image {record['name']}")
        if "layers" in record:
            still = imagestore.layer_users(session, {record["name"]})
            unused = [d for d in dict.fromkeys(imagestore.diff_ids(record)) if d not in still]
            image_plans.remove_layers(plan, [(imagestore.layer_dir(session, d), imagestore.link(session, d))
                                             for d in unused])
        else:
            directory = imagestore.legacy_dir(session, record)
            if str(directory) not in imagestore.legacy_users(session, {record["name"]}):
                plan.extend(image_plans.remove(directory, record["name"]).steps)
        session.carry_out(plan)
        if session.records_state:
            imagestore.forget(session, record["name"])


def size(session: Session, name: str) -> int:
    return imagestore.size(session, require(session, name))


def rootfs(session: Session, name: str) -> Path:
    """The root filesystem of a one-directory image (busybox, commit)."""
    return imagestore.legacy_dir(session, require(session, name)) / "rootfs"


def inspect(session: Session, names_: list[str]) -> list[dict[str, Any]]:
    views = []
    for name in names_:
        record = require(session, name)
        config = record.get("config") or {}
        views.append({
            "Name": record["name"], "Id": f"sha256:{record['id']}", "Created": record["created"],
            "Source": record["source"], "Architecture": config.get("architecture"), "Os": config.get("os"),
            "Config": config.get("config") or {},
            "RootFS": {"Type": "layers", "Layers": imagestore.diff_ids(record)} if "layers" in record else
            {"Type": "directory", "Path": str(imagestore.legacy_dir(session, record) / "rootfs")},
            "Size": imagestore.size(session, record),
            "LayerDirs": list(reversed(imagestore.lowerdirs(session, record))),
        })
    return views
