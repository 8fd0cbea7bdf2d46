"""Containers end to end: the real CLI in a throwaway sandbox host, real processes, files and exit codes.

Every test runs inside its own sandbox (tests/sandbox.py) and ends by proving that nothing of its
containers is left there: no directory under /run/wrapdock-data/containers, no network namespace,
no cgroup under the sandbox's cgroup parent, no state record, no overlay or netns mount, no process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.containerlab import (
    CONTAINERS_DIR,
    DATA_DIR,
    DOCKER_DEFAULT_CAPS,
    assert_clean,
    container_dirs,
    inspect,
    leftover_mounts,
    link_kind_args,
    mount_points,
    netns_list,
    processes,
    ps_all,
    remove_cgroup_dirs,
    usage_error,
    wait_for,
    wd,
)
from tests.integration.terminal import Terminal
from tests.sandbox import wrapdock_argv

pytestmark = pytest.mark.integration

SANDBOX_PROCESSES = ("bash", "sleep infinity", "unshare", "nsenter", "python", "wrapdock")


def cap_line(status_text: str, key: str) -> str:
    match = re.search(rf"^{key}:\s*([0-9a-f]+)$", status_text, re.M)
    assert match, status_text
    return match.group(1)


# -- 1. the series' replay ------------------------------------------------------------------------
def test_series_replay_top_in_its_own_namespaces(sandbox):
    box = sandbox
    # the sandbox host shares the machine's UTS namespace: if a container's `hostname` ever escaped its
    # own, put the machine's name back (the test still fails on it below)
    machine_hostname = box.sh("hostname").stdout.strip()
    try:
        replay(box, machine_hostname)
    finally:
        if box.sh("hostname").stdout.strip() != machine_hostname:
            box.sh("hostname", machine_hostname)


def replay(box, machine_hostname: str) -> None:
    started = wd(box, "run", "-d", "-e", "bird=123", "-name", "bird", "top")
    container_id = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id), started.stdout
    assert container_dirs(box) == [container_id]

    # top is running and writing its screen to the log
    def top_screen():
        out = wd(box, "logs", "bird").stdout
        return out if "PID" in out and "Mem:" in out else None

    logs = wait_for(top_screen, what="top's header in the log")
    assert re.search(r"PID\s+PPID\s+USER", logs), logs

    env = wd(box, "exec", "bird", "env").stdout.splitlines()
    # the container's environment and nothing of the commands that enter it (no PWD, SHLVL of a shell)
    assert sorted(env) == sorted(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "HOSTNAME=bird", "HOME=/root", "bird=123"]), env

    addr = wd(box, "exec", "bird", "ip", "addr").stdout
    links = re.findall(r"^\d+: ([^:@]+)[:@]", addr, re.M)
    assert links == ["lo"], addr
    assert "inet 127.0.0.1/8" in addr

    # PID 1 is the workload; none of the sandbox's processes is visible
    assert wd(box, "exec", "bird", "cat", "/proc/1/comm").stdout == "top\n"
    ps_inside = wd(box, "exec", "bird", "ps", "-o", "pid,args").stdout
    commands = [line.split(None, 1)[1] for line in ps_inside.splitlines()[1:]]
    assert commands[0] == "top", ps_inside
    assert set(commands[1:]) <= {"ps -o pid,args"}, ps_inside
    for word in SANDBOX_PROCESSES:
        assert word not in ps_inside, ps_inside

    # only its own mounts: overlay root, /dev, /dev/pts, /dev/shm, /proc, /proc/sys (ro), /sys (ro) and
    # the /etc files wrapdock keeps for it (bind mounts of files in its own directory)
    mountinfo = wd(box, "exec", "bird", "cat", "/proc/self/mountinfo").stdout
    points = mount_points(mountinfo)
    assert points["/"][0] == "overlay"
    assert points["/"][1] == f"wrapdock-{container_id[:12]}"
    etc_files = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    assert set(points) - etc_files == {"/", "/dev", "/dev/.wrapdock", "/dev/pts", "/dev/shm", "/proc", "/proc/sys",
                                       "/sys"}, points
    for path in set(points) & etc_files:  # hosts: through its etc directory (/dev/.wrapdock, read-only)
        name = "etc/hosts" if path == "/etc/hosts" else path.rsplit('/', 1)[1]
        assert points[path][2].endswith(f"/containers/{container_id}/{name}"), points[path]
    assert points["/dev/.wrapdock"][2].endswith(f"/containers/{container_id}/etc"), points
    # the remounts name their flags: /proc/sys, the etc directory and the /etc/hosts bound from it are
    # read-only, nosuid, nodev and noexec
    flags = {fields[4]: set(fields[5].split(",")) for fields in (line.split() for line in mountinfo.splitlines())}
    for path in ("/proc/sys", "/dev/.wrapdock", "/etc/hosts"):
        assert {"ro", "nosuid", "nodev", "noexec"} <= flags[path], (path, flags[path])
    # the host's root is not reachable through any path inside
    assert wd(box, "exec", "bird", "sh", "-c", "test -e /run/wrapdock-data || test -e /.wrapdock-oldroot",
              code=1).returncode == 1

    # /proc/sys is read-only; the hostname is the container's
    refused = wd(box, "exec", "bird", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", code=None)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    assert wd(box, "exec", "bird", "hostname").stdout == "bird\n"
    assert box.sh("hostname").stdout.strip() == machine_hostname

    # exec'd commands get Docker's capability set, like the workload
    status = wd(box, "exec", "bird", "cat", "/proc/self/status").stdout
    assert cap_line(status, "CapEff") == DOCKER_DEFAULT_CAPS
    assert cap_line(status, "CapBnd") == DOCKER_DEFAULT_CAPS

    # ps: running, with the host PID of top
    table = wd(box, "ps").stdout
    (row,) = [line for line in table.splitlines() if " bird " in line]
    (view,) = ps_all(box)
    assert view["state"]["status"] == "running"
    pid = view["state"]["pid"]
    assert isinstance(pid, int) and f" {pid} " in row and "running" in row, table
    assert box.sh("cat", f"/proc/{pid}/comm").stdout == "top\n"
    assert box.sh("readlink", f"/proc/{pid}/ns/pid").stdout != box.sh("readlink", "/proc/1/ns/pid").stdout

    wd(box, "stop", "-t", "1", "bird")
    assert box.sh("test", "-e", f"/proc/{pid}", check=False).returncode != 0
    table = wd(box, "ps", "-a").stdout
    (row,) = [line for line in table.splitlines() if " bird " in line]
    assert "exited" in row, table
    assert wd(box, "ps").stdout.splitlines()[1:] == []  # no longer listed as running

    assert wd(box, "rm", "bird").stdout == "bird\n"
    assert ps_all(box) == []
    assert_clean(box)


# -- 2. ip netns exec NAME reaches the container's network namespace ---------------------------------
def test_ip_netns_exec_enters_the_containers_network(sandbox):
    box = sandbox
    wd(box, "run", "-d", "--name", "web", "busybox", "sh", "-c",
       "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www")
    pid = inspect(box, "web")["state"]["pid"]
    assert netns_list(box) == ["web"]
    assert box.sh("stat", "-L", "-c", "%i", "/run/netns/web").stdout == \
        box.sh("stat", "-L", "-c", "%i", f"/proc/{pid}/ns/net").stdout
    assert box.sh("readlink", f"/proc/{pid}/ns/net").stdout != box.sh("readlink", "/proc/1/ns/net").stdout

    def fetch():
        got = box.sh("ip", "netns", "exec", "web", "busybox", "wget", "-qO-", "http://127.0.0.1:80/", check=False)
        return got.stdout if got.returncode == 0 else None

    assert wait_for(fetch, what="httpd in the container") == "hello-from-web\n"
    # the sandbox host's own loopback has no such server: the request went into the container's netns
    direct = box.sh("busybox", "wget", "-T", "2", "-qO-", "http://127.0.0.1:80/", check=False)
    assert direct.returncode != 0

    wd(box, "rm", "-f", "web")
    assert_clean(box)


# -- 3. OOM ----------------------------------------------------------------------------------------------
DD_32M = "dd if=/dev/zero of=/dev/null bs=32M count=1"


def test_memory_limit_oom_kills_and_is_reported(sandbox):
    box = sandbox
    # the same command fits in 64m: what kills it below is the limit, not dd
    fits = wd(box, "run", "--rm", "-m", "64m", "busybox", "sh", "-c", DD_32M)
    assert "1+0 records in" in fits.stderr

    killed = wd(box, "run", "--name", "oom", "-m", "8m", "busybox", "sh", "-c", DD_32M, code=137)
    assert "records in" not in killed.stderr
    table = wd(box, "ps", "-a").stdout
    (row,) = [line for line in table.splitlines() if " oom " in line]
    assert "OOM-killed (137)" in row, table
    state = inspect(box, "oom")["state"]
    assert state["oom_killed"] is True
    assert state["status"] == "oom-killed"
    assert state["exit_code"] == 137
    assert state["pid"] is None

    wd(box, "rm", "oom")
    assert_clean(box)


def test_start_after_an_oom_kill_reports_the_new_run(sandbox):
    """Regression: the cgroup's OOM count outlived a restart (a clean second run showed "OOM-killed (0)")."""
    box = sandbox
    once = "if [ -e /ran ]; then exit 0; fi; touch /ran; exec " + DD_32M
    wd(box, "run", "--name", "oom", "-m", "8m", "busybox", "sh", "-c", once, code=137)
    assert inspect(box, "oom")["state"]["oom_killed"] is True
    wd(box, "start", "oom")
    state = wait_for(lambda: (s := inspect(box, "oom")["state"])["status"] != "running" and s,
                     what="the second run to end")
    wd(box, "rm", "oom")
    assert_clean(box)
    # the second run exited 0 by itself: Docker shows "Exited (0)" with OOMKilled false
    assert state["exit_code"] == 0
    assert state["status"] == "exited", state
    assert state["oom_killed"] is False


