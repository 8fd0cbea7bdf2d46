"""Real images (issue 15) next to Docker 20.10 and Podman 4.3, each in its own sandbox host (bench/peers.py).

    sudo .venv/bin/python bench/images.py [--reps 5] [--output bench/images-results.json]

1. `image load -i ARCHIVE` vs `docker load -i ARCHIVE` vs `podman load -i ARCHIVE`: the same docker-archive
   (Docker 20.10's format, which all three read) of a 5-layer image; each round removes the image again
   (untimed), so every load unpacks every layer;
2. `run --rm IMAGE true` with that 5-layer image vs `docker run --rm --network none IMAGE true` (wrapdock's
   default network is none too: only lo);
3. disk: two images that share their base layer, loaded side by side: the bytes under wrapdock's layer
   store vs the sum of the two images' own sizes (`image ls`), and the same for Docker (`du` of its
   overlay2 directory vs `docker image ls` sizes).

The image is made here, not pulled: a busybox root filesystem (busybox-static, as the other measures
use) as its base layer and four layers of 1 MiB of data and a few small files each. Peers alternate
round by round (first round a discarded warm-up): compare ratios of one run. Targets (issue 15): load
<= 1.0x docker's and podman's, run --rm <= 0.6x docker's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import peers  # noqa: E402
from harness import rounds  # noqa: E402
from precompile import precompile  # noqa: E402
from sandbox import AgentError, remove_stale_cgroups  # noqa: E402

from tests.imagefixtures import Member, docker_archive  # noqa: E402

LAYER_BYTES = 1 << 20


def base_layer() -> list[Member]:
    """The host's busybox-static with its applets as symlinks, /etc/passwd and /etc/group, /tmp 1777."""
    busybox = peers.host_busybox()
    if busybox is None:
        raise SystemExit("busybox-static is not installed")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    members = [Member(name, "dir", mode=0o755) for name in ("bin", "etc", "root", "proc", "sys", "dev")]
    members.append(Member("tmp", "dir", mode=0o1777))
    members.append(Member("bin/busybox", data=Path(busybox).read_bytes(), mode=0o755))
    members += [Member(f"bin/{applet}", "symlink", target="busybox") for applet in applets if applet != "busybox"]
    members.append(Member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"))
    members.append(Member("etc/group", data=b"root:x:0:\n"))
    return members


def data_layer(name: str) -> list[Member]:
    """1 MiB that does not compress away, and a few small files."""
    blob = b"".join(f"{name}:{i:08d}\n".encode() for i in range(LAYER_BYTES // 8))[:LAYER_BYTES]
    return [Member(f"data/{name}", "dir", mode=0o755), Member(f"data/{name}/blob", data=blob),
            *(Member(f"data/{name}/note{i}", data=f"{name} {i}\n".encode()) for i in range(8))]


def make_archives(folder: Path) -> tuple[Path, Path]:
    base = base_layer()
    config = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}
    five = docker_archive(folder / "five.tar", {
        "wdbench/five": ([base, *(data_layer(f"l{i}") for i in range(2, 6))], config)})
    pair = docker_archive(folder / "pair.tar", {
        "wdbench/left": ([base, data_layer("left")], config),
        "wdbench/right": ([base, data_layer("right")], config)})
    return five, pair


class PodmanStore(peers.Podman):
    """Podman as bench/peers.py starts it, its image store only: `load` runs no container (crun refuses this
    machine's hybrid cgroups unless the cgroup v2 mount is hidden, as the CNI tests do)."""

    def __init__(self) -> None:  # peers.Podman's set-up without its busybox import and test run
        self.box = peers.Sandbox("podman", peers.PYTHON, tmpfs=("/var/lib",), mkdir=("/var/lib/containers",))
        root = f"{peers.WORK}/podman"
        self.conf = f"{root}/containers.conf"
        self.globals = ["--root", f"{root}/root", "--runroot", f"{root}/runroot", "--cgroup-manager", "cgroupfs",
                        "--storage-driver", "overlay", "--events-backend", "file", "--tmpdir", f"{root}/tmp"]
        self.env = {"CONTAINERS_CONF": self.conf}
        try:
            self.box.run(["mkdir", "-p", f"{root}/root", f"{root}/runroot", f"{root}/tmp"])
            self.box.run(["bash", "-c", f"cat > {self.conf}"], stdin=(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
                f"events_logfile_path = \"{root}/events.log\"\n"))
        except BaseException:
            self.close()
            raise


def median_ms(samples: list[dict]) -> float:
    return 1000 * statistics.median(s["seconds"] for s in samples) if samples else float("nan")


def du_bytes(box, path: str) -> int:
    """Bytes of the blocks under `path` (du counts a hardlinked file once)."""
    return int(box.bash(f"du -s -B1 {path} | cut -f1")["stdout"].split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", default=str(BENCH / "images-results.json"))
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the venv with wrapdock")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (sandbox hosts)")
    python = args.python
    peers.PYTHON = python
    # byte-compiled, as `pip install` leaves it, with the dataclass methods' cache (bench/run does the same)
    precompile(python)
    remove_stale_cgroups()
    results: dict = {"reps": args.reps, "errors": {}}
    results["load_average_start"] = os.getloadavg()  # a busy machine slows Python more than Go
    started: list = []
    with tempfile.TemporaryDirectory(prefix="wdbench-images-") as folder:
        os.chmod(folder, 0o755)
        five, pair = make_archives(Path(folder))
        results["archive_bytes"] = five.stat().st_size
        try:
            wd = peers.Wrapdock(python, str(Path(python).with_name("wrapdock")))
            started.append(wd)
            docker = peers.Docker()
            started.append(docker)
            podman = PodmanStore()
            started.append(podman)
            results["versions"] = {**wd.versions(), **docker.versions(), **podman.versions()}

            # 1. load the same archive, removed again after each round
            def wd_load(_rep: int) -> dict:
                answer = wd.run("--quiet", "image", "load", "-i", str(five))
                wd.run("--quiet", "image", "rm", "wdbench/five")
                return answer

            def docker_load(_rep: int) -> dict:
                answer = docker.run("load", "-q", "-i", str(five))
                docker.run("rmi", "-f", "wdbench/five:latest")
                return answer

            def podman_load(_rep: int) -> dict:
                answer = podman.run("load", "-q", "-i", str(five))
                podman.run("rmi", "-f", "wdbench/five:latest")
                return answer

            loads = {"wrapdock": wd_load, "docker": docker_load, "podman": podman_load}
            rounds(1, loads)
            got = rounds(args.reps, loads)
            results["load_ms"] = {peer: median_ms(samples) for peer, samples in got.items()}

            # 2. run --rm IMAGE true with the 5-layer image
            wd.run("--quiet", "image", "load", "-i", str(five))
            docker.run("load", "-q", "-i", str(five))
            runs = {"wrapdock": lambda _r: wd.run("run", "--rm", "wdbench/five", "true"),
                    "docker": lambda _r: docker.run("run", "--rm", "--network", "none", "wdbench/five", "true")}
            rounds(1, runs)
            got = rounds(args.reps, runs)
            results["run_rm_ms"] = {peer: median_ms(samples) for peer, samples in got.items()}
            wd.run("--quiet", "image", "rm", "wdbench/five")
            docker.run("rmi", "-f", "wdbench/five:latest")

            # 3. two images sharing their base
            layers = f"{wd.env['WRAPDOCK_DATA_DIR']}/layers"
            empty_wd = du_bytes(wd.box, layers) if wd.box.run(["test", "-d", layers], check=False)["rc"] == 0 else 0
            wd.run("--quiet", "image", "load", "-i", str(pair))
            listing = json.loads(wd.run("image", "ls", "--format", "json")["stdout"])
            sizes = {row["name"]: row["size"] for row in listing if row["name"].startswith("wdbench/")}
            results["disk_wrapdock"] = {"images": sizes, "sum_bytes": sum(sizes.values()),
                                        "store_bytes": du_bytes(wd.box, layers) - empty_wd}
            overlay = f"{peers.WORK}/docker/data/overlay2"
            empty_docker = du_bytes(docker.box, overlay)
            docker.run("load", "-q", "-i", str(pair))
            docker_sizes = {}
            for name in ("wdbench/left", "wdbench/right"):
                docker_sizes[name] = int(docker.run("image", "inspect", "--format", "{{.Size}}", name)["stdout"])
            results["disk_docker"] = {"images": docker_sizes, "sum_bytes": sum(docker_sizes.values()),
                                      "store_bytes": du_bytes(docker.box, overlay) - empty_docker}
        except AgentError as exc:
            results["errors"]["run"] = " ".join(str(exc).split())[:1500]
            print(f"failed: {exc}", file=sys.stderr)
        finally:
            leftovers = [item for peer in reversed(started) for item in peer.close()]
            results["cleanup"] = leftovers or "clean"
    results["load_average_end"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    return 1 if results["errors"] else 0


def report(results: dict) -> None:
    print(f"{'measure (median ms)':36} {'wrapdock':>9} {'docker':>8} {'podman':>8} {'ratio':>14} target")
    if "load_ms" in results:
        load = results["load_ms"]
        ratio_d, ratio_p = load["wrapdock"] / load["docker"], load["wrapdock"] / load["podman"]
        results["load_ratio"] = {"docker": ratio_d, "podman": ratio_p}
        print(f"{'image load (5 layers, docker-archive)':36} {load['wrapdock']:9.0f} {load['docker']:8.0f} "
              f"{load['podman']:8.0f} {ratio_d:5.2f}x / {ratio_p:4.2f}x <= 1.0 "
              f"{'met' if max(ratio_d, ratio_p) <= 1.0 else 'NOT met'}")
    if "run_rm_ms" in results:
        run = results["run_rm_ms"]
        ratio = run["wrapdock"] / run["docker"]
        print(f"{'run --rm IMAGE true (5 layers)':36} {run['wrapdock']:9.0f} {run['docker']:8.0f} {'':8} "
              f"{ratio:13.2f}x <= 0.6 {'met' if ratio <= 0.6 else 'NOT met'}")
    for peer in ("wrapdock", "docker"):
        disk = results.get(f"disk_{peer}")
        if disk:
            print(f"disk, two images sharing a base ({peer}): {disk['store_bytes'] / 2**20:.2f} MiB stored vs "
                  f"{disk['sum_bytes'] / 2**20:.2f} MiB summed sizes "
                  f"({disk['store_bytes'] / disk['sum_bytes']:.2f}x)")
    print(f"cleanup: {results.get('cleanup')}")


if __name__ == "__main__":
    sys.exit(main())
