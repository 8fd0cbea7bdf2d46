"""Container plans, cgroup plans, run-option parsing and process status: pure, no root needed.

The container plans are compared with golden files (one step per line, as wrapdock.shell.step_text
renders them for the trail and the --print-only script). Regenerate them after an intended change with:
    WRAPDOCK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_plans_container.py
then review the diff of tests/golden/container-*.txt.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tests.unit.fakes import FakeHost
from tests.unit.test_render import run_bash, shellcheck
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
from wrapdock.errors import OperationFailed, UsageError
from wrapdock.model import Network
from wrapdock.plan import INLINE_END, Plan, Step, cmd
from wrapdock.plans import cgroups as cgroup_plans
from wrapdock.plans import container as plans
from wrapdock.plans import endpoint as endpoint_plans
from wrapdock.plans.cgroups import Limits
from wrapdock.plans.container import ContainerPaths, Runtime
from wrapdock.plans.endpoint import Attachment, host_ifname
from wrapdock.portspec import PortMapping
from wrapdock.procstatus import live_pid, start_time, status
from wrapdock.render import render_script
from wrapdock.runner import Runner, Trail
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

ETC = {"resolv.conf": ["nameserver 192.0.2.53"], "hostname": ["web"]}
HOSTS_LINES = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "10.0.0.2\tweb"]
GROUP_HOSTS = Path("/var/lib/wrapdock/hosts/0123456789abcdef01234567")


def hosts(kind: str = "shared") -> tuple[str, Step]:
    """The /etc/hosts step containers.run hands to prepare: a file of its own, or its group's file and a link."""
    if kind == "own":
        return kind, plans.write_files([(PATHS.hosts, HOSTS_LINES)], "web's /etc/hosts", mkdirs=(PATHS.etc_dir,))
    note = "web's /etc/hosts (the file of the containers on the same networks)"
    return kind, plans.write_files([(GROUP_HOSTS, HOSTS_LINES)], note, mkdirs=(GROUP_HOSTS.parent, PATHS.etc_dir),
                                   links=((GROUP_HOSTS, PATHS.hosts),),
                                   undo=plans.write_files([], note, remove=(GROUP_HOSTS,)))
EXEC_ENV = ["PATH=" + DEFAULT_PATH, "HOSTNAME=web", "HOME=/root", "bird=123"]


def runtime(layout: str, netns: str | None = "web") -> Runtime:
    return Runtime("/bin/busybox", LAYOUTS[layout], (str(IMAGE_ROOTFS),), netns)


FRONT = Network(name="front", id="f" * 64, driver="bridge", subnet=IPv4Network("10.20.0.0/24"),
                gateway=IPv4Address("10.20.0.1"), bridge="front", mtu=1400)
BACK = Network(name="back", id="b" * 64, driver="bridge", subnet=IPv4Network("10.30.0.0/24"),
               gateway=IPv4Address("10.30.0.1"), bridge="back")
# as containers.run makes them: the first network carries the default route and the published ports
ATTACHMENTS = (Attachment(FRONT, "eth0", host_ifname(ID, 0), IPv4Address("10.20.0.2"), primary=True),
               Attachment(BACK, "eth1", host_ifname(ID, 1), IPv4Address("10.30.0.5"), primary=False))
VETHS = [att.host_ifname for att in ATTACHMENTS]
PORTS = [PortMapping(None, 8080, 80), PortMapping("127.0.0.1", 5353, 53, "udp")]


def network_steps(netns: str = "web", name: str = "web") -> list[Step]:
    """The network steps containers.run hands to prepare for a container on FRONT and BACK."""
    steps: list[Step] = []
    for att in ATTACHMENTS:
        steps += endpoint_plans.attach(att, netns, name, create_netns=att.primary, kernel_ipv6=True)
        if att.primary:
            steps.append(endpoint_plans.publish(ID, name, att, PORTS))
    return steps


def remove_steps(config: str, layout: str, running: bool, netns: str | None = "web",
                 network: bool = False) -> list[Step]:
    if network:
        return plans.remove(CONFIGS[config], PATHS, runtime(layout, netns), running,
                            endpoint_plans.unpublish(ID, CONFIGS[config].name, PORTS), VETHS).steps
    return plans.remove(CONFIGS[config], PATHS, runtime(layout, netns), running, [], []).steps


CASES = {
    "prepare-plain-v1": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v1"), ETC, [], hosts=hosts()).steps,
    "prepare-plain-v2": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v2"), ETC, []).steps,
    "prepare-limits-v1": lambda: plans.prepare(CONFIGS["limits"], PATHS, runtime("v1", "db.1"), ETC, [],
                                               hosts=hosts("own")).steps,
    "prepare-limits-v1swap": lambda: plans.prepare(CONFIGS["limits"], PATHS, runtime("v1swap", "db.1"), ETC,
                                                   []).steps,
    "prepare-limits-v2": lambda: plans.prepare(CONFIGS["limits"], PATHS, runtime("v2", "db.1"), ETC, []).steps,
    "prepare-privileged-v2": lambda: plans.prepare(CONFIGS["privileged"], PATHS, runtime("v2", "root"), {},
                                                   []).steps,
    "prepare-sysadmin-v1": lambda: plans.prepare(CONFIGS["sysadmin"], PATHS, runtime("v1", "adm"), ETC, []).steps,
    "prepare-dropall-v2": lambda: plans.prepare(CONFIGS["dropall"], PATHS, runtime("v2", "bare"), ETC, []).steps,
    "prepare-hostnet-v2": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v2", None), ETC, []).steps,
    "prepare-network-v2": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v2"), ETC, network_steps(),
                                                hosts=hosts()).steps,
    "prepare-tty-v2": lambda: plans.prepare(CONFIGS["plain"], PATHS, runtime("v2"), ETC, [], tty=True).steps,
    "prepare-tty-privileged-v2": lambda: plans.prepare(CONFIGS["privileged"], PATHS, runtime("v2", "root"), {}, [],
                                                       tty=True).steps,
    "start-detached-plain-v1": lambda: plans.start_detached(CONFIGS["plain"], PATHS, runtime("v1")),
    "start-detached-tty-limits-v2": lambda: plans.start_detached(CONFIGS["limits"], PATHS, runtime("v2", "db.1"),
                                                                 tty=True),
    "start-attached-plain-v1": lambda: plans.start_attached(CONFIGS["plain"], PATHS, runtime("v1"), tty=False),
    "start-attached-hostnet-v2": lambda: plans.start_attached(CONFIGS["plain"], PATHS, runtime("v2", None),
                                                              tty=True),
    "start-attached-tty-noinput-v1": lambda: plans.start_attached(CONFIGS["plain"], PATHS, runtime("v1"), tty=True,
                                                                  interactive=False),
    "remove-when-done": lambda: [plans.remove_when_done(
        CONFIGS["plain"], PATHS, ["/usr/bin/python3", "-m", "wrapdock", "--quiet", "--data-dir", str(DATA)])],
    "stop": lambda: plans.stop("web", 4242, PATHS, 3).steps,
    "remove-running-v1": lambda: remove_steps("plain", "v1", running=True),
    "remove-stopped-v2": lambda: remove_steps("plain", "v2", running=False),
    "remove-hostnet-v1": lambda: remove_steps("plain", "v1", running=False, netns=None),
    "remove-network-v1": lambda: remove_steps("plain", "v1", running=True, network=True),
    "exec-plain-v1": lambda: [plans.exec_step(CONFIGS["plain"], 4242, EXEC_ENV, ["sh", "-c", "echo hi"],
                                              LAYOUTS["v1"])],
    "exec-privileged-v2": lambda: [plans.exec_step(CONFIGS["privileged"], 4242, EXEC_ENV, ["id"], LAYOUTS["v2"])],
    "exec-sysadmin-v1": lambda: [plans.exec_step(CONFIGS["sysadmin"], 4242, EXEC_ENV, ["id"], LAYOUTS["v1"])],
    "exec-dropall-v2": lambda: [plans.exec_step(CONFIGS["dropall"], 4242, EXEC_ENV, ["id"], LAYOUTS["v2"])],
    "exec-tty-plain-v1": lambda: [plans.exec_step(CONFIGS["plain"], 4242, EXEC_ENV, ["sh"], LAYOUTS["v1"], tty=True)],
    "exec-tty-noinput-privileged-v2": lambda: [plans.exec_step(CONFIGS["privileged"], 4242, EXEC_ENV, ["top"],
                                                               LAYOUTS["v2"], tty=True, no_input=PATHS.tty_input)],
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
GUARD = re.compile(r"\[ ! -(?P<test>[ed]) (?P<path>\S+) \] \|\| (?P<command>.+)")
WAIT = re.compile(r"n=0; while \[ -e (?P<path>\S+) \] && \[ \$n -lt (?P<tries>\d+) \]; do sleep (?P<pause>[0-9.]+); "
                  r"n=\$\(\(n\+1\)\); done")


