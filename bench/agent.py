"""The bench's agent: runs inside one sandbox host and does the measuring there.

It is started by bench/sandbox.py with `nsenter -t SANDBOX_PID -n -m -p -- PYTHON bench/agent.py` and
answers one JSON request per line on stdin with one JSON line on stdout. Being inside the sandbox's
PID namespace, it reads that namespace's /proc/sys/kernel/ns_last_pid around every operation:

  tasks = ns_last_pid(after) - ns_last_pid(before) [- 1 for the CLI process the agent itself spawned]

ns_last_pid counts every task the namespace created: processes *and threads* (the `sh` package runs
4 helper threads per command; Go daemons create threads too), by anyone in the sandbox.

With "trace": true the agent attaches `strace -f` to itself for the operation only, then tells
processes (fork/vfork/clone without CLONE_THREAD) from threads and lists the programs exec'd. Tracing
slows things down, so traced runs are never timed.

Only the standard library here (plus wrapdock itself for the "plumb" operation).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def last_pid() -> int:
    with open(NS_LAST_PID) as handle:
        return int(handle.read())


# -- strace -------------------------------------------------------------------------------------
_SPAWN = re.compile(r"^(clone3?|v?fork)\(")
_EXEC = re.compile(r'^execve\("([^"]*)", \["([^"]*)"')


def _program(match: re.Match) -> str:
    """The program's name; a busybox applet re-exec'd through /proc/self/exe by its argv[0]."""
    path, argv0 = match.group(1), match.group(2)
    return os.path.basename(argv0 if path == "/proc/self/exe" else path)


def parse_strace(text: str) -> dict:
    processes = threads = 0
    programs: Counter[str] = Counter()
    pending: dict[str, re.Match] = {}
    for line in text.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if _SPAWN.match(rest):
            if re.search(r"\) = -1 ", rest):
                continue  # failed
            if "CLONE_THREAD" in rest:
                threads += 1
            else:
                processes += 1
            continue
        match = _EXEC.match(rest)
        if match:
            if rest.endswith("<unfinished ...>"):
                pending[pid] = match
            elif rest.rstrip().endswith("= 0"):
                programs[_program(match)] += 1
            continue
        if rest.startswith("<... execve resumed>"):
            started = pending.pop(pid, None)
            if started and rest.rstrip().endswith("= 0"):
                programs[_program(started)] += 1
    return {"processes": processes, "threads": threads, "execs": sum(programs.values()),
            "programs": dict(programs.most_common())}


@contextmanager
def traced(enabled: bool, out: dict):
    """strace -f this process while the block runs; results land in out["trace"]."""
    if not enabled:
        yield
        return
    fd, path = tempfile.mkstemp(prefix="bench-strace-", dir="/run")
    os.close(fd)
    tracer = subprocess.Popen(
        ["strace", "-f", "-s", "200", "-e", "trace=clone,clone3,fork,vfork,execve", "-o", path, "-p", str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert tracer.stderr is not None
    tracer.stderr.readline()  # "strace: Process N attached"
    time.sleep(0.05)
    try:
        yield
    finally:
        tracer.send_signal(signal.SIGINT)  # strace detaches from every tracee, they run on
        try:
            tracer.wait(timeout=20)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
        tracer.stderr.close()
        text = Path(path).read_text(errors="replace")
        os.unlink(path)
        out["trace"] = parse_strace(text)


# -- operations -----------------------------------------------------------------------------------
def op_run(req: dict) -> dict:
    """Run one command (a CLI call) and time it; tasks exclude the command's own process."""
    env = req.get("env") or dict(os.environ)
    out: dict = {}
    stdin = req.get("stdin")
    with traced(req.get("trace", False), out):
        before = last_pid()
        started = time.perf_counter()
        proc = subprocess.run(req["argv"], input=stdin.encode() if stdin is not None else None,
                              stdin=subprocess.DEVNULL if stdin is None else None, capture_output=True,
                              env=env, timeout=req.get("timeout", 120), cwd=req.get("cwd", "/"))
        seconds = time.perf_counter() - started
        after = last_pid()
    if "trace" in out:
        out["trace"]["processes"] -= 1  # the command's own process
    limit = req.get("keep_output", 4000)
    out.update(rc=proc.returncode, seconds=seconds, tasks=after - before - 1,
               stdout_lines=len(proc.stdout.splitlines()), stdout_bytes=len(proc.stdout),
               stdout=proc.stdout.decode(errors="replace")[-limit:],
               stderr=proc.stderr.decode(errors="replace")[-limit:])
    return out


def op_spawn(req: dict) -> dict:
    """Start a daemon in the background (its own session), output to a log file."""
    log = open(req["log"], "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(req["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=req.get("env"),
                            start_new_session=True, cwd="/")
    log.close()
    _children.append(proc)
    return {"pid": proc.pid}


