"""Which commands start, stop, exec into and remove a container, in which order.

A container is: a directory with its own layer (DATA_DIR/containers/ID), a named network namespace
(`ip netns exec NAME` works on the host), cgroups, and a process started as

  env -i ENV  nsenter --net=/run/netns/NAME  [setpriv --inh-caps  setpriv --bounding-set]
      busybox unshare --fork --pid --mount --uts --ipc  busybox sh init.sh  WORKLOAD...

busybox's unshare, not util-linux's: when the workload dies of SIGKILL (OOM, stop), util-linux 2.38
reports exit 1 ("sigprocmask unblock failed") where busybox passes on the signal (exit 137).

init.sh (templates/container-init.sh.tmpl, written into the container directory by a step, so it
shows in the trail and in --print-only scripts) builds the root filesystem and pivots into it.

-t: the same chain runs under util-linux `script` (on_a_pty; Debian's busybox-static has no script
applet), which allocates the pty from a devpts instance that the init then makes the container's
/dev/pts, so `tty` inside names a /dev/pts/N that exists there.

Capabilities: the workload gets Docker's default set. The bounding set is cut before the init runs;
the init itself still needs CAP_SYS_ADMIN to mount and pivot_root, so that one is passed through the
inheritable set, and the init's last act (`setpriv --inh-caps -sys_admin`) removes it before exec.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wrapdock import resources
from wrapdock.cgroups import CgroupLayout
from wrapdock.containerpaths import ContainerPaths as ContainerPaths  # where a container's files are
from wrapdock.containerspec import DEFAULT_PATH, ContainerConfig
from wrapdock.plan import INLINE_END, Plan, Step, cmd, inlinable, inline, one_script, script_lines
from wrapdock.plans import cgroups as cgroup_plans
from wrapdock.shell import HEREDOC_END

# what the init needs beyond the container's own set: SYS_ADMIN (namespaces, mounts, pivot_root,
# hostname), MKNOD (/dev nodes) and DAC_OVERRIDE (overlayfs's work dir); exec needs SYS_ADMIN
HELPER_CAPS = ("sys_admin", "mknod", "dac_override")


@dataclass(frozen=True)
class Runtime:
    """Host facts the plans need: where busybox is, the cgroup layout, the image's layer directories."""

    busybox: str
    cgroups: CgroupLayout
    lowerdirs: tuple[str, ...]  # the image's layers for overlayfs, topmost first
    netns: str | None  # None: --net host, the host's own network namespace


def _q(word: str | Path) -> str:
    return shlex.quote(str(word))


def _cap_wrappers(config: ContainerConfig, extra: tuple[str, ...] = ()) -> tuple[list[str], list[str], str]:
    """(outer setpriv words, inner words after entering, what the init's last line execs)."""
    if config.privileged:
        return [], [], '"$@"'
    bounding = "--bounding-set=-all" + "".join(f",+{c}" for c in config.caps)
    helpers = [c for c in (*HELPER_CAPS, *extra) if c not in config.caps]
    if not helpers:
        return ["setpriv", bounding], [], '"$@"'
    outer = ["setpriv", "--inh-caps=" + ",".join(f"+{c}" for c in helpers), "setpriv", bounding]
    drop_list = ",".join(f"-{c}" for c in helpers)
    return outer, ["setpriv", "--inh-caps", drop_list, "--"], f'setpriv --inh-caps {drop_list} -- "$@"'


DEVPTS_OPTIONS = "newinstance,ptmxmode=0666,mode=0620"
# where a container on a shared /etc/hosts sees its etc directory (read-only; a tmpfs of wrapdock's,
# so nothing lands in the container's layer), as LXD injects mounts through /dev/.lxd-mounts
HOSTS_DIR_IN_CONTAINER = "/dev/.wrapdock"


