"""Real images (issue 15) end to end in sandbox hosts: archives made by umoci, skopeo, buildah and
debootstrap are loaded, their layers stored once, their config honoured; hostile layers are refused
before anything is written; a distroless image starts, execs and stops; nothing is left after rm.
"""

from __future__ import annotations

import json

import pytest

from tests.imagefixtures import Member, docker_archive, hello_program, oci_layout, pause_program
from tests.integration import realimages
from tests.integration.containerlab import (
    DATA_DIR,
    assert_clean,
    container_dirs,
    leftover_mounts,
    netns_list,
    usage_error,
    wait_for,
    wd,
)
from tests.integration.ctnet import Host
from tests.integration.test_cni_clients import Podman
from tests.integration.test_cni_clients import missing_tools as podman_missing
from tests.sandbox import OUTSIDE_NS, UPLINK_IP

pytestmark = pytest.mark.integration

CANARY_DIR = "/run/canary"
CANARY = f"{CANARY_DIR}/canary"


@pytest.fixture(scope="session")
def real_image():
    """Build (or reuse from the cache) the images of a recipe of tests/integration/realimages.py."""
    def get(name: str):
        missing = realimages.missing_tools(name)
        if missing:
            pytest.fail(f"{', '.join(missing)} not installed: run ./scripts/setup --tests")
        return realimages.build(name)
    return get


def store_listing(box) -> dict[str, list[str]]:
    """What the image store holds: layer directories, short links, image records and directories."""
    listing = {}
    for part in ("layers", "l", "images"):
        out = box.bash(f"ls -A {DATA_DIR}/{part} 2>/dev/null || true").stdout
        listing[part] = sorted(out.split())
    return listing


def run_out(box, *args: str) -> str:
    return wd(box, "run", "--rm", *args).stdout


# -- hostile layers ----------------------------------------------------------------------------------------
# Each would write to the host's canary (or beside it) if unpacked naively into a flattened tree.
HOSTILE = {
    "absolute": ([Member(f"{CANARY}", data=b"owned")], f"'{CANARY}' has an absolute path"),
    "dotdot": ([Member("../../../canary/canary", data=b"owned")], "'../../../canary/canary' holds '..'"),
    "symlink-then-write": ([Member("link", "symlink", target=CANARY_DIR), Member("link/canary", data=b"owned")],
                           "'link/canary' is written through 'link'"),
    "hardlink-to-host": ([Member("hl", "hardlink", target=CANARY), Member("hl", data=b"owned")],
                         f"'{CANARY}' has an absolute path"),
    "hardlink-relative": ([Member("hl", "hardlink", target="../../../canary/canary")], "holds '..'"),
    "device": ([Member("dev/sda", "blk", devmajor=8)], "'dev/sda' is a device node"),
    "overlay-xattr": ([Member("opt", "dir", xattrs={"trusted.overlay.opaque": "y"})],
                      "'opt' sets the xattr trusted.overlay.opaque"),
    "security-xattr": ([Member("bin/x", xattrs={"security.selinux": "unconfined_u"})], "security.selinux"),
    "whiteout-dotdot": ([Member("etc/.wh...")], "whiteout of '..'"),
    # layer 1 makes etc a symlink to the canary's directory; layer 2 writes etc/canary
    "through-lower-symlink": ([Member("etc/canary", data=b"owned")],
                              "'etc/canary' is written through the symlink 'etc' of a lower layer"),
}


def test_hostile_layers_are_refused_before_anything_is_written(sandbox, tmp_path):
    box = sandbox
    box.bash(f"mkdir -p {CANARY_DIR} && echo canary > {CANARY}")
    for case, (members, expected) in HOSTILE.items():
        base = [Member("etc", "symlink", target=CANARY_DIR)] if case == "through-lower-symlink" else [
            Member("etc", "dir")]
        layout = oci_layout(tmp_path / case, {"evil": ([base, members], {"Cmd": ["/x"]})})
        error = usage_error(box, "image", "load", "-i", str(layout))
        assert expected in error, (case, error)
        assert "layer 2" in error, (case, error)
    # a docker-save tarball goes through the same check
    archive = docker_archive(tmp_path / "evil.tar", {"evil": ([HOSTILE["symlink-then-write"][0]], None)})
    assert "written through 'link'" in usage_error(box, "image", "load", "-i", str(archive))
    # the canary is untouched, nothing was written beside it or into the store
    assert box.bash(f"cat {CANARY}; ls -A {CANARY_DIR}").stdout.split() == ["canary", "canary"]
    assert store_listing(box) == {"layers": [], "l": [], "images": []}
    # and the same layers are accepted once the hostile member is gone (the check is not refusing all)
    fine = oci_layout(tmp_path / "fine", {"fine": ([[Member("etc", "dir")], [Member("etc/canary", data=b"ok")]],
                                                   {"Cmd": ["/x"]})})
    wd(box, "image", "load", "-i", str(fine))
    assert box.bash(f"cat {CANARY}").stdout == "canary\n"