def script_lines(step: Step, set_e: bool = True) -> list[str]:
    """The lines of an `sh -s` step's script after its `set -e` (which it must have if `set_e`)."""
    assert step.argv == ("sh", "-s"), step.argv
    if step.stdin[0] == "set -e":
        return list(step.stdin[1:])
    assert not set_e, f"{step.note}: the script does not start with set -e"
    return list(step.stdin)


def script_commands(step: Step) -> list[str]:
    """An `sh -s` script's own command lines: a `printf` writing a file is one command, its lines left out."""
    commands: list[str] = []
    in_printf = in_tee = False
    for line in script_lines(step):
        if in_printf:
            in_tee = in_tee or line.strip().startswith("| tee ")
            if in_tee or not line.endswith(" \\"):  # the last line: "    > FILE"; or tee's files
                commands[-1] += " " + line.strip()
            if not line.endswith(" \\"):
                in_printf = in_tee = False
            continue
        commands.append(line)
        in_printf = line == "printf '%s\\n' \\"
    assert not in_printf, "unterminated printf"
    return commands


def cleanup_lines(step: Step) -> list[tuple[str, str, list[str]]]:
    """A guarded cleanup script as (test, path, command words); every line is guarded by its own path.

    A line that waits (boundedly) for a path to vanish must be followed by the line that deletes it.
    """
    parsed = []
    lines = script_lines(step)
    for i, line in enumerate(lines):
        waits = WAIT.fullmatch(line)
        if waits:
            assert float(waits["pause"]) * int(waits["tries"]) <= 1, line
            following = GUARD.fullmatch(lines[i + 1]) if i + 1 < len(lines) else None
            assert following and following["path"] == waits["path"], line
            continue
        match = GUARD.fullmatch(line)
        assert match, f"unguarded cleanup line: {line}"
        words = shlex.split(match["command"])
        assert words[-1] == match["path"] or match["path"] in (f"/sys/class/net/{words[-1]}",
                                                               f"/run/netns/{words[-1]}"), line
        parsed.append((match["test"], match["path"], words))
    return parsed


def undo_lines(step: Step) -> list[str]:
    """An undo as shell lines: an `sh -s` undo's script, or the command itself."""
    assert step.undo is not None
    if step.undo.argv == ("sh", "-s"):  # (an endpoint's undo goes on after a failed line)
        return script_lines(step.undo, set_e=False)
    return [shlex.join(step.undo.argv)]


def inlined(step: Step) -> list[Step]:
    """A step as the commands it runs: an `sh -s` script's batches (here-documents) each one step, the
    lines between them `sh -s` steps; any other step as itself."""
    if step.argv != ("sh", "-s"):
        return [step]
    parts: list[Step] = []
    chunk: list[str] = []
    lines = iter(step.stdin)
    for line in lines:
        if not line.endswith(f"<<'{INLINE_END}'"):
            chunk += [line] if line != "set -e" else []
            continue
        if chunk:
            parts.append(cmd("sh", "-s", note=step.note, stdin=["set -e", *chunk]))
            chunk = []
        batch = []
        for inner in lines:
            if inner == INLINE_END:
                break
            batch.append(inner)
        parts.append(cmd(*shlex.split(line.removesuffix(f"<<'{INLINE_END}'")), note=step.note, stdin=batch))
    if chunk:
        parts.append(cmd("sh", "-s", note=step.note, stdin=["set -e", *chunk]))
    return parts


def made_by(steps: list[Step]) -> dict[str, set[str]]:
    """What a prepare plan creates on the host, read from its commands, scripts and batches."""
    made: dict[str, set[str]] = {"dirs": set(), "netns": set(), "veths": set()}
    for step in (part for whole in steps for part in inlined(whole)):
        if step.argv[:3] == ("ip", "netns", "add"):
            made["netns"].add(step.argv[3])
        elif step.argv == ("ip", "-batch", "-"):
            for words in (line.split() for line in step.stdin):
                if words[:2] == ["netns", "add"]:
                    made["netns"].add(words[2])
                elif words[:3] == ["link", "add", "name"]:
                    made["veths"].add(words[3])
        elif step.argv == ("sh", "-s"):
            # a namespace made inside the script (a container without a network)
            made["netns"].update(line.split()[3] for line in step.stdin if line.startswith("ip netns add "))
            for words in (shlex.split(line) for line in script_commands(step) if line.startswith("mkdir ")):
                assert words[:2] == ["mkdir", "-p"]
                made["dirs"].update(words[2:])
    return made


NETWORK_KINDS = ["none", "bridge", "host"]


def prepare_and_remove(config: str, layout: str, kind: str) -> tuple[list[Step], list[Step]]:
    netns = None if kind == "host" else "web"
    steps = network_steps() if kind == "bridge" else []
    prepared = plans.prepare(CONFIGS[config], PATHS, runtime(layout, netns), ETC, steps).steps
    removed = remove_steps(config, layout, running=False, netns=netns, network=kind == "bridge")
    return prepared, removed


