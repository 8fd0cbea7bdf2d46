"""The steps that make images: the default busybox root filesystem, layers unpacked into the store."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wrapdock.plan import Plan, Step, cmd

if TYPE_CHECKING:  # the checks (tarfile, hashlib) load only where layers are unpacked, not on every run
    from wrapdock.layercheck import LayerIndex

PASSWD = ("root:x:0:0:root:/root:/bin/sh", "nobody:x:65534:65534:nobody:/nonexistent:/bin/false")
GROUP = ("root:x:0:", "nogroup:x:65534:")
ROOTFS_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev", "home", "var/log")


def _start(plan: Plan, image_dir: Path, note: str) -> None:
    # an image has no record until its plan succeeded: a directory already there is what an
    # interrupted build (a killed wrapdock) left, and goes first
    plan.add(cmd("rm", "-rf", "--one-file-system", str(image_dir), only_if=("test", "-d", str(image_dir)),
                 note=f"what an interrupted build left in {image_dir}"))
    plan.add(cmd("mkdir", "-p", str(image_dir / "rootfs"), note=note,
                 undo=cmd("rm", "-rf", "--one-file-system", str(image_dir), note=note)))


def busybox(image_dir: Path, busybox_binary: str) -> Plan:
    """The default image, made from the host's static busybox: no registry, no network."""
    rootfs = image_dir / "rootfs"
    plan = Plan(f"make the default image busybox from {busybox_binary}")
    note = f"a minimal root filesystem in {rootfs}"
    _start(plan, image_dir, note)
    plan.add(cmd("mkdir", "-p", *(str(rootfs / d) for d in ROOTFS_DIRS), note=note))
    plan.add(cmd("chmod", "1777", str(rootfs / "tmp"), note=note))
    plan.add(cmd("cp", busybox_binary, str(rootfs / "bin" / "busybox"), note=note))
    # run inside the rootfs, so the links point at /bin/busybox there, not at the host's path
    plan.add(cmd("chroot", str(rootfs), "/bin/busybox", "--install", "-s", note="busybox applet links"))
    plan.add(cmd("install", "-m", "644", "/dev/stdin", str(rootfs / "etc" / "passwd"), stdin=PASSWD,
                 note="users and groups"))
    plan.add(cmd("install", "-m", "644", "/dev/stdin", str(rootfs / "etc" / "group"), stdin=GROUP,
                 note="users and groups"))
    return plan


def import_tarball(image_dir: Path, tarball: str, name: str) -> Plan:
    plan = Plan(f"import image {name} from {tarball}")
    note = f"unpack {tarball} into {image_dir / 'rootfs'}"
    _start(plan, image_dir, note)
    plan.add(cmd("tar", "-C", str(image_dir / "rootfs"), "--numeric-owner", "-xpf", tarball, note=note))
    return plan


def remove(image_dir: Path, name: str) -> Plan:
    plan = Plan(f"remove image {name}")
    plan.add(cmd("rm", "-rf", "--one-file-system", str(image_dir), note=f"delete {image_dir}",
                 only_if=("test", "-d", str(image_dir))))
    return plan


# -- layers ------------------------------------------------------------------------------------------
TAR_XATTRS = ("--xattrs", "--xattrs-include=security.capability")
DECOMPRESS = {"": (), "gzip": ("--gzip",), "zstd": ("--zstd",), "bzip2": ("--bzip2",), "xz": ("--xz",)}


@dataclass(frozen=True)
class LayerUnpack:
    """One layer to unpack: where its blob lies, where it goes, and what the check decided."""

    diff_id: str
    host_path: str  # the blob, or the archive that holds it as `member`
    member: str | None
    compression: str
    target: Path  # DATA_DIR/layers/HEX
    partial: Path  # DATA_DIR/layers/HEX.partial
    link: Path  # DATA_DIR/l/SHORT
    index: LayerIndex
    generate: tuple[str, ...] = ()  # (python, --layer|--upper, DIR): the tar comes from wrapdock.layertar


