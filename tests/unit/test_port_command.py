"""`wrapdock port C [PORT[/PROTO]]`: Docker's lines, Docker's errors (one line, exit 2)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.unit.test_state_shape import CONTAINER
from wrapdock.cli import main
from wrapdock.state import StateStore


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    record = copy.deepcopy(CONTAINER)
    record["name"] = "web"
    record["ports"] = [{"host_ip": None, "host_port": 32770, "container_port": 443, "proto": "tcp"},
                       {"host_ip": "127.0.0.1", "host_port": 32768, "container_port": 80, "proto": "tcp"},
                       {"host_ip": None, "host_port": 32769, "container_port": 80, "proto": "tcp"},
                       {"host_ip": None, "host_port": 32768, "container_port": 53, "proto": "udp"}]
    StateStore(tmp_path / "state").put("container", record["id"], record)
    return tmp_path / "state"


def port(capsys, state_dir: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--state-dir", str(state_dir), "port", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_published_port_in_dockers_format_and_order(capsys, state_dir: Path) -> None:
    assert port(capsys, state_dir, "web") == (0, "53/udp -> 0.0.0.0:32768\n80/tcp -> 0.0.0.0:32769\n"
                                                 "80/tcp -> 127.0.0.1:32768\n443/tcp -> 0.0.0.0:32770\n", "")
    assert port(capsys, state_dir, "cccc")[1].startswith("53/udp")  # an id prefix, as everywhere


@pytest.mark.parametrize("asked,out", [
    ("80", "0.0.0.0:32769\n127.0.0.1:32768\n"), ("80/tcp", "0.0.0.0:32769\n127.0.0.1:32768\n"),
    ("53/udp", "0.0.0.0:32768\n"), ("443", "0.0.0.0:32770\n"),
])
def test_one_port(capsys, state_dir: Path, asked: str, out: str) -> None:
    assert port(capsys, state_dir, "web", asked) == (0, out, "")


@pytest.mark.parametrize("args,error", [
    (("ghost",), "no such container: ghost"),
    (("web", "81"), "no public port '81' published for web"),
    (("web", "53"), "no public port '53' published for web"),  # tcp unless said otherwise
    (("web", "80/udp"), "no public port '80/udp' published for web"),
    (("web", "http"), "invalid port (http)"),
    (("web", "70000"), "invalid port (70000)"),
])
def test_errors(capsys, state_dir: Path, args: tuple[str, ...], error: str) -> None:
    code, out, err = port(capsys, state_dir, *args)
    assert (code, out) == (2, "")
    assert err.startswith(f"wrapdock: error: {error}") and len(err.splitlines()) == 1, err


def test_a_container_without_published_ports_prints_nothing(capsys, tmp_path: Path) -> None:
    record = copy.deepcopy(CONTAINER)
    record["ports"] = []
    StateStore(tmp_path / "state").put("container", record["id"], record)
    assert port(capsys, tmp_path / "state", "bird") == (0, "", "")