# -- images made by real tools -------------------------------------------------------------------------------
def test_umoci_image_runs_with_its_config_and_layers_are_shared(sandbox, real_image):
    box = sandbox
    layout = real_image("umoci") / "oci"
    # --print-only: the unpacking is commands (GNU tar, mknod, ...) and nothing changes
    script = wd(box, "--print-only", "image", "load", "-i", str(layout)).stdout
    assert "tar --extract --same-permissions --numeric-owner --xattrs --xattrs-include=security.capability" in script
    assert "mknod " in script and "/etc/to-delete c 0 0" in script
    assert store_listing(box) == {"layers": [], "l": [], "images": []}

    assert wd(box, "image", "load", "-i", str(layout)).stdout == "Loaded image: bb\nLoaded image: bb2\n"
    listing = {line.split()[0]: line.split() for line in wd(box, "image", "ls").stdout.splitlines()[1:]}
    assert listing["bb"][5] == "1" and listing["bb2"][5] == "2", listing  # LAYERS
    assert len(store_listing(box)["layers"]) == 2  # bb's layer is bb2's first: stored once

    # Entrypoint + Cmd, User (a name of the image's passwd), WorkingDir, Env
    assert run_out(box, "bb2") == "hi\nhello from layer 2\n"
    probe = ("id -u; id -g; pwd; echo $GREETING; ls /opt/data; test -e /etc/to-delete || echo gone; "
             "stat -c %a /tmp; cat /tmp/new; stat -c %a /bin/suid-busybox; stat -c %h /etc/passwd")
    assert run_out(box, "bb2", probe).split() == ["1000", "1000", "/home/app", "hello", "c", "gone", "1777", "new",
                                                  "4755", "2"]
    # the image below (bb) still has what bb2 deleted or replaced
    assert run_out(box, "bb", "sh", "-c", "ls /opt/data; cat /etc/to-delete").split() == [
        "a", "b", "delete", "me", "in", "layer", "2"]
    # -u, -w, -e and --entrypoint override the config
    assert run_out(box, "-u", "0", "-w", "/tmp", "-e", "GREETING=bye", "bb2", "id -u; pwd; echo $GREETING").split(
    ) == ["0", "/tmp", "bye"]
    assert run_out(box, "--entrypoint", "/bin/cat", "bb2", "/hello.txt") == "hello from layer 2\n"
    (view,) = json.loads(wd(box, "image", "inspect", "bb2").stdout)
    assert view["Config"]["Labels"] == {"org.example": "wrapdock"}
    assert view["Config"]["ExposedPorts"] == {"8080/tcp": {}} and len(view["RootFS"]["Layers"]) == 2

    # -P publishes the image's ExposedPorts (8080/tcp) to a free host port: a page from the outside
    box.add_outside()
    host = Host(box)
    host.network("pnet", "10.79.0.0/24")
    wd(box, "run", "-d", "--name", "web", "--net", "pnet", "-P", "--entrypoint", "/bin/httpd", "bb2",
       "-f", "-p", "8080", "-h", "/opt")
    (line,) = wd(box, "port", "web").stdout.splitlines()
    assert line.startswith("8080/tcp -> 0.0.0.0:"), line
    host.wait_http(f"http://{UPLINK_IP}:{line.rpartition(':')[2]}/data/c", "c", where=OUTSIDE_NS)
    wd(box, "rm", "-f", "web")
    wd(box, "network", "rm", "pnet")

    # exec as the image's user, and as root with -u
    wd(box, "run", "-d", "--name", "c1", "bb2", "exec sleep 1000")
    assert box.wrapdock("--quiet", "exec", "c1", "id", "-u").stdout == "1000\n"
    assert box.wrapdock("--quiet", "exec", "-u", "root", "c1", "id", "-u").stdout == "0\n"
    wd(box, "image", "tag", "bb2", "bb2:v2")
    assert "used by container(s) c1" in usage_error(box, "image", "rm", "bb2")
    wd(box, "rm", "-f", "c1")

    # rm keeps the layers another image still uses, and removes the rest with the last user
    wd(box, "image", "rm", "bb2")
    assert len(store_listing(box)["layers"]) == 2  # bb2:v2 still has them
    wd(box, "image", "rm", "bb2:v2")
    assert len(store_listing(box)["layers"]) == 1 and len(store_listing(box)["l"]) == 1  # bb's
    wd(box, "image", "rm", "bb")
    assert store_listing(box) == {"layers": [], "l": [], "images": []}
    assert container_dirs(box) == [] and netns_list(box) == [OUTSIDE_NS]