# -- 4. pids limit ---------------------------------------------------------------------------------------
def test_pids_limit_stops_a_fork_loop(sandbox):
    box = sandbox
    spawn = "for i in $(seq 20); do sleep {t} & done; wait; echo all-started"
    limited = wd(box, "run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c", spawn.format(t=5), code=None)
    assert limited.returncode != 0, limited
    assert "can't fork" in limited.stderr
    assert "all-started" not in limited.stdout

    free = wd(box, "run", "--rm", "busybox", "sh", "-c", spawn.format(t=1))
    assert free.stdout == "all-started\n"
    assert_clean(box)


# -- 5. volumes ------------------------------------------------------------------------------------------
def test_volumes_read_write_and_read_only(sandbox):
    box = sandbox
    box.bash("mkdir -p /run/vt/ro /run/vt/rw && echo host-ro > /run/vt/ro/f && echo host-rw > /run/vt/rw/f")
    script = ("cat /data/ro/f /data/rw/f; "
              "if echo x > /data/ro/new; then echo RO-WRITABLE; fi; "
              "echo from-container > /data/rw/new; cat /proc/self/mountinfo")
    proc = wd(box, "run", "--rm", "-v", "/run/vt/ro:/data/ro:ro", "-v", "/run/vt/rw:/data/rw", "busybox",
              "sh", "-c", script)
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["host-ro", "host-rw"]
    assert "RO-WRITABLE" not in proc.stdout
    assert "Read-only file system" in proc.stderr
    points = mount_points("\n".join(lines[2:]))
    assert points["/data/ro"][2] == "/vt/ro" and points["/data/rw"][2] == "/vt/rw", points

    assert box.sh("test", "-e", "/run/vt/ro/new", check=False).returncode != 0
    assert box.sh("cat", "/run/vt/rw/new").stdout == "from-container\n"
    # the host's files are intact after the container is gone
    assert box.sh("cat", "/run/vt/ro/f", "/run/vt/rw/f").stdout == "host-ro\nhost-rw\n"
    box.sh("rm", "-rf", "/run/vt")
    assert_clean(box)