def on_a_pty(inner: list[str], devpts_setup: list[str], no_input: Path | None) -> list[str]:
    """Run `inner` on a new pseudo-terminal of the container's own devpts instance (`-t`).

    util-linux `script` (`--return`: the child's exit code) opens /dev/ptmx, forks, makes the pty's
    slave the controlling terminal of a new session and relays it to its own stdin/stdout; on a
    terminal it copies its size and attributes, puts it in raw mode (so a typed ^C reaches the
    container's line discipline) and follows SIGWINCH. It allocates from the devpts that the
    /dev/ptmx it opens belongs to, so it runs in a mount namespace of its own where `devpts_setup`
    makes /dev/ptmx the container's. `no_input` (-t without -i, or detached): a FIFO nobody writes
    to is its input, as Docker gives no input but never an end of file either.
    """
    lines = ["set -e"]
    if no_input is not None:
        lines += ['[ -p "$2" ] || mkfifo -m 600 "$2"', 'exec <>"$2"']
    lines += [*devpts_setup, 'exec script --quiet --return --command "$1" /dev/null']
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "; ".join(lines), "wrapdock-tty",
            shlex.join(inner), *([str(no_input)] if no_input is not None else [])]


def environment(config: ContainerConfig, tty: bool) -> list[str]:
    """Docker's defaults, then the user's -e (later wins with env -i)."""
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={config.hostname}", "HOME=/root"]
    if tty:
        env.append("TERM=xterm")
    return env + list(config.env)


def init_script(config: ContainerConfig, paths: ContainerPaths, runtime: Runtime, etc_files: tuple[str, ...] = (),
                tty: bool = False, hosts: str | None = None) -> list[str]:
    """The init's lines. `hosts`: "own" (a file of its own, writable) or "shared" (its group's file,
    read-only: one container must not change its neighbours' names), see containerpaths.etc_dir.
    `tty`: its /dev/pts is the devpts instance `on_a_pty` mounted (the one its pty comes from), and
    the workload becomes a session leader with that pty as its controlling terminal (busybox
    `setsid -c` steals it from script's session, which needs CAP_SYS_ADMIN: before the drop),
    so a ^C typed reaches only the workload's foreground process group."""
    mounts: list[str] = []
    for volume in config.volumes:
        target = "." + volume.target
        if volume.file:  # a file is bind-mounted onto a file
            mounts.append(f"mkdir -p {_q(str(Path(target).parent))}")
            mounts.append(f"[ -e {_q(target)} ] || touch {_q(target)}")
        else:
            mounts.append(f"mkdir -p {_q(target)}")
        mounts.append(f"mount --bind {_q(volume.source)} {_q(target)}")
        if volume.readonly:  # (busybox keeps the host mount's own flags, read from /proc/mounts)
            mounts.append(f"mount -o remount,bind,ro {_q(target)}")
    sources: dict[str, str] = {}
    if hosts == "own":
        sources["hosts"] = _q(paths.hosts)
    elif hosts == "shared":  # a bind from the read-only directory is read-only too
        mounts += [f"mkdir -p {HOSTS_DIR_IN_CONTAINER[1:]}",
                   f"mount --bind {_q(paths.etc_dir)} {HOSTS_DIR_IN_CONTAINER[1:]}",
                   # (its flags and source named: see the remount of proc/sys in the template)
                   f"mount -o remount,bind,ro,nosuid,nodev,noexec {HOSTS_DIR_IN_CONTAINER[1:]} "
                   f"{HOSTS_DIR_IN_CONTAINER[1:]}"]
        sources["hosts"] = f"{HOSTS_DIR_IN_CONTAINER[1:]}/hosts"
    sources.update((name, _q(paths.etc_file(name))) for name in etc_files)
    for name, source in sources.items():
        target = f"etc/{name}"
        mounts.append(f"[ -e {target} ] || {{ mkdir -p etc; touch {target}; }}")
        mounts.append(f"mount --bind {source} {target}")
    join = cgroup_plans.join_commands(runtime.cgroups, config.id)
    _, _, workload = _cap_wrappers(config)
    if config.user:  # the host busybox's nsenter applet sets the ids: nothing of the image is needed
        uid, gid = config.user.split(":")
        workload = workload.replace('"$@"', f'nsenter -S {uid} -G {gid} -- "$@"')
    if tty:
        devpts = "mount --bind /dev/pts dev/pts  # the devpts instance the terminal (-t) was allocated from"
    else:
        devpts = f"mount -t devpts -o {DEVPTS_OPTIONS} devpts dev/pts"
    text = resources.fill(resources.template("container-init.sh.tmpl"), {
        "name": config.name,
        "id": config.id,
        "pidfile": _q(paths.pidfile),
        "statfile": _q(paths.statfile),
        "cgroup_join": "\n".join(join) or ":",
        "overlay_source": _q(f"wrapdock-{config.id[:12]}"),
        "overlay_options": _q(f"lowerdir={':'.join(runtime.lowerdirs)},upperdir={paths.upper},workdir={paths.work}"),
        "rootfs": _q(paths.rootfs),
        "mounts": "\n".join(mounts) or ":",
        "hostname": _q(config.hostname),
        "workdir": _q(config.workdir),
        "readyfile": _q(paths.ready),
        "devpts": devpts,
        "exec_line": f"exec setsid -c {workload}" if tty else f"exec {workload}",
    })
    return text.rstrip("\n").split("\n")