@pytest.mark.parametrize("kind", NETWORK_KINDS)
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_object_prepare_makes_is_removed_by_removes_script(config: str, layout: str, kind: str) -> None:
    """The directory, netns, veths and cgroup dirs prepare makes, remove's one cleanup script takes away,
    each line guarded by the very path it deletes; what prepare's undos do is a line of it too."""
    prepared, removed = prepare_and_remove(config, layout, kind)
    *withdraw, cleanup = removed
    assert withdraw == (endpoint_plans.unpublish(ID, CONFIGS[config].name, PORTS) if kind == "bridge" else [])
    lines = cleanup_lines(cleanup)
    deleted = {(test, path): words for test, path, words in lines}
    made = made_by(prepared)

    assert made["veths"] == (set(VETHS) if kind == "bridge" else set())
    for veth in made["veths"]:
        assert deleted[("e", f"/sys/class/net/{veth}")] == ["ip", "link", "del", "dev", veth]
    assert made["netns"] == (set() if kind == "host" else {"web"})
    for netns in made["netns"]:
        assert deleted[("e", f"/run/netns/{netns}")] == ["ip", "netns", "del", netns]
    # every directory made is in the container's directory (rm -rf), a container cgroup (rmdir) or
    # wrapdock's shared parent cgroup, which stays for the other containers
    cgroup_dirs = {str(d) for d in LAYOUTS[layout].dirs(ID).values()}
    parents = {str(d) for d in LAYOUTS[layout].parent_dirs().values()}
    inside = {d for d in made["dirs"] if Path(d).is_relative_to(PATHS.dir)}
    assert inside == {str(PATHS.upper), str(PATHS.work), str(PATHS.rootfs)}
    assert made["dirs"] - inside - cgroup_dirs <= parents
    # the cgroups made: memory and pids always, cpu and cpuset only when limited (v2: its one dir);
    # remove takes away every one it could have made, each guarded
    made_cgroups = made["dirs"] & cgroup_dirs
    wanted = cgroup_plans.needed(CONFIGS[config].limits)
    assert made_cgroups == {str(d) for c, d in LAYOUTS[layout].dirs(ID).items() if c in wanted}
    for directory in cgroup_dirs:
        assert deleted[("d", directory)] == ["rmdir", directory]
    assert deleted[("d", str(PATHS.dir))] == ["rm", "-rf", "--one-file-system", str(PATHS.dir)]
    assert not any(words[-1] in parents for words in deleted.values())
    # nothing else: exactly one line per object
    assert len(lines) == len(made["veths"]) + len(made["netns"]) + len(cgroup_dirs) + 1
    # the namespace first, then the cgroups and the directory, the veths last (the namespace takes
    # them along: the script waits for that, then deletes what is left)
    order = [{"/run/netns": 0, "/sys/class/net": 3}.get(str(Path(path).parent), 1) for _, path, _ in lines]
    order = [2 if path == str(PATHS.dir) else rank for rank, (_, path, _) in zip(order, lines, strict=True)]
    assert order == sorted(order)
    waits = [WAIT.fullmatch(line)["path"] for line in script_lines(cleanup) if WAIT.fullmatch(line)]
    assert waits == ([f"/sys/class/net/{veth}" for veth in VETHS] if kind == "bridge" else [])
    # what any undo of prepare does (after a failed run), remove does too: the same line, or the
    # same command under its guard
    script = script_lines(cleanup)
    published = [s for s in (part for step in prepared for part in inlined(step)) if s.argv[0] == "iptables-restore"]
    comment = endpoint_plans.container_comment(ID)
    for step in published:  # the port rules: remove deletes every rule with the container's comment
        rules = [line for line in step.stdin if line.startswith("-A ")]
        assert rules and all(f"--comment {comment}" in rule for rule in rules)
        assert withdraw[0].argv[-1] == comment
    unpublished = shlex.join(endpoint_plans.unpublish(ID, "web", [])[0].argv)  # by the same comment
    undos = [line for step in prepared if step.undo is not None for line in undo_lines(step) if line != unpublished]
    assert undos
    for line in undos:
        assert line in script or any(other.endswith(f" ] || {line}") for other in script), line


def test_remove_of_a_running_container_kills_it_first() -> None:
    steps = remove_steps("plain", "v1", running=True)
    assert steps[0].argv[:2] == ("sh", "-c") and "kill -s KILL" in steps[0].argv[2]
    # the namespace's name goes first: the kernel takes it down once the kill has emptied it
    assert steps[0].argv[3:] == ("wrapdock-kill", str(PATHS.pidfile), "/run/netns/web", "web")
    assert steps[0].argv[2].index("ip netns del") < steps[0].argv[2].index("kill -s KILL")
    assert remove_steps("plain", "v1", running=True, netns=None)[0].argv[3:] == ("wrapdock-kill", str(PATHS.pidfile))
    # (with a start's wait before it, the namespace's words follow the wait's)
    both = plans.kill_and_wait(PATHS, "kill", starting=True, netns="web")
    assert both.argv[4:] == (str(PATHS.pidfile), str(PATHS.statfile), str(PATHS.exitfile), str(PATHS.starting),
                             "/run/netns/web", "web")
    assert both.argv[2].startswith('[ ! -e "$5" ] || ip netns del "$6" || exit; [ -e "$4" ] || exit 0; ')
    assert steps[1:] == remove_steps("plain", "v1", running=False)
    assert len(steps) == 2  # the kill, then the one cleanup script
    assert "kill" not in "\n".join(remove_steps("plain", "v1", running=False)[0].stdin)
    # with ports: kill, withdraw the ports, then the cleanup
    networked = remove_steps("plain", "v1", running=True, network=True)
    assert networked[0] == steps[0]
    assert networked[1:-1] == endpoint_plans.unpublish(ID, "web", PORTS)
    assert networked[-1].argv == ("sh", "-s")


# -- write_files: one script for the container's files -------------------------------------------
TRICKY = ["$HOME `id` $(id) ${PATH}", "it's \"quoted\"", "back\\slash\\", "\ttab\tled", "", "  indented",
          "WRAPDOCK_EOF", " WRAPDOCK_EOF", "EOF", "a \\", "> /tmp/x", "ünïcode ✓", "last"]


def test_remove_rewrites_the_neighbours_hosts_inside_its_cleanup_and_fails_with_them(tmp_path: Path) -> None:
    """rm's `meanwhile` (the neighbours' /etc/hosts) runs in the background of the cleanup script: written
    when the script ends, its failure the script's (it exits non-zero), its undo the script's undo."""
    neighbours = [tmp_path / f"n{i}" for i in range(3)]
    for path in neighbours:
        path.write_text("old\n")
    hosts = plans.write_files([(path, ["new"]) for path in neighbours], "hosts",
                              undo=plans.write_files([(path, ["old"]) for path in neighbours], "hosts"))
    [cleanup] = plans.remove(CONFIGS["plain"], PATHS, runtime("v1", None), False, [], [], meanwhile=[hosts]).steps
    assert cleanup.partial and cleanup.undo is not None and "hosts" in cleanup.note
    carry_out([cleanup])
    assert [path.read_text() for path in neighbours] == ["new\n"] * 3
    carry_out([cleanup.undo])
    assert [path.read_text() for path in neighbours] == ["old\n"] * 3

    blocker = tmp_path / "not a dir"
    blocker.write_text("")
    failing = plans.write_files([(blocker / "hosts", ["new"])], "hosts")
    [cleanup] = plans.remove(CONFIGS["plain"], PATHS, runtime("v1", None), False, [], [], meanwhile=[failing]).steps
    assert run_script(cleanup).returncode != 0


