"""Lab files: schema errors that name the place, the DOT graph, the standalone script, the Vagrantfile."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from wrapdock import lab
from wrapdock.checkoutcome import classify
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.runner import Result, Runner, Trail

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", lab.BUNDLED)
def test_bundled_labs_are_valid(name: str) -> None:
    data = lab.load(name)
    assert data["name"] == name
    assert data["checks"]


def test_campus_is_three_networks_of_ten_with_an_isolated_one_and_must_fail_checks() -> None:
    data = lab.load("campus")
    assert len(data["networks"]) >= 3
    assert len(data["containers"]) >= 30
    assert any(n.get("isolated") for n in data["networks"].values())
    assert sum(1 for c in data["checks"] if c.get("expect") == "fail") >= 2


@pytest.mark.parametrize(("text", "place"), [
    ("name: x\ncontainers:\n  bird:\n    ports: [8080]\n", "containers.bird.ports[0]"),
    ("name: x\nnetworks:\n  n1: {subnet: 10.0.0.0/24, colour: red}\n", "networks.n1"),
    ("name: x\nchecks:\n  - {from: host}\n", "checks[0]"),
    ("name: x\nchecks:\n  - {from: host, ping: 1.2.3.4, expect: maybe}\n", "checks[0].expect"),
    ("name: 'bad name'\n", "name"),
    ("name: x\ncontainers:\n  bird: {networks: [nowhere]}\n", "containers.bird.networks[0]"),
    ("name: x\nchecks:\n  - {from: nobody, ping: 1.2.3.4}\n", "checks[0].from"),
])
def test_errors_name_the_place(tmp_path: Path, text: str, place: str) -> None:
    with pytest.raises(UsageError) as caught:
        lab.load(write(tmp_path, text))
    assert f": {place}:" in caught.value.message
    assert "\n" not in caught.value.message


def test_broken_yaml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        lab.load(write(tmp_path, "name: [unclosed\n"))
    assert "not valid YAML" in caught.value.message


def test_json_lab_files_work(tmp_path: Path) -> None:
    data = lab.load(write(tmp_path, '{"name": "j", "networks": {"n": {"subnet": "10.9.0.0/24"}}}', "lab.json"))
    assert data["networks"]["n"]["subnet"] == "10.9.0.0/24"


def test_unknown_lab_is_refused() -> None:
    with pytest.raises(UsageError, match="no such lab"):
        lab.load("no-such-lab-anywhere")


@pytest.mark.parametrize("name", lab.BUNDLED)
def test_graph_is_valid_dot(name: str, tmp_path: Path) -> None:
    data = lab.load(name)
    dot_text = lab.graph(data)
    for container in data["containers"]:
        assert f'"c:{container}"' in dot_text
    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed")
    done = subprocess.run(["dot", "-Tcanon"], input=dot_text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True, check=False)
    assert "<svg" in svg.stdout


def test_check_commands_resolve_container_names() -> None:
    data = {"name": "t", "checks": []}
    addresses = {"bird": "10.0.0.2"}
    netns = {"robin": "robin"}
    argv, target = lab.check_command(data, {"from": "robin", "ping": "bird"}, addresses, netns)
    assert argv == ["ip", "netns", "exec", "robin", "busybox", "ping", "-c", "1", "-W", "2", "10.0.0.2"]
    assert target == "10.0.0.2"
    argv, target = lab.check_command(data, {"from": "host", "http": "http://bird:8080/x"}, addresses, netns)
    assert argv[-1] == "http://10.0.0.2:8080/x"
    argv, _ = lab.check_command(data, {"from": "outside", "tcp": "bird:80"}, addresses, netns)
    assert argv[:4] == ["ip", "netns", "exec", "outside"] and argv[-1] == "exec 3<>/dev/tcp/10.0.0.2/80"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_lab_script_passes_shellcheck(tmp_path: Path) -> None:
    text = lab.script({"data_dir": Path("/var/lib/wrapdock")}, lab.load("seed"), ["lab", "script", "seed"])
    assert text.startswith("#!/usr/bin/env bash\n")
    for part in ("up() {", "checks() {", "down() {", "iptables-restore -w --noflush", "ip -batch -"):
        assert part in text
    path = tmp_path / "seed.sh"
    path.write_text(text)
    done = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_lab_script_plans_addresses_as_a_live_run_would() -> None:
    text = lab.script({"data_dir": Path("/var/lib/wrapdock")}, lab.load("seed"), ["lab", "script", "seed"])
    # bird, robin: the first two addresses of testbridge; owl: the address its file asks for
    assert "addr add 162.16.0.2/24 dev eth0" in text
    assert "addr add 162.16.0.3/24 dev eth0" in text
    assert "addr add 162.17.0.50/24 dev eth0" in text


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed (scripts/setup --tests)")
def test_vagrantfile_validates() -> None:
    done = subprocess.run(["vagrant", "validate", "-p"], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


# -- check outcomes: ok, fail (the probe ran, no answer), error (it could not run) -------------------

# (exit code, what the probe printed, outcome): the texts are what these tools print on this host
PROBES = [
    (0, "64 bytes from 10.0.0.1: seq=0 ttl=64 time=0.1 ms\n1 packets transmitted, 1 packets received", "ok"),
    (1, "1 packets transmitted, 0 packets received, 100% packet loss", "fail"),
    (1, "PING 10.9.9.9 (10.9.9.9): 56 data bytes\nping: sendto: Network is unreachable", "fail"),
    (1, "bash: connect: Connection refused\nbash: line 1: /dev/tcp/127.0.0.1/9: Connection refused", "fail"),
    (1, "wget: can't connect to remote host (10.0.0.2): Connection refused", "fail"),
    (1, "wget: server returned error: HTTP/1.0 404 Not Found", "fail"),
    (124, "", "fail"),  # `timeout`: no answer in time
    (1, "ping: bad address 'no-such-host.invalid'", "error"),
    (1, "wget: bad address 'no-such-host.invalid:80'", "error"),
    (1, "bash: line 1: nosuch: Temporary failure in name resolution\nbash: line 1: /dev/tcp/nosuch/9: Invalid "
        "argument", "error"),
    (1, "bash: line 1: nosuch: Name or service not known", "error"),
    (1, "ping: permission denied (are you root?)", "error"),
    (255, 'Cannot open network namespace "outside": No such file or directory', "error"),
    (255, 'exec of "busybox" failed: No such file or directory', "error"),
    (127, "nosuchapplet: applet not found", "error"),
    (127, "timeout: failed to run command 'bash': No such file or directory", "error"),
    (126, "", "error"),
    (125, "timeout: invalid time interval", "error"),
    (139, "", "error"),  # killed by SIGSEGV
]


@pytest.mark.parametrize(("code", "output", "got"), PROBES)
def test_outcome_from_exit_code_and_text(code: int, output: str, got: str) -> None:
    outcome = classify(code, output)
    assert outcome.got == got
    assert "\n" not in outcome.reason
    if got == "error" and code != 1:
        assert outcome.reason.startswith(f"exit {code}")
    if "bad address" in output or "name resolution" in output:
        assert outcome.reason == output.splitlines()[0]  # the line that says why, not the last one


def check_function() -> str:
    """The generated script's `check` function, to run on its own (no root, no lab)."""
    text = lab.script({"data_dir": Path("/var/lib/wrapdock")}, {"name": "t"}, ["lab", "script", "t"])
    return text[text.index("failed=0 errors=0"):text.index("checks() {")]