def _tar_command(layer: LayerUnpack) -> tuple[str, ...]:
    """GNU tar into the layer's own empty directory: numeric owners, modes with setuid/setgid/sticky,
    file capabilities and no other xattr; whiteout files are left out (converted afterwards)."""
    options = ("--extract", "--same-permissions", "--numeric-owner", *TAR_XATTRS, "--exclude=.wh.*",
               *DECOMPRESS[layer.compression])
    if layer.generate:
        script = ('set -o pipefail; "$1" -m wrapdock.layertar "$2" "$3" | '
                  'tar "${@:5}" --file - --directory "$4"')
        return ("bash", "-c", script, "wrapdock-unpack", *layer.generate, str(layer.partial), *options)
    if layer.member is None:
        return ("tar", *options, "--file", layer.host_path, "--directory", str(layer.partial))
    # --occurrence=1: stop reading the archive once the member is out (without it, tar reads to the end:
    # 5 layers of an archive were 5 whole reads of it)
    script = ('set -o pipefail; tar --extract --to-stdout --occurrence=1 --file "$1" --no-wildcards -- "$2" | '
              'tar "${@:4}" --file - --directory "$3"')
    return ("bash", "-c", script, "wrapdock-unpack", layer.host_path, layer.member, str(layer.partial), *options)


def _conversions(layer: LayerUnpack) -> list[str]:
    """What tar cannot do: implied directories take the lower layer's attributes, whiteouts become
    0/0 character devices, opaque markers the trusted.overlay.opaque xattr; directory mtimes last."""
    root = layer.partial
    lines: list[str] = []
    implied = sorted(layer.index.implied.items())
    if implied:
        lines.append("mkdir -p " + " ".join(shlex.quote(str(root / p)) for p, _ in implied))
    for path, node in implied:
        target = shlex.quote(str(root / path))
        lines.append(f"chown {node.uid}:{node.gid} {target}")
        lines.append(f"chmod {node.mode:04o} {target}")  # after chown, which clears setuid/setgid
    for path in layer.index.whiteouts:
        lines.append(f"mknod {shlex.quote(str(root / path))} c 0 0")
    for path in layer.index.opaque:
        lines.append(f"setfattr -h -n trusted.overlay.opaque -v y {shlex.quote(str(root / path))}")
    for path, node in reversed(implied):
        lines.append(f"touch -h -d @{node.mtime} {shlex.quote(str(root / path))}")
    return lines


def unpack_layers(layers: list[LayerUnpack]) -> list[Step]:
    """Layers into the store in two processes (each step is a fork of wrapdock's Python process, ~5 ms,
    and a load used to run ~7 per layer): one script makes every layer's empty `.partial` directory
    (clearing what an interrupted load left) and the links' directory, then unpacks each layer into its
    own (GNU tar, then the conversions); one script moves them all into place and makes their short
    links. A failure half-way undoes what ran: the undos remove directories and links and never fail on
    what is not there."""
    if not layers:
        return []
    partials = " ".join(shlex.quote(str(layer.partial)) for layer in layers)
    what = ", ".join(layer.diff_id[7:19] for layer in layers)
    unpack_note = f"layers {what}: unpack, each into an empty directory of its own"
    lines = ["set -e", "# empty directories (and away with what an interrupted load left)",
             f"rm -rf --one-file-system {partials}", f"mkdir -p {partials} {shlex.quote(str(layers[0].link.parent))}"]
    for layer in layers:
        lines.append(f"# layer {layer.diff_id[:19]}: into {layer.partial.name}, then its whiteouts, opaque "
                     "directories and the attributes of implied directories")
        lines += [shlex.join(_tar_command(layer)), *_conversions(layer)]
    steps = [cmd("sh", "-s", note=unpack_note, partial=True, stdin=lines,
                 undo=cmd("rm", "-rf", "--one-file-system", *(str(layer.partial) for layer in layers),
                          note=unpack_note))]
    finish_note = f"layers {what}: into place, with their short names for overlay mounts"
    finish = ["set -e"]
    for layer in layers:
        finish.append(f"mv -T {shlex.quote(str(layer.partial))} {shlex.quote(str(layer.target))}")
        finish.append(f"ln -s ../layers/{shlex.quote(layer.target.name)} {shlex.quote(str(layer.link))}")
    undo = ["set -e", *(f"rm -f {shlex.quote(str(layer.link))}" for layer in reversed(layers)),
            "rm -rf --one-file-system " + " ".join(shlex.quote(str(layer.target)) for layer in reversed(layers))]
    steps.append(cmd("sh", "-s", note=finish_note, stdin=finish, partial=True,
                     undo=cmd("sh", "-s", note=finish_note, stdin=undo)))
    return steps


def unpack_layer(layer: LayerUnpack) -> list[Step]:
    return unpack_layers([layer])


def remove_layers(plan: Plan, layers: list[tuple[Path, Path]]) -> None:
    """Delete layers no image uses any more: their short link, then their directory."""
    for directory, short in layers:
        note = f"delete layer {directory.name[:12]} (no image uses it)"
        plan.add(cmd("rm", "-f", str(short), note=note))
        plan.add(cmd("rm", "-rf", "--one-file-system", str(directory), note=note,
                     only_if=("test", "-d", str(directory))))
