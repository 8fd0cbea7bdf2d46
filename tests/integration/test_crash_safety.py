"""kill -9 of wrapdock at random points of `run -d --net`, `rm -f` and `network create` (seeded trials).

Each trial starts the operation, waits until it has run a seeded random number k of its changing
commands (the "do" lines of audit.log; k below the operation's total, counted in a calibration run in the
same sandbox), then a seeded random 0-20 ms more (so that some kills land in the middle of a command),
and SIGKILLs the wrapdock process (the python process that nsenter started in the sandbox; the command it
was running finishes on its own, as after a real crash). The kill point is counted in commands, not in
seconds: on a loaded machine a delay in seconds drifts past the end of the operation. Then, every time:

- every state file parses (json.loads): an atomic write is never seen half-done;
- `wrapdock ps -a` and `wrapdock network ls` still work;
- `wrapdock gc` exits 0 and a second `gc` finds nothing to do;
- after `rm -f` of the containers still listed and `network rm` of a network the trial made, the host is
  exactly as before the trial (reliability.picture(): links, addresses, routes, iptables, netns, records,
  directories, mounts, cgroups, processes).

The three operations run side by side, one sandbox each.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.reliability import (
    NOTHING_TO_DO,
    assert_no_leftovers,
    assert_same,
    details,
    ok,
    parsed_state,
    prepare,
    prepare_with_neighbour,
)
from tests.sandbox import Sandbox

pytestmark = pytest.mark.integration

SEED = 6006
NET, SUBNET = "cnet", "10.71.0.0/24"
RUN = ("run", "-d", "--name", "web", "--net", NET, "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80")
RM = ("rm", "-f", "web")
CREATE = ("network", "create", "--subnet", "10.72.0.0/24", "crashnet")
TRIALS = {"run": 7, "rm": 7, "create": 7}  # 21 in all


@dataclass
class Crash:
    after: int  # the kill was aimed after this many changing commands
    delay: float  # ... and this many seconds more
    killed: bool  # False: the operation had finished before the kill came
    done: int  # changing commands it had run (audit.log)
    returncode: int | None
    stderr: str

    def text(self) -> str:
        return (f"aimed {self.delay * 1000:.0f} ms after changing command {self.after}, killed={self.killed}, "
                f"{self.done} changing command(s) done, exit {self.returncode}")


def audit_log(box: Sandbox) -> Path:
    return Path(f"/proc/{box.pid}/root/run/wrapdock/audit.log")


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaps - the sandbox's init is `sleep` - counts as gone)."""
    return process_state(pid) not in ("", "Z")


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T, Z, ...); "" once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def finish_nsenter(proc: subprocess.Popen, seconds: float = 120) -> tuple[str, str]:
    """Wait for the nsenter whose child (wrapdock) was stopped and killed, continuing it whenever it is
    stopped.

    nsenter mirrors job control: when waitpid() shows its child stopped, it stops *itself* (SIGSTOP),
    and continues the child once it is continued. When that happens is up to the scheduler: a single
    SIGCONT sent right after the kill can arrive before nsenter stops itself, is then lost, and leaves
    nsenter stopped forever (the hang CI saw). So poll its state, with a deadline, and continue it each
    time it is found stopped, until it exits.
    """
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        if process_state(proc.pid) in ("T", "t"):
            os.kill(proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, f"nsenter {proc.pid} did not exit (state {process_state(proc.pid)!r})"
        time.sleep(0.005)
    return proc.communicate(timeout=30)


def changes_done(log: Path, offset: int) -> int:
    """The changing commands ("do" lines) audit.log holds past `offset`."""
    try:
        with log.open("rb") as file:
            file.seek(offset)
            text = file.read().decode()
    except FileNotFoundError:
        return 0
    complete = text[:text.rfind("\n") + 1]  # a line being appended is not read yet
    return sum(1 for line in complete.splitlines() if line.strip() and json.loads(line)["phase"] == "do")


def crash(box: Sandbox, args: tuple[str, ...], after: int, delay: float) -> Crash:
    """Start wrapdock ARGS, SIGKILL it `delay` seconds after its `after`-th changing command; wait until
    what it was running has finished too."""
    log = audit_log(box)
    offset = log_size(log)
    proc = box.popen_wrapdock("--quiet", *args)
    deadline = time.monotonic() + 60
    while proc.poll() is None and changes_done(log, offset) < after:
        assert time.monotonic() < deadline, f"wrapdock never ran {after} changing command(s)"
        time.sleep(0.001)
    time.sleep(delay)
    orphans = []
    for pid in child_pids(proc.pid):  # nsenter's child: the wrapdock python process
        try:
            os.kill(pid, signal.SIGSTOP)  # hold it still while its running commands are noted
            orphans = child_pids(pid)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out, err = finish_nsenter(proc)
    killed = proc.returncode == -signal.SIGKILL  # (nsenter dies of its child's signal)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in orphans):
        assert time.monotonic() < deadline, f"the commands of the killed wrapdock still run: {orphans}"
        time.sleep(0.01)
    done = changes_done(log, offset)
    if not killed:
        assert proc.returncode == 0, details(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return Crash(after, delay, killed, done, proc.returncode, err)


def calibrate(box: Sandbox, args: tuple[str, ...]) -> int:
    """How many changing commands a complete run of the operation has (audit.log)."""
    log = audit_log(box)
    offset = log_size(log)
    ok(box, "--quiet", *args)
    return changes_done(log, offset)


def after_crash(box: Sandbox, before: dict, what: str, base_networks: set[str]) -> None:
    """The checks every trial ends with, then the removal of what is left, then the host as before."""
    parsed_state(box)  # every record parses: never truncated
    ok(box, "ps", "-a")
    ok(box, "network", "ls")
    ok(box, "gc")
    again = ok(box, "gc")
    assert again.stdout == NOTHING_TO_DO, f"{what}: a second gc still found work:\n{again.stdout}"
    state = parsed_state(box)
    names = [record["name"] for path, record in state.items() if "/containers/" in path and record["name"] != "nbr"]
    networks = [record["name"] for path, record in state.items() if "/networks/" in path]
    if names:
        ok(box, "--quiet", "rm", "-f", *names)
    extra = [name for name in networks if name not in base_networks]
    if extra:
        ok(box, "--quiet", "network", "rm", *extra)
    assert_same(box, before, what)


def trials(box: Sandbox, op: str, count: int) -> tuple[list[Crash], int]:
    """`count` seeded kill -9 trials of one operation in one sandbox; also the number of changing commands
    of a complete run."""
    rng = random.Random(f"{SEED}-{op}")
    if op == "create":  # a fresh host: the kills may also land in the shared chains' creation
        before = prepare(box)
        total = calibrate(box, CREATE)
        ok(box, "--quiet", "network", "rm", "crashnet")
        base_networks: set[str] = set()
    else:  # a neighbour on the network: its /etc/hosts is rewritten too, its bridge keeps a carrier
        before = prepare_with_neighbour(box, (NET, SUBNET))
        total = calibrate(box, RUN)
        if op == "rm":
            total = calibrate(box, RM)
        else:
            ok(box, "--quiet", *RM)
        base_networks = {NET}
    assert_same(box, before, f"{op}: the calibration run")
    assert total >= 2, total  # (run: its prepare script, then its start script)

    crashes = []
    for trial in range(count):
        # (a run is two scripts: its kills may also land before the first change)
        after, delay = rng.randint(0 if total < 3 else 1, total - 1), rng.uniform(0, 0.02)
        if op == "rm":
            ok(box, "--quiet", *RUN)
        args = {"run": RUN, "rm": RM, "create": CREATE}[op]
        result = crash(box, args, after, delay)
        crashes.append(result)
        after_crash(box, before, f"{op} trial {trial} (seed {SEED}-{op}): {result.text()}", base_networks)
    return crashes, total


def test_kill_9_at_random_points_leaves_state_gc_can_reconcile(sandbox, sandbox_factory):
    boxes = {"run": sandbox, "rm": sandbox_factory(), "create": sandbox_factory()}
    starts = {op: box.snapshot() for op, box in boxes.items()}
    with ThreadPoolExecutor(len(boxes)) as pool:
        futures = {op: pool.submit(trials, box, op, TRIALS[op]) for op, box in boxes.items()}
        results = {op: future.result() for op, future in futures.items()}

    everything = [c for crashes, _ in results.values() for c in crashes]
    summary = "\n".join(f"{op} ({total} changing commands): " + "; ".join(c.text() for c in crashes)
                        for op, (crashes, total) in results.items())
    assert len(everything) >= 20
    # the kills landed: most trials were killed, each operation at different points, some half-way
    assert sum(c.killed for c in everything) >= len(everything) // 2, summary
    for crashes, total in results.values():
        assert len({c.done for c in crashes if c.killed}) >= 2, summary
        assert any(0 < c.done < total for c in crashes if c.killed), summary

    for op, box in boxes.items():
        if op != "create":
            ok(box, "--quiet", "rm", "-f", "nbr")
            ok(box, "--quiet", "network", "rm", NET)
        assert_no_leftovers(box, starts[op])
