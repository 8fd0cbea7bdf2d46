"""Real CNI clients of wrapdock-cni inside sandbox hosts: podman 4.3 (Debian, CNI backend),
containerd 1.6's `ctr run --cni`, and a small client on Debian's libcni (which sends CHECK).

The set-up follows ../shared/reference/cni-clients.md §2: tmpfs over podman's and CNI's directories
in the sandbox's own mount namespace, vfs storage, crun with cgroups disabled and the cgroup v2
mount of this hybrid host unmounted (only in that namespace: crun refuses hybrid cgroups), the
plugin as /usr/lib/cni/wrapdock (a bind mount of a directory holding only it), the conflist written
by `wrapdock network cni-config`, the image a busybox root filesystem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.ctnet import Host
from tests.sandbox import OUTSIDE_NS, UPLINK_IP, Sandbox

pytestmark = pytest.mark.integration

PLUGIN = Path(sys.executable).with_name("wrapdock-cni")
NET, SUBNET = "wdnet", "10.88.0.0/24"
NET2, SUBNET2 = "wdnet2", "10.89.0.0/24"
IMAGE = "localhost/bb:latest"
CNI_VETH = re.compile(r"wdc[0-9a-f]{12}")
HTTPD = "mkdir -p /www && echo from-podman > /www/index.html && exec httpd -f -p 80 -h /www"
CONTAINERS_CONF = """[containers]
netns = "bridge"
log_driver = "k8s-file"
cgroups = "disabled"
[network]
network_backend = "cni"
network_config_dir = "/etc/cni/net.d"
default_network = "podman"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "/run/podman-events.log"
runtime = "crun"
tmp_dir = "/run/libpod"
"""
STORAGE_CONF = """[storage]
driver = "vfs"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
"""


def missing_tools(*tools: str) -> str | None:
    for tool in ("podman", "crun", "conmon", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup --tests installs it)"
    if not Path("/etc/containers/policy.json").exists():
        return "/etc/containers/policy.json is missing (podman's package installs it)"
    return None


class Podman:
    """podman inside a sandbox host, its state in tmpfs there, wrapdock-cni its only CNI plugin."""

    def __init__(self, sandbox: Sandbox, base: Path) -> None:
        self.sandbox = sandbox
        (base / "cnibin").mkdir()
        (base / "cnibin" / "wrapdock").symlink_to(PLUGIN)
        rootfs = base / "rootfs" / "bin"
        rootfs.mkdir(parents=True)
        shutil.copy("/bin/busybox", rootfs / "busybox")
        applets = subprocess.run([str(rootfs / "busybox"), "--list"], capture_output=True, text=True, check=True)
        for applet in applets.stdout.split():
            if applet != "busybox":
                (rootfs / applet).symlink_to("busybox")
        subprocess.run(["tar", "-C", str(base / "rootfs"), "-cf", str(base / "bb.tar"), "."], check=True)
        shutil.copy("/etc/containers/policy.json", base / "policy.json")  # before the tmpfs hides it
        (base / "containers.conf").write_text(CONTAINERS_CONF)
        (base / "storage.conf").write_text(STORAGE_CONF)
        # tmpfs over /var/lib (podman's and CNI's caches; nothing is created on the machine) and over
        # /etc/cni, /etc/containers (the packages' files), /var/tmp and /dev/shm: the sandbox's own
        sandbox.bash(f"""
            set -e
            mount -t tmpfs -o mode=755 wdpodman /var/lib
            mkdir -p /var/lib/cni /var/lib/containers /var/lib/containerd
            for d in /etc/cni /etc/containers /var/tmp /dev/shm; do
                [ -d $d ] && mount -t tmpfs -o mode=755 wdpodman $d
            done
            mount --bind {base}/cnibin /usr/lib/cni
            if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi
            mkdir -p /etc/cni/net.d
            cp {base}/policy.json /etc/containers/policy.json
            cp {base}/containers.conf /etc/containers/containers.conf
            cp {base}/storage.conf /etc/containers/storage.conf
        """)
        self("import", "-q", str(base / "bb.tar"), IMAGE)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = self.sandbox.sh("podman", *args, check=False, timeout=300)
        details = f"podman {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert not check or done.returncode == 0, details
        return done


def attachments(host: Host, network: str) -> list[dict]:
    return host.network_view(network)["cni_attachments"]


def assert_no_cni_left(sandbox: Sandbox, host: Host, *networks: str) -> None:
    for network in networks:
        assert attachments(host, network) == []
        assert [a for a in host.leases(network) if a["owner"].startswith("cni:")] == []
    assert "wrapdock:cni=" not in sandbox.sh("iptables-save").stdout
    listing = sandbox.sh("ip", "-o", "link", "show").stdout.splitlines()
    links = [line.split(":")[1].strip().split("@")[0] for line in listing]
    assert [name for name in links if CNI_VETH.fullmatch(name)] == []  # (a CLI container's is wd + 10 hex + n)
    assert [n for n in sandbox.sh("ip", "netns", "list").stdout.split() if n.startswith("netns-")] == []


@pytest.fixture
def podman(sandbox: Sandbox, tmp_path: Path) -> Podman:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    return Podman(sandbox, tmp_path)


def wdnet_with_web(sandbox: Sandbox) -> tuple[Host, str]:
    """The wrapdock network NET as a CNI network (its conflist written), a CLI container `web` on it."""
    host = Host(sandbox)
    host.network(NET, SUBNET)
    host.wd("network", "cni-config", NET)
    host.run("--name", "web", "--net", NET, "busybox", "sleep", "3600")
    return host, host.address("web", NET)


def test_podman_containers_on_a_wrapdock_network(sandbox: Sandbox, podman: Podman) -> None:
    sandbox.add_outside()
    start = sandbox.snapshot()
    host, web = wdnet_with_web(sandbox)

    # run --rm: an address from the wrapdock network, a ping to the CLI container; DEL at the end
    out = podman("run", "--rm", "--cap-add", "NET_RAW", "--network", NET, IMAGE, "sh", "-c",
                 f"ip addr show eth0 && ping -c1 -W3 {web}").stdout
    assert "inet 10.88.0.3/24" in out and "1 packets received" in out
    assert "inet6" not in out  # no IPv6 link-local address on an IPv4-only network (addrgenmode none)
    assert_no_cni_left(sandbox, host, NET)
    # --ip and --mac-address reach the plugin as IP= and MAC= in CNI_ARGS
    out = podman("run", "--rm", "--network", NET, "--ip", "10.88.0.50", "--mac-address", "02:42:ac:11:00:99",
                 IMAGE, "ip", "addr", "show", "eth0").stdout
    assert "inet 10.88.0.50/24" in out and "link/ether 02:42:ac:11:00:99" in out

    # run -d -p 8080:80: the CLI container reaches it, `outside` reaches its published port
    podman("run", "-d", "--name", "p1", "--network", NET, "-p", "8080:80", IMAGE, "sh", "-c", HTTPD)
    [attached] = attachments(host, NET)
    assert attached["ifname"] == "eth0" and attached["ports"] == [
        {"host_ip": None, "host_port": 8080, "container_port": 80, "proto": "tcp"}]
    assert host.ping("web", attached["address"])
    host.wait_http(f"http://{UPLINK_IP}:8080/", "from-podman", where=OUTSIDE_NS)

    # stop: DEL (nothing left); start: ADD again, in a new namespace, with its port
    podman("stop", "-t", "0", "p1")
    assert_no_cni_left(sandbox, host, NET)
    podman("start", "p1")
    [attached] = attachments(host, NET)
    host.wait_http(f"http://{UPLINK_IP}:8080/", "from-podman", where=OUTSIDE_NS)

    # network connect/disconnect: ADD/DEL of eth1 on a second wrapdock network, no second default route
    host.network(NET2, SUBNET2)
    host.wd("network", "cni-config", NET2)
    podman("network", "connect", NET2, "p1")
    [second] = attachments(host, NET2)
    assert (second["ifname"], second["address"]) == ("eth1", "10.89.0.2")
    routes = podman("exec", "p1", "ip", "route").stdout
    assert routes.count("default") == 1 and "default via 10.88.0.1 dev eth0" in routes
    assert "inet 10.89.0.2/24" in podman("exec", "p1", "ip", "addr", "show", "eth1").stdout
    podman("network", "disconnect", NET2, "p1")
    assert attachments(host, NET2) == [] and len(attachments(host, NET)) == 1

    # rm -f: DEL; nothing of the attachment is left (podman's own CNI cache is its business)
    podman("rm", "-f", "-t", "0", "p1")
    assert_no_cni_left(sandbox, host, NET, NET2)
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") is None
    trails = sandbox.sh("ls", "/run/wrapdock/cni/trail").stdout.split()
    # run --rm (twice), run -d, start, connect: 5 ADDs; --rm (twice), stop, disconnect, rm: 5 DELs (a cleanup
    # may add one)
    assert sum("-ADD-" in t for t in trails) == 5 and sum("-DEL-" in t for t in trails) >= 5
    host.teardown(start, ["web"], [NET, NET2])
    assert json.loads(podman("ps", "-a", "--format", "json").stdout or "[]") == []


def test_podman_with_the_resident_server(sandbox: Sandbox, podman: Podman) -> None:
    """`wrapdock cni serve` running: podman's ADD and DEL are carried out by it, with the same result."""
    from tests.integration.test_cni_server import start_server, stop_server

    start = sandbox.snapshot()
    host, web = wdnet_with_web(sandbox)
    server, pid = start_server(sandbox)
    out = podman("run", "--rm", "--cap-add", "NET_RAW", "--network", NET, IMAGE, "sh", "-c",
                 f"ip addr show eth0 && ping -c1 -W3 {web}").stdout
    assert "inet 10.88.0.3/24" in out and "1 packets received" in out
    assert_no_cni_left(sandbox, host, NET)
    stop_server(sandbox, server, pid)
    trails = sandbox.sh("bash", "-c", "head -qn1 /run/wrapdock/cni/trail/*.log").stdout.splitlines()
    assert [line.split()[2] for line in trails if f"(by wrapdock cni serve, pid {pid})" in line] == ["ADD", "DEL"]
    host.teardown(start, ["web"], [NET])