def op_plumb(req: dict) -> dict:
    """wrapdock's container network plumbing only: endpoint.attach + publish, then unpublish + detach.

    The network exists already (made with the CLI); each repetition makes a fresh netns (not timed),
    times ADD and DEL through wrapdock's own Runner (sh executor, quiet trail, no audit log), and
    deletes the netns (not timed).
    """
    from ipaddress import IPv4Address

    from wrapdock import kernelfacts
    from wrapdock.model import Network
    from wrapdock.plan import Plan
    from wrapdock.plans import endpoint
    from wrapdock.portspec import PortMapping
    from wrapdock.runner import Runner, Trail
    from wrapdock.state import StateStore

    store = StateStore(Path(req["state_dir"]))
    network = Network.from_record(store.get("network", req["network"]))
    runner = Runner(Trail("quiet"))
    ports = [PortMapping(None, req.get("host_port", 8080), req.get("container_port", 80), "tcp")]
    hosts = list(network.subnet.hosts())
    results = []
    for rep in range(req["reps"]):
        cid = f"{rep:04d}" + "b" * 60
        name = f"plumb{rep}"
        att = endpoint.Attachment(network, "eth0", endpoint.host_ifname(cid, 0), IPv4Address(hosts[10 + rep % 200]),
                                  primary=True)
        add = Plan("add", [*endpoint.attach(att, name, name, kernel_ipv6=kernelfacts.has_ipv6()),
                           endpoint.publish(cid, name, att, ports)])
        delete = Plan("del", [*endpoint.unpublish(cid, name, ports), endpoint.detach(att, name)])
        subprocess.run(["ip", "netns", "add", name], check=True)
        one: dict = {}
        try:
            with traced(req.get("trace_add", False), one):
                before = last_pid()
                started = time.perf_counter()
                runner.apply(add)
                one["add_seconds"] = time.perf_counter() - started
                one["add_tasks"] = last_pid() - before
            if "trace" in one:
                one["add_trace"] = one.pop("trace")
            with traced(req.get("trace_del", False), one):
                before = last_pid()
                started = time.perf_counter()
                runner.apply(delete)
                one["del_seconds"] = time.perf_counter() - started
                one["del_tasks"] = last_pid() - before
            if "trace" in one:
                one["del_trace"] = one.pop("trace")
        finally:
            subprocess.run(["ip", "netns", "del", name], check=False)
        results.append(one)
    return {"reps": results}


def _plugin(kind: str, command: str, conf: dict, container_id: str, netns: str, cni_path: str) -> tuple[dict, float]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container_id, "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0",
           "CNI_PATH": cni_path}
    started = time.perf_counter()
    proc = subprocess.run([os.path.join(cni_path, kind)], input=json.dumps(conf).encode(), capture_output=True,
                          env=env, timeout=60)
    seconds = time.perf_counter() - started
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"CNI {kind} {command} failed ({proc.returncode}): {text} {proc.stderr.decode()}")
    return (json.loads(text) if text.strip() else {}), seconds


def op_cni(req: dict) -> dict:
    """The CNI reference bridge + portmap plugins, called as a runtime does for a conflist.

    ADD: bridge (host-local IPAM), then portmap with bridge's result as prevResult and
    runtimeConfig.portMappings. DEL: portmap, then bridge, each with the cached ADD result as
    prevResult (libcni's order). The netns is made and removed around them, not timed.
    """
    cni_path = req["cni_path"]
    bridge_conf = req["bridge"]
    portmap_conf = req["portmap"]
    results = []
    for rep in range(req["reps"]):
        netns = f"cni{rep}"
        cid = f"bench{rep:04d}" + "c" * 55
        subprocess.run(["ip", "netns", "add", netns], check=True)
        one: dict = {}
        try:
            with traced(req.get("trace_add", False), one):
                before = last_pid()
                started = time.perf_counter()
                bridge_result, one["bridge_add_seconds"] = _plugin("bridge", "ADD", bridge_conf, cid, netns, cni_path)
                portmap_result, one["portmap_add_seconds"] = _plugin(
                    "portmap", "ADD", {**portmap_conf, "prevResult": bridge_result}, cid, netns, cni_path)
                one["add_seconds"] = time.perf_counter() - started
                one["add_tasks"] = last_pid() - before
            if "trace" in one:
                one["add_trace"] = one.pop("trace")
            with traced(req.get("trace_del", False), one):
                before = last_pid()
                started = time.perf_counter()
                _, one["portmap_del_seconds"] = _plugin(
                    "portmap", "DEL", {**portmap_conf, "prevResult": portmap_result}, cid, netns, cni_path)
                _, one["bridge_del_seconds"] = _plugin(
                    "bridge", "DEL", {**bridge_conf, "prevResult": bridge_result}, cid, netns, cni_path)
                one["del_seconds"] = time.perf_counter() - started
                one["del_tasks"] = last_pid() - before
            if "trace" in one:
                one["del_trace"] = one.pop("trace")
            if rep == 0:
                one["result"] = portmap_result
        finally:
            subprocess.run(["ip", "netns", "del", netns], check=False)
        results.append(one)
    return {"reps": results}


OPS = {"run": op_run, "spawn": op_spawn, "plumb": op_plumb, "cni": op_cni}
_children: list[subprocess.Popen] = []


def main() -> None:
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])  # the repository, for `import wrapdock` from a checkout
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            answer = {"ok": True, **OPS[req["op"]](req)}
        except Exception as exc:  # reported to the harness, which decides
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        for child in list(_children):
            if child.poll() is not None:
                _children.remove(child)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
