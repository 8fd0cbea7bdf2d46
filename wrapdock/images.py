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
from wrapdock.plan import Plan, cmd
from wrapdock.plans import image as image_plans
from wrapdock.session import Session

DEFAULT_IMAGE = "busybox"


def check_image_name(name: str) -> str:
    """The canonical name (`x:latest` -> `x`), or UsageError."""
    return imagerefs.normalize(name)


def image_dir(session: Session, name: str) -> Path:
    """The directory of an image made as one root filesystem (the default busybox): DIR/rootfs."""
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
    """Carry out a plan that makes a one-directory image (the default busybox) and record the image."""
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
            result.append((diff_id, _known_size(session, diff_id), None))
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


def _known_size(session: Session, diff_id: str) -> int:
    """A stored layer's size as its first image recorded it (its tar's), else what it holds on disk."""
    for record in imagestore.all_records(session):
        for layer in record.get("layers") or []:
            if layer["diff_id"] == diff_id:
                return layer["size"]
    return _dir_size(imagestore.layer_dir(session, diff_id))


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
        plan.extend(image_plans.unpack_layers(list(checked.values())))
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


# -- save ---------------------------------------------------------------------------------------------------
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _json_line(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def save(session: Session, names_: list[str], output: str, fmt: str) -> list[str]:
    """`image save -o FILE`: an OCI layout as a tar (`--format oci`), with Docker's manifest.json too
    (`--format docker`, as Docker >= 25 writes). Layers are written uncompressed by
    `python3 -m wrapdock.layertar` (whiteouts back to `.wh.` files); their diff_ids are computed first."""
    import hashlib
    import sys

    from wrapdock import layertar
    from wrapdock.imagearchives import host_architecture

    if fmt not in ("oci", "docker"):
        raise UsageError(f"invalid --format {fmt!r}: oci or docker")
    records = [require(session, name) for name in names_]
    target = Path(output).resolve()
    if not target.parent.is_dir():
        raise UsageError(f"no such directory: {target.parent}")
    stage = target.parent / f".{target.name}.wrapdock-save"
    blobs = stage / "blobs" / "sha256"
    plan = Plan(f"save {', '.join(r['name'] for r in records)} to {target}")
    note = f"an OCI image layout in {stage}, then the archive {target}"
    plan.add(cmd("rm", "-rf", "--one-file-system", str(stage), note=note,
                             only_if=("test", "-e", str(stage))))
    plan.add(cmd("mkdir", "-p", str(blobs), note=note,
                             undo=cmd("rm", "-rf", "--one-file-system", str(stage), note=note)))
    written: dict[str, str] = {}  # layer dir (or blob path) -> its diff_id (digest) in the archive
    sizes: dict[str, int] = {}
    index, manifest_json = [], []

    def blob(text: str) -> tuple[str, int]:
        data = (text + "\n").encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = blobs / digest.split(":")[1]
        if str(path) not in written:
            written[str(path)] = digest
            plan.add(cmd("install", "-m", "644", "/dev/stdin", str(path), stdin=[text], note=note))
        return digest, len(data)

    for record in records:
        dirs = list(reversed(imagestore.lowerdirs(session, record)))  # bottom first
        layers = []
        for directory in dirs:
            real = os.path.realpath(directory)
            if real not in written:
                diff_id, sizes[real] = layertar.digest(real)
                written[real] = diff_id
                plan.add(cmd("sh", "-c", 'exec "$1" -m wrapdock.layertar --layer "$2" > "$3"', "wrapdock-save",
                             sys.executable, real, str(blobs / diff_id.split(":")[1]),
                             note=f"layer {diff_id[:19]} as a tar (whiteouts as .wh. files)"))
            layers.append((written[real], sizes[real]))
        kept = {k: v for k, v in (record.get("config") or {}).items() if k not in ("history",)}
        config = {"architecture": host_architecture(), "os": "linux", "config": {}, **kept,
                  "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}
        config_digest, config_size = blob(_json_line(config))
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                               "size": config_size},
                    "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": size} for d, size in layers]}
        manifest_digest, manifest_size = blob(_json_line(manifest))
        name = record["name"]
        index.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                      "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": name,
                                                             "io.containerd.image.name": name}})
        tagged = name if ":" in name.rpartition("/")[2] else f"{name}:latest"
        manifest_json.append({"Config": f"blobs/sha256/{config_digest.split(':')[1]}", "RepoTags": [tagged],
                              "Layers": [f"blobs/sha256/{d.split(':')[1]}" for d, _ in layers]})
    files = ["oci-layout", "index.json", "blobs"]
    plan.add(cmd("install", "-m", "644", "/dev/stdin", str(stage / "oci-layout"),
                             stdin=[_json_line({"imageLayoutVersion": "1.0.0"})], note=note))
    plan.add(cmd("install", "-m", "644", "/dev/stdin", str(stage / "index.json"),
                             stdin=[_json_line({"schemaVersion": 2, "manifests": index})], note=note))
    if fmt == "docker":
        plan.add(cmd("install", "-m", "644", "/dev/stdin", str(stage / "manifest.json"),
                                 stdin=[_json_line(manifest_json)], note=note))
        files.append("manifest.json")
    plan.add(cmd("tar", "--create", "--numeric-owner", "--file", str(target), "--directory", str(stage),
                             *files, note=note, undo=cmd("rm", "-f", str(target), note=note)))
    plan.add(cmd("rm", "-rf", "--one-file-system", str(stage), note=note))
    session.carry_out(plan)
    return [r["name"] for r in records]