def start_chain(config: ContainerConfig, paths: ContainerPaths, runtime: Runtime, tty: bool,
                interactive: bool = False) -> list[str]:
    """The container's process chain; with `tty`, its namespaces are made under `script` (on_a_pty),
    whose environment is only PATH: the container's (a -e SHELL=... included) is set after it."""
    outer, _, _ = _cap_wrappers(config)
    enter_net = ["nsenter", f"--net=/run/netns/{runtime.netns}"] if runtime.netns else []
    container = ["env", "-i", *environment(config, tty)]
    namespaces = [runtime.busybox, "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--propagation",
                  "private", runtime.busybox, "sh", str(paths.init), *config.command]
    if not tty:
        return [*container, *enter_net, *outer, *namespaces]
    devpts = [f"mount -t devpts -o {DEVPTS_OPTIONS} wrapdock-pts /dev/pts"]
    return ["env", "-i", f"PATH={DEFAULT_PATH}", *enter_net, *outer,
            *on_a_pty([*container, *namespaces], devpts, None if interactive else paths.tty_input)]


def kill_and_wait(paths: ContainerPaths, note: str, starting: bool = False, netns: str | None = None) -> Step:
    """SIGKILL the container's PID 1 (if it started) and wait until it is gone.

    `starting`: it may have been started a moment ago, so first wait (5 s at most) until its init
    has written its pid and start time, or it has ended; unless the start was never tried (no
    `paths.starting`, which the start script writes first: it may have stopped before).

    `netns` (rm -f): the namespace's name goes first. Its processes keep it alive until the kill, and
    the kernel then takes it and its veths down the moment the last one is gone, in the background,
    while this waits and the next steps run. Deleted later (in the cleanup script), the rm waited for
    that teardown: next to 1000 containers a bridge takes several ms to let a port go.
    """
    script = ('pid=$(cat "$1" 2>/dev/null) || exit 0; kill -s KILL "$pid" 2>/dev/null || exit 0; '
              'while kill -0 "$pid" 2>/dev/null; do sleep 0.002; done')
    args = [str(paths.pidfile)]
    if starting:
        script = ('[ -e "$4" ] || exit 0; '
                  'n=0; while [ ! -e "$2" ] && [ ! -e "$3" ] && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done; '
                  + script)
        args += [str(paths.statfile), str(paths.exitfile), str(paths.starting)]
    if netns is not None:
        path, name = len(args) + 1, len(args) + 2
        script = f'[ ! -e "${path}" ] || ip netns del "${name}" || exit; ' + script
        args += [f"/run/netns/{netns}", netns]
    return cmd("sh", "-c", script, "wrapdock-kill", *args, note=note)