def test_write_files_is_one_sh_script_that_writes_every_file_exactly(tmp_path: Path) -> None:
    base = tmp_path / "a dir"
    files = [(base / "hosts", ["127.0.0.1\tlocalhost"]), (base / "sub dir" / "tricky", TRICKY),
             (base / "empty", []), (base / "init.sh", ["#!/bin/sh", "echo hi"])]
    step = plans.write_files(files, "the files", mkdirs=(base / "sub dir", base / "x y" / "z"),
                             executable=(base / "init.sh",))
    assert step.argv == ("sh", "-s") and step.stdin[0] == "set -e" and step.note == "the files"
    assert step.undo is None and not step.partial
    # every file is one `printf` (a shell builtin: no process per file); an empty one is `: > FILE`
    assert script_commands(step) == [
        f"mkdir -p {shlex.quote(str(base / 'sub dir'))} {shlex.quote(str(base / 'x y' / 'z'))}",
        *(f"printf '%s\\n' \\ > {shlex.quote(str(path))}" if lines else f": > {shlex.quote(str(path))}"
          for path, lines in files),
        f"chmod 755 {shlex.quote(str(base / 'init.sh'))}"]
    carry_out([step])
    for path, lines in files:
        assert path.read_text() == "".join(line + "\n" for line in lines), path
    assert (base / "x y" / "z").is_dir()
    assert (base / "init.sh").stat().st_mode & 0o777 == 0o755
    assert (base / "hosts").stat().st_mode & 0o111 == 0


