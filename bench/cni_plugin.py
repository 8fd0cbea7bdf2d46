"""wrapdock-cni next to the CNI reference plugins, in one run, in one sandbox host (tests/sandbox.py).

    sudo .venv/bin/python bench/cni_plugin.py [--reps 10] [--no-podman] [--output bench/cni-results.json]

1. VERSION: `wrapdock-cni` vs the reference `bridge` plugin (podman asks every plugin on every command);
2. one ADD + DEL with one published port: `wrapdock-cni` vs the chain `bridge` (host-local IPAM, ipMasq,
   hairpin) + `portmap`, each called as libcni calls a conflist (portmap after bridge with its result as
   prevResult; DEL in reverse order); a fresh netns per round, made and removed outside the timing;
3. `podman run --rm --network N busybox true` with the wrapdock conflist vs podman's own kind of
   conflist (bridge + host-local + portmap), podman 4.3 with the CNI backend as in
   tests/integration/test_cni_clients.py; wrapdock twice: the plugin alone, and with `wrapdock cni
   serve` running (the target is judged with it; "alone" is shown beside it).

The timing loops run inside the sandbox (no nsenter in the figures); peers alternate round by round
(first round a discarded warm-up), so the machine's load hits both alike: compare the ratios, not the
absolute values across runs. Targets (issue 14): ADD+DEL <= 1.0x, podman run --rm <= 1.0x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from precompile import precompile  # noqa: E402  (bench/precompile.py)

from tests.sandbox import Sandbox  # noqa: E402

PLUGIN = Path(sys.executable).with_name("wrapdock-cni")
REFERENCE = Path("/usr/lib/cni")
SUBNET_WD, SUBNET_REF = "10.91.0.0/24", "10.92.0.0/24"

# the timing loop, run by the venv's python inside the sandbox: argv[1] is the JSON request
INNER = r'''
import json, os, subprocess, sys, time
req = json.loads(sys.argv[1])
def call(binary, command, conf, cid, netns):
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/run/netns/{netns}" if netns else "", "CNI_PATH": req["cni_path"]}
    started = time.perf_counter()
    done = subprocess.run([binary], input=json.dumps(conf).encode(), capture_output=True, env=env, timeout=120)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{binary} {command}: {done.stdout.decode()} {done.stderr.decode()}")
    return (json.loads(done.stdout) if done.stdout.strip() else {}), seconds
out = {"wd": [], "ref": [], "version_wd": [], "version_ref": []}
for rep in range(req["reps"] + 1):
    for peer in (("wd", "ref") if rep % 2 else ("ref", "wd")):
        netns = f"b{peer}{rep}"
        cid = f"bench{rep:04d}{peer}"
        subprocess.run(["ip", "netns", "add", netns], check=True)
        if peer == "wd":
            _, add = call(req["wd"], "ADD", req["wd_conf"], cid, netns)
            _, dele = call(req["wd"], "DEL", req["wd_conf"], cid, netns)
        else:
            bridge, a1 = call(req["cni_path"] + "/bridge", "ADD", req["bridge"], cid, netns)
            pm, a2 = call(req["cni_path"] + "/portmap", "ADD", {**req["portmap"], "prevResult": bridge}, cid, netns)
            _, d1 = call(req["cni_path"] + "/portmap", "DEL", {**req["portmap"], "prevResult": pm}, cid, netns)
            _, d2 = call(req["cni_path"] + "/bridge", "DEL", {**req["bridge"], "prevResult": bridge}, cid, netns)
            add, dele = a1 + a2, d1 + d2
        subprocess.run(["ip", "netns", "del", netns], check=True)
        if rep:
            out[peer].append({"add": add, "del": dele})
        _, version = call(req["wd"] if peer == "wd" else req["cni_path"] + "/bridge", "VERSION",
                          {"cniVersion": "1.0.0"}, "", "")
        if rep:
            out["version_" + peer].append(version)
print(json.dumps(out))
'''

PORT = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
PORT_REF = {"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]}


def plugin_round(box: Sandbox, reps: int) -> dict:
    box.wrapdock("--quiet", "network", "create", "--subnet", SUBNET_WD, "wdbench")
    request = {
        "reps": reps, "wd": str(PLUGIN), "cni_path": str(REFERENCE),
        "wd_conf": {"cniVersion": "1.0.0", "name": "wdbench", "type": "wrapdock", "runtimeConfig": PORT},
        "bridge": {"cniVersion": "1.0.0", "name": "refbench", "type": "bridge", "bridge": "refbench",
                   "isGateway": True, "ipMasq": True, "hairpinMode": True,
                   "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET_REF}]],
                            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/cni-ipam"}},
        "portmap": {"cniVersion": "1.0.0", "name": "refbench", "type": "portmap",
                    "capabilities": {"portMappings": True}, "runtimeConfig": PORT_REF},
    }
    done = box.sh(sys.executable, "-c", INNER, json.dumps(request), timeout=3600)
    return json.loads(done.stdout)


PODMAN_CONF = """[containers]
netns = "bridge"
log_driver = "k8s-file"
cgroups = "disabled"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{cnibin}", "/usr/lib/cni"]
network_config_dir = "/etc/cni/net.d"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "/run/podman-events.log"
runtime = "crun"
tmp_dir = "/run/libpod"
"""


PODMAN_LOOP = r'''
import json, os, subprocess, time
out = {"wd": [], "wds": [], "ref": []}
# wd: the plugin alone (WRAPDOCK_CNI_SERVER=off; podman hands its environment to the plugins);
# wds: the plugin with `wrapdock cni serve` running; ref: podman's own kind of conflist
peers = [("wd", "wdpod", "off"), ("wds", "wdpod", "on"), ("ref", "refnet", "on")]
for rep in range(REPS + 1):
    for peer, net, server in peers[rep % 3:] + peers[:rep % 3]:
        started = time.perf_counter()
        subprocess.run(["podman", "run", "--rm", "--network", net, "localhost/bb", "true"], check=True,
                       capture_output=True, env={**os.environ, "WRAPDOCK_CNI_SERVER": server})
        if rep:
            out[peer].append(time.perf_counter() - started)
print(json.dumps(out))
'''


def start_server(box: Sandbox) -> str:
    """`wrapdock cni serve` in the sandbox host (it ends with the host); its PID there."""
    server = box.popen_wrapdock("cni", "serve")
    line = server.stderr.readline()  # "wrapdock cni serve: pid N, listening on PATH"
    if "listening on" not in line:
        raise RuntimeError(f"wrapdock cni serve did not start: {line}{server.stderr.read()}")
    return line.split("pid ", 1)[1].split(",", 1)[0]


def podman_round(box: Sandbox, base: Path, reps: int) -> dict:
    (base / "cnibin").mkdir()
    (base / "cnibin" / "wrapdock").symlink_to(PLUGIN)
    rootfs = base / "rootfs" / "bin"
    rootfs.mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "busybox")
    (rootfs / "true").symlink_to("busybox")
    (rootfs / "sh").symlink_to("busybox")
    subprocess.run(["tar", "-C", str(base / "rootfs"), "-cf", str(base / "bb.tar"), "."], check=True)
    shutil.copy("/etc/containers/policy.json", base / "policy.json")
    (base / "containers.conf").write_text(PODMAN_CONF.format(cnibin=base / "cnibin"))
    (base / "storage.conf").write_text('[storage]\ndriver = "vfs"\ngraphroot = "/var/lib/containers/storage"\n'
                                       'runroot = "/run/containers/storage"\n')
    reference = {"cniVersion": "0.4.0", "name": "refnet", "plugins": [
        {"type": "bridge", "bridge": "refnet", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": SUBNET_REF}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    (base / "refnet.conflist").write_text(json.dumps(reference))
    box.bash(f"""
        set -e
        mount -t tmpfs -o mode=755 wdbench /var/lib
        mkdir -p /var/lib/cni /var/lib/containers
        for d in /etc/cni /etc/containers /var/tmp /dev/shm; do
            [ -d $d ] && mount -t tmpfs -o mode=755 wdbench $d
        done
        if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi
        mkdir -p /etc/cni/net.d
        cp {base}/policy.json /etc/containers/policy.json
        cp {base}/containers.conf /etc/containers/containers.conf
        cp {base}/storage.conf /etc/containers/storage.conf
        cp {base}/refnet.conflist /etc/cni/net.d/20-refnet.conflist
        podman import -q {base}/bb.tar localhost/bb:latest >/dev/null
    """, timeout=600)
    box.wrapdock("--quiet", "network", "create", "--subnet", "10.93.0.0/24", "wdpod")
    box.wrapdock("network", "cni-config", "wdpod")
    start_server(box)
    loop = PODMAN_LOOP.replace("REPS", str(reps))
    return json.loads(box.sh(sys.executable, "-c", loop, timeout=3600).stdout)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--output", default=str(REPO / "bench" / "cni-results.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (sandbox hosts)")
    if not (REFERENCE / "bridge").exists():
        parser.error("the CNI reference plugins are missing: apt-get install containernetworking-plugins")
    # byte-compiled, as `pip install` leaves it, with the dataclass methods' cache (bench/run does the same)
    precompile(sys.executable)
    results: dict = {}
    results["load_average_start"] = os.getloadavg()  # a busy machine slows Python more than Go
    box = Sandbox()
    try:
        raw = plugin_round(box, args.reps)
    finally:
        box.close()
    for peer in ("wd", "ref"):
        results[peer] = {"add_ms": 1000 * median([r["add"] for r in raw[peer]]),
                         "del_ms": 1000 * median([r["del"] for r in raw[peer]]),
                         "add_del_ms": 1000 * median([r["add"] + r["del"] for r in raw[peer]]),
                         "version_ms": 1000 * median(raw["version_" + peer])}
    results["add_del_ratio"] = results["wd"]["add_del_ms"] / results["ref"]["add_del_ms"]
    if not args.no_podman and shutil.which("podman") and shutil.which("crun"):
        box = Sandbox()
        try:
            with tempfile.TemporaryDirectory() as base:
                raw = podman_round(box, Path(base), args.reps)
        finally:
            box.close()
        results["podman_run_rm_ms"] = {peer: 1000 * median(raw[peer]) for peer in ("wd", "wds", "ref")}
        results["podman_ratio_alone"] = results["podman_run_rm_ms"]["wd"] / results["podman_run_rm_ms"]["ref"]
        results["podman_ratio"] = results["podman_run_rm_ms"]["wds"] / results["podman_run_rm_ms"]["ref"]
    results["load_average_end"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    wd, ref = results["wd"], results["ref"]
    print(f"{'measure (median ms)':32} {'wrapdock-cni':>12} {'reference':>10} {'ratio':>6}")
    print(f"{'VERSION':32} {wd['version_ms']:12.1f} {ref['version_ms']:10.1f} "
          f"{wd['version_ms'] / ref['version_ms']:6.2f}")
    for key, title in (("add_ms", "ADD (bridge+portmap)"), ("del_ms", "DEL"), ("add_del_ms", "ADD + DEL")):
        print(f"{title:32} {wd[key]:12.1f} {ref[key]:10.1f} {wd[key] / ref[key]:6.2f}")
    if "podman_run_rm_ms" in results:
        pod = results["podman_run_rm_ms"]
        print(f"{'podman run --rm ... true':32} {pod['wd']:12.1f} {pod['ref']:10.1f} "
              f"{results['podman_ratio_alone']:6.2f}")
        print(f"{'  the same, with cni serve':32} {pod['wds']:12.1f} {pod['ref']:10.1f} {results['podman_ratio']:6.2f}")
    print(f"targets: ADD+DEL <= 1.0x: {'met' if results['add_del_ratio'] <= 1.0 else 'NOT met'}"
          + (f"; podman run --rm (with cni serve) <= 1.0x: {'met' if results['podman_ratio'] <= 1.0 else 'NOT met'}"
             if "podman_ratio" in results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
