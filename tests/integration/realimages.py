"""Images made by real tools (umoci, skopeo, buildah, debootstrap), never by wrapdock, for the image tests.

Each recipe is a bash script; its output is cached outside the repository under
$WRAPDOCK_TEST_IMAGES (default /var/tmp/wrapdock-test-images)/NAME-<sha of the script>/, so a test run
builds each at most once (debootstrap: ~40 s and ~250 MB) and a changed recipe builds afresh. A build
runs under a lock (parallel test runs wait for each other), in its own mount namespace when it needs
one (buildah and skopeo write a cache into /var/lib/containers whatever --root says: there it lands
in a copy-on-write overlay that vanishes with the namespace), and is renamed into place when complete.

`python -m tests.integration.realimages NAME...` builds them ahead of a test run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("WRAPDOCK_TEST_IMAGES", "/var/tmp/wrapdock-test-images"))

# Runs in an empty $OUT with $BUSYBOX; two images in one OCI layout: bb (1 layer) and bb2 (2 layers:
# a new file, a deleted file, a replaced directory as per-file whiteouts, a dir implied under /tmp).
UMOCI = r"""
cd "$OUT"
umoci init --layout oci
umoci new --image oci:bb
umoci unpack --image oci:bb b1
R=b1/rootfs
mkdir -p $R/bin $R/etc $R/tmp $R/opt/data $R/root $R/proc $R/sys $R/dev
chmod 1777 $R/tmp
cp "$BUSYBOX" $R/bin/busybox
chroot $R /bin/busybox --install -s /bin
printf '%s\n' root:x:0:0:root:/root:/bin/sh nobody:x:65534:65534:nobody:/:/bin/false \
  app:x:1000:1000:app:/home/app:/bin/sh > $R/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\n' > $R/etc/group
echo 'delete me in layer 2' > $R/etc/to-delete
echo a > $R/opt/data/a; echo b > $R/opt/data/b
mkdir -p $R/home/app && chown 1000:1000 $R/home/app
cp "$BUSYBOX" $R/bin/suid-busybox && chmod 4755 $R/bin/suid-busybox
ln $R/etc/passwd $R/etc/passwd.hardlink
umoci repack --image oci:bb b1
umoci config --image oci:bb --config.cmd /bin/sh --config.env PATH=/bin:/usr/bin:/sbin:/usr/sbin
umoci unpack --image oci:bb b2
R=b2/rootfs
echo 'hello from layer 2' > $R/hello.txt
echo new > $R/tmp/new
rm $R/etc/to-delete
rm -rf $R/opt/data && mkdir $R/opt/data && echo c > $R/opt/data/c
umoci repack --image oci:bb2 b2
umoci config --image oci:bb2 --config.entrypoint /bin/sh --config.entrypoint -c \
  --config.cmd 'echo hi; cat /hello.txt' --config.env GREETING=hello --config.workingdir /home/app \
  --config.user app --config.exposedports 8080/tcp --config.label org.example=wrapdock
