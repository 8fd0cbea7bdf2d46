"""The peers, each started inside its own sandbox host: wrapdock, Docker, Podman, the CNI plugins.

Following /work/shared/reference/peers.md: dockerd with its data and exec roots in the sandbox's
/run, a tmpfs on /etc/docker (key.json), cgroupfs under a cgroup parent named after the sandbox;
Podman rootful with --root/--runroot in /run and cgroup_manager=cgroupfs, a tmpfs over /var/lib
(for /var/lib/containers and CNI's /var/lib/cni); the CNI reference plugins called directly. Images
are imported from a busybox-static root filesystem made in the sandbox (no registry).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from sandbox import CLEAN_PATH, Sandbox

WORK = "/run/wdbench"  # inside every sandbox: its private tmpfs

# what each peer needs, and the Debian package that brings it
NEEDS = {
    "docker": {"dockerd": "docker.io", "containerd": "docker.io", "runc": "docker.io"},
    "podman": {"podman": "podman", "conmon": "podman"},
    "cni": {f"/usr/lib/cni/{plugin}": "containernetworking-plugins" for plugin in ("bridge", "portmap", "host-local")},
}


def which(binary: str) -> str | None:
    if binary.startswith("/"):
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary, path=CLEAN_PATH)


def docker_client() -> str | None:
    """The client of the docker.io package (a different docker may sit in /usr/local/bin)."""
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else which("docker")


def missing_packages(peers: list[str]) -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for peer in peers:
        for binary, package in NEEDS[peer].items():
            if which(binary) is None and package not in missing.get(peer, []):
                missing.setdefault(peer, []).append(package)
        if peer == "docker" and docker_client() is None and "docker.io" not in missing.get(peer, []):
            missing.setdefault(peer, []).append("docker.io")
    return missing


def install(peers: list[str], log) -> dict[str, str]:
    """apt-get install what the peers lack (one `apt-get update` first); returns {peer: why it failed}."""
    missing = missing_packages(peers)
    if not missing:
        return {}
    if shutil.which("apt-get") is None:
        return {peer: f"{', '.join(pkgs)} not installed and no apt-get" for peer, pkgs in missing.items()}
    packages = sorted({p for pkgs in missing.values() for p in pkgs})
    log(f"installing {' '.join(packages)} (apt-get, --no-install-recommends)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # never let a package's maintainer script start a daemon in the machine's own namespaces
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# wrapdock bench: no daemon starts while it installs packages\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        update = subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, env=env)
        if update.returncode != 0:
            why = f"apt-get update failed: {update.stderr.strip()[-200:]}"
            return {peer: why for peer in missing}
        failed: dict[str, str] = {}
        for peer, pkgs in missing.items():
            done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                failed[peer] = f"apt-get install {' '.join(pkgs)} failed: {done.stderr.strip()[-200:]}"
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    still = missing_packages([p for p in missing if p not in failed])
    for peer, pkgs in still.items():
        failed[peer] = f"{', '.join(pkgs)} still missing after apt-get install"
    return failed


def host_busybox() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return candidate
    return which("busybox")


ROOTFS_SCRIPT = r"""
set -eu
R=$1
mkdir -p "$R"
cd "$R"
mkdir -p bin sbin usr/bin usr/sbin etc root tmp proc sys dev home var/log
chmod 1777 tmp
cp "$2" bin/busybox
chroot "$R" /bin/busybox --install -s
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' > etc/group
"""


def make_rootfs(box: Sandbox) -> str:
    """A busybox root filesystem (as wrapdock's plans/image.py makes its default image), in the sandbox."""
    busybox = host_busybox()
    if busybox is None:
        raise RuntimeError("busybox (busybox-static) is not installed")
    path = f"{WORK}/rootfs"
    box.run(["bash", "-c", ROOTFS_SCRIPT, "rootfs", path, busybox])
    return path


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def dpkg_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "?"


# -- wrapdock -------------------------------------------------------------------------------------
class Wrapdock:
    name = "wrapdock"

    def __init__(self, python: str, script: str, label: str = "wrapdock") -> None:
        self.python = python
        self.script = script
        self.box = Sandbox(label, python)
        self.env = {"WRAPDOCK_DATA_DIR": "/run/wrapdock-data", "WRAPDOCK_CGROUP_PARENT": self.box.name}
        self.box.run(["mkdir", "-p", WORK])

    def argv(self, *args: str) -> list[str]:
        return [self.script, *args]

    def run(self, *args: str, check: bool = True, trace: bool = False, timeout: float = 300) -> dict:
        return self.box.run(self.argv(*args), env=self.env, check=check, trace=trace, timeout=timeout)

    def versions(self) -> dict:
        return {"wrapdock": self.box.run(self.argv("--version"), env=self.env)["stdout"].strip()}

    def close(self) -> list[str]:
        return self.box.close()


# -- Docker ---------------------------------------------------------------------------------------
class Docker:
    name = "docker"

    def __init__(self) -> None:
        self.client = docker_client()
        self.box = Sandbox("docker", PYTHON, tmpfs=("/etc/docker",))
        root = f"{WORK}/docker"
        self.sock = f"unix://{root}/docker.sock"
        self.env = {"DOCKER_HOST": self.sock, "DOCKER_CONFIG": f"{root}/client"}
        try:
            self.box.run(["mkdir", "-p", f"{root}/data", f"{root}/exec", f"{root}/client"])
            self.box.spawn([which("dockerd") or "dockerd", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
                            "--pidfile", f"{root}/dockerd.pid", "-H", self.sock, "--storage-driver", "overlay2",
                            "--cgroup-parent", f"/{self.box.name}", "--exec-opt", "native.cgroupdriver=cgroupfs"],
                           log=f"{root}/dockerd.log")
            started = time.monotonic()
            while True:
                if self.box.run([self.client, "version"], env=self.env, check=False)["rc"] == 0:
                    break
                if time.monotonic() - started > 40:
                    log = self.box.run(["tail", "-n", "5", f"{root}/dockerd.log"], check=False)["stdout"]
                    raise RuntimeError(f"dockerd did not answer within 40 s: {log.strip()}")
                time.sleep(0.2)
            self.ready_seconds = time.monotonic() - started
            rootfs = make_rootfs(self.box)
            self.box.run(["bash", "-c", f'tar -C {rootfs} -c . | "$1" import - busybox >/dev/null', "import",
                          self.client], env=self.env)
            # the user-defined bridge network the measures use (as wrapdock's benchnet)
            self.run("network", "create", "--subnet", "10.201.0.0/24", "benchnet")
        except BaseException:
            self.close()
            raise

    def argv(self, *args: str) -> list[str]:
        return [self.client, *args]

    def run(self, *args: str, check: bool = True, trace: bool = False, timeout: float = 300) -> dict:
        return self.box.run(self.argv(*args), env=self.env, check=check, trace=trace, timeout=timeout)

    def versions(self) -> dict:
        server = self.run("version", "--format", "{{.Server.Version}}", check=False)["stdout"].strip()
        client = self.run("version", "--format", "{{.Client.Version}}", check=False)["stdout"].strip()
        return {"dockerd": server, "docker client": f"{client} ({self.client})",
                "containerd": _first_line([which("containerd") or "containerd", "--version"]),
                "runc": _first_line([which("runc") or "runc", "--version"]),
                "docker.io package": dpkg_version("docker.io")}

    def close(self) -> list[str]:
        return self.box.close()


# -- Podman ---------------------------------------------------------------------------------------
PODMAN_CONF = """\
[containers]
netns = "bridge"
log_driver = "k8s-file"
cgroups = "disabled"
[network]
network_backend = "cni"
network_config_dir = "/etc/cni/net.d"
cni_plugin_dirs = ["/usr/lib/cni"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
runtime = "crun"
"""


class Podman:
    """Podman 4.3 rootful, CNI backend, as /work/shared/reference/cni-clients.md sets it up on this machine
    kind: crun refuses hybrid cgroups, so the sandbox unmounts /sys/fs/cgroup/unified (its own mount
    namespace only) and containers run without cgroups of their own (`cgroups = "disabled"`)."""

    name = "podman"

    def __init__(self) -> None:
        # tmpfs over /var/lib (Podman's cache in /var/lib/containers, CNI's IPAM in /var/lib/cni) and over
        # /etc/cni (the conflists `podman network create` writes), inside the sandbox only
        tmpfs = ("/var/lib", *(("/etc/cni",) if Path("/etc/cni").is_dir() else ()))
        self.box = Sandbox("podman", PYTHON, tmpfs=tmpfs,
                           mkdir=("/var/lib/containers", "/var/lib/cni", "/etc/cni/net.d"))
        root = f"{WORK}/podman"
        self.conf = f"{root}/containers.conf"
        self.globals = ["--root", f"{root}/root", "--runroot", f"{root}/runroot", "--storage-driver", "overlay",
                        "--tmpdir", f"{root}/tmp"]
        self.env = {"CONTAINERS_CONF": self.conf}
        try:
            self.box.run(["mkdir", "-p", f"{root}/root", f"{root}/runroot", f"{root}/tmp", "/etc/cni/net.d"])
            # crun 1.8: "cgroups in hybrid mode not supported": hide the v2 hierarchy from this sandbox
            self.box.bash("! mountpoint -q /sys/fs/cgroup/unified || umount -l /sys/fs/cgroup/unified")
            self.box.run(["bash", "-c", f"cat > {self.conf}"], stdin=PODMAN_CONF.format(root=root))
            rootfs = make_rootfs(self.box)
            self.box.run(["bash", "-c", f'tar -C {rootfs} -c . | "$@" import - busybox >/dev/null', "import",
                          which("podman") or "podman", *self.globals], env=self.env)
            # the user-defined bridge network the measures use (as wrapdock's and docker's benchnet)
            self.run("network", "create", "--subnet", "10.202.0.0/24", "benchnet")
            self.run("run", "--rm", "--network", "benchnet", "busybox", "true")
        except BaseException:
            self.close()
            raise

    def argv(self, *args: str) -> list[str]:
        return [which("podman") or "podman", *self.globals, *args]

    def run(self, *args: str, check: bool = True, trace: bool = False, timeout: float = 300) -> dict:
        return self.box.run(self.argv(*args), env=self.env, check=check, trace=trace, timeout=timeout)

    def versions(self) -> dict:
        backend = self.run("info", "--format", "{{.Host.NetworkBackend}}", check=False)["stdout"].strip()
        return {"podman": _first_line([which("podman") or "podman", "--version"]),
                "podman network backend": backend or "?",
                "conmon": _first_line([which("conmon") or "conmon", "--version"]),
                "crun": _first_line([which("crun") or "crun", "--version"])}

    def close(self) -> list[str]:
        # conmon may go under libpod_parent (cgroupfs) if Podman made it
        extra = ("libpod_parent",) if not self.libpod_parent_existed else ()
        return self.box.close(extra)

    libpod_parent_existed = any(Path("/sys/fs/cgroup").glob("*/libpod_parent"))


# -- the CNI reference plugins ----------------------------------------------------------------------
class Cni:
    name = "cni"
    path = "/usr/lib/cni"

    def __init__(self) -> None:
        self.box = Sandbox("cni", PYTHON)
        self.box.run(["mkdir", "-p", f"{WORK}/cni-ipam"])
        self.bridge = {
            "cniVersion": "1.0.0", "name": "wdbench", "type": "bridge", "bridge": "cni-bench0",
            "isGateway": True, "ipMasq": True, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.220.0.0/24", "gateway": "10.220.0.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": f"{WORK}/cni-ipam"},
        }
        self.portmap = {
            "cniVersion": "1.0.0", "name": "wdbench", "type": "portmap", "capabilities": {"portMappings": True},
            "snat": True,
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        }

    def plumb(self, reps: int, trace: bool = False) -> list[dict]:
        return self.box.request("cni", reps=reps, cni_path=self.path, bridge=self.bridge, portmap=self.portmap,
                                trace_add=trace, trace_del=trace)["reps"]

    def versions(self) -> dict:
        return {"containernetworking-plugins": dpkg_version("containernetworking-plugins"),
                "cni bridge": _first_line([f"{self.path}/bridge", "--version"])}

    def close(self) -> list[str]:
        return self.box.close()


PYTHON = os.environ.get("WDBENCH_PYTHON", "python3")  # set by the harness before any peer starts