def write_files(files: list[tuple[str | Path, list[str]]], note: str, mkdirs: tuple[str | Path, ...] = (),
                executable: tuple[Path, ...] = (), undo: Step | None = None,
                links: tuple[tuple[str | Path, str | Path], ...] = (), remove: tuple[str | Path, ...] = (),
                verbatim: bool = False) -> Step:
    """One `sh -s` that makes directories, writes files, then makes hard links (`links`: (file, link))
    and removes files (`remove`): one process for all of them.

    Each file is one `printf '%s\\n' CONTENT > FILE`, a shell builtin: no process per file, and the
    file is truncated and written in place, so a bind mount of it (the container's /etc/hosts)
    sees the new content. Files that get the same content (the /etc/hosts of the containers of one
    network) get it once, through one `tee`: the script and the trail grow with the containers,
    not with their square. `verbatim`: CONTENT is the lines as they are, in one quoted word, for
    files of data (/etc/hosts), long, and no line that reads as a command (_printf_lines).
    """
    lines = ["set -e"]
    if mkdirs:
        lines.append("mkdir -p " + " ".join(_q(d) for d in mkdirs))
    same_content: dict[tuple[str, ...], list[str | Path]] = {}
    as_tuple: dict[int, tuple[str, ...]] = {}  # one content list shared by n files is hashed once, not n times
    for path, content in files:
        key = as_tuple.get(id(content))
        if key is None:
            key = as_tuple[id(content)] = tuple(content)
        same_content.setdefault(key, []).append(path)
    for content, paths in same_content.items():
        if not content:
            lines += [f": > {_q(path)}" for path in paths]
            continue
        printf, joined = _printf_lines(content, verbatim)
        if len(paths) == 1:
            redirect = [f"> {_q(paths[0])}"]
        else:
            redirect = ["| tee -- \\", *(f"    {_q(path)} \\" for path in paths), "    > /dev/null"]
        if joined:
            printf[-1] += " " + redirect.pop(0)
        else:
            redirect[0] = "    " + redirect[0]
        lines += [*printf, *redirect]
    if executable:
        lines.append("chmod 755 " + " ".join(_q(p) for p in executable))
    lines += [f"ln -f {_q(source)} {_q(link)}" for source, link in links]
    if remove:
        lines.append("rm -f -- " + " ".join(_q(p) for p in remove))
    return cmd("sh", "-s", note=note, stdin=lines, undo=undo, partial=undo is not None)


def _printf_lines(content: Sequence[str], verbatim: bool) -> tuple[list[str], bool]:
    """The script lines of `printf '%s\\n' CONTENT` and whether its last line takes the redirection.

    A word per line, each quoted and indented (a file's lines that read as shell, the init script's,
    stay apart from the script's own); `verbatim`: the lines as they are, quoted as one word, so the
    trail shows the file as it will read. One quote for the whole file: quoting the /etc/hosts of
    1000 containers line by line took ~1 ms of a start or rm's Python, for the file and its undo's
    copy. A content that holds a here-document's end marker (the trail and the --print-only script
    feed a script through one) gets a word per line whatever `verbatim` says."""
    if verbatim:
        block = "\n".join(content)
        if HEREDOC_END not in block and INLINE_END not in block:
            return f"printf '%s\\n' {shlex.quote(block)}".split("\n"), True
    return ["printf '%s\\n' \\", *(f"    {_q(line)} \\" for line in content)], False


def prepare(config: ContainerConfig, paths: ContainerPaths, runtime: Runtime,
            etc_files: dict[str, list[str]], network_steps: list[Step], tty: bool = False,
            hosts: tuple[str, Step] | None = None) -> Plan:
    """Everything up to (not including) starting the process: directory, files and cgroups, netns, network.

    `hosts`: ("own" or "shared", the `sh -s` step that writes the container's /etc/hosts or its
    group's and links it into the container's etc directory); it runs in the files' script.

    A container on a network gets its namespace from the network steps' host batch; without one,
    `ip netns add` here. The network steps join the same script (each command wrapdock runs itself
    costs ~4-5 ms beyond its own run: a fork of its Python, threads to feed it and read it); every
    undo in it is guarded or idempotent, as a script that stopped half-way needs (`one_script`).
    """
    plan = Plan(f"create container {config.name} ({config.id[:12]})")
    files_note = (f"the container's directory {paths.dir}: its layer, work dir and mount point, init script and "
                  f"/etc files ({', '.join(etc_files) or 'none'})")
    files = [(paths.etc_file(name), lines) for name, lines in etc_files.items()]
    files.append((paths.init, init_script(config, paths, runtime, tuple(etc_files), tty, hosts[0] if hosts else None)))
    files_step = write_files(files, files_note, mkdirs=(paths.upper, paths.work, paths.rootfs),
                             undo=cmd("rm", "-rf", "--one-file-system", str(paths.dir), note=files_note))
    # the directory, the cgroups and (without a network) the namespace in one script: each command
    # wrapdock runs itself costs ~3 ms beyond its own run (a fork of its Python, threads to feed it)
    (cgroup_step,) = cgroup_plans.create(runtime.cgroups, config.id, config.limits)
    steps, notes = [files_step, cgroup_step], [files_note, cgroup_step.note]
    if hosts is not None:
        steps.insert(1, hosts[1])
        notes.insert(1, hosts[1].note)
    if runtime.netns and not network_steps:
        netns = _q(runtime.netns)
        notes.append(f"network namespace {runtime.netns} (ip netns exec {runtime.netns} ... works on the host)")
        steps.append(cmd("sh", "-s", note=notes[-1], stdin=[f"ip netns add {netns}",
                                                              f"ip -n {netns} link set dev lo up"],
                         undo=cmd("sh", "-s", note=notes[-1],
                                  stdin=[f"[ ! -e /run/netns/{netns} ] || ip netns del {netns}"])))
    if not all(inlinable(step) for step in network_steps):  # (none has a probe today: kept apart if one does)
        plan.add(one_script(steps, "; ".join(notes)))
        plan.extend(network_steps)
        return plan
    plan.add(one_script([*steps, *network_steps], "; ".join([*notes, *(step.note for step in network_steps)])))
    return plan