@pytest.mark.parametrize(("code", "output", "got"), PROBES)
def test_lab_script_judges_probes_as_lab_check_does(tmp_path: Path, code: int, output: str, got: str) -> None:
    probe = tmp_path / "probe.sh"
    probe.write_text(f"printf '%s\\n' {shlex.quote(output)}\nexit {code}\n")
    script = check_function() + (f"check 'c one' fail '' '' tok '' '' '' bash {shlex.quote(str(probe))}\n"
                                 f"check 'c two' ok '' '' tok '' '' '' bash {shlex.quote(str(probe))}\n"
                                 'echo "failed=$failed errors=$errors"\n')
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = classify(code, output)
    if got == "error":  # never agrees, whatever it expected
        assert lines[0] == f"ERROR error c one (expected fail): could not run: {expected.reason}"
        assert lines[2] == "failed=2 errors=2"
    elif got == "fail":
        assert lines[0] == "PASS  fail  c one" and lines[1].startswith("FAIL  fail  c two (expected ok): ")
        assert lines[2] == "failed=1 errors=0"
    else:
        assert lines[0].startswith("FAIL  ok    c one (expected fail)") and lines[1] == "PASS  ok    c two"


def test_an_error_never_agrees() -> None:
    for expect in ("ok", "fail"):
        assert not lab.CheckResult("c", "a", "t", expect, "error", 0.0, "why").agrees
    assert lab.CheckResult("c", "a", "t", "fail", "fail", 0.0, "").agrees


