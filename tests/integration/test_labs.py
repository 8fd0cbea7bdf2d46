"""Labs end to end, in sandbox hosts with a simulated outside: up, check with real packets, down."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def assert_nothing_left(sandbox, start: dict) -> None:
    assert sandbox.snapshot() == start
    assert sandbox.state_records("containers") == []
    assert sandbox.state_records("networks") == []
    assert sandbox.cgroup_dirs() == []


def test_seed_lab_up_check_down(sandbox) -> None:
    sandbox.add_outside()
    start = sandbox.snapshot()
    up = sandbox.wrapdock("lab", "up", "seed", check=False)
    assert up.returncode == 0, up.stderr[-2000:]
    assert "==> [5/5] container owl" in up.stderr
    assert "+ ip -batch -" in up.stderr  # the trail shows the plumbing
    check = sandbox.wrapdock("--quiet", "lab", "check", "seed", "--format", "json", check=False)
    results = json.loads(check.stdout)
    assert check.returncode == 0, check.stdout
    assert len(results) == 10 and all(r["agrees"] for r in results)
    assert [r["got"] for r in results if r["expect"] == "fail"] == ["fail"]
    table = sandbox.wrapdock("--quiet", "lab", "check", "seed")
    assert "10/10 checks as expected" in table.stdout
    down = sandbox.wrapdock("--quiet", "lab", "down", "seed")
    assert "removed 5 object(s)" in down.stdout
    assert_nothing_left(sandbox, start)
    again = sandbox.wrapdock("--quiet", "lab", "down", "seed")  # idempotent
    assert "removed 0 object(s)" in again.stdout


def test_check_disagreeing_with_its_expectation_exits_1(sandbox, tmp_path) -> None:
    sandbox.add_outside()
    start = sandbox.snapshot()
    lab_file = tmp_path / "wrong.yaml"
    lab_file.write_text("""
name: wrong
networks:
  lan: {subnet: 10.44.0.0/24}
containers:
  a: {command: [sleep, "600"], networks: [lan]}
checks:
  - {name: "a -> outside, claimed to fail", from: a, ping: 203.0.113.1, expect: fail}
  - {name: "a -> gateway", from: a, ping: 10.44.0.1}
""")
    sandbox.wrapdock("--quiet", "lab", "up", str(lab_file))
    check = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), check=False)
    assert check.returncode == 1
    assert "1/2 checks as expected" in check.stdout
    sandbox.wrapdock("--quiet", "lab", "down", str(lab_file))
    assert_nothing_left(sandbox, start)


def test_campus_lab_must_fail_checks_fail(sandbox) -> None:
    sandbox.add_outside()
    start = sandbox.snapshot()
    sandbox.wrapdock("--quiet", "lab", "up", "campus", timeout=300)
    check = sandbox.wrapdock("--quiet", "lab", "check", "campus", "--format", "json", check=False, timeout=120)
    results = json.loads(check.stdout)
    assert check.returncode == 0, check.stdout
    must_fail = [r for r in results if r["expect"] == "fail"]
    assert len(must_fail) >= 3 and all(r["got"] == "fail" for r in must_fail)
    assert all(r["got"] == "ok" for r in results if r["expect"] == "ok")
    sandbox.wrapdock("--quiet", "lab", "down", "campus", timeout=300)
    assert_nothing_left(sandbox, start)


def test_failed_lab_up_removes_everything_it_made(sandbox, tmp_path) -> None:
    start = sandbox.snapshot()
    lab_file = tmp_path / "clash.yaml"
    lab_file.write_text("""
name: clash
networks:
  lan: {subnet: 10.45.0.0/24}
containers:
  first: {command: [sleep, "600"], networks: [lan], ports: ["9000:80"]}
  second: {command: [sleep, "600"], networks: [lan], ports: ["9000:80"]}
""")
    up = sandbox.wrapdock("--quiet", "lab", "up", str(lab_file), check=False)
    assert up.returncode == 2
    assert up.stderr.strip().splitlines()[-1].startswith("wrapdock: error: host port 9000/tcp")
    assert "removing the 2 object(s) it made" in up.stderr
    assert_nothing_left(sandbox, start)


def test_lab_file_errors_name_the_place(sandbox, tmp_path) -> None:
    lab_file = tmp_path / "bad.yaml"
    lab_file.write_text("name: bad\ncontainers:\n  bird:\n    ports: [8080]\n")
    result = sandbox.wrapdock("lab", "up", str(lab_file), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"wrapdock: error: {lab_file}: containers.bird.ports[0]: 8080 is not of type "
                                      "'string'")
    assert sandbox.state_records("networks") == []


def test_lab_script_runs_without_wrapdock(sandbox_factory, tmp_path) -> None:
    """The generated script alone brings the lab up, passes its checks and takes it down again."""
    box = sandbox_factory()
    box.add_outside()
    start = box.snapshot()
    script = box.wrapdock("lab", "script", "seed").stdout
    path = tmp_path / "seed.sh"
    path.write_text(script)
    # a clean environment: no wrapdock on PATH, no wrapdock state read or written
    run = box.sh("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "bash", str(path), "all", check=False,
                 timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("PASS") == 10
    assert "0 check(s) disagree" in run.stdout
    assert box.snapshot() == start
    assert box.state_records("networks") == []
    assert box.cgroup_dirs() == []
