"""Helpers for the reliability tests (issue 6): the whole picture of a sandbox host, compared before and
after an operation that failed, was killed or was refused; one-line errors; the commands a run changed.

"The whole picture" is what an operation may touch: links, addresses, routes, iptables and network
namespaces (sandbox.snapshot()), wrapdock's state records (parsed), the containers' directories, the
sandbox's mount table, the cgroups under the sandbox's parent and the processes running in it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from tests.integration.containerlab import DATA_DIR, container_dirs, processes, wait_for
from tests.sandbox import Sandbox
from wrapdock.shell import brief

ERROR_PREFIX = "wrapdock: error:"
STATE_DIR = "/run/wrapdock"
STATE_FOLDERS = ("networks", "ipam", "containers")
NOTHING_TO_DO = "nothing to do: the state and the host agree\n"
# the note of the step that rewrites the /etc/hosts of a network's other containers
HOSTS_REFRESH = "/etc/hosts of"
# in the note of a new container's files script: the /etc/hosts it shares with its neighbours, written there
SHARED_HOSTS = "/etc/hosts (the file of the containers on the same networks)"



# -- running wrapdock -------------------------------------------------------------------------------
def details(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def call(box: Sandbox, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """wrapdock ARGS in the sandbox, whatever its exit code; never a traceback or an internal error."""
    proc = box.wrapdock(*args, check=False, env=env, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, details(proc)
    assert "internal error" not in proc.stderr, details(proc)
    return proc


def ok(box: Sandbox, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """wrapdock ARGS, which must succeed."""
    proc = call(box, *args, env=env, timeout=timeout)
    assert proc.returncode == 0, f"wrapdock {shlex.join(args)}: {details(proc)}"
    return proc


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Wait for processes started with sandbox.popen_wrapdock; their results, in order."""
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def one_error(proc: subprocess.CompletedProcess, code: int, allowed: tuple[str, ...] = ()) -> str:
    """A failure: exit `code`, no traceback, exactly one `wrapdock: error:` line and it is the last one;
    other stderr lines only if they start with one of `allowed` (e.g. the trail, lab progress)."""
    text = details(proc)
    assert proc.returncode == code, text
    assert "Traceback" not in proc.stdout + proc.stderr, text
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, text
    assert lines and lines[-1] == errors[0], text
    for line in lines[:-1]:
        assert allowed and line.startswith(allowed), f"unexpected stderr line {line!r}\n{text}"
    return errors[0]


# -- what a run changed -------------------------------------------------------------------------------
def changing_steps(stderr: str) -> list[dict]:
    """The records ({argv, note, ...}) of the commands that changed the host (phase "do"), in order,
    from the stderr of a `--trail json` run (lines that are no JSON, such as lab progress, skipped)."""
    steps = []
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record["phase"] == "do":
            steps.append(record)
    return steps


_ID = re.compile(r"[0-9a-f]{64}")
_VETH = re.compile(r"\bwd[0-9a-f]{10}(\d)")


def normalized(text: str) -> str:
    """Container ids and the veth names made from them differ from run to run: make them comparable."""
    return _VETH.sub(r"wd<id>\1", _ID.sub("<id>", text))


def assert_names_failed_step(proc: subprocess.CompletedProcess, step: dict, fault: int,
                             allowed: tuple[str, ...] = ()) -> str:
    """The injected fault: exit 1, one error line naming the failed command and the fault, rolled back
    completely (no undo failed)."""
    line = one_error(proc, 1, allowed)
    expected = f"`{brief(step['argv'])}` failed (exit 1): injected fault at command {fault};"
    assert normalized(expected) in normalized(line), f"{line}\nexpected it to name: {expected}"
    assert "rollback incomplete" not in line, line
    return line


# -- the whole picture ----------------------------------------------------------------------------------
def _host_path(box: Sandbox, path: str) -> Path:
    """A path of the sandbox's private mounts (/run), seen from here through its PID 1's root."""
    return Path(f"/proc/{box.pid}/root{path}")


def state_files(box: Sandbox) -> dict[str, str]:
    """Every state record (and image record) by path, with its exact text."""
    found = {}
    for folder in [*(f"{STATE_DIR}/{f}" for f in STATE_FOLDERS), f"{DATA_DIR}/images"]:
        directory = _host_path(box, folder)
        if directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                found[f"{folder}/{path.name}"] = path.read_text()
    return found


def parsed_state(box: Sandbox) -> dict[str, object]:
    """Every record, parsed (a truncated or broken file fails here). IPAM's round-robin cursor
    (`last_reserved`) is left out: by design it moves on when an address is handed out and given back,
    so that a freed address is not reused at once (README: IPAM)."""
    records = {}
    for path, text in state_files(box).items():
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{path} does not parse ({exc}):\n{text!r}") from None
        if "/ipam/" in path:
            record = {k: v for k, v in record.items() if k != "last_reserved"}
        records[path] = record
    return records


def records(box: Sandbox, folder: str) -> list[str]:
    return box.state_records(folder)


def mounts(box: Sandbox) -> list[str]:
    return box.sh("cat", "/proc/self/mountinfo").stdout.splitlines()