def test_names_are_looked_up_where_the_probe_runs_before_it_runs() -> None:
    data = {"name": "t", "checks": []}
    addresses, netns = {"bird": "10.0.0.2"}, {"robin": "robin", "hostnet": None}
    assert lab.resolve_command(data, {"from": "robin", "ping": "bird"}, addresses, netns) is None
    assert lab.resolve_command(data, {"from": "robin", "tcp": "10.0.0.9:80"}, addresses, netns) is None
    assert lab.resolve_command(data, {"from": "robin", "http": "http://[fd00::1]:80/"}, addresses, netns) is None
    assert lab.resolve_command(data, {"from": "robin", "http": "http://www.test:8080/x"}, addresses, netns) == [
        "ip", "netns", "exec", "robin", "getent", "hosts", "www.test"]
    assert lab.resolve_command(data, {"from": "outside", "udp": "nosuch:53", "listener": "bird"}, addresses,
                               netns) == ["ip", "netns", "exec", "outside", "getent", "hosts", "nosuch"]
    assert lab.resolve_command(data, {"from": "hostnet", "ping": "x.test"}, addresses, netns) == [
        "getent", "hosts", "x.test"]


def test_lab_script_check_lines_name_what_must_run_and_what_to_resolve() -> None:
    data = {"name": "t", "networks": {"lan": {"subnet": "10.0.0.0/24"}},
            "containers": {"a": {"networks": ["lan"]}, "b": {"networks": ["lan"]}},
            "checks": [{"name": "n1", "from": "a", "udp": "b:53", "listener": "b"},
                       {"name": "n2", "from": "outside", "http": "http://x.test/", "expect": "fail"}]}
    text = lab.script({"data_dir": Path("/var/lib/wrapdock")}, data, ["lab", "script", "t"])
    lines = [line.strip() for line in text.splitlines() if line.startswith("    check ")]
    words = [shlex.split(line) for line in lines]
    # check NAME EXPECT CONTAINS LISTENER_LOG TOKEN RUNNING NETNS RESOLVE COMMAND...
    assert words[0][1:3] == ["n1", "ok"] and words[0][6:9] == ["a b", "a", ""]
    assert words[0][9:13] == ["ip", "netns", "exec", "a"]
    assert words[1][1:3] == ["n2", "fail"] and words[1][6:9] == ["", "outside", "x.test"]


class Probes:
    """A host whose commands answer from a table (argv -> (exit code, output)); others exit 0."""

    def __init__(self, table: dict[tuple[str, ...], tuple[int, str]]) -> None:
        self.table, self.calls = table, []

    def __call__(self, argv, stdin) -> Result:
        self.calls.append(tuple(argv))
        if argv[0] == "missing-tool":
            raise EnvironmentProblem("command not found: missing-tool (see README: Set-up)")
        code, out = self.table.get(tuple(argv), (0, ""))
        return Result(tuple(argv), code, "", out, 0.001)


