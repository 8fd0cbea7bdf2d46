"""Bad input, across every command, in one table: the documented exit code (2 bad input, 3 broken state,
4 the host cannot), exactly one `wrapdock: error:` line, no traceback - and nothing changed.

Then what must hold for input that is accepted: names that reach the kernel stay within its limits, and
strings that look like shell never run as shell, live or in a `--print-only` script.

The sandbox gets its own /tmp (a tmpfs over it, in its mount namespace only), so a canary an injection
would create lands there and never on the machine; the files the cases use live in the sandbox's /run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.containerlab import container_dirs, processes, wait_for
from tests.integration.reliability import (
    assert_no_leftovers,
    differences,
    fetch,
    mounts,
    ok,
    one_error,
    prepare,
    state_files,
)
from tests.sandbox import Sandbox, wrapdock_argv

pytestmark = pytest.mark.integration

CANARY = "/tmp/CANARY"
QUOTE_SEMICOLON = f"a'b;touch {CANARY}"
SUBSHELL = f"$(touch {CANARY})"
BACKTICKS = f"`touch {CANARY}`"
NOBODY = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")
LABS = "/run/wdlabs"
LAB_PROGRESS = ("==> ",)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str  # in the error line
    setup: str = ""  # bash in the sandbox before, and its undo after
    undo: str = ""
    prefix: tuple[str, ...] = ()  # before the wrapdock argv (e.g. setpriv: not root)

    @property
    def id(self) -> str:
        return shlex.join((*self.prefix[:1], *self.args))


def case(code: int, says: str, *args: str, **more) -> Case:
    return Case(tuple(args), code, says, **more)


# /dev/null (not executable) over every busybox of the sandbox's mount namespace (/bin may be /usr/bin)
BUSYBOXES = "$(realpath -e /bin/busybox /usr/bin/busybox 2>/dev/null | sort -u)"
HIDE_BUSYBOX = f"for f in {BUSYBOXES}; do mount --bind /dev/null $f; done"
SHOW_BUSYBOX = f"for f in {BUSYBOXES}; do umount $f; done"
RUN = ("run", "-d")
TRUE = ("busybox", "true")
LONG = "x" * 65

CASES = [
    # -- network create: subnets, gateways, names, drivers, duplicates ---------------------------------
    case(2, "invalid subnet '10.94.0.0/33'", "network", "create", "--subnet", "10.94.0.0/33", "n1"),
    case(2, "give an address and a prefix length", "network", "create", "--subnet", "10.94.0.0", "n1"),
    case(2, "not an IPv4 address with a prefix length", "network", "create", "--subnet", "300.1.2.0/24", "n1"),
    case(2, "between /8 and /30", "network", "create", "--subnet", "10.94.0.0/31", "n1"),
    case(2, "gateway 10.95.0.1 is not in subnet 10.94.0.0/24", "network", "create", "--subnet", "10.94.0.0/24",
         "--gateway", "10.95.0.1", "n1"),
    case(2, "unknown network driver 'macvlan'", "network", "create", "--driver", "macvlan", "--subnet",
         "10.94.0.0/24", "n1"),
    case(2, "too long for a bridge name", "network", "create", "--subnet", "10.94.0.0/24", "abcdefghijklmnop"),
    case(2, "at most 64", "network", "create", "--subnet", "10.94.0.0/24", "--bridge-name", "n1", LONG),
    case(2, "invalid network name", "network", "create", "--subnet", "10.94.0.0/24", QUOTE_SEMICOLON),
    case(2, "invalid network name", "network", "create", "--subnet", "10.94.0.0/24", SUBSHELL),
    case(2, "invalid network name", "network", "create", "--subnet", "10.94.0.0/24", "a\nb"),
    case(2, "invalid network name", "network", "create", "--subnet", "10.94.0.0/24", "naïve"),
    case(2, "network 'bnet' already exists", "network", "create", "--subnet", "10.94.0.0/24", "bnet"),
    case(2, "overlaps subnet 10.90.0.0/24 of network 'bnet'", "network", "create", "--subnet", "10.90.0.0/16", "n1"),
    # -- network rm / inspect / connect / disconnect ----------------------------------------------------
    case(2, "no such network: ghostnet", "network", "rm", "ghostnet"),
    case(2, "'bnet' still has 1 attached container(s) (c1)", "network", "rm", "bnet"),
    case(2, "no such network: ghostnet", "network", "inspect", "ghostnet"),
    case(2, "no such container: ghost", "network", "connect", "bnet2", "ghost"),
    case(2, "address 10.90.0.50 is not in subnet 10.92.0.0/24", "network", "connect", "--ip", "10.90.0.50", "bnet2",
         "c1"),
    case(2, "container c1 is not connected to network bnet2", "network", "disconnect", "bnet2", "c1"),
    # -- run: addresses, ports, sizes, environment, volumes, names, objects, conflicts --------------------
    case(2, "address 10.99.0.5 is not in subnet 10.90.0.0/24", *RUN, "--net", "bnet", "--ip", "10.99.0.5", *TRUE),
    case(2, "address 10.90.0.1 is the gateway", *RUN, "--net", "bnet", "--ip", "10.90.0.1", *TRUE),
    case(2, "ports go from 1 to 65535", *RUN, "--net", "bnet", "-p", "0:80", *TRUE),
    case(2, "ports go from 1 to 65535", *RUN, "--net", "bnet", "-p", "70000:80", *TRUE),
    case(2, "'b' is not a port", *RUN, "--net", "bnet", "-p", "a:b", *TRUE),
    case(2, "'a' is not a port", *RUN, "--net", "bnet", "-p", "a:80", *TRUE),
    case(2, "expected [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT", *RUN, "--net", "bnet", "-p", "1.2.3.4:1:2:3", *TRUE),
    case(2, "no container port", *RUN, "--net", "bnet", "-p", "8080:", *TRUE),
    case(2, "-p needs the container on a bridge network", *RUN, "-p", "80", *TRUE),
    case(2, "the two ranges differ in length", *RUN, "--net", "bnet", "-p", "8000-8001:80-82", *TRUE),
    case(2, "the protocol must be tcp or udp", *RUN, "--net", "bnet", "-p", "8081:80/sctp", *TRUE),
    case(2, "host port 8090/tcp is already published by container c1", *RUN, "--net", "bnet", "-p", "8090:80",
         *TRUE),
    case(2, "subnet 10.91.0.0/30 is full", *RUN, "--net", "tiny", *TRUE),
    case(2, "invalid memory size '10x'", *RUN, "-m", "10x", *TRUE),
    case(2, "the minimum is 6m", *RUN, "-m", "1k", *TRUE),
    case(2, "invalid environment variable '1X=2'", *RUN, "-e", "1X=2", *TRUE),
    case(2, "invalid environment variable '=x'", *RUN, "-e", "=x", *TRUE),
    case(2, "must be absolute", *RUN, "-v", "relative:/data", *TRUE),
    case(2, "the host path /no/such/dir does not exist", *RUN, "-v", "/no/such/dir:/data", *TRUE),
    case(2, "the mode must be ro or rw", *RUN, "-v", "/run:/data:rx", *TRUE),
    case(2, "at most 64", *RUN, "--name", LONG, *TRUE),
    case(2, "invalid container name", *RUN, "--name", SUBSHELL, *TRUE),
    case(2, "invalid container name", *RUN, "--name", QUOTE_SEMICOLON, *TRUE),
    case(2, "invalid container name", *RUN, "--name", "naïve", *TRUE),
    case(2, "container name 'c1' is already in use", *RUN, "--name", "c1", *TRUE),
    case(2, "no such network: ghostnet", *RUN, "--net", "ghostnet", *TRUE),
    case(2, "executable file not found in image busybox", *RUN, "busybox", "no-such-program"),
    # -- the other container commands ------------------------------------------------------------------
    case(2, "no such container: ghost", "exec", "ghost", "true"),
    case(2, "no such container: ghost", "logs", "ghost"),
    case(2, "no such container: ghost", "stop", "ghost"),
    case(2, "container c1 is already running", "start", "c1"),
    case(2, "container c1 is running: stop it first or use rm -f", "rm", "c1"),
    case(2, "no such container: ghost", "inspect", "ghost"),
    case(2, "no such container: ghost", "port", "ghost"),
    case(2, "no public port '81' published for c1", "port", "c1", "81"),
    case(2, "no public port '80/udp' published for c1", "port", "c1", "80/udp"),
    case(2, "invalid port (http)", "port", "c1", "http"),
    case(2, "invalid image name 'Bad Name'", "commit", "c1", "Bad Name"),
    # -- images ------------------------------------------------------------------------------------------
    case(2, "no such file: /no/such.tar", "image", "import", "/no/such.tar", "img"),
    case(2, "no such image: ghostimage", "image", "rm", "ghostimage"),
    case(2, "image 'busybox' is used by container(s)", "image", "rm", "busybox"),
    # -- lab up with a broken file -------------------------------------------------------------------------
    case(2, "not valid YAML/JSON", "lab", "up", f"{LABS}/not-yaml.yaml"),
    case(2, "containers.bird.ports[0]: 8080 is not of type 'string'", "lab", "up", f"{LABS}/schema.yaml"),
    case(2, "containers.bird.networks[0]: unknown network 'nowhere'", "lab", "up", f"{LABS}/unknown.yaml"),
    case(2, "ports go from 1 to 65535", "lab", "up", f"{LABS}/port-zero.yaml"),
    # -- the host cannot: no busybox, not root -----------------------------------------------------------
    case(4, "busybox is not installed", "run", "--rm", *TRUE, setup=HIDE_BUSYBOX, undo=SHOW_BUSYBOX),
    case(4, "needs root", "network", "create", "--subnet", "10.94.0.0/24", "n1", prefix=NOBODY),
    case(4, "needs root", *RUN, "--net", "bnet", *TRUE, prefix=NOBODY),
    # -- a broken state file: named, left as it is -----------------------------------------------------
    case(3, "/run/wrapdock/networks/broken.json: not valid JSON", "network", "ls",
         setup="echo '{\"name\": ' > /run/wrapdock/networks/broken.json", undo="rm /run/wrapdock/networks/broken.json"),
]

LAB_FILES = {
    "not-yaml.yaml": "name: [unclosed\n",
    "schema.yaml": "name: bad\ncontainers:\n  bird:\n    ports: [8080]\n",
    "unknown.yaml": "name: bad\ncontainers:\n  bird: {command: [sleep, '1'], networks: [nowhere]}\n",
    # valid as a file; the port is refused after the lab made its network, which it removes again
    "port-zero.yaml": ("name: bad\nnetworks:\n  labnet: {subnet: 10.96.0.0/24}\n"
                       "containers:\n  bird: {command: [sleep, '1'], networks: [labnet], ports: ['0:80']}\n"),
}


REPO = Path(__file__).resolve().parents[2]


def _kept_under_tmp() -> list[Path]:
    """What wrapdock runs from that may live under /tmp: its Python environment and (an editable
    install's) source checkout; a clone in /tmp is how CI and fresh-clone checks run."""
    return [p for p in dict.fromkeys((Path(sys.prefix), REPO)) if p.is_relative_to("/tmp")]


def private_tmp(box: Sandbox) -> None:
    """A tmpfs over /tmp in the sandbox's mount namespace, so that a canary can only land there; what
    wrapdock runs from, if it lives under /tmp, is bound back in."""
    keep = [f"mkdir -p {p} && mount --bind /run/wdtmp-keep/{p.relative_to('/tmp')} {p}" for p in _kept_under_tmp()]
    box.bash("set -e; mkdir -p /run/wdtmp-keep; mount --bind /tmp /run/wdtmp-keep; "
             "mount -t tmpfs wdcanary /tmp; " + "; ".join(keep))


def shared_tmp(box: Sandbox) -> None:
    """Undo private_tmp."""
    inner = "".join(f"umount {p}; " for p in reversed(_kept_under_tmp()))
    box.bash(f"set -e; {inner}umount /tmp; umount /run/wdtmp-keep; rmdir /run/wdtmp-keep")


def canary_absent(box: Sandbox) -> bool:
    return box.sh("test", "-e", CANARY, check=False).returncode != 0 and not Path(CANARY).exists()


def view(box: Sandbox) -> dict:
    """The whole picture, with the state records as exact text (a refused command changes not a byte)."""
    return {"snapshot": box.snapshot(), "state": state_files(box), "container_dirs": container_dirs(box),
            "mounts": mounts(box), "cgroups": [str(p) for p in box.cgroup_dirs()], "processes": processes(box)}


def case_process(box: Sandbox, item: Case) -> subprocess.Popen:
    return subprocess.Popen([*box.enter_argv(), *item.prefix, *wrapdock_argv(), "--quiet", *item.args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **box.env})


def check_refusal(item: Case, proc: subprocess.CompletedProcess) -> None:
    line = one_error(proc, item.code, allowed=LAB_PROGRESS if item.args[0] == "lab" else ())
    assert item.says in line, f"{item.id}: {line!r} does not say {item.says!r}"
    assert proc.stdout == "", f"{item.id}: {proc.stdout!r}"


def test_bad_input_catalogue(sandbox):
    box = sandbox
    start = box.snapshot()
    private_tmp(box)
    prepare(box, ("bnet", "10.90.0.0/24"), ("bnet2", "10.92.0.0/24"))
    ok(box, "--quiet", "network", "create", "--subnet", "10.91.0.0/30", "tiny")
    ok(box, "--quiet", "run", "-d", "--name", "c1", "--net", "bnet", "-p", "8090:80", "busybox", "httpd", "-f",
       "-p", "80")
    ok(box, "--quiet", "run", "-d", "--name", "t1", "--net", "tiny", "busybox", "sleep", "600")
    box.sh("mkdir", "-p", LABS)
    for name, text in LAB_FILES.items():
        box.sh("sh", "-c", 'cat > "$1"', "write", f"{LABS}/{name}", input=text)
    assert canary_absent(box)
    before = view(box)

    assert len(CASES) >= 40
    assert len({item.args[0] if item.args[0] not in ("network", "image", "lab") else item.args[:2]
                for item in CASES}) >= 15, "every command"
    # the cases that need a setting of their own run alone; the others two at a time (the host is compared
    # after each pair: a change by either would show, and neither may see the other's - there is none)
    alone = [[item] for item in CASES if item.setup]
    plain = [item for item in CASES if not item.setup]
    for group in alone + [plain[i:i + 2] for i in range(0, len(plain), 2)]:
        setup = group[0].setup
        if setup:
            box.bash(setup)
        try:
            during = view(box) if setup else before
            procs = [case_process(box, item) for item in group]
            for item, proc in zip(group, procs, strict=True):
                out, err = proc.communicate(timeout=120)
                check_refusal(item, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            after = view(box)
            ids = " and ".join(item.id for item in group)
            assert after == during, f"{ids} changed the host:\n{differences(during, after)}"
        finally:
            if group[0].undo:
                box.bash(group[0].undo)
        assert canary_absent(box), group
    after = view(box)
    assert after == before, differences(before, after)

    ok(box, "--quiet", "rm", "-f", "c1", "t1")
    ok(box, "--quiet", "network", "rm", "bnet", "bnet2", "tiny")
    box.sh("rm", "-rf", LABS)
    assert canary_absent(box)
    shared_tmp(box)
    assert_no_leftovers(box, start)


# -- names that reach the kernel ---------------------------------------------------------------------------
def test_long_names_stay_within_the_kernels_limits(sandbox):
    """The longest names wrapdock accepts (64 characters) for a network (with --bridge-name) and a
    container with a published port: every interface name the kernel sees has at most 15 characters,
    every iptables chain at most 28, and the container works (its port answers)."""
    box = sandbox
    start = box.snapshot()
    network, container = "n" * 64, "c" * 64
    ok(box, "--quiet", "network", "create", "--subnet", "10.97.0.0/24", "--bridge-name", "wdlongbr", network)
    ok(box, "--quiet", "run", "-d", "--name", container, "--net", network, "-p", "8097:80", "busybox", "sh", "-c",
       "mkdir -p /www && echo long > /www/index.html && exec httpd -f -p 80 -h /www")
    got = wait_for(lambda: fetch(box, "http://127.0.0.1:8097/"), what="the published port")
    assert got == "long\n"

    host_links = [link["ifname"] for link in json.loads(box.sh("ip", "-j", "link").stdout)]
    inside = [link["ifname"] for link in json.loads(box.sh("ip", "-n", container, "-j", "link").stdout)]
    assert "wdlongbr" in host_links and "eth0" in inside
    for name in host_links + inside:
        assert len(name) <= 15, name
    chains = re.findall(r"^:(\S+)", box.sh("iptables-save").stdout, re.M)
    assert any(chain.startswith("WRAPDOCK") for chain in chains)
    for chain in chains:
        assert len(chain) <= 28, chain
    # the long names live where there is room for them: comments and the namespace's file name
    assert f"wrapdock:network={network}" in box.sh("iptables-save").stdout
    assert container in box.sh("ip", "netns", "list").stdout

    ok(box, "--quiet", "rm", "-f", container)
    ok(box, "--quiet", "network", "rm", network)
    assert_no_leftovers(box, start)


# -- strings that look like shell ----------------------------------------------------------------------------
ENV_INJECTIONS = (f"X={QUOTE_SEMICOLON}", f"Y={SUBSHELL}", f"Z={BACKTICKS}", "W=a\nb")


def environ_of(box: Sandbox, pid: int) -> list[str]:
    raw = box.sh("cat", f"/proc/{pid}/environ").stdout
    return raw.split("\0")


def test_shell_strings_in_values_never_run(sandbox, sandbox_factory, tmp_path):
    """Values may hold quotes, `;`, `$(...)`, backticks and newlines: live, and in the `--print-only`
    script run with bash, they arrive verbatim (the container's environment, its volume's path) and the
    canary is never created."""
    box = sandbox
    start = box.snapshot()
    private_tmp(box)
    volume = f"/run/v{QUOTE_SEMICOLON}{SUBSHELL}"  # a legitimate (if odd) directory name
    box.sh("mkdir", "-p", volume)
    box.sh("sh", "-c", 'echo from-volume > "$1/f"', "write", volume)
    env_options = [word for item in ENV_INJECTIONS for word in ("-e", item)]

    # live
    ok(box, "--quiet", "run", "-d", "--name", "live", *env_options, "-v", f"{volume}:/data:ro", "busybox", "sh",
       "-c", 'cat /data/f; exec sleep 600')
    pid = json.loads(ok(box, "inspect", "live").stdout)[0]["state"]["pid"]
    assert set(ENV_INJECTIONS) <= set(environ_of(box, pid))
    assert wait_for(lambda: ok(box, "logs", "live").stdout, what="the container's output") == "from-volume\n"
    assert canary_absent(box)
    assert box.sh("test", "-e", f"/proc/{pid}/root{CANARY}", check=False).returncode != 0
    ok(box, "--quiet", "rm", "-f", "live")

    # --print-only: the script, run with bash in the sandbox, makes the container with the same values
    script = ok(box, "--print-only", "run", "-d", "--name", "ok", *env_options, "-v", f"{volume}:/data:ro",
                "busybox", "sleep", "600").stdout
    assert box.state_records("containers") == [] and container_dirs(box) == []  # printing changed nothing
    box.sh("sh", "-c", 'cat > "$1"', "write", "/run/ok.sh", input=script)
    done = box.sh("bash", "/run/ok.sh", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    container_dir = box.bash("ls -d /run/wrapdock-data/containers/*").stdout.strip()
    script_pid = int(box.sh("cat", f"{container_dir}/pid").stdout)
    assert set(ENV_INJECTIONS) <= set(environ_of(box, script_pid))
    assert canary_absent(box)
    assert box.state_records("containers") == []  # a script records nothing
    # clean up what the script made (wrapdock never knew it): its process, namespace, cgroups, directory
    box.sh("kill", "-9", str(script_pid))
    wait_for(lambda: not processes(box), what="the script's container to die")
    box.sh("ip", "netns", "del", "ok")
    box.sh("rm", "-rf", "--one-file-system", container_dir, "/run/ok.sh", volume)
    for directory in sorted(box.cgroup_dirs(), key=lambda d: -len(d.parts)):
        wait_for(lambda d=directory: _rmdir(d), what=f"rmdir {directory}")
    assert canary_absent(box)
    shared_tmp(box)
    assert_no_leftovers(box, start)


def _rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