def picture(box: Sandbox) -> dict:
    """Everything an operation may change in the sandbox host."""
    return {
        "snapshot": box.snapshot(),
        "state": parsed_state(box),
        "container_dirs": container_dirs(box),
        "mounts": mounts(box),
        "cgroups": [str(p) for p in box.cgroup_dirs()],
        "processes": processes(box),
    }


def differences(before: dict, after: dict) -> str:
    lines = []
    for key in before:
        if before[key] != after[key]:
            if isinstance(before[key], dict):
                for sub in sorted(set(before[key]) | set(after[key])):
                    if before[key].get(sub) != after[key].get(sub):
                        lines.append(f"{key}.{sub}:\n  before: {before[key].get(sub)}\n  after:  {after[key].get(sub)}")
            else:
                lines.append(f"{key}:\n  before: {before[key]}\n  after:  {after[key]}")
    return "\n".join(lines)


def changes(box: Sandbox, before: dict, seconds: float = 15.0) -> str:
    """How the sandbox host differs from `before` ("" if not at all), once it has settled: a killed
    container's shim needs a moment to go, a bridge's carrier flags follow its ports up to a second later."""
    deadline = time.monotonic() + seconds
    while True:
        after = picture(box)
        if after == before:
            return ""
        if time.monotonic() > deadline:
            return differences(before, after)
        time.sleep(0.1)


def assert_same(box: Sandbox, before: dict, what: str = "", seconds: float = 15.0) -> None:
    """The sandbox host is exactly as in `before`."""
    changed = changes(box, before, seconds)
    assert not changed, f"{what}: the host changed\n{changed}"


def assert_no_leftovers(box: Sandbox, start_snapshot: dict) -> None:
    """The end of every test: the snapshot it started with, no record, no cgroup, no directory, no netns."""
    assert box.snapshot() == start_snapshot
    for folder in STATE_FOLDERS:
        assert box.state_records(folder) == [], folder
    assert box.cgroup_dirs() == []
    assert container_dirs(box) == []
    assert box.sh("ip", "netns", "list").stdout.strip() == ""


def make_default_image(box: Sandbox) -> None:
    """The busybox image, made once before a loop, so every iteration compares like with like."""
    ok(box, "--quiet", "run", "--rm", "busybox", "true")


def link_flags(box: Sandbox, name: str) -> list[str]:
    return json.loads(box.sh("ip", "-j", "link", "show", "dev", name).stdout)[0]["flags"]


def prepare(box: Sandbox, *networks: tuple[str, str]) -> dict:
    """The default image and these (NAME, SUBNET) networks, each bridge with a port that came and went;
    returns the picture of the host that every iteration of a loop must come back to.

    The image is made once, so that every iteration compares like with like. A bridge that never had a
    port shows LOWER_UP, one that had shows NO-CARRIER (once the kernel's link watch caught up, up to a
    second later): a loop of failing runs, whose veths come and go, must not see that difference.
    """
    for name, subnet in networks:
        ok(box, "--quiet", "network", "create", "--subnet", subnet, name)
    if networks:  # the image and a first port on the first bridge in one go
        ok(box, "--quiet", "run", "--rm", "--net", networks[0][0], "busybox", "true")
    else:
        make_default_image(box)
    for name, _ in networks[1:]:  # a veth port on and off the others
        box.bash(f"ip link add wdwarm0 type veth peer name wdwarm1 && ip link set wdwarm0 master {name} up && "
                 "ip link set wdwarm1 up && ip link del wdwarm0")
    for name, _ in networks:
        wait_for(lambda name=name: "NO-CARRIER" in link_flags(box, name), what=f"{name} without carrier")
    return picture(box)


def prepare_with_neighbour(box: Sandbox, *networks: tuple[str, str], name: str = "nbr") -> dict:
    """prepare(), then a container `name` on the first network: its bridge keeps a carrier while other
    containers come and go (no flags to wait for), and their operations rewrite its /etc/hosts."""
    prepare(box, *networks)
    ok(box, "--quiet", "run", "-d", "--name", name, "--net", networks[0][0], "busybox", "sleep", "600")
    wait_for(lambda: "LOWER_UP" in link_flags(box, networks[0][0]), what=f"{networks[0][0]} with carrier")
    return picture(box)


def fetch(box: Sandbox, url: str) -> str | None:
    """GET `url` from the sandbox host (busybox wget, bounded by `timeout`); None if it failed."""
    proc = box.sh("timeout", "5", "busybox", "wget", "-qO-", url, check=False, timeout=30)
    return proc.stdout if proc.returncode == 0 else None


def failing_once(tmp_path: Path, program: str, when: str = "*") -> dict:
    """An environment whose PATH finds a stand-in for `program` that fails its first call whose
    arguments match `when` (a `case` pattern of "$*": quote spaces) and runs the real program otherwise: a fault
    inside one of wrapdock's scripts, after the commands before it in that script ran."""
    real = shutil.which(program)
    assert real, program
    folder = tmp_path / f"fail-{program}"
    folder.mkdir(parents=True)
    stand_in = folder / program
    stand_in.write_text(f"""#!/bin/sh
case "$*" in
    {when}) if /bin/mkdir {folder}/.fired 2>/dev/null; then echo "injected fault in {program}" >&2; exit 1; fi ;;
esac
exec {real} "$@"
""")
    stand_in.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}