def test_write_files_rewrites_in_place_so_a_bind_mount_sees_it(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("old content that is longer than the new one\n")
    inode = hosts.stat().st_ino
    carry_out([plans.write_files([(hosts, ["new"])], "rewrite")])
    assert hosts.read_text() == "new\n"
    assert hosts.stat().st_ino == inode


def test_write_files_stops_at_the_first_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not a dir"
    blocker.write_text("")
    step = plans.write_files([(blocker / "x", ["a"]), (tmp_path / "after", ["b"])], "n")
    assert run_script(step).returncode != 0
    assert not (tmp_path / "after").exists()  # set -e


def test_write_files_writes_one_content_once_through_tee(tmp_path: Path) -> None:
    """The /etc/hosts of 50 containers of one network: one printf, one tee; the script grows by a line each."""
    shared = ["127.0.0.1\tlocalhost", *(f"10.0.0.{i}\tc{i}" for i in range(2, 52))]
    files = [(tmp_path / f"c{i}" / "hosts", shared) for i in range(50)]
    files.insert(10, (tmp_path / "own", ["other content"]))
    for path, _ in files:
        path.parent.mkdir(exist_ok=True)
        path.write_text("old\n")
    inodes = [path.stat().st_ino for path, _ in files]
    step = plans.write_files(files, "hosts")
    assert len(step.stdin) < 2 * 50 + 2 * len(shared)  # not 50 copies of the content
    tee = [c for c in script_commands(step) if "| tee --" in c]
    assert len(tee) == 1 and all(shlex.quote(str(path)) in tee[0] for path, lines in files if lines is shared)
    script = tmp_path / "script.sh"
    script.write_text("\n".join(step.stdin) + "\n")
    shellcheck(script)
    carry_out([step])
    for (path, lines), inode in zip(files, inodes, strict=True):
        assert path.read_text() == "".join(line + "\n" for line in lines), path
        assert path.stat().st_ino == inode  # in place: bind mounts follow


@pytest.mark.parametrize("markers", [False, True], ids=["verbatim", "a-marker-inside"])
def test_write_files_verbatim_shows_the_lines_as_they_read_and_writes_them_exactly(tmp_path: Path,
                                                                                    markers: bool) -> None:
    """/etc/hosts files: their lines one quoted word, each line of the file a line of the script as it
    reads; a content with a here-document's end marker falls back to a quoted word per line."""
    tricky = [line for line in TRICKY if markers or "WRAPDOCK" not in line]
    shared = ["127.0.0.1\tlocalhost", *(f"10.0.0.{i}\tc{i}" for i in range(2, 12)), *tricky]
    files = [(tmp_path / "a" / "hosts", shared), (tmp_path / "b" / "hosts", shared), (tmp_path / "own", ["x\ty"])]
    for path, _ in files:
        path.parent.mkdir(exist_ok=True)
        path.write_text("old\n")
    inodes = [path.stat().st_ino for path, _ in files]
    step = plans.write_files(files, "hosts", verbatim=True)
    if markers:
        assert "    WRAPDOCK_EOF \\" in step.stdin and "10.0.0.5\tc5" not in step.stdin
    else:
        assert all(line in step.stdin for line in shared[1:-1] if "'" not in line)
        assert step.stdin[1] == "printf '%s\\n' '127.0.0.1\tlocalhost" and "x\ty" not in step.stdin
    assert len([c for c in script_commands(step) if "| tee --" in c]) == 1
    script = tmp_path / "script.sh"
    script.write_text("\n".join(step.stdin) + "\n")
    shellcheck(script, "SC2016", "SC1003")  # TRICKY's $HOME and backslashes: meant literally
    # as the runner feeds it, then as the --print-only script has it (a here-document of its lines)
    printed = render_script([Plan("hosts", [step])], ["run"])

    def print_only() -> None:
        code, _, err = run_bash(printed, tmp_path)
        assert code == 0, err

    for run in (lambda: carry_out([step]), print_only):
        for path, _ in files:
            path.write_text("old\n")
        run()
        for (path, lines), inode in zip(files, inodes, strict=True):
            assert path.read_text() == "".join(line + "\n" for line in lines), path
            assert path.stat().st_ino == inode  # in place: bind mounts follow


def test_write_files_with_tee_stops_when_a_file_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not a dir"
    blocker.write_text("")
    step = plans.write_files([(tmp_path / "a", ["x"]), (blocker / "b", ["x"]), (tmp_path / "after", ["y"])], "n")
    assert run_script(step).returncode != 0
    assert not (tmp_path / "after").exists()


def test_write_files_content_never_ends_the_script_heredoc() -> None:
    """Every content line is quoted and indented: none can equal the runner's here-document end."""
    step = plans.write_files([(Path("/tmp/first"), ["WRAPDOCK_EOF", "touch /tmp/x"])], "n")
    assert "WRAPDOCK_EOF" not in step.stdin
    assert step_text(step).count("\nWRAPDOCK_EOF") == 1


def test_prepare_writes_the_directory_files_init_and_cgroups_in_one_step() -> None:
    steps = plans.prepare(CONFIGS["limits"], PATHS, runtime("v1", "db.1"), ETC, []).steps
    first = steps[0]
    init = plans.init_script(CONFIGS["limits"], PATHS, runtime("v1", "db.1"), tuple(ETC))
    files = plans.write_files(
        [*((PATHS.etc_file(name), lines) for name, lines in ETC.items()), (PATHS.init, init)], "files",
        mkdirs=(PATHS.upper, PATHS.work, PATHS.rootfs),
        undo=cmd("rm", "-rf", "--one-file-system", str(PATHS.dir), note="files"))
    (cgroups,) = cgroup_plans.create(runtime("v1", "db.1").cgroups, ID, CONFIGS["limits"].limits)
    # without a network, the namespace in the same script: one process wrapdock starts for all of it
    assert first.argv == ("sh", "-s") and first.partial
    assert first.stdin == ("set -e", *files.stdin[1:], *cgroups.stdin[1:], "ip netns add db.1",
                           "ip -n db.1 link set dev lo up")
    assert "; cgroup v1: the container's cgroups and limits; network namespace db.1 " in first.note
    # undone in reverse, each line guarded (it may have stopped half-way): the namespace, the cgroups,
    # then the directory
    assert first.undo is not None and first.undo.argv == ("sh", "-s")
    assert cgroups.undo is not None
    assert first.undo.stdin == ("set -e", "[ ! -e /run/netns/db.1 ] || ip netns del db.1", *cgroups.undo.stdin[1:],
                                f"rm -rf --one-file-system {PATHS.dir}")
    assert len(steps) == 1
    # no /etc files (privileged case): the directory and init.sh only
    bare = plans.prepare(CONFIGS["privileged"], PATHS, runtime("v2", "root"), {}, []).steps[0]
    assert [c for c in script_commands(bare) if c.startswith("printf")] == [
        f"printf '%s\\n' \\ > {PATHS.init}"]


def test_prepare_and_remove_carried_out_against_a_fake_tree(tmp_path: Path) -> None:
    """prepare's file and cgroup scripts, then remove's cleanup, for real under tmp_path (no netns)."""
    paths = ContainerPaths(tmp_path / "data" / "containers" / ID)
    layout = CgroupLayout(1, fake_cgroup_root(tmp_path, 1), "wd", ("memory", "cpu", "cpuset", "pids"))
    rt = Runtime("/bin/busybox", layout, (str(IMAGE_ROOTFS),), None)
    prepared = plans.prepare(CONFIGS["limits"], paths, rt, ETC, []).steps
    carry_out(prepared)
    assert all(d.is_dir() for d in (paths.upper, paths.work, paths.rootfs, *layout.dirs(ID).values()))
    for name, lines in ETC.items():
        assert paths.etc_file(name).read_text() == "".join(line + "\n" for line in lines)
    assert paths.init.read_text() == "".join(
        line + "\n" for line in plans.init_script(CONFIGS["limits"], paths, rt, tuple(ETC)))
    (paths.upper / "written by the workload").write_text("x")
    as_cgroupfs_would(layout)
    (cleanup,) = plans.remove(CONFIGS["limits"], paths, rt, False, [], []).steps
    carry_out([cleanup])
    assert not paths.dir.exists()
    assert not any(d.exists() for d in layout.dirs(ID).values())
    assert all(d.is_dir() for d in layout.parent_dirs().values())
    assert paths.dir.parent.is_dir()
    carry_out([cleanup])  # a second rm (after a failed one) finds everything gone and succeeds


def test_a_shared_hosts_file_is_written_once_and_linked_into_each_containers_etc_directory(tmp_path: Path) -> None:
    """Two containers of one group: one inode, reached through each one's etc directory; the first one's
    undo removes the group's file, a later one's undo writes back what the group had."""
    group = tmp_path / "data" / "hosts" / "g"
    first, second = (ContainerPaths(tmp_path / "data" / "containers" / name) for name in ("a", "b"))
    for paths, lines, undo in ((first, ["one"], plans.write_files([], "h", remove=(group,))),
                               (second, ["one", "two"], plans.write_files([(group, ["one"])], "h"))):
        step = plans.write_files([(group, lines)], "h", mkdirs=(group.parent, paths.etc_dir),
                                 links=((group, paths.hosts),), undo=undo)
        carry_out([step])
    assert first.hosts.stat().st_ino == second.hosts.stat().st_ino == group.stat().st_ino
    assert first.hosts.read_text() == "one\ntwo\n" and group.stat().st_nlink == 3
    carry_out([plans.write_files([(group, ["one"])], "h")])  # the undo of the second: in place, both see it
    assert second.hosts.read_text() == "one\n"
    carry_out([plans.write_files([], "h", remove=(group,))])
    assert not group.exists() and first.hosts.read_text() == "one\n"


def test_init_binds_a_shared_hosts_file_read_only_through_its_etc_directory() -> None:
    shared = plans.init_script(CONFIGS["plain"], PATHS, runtime("v2"), tuple(ETC), hosts="shared")
    own = plans.init_script(CONFIGS["plain"], PATHS, runtime("v2"), tuple(ETC), hosts="own")
    assert [line for line in shared if ".wrapdock" in line and "oldroot" not in line] == [
        "mkdir -p dev/.wrapdock", f"mount --bind {PATHS.etc_dir} dev/.wrapdock",
        "mount -o remount,bind,ro,nosuid,nodev,noexec dev/.wrapdock dev/.wrapdock",
        "mount --bind dev/.wrapdock/hosts etc/hosts"]
    assert f"mount --bind {PATHS.hosts} etc/hosts" in own
    assert not [line for line in own if "dev/.wrapdock" in line]
    bare = plans.init_script(CONFIGS["plain"], PATHS, runtime("v2"), ())
    assert not [line for line in bare if "etc/hosts" in line and not line.startswith("#")]


def test_rebinding_a_running_containers_hosts_swaps_its_mount_then_renames_the_link() -> None:
    step = plans.rebind_hosts("web", 4242, PATHS, "/d/hosts/new", "/d/hosts/old", "/usr/bin/busybox")
    tool = "/proc/self/fd/9/busybox"
    assert step.stdin == (
        "set -e", f"ln -f /d/hosts/new {PATHS.etc_dir}/.hosts-next", "exec 9</usr/bin",
        f"nsenter -t 4242 -m -p -r {tool} sh -c '\"$0\" umount /etc/hosts && \"$0\" mount --bind "
        f"/dev/.wrapdock/.hosts-next /etc/hosts' {tool}",
        f"mv -f {PATHS.etc_dir}/.hosts-next {PATHS.hosts}")
    assert step.undo is not None and step.undo.stdin[1] == f"ln -f /d/hosts/old {PATHS.etc_dir}/.hosts-next"
    stopped = plans.rebind_hosts("web", None, PATHS, "/d/hosts/new", "/d/hosts/old", "/usr/bin/busybox")
    assert not [line for line in stopped.stdin if "nsenter" in line]


# -- a container on networks: the namespace comes with the first host batch ------------------------
def test_prepare_on_a_network_makes_the_namespace_in_the_first_host_batch() -> None:
    steps = plans.prepare(CONFIGS["plain"], PATHS, runtime("v2"), ETC, network_steps()).steps
    (script,) = steps  # one process: the files, the cgroups and the networks' batches
    parts = inlined(script)
    assert not any(s.argv[:3] == ("ip", "netns", "add") for s in parts)
    assert not any("lo" in s.argv and "up" in s.argv for s in parts)  # lo comes up in the inside batch
    assert script.argv == ("sh", "-s") and "cgroup v2" in script.note and script.partial
    host0, inside0, publish, host1, inside1 = [s for s in parts if s.argv[0] != "sh"]
    veth0, veth1 = VETHS
    # the first network: namespace, veth, bridge, hairpin, no IPv6 address, up
    assert host0.argv == ("ip", "-batch", "-")
    assert list(host0.stdin) == [
        "netns add web",
        f"link add name {veth0} mtu 1400 type veth peer name eth0 mtu 1400 netns web",
        f"link set dev {veth0} master front",
        f"link set dev {veth0} type bridge_slave hairpin on",
        f"link set dev {veth0} addrgenmode none",
        f"link set dev {veth0} up"]
    assert inside0.argv == ("nsenter", "--net=/run/netns/web", "ip", "-batch", "-")
    assert list(inside0.stdin) == ["link set dev lo up", "link set dev eth0 addrgenmode none",
                                   "addr add 10.20.0.2/24 dev eth0", "link set dev eth0 up",
                                   "route add default via 10.20.0.1"]
    assert publish.argv[0] == "iptables-restore"
    # the second: the namespace exists already; no lo, no default route
    assert list(host1.stdin) == [
        f"link add name {veth1} type veth peer name eth1 netns web", f"link set dev {veth1} master back",
        f"link set dev {veth1} type bridge_slave hairpin on", f"link set dev {veth1} addrgenmode none",
        f"link set dev {veth1} up"]
    assert list(inside1.stdin) == ["link set dev eth1 addrgenmode none", "addr add 10.30.0.5/24 dev eth1",
                                   "link set dev eth1 up"]
    # the steps it is made of, each with its undo: guarded, so that a script stopped anywhere undoes
    h0, i0, _, h1, _ = network_steps()
    assert h0.partial and h0.undo is not None and h0.undo.argv == ("sh", "-s")
    assert list(h0.undo.stdin) == ["set -e", f"[ ! -e /sys/class/net/{veth0} ] || ip link del dev {veth0}",
                                   "[ ! -e /run/netns/web ] || ip netns del web"]
    assert i0.undo is None
    assert h1.undo is not None and list(h1.undo.stdin) == [
        "set -e", f"[ ! -e /sys/class/net/{veth1} ] || ip link del dev {veth1}"]


def test_a_network_step_with_a_probe_stays_a_step_of_its_own() -> None:
    probed = cmd("ip", "-n", "web", "route", "replace", "default", "via", "10.20.0.1", note="route",
                 only_if=("test", "-e", "/run/netns/web"))
    steps = plans.prepare(CONFIGS["plain"], PATHS, runtime("v2"), ETC, [*network_steps(), probed]).steps
    assert steps[0].argv == ("sh", "-s") and steps[1:] == [*network_steps(), probed]


def test_attach_without_create_netns_is_what_connect_uses() -> None:
    host, inside = endpoint_plans.attach(ATTACHMENTS[0], "web", "web", kernel_ipv6=True)
    created_host, created_inside = endpoint_plans.attach(ATTACHMENTS[0], "web", "web", create_netns=True,
                                                         kernel_ipv6=True)
    assert created_host.stdin == ("netns add web", *host.stdin)
    assert created_inside.stdin == ("link set dev lo up", *inside.stdin)
    assert "network namespace web" in created_host.note and "network namespace" not in host.note


def test_the_container_interface_gets_no_ipv6_link_local_address_where_the_kernel_has_ipv6() -> None:
    """Before it is up: else its IPv6 chatter is flooded to every port of the bridge. A kernel without
    IPv6 has no addrgenmode (the batch would fail)."""
    _, inside = endpoint_plans.attach(ATTACHMENTS[0], "web", "web", kernel_ipv6=True)
    assert inside.stdin.index("link set dev eth0 addrgenmode none") < inside.stdin.index("link set dev eth0 up")
    _, without = endpoint_plans.attach(ATTACHMENTS[0], "web", "web", kernel_ipv6=False)
    assert not any("addrgenmode" in line for line in without.stdin)
    assert [line for line in inside.stdin if "addrgenmode" not in line] == list(without.stdin)


def test_the_host_end_gets_no_ipv6_address_either_where_the_kernel_has_ipv6() -> None:
    """A bridge port's address and its routes are walked by the kernel whenever an interface goes down
    (next to 1000 containers, ~3 ms an rm); in the same batch, before it is up."""
    veth = ATTACHMENTS[0].host_ifname
    host, _ = endpoint_plans.attach(ATTACHMENTS[0], "web", "web", kernel_ipv6=True)
    assert host.argv == ("ip", "-batch", "-")
    assert host.stdin.index(f"link set dev {veth} addrgenmode none") < host.stdin.index(f"link set dev {veth} up")
    without, _ = endpoint_plans.attach(ATTACHMENTS[0], "web", "web", kernel_ipv6=False)
    assert [line for line in host.stdin if "addrgenmode" not in line] == list(without.stdin)


def test_hairpin_masquerade_is_only_for_dnated_connections() -> None:
    (publish,) = [s for s in network_steps() if s.argv[0] == "iptables-restore"]
    masquerades = [line for line in publish.stdin if "MASQUERADE" in line]
    assert len(masquerades) == len(PORTS)
    for line, port in zip(masquerades, PORTS, strict=True):
        assert (f"-o front -p {port.proto} --dport {port.container_port} -m conntrack --ctstate DNAT "
                f"-m comment --comment {endpoint_plans.container_comment(ID)} -j MASQUERADE") in line, line
    # undone by the owner comment: nothing to delete (and no failure) if the batch never ran
    assert publish.undo is not None and publish.undo.argv == endpoint_plans.unpublish(ID, "web", [])[0].argv


def test_a_failing_prepare_script_runs_every_undo_last_first_in_one_script() -> None:
    """The script may stop anywhere: its undo is every part's undo, last first, each guarded or
    idempotent (the ports by their owner comment, the veths and the namespace behind tests, rmdir
    and rm -rf of what may be missing)."""
    (script,) = plans.prepare(CONFIGS["plain"], PATHS, runtime("v1"), ETC, network_steps()).steps
    host = FakeHost()

    def execute(argv, stdin):  # the script fails (after some of it ran); its undo runs
        result = host(argv, stdin)
        return replace(result, exit_code=1, stderr="boom") if len(host.calls) == 1 else result

    with pytest.raises(OperationFailed, match="rolled back 1 step"):
        Runner(Trail("quiet"), execute=execute).apply(Plan("run", [script]))
    (undo_call,) = host.calls[1:]
    undo = undo_call[1].rstrip("\n").split("\n")
    veth0, veth1 = VETHS
    cgroup_dirs = [str(d) for d in LAYOUTS["v1"].dirs(ID).values()]
    assert undo[:5] == ["set -e", f"[ ! -e /sys/class/net/{veth1} ] || ip link del dev {veth1}",  # the 2nd network
                        shlex.join(endpoint_plans.unpublish(ID, "web", [])[0].argv),  # the 1st's ports
                        f"[ ! -e /sys/class/net/{veth0} ] || ip link del dev {veth0}",  # the 1st, its netns
                        "[ ! -e /run/netns/web ] || ip netns del web"]
    assert undo[5:-1] == [f"[ ! -d {d} ] || rmdir {d}" for d in cgroup_dirs]  # the cgroups
    assert undo[-1] == f"rm -rf --one-file-system {PATHS.dir}"  # the directory last


# -- --print-only scripts of container plans -------------------------------------------------------
def container_plans(config: str, layout: str, kind: str) -> list[Plan]:
    netns = None if kind == "host" else CONFIGS[config].name
    steps = network_steps(netns or "", CONFIGS[config].name) if kind == "bridge" else []
    rt = runtime(layout, netns)
    run = plans.prepare(CONFIGS[config], PATHS, rt, ETC, steps)
    run.extend(plans.start_detached(CONFIGS[config], PATHS, rt, tty=config == "limits"))
    withdraw = endpoint_plans.unpublish(ID, CONFIGS[config].name, PORTS) if kind == "bridge" else []
    return [run, plans.stop(CONFIGS[config].name, 4242, PATHS, 3),
            plans.remove(CONFIGS[config], PATHS, rt, True, withdraw, VETHS if kind == "bridge" else [])]


@pytest.mark.parametrize(("config", "layout", "kind"), [
    ("plain", "v2", "bridge"), ("limits", "v1", "none"), ("dropall", "v1swap", "host"), ("privileged", "v2", "none")])
def test_print_only_script_of_a_container_passes_shellcheck(config: str, layout: str, kind: str,
                                                            tmp_path: Path) -> None:
    script = render_script(container_plans(config, layout, kind), ["run", "-d", "--name", CONFIGS[config].name,
                                                                   "busybox", *CONFIGS[config].command])
    assert "# shellcheck disable=SC2016" in script.splitlines()
    path = tmp_path / "container.sh"
    path.write_text(script)
    shellcheck(path)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("config", "layout", "kind"), [
    ("plain", "v2", "bridge"), ("limits", "v1", "bridge"), ("dropall", "v1swap", "host")])