def start_detached(config: ContainerConfig, paths: ContainerPaths, runtime: Runtime, tty: bool = False,
                   again: bool = False, meanwhile: Sequence[Step] = ()) -> list[Step]:
    """Start in the background (output to the log) and wait until the init handed over to the workload.

    `meanwhile` runs between the start and the wait, while the init builds the container's root
    filesystem: work that does not need the container ready (the neighbours' /etc/hosts) costs no time.
    """
    note = f"start {config.name}: its output goes to {paths.log}"
    # the shim first lets go of its starter's stdin/stdout/stderr, so neither wrapdock nor a script
    # piped into something waits for a container that runs for days
    shim = 'log=$1 exitfile=$2; shift 2; exec </dev/null >>"$log" 2>&1; "$@"; echo $? >"$exitfile"'
    start = cmd("setsid", "-f", "sh", "-c", shim, "wrapdock-shim", str(paths.log), str(paths.exitfile),
                *start_chain(config, paths, runtime, tty), note=note, undo=kill_and_wait(paths, note, starting=True))
    wait = ('n=0; until [ -e "$1" ]; do if [ -e "$2" ] || [ $n -ge 2000 ]; then '
            'echo "container did not start:" >&2; tail -n 5 "$3" >&2; exit 1; fi; sleep 0.005; n=$((n+1)); done')
    ready = cmd("sh", "-c", wait, "wrapdock-wait", str(paths.ready), str(paths.exitfile), str(paths.log),
                note=f"wait until {config.name}'s init has handed over to the workload")
    forget = [cmd("rm", "-f", *map(str, paths.runtime_files()), note=note)] if again else []  # an earlier run's
    tried = cmd("sh", "-s", note=note, stdin=["set -e", f": > {_q(paths.starting)}"])  # see kill_and_wait
    steps = [*forget, tried, start, *meanwhile, ready]
    if not all(inlinable(step) for step in steps):  # (an etcdctl claim among the neighbours' steps)
        return steps
    # one process: each command wrapdock runs itself costs ~4-5 ms beyond its own run
    return [one_script(steps, "; ".join(dict.fromkeys(step.note for step in steps)))]


def rebind_hosts(name: str, pid: int | None, paths: ContainerPaths, source: str, old_source: str,
                 busybox: str) -> Step:
    """network connect or disconnect moved a container to another shared /etc/hosts: link that file
    into its etc directory and, while it runs, bind it over /etc/hosts from inside its mount namespace
    (with the host busybox, reached through a descriptor of its directory: the image may have no
    `mount`). The old bind goes first: a mount stacked on it would go with the old file's name (the
    kernel detaches mounts whose mount point is deleted), so for a moment /etc/hosts is the image's, as
    a reader may see a file half-written during any rewrite. The file is linked under a second name
    and renamed to `hosts` (for the next start) once the mount is made: a failure before leaves the
    link as it was. Undone the same way, back to the old file."""
    tool = f"/proc/self/fd/9/{Path(busybox).name}"
    next_link = paths.etc_dir / ".hosts-next"

    def script(file: str) -> list[str]:
        lines = ["set -e", f"ln -f {_q(file)} {_q(next_link)}"]
        if pid is not None:
            swap = f'"$0" umount /etc/hosts && "$0" mount --bind {HOSTS_DIR_IN_CONTAINER}/.hosts-next /etc/hosts'
            lines += [f"exec 9<{_q(str(Path(busybox).parent))}",
                      f"nsenter -t {pid} -m -p -r {tool} sh -c {_q(swap)} {tool}"]
        return [*lines, f"mv -f {_q(next_link)} {_q(paths.hosts)}"]
    note = f"{name}'s /etc/hosts: the file its networks now share"
    return cmd("sh", "-s", note=note, stdin=script(source), undo=cmd("sh", "-s", note=note, stdin=script(old_source)))