CONTAINERD_CONF = """version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
"""


def test_ctr_run_cni_adds_and_deletes(sandbox: Sandbox, tmp_path: Path) -> None:
    """containerd's `ctr run --cni --rm`: ADD without runtimeConfig, DEL with `CNI_NETNS=` empty after the
    task exits. The container pings a CLI container, is pinged back, and nothing is left once it ends."""
    reason = missing_tools("containerd", "ctr", "runc")
    if reason:
        pytest.skip(reason)
    podman = Podman(sandbox, tmp_path)  # the same sandboxed CNI set-up; podman also makes the image archive
    archive = tmp_path / "bb-docker.tar"
    podman("save", "-q", "--format", "docker-archive", "-o", str(archive), IMAGE)
    (tmp_path / "containerd.toml").write_text(CONTAINERD_CONF)
    flags = tmp_path / "flags"
    flags.mkdir()
    sandbox.bash("[ -d /etc/containerd ] && mount -t tmpfs -o mode=755 wdctr /etc/containerd")  # /var/lib: above
    pid = sandbox.bash(f"containerd --config {tmp_path}/containerd.toml >/run/containerd.log 2>&1 </dev/null & "
                       "echo $!").stdout.strip()
    assert pid.isdigit(), pid
    try:
        deadline = time.monotonic() + 60
        while sandbox.sh("ctr", "version", check=False).returncode != 0:
            assert time.monotonic() < deadline, sandbox.sh("cat", "/run/containerd.log").stdout
            time.sleep(0.1)
        start = sandbox.snapshot()
        host = Host(sandbox)
        host.network(NET, SUBNET)
        host.wd("network", "cni-config", NET)
        host.run("--name", "web", "--net", NET, "busybox", "sleep", "3600")
        web = host.address("web", NET)
        sandbox.sh("ctr", "-n", "wd", "images", "import", "--snapshotter", "native", str(archive), timeout=300)

        script = (f"ip addr show eth0 && ping -c1 -W3 {web} && touch /flags/ready && "
                  "while [ ! -e /flags/stop ]; do sleep 0.1; done")
        task = subprocess.Popen([*sandbox.enter_argv(), "ctr", "-n", "wd", "run", "--rm", "--cni", "--snapshotter",
                                 "native", "--cgroup", f"/{sandbox.cgroup_parent}/ctr-c1", "--mount",
                                 f"type=bind,src={flags},dst=/flags,options=rbind:rw", IMAGE, "c1", "sh", "-c", script],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (flags / "ready").exists():
            assert task.poll() is None and time.monotonic() < deadline, task.communicate()
            time.sleep(0.1)
        [attached] = attachments(host, NET)
        assert (attached["container_id"], attached["ifname"], attached["address"]) == ("wd-c1", "eth0", "10.88.0.3")
        assert host.ping("web", attached["address"]), "the CLI container reaches the ctr container"
        (flags / "stop").touch()
        out, err = task.communicate(timeout=120)
        assert task.returncode == 0, err
        assert "inet 10.88.0.3/24" in out and "1 packets received" in out

        assert_no_cni_left(sandbox, host, NET)
        trail = sandbox.sh("bash", "-c", "cat /run/wrapdock/cni/trail/*-DEL-wd-c1-eth0.log").stdout
        assert "ifname=eth0 netns=\n" in trail  # ctr's DEL comes without a namespace
        host.teardown(start, ["web"], [NET])
    finally:  # containerd, by its PID in the sandbox (the sandbox's end would kill it too)
        sandbox.sh("kill", pid, check=False)
        deadline = time.monotonic() + 60
        alive = f"[ -e /proc/{pid} ] && ! grep -q '^State:.*zombie' /proc/{pid}/status"  # no reaper in there
        while sandbox.bash(alive, check=False).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.1)


