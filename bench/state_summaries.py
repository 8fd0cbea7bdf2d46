"""Time StateStore.all("container") against StateStore.summaries("container") at N containers.

    .venv/bin/python bench/state_summaries.py [--containers 1000] [--reps 20] [--stale 5]

No root, nothing outside a temporary directory (removed at the end). The state directory gets N
container records shaped like the one `wrapdock run -d --net N busybox sleep 1` writes (default
capabilities, PATH in env, one endpoint, netns named after the container, phase ready), each
through StateStore.put as wrapdock writes them. Both caches are made first (one all(), one summaries());
then each measure is one call on a new StateStore (as a new `wrapdock` process starts: no record
checked before), the two interleaved round by round so that load on the machine hits both alike, and
the median of --reps is printed: warm (every cache entry fresh: one stat per record and one cache file
parsed) and with --stale records written again behind the caches (those are read and checked from
their files; fewer than 16, so neither cache is rewritten). Printed first: the size of both cache files
and what json.loads of each costs, and what the stat of every record file costs (both methods pay it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from wrapdock.containerspec import DEFAULT_CAPS, DEFAULT_PATH
from wrapdock.state import StateStore


def container_record(number: int) -> dict[str, Any]:
    """A record as `run -d --net bench busybox sleep 1` leaves it once the container runs."""
    container_id = f"{number:08x}" + "5f3c" * 14
    name = f"bench_container_{number}"
    address = f"10.{(number + 2) // 65536 % 256}.{(number + 2) // 256 % 256}.{(number + 2) % 256}"
    return {
        "version": 1, "id": container_id, "name": name, "image": "busybox", "command": ["sleep", "1"],
        "env": [f"PATH={DEFAULT_PATH}"], "hostname": container_id[:12], "workdir": "/", "volumes": [],
        "limits": {"memory": None, "cpus": None, "cpu_shares": None, "cpuset_cpus": None, "pids": None},
        "caps": list(DEFAULT_CAPS), "privileged": False, "netns": name, "created": "2026-12-03T03:00:00+00:00",
        "detach": True, "auto_remove": False, "tty": False, "phase": "ready", "owner_pid": None,
        "net_mode": "bridge",
        "endpoints": [{"network": "bench", "ifname": "eth0", "host_ifname": f"wd{container_id[:10]}0",
                       "address": address}],
        "ports": [], "dns": [], "add_hosts": [], "lab": None,
    }


def timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def measure(root: Path, reps: int) -> tuple[float, float]:
    """Median milliseconds of all() and summaries(), each on a new StateStore, interleaved."""
    whole, slim = [], []
    for _ in range(reps):
        whole.append(timed(lambda: StateStore(root).all("container")))
        slim.append(timed(lambda: StateStore(root).summaries("container")))
    return statistics.median(whole), statistics.median(slim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--stale", type=int, default=5, help="records rewritten behind the caches (< 16)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="wdbench-state-"))
    try:
        root = directory / "state"
        store = StateStore(root)
        for number in range(args.containers):
            record = container_record(number)
            store.put("container", record["id"], record)
        records = StateStore(root).all("container")  # writes the index
        summaries = StateStore(root).summaries("container")  # writes the summaries
        assert len(records) == len(summaries) == args.containers
        del records, summaries  # not alive while measuring: the collector would walk them too
        gc.collect()
        for name in ("containers.index.json", "containers.summary.json"):
            content = (root / name).read_bytes()
            parse = statistics.median(timed(lambda content=content: json.loads(content)) for _ in range(args.reps))
            print(f"{name}: {len(content) / 1024:.0f} KiB, json.loads {parse:.2f} ms")
        folder = root / "containers"
        files = [entry.path for entry in os.scandir(folder)]
        stats = statistics.median(timed(lambda: [os.stat(path) for path in files]) for _ in range(args.reps))
        print(f"one stat per record file (both pay it): {stats:.2f} ms")
        whole, slim = measure(root, args.reps)
        print(f"warm, {args.containers} containers, median of {args.reps}: all() {whole:.2f} ms, "
              f"summaries() {slim:.2f} ms ({slim / whole:.2f}x)")
        for number in range(args.stale):
            record = container_record(number)
            store.put("container", record["id"], {**record, "owner_pid": 4242})
        whole, slim = measure(root, args.reps)
        print(f"{args.stale} records changed behind the caches: all() {whole:.2f} ms, summaries() {slim:.2f} ms "
              f"({slim / whole:.2f}x)")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