def remove_when_done(config: ContainerConfig, paths: ContainerPaths, wrapdock: list[str]) -> Step:
    """-d --rm: a watcher in the background calls `wrapdock rm -f` once the workload has ended."""
    watcher = f"until [ -e {_q(paths.exitfile)} ]; do sleep 0.2; done; exec {shlex.join(wrapdock)} rm -f {config.id}"
    return cmd("setsid", "-f", "sh", "-c", watcher, note=f"remove {config.name} when it exits (--rm)")


def start_attached(config: ContainerConfig, paths: ContainerPaths, runtime: Runtime, tty: bool,
                   again: bool = False, interactive: bool = True) -> list[Step]:
    """Run in the foreground with the terminal; the exit code is the workload's."""
    note = f"run {config.name} in the foreground"
    shim = 'exitfile=$1; shift; "$@"; rc=$?; echo $rc >"$exitfile"; exit $rc'
    forget = [cmd("rm", "-f", *map(str, paths.runtime_files()), note=note)] if again else []
    return [*forget,
            cmd("sh", "-c", shim, "wrapdock-shim", str(paths.exitfile),
                *start_chain(config, paths, runtime, tty, interactive), note=note)]


def stop(name: str, pid: int, paths: ContainerPaths, timeout: int) -> Plan:
    """TERM, then KILL after `timeout` seconds: a PID-namespace init ignores TERM it has no handler for."""
    plan = Plan(f"stop container {name}")
    note = f"stop {name}: SIGTERM, then SIGKILL after {timeout}s"
    plan.add(cmd("kill", "-s", "TERM", str(pid), note=note, only_if=("kill", "-0", str(pid))))
    # then up to 5 s for the shim to note the exit code (it runs at once, unless the machine is loaded)
    script = ('n=0; while kill -0 "$1" 2>/dev/null; do if [ $n -ge "$2" ]; then kill -s KILL "$1" 2>/dev/null; fi; '
              'sleep 0.1; n=$((n+1)); done; n=0; '
              'while [ ! -e "$3" ] && [ $n -lt 250 ]; do sleep 0.02; n=$((n+1)); done')
    plan.add(cmd("sh", "-c", script, "wrapdock-stop", str(pid), str(timeout * 10), str(paths.exitfile), note=note))
    return plan


