"""The layer check: every hostile member refused with its name, real-world layers decided right."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess

import pytest

from tests.imagefixtures import Member, docker_archive, layer_tar, oci_layout, sha
from wrapdock import imagearchives, imageconfig, imagerefs, layercheck
from wrapdock.errors import UsageError
from wrapdock.imagefs import ImageTree
from wrapdock.plans import image as image_plans

LOWER_WITH_SYMLINK = {"etc": layercheck.Node("symlink"), "tmp": layercheck.Node("dir", 0o1777, 0, 0, 5)}

HOSTILE = {
    "absolute": ([Member("/host/x", data=b"x")], "'/host/x' has an absolute path"),
    "dotdot": ([Member("a/../../host/x", data=b"x")], "holds '..'"),
    "symlink-then-write": ([Member("link", "symlink", target="/host"), Member("link/x", data=b"x")],
                           "'link/x' is written through 'link', a symlink of this layer"),
    "relative-symlink-escape": ([Member("up", "symlink", target="../../.."), Member("up/host/x", data=b"x")],
                                "written through 'up'"),
    "hardlink-absolute": ([Member("hl", "hardlink", target="/host/canary")], "'/host/canary' has an absolute path"),
    "hardlink-outside-layer": ([Member("hl", "hardlink", target="etc/passwd")], "not a regular file of this layer"),
    "hardlink-to-symlink": ([Member("s", "symlink", target="/host/canary"), Member("hl", "hardlink", target="s")],
                            "not a regular file of this layer"),
    "block-device": ([Member("dev/sda", "blk", devmajor=8)], "'dev/sda' is a device node"),
    "char-device": ([Member("dev/mem", "chr", devmajor=1, devminor=1)], "'dev/mem' is a device node"),
    "overlay-xattr": ([Member("d", "dir", xattrs={"trusted.overlay.opaque": "y"})], "trusted.overlay.opaque"),
    "selinux-xattr": ([Member("f", xattrs={"security.selinux": "x"})], "security.selinux"),
    "whiteout-dotdot": ([Member("a/.wh...", data=b"")], "whiteout of '..'"),
    "whiteout-dot": ([Member("a/.wh..", data=b"")], "whiteout of '.'"),
    "whiteout-empty": ([Member("a/.wh.", data=b"")], "whiteout of ''"),
    "root-not-dir": ([Member(".", "symlink", target="/")], "makes the layer's root a symlink"),
}


def check(members: list[Member], lower: layercheck.View | None = None) -> layercheck.CheckedLayer:
    return layercheck.check_layer(io.BytesIO(layer_tar(members)), lower or {})


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_is_refused_with_its_name(case: str) -> None:
    members, expected = HOSTILE[case]
    with pytest.raises(layercheck.UnsafeLayer) as refused:
        check(members)
    assert expected in refused.value.message
    assert "\n" not in refused.value.message


def test_a_layer_writing_through_a_lower_layers_symlink_is_refused() -> None:
    with pytest.raises(layercheck.UnsafeLayer, match="'etc/x' is written through the symlink 'etc' of a lower"):
        check([Member("etc/x", data=b"x")], LOWER_WITH_SYMLINK)
    # the same member over a lower directory is fine
    check([Member("etc/x", data=b"x")], {"etc": layercheck.Node("dir")})


def test_capabilities_setuid_absolute_symlinks_and_hardlinks_pass() -> None:
    layer = check([Member("bin", "dir"), Member("bin/ping", xattrs={"security.capability": "\x01"}),
                   Member("bin/su", mode=0o4755), Member("bin/sh", "symlink", target="/bin/busybox"),
                   Member("bin/su2", "hardlink", target="bin/su"), Member("up", "symlink", target="../../.."),
                   Member("fifo", "fifo"), Member("u", xattrs={"user.note": "x"})])
    assert layer.index.nodes["bin/su"].mode == 0o4755
    assert layer.index.whiteouts == [] and layer.index.opaque == []


def test_whiteouts_opaque_and_implied_directories() -> None:
    lower = {"tmp": layercheck.Node("dir", 0o1777, 0, 0, 5), "opt": layercheck.Node("dir"),
             "opt/data": layercheck.Node("dir"), "opt/data/a": layercheck.Node("file"), "etc": layercheck.Node("dir"),
             "etc/gone": layercheck.Node("file")}
    layer = check([Member("tmp/x", data=b"x"), Member("etc/.wh.gone"), Member("opt/data/.wh..wh..opq"),
                   Member("opt/data/c", data=b"c"), Member("new/.wh.again"), Member("new/again", data=b"1"),
                   Member("var/.wh.dir"), Member("var/dir/kept", data=b"k"), Member("x/.wh..wh.plnk")], lower)
    index = layer.index
    assert index.implied["tmp"] == layercheck.Node("dir", 0o1777, 0, 0, 5)  # not 0755: from the lower layer
    assert index.whiteouts == ["etc/gone"]  # new/again is made by this layer: no whiteout for it
    assert set(index.opaque) == {"opt/data", "var/dir"}  # whited out and made again: opaque
    merged = layercheck.apply(lower, index)
    assert "etc/gone" not in merged and "opt/data/a" not in merged and merged["opt/data/c"].kind == "file"
    assert merged["tmp"].mode == 0o1777


def test_diff_id_and_compression_are_computed_from_the_stream() -> None:
    raw = layer_tar([Member("a", data=b"a")])
    plain = layercheck.check_layer(io.BytesIO(raw), {})
    gz = layercheck.check_layer(io.BytesIO(gzip.compress(raw)), {})
    assert plain.diff_id == gz.diff_id == sha(raw)
    assert (plain.compression, gz.compression) == ("", "gzip")
    if shutil.which("zstd"):
        compressed = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
        zst = layercheck.check_layer(io.BytesIO(compressed), {})
        assert (zst.diff_id, zst.compression) == (sha(raw), "zstd")


def test_not_a_tar_is_refused() -> None:
    with pytest.raises(layercheck.UnsafeLayer, match="not a readable tar layer"):
        layercheck.check_layer(io.BytesIO(gzip.compress(b"garbage" * 100)), {})


def test_unpack_commands_are_gnu_tar_and_the_conversions() -> None:
    layer = check([Member("tmp/x", data=b"x"), Member("etc/.wh.gone"), Member("d/.wh..wh..opq")],
                  {"tmp": layercheck.Node("dir", 0o1777, 0, 0, 5)})
    from pathlib import Path

    unpack = image_plans.LayerUnpack(layer.diff_id, "/a/blob", None, "gzip", Path("/s/layers/h"),
                                     Path("/s/layers/h.partial"), Path("/s/l/h"), layer.index)
    text = "\n".join(" ".join(s.argv) + "\n" + "\n".join(s.stdin) for s in image_plans.unpack_layer(unpack))
    assert ("tar --extract --same-permissions --numeric-owner --xattrs --xattrs-include=security.capability "
            "'--exclude=.wh.*' --gzip --file /a/blob --directory /s/layers/h.partial") in text
    assert "chmod 1777 /s/layers/h.partial/tmp" in text
    assert "mknod /s/layers/h.partial/etc/gone c 0 0" in text
    assert "setfattr -h -n trusted.overlay.opaque -v y /s/layers/h.partial/d" in text
    assert "mv -T /s/layers/h.partial /s/layers/h" in text
    inside = image_plans.LayerUnpack(layer.diff_id, "/a/x.tar", "blobs/sha256/ab", "", Path("/s/layers/h"),
                                     Path("/s/layers/h.partial"), Path("/s/l/h"), layer.index)
    unpack, finish = image_plans.unpack_layer(inside)  # one process each
    assert unpack.stdin[5].startswith("bash -c ") and finish.undo is not None and unpack.undo is not None


# -- archives -----------------------------------------------------------------------------------------
def test_oci_layout_and_docker_archive_read_the_same_image(tmp_path) -> None:
    layers = [[Member("a", data=b"1")], [Member(".wh.a"), Member("b", data=b"2")]]
    settings = {"Cmd": ["/bin/sh"], "Env": ["A=1"]}
    oci = imagearchives.read(str(oci_layout(tmp_path / "oci", {"img": (layers, settings)})))
    docker = imagearchives.read(str(docker_archive(tmp_path / "d.tar", {"img": (layers, settings)})))
    assert [i.refs for i in oci] == [["img"]] and [i.refs for i in docker] == [["img:latest"]]
    assert oci[0].config["rootfs"] == docker[0].config["rootfs"]
    assert docker[0].layers[0].member.endswith("/layer.tar")
    with imagearchives.open_blob(docker[0].layers[1]) as handle:
        assert layercheck.check_layer(handle, {}).diff_id == docker[0].config["rootfs"]["diff_ids"][1]


def test_an_oci_tar_is_read_in_place(tmp_path) -> None:
    layout = oci_layout(tmp_path / "oci", {"img": ([[Member("a", data=b"1")]], None)})
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tmp_path / "o.tar"), "."], check=True)
    (image,) = imagearchives.read(str(tmp_path / "o.tar"))
    assert image.layers[0].member == "./blobs/sha256/" + image.layers[0].digest.split(":")[1]


@pytest.mark.parametrize("damage,expected", [
    ("digest", "invalid digest"), ("diff_ids", "1 layer(s) but its config 2"), ("arch", "is for s390x"),
    ("blob", "does not match its digest"),
])
def test_broken_archives_are_refused(tmp_path, damage: str, expected: str) -> None:
    layout = oci_layout(tmp_path / "oci", {"img": ([[Member("a", data=b"1")]], None)})
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    config_path = layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]
    if damage == "digest":
        index["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
        (layout / "index.json").write_text(json.dumps(index))
    elif damage in ("diff_ids", "arch"):
        config = json.loads(config_path.read_text())
        if damage == "diff_ids":
            config["rootfs"]["diff_ids"].append(config["rootfs"]["diff_ids"][0])
        else:
            config["architecture"] = "s390x"
        config_path.write_text(json.dumps(config))  # its digest no longer matches either: fix the manifest
        data = config_path.read_bytes()
        new = layout / "blobs/sha256" / sha(data).split(":")[1]
        new.write_bytes(data)
        manifest["config"].update(digest=sha(data), size=len(data))
        body = json.dumps(manifest).encode()
        (layout / "blobs/sha256" / sha(body).split(":")[1]).write_bytes(body)
        index["manifests"][0].update(digest=sha(body), size=len(body))
        (layout / "index.json").write_text(json.dumps(index))
    else:
        manifest_path.write_text(manifest_path.read_text() + " ")
    with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        imagearchives.read(str(layout))


# -- names and config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("given,canonical", [
    ("busybox", "busybox"), ("bb:latest", "bb"), ("docker.io/library/debian:12", "debian:12"),
    ("localhost/bb2:latest", "localhost/bb2"), ("registry.example:5000/a/b:v1", "registry.example:5000/a/b:v1"),
    ("library/x", "x"), ("web-snapshot", "web-snapshot"),
])
def test_image_names_are_normalized(given: str, canonical: str) -> None:
    assert imagerefs.normalize(given) == canonical


@pytest.mark.parametrize("bad", ["UPPER", "a b", "x@sha256:00", "a:b:c", "/abs", ""])
def test_bad_image_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid image name"):
        imagerefs.normalize(bad)


def test_entrypoint_and_cmd_follow_dockers_rules() -> None:
    settings = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}
    assert imageconfig.command(settings, (), None, "i", True) == ("/bin/sh", "-c", "echo hi")
    assert imageconfig.command(settings, ("date",), None, "i", True) == ("/bin/sh", "-c", "date")
    assert imageconfig.command(settings, (), "/bin/env", "i", True) == ("/bin/env",)
    assert imageconfig.command(settings, ("x",), "", "i", True) == ("x",)
    assert imageconfig.command({}, (), None, "busybox", False) == ("sh",)
    with pytest.raises(UsageError, match="no command specified"):
        imageconfig.command({}, (), None, "i", True)
    assert imageconfig.environment({"Env": ["A=1", "B=2"]}, ("B=3",)) == ("A=1", "B=3")
    assert imageconfig.exposed_ports({"ExposedPorts": {"8080/tcp": {}, "53/udp": {}}}) == ["8080/tcp", "53/udp"]


def test_users_come_from_the_images_passwd_through_its_layers(tmp_path) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    (low / "etc").mkdir(parents=True)
    (low / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (low / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    (high / "usr/bin").mkdir(parents=True)
    (high / "usr/bin/python3").write_text("")
    (high / "bin").symlink_to("usr/bin")
    tree = ImageTree([str(high), str(low)])
    assert imageconfig.resolve_user("app", tree).text() == "1000:1001"
    assert imageconfig.resolve_user("app:staff", tree).text() == "1000:50"
    assert imageconfig.resolve_user("4242", tree).text() == "4242:0"
    with pytest.raises(UsageError, match="unable to find user nobody"):
        imageconfig.resolve_user("nobody", tree)
    assert imageconfig.find_program("python3", ("PATH=/bin",), "/usr/bin", tree) == "/bin/python3"
    assert imageconfig.find_program("perl", (), "/usr/bin:/bin", tree) is None


def test_a_layer_directory_becomes_the_same_tar_every_time(tmp_path) -> None:
    from wrapdock import layertar

    root = tmp_path / "layer"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/passwd.hardlink").hardlink_to(root / "etc/passwd")
    (root / "bin").mkdir()
    (root / "bin/sh").symlink_to("/bin/busybox")
    (root / "proc").mkdir()  # an init mount point: only left out of a container's upper directory
    first, second = io.BytesIO(), io.BytesIO()
    layertar.write(str(root), first)
    layertar.write(str(root), second)
    assert first.getvalue() == second.getvalue()
    checked = layercheck.check_layer(io.BytesIO(first.getvalue()), {})
    assert (checked.diff_id, checked.size) == layertar.digest(str(root))
    assert set(checked.index.nodes) == {"bin", "bin/sh", "etc", "etc/passwd", "etc/passwd.hardlink", "proc"}
    upper = io.BytesIO()
    layertar.write(str(root), upper, upper=True)
    assert "proc" not in layercheck.check_layer(io.BytesIO(upper.getvalue()), {}).index.nodes


def test_docker_25_archive_reads_its_manifest_json_not_its_index(tmp_path) -> None:
    """Docker >= 25 writes an OCI layout and a manifest.json; 25.0's index could list no layers."""
    layout = oci_layout(tmp_path / "d25", {"latest": ([[Member("a", data=b"1")]], {"Cmd": ["/a"]})}, compress=False)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    (layout / "manifest.json").write_text(json.dumps([{
        "Config": "blobs/sha256/" + manifest["config"]["digest"].split(":")[1], "RepoTags": ["docker.io/library/x:1"],
        "Layers": ["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]}]))
    (image,) = imagearchives.read(str(layout))
    assert image.refs == ["docker.io/library/x:1"] and imagerefs.normalize(image.refs[0]) == "x:1"
    assert image.layers[0].digest == manifest["layers"][0]["digest"]


def test_overlay_mount_options_stay_within_a_page() -> None:
    from wrapdock import imagestore

    short = [f"/var/lib/wrapdock/l/{i:020x}" for i in range(90)]
    imagestore.check_mount_data(short, "/var/lib/wrapdock/containers/x/upper", "/var/lib/wrapdock/containers/x/work")
    with pytest.raises(UsageError, match="exceed the kernel's 4096-byte limit"):
        imagestore.check_mount_data(short * 2, "/u", "/w")
    with pytest.raises(UsageError, match="holds ':' or ','"):
        imagestore.check_mount_data(["/a:b"], "/u", "/w")
