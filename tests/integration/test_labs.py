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
    assert "  ip -batch - <<" in up.stderr  # the trail shows the plumbing (in the scripts)
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


# -- a check that could not run is an error, never a pass -----------------------------------------
def errors_of(check) -> list[str]:
    """The `wrapdock: error: check N (NAME) could not run: REASON` lines of a `lab check`."""
    return [line for line in check.stderr.splitlines() if line.startswith("wrapdock: error: check ")]


def test_missing_source_namespace_is_an_error_not_an_expected_fail(sandbox, tmp_path) -> None:
    """No `outside` namespace on this host: its must-fail checks are errors, not "as expected"."""
    start = sandbox.snapshot()
    lab_file = tmp_path / "nooutside.yaml"
    lab_file.write_text("""
name: nooutside
networks:
  lan: {subnet: 10.46.0.0/24}
containers:
  a: {command: [sleep, "600"], networks: [lan]}
checks:
  - {name: "outside -> a directly (must fail)", from: outside, ping: a, expect: fail}
  - {name: "outside -> a's port (must fail)", from: outside, tcp: "a:80", expect: fail}
""")
    sandbox.wrapdock("--quiet", "lab", "up", str(lab_file))
    check = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), "--format", "json", check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    results = json.loads(check.stdout)
    assert [(r["got"], r["agrees"]) for r in results] == [("error", False), ("error", False)]
    assert all('Cannot open network namespace "outside"' in r["detail"] for r in results)
    assert errors_of(check) == [
        'wrapdock: error: check 1 (outside -> a directly (must fail)) could not run: '
        'exit 255: Cannot open network namespace "outside": No such file or directory',
        "wrapdock: error: check 2 (outside -> a's port (must fail)) could not run: "
        'exit 255: Cannot open network namespace "outside": No such file or directory']
    table = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), check=False)
    assert table.returncode == 1
    assert "0/2 checks as expected, 2 could not run" in table.stdout
    row = next(line for line in table.stdout.splitlines() if "outside -> a directly" in line)
    assert " error " in row and " NO " in row and 'Cannot open network namespace "outside"' in row
    sandbox.wrapdock("--quiet", "lab", "down", str(lab_file))
    assert_nothing_left(sandbox, start)


def test_stopped_source_container_is_an_error(sandbox, tmp_path) -> None:
    """A stopped container keeps its namespace and addresses: its pings would still be answered."""
    start = sandbox.snapshot()
    lab_file = tmp_path / "stopped.yaml"
    lab_file.write_text("""
name: stopped
networks:
  lan: {subnet: 10.47.0.0/24}
containers:
  a: {command: [sleep, "600"], networks: [lan]}
  b: {command: [sleep, "600"], networks: [lan]}
checks:
  - {name: "a -> b", from: a, ping: b}
  - {name: "a -> nowhere (must fail)", from: a, ping: 10.47.1.1, expect: fail}
  - {name: "b -> a", from: b, ping: a}
""")
    sandbox.wrapdock("--quiet", "lab", "up", str(lab_file))
    before = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), check=False)
    assert before.returncode == 0, before.stdout + before.stderr
    sandbox.wrapdock("--quiet", "stop", "-t", "1", "a")
    check = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), "--format", "json", check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    results = json.loads(check.stdout)
    assert [r["got"] for r in results] == ["error", "error", "ok"]
    assert results[0]["detail"].startswith("container a is not running (exited")
    assert errors_of(check)[0].startswith("wrapdock: error: check 1 (a -> b) could not run: container a is not "
                                          "running (exited")
    assert len(errors_of(check)) == 2
    sandbox.wrapdock("--quiet", "lab", "down", str(lab_file))
    assert_nothing_left(sandbox, start)


def test_unresolvable_target_is_an_error(sandbox, tmp_path) -> None:
    """A name that does not resolve is a broken check, not an unreachable target (ping, tcp, http).

    From a container the resolver's query is never answered (this sandbox has no route on): the probe
    under `timeout` alone would only have timed out, a "fail"; the lookup before it tells."""
    start = sandbox.snapshot()
    lab_file = tmp_path / "noname.yaml"
    lab_file.write_text("""
name: noname
networks:
  lan: {subnet: 10.48.0.0/24}
containers:
  a: {command: [sleep, "600"], networks: [lan]}
checks:
  - {name: "a -> gateway", from: a, ping: 10.48.0.1}
  - {name: "a -> a typo (must fail)", from: a, ping: no-such-host.invalid, expect: fail}
  - {name: "host -> a typo's port (must fail)", from: host, tcp: "no-such-host.invalid:80", expect: fail}
  - {name: "a -> a typo's web server (must fail)", from: a, http: "http://no-such-host.invalid/", expect: fail}
""")
    sandbox.wrapdock("--quiet", "lab", "up", str(lab_file))
    check = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), "--format", "json", check=False,
                             timeout=180)
    assert check.returncode == 1, check.stdout + check.stderr
    results = json.loads(check.stdout)
    assert [r["got"] for r in results] == ["ok", "error", "error", "error"], results
    reason = "no-such-host.invalid does not resolve (getent hosts found no address)"
    assert [r["detail"] for r in results[1:]] == [reason] * 3
    assert errors_of(check) == [
        f"wrapdock: error: check 2 (a -> a typo (must fail)) could not run: {reason}",
        f"wrapdock: error: check 3 (host -> a typo's port (must fail)) could not run: {reason}",
        f"wrapdock: error: check 4 (a -> a typo's web server (must fail)) could not run: {reason}"]
    sandbox.wrapdock("--quiet", "lab", "down", str(lab_file))
    assert_nothing_left(sandbox, start)