rm -rf b1 b2
"""

# skopeo (from the umoci layout): the same image as docker-archive, as oci-archive, with zstd layers
SKOPEO = r"""
cd "$OUT"
copy() { skopeo --insecure-policy copy "$@"; }
copy "oci:$UMOCI_OCI:bb2" "docker-archive:$OUT/bb2.docker.tar:bb2:latest"
copy "oci:$UMOCI_OCI:bb2" "oci-archive:$OUT/bb2.oci.tar:bb2"
copy --dest-compress-format zstd "oci:$UMOCI_OCI:bb2" "oci:$OUT/zstd:bb2zst"
grep -q 'tar+zstd' zstd/blobs/sha256/* || { echo "skopeo wrote no zstd layer" >&2; exit 1; }
"""

# buildah: bb2 has an opaque directory (/opt/data replaced in one commit), pushed with Docker media types
BUILDAH = r"""
export TMPDIR=$OUT/tmp; mkdir -p $TMPDIR
B=$OUT/b
bh() { buildah --root $B/root --runroot $B/run --storage-driver overlay "$@"; }
C=$OUT/ctx/rootfs; mkdir -p $C/bin $C/etc $C/tmp $C/opt/data $C/home/app
chmod 1777 $C/tmp
cp "$BUSYBOX" $C/bin/busybox
chroot $C /bin/busybox --install -s /bin
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' > $C/etc/passwd
printf 'root:x:0:\napp:x:1000:\n' > $C/etc/group
echo a > $C/opt/data/a; echo b > $C/opt/data/b
c1=$(bh from scratch)
bh copy $c1 $C/ /
bh config --cmd /bin/sh --env PATH=/bin:/usr/bin:/sbin:/usr/sbin $c1
bh commit -q $c1 bb1
c2=$(bh from bb1)
m=$(bh mount $c2)
rm -rf $m/opt/data; mkdir $m/opt/data; echo c > $m/opt/data/c
bh umount $c2
bh config --cmd '["ls","/opt/data"]' --label built-by=buildah $c2
bh commit -q $c2 bb2
bh push -q --format docker bb2 oci:$OUT/oci-docker:bhbb2
grep -q 'application/vnd.docker.image.rootfs.diff.tar.gzip' $OUT/oci-docker/blobs/sha256/* \
  || { echo "buildah wrote no Docker media types" >&2; exit 1; }
for b in $OUT/oci-docker/blobs/sha256/*; do tar -tzf $b 2>/dev/null || true; done | grep -q 'opt/data/.wh..wh..opq' \
  || { echo "buildah wrote no opaque marker" >&2; exit 1; }
bh rm --all >/dev/null
rm -rf $B $OUT/ctx $TMPDIR
"""

# debootstrap minbase + python3 as a 2-layer OCI image: GNU tar makes the layers, umoci adds them; layer 2
# adds the user app and deletes /etc/motd (a whiteout)
DEBIAN = r"""
cd "$OUT"
SECONDS=0
debootstrap --variant=minbase --include=python3 bookworm rootfs http://deb.debian.org/debian >debootstrap.log 2>&1 \
  || { tail -20 debootstrap.log >&2; exit 1; }
echo "debootstrap: ${SECONDS}s" >>times.log
rm -rf rootfs/var/cache/apt/archives/*.deb rootfs/var/lib/apt/lists/* rootfs/dev/*
tar -C rootfs --numeric-owner -cf layer1.tar .
mkdir -p l2/etc l2/home/app && chown 1000:1000 l2/home/app
cp rootfs/etc/passwd rootfs/etc/group l2/etc/
echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> l2/etc/passwd
echo 'app:x:1000:' >> l2/etc/group
: > l2/etc/.wh.motd
tar -C l2 --numeric-owner -cf layer2.tar etc/passwd etc/group etc/.wh.motd home/app
umoci init --layout oci
umoci new --image oci:deb
umoci raw add-layer --image oci:deb layer1.tar
umoci raw add-layer --image oci:deb layer2.tar
umoci config --image oci:deb --config.cmd /bin/bash \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
rm -rf rootfs l2 layer1.tar layer2.tar
echo "total: ${SECONDS}s" >>times.log
"""

RECIPES = {"umoci": UMOCI, "skopeo": SKOPEO, "buildah": BUILDAH, "debian": DEBIAN}
TOOLS = {"umoci": ["umoci"], "skopeo": ["skopeo", "umoci"], "buildah": ["buildah", "getfattr"],
         "debian": ["debootstrap", "umoci"]}
PRIVATE_VAR_LIB = r"""
mount --make-rprivate /
mkdir -p "$OUT/.varlib/upper" "$OUT/.varlib/work"
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$OUT/.varlib/upper,workdir=$OUT/.varlib/work" /var/lib
"""


def missing_tools(name: str) -> list[str]:
    return [tool for tool in TOOLS[name] if shutil.which(tool) is None]


def build(name: str) -> Path:
    """The cached output directory of a recipe, built now if needed."""
    env = {**os.environ, "BUSYBOX": shutil.which("busybox") or "/bin/busybox"}
    script = RECIPES[name]
    if name == "skopeo":
        env["UMOCI_OCI"] = str(build("umoci") / "oci")
        script = f"# from {env['UMOCI_OCI']}\n{script}"  # a rebuilt umoci layout means a rebuild here too
    key = hashlib.sha256(script.encode()).hexdigest()[:16]
    out = CACHE / f"{name}-{key}"
    if out.is_dir():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_dir():
            return out
        partial = CACHE / f".{name}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        env["OUT"] = str(partial)
        body = "set -euo pipefail\n" + (PRIVATE_VAR_LIB if name in ("skopeo", "buildah") else "") + script
        argv = ["unshare", "--mount", "--fork", "bash", "-c", body]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        shutil.rmtree(partial / ".varlib", ignore_errors=True)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"building the {name} test image failed:\n{proc.stderr[-3000:]}")
        partial.rename(out)
    return out


if __name__ == "__main__":
    for wanted in sys.argv[1:] or list(RECIPES):
        print(build(wanted))