def test_single_file_volume(sandbox):
    """Regression: the init mkdir'd the target and bind-mounted a file onto a directory."""
    box = sandbox
    box.bash("echo host-file > /run/afile")
    proc = wd(box, "run", "--rm", "-v", "/run/afile:/etc/afile:ro", "busybox", "cat", "/etc/afile", code=None)
    box.sh("rm", "-f", "/run/afile")
    assert_clean(box)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "host-file\n"


# -- 6. commit and images ----------------------------------------------------------------------------
def test_commit_makes_an_image_that_runs_and_is_protected_while_used(sandbox):
    box = sandbox
    wd(box, "run", "-d", "--name", "web", "busybox", "sleep", "1000")
    wd(box, "exec", "web", "sh", "-c", "echo snap > /snap.txt")
    assert wd(box, "commit", "web", "web-snapshot").stdout == "web-snapshot\n"
    assert not [m for m in leftover_mounts(box) if "wrapdock-commit" in m]
    assert box.sh("test", "-d", f"{CONTAINERS_DIR}/{inspect(box, 'web')['id']}/commit", check=False).returncode != 0

    listing = wd(box, "image", "ls").stdout.splitlines()
    assert listing[0].split()[:2] == ["NAME", "ID"]
    names = [line.split()[0] for line in listing[1:]]
    assert sorted(names) == ["busybox", "web-snapshot"]
    assert any(line.startswith("web-snapshot ") and "commit web" in line for line in listing)

    # a container of the new image has the file; one of the image `web` came from has not
    assert wd(box, "run", "--name", "user", "web-snapshot", "cat", "/snap.txt").stdout == "snap\n"
    assert wd(box, "run", "--rm", "busybox", "cat", "/snap.txt", code=None).returncode != 0

    error = usage_error(box, "image", "rm", "web-snapshot")
    assert "used by container(s) user" in error
    # a layer over its image's: busybox's root filesystem became a layer of its own, the container's layer another
    assert len(box.bash(f"ls {DATA_DIR}/layers").stdout.split()) == 2

    wd(box, "rm", "user")
    assert wd(box, "image", "rm", "web-snapshot").stdout == "web-snapshot\n"
    names = [line.split()[0] for line in wd(box, "image", "ls").stdout.splitlines()[1:]]
    assert names == ["busybox"]
    assert box.sh("test", "-e", f"{DATA_DIR}/images/web-snapshot", check=False).returncode != 0
    assert box.sh("test", "-e", f"{DATA_DIR}/images/web-snapshot.json", check=False).returncode != 0
    assert box.bash(f"ls -A {DATA_DIR}/layers {DATA_DIR}/l").stdout.split() == [f"{DATA_DIR}/l:", f"{DATA_DIR}/layers:"]

    wd(box, "rm", "-f", "web")
    assert_clean(box)