def test_skopeo_formats_docker_archive_oci_archive_and_zstd_share_layers(sandbox, real_image):
    box = sandbox
    out = real_image("skopeo")
    wd(box, "image", "load", "-i", str(out / "bb2.docker.tar"), "--name", "from-docker")
    wd(box, "image", "load", "--input", str(out / "bb2.oci.tar"), "--name", "from-ocitar")
    assert wd(box, "image", "load", "-i", str(out / "zstd")).stdout == "Loaded image: bb2zst\n"
    for name in ("from-docker", "from-ocitar", "bb2zst"):
        assert run_out(box, name) == "hi\nhello from layer 2\n", name
        assert run_out(box, name, "ls /opt/data; test -e /etc/to-delete || echo gone").split() == ["c", "gone"]
    # the same diff_ids whatever the format or compression: two layers in the store for the three images
    assert len(store_listing(box)["layers"]) == 2
    # the same image again is nothing new; another image under a taken name is refused
    assert wd(box, "image", "load", "-i", str(out / "zstd")).stdout == "Loaded image: bb2zst\n"
    umoci_layout = real_image("umoci") / "oci"
    wd(box, "image", "tag", "from-docker", "bb")
    assert "'bb' already exists (another image)" in usage_error(box, "image", "load", "-i", str(umoci_layout))
    wd(box, "image", "rm", "bb")
    for name in ("from-docker", "from-ocitar", "bb2zst"):
        wd(box, "image", "rm", name)
    assert store_listing(box) == {"layers": [], "l": [], "images": []}


def test_buildah_opaque_directory_with_docker_media_types(sandbox, real_image):
    box = sandbox
    wd(box, "image", "load", "-i", str(real_image("buildah") / "oci-docker"))
    # the opaque marker hides the lower layer's /opt/data/a and b: only c is left
    assert run_out(box, "bhbb2") == "c\n"
    marked = box.bash(f"cd {DATA_DIR}/layers && for d in */; do getfattr -h --only-values -n trusted.overlay.opaque "
                      "$d/opt/data 2>/dev/null && echo \" $d\"; done; true").stdout
    assert marked.startswith("y"), marked
    (view,) = json.loads(wd(box, "image", "inspect", "bhbb2").stdout)
    assert view["Config"]["Labels"]["built-by"] == "buildah"
    wd(box, "image", "rm", "bhbb2")
    assert store_listing(box) == {"layers": [], "l": [], "images": []}


def test_distroless_image_starts_execs_and_stops_with_nothing_of_its_own(sandbox, tmp_path):
    box = sandbox
    cap_net_raw = (b"\x01\x00\x00\x02" + b"\x00\x20\x00\x00" + b"\x00" * 12).decode("utf-8", "surrogateescape")
    layers = [[Member("app", "dir"), Member("app/pause", data=pause_program(), mode=0o755),
               Member("app/hello", data=hello_program(), mode=0o755),
               Member("app/ping", data=hello_program(), mode=0o4755, xattrs={"security.capability": cap_net_raw})]]
    wd(box, "image", "load", "-i", str(oci_layout(tmp_path / "dl", {"distroless": (layers, {"Entrypoint": [
        "/app/pause"]})})))
    assert run_out(box, "--entrypoint", "/app/hello", "distroless") == "hello from a static binary\n"
    # setuid and the file capability survive the unpacking
    assert box.bash(f"cd {DATA_DIR}/layers/* && stat -c %a app/ping && "
                    "getfattr -h -e hex -n security.capability app/ping").stdout.split() == [
        "4755", "#", "file:", "app/ping", "security.capability=0x0100000200200000000000000000000000000000"]
    wd(box, "run", "-d", "--name", "dl", "distroless")
    assert box.wrapdock("--quiet", "exec", "dl", "/app/hello").stdout == "hello from a static binary\n"
    assert box.bash(f"ls {DATA_DIR}/containers/*/upper/bin 2>/dev/null || echo none").stdout == "none\n"
    wd(box, "stop", "-t", "1", "dl")
    wait_for(lambda: json.loads(wd(box, "ps", "-a", "--format", "json").stdout)[0]["state"]["status"] != "running",
             what="dl stopped")
    wd(box, "start", "dl")
    assert box.wrapdock("--quiet", "exec", "dl", "/app/hello").stdout == "hello from a static binary\n"
    wd(box, "rm", "-f", "dl")
    wd(box, "image", "rm", "distroless")
    assert_clean(box)


