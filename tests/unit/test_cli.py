"""The CLI end to end through wrapdock.cli.main, without root and without touching the host.

Every test runs with: a fake non-root uid (so nothing live can pass require_root even when the suite
runs as root), a runner whose executor fails the test if any command would run, and a host reader
that returns a fixed, empty host.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.fakes import forbid
from wrapdock import __version__, hostinfo, session
from wrapdock.cli import main
from wrapdock.hostinfo import HostNetworking
from wrapdock.ipam import RecordStore
from wrapdock.model import Network
from wrapdock.netspec import HostPrefix
from wrapdock.plans import iptables as ipt
from wrapdock.runner import Result, Runner, Trail
from wrapdock.state import StateStore

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


class Host:
    """What the patched hostinfo.read reports; tests may fill it in."""

    def __init__(self) -> None:
        self.links: list[str] = []
        self.prefixes: list[HostPrefix] = []
        self.reads = 0

    def read(self, runner: Runner) -> HostNetworking:
        self.reads += 1
        return HostNetworking(tuple(self.links), tuple(self.prefixes))


NOT_ROOT = ("iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied "
            "(you must be root)")


def sealed_execute(argv, stdin: str | None) -> Result:
    """No host command runs, but the one read of the tables answers as it does for a user that is not root."""
    if tuple(argv) == ("iptables-save",):
        return Result(tuple(argv), 4, "", NOT_ROOT + "\n", 0.0)
    return forbid(argv, stdin)


@pytest.fixture(autouse=True)
def sealed(monkeypatch) -> Host:
    import sys

    host = Host()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(session.Session, "runner",
                        property(lambda self: Runner(Trail(self.trail_mode, sys.stderr), execute=sealed_execute)))
    monkeypatch.setattr(hostinfo, "read", host.read)
    monkeypatch.delenv("WRAPDOCK_STATE_DIR", raising=False)
    monkeypatch.delenv("WRAPDOCK_DEBUG", raising=False)
    monkeypatch.delenv("WRAPDOCK_FAIL_AT", raising=False)
    return host


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def run(capsys, state_dir: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--state-dir", str(state_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, bytes] | None:
    if not root.exists():
        return None
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def add_network(state_dir: Path, name: str, subnet: str, owners: dict[str, str] | None = None) -> Network:
    net = IPv4Network(subnet)
    network = Network(name=name, id="e" * 64, driver="bridge", subnet=net, gateway=net.network_address + 1,
                      bridge=name, created="2024-01-02T03:04:05+00:00")
    store = StateStore(state_dir)
    store.put("network", name, network.to_record())
    record = RecordStore.new_record(name, net, network.gateway)
    for address, owner in (owners or {}).items():
        RecordStore(record).put(address, owner, round_robin=False)
    store.put("ipam", name, record)
    return network


def assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wrapdock: error: ")
    assert "Traceback" not in err
    return lines[0]


# -- version and help ------------------------------------------------------------------------------
def test_version_matches_pyproject(capsys, state_dir: Path) -> None:
    code, out, err = run(capsys, state_dir, "--version")
    project_version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert (code, out, err) == (0, f"wrapdock {project_version}\n", "")
    assert project_version == __version__ == "0.1.0"


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["network", "--help"], ["network", "create", "--help"]])
def test_help(capsys, state_dir: Path, args: list[str]) -> None:
    code, out, err = run(capsys, state_dir, *args)
    assert code == 0 and err == ""
    assert out.startswith("Usage: wrapdock")
    assert not state_dir.exists()


# -- bad input -------------------------------------------------------------------------------------
CREATE = ["network", "create"]
BAD_INPUTS = {
    "missing-subnet": [*CREATE, "web"],
    "missing-name": [*CREATE, "--subnet", "10.0.0.0/24"],
    "no-prefix": [*CREATE, "web", "--subnet", "10.0.0.0"],
    "prefix-33": [*CREATE, "web", "--subnet", "10.0.0.0/33"],
    "octet-300": [*CREATE, "web", "--subnet", "300.1.1.1/24"],
    "letters": [*CREATE, "web", "--subnet", "abc/24"],
    "ipv6": [*CREATE, "web", "--subnet", "fd00::/64"],
    "prefix-7": [*CREATE, "web", "--subnet", "10.0.0.0/7"],
    "prefix-31": [*CREATE, "web", "--subnet", "10.0.0.0/31"],
    "loopback": [*CREATE, "web", "--subnet", "127.0.0.0/24"],
    "multicast": [*CREATE, "web", "--subnet", "224.1.0.0/16"],
    "link-local": [*CREATE, "web", "--subnet", "169.254.1.0/24"],
    "gateway-outside": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.1.1"],
    "gateway-broadcast": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.255"],
    "gateway-network": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.0"],
    "gateway-conflict": [*CREATE, "web", "--subnet", "10.0.0.5/24", "--gateway", "10.0.0.6"],
    "gateway-garbage": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--gateway", "gw"],
    "driver": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--driver", "overlay"],
    "name-semicolon": [*CREATE, "a;touch x", "--subnet", "10.0.0.0/24"],
    "name-quote": [*CREATE, "a'b", "--subnet", "10.0.0.0/24"],
    "name-dollar": [*CREATE, "$(id)", "--subnet", "10.0.0.0/24"],
    "name-newline": [*CREATE, "web\ntouch x", "--subnet", "10.0.0.0/24"],
    "name-unicode": [*CREATE, "café", "--subnet", "10.0.0.0/24"],
    "name-slash": [*CREATE, "../etc", "--subnet", "10.0.0.0/24"],
    "name-too-long-for-bridge": [*CREATE, "a" * 16, "--subnet", "10.0.0.0/24"],
    "name-too-long": [*CREATE, "a" * 65, "--subnet", "10.0.0.0/24", "--bridge-name", "br"],
    "bridge-space": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--bridge-name", "a b"],
    "bridge-long": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--bridge-name", "b" * 16],
    "bridge-dots": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--bridge-name", ".."],
    "mtu-small": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--mtu", "67"],
    "mtu-big": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--mtu", "65536"],
    "mtu-text": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--mtu", "jumbo"],
    "unknown-option": [*CREATE, "web", "--subnet", "10.0.0.0/24", "--bogus"],
    "unknown-global-option": ["--bogus", "network", "list"],
    "unknown-command": ["network", "frobnicate"],
    "unknown-group": ["volume", "ls"],
    "bad-trail": ["--trail", "loud", "network", "list"],
    "bad-format": ["network", "list", "--format", "yaml"],
    "inspect-nothing": ["network", "inspect"],
    "inspect-missing": ["network", "inspect", "nosuch"],
    "rm-nothing": ["network", "rm"],
    "rm-missing-print-only": ["network", "rm", "--print-only", "nosuch"],
}


@pytest.mark.parametrize("args", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(capsys, state_dir: Path, sealed: Host,
                                                         args: list[str]) -> None:
    code, out, err = run(capsys, state_dir, *args)
    assert code == 2, err
    assert out == ""
    assert_one_error_line(err)
    assert not state_dir.exists()


@pytest.mark.parametrize("args", [v for k, v in BAD_INPUTS.items() if v[:2] == CREATE and k != "missing-name"],
                         ids=[k for k, v in BAD_INPUTS.items() if v[:2] == CREATE and k != "missing-name"])
def test_bad_create_input_refused_in_print_only_too(capsys, state_dir: Path, args: list[str]) -> None:
    code, out, err = run(capsys, state_dir, "--print-only", *args)
    assert code == 2, err
    assert out == ""
    assert_one_error_line(err)
    assert not state_dir.exists()


def test_error_names_the_problem(capsys, state_dir: Path) -> None:
    _, _, err = run(capsys, state_dir, *CREATE, "web")
    assert "--subnet" in assert_one_error_line(err)
    _, _, err = run(capsys, state_dir, *CREATE, "web\ntouch x", "--subnet", "10.0.0.0/24")
    assert "invalid network name 'web\\ntouch x'" in assert_one_error_line(err)
    _, _, err = run(capsys, state_dir, "network", "inspect", "nosuch")
    assert assert_one_error_line(err) == "wrapdock: error: no such network: nosuch"


def test_live_create_needs_root(capsys, state_dir: Path, sealed: Host) -> None:
    code, out, err = run(capsys, state_dir, *CREATE, "web", "--subnet", "10.0.0.0/24")
    assert code == 4
    assert "needs root" in assert_one_error_line(err)
    assert out == ""
    assert not state_dir.exists()
    assert sealed.reads == 0


def test_live_rm_needs_root(capsys, state_dir: Path) -> None:
    add_network(state_dir, "web", "10.20.0.0/24")
    before = snapshot(state_dir)
    code, _, err = run(capsys, state_dir, "network", "remove", "web")
    assert code == 4
    assert "needs root" in assert_one_error_line(err)
    assert snapshot(state_dir) == before


# -- list / ls / inspect -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["list", "ls"])
def test_list_on_empty_state_prints_only_the_header(capsys, state_dir: Path, command: str) -> None:
    code, out, err = run(capsys, state_dir, "network", command)
    assert (code, err) == (0, "")
    assert out.split() == ["NAME", "DRIVER", "SCOPE", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"]
    assert len(out.splitlines()) == 1
    assert not state_dir.exists()


def test_list_formats(capsys, state_dir: Path) -> None:
    assert run(capsys, state_dir, "network", "ls", "--format", "json")[1] == "[]\n"
    assert run(capsys, state_dir, "network", "ls", "-q")[1] == ""
    add_network(state_dir, "web", "10.20.0.0/24", {"10.20.0.2": "c1", "10.20.0.3": "c1", "10.20.0.4": "c2"})
    add_network(state_dir, "api", "10.21.0.0/24")
    code, out, _ = run(capsys, state_dir, "network", "ls")
    rows = [line.split() for line in out.splitlines()]
    assert code == 0
    assert rows[1:] == [["api", "bridge", "local", "10.21.0.0/24", "10.21.0.1", "api", "0"],
                        ["web", "bridge", "local", "10.20.0.0/24", "10.20.0.1", "web", "2"]]
    assert run(capsys, state_dir, "network", "list", "-q")[1] == "api\nweb\n"
    views = json.loads(run(capsys, state_dir, "network", "list", "--format", "json")[1])
    assert [v["name"] for v in views] == ["api", "web"]


def test_inspect_sorts_allocations_numerically(capsys, state_dir: Path) -> None:
    add_network(state_dir, "web", "10.20.0.0/24", {"10.20.0.10": "b", "10.20.0.9": "a", "10.20.0.100": "c"})
    code, out, _ = run(capsys, state_dir, "network", "inspect", "web")
    [view] = json.loads(out)
    assert code == 0
    assert [a["address"] for a in view["allocations"]] == ["10.20.0.9", "10.20.0.10", "10.20.0.100"]
    assert view["name"] == "web" and view["subnet"] == "10.20.0.0/24" and "version" not in view


def test_inspect_refuses_path_like_names(capsys, state_dir: Path) -> None:
    add_network(state_dir, "web", "10.20.0.0/24")
    code, out, err = run(capsys, state_dir, "network", "inspect", "../networks/web")
    assert code == 2
    assert out == ""
    assert_one_error_line(err)


@pytest.mark.parametrize("args", [["network", "list"], ["network", "ls", "-q"], ["network", "inspect", "web"],
                                  ["--print-only", "network", "create", "api", "--subnet", "10.21.0.0/24"]])
def test_corrupt_state_exits_3_naming_the_file(capsys, state_dir: Path, args: list[str]) -> None:
    path = state_dir / "networks" / "web.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "name": ')
    code, out, err = run(capsys, state_dir, *args)
    assert code == 3
    assert out == ""
    assert str(path) in assert_one_error_line(err)
    assert path.read_text() == '{"version": 1, "name": '
    assert sorted(p.name for p in state_dir.rglob("*")) == ["networks", "web.json"]


def test_state_dir_from_environment(capsys, tmp_path: Path, monkeypatch) -> None:
    add_network(tmp_path / "envstate", "web", "10.20.0.0/24")
    monkeypatch.setenv("WRAPDOCK_STATE_DIR", str(tmp_path / "envstate"))
    code = main(["network", "ls", "-q"])
    assert (code, capsys.readouterr().out) == (0, "web\n")


# -- --print-only ------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["global", "command"])
def test_print_only_create_prints_a_script_and_changes_nothing(capsys, state_dir: Path, sealed: Host,
                                                               tmp_path: Path, where: str) -> None:
    args = [*CREATE, "web", "--subnet", "10.20.0.1/24", "--mtu", "1400"]
    args = ["--print-only", *args] if where == "global" else [*args, "--print-only"]
    code, out, err = run(capsys, state_dir, *args)
    assert code == 0, err
    assert err == f"# {ipt.SAVE_NOTE}\n+ iptables-save\n"  # the one read-only query, shown; nothing else ran
    lines = out.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    # not root: the tables could not be read, and the script says what it assumes instead
    assert any(line.startswith("# ") and ipt.decided(None, adding=True) in line for line in lines)
    assert "set -euo pipefail" in lines
    assert f"# Generated by wrapdock {__version__} (--print-only) from:" in lines
    assert "link add name web mtu 1400 type bridge" in lines
    assert "addr add 10.20.0.1/24 dev web" in lines
    assert "link set dev web alias wrapdock:network=web" in lines
    assert any("--comment wrapdock:network=web" in line for line in lines)
    assert not state_dir.exists()
    assert sealed.reads == 1  # the host was consulted (through the patched reader) before planning
    if shutil.which("shellcheck"):
        script = tmp_path / "out.sh"
        script.write_text(out)
        done = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout


def test_print_only_create_internal_has_no_nat(capsys, state_dir: Path) -> None:
    code, out, _ = run(capsys, state_dir, "--print-only", *CREATE, "back", "--subnet", "10.30.0.0/24",
                       "--internal")
    assert code == 0
    assert "-j DROP" in out and "ip_forward" not in out
    assert "--comment wrapdock:network=back -j RETURN" not in out


def test_print_only_create_refuses_conflicts_with_state(capsys, state_dir: Path) -> None:
    add_network(state_dir, "web", "10.20.0.0/24")
    before = snapshot(state_dir)
    for args, why in [
        (["web", "--subnet", "10.99.0.0/24", "--bridge-name", "br9"], "already exists"),
        (["api", "--subnet", "10.20.0.128/25"], "overlaps subnet 10.20.0.0/24 of network 'web'"),
        (["api", "--subnet", "10.0.0.0/8"], "overlaps subnet 10.20.0.0/24"),
        (["api", "--subnet", "10.98.0.0/24", "--bridge-name", "web"], "bridge 'web' is already used"),
    ]:
        code, out, err = run(capsys, state_dir, "--print-only", *CREATE, *args)
        assert (code, out) == (2, "")
        assert why in assert_one_error_line(err)
    assert snapshot(state_dir) == before


def test_print_only_create_refuses_conflicts_with_host(capsys, state_dir: Path, sealed: Host) -> None:
    sealed.links = ["lo", "eth0", "web"]
    sealed.prefixes = [HostPrefix(IPv4Network("192.168.1.0/24"), "address 192.168.1.5/24 on eth0"),
                       HostPrefix(IPv4Network("10.8.0.0/16"), "route 10.8.0.0/16 dev tun0")]
    for args, why in [
        (["web", "--subnet", "10.20.0.0/24"], "named 'web' already exists"),
        (["api", "--subnet", "192.168.1.0/25"], "overlaps address 192.168.1.5/24 on eth0"),
        (["api", "--subnet", "10.8.3.0/24"], "overlaps route 10.8.0.0/16 dev tun0"),
    ]:
        code, out, err = run(capsys, state_dir, "--print-only", *CREATE, *args)
        assert (code, out) == (2, "")
        assert why in assert_one_error_line(err)
    assert not state_dir.exists()


@pytest.mark.parametrize("command", ["rm", "remove"])
def test_print_only_remove_last_network_removes_the_chains(capsys, state_dir: Path, command: str) -> None:
    add_network(state_dir, "web", "10.20.0.0/24")
    before = snapshot(state_dir)
    code, out, err = run(capsys, state_dir, "--print-only", "network", command, "web")
    assert code == 0, err
    assert out.startswith("#!/usr/bin/env bash\n")
    assert "if test -d /sys/class/net/web/bridge; then ip link del dev web; fi" in out.splitlines()
    assert "-X WRAPDOCK-FORWARD" in out
    assert snapshot(state_dir) == before


def test_print_only_remove_keeps_chains_while_a_network_remains(capsys, state_dir: Path) -> None:
    add_network(state_dir, "web", "10.20.0.0/24")
    add_network(state_dir, "api", "10.21.0.0/24")
    _, out, _ = run(capsys, state_dir, "--print-only", "network", "rm", "web")
    assert "ip link del dev web" in out and "-X WRAPDOCK-" not in out and "api" not in out
    _, out, _ = run(capsys, state_dir, "--print-only", "network", "rm", "web", "api", "web")
    assert out.count("ip link del dev web;") == 1 and out.count("ip link del dev api;") == 1
    # the chains go once, with the last network's rules (one iptables-restore per table)
    assert out.count("\n-X WRAPDOCK-FORWARD\n") == 1
    assert out.index("ip link del dev web;") < out.index("\n-X WRAPDOCK-FORWARD\n") < out.index("ip link del dev api;")


def test_print_only_remove_refuses_networks_in_use(capsys, state_dir: Path) -> None:
    add_network(state_dir, "web", "10.20.0.0/24", {"10.20.0.2": "c1"})
    code, out, err = run(capsys, state_dir, "--print-only", "network", "rm", "web")
    assert (code, out) == (2, "")
    assert "still has 1 attached container(s) (c1)" in assert_one_error_line(err)


# -- internal errors -------------------------------------------------------------------------------
def test_internal_error_is_one_line_exit_70(capsys, state_dir: Path, monkeypatch) -> None:
    from wrapdock import networks

    def boom(_session):
        raise RuntimeError("kaput\nsecond line")

    monkeypatch.setattr(networks, "all_networks", boom)
    code, out, err = run(capsys, state_dir, "network", "ls")
    assert code == 70
    assert out == ""
    assert err.splitlines() == ["wrapdock: internal error: RuntimeError: kaput second line "
                                "(set WRAPDOCK_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("WRAPDOCK_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["--state-dir", str(state_dir), "network", "ls"])



def test_run_dash_h_is_the_host_name_as_in_docker(capsys, state_dir: Path, monkeypatch) -> None:
    from wrapdock import containers

    seen = []
    monkeypatch.setattr(containers, "run", lambda session, request: seen.append(request) or (None, 0))
    assert main(["--state-dir", str(state_dir), "run", "-h", "web", "busybox", "httpd", "-h", "/www"]) == 0
    assert seen[0].hostname == "web" and seen[0].args == ("busybox", "httpd", "-h", "/www")
    assert main(["run", "--help"]) == 0
    assert "-h, --hostname" in capsys.readouterr().out


class _Stdin(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__("")
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize(("args", "terminal", "refusal"), [
    (["run", "-it", "busybox", "sh"], False, "the input device is not a TTY"),
    (["exec", "-it", "web", "sh"], False, "the input device is not a TTY"),
    (["run", "-d", "-i", "busybox", "sh"], True, "-d -i needs -t"),
    (["run", "-it", "busybox", "sh"], True, None),
    (["exec", "-it", "web", "sh"], True, None),
    (["--print-only", "run", "-it", "busybox", "sh"], False, None),  # the script may run on a terminal
    (["run", "-t", "busybox", "sh"], False, None),  # -t alone: a pty, no input relayed
    (["run", "-dt", "busybox", "sh"], False, None),
    (["run", "-dit", "busybox", "sh"], False, None),
])
def test_tty_options_as_in_docker(capsys, state_dir: Path, monkeypatch, args: list[str], terminal: bool,
                                  refusal: str | None) -> None:
    """-it relays this terminal, so it needs one (Docker: "the input device is not a TTY"); -d -i has
    nothing to attach to; -t, -dt and -dit get a pty of the container's own."""
    from wrapdock import containers

    calls = []
    monkeypatch.setattr(containers, "run",
                        lambda session, request: calls.append(request) or (SimpleNamespace(id="0" * 64), None))
    monkeypatch.setattr(containers, "exec_in", lambda *a: calls.append(a) or 0)
    monkeypatch.setattr(sys, "stdin", _Stdin(terminal))
    code, _, err = run(capsys, state_dir, *args)
    if refusal:
        assert code == 2, err
        assert refusal in assert_one_error_line(err)
        assert calls == []
    else:
        assert code == 0, err
        assert len(calls) == 1