# -- 7. stop / start / rm ----------------------------------------------------------------------------
def test_stop_start_and_rm(sandbox):
    box = sandbox
    wd(box, "run", "-d", "--name", "svc", "busybox", "sh", "-c", "echo started; exec sleep 1000")
    first = inspect(box, "svc")["state"]
    assert first["status"] == "running"
    wd(box, "exec", "svc", "sh", "-c", "echo kept > /kept")
    wait_for(lambda: wd(box, "logs", "svc").stdout == "started\n", what="the first log line")

    wd(box, "stop", "-t", "1", "svc")
    stopped = inspect(box, "svc")["state"]
    assert stopped["status"] == "exited" and stopped["pid"] is None
    assert stopped["exit_code"] == 137  # sleep as PID 1 ignores TERM: killed after -t 1
    assert box.sh("test", "-e", f"/proc/{first['pid']}", check=False).returncode != 0
    usage_error(box, "exec", "svc", "true")  # not running
    old_log = wd(box, "logs", "svc").stdout
    assert old_log.startswith("started\n")

    wd(box, "start", "svc")
    second = inspect(box, "svc")["state"]
    assert second["status"] == "running"
    assert second["pid"] != first["pid"]
    assert box.sh("cat", f"/proc/{second['pid']}/comm").stdout == "sleep\n"
    # the new run's output is appended to the old log
    wait_for(lambda: wd(box, "logs", "svc").stdout == old_log + "started\n", what="the log appended")
    # the container's own layer survived the restart
    assert wd(box, "exec", "svc", "cat", "/kept").stdout == "kept\n"

    error = usage_error(box, "rm", "svc")
    assert "is running" in error
    assert inspect(box, "svc")["state"]["status"] == "running"
    assert wd(box, "rm", "-f", "svc").stdout == "svc\n"
    assert box.sh("test", "-e", f"/proc/{second['pid']}", check=False).returncode != 0
    assert_clean(box)


# -- 8. foreground exit codes and --rm ------------------------------------------------------------------
def test_foreground_exit_codes_and_rm(sandbox):
    box = sandbox
    assert wd(box, "run", "--rm", "busybox", "sh", "-c", "exit 7", code=7).returncode == 7
    assert ps_all(box) == []
    assert container_dirs(box) == []
    assert netns_list(box) == []

    wd(box, "run", "--name", "ok", "busybox", "true")
    (view,) = ps_all(box)
    assert view["name"] == "ok" and view["state"]["text"] == "exited (0)"
    assert wd(box, "run", "--name", "bad", "busybox", "false", code=1).returncode == 1
    assert inspect(box, "bad")["state"]["exit_code"] == 1
    wd(box, "rm", "ok", "bad")
    assert_clean(box)