def test_debian_image_real_userland_web_server_through_p_and_non_root_exec(sandbox, real_image, tmp_path):
    box = sandbox
    box.add_outside()
    host = Host(box)
    wd(box, "image", "load", "-i", str(real_image("debian") / "oci"), timeout=300)
    assert "apt" in run_out(box, "deb", "apt-get", "--version").splitlines()[0]
    assert run_out(box, "deb", "sh", "-c", "test -e /etc/motd || echo gone; readlink /proc/1/exe").split() == [
        "gone", "/usr/bin/dash"]  # the image's own shell, not the host's busybox
    host.network("webnet", "10.78.0.0/24")
    (tmp_path / "index.html").write_text("from debian\n")
    tmp_path.chmod(0o755)  # the server runs as app (uid 1000)
    wd(box, "run", "-d", "--name", "web", "--net", "webnet", "-p", "8090:8000", "-v", f"{tmp_path}:/srv:ro",
       "-w", "/srv", "-u", "app", "deb", "python3", "-m", "http.server", "8000")
    host.wait_http(f"http://{UPLINK_IP}:8090/index.html", "from debian", where=OUTSIDE_NS, seconds=60)
    assert box.wrapdock("--quiet", "exec", "web", "id", "-un").stdout == "app\n"
    assert box.wrapdock("--quiet", "exec", "-u", "0", "web", "id", "-un").stdout == "root\n"
    wd(box, "rm", "-f", "web")
    wd(box, "network", "rm", "webnet")
    wd(box, "image", "rm", "deb")
    assert store_listing(box) == {"layers": [], "l": [], "images": []}
    assert container_dirs(box) == [] and netns_list(box) == [OUTSIDE_NS]
    assert [m for m in leftover_mounts(box) if "/run/netns/outside" not in m] == []


def test_commit_adds_a_layer_and_save_writes_archives_real_tools_read(sandbox, real_image, tmp_path):
    box = sandbox
    wd(box, "image", "load", "-i", str(real_image("umoci") / "oci"))
    wd(box, "run", "-d", "--name", "c1", "-u", "0", "bb2", "exec sleep 1000")
    change = "echo new > /added; rm /hello.txt; rm -rf /opt/data; mkdir /opt/data; echo d > /opt/data/d"
    wd(box, "exec", "c1", "sh", "-c", change)
    wd(box, "stop", "-t", "0", "c1")
    assert wd(box, "commit", "c1", "snap").stdout == "snap\n"
    (view,) = json.loads(wd(box, "image", "inspect", "snap").stdout)
    assert len(view["RootFS"]["Layers"]) == 3 and view["Config"]["Labels"] == {"org.example": "wrapdock"}
    top = view["RootFS"]["Layers"][2].split(":")[1]
    # the init's mount points and /etc files are not part of the layer; a whiteout and an opaque dir are
    layer = f"{DATA_DIR}/layers/{top}"
    assert box.bash(f"cd {layer} && ls -A . etc; stat -c %F hello.txt").stdout.split() == [
        ".:", "added", "etc", "hello.txt", "opt", "etc:", "character", "special", "file"]  # etc: only copied up
    assert box.bash(f"getfattr -h --only-values -n trusted.overlay.opaque {layer}/opt/data").stdout == "y"
    probe = "cat /added; test -e /hello.txt || echo gone; ls /opt/data"
    assert run_out(box, "-u", "0", "snap", probe).split() == ["new", "gone", "d"]

    oci, docker = tmp_path / "snap.oci.tar", tmp_path / "snap.docker.tar"
    assert wd(box, "image", "save", "-o", str(oci), "snap").stdout == "snap\n"
    wd(box, "image", "save", "--format", "docker", "-o", str(docker), "snap", "bb")
    for reference in (f"oci-archive:{oci}:snap", f"docker-archive:{docker}:snap:latest"):
        proc = box.sh("skopeo", "inspect", reference, check=False)
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)["Layers"]) == 3, reference
    box.bash(f"mkdir {tmp_path}/layout && tar -C {tmp_path}/layout -xf {oci} && "
             f"umoci unpack --image {tmp_path}/layout:snap {tmp_path}/bundle")
    assert box.bash(f"cd {tmp_path}/bundle/rootfs && cat added && ls opt/data && ls hello.txt 2>&1; true").stdout.split(
    ) == ["new", "d", "ls:", "cannot", "access", "'hello.txt':", "No", "such", "file", "or", "directory"]
    # and wrapdock loads its own archives: the same files
    wd(box, "image", "load", "-i", str(docker), "--name", "again", code=2)  # two images: --name refused
    wd(box, "image", "load", "-i", str(oci), "--name", "again")
    assert run_out(box, "-u", "0", "again", probe).split() == ["new", "gone", "d"]
    # podman 4.3 loads both formats (in the sandbox's own storage: tmpfs over /var/lib, see Podman) and runs the
    # image with its config (Entrypoint sh -c, Cmd replaced) and its three layers (the whiteout, the opaque dir)
    reason = podman_missing()
    assert reason is None, reason
    (tmp_path / "podman").mkdir()
    podman = Podman(box, tmp_path / "podman")
    for archive in (oci, docker):
        podman("load", "-i", str(archive))
        assert podman("image", "inspect", "--format", "{{len .RootFS.Layers}} {{json .Config.Labels}}",
                      "localhost/snap:latest").stdout.split() == ["3", '{"org.example":"wrapdock"}']
        out = podman("run", "--rm", "--network", "none", "-u", "0", "localhost/snap:latest", probe).stdout
        assert out.split() == ["new", "gone", "d"], archive
        podman("rmi", "localhost/snap:latest")
    wd(box, "rm", "c1")
    for name in ("snap", "again", "bb2", "bb"):
        wd(box, "image", "rm", name)
    assert store_listing(box) == {"layers": [], "l": [], "images": []}


