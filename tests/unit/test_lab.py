"""Lab files: schema errors that name the place, the DOT graph, the standalone script, the Vagrantfile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from wrapdock import lab
from wrapdock.errors import UsageError

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