def remove(config: ContainerConfig, paths: ContainerPaths, runtime: Runtime, running: bool,
           network_steps: list[Step], host_ifnames: list[str], meanwhile: Sequence[Step] = ()) -> Plan:
    """kill (rm -f), withdraw the ports, then one guarded `sh -s` for the namespace, the cgroups, the
    directory and the veths: what is gone already is skipped, so a second rm finishes a failed one.

    The veths go last and mostly by themselves: deleting the namespace deletes its end of each pair,
    which takes the host's end along. The kernel does that in the background, within ~10 ms, from the
    moment the namespace has neither a name nor a process (rm -f deletes the name before the kill:
    kill_and_wait), while the cgroups and the directory go; `ip link del` does the same in the
    foreground in ~25 ms. The script waits for each host end to vanish (at most ~1 s: a process left
    in the namespace keeps it) and deletes what is still there. `meanwhile` (`sh -s` steps: the
    neighbours' /etc/hosts) runs in that script, in the background from right after the namespace
    goes until the end, while the kernel takes the cgroups and the veths down; their undos are the
    script's undo.
    """
    plan = Plan(f"remove container {config.name} ({config.id[:12]})")
    if running:
        plan.add(kill_and_wait(paths, f"kill {config.name} (rm -f)" + (
            ", its network namespace's name gone first" if runtime.netns else ""), netns=runtime.netns))
    plan.extend(network_steps)
    lines = ["set -e"]
    if runtime.netns:
        lines.append(f"[ ! -e {_q(f'/run/netns/{runtime.netns}')} ] || ip netns del {_q(runtime.netns)}")
    if meanwhile:  # in the background, beside the cgroups' rmdir (~10-20 ms each, the kernel's waiting)
        lines += ["{", *(line for step in meanwhile for line in script_lines(step)), "} &", "meanwhile=$!"]
    lines += [f"[ ! -d {_q(d)} ] || rmdir {_q(d)}" for d in runtime.cgroups.dirs(config.id).values()]
    lines.append(f"[ ! -d {_q(paths.dir)} ] || rm -rf --one-file-system {_q(paths.dir)}")
    for name in host_ifnames:
        if runtime.netns:
            lines.append(f"n=0; while [ -e /sys/class/net/{name} ] && [ $n -lt 400 ]; do sleep 0.002; n=$((n+1)); done")
        lines.append(f"[ ! -e /sys/class/net/{name} ] || ip link del dev {name}")
    if meanwhile:
        lines.append('wait "$meanwhile"')  # its failure is the script's (set -e)
    note = "; ".join([f"{config.name}'s interfaces, network namespace, cgroups and directory",
                      *(step.note for step in meanwhile)])
    undos = [step.undo for step in reversed(meanwhile) if step.undo is not None]
    undo = inline(undos, note) if undos else None
    plan.add(cmd("sh", "-s", note=note, stdin=lines, undo=undo, partial=undo is not None))
    return plan


def exec_step(config: ContainerConfig, pid: int, env: list[str], command: list[str],
              cgroups: CgroupLayout, tty: bool = False, no_input: Path | None = None, busybox: str = "/bin/busybox",
              user: str = "") -> Step:
    """Enter every namespace and the root of PID 1, in its cgroups, with its environment and capabilities.

    Nothing of the image is needed (a distroless image has no setpriv): the host's static busybox
    drops the helper capabilities last, reached through a descriptor of its directory that is
    opened before entering (/proc/self/fd/9/busybox) and closed before the command runs. `user`
    (UID:GID): nsenter sets the ids.

    `tty`: on a pty of the container's devpts, reached through /proc/PID/root (a mount of another
    namespace cannot be bind-mounted, but a symlink can lead to it): /dev is a small tmpfs in
    script's mount namespace whose ptmx and pts lead into the container's /dev/pts.
    """
    # a workload that is not root: nsenter needs SYS_PTRACE to open its namespaces, dropped like the others
    not_root = bool(config.user) and not config.user.startswith("0:")
    outer, drop, _ = _cap_wrappers(config, ("sys_ptrace",) if not_root else ())
    join = "; ".join(cgroup_plans.join_commands(cgroups, config.id))
    ids = ["-S", user.split(":")[0], "-G", user.split(":")[1]] if user else []
    tail: list[str] = list(command)
    opens = ""
    if drop:
        opens = f"exec 9<{_q(str(Path(busybox).parent))}; "
        # (busybox sh exports the PWD and SHLVL it sets: not part of the exec'd command's environment)
        tail = [f"/proc/self/fd/9/{Path(busybox).name}", "sh", "-c", 'exec 9<&-; unset PWD SHLVL; exec "$@"',
                "wrapdock-exec",
                *drop, *command]
    prelude = f"{join}; {opens}exec \"$@\"" if join else f'{opens}exec "$@"'
    argv = ["env", "-i", *env, "sh", "-c", prelude, "wrapdock-exec", *outer,
            "nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", *ids, *tail]
    note = f"exec in {config.name}: its namespaces, root, cgroups, environment and capabilities"
    if not tty:
        return cmd(*argv, note=note)
    devpts = ["mount -t tmpfs -o mode=755,size=64k wrapdock-tty /dev", "mknod -m 666 /dev/null c 1 3",
              f"ln -s /proc/{pid}/root/dev/pts /dev/pts", "ln -s pts/ptmx /dev/ptmx"]
    return cmd("env", "-i", f"PATH={DEFAULT_PATH}", *on_a_pty(argv, devpts, no_input),
               note=f"{note}, on a terminal of its own")