def test_run_checks_tells_ok_fail_and_error_apart(tmp_path: Path, monkeypatch) -> None:
    from wrapdock.session import Session

    session = Session(state_dir=tmp_path / "state", data_dir=tmp_path / "data", trail_mode="quiet")
    host = Probes({
        ("busybox", "ping", "-c", "1", "-W", "2", "10.0.0.9"): (1, "1 packets transmitted, 0 packets received"),
        ("getent", "hosts", "typo.test"): (2, ""),
        ("ip", "netns", "exec", "outside", "busybox", "ping", "-c", "1", "-W", "2", "10.0.0.1"):
            (255, 'Cannot open network namespace "outside": No such file or directory'),
    })
    session.runner = Runner(Trail("quiet"), execute=host)
    monkeypatch.setattr(lab, "check_command", _with_missing_tool(lab.check_command))
    data = {"name": "t", "checks": [
        {"name": "reply", "from": "host", "ping": "10.0.0.1"},
        {"name": "no reply", "from": "host", "ping": "10.0.0.9", "expect": "fail"},
        {"name": "typo", "from": "host", "ping": "typo.test", "expect": "fail"},
        {"name": "no outside", "from": "outside", "ping": "10.0.0.1", "expect": "fail"},
        {"name": "ghost", "from": "ghost", "ping": "10.0.0.1", "expect": "fail"},
        {"name": "no tool", "from": "host", "tcp": "10.0.0.1:1", "expect": "fail"},
    ]}
    results = lab.run_checks(session, data)
    assert [(r.got, r.agrees) for r in results] == [
        ("ok", True), ("fail", True), ("error", False), ("error", False), ("error", False), ("error", False)]
    assert results[2].detail == "typo.test does not resolve (getent hosts found no address)"
    assert results[3].detail == 'exit 255: Cannot open network namespace "outside": No such file or directory'
    assert results[4].detail == "container ghost does not exist (is the lab up?)"
    assert results[5].detail == "command not found: missing-tool (see README: Set-up)"
    assert not any("ghost" in " ".join(argv) for argv in host.calls)  # nothing ran for it
    assert ("busybox", "ping", "-c", "1", "-W", "2", "typo.test") not in host.calls  # the lookup said no


def _with_missing_tool(real):
    def check_command(data, check, addresses, netns, token="wrapdock-check"):
        argv, target = real(data, check, addresses, netns, token)
        return (["missing-tool", *argv[1:]] if "tcp" in check else argv), target
    return check_command


def test_inside_checks_run_in_the_container_and_keep_the_name() -> None:
    data = {"name": "t", "checks": []}
    check = {"from": "robin", "ping": "bird", "inside": True}
    argv, target = lab.check_command(data, check, {"bird": "10.0.0.2"}, {"robin": "robin"})
    assert target == "bird" and argv[:5] == ["sh", "-c", lab.INSIDE, "wrapdock-inside", "robin"]
    assert argv[5:] == ["ping", "-c", "1", "-W", "2", "bird"]
    assert lab.name_to_resolve(check, {}) is None
    http = {"from": "robin", "http": "http://bird/", "inside": True}
    assert lab.check_command(data, http, {}, {"robin": "robin"})[0][5:] == ["timeout", "5", "wget", "-qO-",
                                                                            "http://bird/"]


@pytest.mark.parametrize("check,message", [
    ("{from: a, tcp: 'b:80', inside: true}", "checks[0].inside: only a ping or http check runs inside"),
    ("{from: host, ping: b, inside: true}", "checks[0].inside: the check must start from a container"),
])
def test_inside_needs_a_container_and_ping_or_http(tmp_path, check, message) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("name: t\nnetworks:\n  n: {subnet: 10.1.0.0/24}\ncontainers:\n  a: {networks: [n]}\n"
                    f"  b: {{networks: [n]}}\nchecks:\n  - {check}\n")
    with pytest.raises(UsageError) as caught:
        lab.load(str(path))
    assert message in caught.value.message