def test_a_container_started_from_a_background_job_can_be_interrupted(sandbox):
    """A shell starts its background jobs with SIGINT and SIGQUIT ignored, inherited through exec: the
    container's processes get the default dispositions back (as Docker's do), or ^C could never reach them."""
    box = sandbox
    ignoring = ("sh", "-c", "trap '' INT QUIT; exec \"$@\"", "sh")
    status = ("grep", "SigIgn", "/proc/self/status")

    def ignored(text: str) -> int:
        return int(text.split()[1], 16) & 0b110  # bit 1: SIGINT, bit 2: SIGQUIT

    assert ignored(box.sh(*ignoring, *status).stdout) == 0b110  # the job's own processes ignore them
    assert ignored(box.sh(*ignoring, *wrapdock_argv(), "--quiet", "run", "--rm", "busybox", *status).stdout) == 0
    assert_clean(box)


def test_detached_auto_remove_disappears_by_itself(sandbox):
    """Regression: the watcher's `rm -f` raced with `run`, which then wrote the record back (a record
    with no directory, netns or cgroups, "created" forever)."""
    box = sandbox
    gone_id = wd(box, "run", "-d", "--rm", "--name", "gone", "busybox", "true").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", gone_id)
    orphaned_since: list[float] = []

    def settled() -> str | None:
        """'removed'; or 'orphaned' once the record has outlived the container's directory for 10 s."""
        if ps_all(box) == []:
            return "removed"
        if container_dirs(box):
            orphaned_since.clear()
        elif not orphaned_since:
            orphaned_since.append(time.monotonic())
        elif time.monotonic() - orphaned_since[0] > 10:
            return "orphaned"
        return None

    outcome = wait_for(settled, seconds=60, what="the -d --rm container to remove itself")
    leftover = ps_all(box)
    if leftover:  # clean up what the race left, then report it
        wd(box, "rm", "-f", "gone")
    assert_clean(box)
    assert outcome == "removed", leftover


# -- 9. --print-only: nothing changes here, the script builds a working container elsewhere -----------
def shellcheck_codes(script: Path) -> list[tuple[int, str]]:
    done = subprocess.run(["shellcheck", "-s", "bash", "-f", "json", str(script)], capture_output=True, text=True,
                          timeout=60)
    return sorted({(item["code"], item["level"]) for item in json.loads(done.stdout or "[]")})