def test_load_rolls_back_a_fault_at_every_step(sandbox, real_image):
    box = sandbox
    layout = str(real_image("umoci") / "oci")
    for step in range(1, 40):
        proc = box.wrapdock("--quiet", "image", "load", "-i", layout, check=False, env={"WRAPDOCK_FAIL_AT": str(step)})
        if proc.returncode == 0:
            break
        assert proc.returncode == 1 and "injected fault" in proc.stderr, proc.stderr
        assert store_listing(box) == {"layers": [], "l": [], "images": []}, step
    else:
        raise AssertionError("the load never got through")
    assert step == 3  # two layers: one script unpacks both, one puts them in place with their links
    assert run_out(box, "bb2") == "hi\nhello from layer 2\n"


def test_the_print_only_script_of_a_load_unpacks_the_same_layers(sandbox, sandbox_factory, real_image, tmp_path):
    layout = str(real_image("umoci") / "oci")
    script = tmp_path / "load.sh"
    script.write_text(wd(sandbox, "--print-only", "image", "load", "-i", layout).stdout)
    wd(sandbox, "image", "load", "-i", layout)
    other = sandbox_factory()
    other.bash(f"bash {script}", timeout=120)  # wrapdock never runs there
    listing = f"cd {DATA_DIR}/layers && find . -printf '%p %y %m %U:%G %s\\n' | sort; ls -l {DATA_DIR}/l | wc -l"
    assert other.bash(listing).stdout == sandbox.bash(listing).stdout
    # the script records no image; wrapdock there finds the layers in place and only records it
    loaded = other.wrapdock("image", "load", "-i", layout, check=False)
    assert loaded.returncode == 0 and "tar --extract" not in loaded.stderr, loaded.stderr
    assert run_out(other, "bb2") == "hi\nhello from layer 2\n"


def test_gc_removes_layers_no_image_names(sandbox, real_image):
    box = sandbox
    wd(box, "image", "load", "-i", str(real_image("umoci") / "oci"))
    # as if the load had been killed after unpacking, before its records: bb2's top layer is nobody's
    box.bash(f"rm {DATA_DIR}/images/bb2.json && mkdir {DATA_DIR}/layers/{'c' * 64}.partial")
    doctor = json.loads(wd(box, "doctor", "--format", "json", code=None).stdout)
    orphans = sorted(f["subject"].split("/")[-2] for f in doctor if f["check"] == "orphan-layer")
    assert orphans == ["l", "layers", "layers"], doctor
    wd(box, "gc")
    assert len(store_listing(box)["layers"]) == 1 and len(store_listing(box)["l"]) == 1
    assert run_out(box, "bb", "cat", "/etc/to-delete") == "delete me in layer 2\n"  # bb's layer is kept
    wd(box, "image", "rm", "bb")
    assert store_listing(box) == {"layers": [], "l": [], "images": []}