# -- commit -------------------------------------------------------------------------------------------------
def _generated_layer(session: Session, mode: str, directory: str, view: Any,
                     checked: dict[str, Any]) -> tuple[str, int, Any, Any]:
    """A directory as a layer: its tar (wrapdock.layertar) hashed and checked like any loaded layer now,
    and unpacked into the store by a command that generates the same tar again."""
    import sys
    import threading

    from wrapdock import layercheck, layertar

    read_end, write_end = os.pipe()

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb") as out:
                layertar.write(directory, out, mode == "--upper")
        except OSError:
            pass  # the check stopped reading: it refused the layer

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with os.fdopen(read_end, "rb") as handle:
        layer = layercheck.check_layer(handle, view)
    producer.join()
    unpack = None
    if not imagestore.has_layer(session, layer.diff_id) and layer.diff_id not in checked:
        unpack = image_plans.LayerUnpack(
            layer.diff_id, directory, None, "", imagestore.layer_dir(session, layer.diff_id),
            imagestore.partial_dir(session, layer.diff_id), imagestore.link(session, layer.diff_id), layer.index,
            generate=(sys.executable, mode, directory))
        checked[layer.diff_id] = unpack
    return layer.diff_id, layer.size, unpack, layer.index


def commit(session: Session, name: str, container: str, base_name: str, upper: Path) -> dict[str, Any]:
    """The container's upper directory as a new layer on its image's layers (whiteouts and opaque
    directories included); an image made before layers (busybox) becomes a layer of its own first."""
    from wrapdock import layercheck

    base = require(session, base_name)
    checked: dict[str, Any] = {}
    view: layercheck.View = {}
    layers: list[dict[str, Any]] = []
    if "layers" in base:
        for layer in base["layers"]:
            layers.append(dict(layer))
            view = layercheck.apply(view, layercheck.scan_layer_dir(str(imagestore.layer_dir(session,
                                                                                             layer["diff_id"]))))
    else:
        rootfs = str(imagestore.legacy_dir(session, base) / "rootfs")
        diff_id, size, _, index = _generated_layer(session, "--layer", rootfs, view, checked)
        layers.append({"diff_id": diff_id, "size": size})
        view = layercheck.apply(view, index)
    diff_id, size, _, _ = _generated_layer(session, "--upper", str(upper), view, checked)
    layers.append({"diff_id": diff_id, "size": size})
    plan = Plan(f"commit container {container} as image {name}")
    plan.extend(image_plans.unpack_layers(list(checked.values())))
    record = _record(name, f"commit {container}", layers=layers)
    if "config" in base:
        record["config"] = base["config"]
    completed = session.carry_out(plan) if plan.steps else []
    _write(session, completed, [record])
    return record