def test_every_sh_script_of_a_container_plan_is_valid_sh(config: str, layout: str, kind: str,
                                                         tmp_path: Path) -> None:
    """The scripts `sh -s` reads (files, cgroups, cleanup, undos) parse with sh and pass shellcheck -s sh."""
    steps = [s for plan in container_plans(config, layout, kind) for s in plan.steps]
    scripts = [s for step in steps for s in (step, step.undo) if s is not None and s.argv == ("sh", "-s")]
    assert len(scripts) >= 3
    for number, step in enumerate(scripts):
        path = tmp_path / f"script{number}.sh"
        path.write_text("\n".join(step.stdin) + "\n")
        done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (step.note, done.stderr)
        if shutil.which("shellcheck"):
            # SC2016: a file's lines are data, single-quoted on purpose ($ in them must stay a $)
            done = subprocess.run(["shellcheck", "-s", "sh", "-e", "SC2016", str(path)], capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, (step.note, done.stdout)


def test_work_that_need_not_wait_for_the_init_runs_between_the_start_and_the_wait() -> None:
    """One script: the start (after its mark), the neighbours' /etc/hosts, the wait; undone by the
    neighbours' undos, then the kill, which waits for the init only if the mark was written."""
    neighbours = plans.write_files([("/x/hosts", ["127.0.0.1\tlocalhost"])], "/etc/hosts of 1 container(s) on web",
                                   undo=cmd("sh", "-s", note="restore", stdin=["set -e", ": > /x/hosts"]))
    (step,) = plans.start_detached(CONFIGS["plain"], PATHS, runtime("v1"), meanwhile=[neighbours])
    parts = inlined(step)
    assert [p.argv[0] for p in parts] == ["sh"] and step.partial
    lines = script_lines(step)
    mark, start = lines[:2]
    assert mark == f": > {PATHS.starting}" and start.startswith("setsid -f sh -c ")
    assert lines[2:-1] == script_lines(neighbours)
    assert lines[-1].startswith("sh -c 'n=0; until [ -e \"$1\" ]") and "wait until" in step.note
    assert step.undo is not None
    restore, kill = script_lines(step.undo)
    assert restore == ": > /x/hosts"
    words = shlex.split(kill)
    assert words[2].startswith('[ -e "$4" ] || exit 0; ') and words[-1] == str(PATHS.starting)
    again = plans.start_detached(CONFIGS["plain"], PATHS, runtime("v1"), again=True, meanwhile=[neighbours])
    (restart,) = again
    assert script_lines(restart)[0] == "rm -f " + " ".join(map(str, PATHS.runtime_files()))
    assert str(PATHS.starting) in script_lines(restart)[0] and script_lines(restart)[1:] == lines
    # a step that cannot be a line of a script (a verdict on its output): separate steps, as before
    claim = cmd("etcdctl", "txn", note="claim", answers="SUCCESS")
    apart = plans.start_detached(CONFIGS["plain"], PATHS, runtime("v1"), meanwhile=[claim])
    assert [s.argv[0] for s in apart] == ["sh", "setsid", "etcdctl", "sh"] and apart[2] is claim


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


@pytest.mark.parametrize("tty", [False, True], ids=["notty", "tty"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_init_script_is_valid_shell_with_everything_filled(config: str, layout: str, tty: bool,
                                                           tmp_path: Path) -> None:
    lines = plans.init_script(CONFIGS[config], PATHS, runtime(layout), tuple(ETC), tty)
    text = "\n".join(lines) + "\n"
    assert "{{" not in text and "}}" not in text
    script = tmp_path / "init.sh"
    script.write_text(text)
    shell = shutil.which("busybox")
    argv = [shell, "sh", "-n", str(script)] if shell else ["sh", "-n", str(script)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # it joins every cgroup of the container in a background group started before the root filesystem
    # is built, and waits for it (failing if it failed) before pivot_root and the workload
    joins = [line for line in lines if line.endswith("/cgroup.procs")]
    assert joins == cgroup_plans.join_commands(LAYOUTS[layout], ID)
    start = lines.index("{")
    assert lines[start + 1:start + 1 + len(joins)] == joins
    assert lines[start + 1 + len(joins):start + 3 + len(joins)] == ["} &", "cgroup_join=$!"]
    assert start < next(i for i, line in enumerate(lines) if line.startswith("mount -t overlay"))
    assert lines.index('wait "$cgroup_join"') == lines.index("pivot_root . .wrapdock-oldroot") - 3
    workload = {"privileged": '"$@"', "sysadmin": '"$@"',
                "dropall": 'setpriv --inh-caps -sys_admin,-mknod,-dac_override -- "$@"'}.get(
        config, 'setpriv --inh-caps -sys_admin -- "$@"')
    # -t: the workload leads a session on the pty; setsid -c steals it, which needs SYS_ADMIN: before the drop
    assert lines[-1] == (f"exec setsid -c {workload}" if tty else f"exec {workload}")
    devpts = [line for line in lines if line.startswith("mount") and " dev/pts" in line]
    assert len(devpts) == 1
    assert devpts[0].startswith("mount --bind /dev/pts dev/pts" if tty else "mount -t devpts -o newinstance,")


@pytest.mark.parametrize("interactive", [True, False], ids=["it", "t"])
def test_a_tty_chain_runs_the_container_under_script_on_its_own_devpts(interactive: bool) -> None:
    config = CONFIGS["limits"]
    chain = plans.start_chain(config, PATHS, runtime("v2", "db.1"), tty=True, interactive=interactive)
    plain = plans.start_chain(config, PATHS, runtime("v2", "db.1"), tty=False)
    shim_at = chain.index("wrapdock-tty")
    # script and what comes before it see only PATH (a -e SHELL=... cannot choose script's shell) ...
    assert chain[:3] == ["env", "-i", f"PATH={DEFAULT_PATH}"]
    assert not set(plans.environment(config, True)[1:]) & set(chain[:shim_at])
    # ... in a mount namespace of their own, where a new devpts instance is /dev/pts
    assert chain[shim_at - 7:shim_at - 2] == ["unshare", "--mount", "--propagation", "private", "sh"]
    shim = chain[shim_at - 1].split("; ")
    assert "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 wrapdock-pts /dev/pts" in shim
    assert shim[-1] == 'exec script --quiet --return --command "$1" /dev/null'
    # script runs the very chain a container without -t has, with its environment and TERM
    inner = shlex.split(chain[shim_at + 1])
    assert inner[:2 + len(plans.environment(config, True))] == ["env", "-i", *plans.environment(config, True)]
    assert inner[inner.index("/bin/busybox"):] == plain[plain.index("/bin/busybox"):]
    # -t without -i: a FIFO nobody writes to is script's input (never an end of file, never a key)
    if interactive:
        assert len(chain) == shim_at + 2 and "exec <>" not in chain[shim_at - 1]
    else:
        assert chain[shim_at + 2:] == [str(PATHS.tty_input)]
        assert shim.index('exec <>"$2"') < shim.index(shim[-1])


def test_exec_on_a_tty_reaches_the_containers_devpts_through_proc() -> None:
    plain = plans.exec_step(CONFIGS["plain"], 4242, EXEC_ENV, ["sh"], LAYOUTS["v1"])
    step = plans.exec_step(CONFIGS["plain"], 4242, EXEC_ENV, ["sh"], LAYOUTS["v1"], tty=True)
    shim_at = step.argv.index("wrapdock-tty")
    shim = step.argv[shim_at - 1].split("; ")
    assert "ln -s /proc/4242/root/dev/pts /dev/pts" in shim and "ln -s pts/ptmx /dev/ptmx" in shim
    assert shlex.split(step.argv[shim_at + 1]) == list(plain.argv)


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


def run_script(step: Step) -> subprocess.CompletedProcess[str]:
    """Run an `sh -s` step as the runner does: its argv, its lines on stdin."""
    assert step.argv == ("sh", "-s") and step.stdin and not step.skip_if and not step.only_if, step
    return subprocess.run(step.argv, input="\n".join(step.stdin) + "\n", capture_output=True, text=True,
                          timeout=30)


def carry_out(steps: list[Step]) -> None:
    for step in steps:
        done = run_script(step)
        assert done.returncode == 0, (step.stdin, done.stderr)


def cgroup_step(layout: CgroupLayout, limits: Limits, container_id: str = ID) -> Step:
    """create()'s one step: a set -e script that may stop half-way (partial), undone by remove()'s script."""
    (step,) = cgroup_plans.create(layout, container_id, limits)
    assert step.argv == ("sh", "-s") and step.stdin[0] == "set -e"
    assert step.partial
    assert [step.undo] == cgroup_plans.remove(layout, container_id)
    return step


def as_cgroupfs_would(layout: CgroupLayout, container_id: str = ID) -> None:
    """cgroupfs removes a cgroup's files with its directory; a plain directory needs them gone first."""
    for directory in layout.dirs(container_id).values():
        for path in directory.iterdir():
            path.unlink()


def read(path: Path) -> str:
    return path.read_text().strip()


LIMITS = Limits(memory=64 * MiB, cpus=1.5, cpu_shares=1024, cpuset_cpus="1-2", pids=20)


@pytest.mark.parametrize("swap", [False, True])
def test_cgroup_v1_limits_are_written(tmp_path: Path, swap: bool) -> None:
    root = fake_cgroup_root(tmp_path, 1)
    layout = CgroupLayout(1, root, "wd", ("memory", "cpu", "cpuset", "pids"), swap_accounting=swap)
    carry_out([cgroup_step(layout, LIMITS)])
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
    step = cgroup_step(layout, Limits())
    assert all(line.startswith("mkdir -p ") for line in script_lines(step))
    carry_out([step])
    assert sorted(p.name for p in (root / "memory" / "wd" / ID).iterdir()) == []
    carry_out([cgroup_step(layout, Limits(pids=-1), "x" * 64)])
    assert read(root / "pids" / "wd" / ("x" * 64) / "pids.max") == "max"
    # a controller that is not mounted gets no directory and no limit
    assert not (root / "cpu" / "wd").exists()


def test_cgroup_v2_limits_and_controllers(tmp_path: Path) -> None:
    root = fake_cgroup_root(tmp_path, 2)
    layout = CgroupLayout(2, root, "wd", ("cpuset", "cpu", "io", "memory", "pids"))
    step = cgroup_step(layout, LIMITS)
    carry_out([step])
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
    lines = script_lines(step)
    subtree = max(i for i, line in enumerate(lines) if "cgroup.subtree_control" in line)
    assert subtree < lines.index(f"mkdir -p {d}")


def test_cgroup_v2_enables_only_the_controllers_it_has(tmp_path: Path) -> None:
    root = fake_cgroup_root(tmp_path, 2)
    layout = CgroupLayout(2, root, "wd", ("memory", "io", "pids"))
    carry_out([cgroup_step(layout, Limits(memory=8 * MiB))])
    assert read(root / "wd" / "cgroup.subtree_control") == "+memory +pids"
    assert read(root / "wd" / ID / "memory.max") == str(8 * MiB)


@pytest.mark.parametrize(("shares", "weight"), [(2, "1"), (1024, "39"), (262144, "10000")])
def test_cgroup_v2_cpu_shares_to_weight(shares: int, weight: str) -> None:
    lines = script_lines(cgroup_step(LAYOUTS["v2"], Limits(cpu_shares=shares)))
    assert f"echo {weight} > {CGROUP_ROOT}/wrapdock/{ID}/cpu.weight" in lines


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cgroup_remove_and_join(layout: str) -> None:
    dirs = LAYOUTS[layout].dirs(ID)
    (removed,) = cgroup_plans.remove(LAYOUTS[layout], ID)
    assert removed.argv == ("sh", "-s") and not removed.only_if
    assert list(removed.stdin) == ["set -e", *(f"[ ! -d {p} ] || rmdir {p}" for p in dirs.values())]
    assert cgroup_plans.join_commands(LAYOUTS[layout], ID, "4242") == [
        f"[ ! -d {p} ] || echo 4242 > {p}/cgroup.procs" for p in dirs.values()]


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_remove_takes_them_away_and_skips_what_is_gone(tmp_path: Path, version: int) -> None:
    root = fake_cgroup_root(tmp_path, version)
    layout = CgroupLayout(version, root, "wd", ("memory", "cpu", "cpuset", "pids"))
    carry_out([cgroup_step(layout, LIMITS)])
    as_cgroupfs_would(layout)
    dirs = list(layout.dirs(ID).values())
    dirs[0].rmdir()  # a remove that failed half-way: the next one finishes it
    carry_out(cgroup_plans.remove(layout, ID))
    assert not any(d.exists() for d in dirs)
    assert all(d.is_dir() for d in layout.parent_dirs().values())  # the other containers' parent stays
    carry_out(cgroup_plans.remove(layout, ID))  # all gone: nothing to do, no error


def test_cgroup_create_that_fails_half_way_is_undone_by_its_undo(tmp_path: Path) -> None:
    root = fake_cgroup_root(tmp_path, 1)
    (root / "cpuset" / "cpuset.mems").unlink()  # the copy of mems into the new cpuset fails
    layout = CgroupLayout(1, root, "wd", ("memory", "cpu", "cpuset", "pids"))
    step = cgroup_step(layout, LIMITS)
    done = run_script(step)
    assert done.returncode != 0
    made = layout.dirs(ID)
    assert all(d.is_dir() for d in made.values())  # one mkdir for all; it did stop half-way...
    assert not (made["memory"] / "memory.limit_in_bytes").exists()  # (set -e)
    assert step.undo is not None
    carry_out([step.undo])  # ...and its own undo takes away what it made, skipping the rest
    assert not any(d.exists() for d in made.values())


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
    # as Docker's OOMKilled, the count says how a container ended: it is not read while it runs
    assert (state.state, state.oom_kills) == ("running", 0)


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