LIBCNI_CLIENT = Path(__file__).with_name("libcni_client")
LIBCNI_SOURCE = Path("/usr/share/gocode/src/github.com/containernetworking/cni/libcni")


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_a_libcni_client_adds_checks_and_deletes(sandbox: Sandbox, tmp_path: Path, version: str) -> None:
    """Debian's libcni (what podman and containerd are built on) as the client: it parses wrapdock's
    result in the conflist's version, caches it and sends it as prevResult to CHECK and DEL."""
    if shutil.which("go") is None or not LIBCNI_SOURCE.is_dir():
        pytest.skip("golang-go and golang-github-appc-cni-dev are not installed (scripts/setup --tests installs them)")
    client = tmp_path / "wdcni"
    subprocess.run(["go", "build", "-o", str(client), "."], cwd=LIBCNI_CLIENT, check=True, timeout=600,
                   env={**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOFLAGS": "",
                        "GOCACHE": str(tmp_path / "gocache")})
    (tmp_path / "cnibin").mkdir()
    (tmp_path / "cnibin" / "wrapdock").symlink_to(PLUGIN)
    env = {"NETCONFPATH": str(tmp_path / "netd"), "CNI_PATH": str(tmp_path / "cnibin"),
           "CNI_CACHE_DIR": "/run/cni-cache"}

    def wdcni(*args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        return sandbox.sh(str(client), *args, env={**env, **(extra or {})}, check=False, timeout=120)

    start = sandbox.snapshot()
    host = Host(sandbox)
    host.network(NET, SUBNET)
    host.wd("network", "cni-config", NET, "--dir", str(tmp_path / "netd"), "--cni-version", version)
    sandbox.sh("ip", "netns", "add", "podA")
    assert wdcni("version", NET).stdout.strip() == "wrapdock: 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0"

    ports = json.dumps({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    added = wdcni("add", NET, "/run/netns/podA", "ctrA", extra={"CAP_ARGS": ports})
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["cniVersion"] == version and result["ips"][0]["address"] == "10.88.0.2/24"
    assert result["interfaces"][0]["mac"] == "02:42:0a:58:00:02"
    assert wdcni("check", NET, "/run/netns/podA", "ctrA").returncode == 0

    sandbox.sh("ip", "-n", "podA", "addr", "del", "10.88.0.2/24", "dev", "eth0")
    checked = wdcni("check", NET, "/run/netns/podA", "ctrA")
    assert checked.returncode == 1 and "lacks its address 10.88.0.2/24" in checked.stderr

    for _ in range(2):  # the second DEL has no cached result to send as prevResult
        deleted = wdcni("del", NET, "/run/netns/podA", "ctrA")
        assert deleted.returncode == 0, deleted.stderr
    assert_no_cni_left(sandbox, host, NET)
    sandbox.sh("ip", "netns", "del", "podA")
    host.teardown(start, [], [NET])