def print_only_run(box, name: str) -> str:
    proc = box.wrapdock("--print-only", "run", "-d", "--name", name, "busybox", "sleep", "1000", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # no trail, no note: nothing ran
    return proc.stdout


def host_state(box) -> dict:
    root = Path("/sys/fs/cgroup")
    cgroups = sorted(str(p) for p in [root / box.cgroup_parent, *root.glob(f"*/{box.cgroup_parent}")] if p.exists())
    return {"snapshot": box.snapshot(), "run": box.bash("find /run | sort").stdout, "cgroups": cgroups,
            "mounts": box.sh("cat", "/proc/self/mountinfo").stdout}


def kill_script_container(box, cgroup_owner, name: str) -> None:
    """Undo what a --print-only script made in `box` (wrapdock never knew it): process, netns, dirs, cgroups."""
    box.bash(f"for f in {CONTAINERS_DIR}/*/pid; do [ -e \"$f\" ] && kill -s KILL \"$(cat \"$f\")\"; done; true")
    wait_for(lambda: not processes(box), what="the script's container to die")
    box.sh("ip", "netns", "del", name)
    box.sh("rm", "-rf", "--one-file-system", DATA_DIR)
    remove_cgroup_dirs(cgroup_owner.cgroup_dirs())


def test_print_only_changes_nothing_and_its_script_builds_the_container(sandbox, sandbox_factory, tmp_path):
    a = sandbox
    before = host_state(a)
    script = print_only_run(a, "p1")
    assert host_state(a) == before
    assert not a.cgroup_dirs()
    assert a.state_records("containers") == []

    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail\n" in script
    # the image does not exist here yet, so the script makes it first
    assert script.index("### make the default image busybox") < script.index("### create container p1")
    assert "\nip netns add p1\n" in script
    assert f"/sys/fs/cgroup/memory/{a.cgroup_parent}/" in script
    path = tmp_path / "p1.sh"
    path.write_text(script)
    if shutil.which("shellcheck"):
        # only SC2016 (info: '$1' in single quotes does not expand) for the deliberate `sh -c '...$1...'`
        assert shellcheck_codes(path) in ([], [(2016, "info")])
        done = subprocess.run(["shellcheck", "-s", "bash", "-e", "SC2016", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout

    # B: wrapdock never runs there; the script alone makes the image and a working container
    b = sandbox_factory()
    b_init_pidns = b.sh("readlink", "/proc/1/ns/pid").stdout
    run = b.bash(f"bash {path} >{tmp_path}/p1.out 2>&1", check=False)
    assert run.returncode == 0, (tmp_path / "p1.out").read_text()
    found = b.bash(
        'for d in /proc/[0-9]*; do [ "$(tr "\\0" " " < "$d/cmdline" 2>/dev/null)" = "sleep 1000 " ] '
        '&& echo "${d#/proc/}"; done; true').stdout.split()
    assert len(found) == 1, b.bash("ps -ef || true").stdout
    pid = found[0]
    assert b.sh("readlink", f"/proc/{pid}/ns/pid").stdout != b_init_pidns
    nspid = re.search(r"^NSpid:\s*(.*)$", b.sh("cat", f"/proc/{pid}/status").stdout, re.M).group(1).split()
    assert nspid[-1] == "1", nspid  # PID 1 of its own PID namespace
    assert netns_list(b) == ["p1"]
    assert b.sh("stat", "-L", "-c", "%i", "/run/netns/p1").stdout == b.sh("stat", "-L", "-c", "%i",
                                                                           f"/proc/{pid}/ns/net").stdout
    lo = b.sh("ip", "netns", "exec", "p1", "ip", "addr", "show", "lo").stdout
    assert re.search(r"lo: <[^>]*\bUP\b", lo), lo
    # it is in the cgroups the script named (under A's parent: the script carries A's paths)
    assert f"/{a.cgroup_parent}/" in b.sh("cat", f"/proc/{pid}/cgroup").stdout
    assert b.state_records("containers") == []

    kill_script_container(b, a, "p1")
    assert_clean(b, extra_cgroup_boxes=(a,))

    # once the image exists on the printing host, the script no longer makes it
    wd(a, "run", "--rm", "busybox", "true")
    assert "### make the default image" not in print_only_run(a, "p2")
    assert_clean(a)


def test_print_only_script_does_not_hold_the_callers_output(sandbox, tmp_path):
    """Regression: the detached shim kept its starter's stdout/stderr, so `bash p1.sh | cat` never ended
    while the container ran (and each live `run -d` waited ~2 s for the sh library's pipes)."""
    box = sandbox
    path = tmp_path / "p1.sh"
    path.write_text(print_only_run(box, "p1"))
    out = tmp_path / "p1.out"
    box.bash(f"bash {path} >{out} 2>&1")
    holders = box.bash(f"find /proc/[0-9]*/fd -lname {out} 2>/dev/null; true").stdout.split()
    kill_script_container(box, box, "p1")
    assert_clean(box)
    assert holders == []


# -- 10. bad input -----------------------------------------------------------------------------------
def test_bad_input_is_refused_with_one_line_and_changes_nothing(sandbox):
    box = sandbox
    assert "executable file not found" in usage_error(box, "--quiet", "run", "nosuchimage-x")
    wd(box, "run", "--name", "dup", "busybox", "true")  # also makes the default image
    before = (container_dirs(box), box.state_records("containers"), netns_list(box), box.cgroup_dirs())

    for command in ("logs", "stop", "rm", "inspect"):
        assert "no such container: ghost" in usage_error(box, command, "ghost")
    assert "no such container: ghost" in usage_error(box, "exec", "ghost", "true")
    assert "already in use" in usage_error(box, "run", "--name", "dup", "busybox", "true")
    assert "is not running" in usage_error(box, "exec", "dup", "true")

    refused = {
        ("-e", "1X=2"): "invalid environment variable",
        ("-v", "/no/such/dir-x:/data"): "does not exist",
        ("-v", "relative:/data"): "must be absolute",
        ("-m", "10x"): "invalid memory size",
        ("-m", "1k"): "the minimum is 6m",
        ("--cpus", "abc"): "invalid --cpus",
        ("--cpus", "0"): "invalid --cpus",
        ("--cpuset-cpus", "99"): "invalid --cpuset-cpus",
        ("--pids-limit", "0"): "invalid --pids-limit",
        ("--cap-add", "NOT_A_CAP"): "unknown capability",
        ("-d", "-i"): "-d -i needs -t",
        ("-it",): "the input device is not a TTY",  # these tests' stdin is no terminal
    }
    for options, message in refused.items():
        assert message in usage_error(box, "run", *options, "busybox", "true"), options

    assert (container_dirs(box), box.state_records("containers"), netns_list(box), box.cgroup_dirs()) == before
    wd(box, "rm", "dup")
    assert_clean(box)


# -- 11. capabilities ----------------------------------------------------------------------------------
def test_capabilities_default_net_admin_and_privileged(sandbox):
    box = sandbox
    link = " ".join(link_kind_args(box))
    probe = (f"ip link add {link}; echo link=$?; mkdir -p /mnt; mount -t tmpfs t /mnt; echo mount=$?; "
             "grep -E '^Cap(Eff|Bnd):' /proc/self/status")

    default = wd(box, "run", "--rm", "busybox", "sh", "-c", probe)
    assert "link=0" not in default.stdout and "mount=0" not in default.stdout, default
    assert "Operation not permitted" in default.stderr
    assert cap_line(default.stdout, "CapEff") == DOCKER_DEFAULT_CAPS

    net_admin = wd(box, "run", "--rm", "--cap-add", "NET_ADMIN", "busybox", "sh", "-c",
                   probe + "; ip -o link show d0")
    assert "link=0" in net_admin.stdout, net_admin
    assert re.search(r"^\d+: d0[:@]", net_admin.stdout, re.M), net_admin.stdout
    assert "mount=0" not in net_admin.stdout  # only NET_ADMIN was added
    assert int(cap_line(net_admin.stdout, "CapEff"), 16) == int(DOCKER_DEFAULT_CAPS, 16) | (1 << 12)

    privileged = wd(box, "run", "--rm", "--privileged", "busybox", "sh", "-c", probe + "; grep ' /mnt ' /proc/mounts")
    assert "mount=0" in privileged.stdout and "link=0" in privileged.stdout, privileged
    assert re.search(r"^t /mnt tmpfs ", privileged.stdout, re.M), privileged.stdout
    assert "d0" not in box.sh("ip", "-o", "link").stdout  # the links were made in the containers' netns
    assert_clean(box)


CAP_BITS = {"DAC_OVERRIDE": 1, "NET_ADMIN": 12, "MKNOD": 27}


@pytest.mark.parametrize(("drop", "add"), [("MKNOD", None), ("DAC_OVERRIDE", None), ("ALL", None),
                                           ("ALL", "NET_ADMIN")])
def test_cap_drop_still_starts(sandbox, drop, add):
    """Regression: the init had only CAP_SYS_ADMIN beyond the container's set, but also needs CAP_MKNOD
    (/dev nodes) and CAP_DAC_OVERRIDE (overlayfs's mode-000 work dir): these drops stopped every start.
    And Docker's rule: --cap-drop ALL --cap-add X gives exactly X."""
    box = sandbox
    options = ["--cap-drop", drop, *(["--cap-add", add] if add else [])]
    proc = wd(box, "run", "--rm", *options, "busybox", "sh", "-c", "grep -E '^Cap(Eff|Bnd):' /proc/self/status",
              code=None)
    assert_clean(box)
    assert proc.returncode == 0, proc.stderr
    base = 0 if drop == "ALL" else int(DOCKER_DEFAULT_CAPS, 16) & ~(1 << CAP_BITS[drop])
    expected = base | (1 << CAP_BITS[add]) if add else base
    assert int(cap_line(proc.stdout, "CapEff"), 16) == expected
    assert int(cap_line(proc.stdout, "CapBnd"), 16) == expected


# -- 12. -t: a terminal of its own -------------------------------------------------------------------------
def shell_on_its_terminal(box, term: Terminal, container: str) -> None:
    """The user's checks at a busybox sh prompt on `term` (31 rows, 97 columns when it starts):
    `tty` names a pty of the container's own /dev/pts, its size follows the outer terminal, and a
    typed ^C interrupts the foreground `sleep`, not the shell."""
    term.expect(r"# ")
    since = term.mark()
    term.type('tty; test -c "$(tty)" && echo "it-is-there"; stty size\r')
    match = term.expect(r"\n(/dev/pts/\d+)\r\nit-is-there\r\n(\d+ \d+)\r\n", since=since)
    assert match.group(2) == "31 97", term.screen
    # ... and it is in the container's /dev/pts: the container sees the same device there
    pts = match.group(1)
    assert wd(box, "exec", container, "test", "-c", pts).returncode == 0

    term.resize(40, 120)  # SIGWINCH: script passes the new size on
    since = term.mark()
    term.type("stty size\r")
    assert term.expect(r"\n(\d+ \d+)\r\n", since=since).group(1) == "40 120"

    def sleeping():
        return "sleep 1000" in wd(box, "exec", container, "ps", "-o", "args").stdout

    term.type("sleep 1000\r")
    wait_for(sleeping, seconds=30, what="the sleep in the container")
    term.type("\x03")  # ^C: the pty's line discipline sends SIGINT to its foreground process group
    wait_for(lambda: not sleeping(), seconds=30, what="^C to end the sleep")
    since = term.mark()
    term.type("echo status=$?\r")
    assert term.expect(r"status=(\d+)", since=since).group(1) == "130"  # 128 + SIGINT


def test_run_it_gives_the_container_a_terminal_of_its_own(sandbox):
    box = sandbox
    term = Terminal(box, "run", "-it", "--name", "tty1", "busybox", "sh", rows=31, cols=97)
    try:
        shell_on_its_terminal(box, term, "tty1")
        # PID 1 is the shell itself, leading its session on /dev/pts/0
        assert wd(box, "exec", "tty1", "readlink", "/proc/1/fd/0").stdout == "/dev/pts/0\n"
        term.type("exit 7\r")
        assert term.wait() == 7, term.screen  # the workload's exit code is wrapdock's
    finally:
        term.close()
    assert inspect(box, "tty1")["state"]["exit_code"] == 7
    wd(box, "rm", "tty1")
    assert_clean(box)


def test_ctrl_c_reaches_only_the_containers_foreground_process_group(sandbox):
    """No job control here (sh -c): ^C goes to the pty's foreground process group, which must hold
    the container's processes only (the workload leads its own session), not the processes that
    started it (they would die of it and leave the container behind): sleep dies, the shell (PID 1)
    runs its trap and goes on to its own exit code."""
    box = sandbox
    term = Terminal(box, "run", "-it", "--rm", "--name", "tty3", "busybox", "sh", "-c",
                    "trap 'echo caught-int' INT; sleep 1000; echo after-sleep; exit 4")
    try:
        # the sleep's own process (the shell's arguments hold "sleep 1000" too, and a ^C before its trap is
        # set reaches a PID 1 without a handler: ignored)
        wait_for(lambda: "sleep 1000" in (line.strip() for line in wd(
                     box, "exec", "tty3", "ps", "-o", "args", code=None).stdout.splitlines()),
                 seconds=30, what="the sleep in the container")
        term.type("\x03")
        term.expect(r"caught-int\r\nafter-sleep")
        assert term.wait() == 4, term.screen
    finally:
        term.close()
    assert_clean(box)


def test_run_dt_and_exec_it(sandbox):
    box = sandbox
    # -dt: a terminal with no input, but never an end of file: the shell stays, and logs has its prompt
    wd(box, "run", "-dt", "--name", "tty2", "busybox", "sh")
    wait_for(lambda: "/ # " in wd(box, "logs", "tty2").stdout, seconds=30, what="the prompt in the log")
    assert wd(box, "exec", "tty2", "readlink", "/proc/1/fd/0").stdout == "/dev/pts/0\n"
    assert wd(box, "exec", "tty2", "tty", code=1).stdout == "not a tty\n"  # exec without -t: no terminal

    term = Terminal(box, "exec", "-it", "tty2", "sh", rows=31, cols=97)
    try:
        shell_on_its_terminal(box, term, "tty2")
        term.type("exit 5\r")
        assert term.wait() == 5, term.screen
    finally:
        term.close()
    assert ps_all(box)[0]["state"]["text"] == "running"

    # -t without -i, in the foreground: a terminal, no input; the container's SHELL is not script's
    shown = wd(box, "run", "-t", "--rm", "-e", "SHELL=/no/such/shell", "busybox", "sh", "-c",
               'tty; echo "$SHELL"; exit 3', code=3).stdout
    assert re.fullmatch(r"/dev/pts/0\n/no/such/shell\n", shown), shown
    shown = wd(box, "exec", "-t", "tty2", "sh", "-c", "tty; exit 6", code=6).stdout
    assert re.fullmatch(r"/dev/pts/[1-9]\d*\n", shown), shown
    # start runs a -t container on a terminal again
    wd(box, "stop", "-t", "1", "tty2")
    wd(box, "start", "tty2")
    assert wd(box, "exec", "tty2", "readlink", "/proc/1/fd/0").stdout == "/dev/pts/0\n"
    wd(box, "rm", "-f", "tty2")
    assert_clean(box)
