"""A vxlan overlay (static peers) next to its limits, in one run, on two sandbox hosts (tests/sandbox.py).

    sudo .venv/bin/python bench/overlay.py [--reps 5] [--seconds 2] [--output bench/overlay-results.json]

Two sandbox hosts joined by a veth underlay (198.51.100.11 and .12, MTU 1500), a vxlan network `ov` on
both (10.210.0.0/16, one container on each) and a bridge network `br` on host 1 (two containers on it).

1. Data path, three paths measured round by round (rotating order, first round a discarded warm-up):
   - underlay: host 1 -> host 2 directly (the limit: no container, no encapsulation);
   - overlay: container on host 1 -> container on host 2, over VXLAN;
   - bridge: container -> container on host 1's bridge (no host boundary);
   latency = average RTT of `busybox ping -c 20 -i 0.01` (the same binary on every path), throughput =
   `iperf3 -c -t SECONDS -J` (received bits/s), server and client entered with `nsenter -n` into the
   containers' network namespaces. Ratios overlay/underlay and overlay/bridge.
2. `run -d --net ov busybox sleep` vs `run -d --net br busybox sleep` on host 1, alternating, each
   container removed again untimed; timed inside the sandbox (no nsenter in the figure). Target <= 1.1x.
   With a cluster overlay too (`run -d --net cov`): `cov` is a vxlan network with `--cluster`, etcd
   (Debian's etcd-server) running in host 2 on its underlay address, its data in a temporary directory
   (removed at the end); a start there makes one etcd call, the claim of the container's name (`timeout
   15 etcdctl txn`), whose durations are read from host 1's audit.log.
3. Adding a host to a static overlay, the 2nd vs the 10th: on a host that is in the network, `network join
   NAME --peer NEW` when it has 0 vs 8 other peers (each undone with `network leave`, untimed), and on the
   new host, `network create --driver vxlan ... --peer` with 1 vs 9 peers (each removed, untimed).
   Peers need not exist for this: a join only appends one FDB entry per peer.

Static overlays make no etcd call at all (0 per operation); a start on a cluster overlay makes one.
iperf3 (Debian's) is installed with apt-get if missing. Results go to bench/overlay-results.json; compare
ratios from one run, not values across runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402  (bench/peers.py: installing a missing package the bench's way)
from precompile import precompile  # noqa: E402  (bench/precompile.py)

from tests.sandbox import Sandbox, wrapdock_argv  # noqa: E402

T0 = time.monotonic()
VTEP = {1: "198.51.100.11", 2: "198.51.100.12"}
SUBNET, VNI = "10.210.0.0/16", "4242"
BRIDGE_SUBNET = "10.77.0.0/24"
PATHS = ("underlay", "overlay", "bridge")
PEER_BASE = "198.51.100."  # made-up peers for the join measure: .101-.108 and the new host .120
CLUSTER_SUBNET, CLUSTER_VNI = "10.220.0.0/16", "4343"
ETCD_URL = f"etcd://{VTEP[2]}:2379"
TARGETS = {"run_ratio": ("run -d --net OVERLAY / run -d --net BRIDGE", "<=", 1.1),
           "cluster_run_ratio": ("run -d --net CLUSTER_OVERLAY / run -d --net BRIDGE", "<=", 1.1)}

# the CLI timing loop, run by this interpreter inside host 1 (argv[1]: the JSON request)
INNER = r'''
import json, os, subprocess, sys, time
req = json.loads(sys.argv[1])
labels = list(req["cases"])
out = {label: [] for label in labels}
for rep in range(req["reps"] + 1):
    shift = rep % len(labels)
    for label in labels[shift:] + labels[:shift]:
        case = req["cases"][label]
        started = time.perf_counter()
        done = subprocess.run(case["timed"], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{case['timed']}: {done.stderr.strip()[-400:]}")
        for argv in case.get("after", []):
            subprocess.run(argv, check=True, capture_output=True)
        if rep:
            out[label].append(seconds)
print(json.dumps(out))
'''


def log(message: str) -> None:
    print(f"[overlay bench {time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def underlay(one: Sandbox, two: Sandbox) -> None:
    """A veth pair `ul0` between the two hosts, made from inside host 1 (the peer end straight into host 2)."""
    subprocess.run(["nsenter", "-t", str(one.pid), "-n", "--", "ip", "link", "add", "ul0", "type", "veth", "peer",
                    "name", "ul0", "netns", str(two.pid)], check=True, capture_output=True, timeout=30)
    for box, address in ((one, VTEP[1]), (two, VTEP[2])):
        box.sh("ip", "addr", "add", f"{address}/24", "dev", "ul0")
        box.sh("ip", "link", "set", "ul0", "up")
    deadline = time.monotonic() + 30
    while "LOWER_UP" not in one.sh("ip", "link", "show", "dev", "ul0").stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("the underlay has no carrier")
        time.sleep(0.05)


def pid_of(box: Sandbox, name: str) -> str:
    return str(json.loads(box.wrapdock("inspect", name).stdout)[0]["state"]["pid"])


def address_of(box: Sandbox, name: str, network: str) -> str:
    view = json.loads(box.wrapdock("inspect", name).stdout)[0]
    return next(e["address"] for e in view["endpoints"] if e["network"] == network)


class Lab:
    """The two hosts, their networks and containers; where each path's client and server sit."""

    def __init__(self) -> None:
        self.one, self.two = Sandbox(), Sandbox()
        self.etcd_pid: str | None = None
        self.etcd_dir = tempfile.mkdtemp(prefix="wdbench-etcd-")
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        underlay(self.one, self.two)
        for index, box in ((1, self.one), (2, self.two)):
            box.wrapdock("--quiet", "network", "create", "--driver", "vxlan", "--subnet", SUBNET, "--vni", VNI,
                         "--vtep", VTEP[index], "--peer", VTEP[3 - index], "ov")
        self.one.wrapdock("--quiet", "network", "create", "--subnet", BRIDGE_SUBNET, "br")
        self.start_etcd()
        self.one.wrapdock("--quiet", "--cluster", ETCD_URL, "network", "create", "--driver", "vxlan", "--subnet",
                          CLUSTER_SUBNET, "--vni", CLUSTER_VNI, "--vtep", VTEP[1], "cov")
        for box, name, network in ((self.one, "o1", "ov"), (self.two, "o2", "ov"), (self.one, "b1", "br"),
                                   (self.one, "b2", "br")):
            box.wrapdock("--quiet", "run", "-d", "--name", name, "--net", network, "busybox", "sleep", "3600")
        o1, o2, b1, b2 = (pid_of(self.one, "o1"), pid_of(self.two, "o2"), pid_of(self.one, "b1"),
                          pid_of(self.one, "b2"))
        # path -> (client host, client netns prefix, server host, server netns prefix, server address)
        self.paths = {
            "underlay": (self.one, [], self.two, [], VTEP[2]),
            "overlay": (self.one, ["nsenter", "-t", o1, "-n", "--"], self.two, ["nsenter", "-t", o2, "-n", "--"],
                        address_of(self.two, "o2", "ov")),
            "bridge": (self.one, ["nsenter", "-t", b1, "-n", "--"], self.one, ["nsenter", "-t", b2, "-n", "--"],
                       address_of(self.one, "b2", "br")),
        }
        for _path, (_c, _cp, server, prefix, _a) in self.paths.items():
            server.sh(*prefix, "iperf3", "-s", "-D")  # in the server's netns; ends with its sandbox
        time.sleep(0.5)  # the daemons bind their port

    def ping_ms(self, path: str, count: int = 20) -> float:
        client, prefix, _s, _sp, address = self.paths[path]
        out = client.sh(*prefix, "busybox", "ping", "-q", "-c", str(count), "-i", "0.01", address).stdout
        line = next(x for x in out.splitlines() if x.startswith("round-trip"))
        return float(line.split("=")[1].split("/")[1])

    def iperf_bps(self, path: str, seconds: int) -> float:
        client, prefix, _s, _sp, address = self.paths[path]
        for _attempt in range(3):  # a daemon busy with the previous test says so: ask again
            done = client.sh(*prefix, "iperf3", "-c", address, "-t", str(seconds), "-J", check=False,
                             timeout=seconds + 60)
            if done.returncode == 0:
                return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
            time.sleep(0.5)
        raise RuntimeError(f"iperf3 over {path}: {done.stdout[-400:]} {done.stderr[-400:]}")

    def start_etcd(self) -> None:
        """etcd in host 2, on its underlay address (host 1's claims cross the underlay)."""
        data = f"{self.etcd_dir}/data"
        self.etcd_pid = self.two.bash(
            f"etcd --name wdbench --data-dir {data} --listen-client-urls http://{VTEP[2]}:2379 "
            f"--advertise-client-urls http://{VTEP[2]}:2379 --listen-peer-urls http://127.0.0.1:2380 "
            "--initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster wdbench=http://127.0.0.1:2380 "
            f">{self.etcd_dir}/etcd.log 2>&1 & echo $!").stdout.strip()
        deadline = time.monotonic() + 30
        while self.one.sh("etcdctl", f"--endpoints=http://{VTEP[2]}:2379", "--dial-timeout=2s", "endpoint",
                          "health", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not answer")
            time.sleep(0.2)

    def _etcd_gone(self) -> bool:
        """Ended: no process, or a zombie (the sandbox's PID 1 reaps nobody)."""
        stat = self.two.sh("cat", f"/proc/{self.etcd_pid}/stat", check=False)
        return stat.returncode != 0 or stat.stdout.rsplit(")", 1)[1].split()[0] == "Z"

    def close(self) -> None:
        try:
            if self.etcd_pid:  # by its PID; the sandbox's end would take it too
                self.two.sh("kill", self.etcd_pid, check=False)
                deadline = time.monotonic() + 30
                while not self._etcd_gone() and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            for box in (self.one, self.two):
                box.close()
            shutil.rmtree(self.etcd_dir, ignore_errors=True)


def data_path(lab: Lab, reps: int, seconds: int) -> dict:
    samples: dict[str, dict[str, list[float]]] = {p: {"rtt_ms": [], "bps": []} for p in PATHS}
    for rep in range(reps + 1):
        shift = rep % len(PATHS)
        for path in PATHS[shift:] + PATHS[:shift]:
            rtt, bps = lab.ping_ms(path), lab.iperf_bps(path, seconds)
            if rep:
                samples[path]["rtt_ms"].append(rtt)
                samples[path]["bps"].append(bps)
        log(f"   data path round {rep}/{reps}{' (warm-up)' if rep == 0 else ''}")
    section = {p: {"rtt_ms": median(s["rtt_ms"]), "gbit_s": median(s["bps"]) / 1e9, "samples": s}
               for p, s in samples.items()}
    ov, ul, br = section["overlay"], section["underlay"], section["bridge"]
    section["ratios"] = {"rtt_overlay_vs_underlay": ov["rtt_ms"] / ul["rtt_ms"],
                         "rtt_overlay_vs_bridge": ov["rtt_ms"] / br["rtt_ms"],
                         "throughput_overlay_vs_underlay": ov["gbit_s"] / ul["gbit_s"],
                         "throughput_overlay_vs_bridge": ov["gbit_s"] / br["gbit_s"]}
    return section


def cli_loop(box: Sandbox, reps: int, cases: dict) -> dict[str, list[float]]:
    request = {"reps": reps, "cases": cases}
    done = box.sh(sys.executable, "-c", INNER, json.dumps(request), timeout=3600)
    return json.loads(done.stdout)


def run_timing(lab: Lab, reps: int) -> dict:
    wd = wrapdock_argv()
    cases = {network: {"timed": [*wd, "--quiet", "run", "-d", "--name", "probe", "--net", network, "busybox", "sleep",
                                 "3600"],
                       "after": [[*wd, "--quiet", "rm", "-f", "probe"]]} for network in ("ov", "cov", "br")}
    audit_lines = len(lab.one.sh("cat", "/run/wrapdock/audit.log").stdout.splitlines())
    raw = cli_loop(lab.one, reps, cases)
    section: dict = {net: {"median_s": median(values), "samples_s": [round(v, 4) for v in values]}
                     for net, values in raw.items()}
    section["ratio"] = section["ov"]["median_s"] / section["br"]["median_s"]
    section["cluster_ratio"] = section["cov"]["median_s"] / section["br"]["median_s"]
    # the claims' own durations (the runner's audit lines: argv, phase, duration_ms), warm-up included
    audited = [json.loads(line) for line in lab.one.sh("cat", "/run/wrapdock/audit.log").stdout.splitlines()
               [audit_lines:]]
    claims = [a["duration_ms"] for a in audited if a["phase"] == "do" and a["argv"][-1:] == ["txn"]
              and "etcdctl" in a["argv"] and a.get("stdin", [""])[0].startswith("create(")]  # not rm's release
    section["cov_name_claim_ms"] = {"median": median(claims), "count": len(claims),
                                    "samples": [round(c, 1) for c in claims]}
    return section


def join_timing(lab: Lab, reps: int) -> dict:
    wd = wrapdock_argv()
    box = lab.one
    new = PEER_BASE + "120"
    others = [PEER_BASE + str(n) for n in range(101, 109)]  # 8 hosts besides this one and the new one
    base = ("--quiet", "network", "create", "--driver", "vxlan", "--vtep", VTEP[1])
    box.wrapdock(*base, "--subnet", "10.211.0.0/16", "--vni", "211", "j2")
    box.wrapdock(*base, "--subnet", "10.212.0.0/16", "--vni", "212", *(w for p in others for w in ("--peer", p)),
                 "j10")

    def create(name: str, subnet: str, vni: str, peers_: list[str]) -> dict:
        return {"timed": [*wd, *base, "--subnet", subnet, "--vni", vni, *(w for p in peers_ for w in ("--peer", p)),
                          name],
                "after": [[*wd, "--quiet", "network", "rm", name]]}

    cases = {
        "join_2nd": {"timed": [*wd, "--quiet", "network", "join", "j2", "--peer", new],
                     "after": [[*wd, "--quiet", "network", "leave", "j2", "--host", new]]},
        "join_10th": {"timed": [*wd, "--quiet", "network", "join", "j10", "--peer", new],
                      "after": [[*wd, "--quiet", "network", "leave", "j10", "--host", new]]},
        "create_2nd": create("c2", "10.213.0.0/16", "213", [VTEP[2]]),
        "create_10th": create("c10", "10.214.0.0/16", "214", [VTEP[2], *others]),
    }
    raw = cli_loop(box, reps, cases)
    section = {label: {"median_s": median(values), "samples_s": [round(v, 4) for v in values]}
               for label, values in raw.items()}
    section["join_ratio_10th_vs_2nd"] = section["join_10th"]["median_s"] / section["join_2nd"]["median_s"]
    section["create_ratio_10th_vs_2nd"] = section["create_10th"]["median_s"] / section["create_2nd"]["median_s"]
    return section


def table(results: dict) -> str:
    d, r, j = results["data_path"], results["run"], results["join"]
    ratios = d["ratios"]
    lines = [
        f"{'path':<44} {'RTT (ms)':>9} {'TCP (Gbit/s)':>13}",
        *(f"{label:<44} {d[p]['rtt_ms']:>9.3f} {d[p]['gbit_s']:>13.2f}" for p, label in (
            ("underlay", "underlay, host 1 -> host 2 (the limit)"),
            ("overlay", "overlay, container host 1 -> container host 2"),
            ("bridge", "bridge, container -> container on host 1"))),
        f"{'overlay / underlay':<44} {ratios['rtt_overlay_vs_underlay']:>8.2f}x "
        f"{ratios['throughput_overlay_vs_underlay']:>12.2f}x",
        f"{'overlay / bridge':<44} {ratios['rtt_overlay_vs_bridge']:>8.2f}x "
        f"{ratios['throughput_overlay_vs_bridge']:>12.2f}x",
        "",
        f"run -d --net ov {r['ov']['median_s'] * 1000:.0f} ms, --net br {r['br']['median_s'] * 1000:.0f} ms: "
        f"{r['ratio']:.2f}x (target <= 1.1x: {'met' if results['targets']['run_ratio']['met'] else 'MISSED'})",
        f"run -d --net cov (cluster) {r['cov']['median_s'] * 1000:.0f} ms: {r['cluster_ratio']:.2f}x of br "
        f"(target <= 1.1x: {'met' if results['targets']['cluster_run_ratio']['met'] else 'MISSED'}); its one etcd "
        f"call, the name's claim (txn): median {r['cov_name_claim_ms']['median']:.0f} ms",
        f"network join (on a member): 2nd host {j['join_2nd']['median_s'] * 1000:.0f} ms, 10th host "
        f"{j['join_10th']['median_s'] * 1000:.0f} ms ({j['join_ratio_10th_vs_2nd']:.2f}x)",
        f"network create (the new host): 2nd host {j['create_2nd']['median_s'] * 1000:.0f} ms, 10th host "
        f"{j['create_10th']['median_s'] * 1000:.0f} ms ({j['create_ratio_10th_vs_2nd']:.2f}x)",
        "etcd calls per start: static overlay 0, cluster overlay 1 (the name's claim)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="rounds per measure (after one warm-up round)")
    parser.add_argument("--seconds", type=int, default=2, help="length of each iperf3 test")
    parser.add_argument("--output", default=str(BENCH / "overlay-results.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (sandbox hosts)")
    if args.reps < 1 or args.seconds < 1:
        parser.error("--reps and --seconds must be >= 1")
    if shutil.which("iperf3") is None:
        peers.NEEDS["iperf3"] = {"iperf3": "iperf3"}
        failed = peers.install(["iperf3"], log)
        if failed:
            print(f"bench/overlay.py: {failed['iperf3']}", file=sys.stderr)
            return 4
    # byte-compiled, as `pip install` leaves it, with the dataclass methods' cache (bench/run does the same;
    # a cluster overlay's start imports modules the others do not)
    precompile(sys.executable)
    results: dict = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                     "settings": {"reps": args.reps, "iperf3_seconds": args.seconds},
                     "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                                 "loadavg_start": os.getloadavg()},
                     "versions": {"iperf3": peers.dpkg_version("iperf3"), "iproute2": peers.dpkg_version("iproute2"),
                                  "busybox": peers.dpkg_version("busybox-static")},
                     "etcd_calls_per_start": {"static overlay": 0, "cluster overlay": 1}, "targets": {}}
    log("starting two sandbox hosts, the underlay, the overlay and the bridge network, 4 containers")
    lab = Lab()
    try:
        log(f"1. data path: ping and iperf3 ({args.seconds} s) on {', '.join(PATHS)}, {args.reps} rounds + warm-up")
        results["data_path"] = data_path(lab, args.reps, args.seconds)
        log(f"2. run -d --net ov vs --net cov (cluster) vs --net br, {args.reps} rounds + warm-up")
        results["run"] = run_timing(lab, args.reps)
        log(f"3. network join / create of the 2nd vs the 10th host, {args.reps} rounds + warm-up")
        results["join"] = join_timing(lab, args.reps)
    finally:
        lab.close()
    for target, key in (("run_ratio", "ratio"), ("cluster_run_ratio", "cluster_ratio")):
        label, op, limit = TARGETS[target]
        value = results["run"][key]
        results["targets"][target] = {"what": label, "value": value, "limit": f"{op} {limit}", "met": value <= limit}
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["duration_s"] = round(time.monotonic() - T0, 1)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"overlay bench, {results['date']}, {args.reps} rounds, load {results['machine']['loadavg_start'][0]:.1f} "
          f"-> {results['machine']['loadavg_end'][0]:.1f}")
    print(table(results))
    print(f"results: {args.output} ({results['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
