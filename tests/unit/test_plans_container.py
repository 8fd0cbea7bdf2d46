"""Container plans, cgroup plans, run-option parsing and process status: pure, no root needed.

The container plans are compared with golden files (one step per line, as wrapdock.shell.step_text
renders them for the trail and the --print-only script). Regenerate them after an intended change with:
    WRAPDOCK_UPDATE_GOLDEN=1 /tmp/venv/bin/python -m pytest tests/unit/test_plans_container.py
then review the diff of tests/golden/container-*.txt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wrapdock import cgroups
from wrapdock.cgroups import CgroupLayout
from wrapdock.containerspec import (
    ALL_CAPS,
    DEFAULT_CAPS,
    DEFAULT_PATH,
    MIN_MEMORY,
    ContainerConfig,
    Volume,
    check_hostname,
    check_name,
    check_workdir,
    parse_caps,
    parse_cpus,
    parse_cpuset,
    parse_env,
    parse_size,
    parse_volume,
    random_name,
)
from wrapdock.errors import UsageError
from wrapdock.plan import Step
from wrapdock.plans import cgroups as cgroup_plans
from wrapdock.plans import container as plans
from wrapdock.plans.cgroups import Limits
from wrapdock.plans.container import ContainerPaths, Runtime
from wrapdock.procstatus import live_pid, start_time, status
from wrapdock.shell import step_text

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
UPDATE = os.environ.get("WRAPDOCK_UPDATE_GOLDEN") == "1"

ID = "0123456789abcdef" * 4
DATA = Path("/var/lib/wrapdock")
PATHS = ContainerPaths(DATA / "containers" / ID)
IMAGE_ROOTFS = DATA / "images" / "busybox" / "rootfs"
CGROUP_ROOT = Path("/sys/fs/cgroup")
MiB = 1024 * 1024

LAYOUTS = {
    "v1": CgroupLayout(1, CGROUP_ROOT, "wrapdock", ("memory", "cpu", "cpuset", "pids")),
    "v1swap": CgroupLayout(1, CGROUP_ROOT, "wrapdock", ("memory", "cpu", "cpuset", "pids"), swap_accounting=True),
    "v2": CgroupLayout(2, CGROUP_ROOT, "wrapdock", ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")),
}

CONFIGS = {
    "plain": ContainerConfig(id=ID, name="web", image="busybox", command=("top",), env=("bird=123",),
                             hostname="web"),
    "limits": ContainerConfig(
        id=ID, name="db.1", image="busybox", command=("sh", "-c", 'echo "$HOME" it\'s; sleep 1'),
        env=("A=b c", "QUOTE='x'"), hostname="db-1", workdir="/srv/app dir",
        volumes=(Volume("/srv/data", "/data"), Volume("/etc/ssl certs", "/etc/ssl/certs", readonly=True)),
        limits=Limits(memory=64 * MiB, cpus=0.5, cpu_shares=512, cpuset_cpus="0-1", pids=100)),
    "privileged": ContainerConfig(id=ID, name="root", image="busybox", command=("sh",), env=(), hostname="root",
                                  privileged=True, limits=Limits(pids=-1)),
    "sysadmin": ContainerConfig(id=ID, name="adm", image="busybox", command=("sh",), env=(), hostname="adm",
                                caps=(*DEFAULT_CAPS, "sys_admin")),
    # --cap-drop ALL: the init still gets what it needs (SYS_ADMIN, MKNOD, DAC_OVERRIDE) and drops it
    "dropall": ContainerConfig(id=ID, name="bare", image="busybox", command=("sh",), env=(), hostname="bare",
                               caps=(), volumes=(Volume("/etc/extra hosts", "/etc/hosts.extra", True, file=True),)),
}

ETC = {"hosts": ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"],
       "resolv.conf": ["nameserver 192.0.2.53"], "hostname": ["web"]}
EXEC_ENV = ["PATH=" + DEFAULT_PATH, "HOSTNAME=web", "HOME=/root", "bird=123"]


def runtime(layout: str, netns: str | None = "web") -> Runtime:
    return Runtime("/bin/busybox", LAYOUTS[layout], IMAGE_ROOTFS, netns)


def remove_steps(config: str, layout: str, running: bool, netns: str | None = "web") -> list[Step]:
    return plans.remove(CONFIGS[config], PATHS, runtime(layout, netns), running, []).steps


CASES = {
    "prepare-plain-v1": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v1"), ETC, []).steps,
    "prepare-plain-v2": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v2"), ETC, []).steps,
    "prepare-limits-v1": lambda: plans.prepare(CONFIGS["limits"], PATHS, runtime("v1", "db.1"), ETC, []).steps,
    "prepare-limits-v1swap": lambda: plans.prepare(CONFIGS["limits"], PATHS, runtime("v1swap", "db.1"), ETC,
                                                   []).steps,
    "prepare-limits-v2": lambda: plans.prepare(CONFIGS["limits"], PATHS, runtime("v2", "db.1"), ETC, []).steps,
    "prepare-privileged-v2": lambda: plans.prepare(CONFIGS["privileged"], PATHS, runtime("v2", "root"), {},
                                                   []).steps,
    "prepare-sysadmin-v1": lambda: plans.prepare(CONFIGS["sysadmin"], PATHS, runtime("v1", "adm"), ETC, []).steps,
    "prepare-dropall-v2": lambda: plans.prepare(CONFIGS["dropall"], PATHS, runtime("v2", "bare"), ETC, []).steps,
    "prepare-hostnet-v2": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v2", None), ETC, []).steps,
    "start-detached-plain-v1": lambda: plans.start_detached(CONFIGS["plain"], PATHS, runtime("v1")),
    "start-detached-tty-limits-v2": lambda: plans.start_detached(CONFIGS["limits"], PATHS, runtime("v2", "db.1"),
                                                                 tty=True),
    "start-attached-plain-v1": lambda: plans.start_attached(CONFIGS["plain"], PATHS, runtime("v1"), tty=False),
    "start-attached-hostnet-v2": lambda: plans.start_attached(CONFIGS["plain"], PATHS, runtime("v2", None),
                                                              tty=True),
    "remove-when-done": lambda: [plans.remove_when_done(
        CONFIGS["plain"], PATHS, ["/usr/bin/python3", "-m", "wrapdock", "--quiet", "--data-dir", str(DATA)])],
    "stop": lambda: plans.stop("web", 4242, PATHS, 3).steps,
    "remove-running-v1": lambda: remove_steps("plain", "v1", running=True),
    "remove-stopped-v2": lambda: remove_steps("plain", "v2", running=False),
    "remove-hostnet-v1": lambda: remove_steps("plain", "v1", running=False, netns=None),
    "exec-plain-v1": lambda: [plans.exec_step(CONFIGS["plain"], 4242, EXEC_ENV, ["sh", "-c", "echo hi"],
                                              LAYOUTS["v1"])],
    "exec-privileged-v2": lambda: [plans.exec_step(CONFIGS["privileged"], 4242, EXEC_ENV, ["id"], LAYOUTS["v2"])],
    "exec-sysadmin-v1": lambda: [plans.exec_step(CONFIGS["sysadmin"], 4242, EXEC_ENV, ["id"], LAYOUTS["v1"])],
    "exec-dropall-v2": lambda: [plans.exec_step(CONFIGS["dropall"], 4242, EXEC_ENV, ["id"], LAYOUTS["v2"])],
}


def steps_text(steps: list[Step]) -> str:
    return "".join(step_text(step) + "\n" for step in steps)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN_DIR / name
    if UPDATE:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with WRAPDOCK_UPDATE_GOLDEN=1 and review it")
    assert actual == path.read_text(), (
        f"plan differs from {path}; if the change is intended, rerun with WRAPDOCK_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_matches_golden(case: str) -> None:
    check_golden(f"container-{case}.txt", steps_text(CASES[case]()))


def test_goldens_have_no_strays() -> None:
    expected = {f"container-{case}.txt" for case in CASES}
    assert {p.name for p in GOLDEN_DIR.glob("container-*.txt")} == expected


# -- the plans' structure ------------------------------------------------------------------------------
def argvs(steps: list[Step]) -> list[tuple[str, ...]]:
    return [s.argv for s in steps]


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_undoable_step_of_prepare_is_undone_by_remove(config: str, layout: str) -> None:
    """What prepare makes and can undo (dir, netns, cgroups), remove takes away, guarded by a probe."""
    prepared = plans.prepare(CONFIGS[config], PATHS, runtime(layout), ETC, []).steps
    removed = remove_steps(config, layout, running=False)
    undos = {s.undo.argv for s in prepared if s.undo is not None}
    assert undos <= set(argvs(removed)) | {("rm", "-rf", "--one-file-system", str(PATHS.dir))}
    assert ("rm", "-rf", "--one-file-system", str(PATHS.dir)) in argvs(removed)
    assert all(s.only_if for s in removed)
    # the netns goes after the process is gone, the directory last
    assert argvs(removed)[-1][0] == "rm"


def test_remove_of_a_running_container_kills_it_first() -> None:
    steps = remove_steps("plain", "v1", running=True)
    assert steps[0].argv[:2] == ("sh", "-c") and "kill -s KILL" in steps[0].argv[2]
    assert steps[0].argv[-1] == str(PATHS.pidfile)
    assert "kill" not in " ".join(remove_steps("plain", "v1", running=False)[0].argv)


def test_start_chain_enters_the_netns_drops_caps_and_runs_the_init() -> None:
    chain = plans.start_chain(CONFIGS["plain"], PATHS, runtime("v1"), tty=False)
    assert chain[:2] == ["env", "-i"]
    assert chain.index("nsenter") < chain.index("setpriv") < chain.index("unshare")
    assert "--net=/run/netns/web" in chain
    assert chain[-3:] == ["sh", str(PATHS.init), "top"]
    bounding = next(w for w in chain if w.startswith("--bounding-set="))
    assert bounding == "--bounding-set=-all," + ",".join(f"+{c}" for c in DEFAULT_CAPS)
    assert "--inh-caps=+sys_admin" in chain
    host = plans.start_chain(CONFIGS["plain"], PATHS, runtime("v1", None), tty=False)
    assert "nsenter" not in host
    privileged = plans.start_chain(CONFIGS["privileged"], PATHS, runtime("v1"), tty=False)
    assert "setpriv" not in privileged


def test_environment_defaults_then_user_values() -> None:
    config = CONFIGS["plain"]
    assert plans.environment(config, tty=False) == [f"PATH={DEFAULT_PATH}", "HOSTNAME=web", "HOME=/root", "bird=123"]
    assert "TERM=xterm" in plans.environment(config, tty=True)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_init_script_is_valid_shell_with_everything_filled(config: str, layout: str, tmp_path: Path) -> None:
    lines = plans.init_script(CONFIGS[config], PATHS, runtime(layout), tuple(ETC))
    text = "\n".join(lines) + "\n"
    assert "{{" not in text and "}}" not in text
    script = tmp_path / "init.sh"
    script.write_text(text)
    shell = shutil.which("busybox")
    argv = [shell, "sh", "-n", str(script)] if shell else ["sh", "-n", str(script)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # it joins every cgroup of the container before anything else can fork
    joins = [line for line in lines if line.endswith("/cgroup.procs")]
    assert joins == cgroup_plans.join_commands(LAYOUTS[layout], ID)
    assert lines.index(joins[0]) < next(i for i, line in enumerate(lines) if line.startswith("mount -t overlay"))
    assert lines[-1] == {"privileged": 'exec "$@"', "sysadmin": 'exec "$@"',
                         "dropall": 'exec setpriv --inh-caps -sys_admin,-mknod,-dac_override -- "$@"'}.get(
        config, 'exec setpriv --inh-caps -sys_admin -- "$@"')


def test_the_init_gets_the_helper_caps_the_container_lacks_and_drops_them() -> None:
    chain = plans.start_chain(CONFIGS["dropall"], PATHS, runtime("v1"), tty=False)
    assert "--inh-caps=+sys_admin,+mknod,+dac_override" in chain
    assert "--bounding-set=-all" in chain  # the container itself keeps nothing
    exec_argv = plans.exec_step(CONFIGS["dropall"], 4242, EXEC_ENV, ["id"], LAYOUTS["v1"]).argv
    assert exec_argv[-5:] == ("setpriv", "--inh-caps", "-sys_admin,-mknod,-dac_override", "--", "id")
    # with the default set only SYS_ADMIN is missing; with SYS_ADMIN added nothing is
    assert "--inh-caps=+sys_admin" in plans.start_chain(CONFIGS["plain"], PATHS, runtime("v1"), tty=False)
    assert not [w for w in plans.start_chain(CONFIGS["sysadmin"], PATHS, runtime("v1"), tty=False)
                if w.startswith("--inh-caps")]


def test_init_script_binds_a_file_volume_onto_a_file() -> None:
    lines = plans.init_script(CONFIGS["dropall"], PATHS, runtime("v1"), ())
    bind = lines.index("mount --bind '/etc/extra hosts' ./etc/hosts.extra")
    assert lines[bind - 2:bind] == ["mkdir -p etc", "[ -e ./etc/hosts.extra ] || touch ./etc/hosts.extra"]
    assert lines[bind + 1] == "mount -o remount,bind,ro ./etc/hosts.extra"
    assert "mkdir -p ./etc/hosts.extra" not in lines


def test_init_script_mounts_volumes_read_only_where_asked() -> None:
    lines = plans.init_script(CONFIGS["limits"], PATHS, runtime("v1"), ())
    assert "mount --bind /srv/data ./data" in lines
    assert "mount -o remount,bind,ro ./data" not in lines
    rw = lines.index("mount --bind '/etc/ssl certs' ./etc/ssl/certs")
    assert lines[rw - 1] == "mkdir -p ./etc/ssl/certs"
    assert lines[rw + 1] == "mount -o remount,bind,ro ./etc/ssl/certs"
    assert "cd '/srv/app dir'" in lines


# -- cgroup plans, carried out for real against a cgroup tree in tmp_path ---------------------------
def fake_cgroup_root(tmp_path: Path, version: int) -> Path:
    root = tmp_path / "cgroup"
    if version == 1:
        for controller in ("memory", "cpu", "cpuset", "pids"):
            (root / controller).mkdir(parents=True)
        (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
        (root / "cpuset" / "cpuset.mems").write_text("0\n")
    else:
        root.mkdir()
        (root / "cgroup.subtree_control").write_text("")
    return root


def carry_out(steps: list[Step]) -> None:
    for step in steps:
        assert not step.stdin and not step.skip_if and not step.only_if, step
        done = subprocess.run(step.argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (step.argv, done.stderr)


def read(path: Path) -> str:
    return path.read_text().strip()


LIMITS = Limits(memory=64 * MiB, cpus=1.5, cpu_shares=1024, cpuset_cpus="1-2", pids=20)


@pytest.mark.parametrize("swap", [False, True])
def test_cgroup_v1_limits_are_written(tmp_path: Path, swap: bool) -> None:
    root = fake_cgroup_root(tmp_path, 1)
    layout = CgroupLayout(1, root, "wd", ("memory", "cpu", "cpuset", "pids"), swap_accounting=swap)
    carry_out(cgroup_plans.create(layout, ID, LIMITS))
    memory, cpu, cpuset, pids = (root / c / "wd" / ID for c in ("memory", "cpu", "cpuset", "pids"))
    assert read(memory / "memory.limit_in_bytes") == str(64 * MiB)
    if swap:
        assert read(memory / "memory.memsw.limit_in_bytes") == str(64 * MiB)
        assert not (memory / "memory.swappiness").exists()
    else:
        assert read(memory / "memory.swappiness") == "0"
        assert not (memory / "memory.memsw.limit_in_bytes").exists()
    assert read(cpu / "cpu.cfs_period_us") == "100000"
    assert read(cpu / "cpu.cfs_quota_us") == "150000"
    assert read(cpu / "cpu.shares") == "1024"
    assert read(pids / "pids.max") == "20"
    # a v1 cpuset takes no process until cpus and mems are set, in the parent too; then the limit
    assert read(root / "cpuset" / "wd" / "cpuset.cpus") == "0-3"
    assert read(root / "cpuset" / "wd" / "cpuset.mems") == "0"
    assert read(cpuset / "cpuset.mems") == "0"
    assert read(cpuset / "cpuset.cpus") == "1-2"


def test_cgroup_v1_without_limits_writes_nothing_and_unlimited_pids_is_max(tmp_path: Path) -> None:
    root = fake_cgroup_root(tmp_path, 1)
    layout = CgroupLayout(1, root, "wd", ("memory", "pids"))
    steps = cgroup_plans.create(layout, ID, Limits())
    assert all(s.argv[0] == "mkdir" for s in steps)
    carry_out(steps)
    assert sorted(p.name for p in (root / "memory" / "wd" / ID).iterdir()) == []
    carry_out(cgroup_plans.create(layout, "x" * 64, Limits(pids=-1)))
    assert read(root / "pids" / "wd" / ("x" * 64) / "pids.max") == "max"
    # a controller that is not mounted gets no directory and no limit
    assert not (root / "cpu" / "wd").exists()


def test_cgroup_v2_limits_and_controllers(tmp_path: Path) -> None:
    root = fake_cgroup_root(tmp_path, 2)
    layout = CgroupLayout(2, root, "wd", ("cpuset", "cpu", "io", "memory", "pids"))
    steps = cgroup_plans.create(layout, ID, LIMITS)
    carry_out(steps)
    d = root / "wd" / ID
    assert read(root / "cgroup.subtree_control") == "+memory +pids +cpu +cpuset"
    assert read(root / "wd" / "cgroup.subtree_control") == "+memory +pids +cpu +cpuset"
    assert read(d / "memory.max") == str(64 * MiB)
    assert read(d / "memory.swap.max") == "0"
    assert read(d / "cpu.max") == "150000 100000"
    assert read(d / "cpu.weight") == "39"  # Docker: 1 + (1024 - 2) * 9999 // 262142
    assert read(d / "cpuset.cpus") == "1-2"
    assert read(d / "pids.max") == "20"
    # the controllers are enabled in the parents before the container's directory is made
    subtree = max(i for i, s in enumerate(steps) if "cgroup.subtree_control" in " ".join(s.argv))
    assert subtree < argvs(steps).index(("mkdir", "-p", str(d)))


def test_cgroup_v2_enables_only_the_controllers_it_has(tmp_path: Path) -> None:
    root = fake_cgroup_root(tmp_path, 2)
    layout = CgroupLayout(2, root, "wd", ("memory", "io", "pids"))
    carry_out(cgroup_plans.create(layout, ID, Limits(memory=8 * MiB)))
    assert read(root / "wd" / "cgroup.subtree_control") == "+memory +pids"
    assert read(root / "wd" / ID / "memory.max") == str(8 * MiB)


@pytest.mark.parametrize(("shares", "weight"), [(2, "1"), (1024, "39"), (262144, "10000")])
def test_cgroup_v2_cpu_shares_to_weight(shares: int, weight: str) -> None:
    layout = LAYOUTS["v2"]
    writes = [s.argv[2] for s in cgroup_plans.create(layout, ID, Limits(cpu_shares=shares)) if s.argv[0] == "sh"]
    assert f"echo {weight} > {CGROUP_ROOT}/wrapdock/{ID}/cpu.weight" in writes


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cgroup_remove_and_join(layout: str) -> None:
    dirs = LAYOUTS[layout].dirs(ID)
    removed = cgroup_plans.remove(LAYOUTS[layout], ID)
    assert [s.argv for s in removed] == [("rmdir", str(p)) for p in dirs.values()]
    assert [s.only_if for s in removed] == [("test", "-d", str(p)) for p in dirs.values()]
    assert cgroup_plans.join_commands(LAYOUTS[layout], ID, "4242") == [
        f"echo 4242 > {p}/cgroup.procs" for p in dirs.values()]


def test_cgroup_layout_dirs() -> None:
    assert LAYOUTS["v2"].dirs(ID) == {"unified": CGROUP_ROOT / "wrapdock" / ID}
    assert LAYOUTS["v1"].dirs(ID)["pids"] == CGROUP_ROOT / "pids" / "wrapdock" / ID
    assert LAYOUTS["v1"].memory_dir(ID) == CGROUP_ROOT / "memory" / "wrapdock" / ID
    assert LAYOUTS["v2"].memory_dir(ID) == CGROUP_ROOT / "wrapdock" / ID


def test_detect_v1_and_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = tmp_path / "v1"
    for controller in ("memory", "pids"):
        (v1 / controller).mkdir(parents=True)
        (v1 / controller / "cgroup.procs").write_text("")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", v1)
    monkeypatch.setenv("WRAPDOCK_CGROUP_PARENT", "wdtest-1")
    layout = cgroups.detect()
    assert (layout.version, layout.controllers, layout.parent, layout.swap_accounting) == (
        1, ("memory", "pids"), "wdtest-1", False)
    (v1 / "memory" / "memory.memsw.limit_in_bytes").write_text("")
    assert cgroups.detect("other").swap_accounting is True
    assert cgroups.detect("other").parent == "other"

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", v2)
    layout = cgroups.detect()
    assert (layout.version, layout.controllers) == (2, ("cpuset", "cpu", "io", "memory", "pids"))

    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path / "none")
    with pytest.raises(cgroups.EnvironmentProblem):
        cgroups.detect()


def test_oom_kills_v1_and_v2(tmp_path: Path) -> None:
    assert cgroups.oom_kills(None) == 0
    assert cgroups.oom_kills(tmp_path) == 0  # no file: no kill known
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cgroups.oom_kills(tmp_path) == 3
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert cgroups.oom_kills(tmp_path) == 2


# -- procstatus ---------------------------------------------------------------------------------------
def stat_line(comm: str, start: str = "123456") -> str:
    """A /proc/PID/stat line: pid (comm) then fields 3.. with field 22 (start time) = start."""
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0", "0", "0", "0", "0", "20", "0", "1",
              "0", start, "2265088", "100", "18446744073709551615"]
    return f"4242 ({comm}) " + " ".join(fields)


@pytest.mark.parametrize("comm", ["top", "my prog", "a) b", "x (y) z", ") S 1 2 3", "(", ""])
def test_start_time_survives_any_comm(comm: str) -> None:
    assert start_time(stat_line(comm, "987654321")) == "987654321"


def test_start_time_of_a_real_process_and_of_junk() -> None:
    line = Path("/proc/self/stat").read_text()
    assert start_time(line) == line.rsplit(")", 1)[1].split()[19]
    assert start_time("") is None
    assert start_time("4242 (short) S 1 2") is None


PID_MAX_LIMIT = 4194304  # the kernel's maximum pid_max: no process ever has a larger PID


def paths_in(tmp_path: Path) -> ContainerPaths:
    return ContainerPaths(tmp_path / "container")


def write_runtime(paths: ContainerPaths, pid: int | str | None, stat: str | None, exit_code: str | None) -> None:
    paths.dir.mkdir(parents=True, exist_ok=True)
    for path, value in ((paths.pidfile, pid), (paths.statfile, stat), (paths.exitfile, exit_code)):
        if value is not None:
            path.write_text(f"{value}\n")


def memory_layout(tmp_path: Path, oom_kills: int) -> CgroupLayout:
    layout = CgroupLayout(2, tmp_path / "cg", "wd", ("memory",))
    directory = layout.memory_dir(ID)
    directory.mkdir(parents=True)
    (directory / "memory.events").write_text(f"oom 0\noom_kill {oom_kills}\n")
    return layout


def test_status_created_before_the_first_start(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    state = status(paths, None, ID)
    assert (state.state, state.pid, state.exit_code, state.text()) == ("created", None, None, "created")


def test_status_running_is_a_live_pid_with_the_same_start_time(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    write_runtime(paths, os.getpid(), Path("/proc/self/stat").read_text().strip(), None)
    assert live_pid(paths) == os.getpid()
    state = status(paths, None, ID)
    assert (state.state, state.pid, state.text()) == ("running", os.getpid(), "running")


def test_status_a_reused_pid_is_not_the_container(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    own = Path("/proc/self/stat").read_text().strip()
    other_start = str(int(start_time(own)) + 1)
    write_runtime(paths, os.getpid(), stat_line("busybox", other_start), None)
    assert live_pid(paths) is None
    state = status(paths, None, ID)
    assert (state.state, state.exit_code, state.text()) == ("exited", None, "exited (unknown)")


@pytest.mark.parametrize("pid", [str(PID_MAX_LIMIT + 1), "abc", "", "-1"])
def test_status_a_dead_or_bad_pid_is_not_running(tmp_path: Path, pid: str) -> None:
    paths = paths_in(tmp_path)
    write_runtime(paths, pid, stat_line("sleep"), "0")
    assert live_pid(paths) is None
    assert status(paths, None, ID).text() == "exited (0)"


@pytest.mark.parametrize(("code", "text"), [("0", "exited (0)"), ("7", "exited (7)"), ("143", "exited (143)"),
                                            ("junk", "exited (unknown)"), ("", "exited (unknown)")])
def test_status_exit_codes(tmp_path: Path, code: str, text: str) -> None:
    paths = paths_in(tmp_path)
    write_runtime(paths, PID_MAX_LIMIT + 1, stat_line("sh"), code)
    state = status(paths, None, ID)
    assert state.state == "exited" and state.text() == text


def test_status_oom_killed(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    write_runtime(paths, PID_MAX_LIMIT + 1, stat_line("dd"), "137")
    state = status(paths, memory_layout(tmp_path, 1), ID)
    assert (state.state, state.exit_code, state.oom_kills, state.text()) == ("oom-killed", 137, 1, "OOM-killed (137)")


def test_status_running_stays_running_after_an_oom_kill_of_a_child(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    write_runtime(paths, os.getpid(), Path("/proc/self/stat").read_text().strip(), None)
    state = status(paths, memory_layout(tmp_path, 2), ID)
    assert (state.state, state.oom_kills) == ("running", 2)


# -- containerspec: run options --------------------------------------------------------------------------
def test_parse_env() -> None:
    host = {"HOME": "/home/me", "EMPTY": ""}
    assert parse_env(("bird=123",), host) == ("bird=123",)
    assert parse_env(("A=", "B=x=y", "_c1=z z"), host) == ("A=", "B=x=y", "_c1=z z")
    assert parse_env(("HOME", "EMPTY", "UNSET"), host) == ("HOME=/home/me", "EMPTY=")
    assert parse_env(("A=1", "A=2"), host) == ("A=2",)
    assert parse_env((), host) == ()


@pytest.mark.parametrize("item", ["1X=2", "=x", "A-B=1", "", "A B=1", "é=1", "A=\0"])
def test_parse_env_refuses(item: str) -> None:
    with pytest.raises(UsageError, match="environment variable"):
        parse_env((item,), {})


@pytest.mark.parametrize(("text", "size"), [
    ("6m", 6 * MiB), ("64m", 64 * MiB), ("64M", 64 * MiB), ("64mb", 64 * MiB), ("1g", 1024 * MiB),
    ("1.5g", 1536 * MiB), ("8192k", 8 * MiB), (str(MIN_MEMORY), MIN_MEMORY), (f"{MIN_MEMORY}b", MIN_MEMORY),
    (" 7m ", 7 * MiB),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "why"), [
    ("10x", "invalid memory size"), ("", "invalid memory size"), ("m", "invalid memory size"),
    ("-5m", "invalid memory size"), ("5 m", "invalid memory size"), ("1e9", "invalid memory size"),
    ("1k", "minimum is 6m"), ("5m", "minimum is 6m"), ("0", "minimum is 6m"), (str(MIN_MEMORY - 1), "minimum is 6m"),
])
def test_parse_size_refuses(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_size(text)


def exists_only(*paths: str):
    return lambda path: path in paths


def test_parse_volume() -> None:
    exists = exists_only("/srv/data", "/srv/a b")
    assert parse_volume("/srv/data:/data", exists) == Volume("/srv/data", "/data", False)
    assert parse_volume("/srv/data:/data:rw", exists) == Volume("/srv/data", "/data", False)
    assert parse_volume("/srv/data:/data/:ro", exists) == Volume("/srv/data", "/data", True)
    assert parse_volume("/srv/a b:/x y//z", exists) == Volume("/srv/a b", "/x y/z", False)
    assert Volume("/srv/data", "/data", True).spec() == "/srv/data:/data:ro"
    # a host file is seen as one while planning, so the init makes a file to mount it on
    assert parse_volume("/srv/a b:/etc/x:ro", exists, exists_only("/srv/a b")) == Volume("/srv/a b", "/etc/x",
                                                                                         True, file=True)


@pytest.mark.parametrize(("text", "why"), [
    ("/srv/data", "expected HOST_PATH"), ("/srv/data:/a:/b:ro", "expected HOST_PATH"), (":/data", "expected"),
    ("/srv/data:", "expected"), ("/srv/data:/data:rx", "must be ro or rw"), ("relative:/data", "must be absolute"),
    ("/srv/data:data", "must be absolute"), ("/srv/data:/", "below /"), ("/srv/data:/a/../b", "'..'"),
    ("/srv/da,ta:/data", "must be absolute"), ("/missing:/data", "does not exist"),
])
def test_parse_volume_refuses(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_volume(text, exists_only("/srv/data", "/srv/da,ta"))


@pytest.mark.parametrize(("value", "cpus"), [(None, None), ("0.5", 0.5), ("2", 2.0), ("0.01", 0.01), ("1e-1", 0.1)])
def test_parse_cpus(value: str | None, cpus: float | None) -> None:
    assert parse_cpus(value, online=2) == cpus


@pytest.mark.parametrize(("value", "why"), [("abc", "expected a number"), ("", "expected a number"),
                                            ("0", "between 0.01 and 2"), ("0.001", "between"), ("2.5", "between"),
                                            ("-1", "between"), ("nan", "between"), ("inf", "between")])
def test_parse_cpus_refuses(value: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_cpus(value, online=2)


@pytest.mark.parametrize("value", ["0", "1", "0-1", "0,1", "0-1,3", "3"])
def test_parse_cpuset(value: str) -> None:
    assert parse_cpuset(value, online=4) == value
    assert parse_cpuset(None, online=4) is None


@pytest.mark.parametrize(("value", "why"), [("4", "has CPUs 0-3"), ("2-1", "has CPUs"), ("0-4", "has CPUs"),
                                            ("a", "expected a list"), ("0-", "expected a list"),
                                            ("0,,1", "expected a list"), ("", "expected a list"),
                                            (" 0", "expected a list")])
def test_parse_cpuset_refuses(value: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_cpuset(value, online=4)


def test_parse_caps() -> None:
    assert parse_caps((), ()) == DEFAULT_CAPS
    assert parse_caps(("NET_ADMIN",), ()) == (*DEFAULT_CAPS, "net_admin")
    assert parse_caps(("cap_net_admin", "NET_ADMIN"), ()) == (*DEFAULT_CAPS, "net_admin")
    assert parse_caps(("CHOWN",), ()) == DEFAULT_CAPS  # already there: no duplicate
    assert parse_caps((), ("CHOWN", "cap_kill")) == tuple(c for c in DEFAULT_CAPS if c not in ("chown", "kill"))
    assert parse_caps(("ALL",), ()) == ALL_CAPS
    assert parse_caps(("all",), ("SYS_ADMIN",)) == tuple(c for c in ALL_CAPS if c != "sys_admin")
    assert parse_caps((), ("ALL",)) == ()


@pytest.mark.parametrize(("add", "drop"), [(("NOT_A_CAP",), ()), ((), ("CAP_",)), (("sys admin",), ())])
def test_parse_caps_refuses_unknown(add: tuple[str, ...], drop: tuple[str, ...]) -> None:
    with pytest.raises(UsageError, match="unknown capability"):
        parse_caps(add, drop)


WITHOUT = {name: tuple(c for c in DEFAULT_CAPS if c != name) for name in DEFAULT_CAPS}


@pytest.mark.parametrize(("add", "drop", "caps"), [
    # Docker's TweakCapabilities: --cap-drop ALL keeps only the adds
    (("NET_ADMIN",), ("ALL",), ("net_admin",)),
    (("SYS_ADMIN", "cap_net_raw"), ("all",), ("sys_admin", "net_raw")),
    # --cap-add ALL is everything except the drops
    (("ALL",), ("SYS_ADMIN", "NET_ADMIN"), tuple(c for c in ALL_CAPS if c not in ("sys_admin", "net_admin"))),
    (("ALL",), ("ALL",), ALL_CAPS),
    # otherwise the default set minus the drops plus the adds: an add wins over the same drop
    (("CHOWN",), ("CHOWN",), (*WITHOUT["chown"], "chown")),
    (("NET_ADMIN",), ("NET_ADMIN", "MKNOD"), (*WITHOUT["mknod"], "net_admin")),
])
def test_parse_caps_follows_dockers_rules(add: tuple[str, ...], drop: tuple[str, ...], caps: tuple[str, ...]) -> None:
    assert parse_caps(add, drop) == caps


def test_names_hostnames_and_workdirs() -> None:
    assert check_name("web.1_a-b") == "web.1_a-b"
    for bad in ("", "-web", "a/b", "a b", "x" * 65):
        with pytest.raises(UsageError):
            check_name(bad)
    assert check_hostname("db-1.example") == "db-1.example"
    for bad in ("-x", "a_b", "x" * 65, "a..b"):
        with pytest.raises(UsageError, match="invalid hostname"):
            check_hostname(bad)
    assert check_workdir("/srv//app/") == "/srv/app"
    for bad in ("srv", "/a\nb"):
        with pytest.raises(UsageError, match="working directory"):
            check_workdir(bad)
    name = random_name(ID)
    assert name.endswith("_0123") and check_name(name) == name
