"""Images are plain root filesystems (one directory each, no layer chains); these steps make them."""

from __future__ import annotations

from pathlib import Path

from wrapdock.plan import Plan, cmd

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


def commit(image_dir: Path, name: str, container: str, upper: Path, lower: Path, mountpoint: Path) -> Plan:
    """Flatten the container's layer over its image: a read-only overlay of both, copied out."""
    plan = Plan(f"commit container {container} as image {name}")
    note = f"copy {container}'s files (its layer over its image) into {image_dir / 'rootfs'}"
    _start(plan, image_dir, note)
    plan.add(cmd("mkdir", "-p", str(mountpoint), note=note,
                 undo=cmd("rmdir", str(mountpoint), note=note, only_if=("test", "-d", str(mountpoint)))))
    plan.add(cmd("mount", "-t", "overlay", f"wrapdock-commit-{name}", "-o", f"ro,lowerdir={upper}:{lower}",
                 str(mountpoint), note=note,
                 undo=cmd("umount", str(mountpoint), note=note, only_if=("mountpoint", "-q", str(mountpoint)))))
    plan.add(cmd("cp", "-a", f"{mountpoint}/.", str(image_dir / "rootfs") + "/", note=note))
    plan.add(cmd("umount", str(mountpoint), note=note))
    plan.add(cmd("rmdir", str(mountpoint), note=note))
    return plan


def remove(image_dir: Path, name: str) -> Plan:
    plan = Plan(f"remove image {name}")
    plan.add(cmd("rm", "-rf", "--one-file-system", str(image_dir), note=f"delete {image_dir}",
                 only_if=("test", "-d", str(image_dir))))
    return plan