def test_lab_script_reports_checks_that_could_not_run(sandbox_factory, tmp_path) -> None:
    """The standalone script judges the same way: no outside namespace, a stopped container, a typo."""
    box = sandbox_factory()
    start = box.snapshot()
    lab_file = tmp_path / "scripted.yaml"
    lab_file.write_text("""
name: scripted
networks:
  lan: {subnet: 10.49.0.0/24}
containers:
  a: {command: [sleep, "600"], networks: [lan]}
  b: {command: [sleep, "600"], networks: [lan]}
checks:
  - {name: "b -> a", from: b, ping: a}
  - {name: "b -> nowhere (must fail)", from: b, ping: 10.49.1.1, expect: fail}
  - {name: "outside -> a (must fail)", from: outside, ping: a, expect: fail}
  - {name: "b -> a typo (must fail)", from: b, ping: no-such-host.invalid, expect: fail}
  - {name: "a -> b (must fail: a is stopped)", from: a, ping: b, expect: fail}
""")
    path = tmp_path / "scripted.sh"
    path.write_text(box.wrapdock("lab", "script", str(lab_file)).stdout)
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "bash", str(path)]
    box.sh(*env, "up", timeout=120)
    # a stops as `wrapdock stop` stops it (its init is killed, the rest follows); its namespace stays
    box.bash("""
        dir=$(dirname "$(grep -lx a /run/wrapdock-data/containers/*/hostname)")
        kill -KILL "$(cat "$dir/pid")"
        n=0; while [ -n "$(ip netns pids a)" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done
        [ -z "$(ip netns pids a)" ] && [ -e /run/netns/a ]
    """, timeout=120)
    run = box.sh(*env, "check", check=False, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.count("PASS") == 2, run.stdout  # the three must-fail checks that could not run are no pass
    lines = run.stdout.splitlines()
    assert lines[0].startswith("PASS  ok    b -> a") and lines[1].startswith("PASS  fail  b -> nowhere")
    assert lines[2] == ('ERROR error outside -> a (must fail) (expected fail): could not run: '
                        'exit 255: Cannot open network namespace "outside": No such file or directory')
    assert lines[3] == ("ERROR error b -> a typo (must fail) (expected fail): could not run: "
                        "no-such-host.invalid does not resolve (getent hosts found no address)")
    assert lines[4] == ("ERROR error a -> b (must fail: a is stopped) (expected fail): could not run: "
                        "container a is not running (no process in its network namespace)")
    assert lines[5] == "3 check(s) disagree with their expectation (3 of them could not run)"
    box.sh(*env, "down", timeout=120)
    assert box.snapshot() == start
    assert box.cgroup_dirs() == []


def test_inside_checks_resolve_names_as_the_container_does(sandbox, tmp_path) -> None:
    """`inside: true`: the probe runs in the container's root, so its /etc/hosts answers (a name it does not
    know is an error, never a pass), and the lab's own script judges the same."""
    lab_file = tmp_path / "inside.yaml"
    lab_file.write_text("""
name: inside
networks:
  lan: {subnet: 10.45.0.0/24}
containers:
  a: {command: [sleep, "600"], networks: [lan]}
  b: {command: [sh, -c, "mkdir -p /www && echo hi from b > /www/index.html && exec httpd -f -p 80 -h /www"],
      networks: [lan]}
checks:
  - {name: "a -> b by its own /etc/hosts", from: a, ping: b, inside: true}
  - {name: "a -> b's web server, by name, inside", from: a, http: "http://b/", contains: hi from b, inside: true}
  - {name: "a -> a name it does not know", from: a, ping: nosuch, inside: true, expect: fail}
""")
    start = sandbox.snapshot()
    script = sandbox.wrapdock("--quiet", "lab", "script", str(lab_file)).stdout  # planned before the lab is up
    sandbox.wrapdock("--quiet", "lab", "up", str(lab_file))
    checked = sandbox.wrapdock("--quiet", "lab", "check", str(lab_file), "--format", "json", check=False)
    results = json.loads(checked.stdout)
    assert [r["got"] for r in results] == ["ok", "ok", "error"], results
    assert "bad address" in results[2]["detail"]
    ran = sandbox.sh("bash", "-s", "check", input=script, check=False).stdout  # the same containers, by the script
    assert "PASS  ok    a -> b by its own /etc/hosts" in ran and "PASS  ok    a -> b's web server" in ran, ran
    assert "ERROR error a -> a name it does not know (expected fail): could not run:" in ran, ran
    sandbox.wrapdock("--quiet", "lab", "down", str(lab_file))
    assert_nothing_left(sandbox, start)
