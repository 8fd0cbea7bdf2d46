"""Runner, Trail and rollback, driven through a fake executor (never `sh`, never the host)."""

from __future__ import annotations

import io
import json

import pytest

from tests.unit.fakes import FakeHost
from wrapdock.errors import EnvironmentProblem, OperationFailed
from wrapdock.plan import Plan, Step, cmd
from wrapdock.runner import Result, Runner, Trail


def make_runner(host: FakeHost, mode: str = "text", **kwargs) -> tuple[Runner, io.StringIO]:
    stream = io.StringIO()
    return Runner(Trail(mode, stream), execute=host, **kwargs), stream


def undoable(name: str, note: str = "build") -> Step:
    return cmd("make", name, note=note, undo=cmd("unmake", name, note=note))


def five_step_plan() -> Plan:
    plan = Plan("five things")
    plan.add(undoable("a"))
    plan.add(cmd("touch-only", "b", note="build"))  # no undo: must not appear in the rollback
    plan.add(undoable("c", note="more"))
    plan.add(undoable("d", note="more"))
    plan.add(undoable("e", note="last"))
    return plan


# -- trail ---------------------------------------------------------------------------------------
def test_text_trail_headings_and_quoted_commands() -> None:
    host = FakeHost()
    runner, stream = make_runner(host)
    plan = Plan("t")
    plan.add(cmd("ip", "link", "add", "my br", note="make the bridge"))
    plan.add(cmd("echo", "it's", "$HOME", note="make the bridge"))
    plan.add(cmd("true", note="second note"))
    runner.apply(plan)
    assert stream.getvalue().splitlines() == [
        "# make the bridge",
        "+ ip link add 'my br'",
        "+ echo 'it'\"'\"'s' '$HOME'",
        "# second note",
        "+ true",
    ]


def test_text_trail_shows_probe_and_remarks() -> None:
    host = FakeHost()
    ensure = cmd("add", "x", note="ensure", skip_if=("has", "x"))
    guarded = cmd("del", "y", note="guarded", only_if=("has", "y"))
    host.declare_probes([("has", "x"), ("has", "y")])
    host.present.add(("has", "x"))  # x is in place already; y is gone already
    runner, stream = make_runner(host)
    assert runner.apply(Plan("p", [ensure, guarded])) == []
    assert stream.getvalue().splitlines() == [
        "# ensure",
        "+ has x >/dev/null 2>&1 || add x",
        "  (already in place)",
        "# guarded",
        "+ if has y >/dev/null 2>&1; then del y; fi",
        "  (already gone)",
    ]
    assert host.argvs == [("has", "x"), ("has", "y")]


def test_text_trail_indents_batch_input() -> None:
    host = FakeHost()
    runner, stream = make_runner(host)
    runner.apply(Plan("p", [cmd("ip", "-batch", "-", note="batch", stdin=["link add a type dummy", "link add b"])]))
    assert stream.getvalue().splitlines() == [
        "# batch",
        "+ ip -batch - <<'WRAPDOCK_EOF'",
        "  link add a type dummy",
        "  link add b",
        "  WRAPDOCK_EOF",
    ]
    assert host.calls == [(("ip", "-batch", "-"), "link add a type dummy\nlink add b\n")]


def test_json_trail_one_record_per_executed_command() -> None:
    host = FakeHost()
    host.declare_probes([("has", "x")])
    runner, stream = make_runner(host, mode="json")
    plan = Plan("p", [cmd("add", "x", note="ensure x", skip_if=("has", "x")),
                      cmd("feed", note="batch", stdin=["one", "two"])])
    runner.apply(plan)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["argv"] for r in records] == [["has", "x"], ["add", "x"], ["feed"]]
    assert [r["phase"] for r in records] == ["check", "do", "do"]
    assert [r["exit_code"] for r in records] == [1, 0, 0]
    assert records[0]["note"] == "ensure x"
    assert records[1]["duration_ms"] == pytest.approx(12.5)
    assert records[2]["stdin"] == ["one", "two"]
    assert "stdin" not in records[1]
    for record in records:
        assert set(record) >= {"argv", "exit_code", "duration_ms", "phase", "note"}


def test_json_trail_marks_rollback_commands() -> None:
    host = FakeHost(failing={("make", "c"): "boom"})
    runner, stream = make_runner(host, mode="json")
    with pytest.raises(OperationFailed):
        runner.apply(five_step_plan())
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["phase"], r["argv"]) for r in records] == [
        ("do", ["make", "a"]), ("do", ["touch-only", "b"]), ("do", ["make", "c"]), ("undo", ["unmake", "a"])]
    assert records[2]["exit_code"] == 1


def test_quiet_trail_prints_nothing_but_still_runs() -> None:
    host = FakeHost(failing={("make", "d"): "no"})
    runner, stream = make_runner(host, mode="quiet")
    with pytest.raises(OperationFailed):
        runner.apply(five_step_plan())
    assert stream.getvalue() == ""
    assert host.argvs[-2:] == [("unmake", "c"), ("unmake", "a")]


def test_trail_refuses_unknown_mode() -> None:
    with pytest.raises(ValueError):
        Trail("loud")


def test_query_is_shown_and_returned() -> None:
    host = FakeHost(outputs={("ip", "-j", "addr"): "[]"})
    audit: list[dict] = []
    runner, stream = make_runner(host, audit=audit.append)
    result = runner.query(("ip", "-j", "addr"), "read the host")
    assert result.stdout == "[]" and result.ok
    assert stream.getvalue().splitlines() == ["# read the host", "+ ip -j addr"]
    assert audit[0]["phase"] == "query"
    assert runner.changes_run == 0


# -- apply, skip, rollback ---------------------------------------------------------------------
def test_apply_returns_the_completed_steps_in_order() -> None:
    host = FakeHost()
    host.declare_probes([("has", "b")])
    host.present.add(("has", "b"))
    steps = [undoable("a"), cmd("make", "b", note="n", skip_if=("has", "b")), undoable("c")]
    runner, _ = make_runner(host)
    assert runner.apply(Plan("p", steps)) == [steps[0], steps[2]]
    assert host.argvs == [("make", "a"), ("has", "b"), ("make", "c")]


def test_only_if_probe_that_succeeds_runs_the_step() -> None:
    host = FakeHost()
    host.declare_probes([("has", "y")])
    host.present.add(("has", "y"))
    step = cmd("del", "y", note="n", only_if=("has", "y"))
    runner, stream = make_runner(host)
    assert runner.apply(Plan("p", [step])) == [step]
    assert host.argvs == [("has", "y"), ("del", "y")]
    assert "already" not in stream.getvalue()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_failure_at_step_k_undoes_completed_steps_in_reverse(k: int) -> None:
    plan = five_step_plan()
    failing = plan.steps[k - 1].argv
    host = FakeHost(failing={failing: "some noise\nRTNETLINK answers: File exists\n"})
    runner, _ = make_runner(host)
    with pytest.raises(OperationFailed) as caught:
        runner.apply(plan)
    done = plan.steps[:k - 1]
    expected_undos = [s.undo.argv for s in reversed(done) if s.undo is not None]
    assert host.argvs == [s.argv for s in plan.steps[:k]] + expected_undos
    message = caught.value.message
    assert "\n" not in message
    assert message == (f"`{' '.join(failing)}` failed (exit 1): RTNETLINK answers: File exists; "
                       f"rolled back {len(expected_undos)} step(s)")
    assert caught.value.exit_code == 1


def test_failure_message_quotes_the_command_and_handles_silent_failures() -> None:
    bad = ("ip", "link", "add", "a b;c")
    host = FakeHost(failing={bad: ""})
    runner, _ = make_runner(host)
    with pytest.raises(OperationFailed) as caught:
        runner.apply(Plan("p", [cmd(*bad, note="n")]))
    assert caught.value.message == "`ip link add 'a b;c'` failed (exit 1): no error output; rolled back 0 step(s)"


def test_rollback_skips_steps_that_were_skipped() -> None:
    host = FakeHost(failing={("make", "z"): "bad"})
    host.declare_probes([("has", "b")])
    host.present.add(("has", "b"))
    plan = Plan("p", [undoable("a"),
                      cmd("make", "b", note="n", skip_if=("has", "b"), undo=cmd("unmake", "b", note="n")),
                      undoable("z")])
    runner, _ = make_runner(host)
    with pytest.raises(OperationFailed):
        runner.apply(plan)
    assert ("unmake", "b") not in host.argvs
    assert host.argvs[-1] == ("unmake", "a")


def test_rollback_heading_in_text_trail() -> None:
    host = FakeHost(failing={("make", "d"): "nope"})
    runner, stream = make_runner(host)
    with pytest.raises(OperationFailed):
        runner.apply(five_step_plan())
    lines = stream.getvalue().splitlines()
    start = lines.index("# rollback: undo 2 completed step(s), last first")
    assert lines[start + 1:] == ["+ unmake c", "+ unmake a"]


def test_failed_undo_is_reported_and_the_rest_still_run() -> None:
    host = FakeHost(failing={("make", "e"): "out of cheese", ("unmake", "d"): "busy\nDevice busy"})
    runner, _ = make_runner(host)
    with pytest.raises(OperationFailed) as caught:
        runner.apply(five_step_plan())
    assert host.argvs[-3:] == [("unmake", "d"), ("unmake", "c"), ("unmake", "a")]
    assert caught.value.message == (
        "`make e` failed (exit 1): out of cheese; rollback incomplete, 1 undo step(s) failed: "
        "unmake d: Device busy")


def test_guarded_undo_is_skipped_when_already_gone() -> None:
    host = FakeHost(failing={("make", "b"): "x"})
    host.declare_probes([("has", "a")])
    plan = Plan("p", [cmd("make", "a", note="n", undo=cmd("unmake", "a", note="n", only_if=("has", "a"))),
                      cmd("make", "b", note="n")])
    runner, stream = make_runner(host)
    with pytest.raises(OperationFailed):
        runner.apply(plan)
    assert host.argvs == [("make", "a"), ("make", "b"), ("has", "a")]
    assert stream.getvalue().splitlines()[-1] == "  (already gone)"


def test_explicit_rollback_of_returned_steps() -> None:
    """A caller whose own next move fails rolls back what apply() returned."""
    host = FakeHost()
    runner, _ = make_runner(host)
    completed = runner.apply(five_step_plan())
    assert len(completed) == 5
    undone, errors = runner.rollback(completed)
    assert (undone, errors) == (4, [])
    assert host.argvs[5:] == [("unmake", "e"), ("unmake", "d"), ("unmake", "c"), ("unmake", "a")]


def partial_batch(partial: bool = True) -> Step:
    """An `ip -batch` that may stop half-way, undone by a guarded script."""
    undo = cmd("sh", "-s", note="batch", stdin=["[ ! -e x ] || del x", "[ ! -e y ] || del y"])
    return cmd("ip", "-batch", "-", note="batch", stdin=["link add x type dummy", "link add y type dummy"],
               partial=partial, undo=undo)


@pytest.mark.parametrize("partial", [True, False])
def test_failing_partial_step_runs_its_own_undo_then_the_completed_ones_in_reverse(partial: bool) -> None:
    host = FakeHost(failing={("ip", "-batch", "-"): "Command failed -:2"})
    plan = Plan("p", [undoable("a"), cmd("touch-only", "b", note="build"), undoable("c"), partial_batch(partial),
                      undoable("z")])
    runner, stream = make_runner(host)
    with pytest.raises(OperationFailed) as caught:
        runner.apply(plan)
    ran = [("make", "a"), ("touch-only", "b"), ("make", "c"), ("ip", "-batch", "-")]
    own_undo = [("sh", "-s")] if partial else []  # a step that is not partial failed as a whole: nothing to undo
    assert host.argvs == ran + own_undo + [("unmake", "c"), ("unmake", "a")]
    if partial:
        assert host.calls[4] == (("sh", "-s"), "[ ! -e x ] || del x\n[ ! -e y ] || del y\n")
    assert caught.value.message == (f"`ip -batch -` failed (exit 1): Command failed -:2; "
                                    f"rolled back {len(own_undo) + 2} step(s)")
    lines = stream.getvalue().splitlines()
    start = lines.index(f"# rollback: undo {len(own_undo) + 2} completed step(s), last first")
    assert lines[start + 1:] == [*(["+ sh -s <<'WRAPDOCK_EOF'", "  [ ! -e x ] || del x", "  [ ! -e y ] || del y",
                                    "  WRAPDOCK_EOF"] if partial else []), "+ unmake c", "+ unmake a"]


def test_partial_step_that_succeeds_is_undone_like_any_other() -> None:
    host = FakeHost(failing={("make", "z"): "no"})
    runner, _ = make_runner(host)
    with pytest.raises(OperationFailed, match="rolled back 2 step"):
        runner.apply(Plan("p", [undoable("a"), partial_batch(), undoable("z")]))
    assert host.argvs == [("make", "a"), ("ip", "-batch", "-"), ("make", "z"), ("sh", "-s"), ("unmake", "a")]


def test_failing_partial_step_without_undo_rolls_back_the_others_only() -> None:
    host = FakeHost(failing={("ip", "-batch", "-"): "x"})
    runner, _ = make_runner(host)
    with pytest.raises(OperationFailed, match="rolled back 1 step"):
        runner.apply(Plan("p", [undoable("a"), cmd("ip", "-batch", "-", note="n", stdin=["l"], partial=True)]))
    assert host.argvs == [("make", "a"), ("ip", "-batch", "-"), ("unmake", "a")]


# -- fault injection and audit -----------------------------------------------------------------
def test_fail_at_counts_changing_commands_only_and_never_runs_the_faulted_one() -> None:
    host = FakeHost()
    host.declare_probes([("has", "x")])
    plan = Plan("p", [undoable("a"), cmd("make", "x", note="n", skip_if=("has", "x"),
                                        undo=cmd("unmake", "x", note="n")), undoable("c")])
    runner, _ = make_runner(host, fail_at=3)
    with pytest.raises(OperationFailed) as caught:
        runner.apply(plan)
    # probe ("has", "x") is not a change; the 3rd change is ("make", "c"), which never reaches the host
    assert host.argvs == [("make", "a"), ("has", "x"), ("make", "x"), ("unmake", "x"), ("unmake", "a")]
    assert "injected fault at command 3" in caught.value.message
    assert caught.value.message.startswith("`make c` failed (exit 1)")


def test_fail_at_beyond_the_plan_changes_nothing() -> None:
    host = FakeHost()
    runner, _ = make_runner(host, fail_at=6)
    assert len(runner.apply(five_step_plan())) == 5
    assert runner.changes_run == 5


def test_audit_sink_sees_every_command() -> None:
    host = FakeHost(failing={("make", "d"): "no"})
    host.declare_probes([("has", "q")])
    audit: list[dict] = []
    plan = five_step_plan()
    plan.steps.insert(1, cmd("make", "q", note="n", skip_if=("has", "q")))
    runner, _ = make_runner(host, audit=audit.append)
    with pytest.raises(OperationFailed):
        runner.apply(plan)
    assert [tuple(e["argv"]) for e in audit] == host.argvs
    assert [e["phase"] for e in audit] == ["do", "check", "do", "do", "do", "do", "undo", "undo"]
    assert [e["exit_code"] for e in audit].count(1) == 2  # the probe that found nothing, and make d
    for entry in audit:
        assert {"time", "pid", "phase", "argv", "stdin", "exit_code", "duration_ms"} <= set(entry)
        json.dumps(entry)


def test_audit_records_injected_fault() -> None:
    audit: list[dict] = []
    runner, _ = make_runner(FakeHost(), audit=audit.append, fail_at=1)
    with pytest.raises(OperationFailed):
        runner.apply(Plan("p", [cmd("make", "a", note="n")]))
    assert audit[0]["argv"] == ["make", "a"] and audit[0]["exit_code"] == 1


def test_executor_exception_mid_plan_still_rolls_back() -> None:
    host = FakeHost(raising={("make", "c"): EnvironmentProblem("command not found: make")})
    runner, _ = make_runner(host)
    with pytest.raises(EnvironmentProblem):
        runner.apply(five_step_plan())
    assert host.argvs[-1] == ("unmake", "a")


def test_result_ok() -> None:
    assert Result(("x",), 0, "", "", 0.0).ok
    assert not Result(("x",), 2, "", "", 0.0).ok


def test_step_validation() -> None:
    with pytest.raises(ValueError):
        Step(argv=(), note="n")
    with pytest.raises(ValueError):
        cmd("x", note="n", skip_if=("a",), only_if=("b",))


def test_audit_keeps_a_long_input_as_its_head_count_and_digest() -> None:
    import hashlib

    from wrapdock.runner import AUDIT_STDIN_BYTES

    audit: list[dict] = []
    runner, _ = make_runner(FakeHost(), audit=audit.append)
    long = [f"line {i} " + "x" * 60 for i in range(1000)]
    runner.apply(Plan("p", [cmd("feed", note="short", stdin=["one", "two"]), cmd("feed", note="long", stdin=long)]))
    short_entry, long_entry = audit
    assert short_entry["stdin"] == ["one", "two"] and "stdin_sha256" not in short_entry
    assert long_entry["stdin"] == long[:len(long_entry["stdin"])]
    assert 0 < sum(len(line) + 1 for line in long_entry["stdin"]) <= AUDIT_STDIN_BYTES
    text = ("\n".join(long) + "\n").encode()
    assert long_entry["stdin_lines"] == 1000 and long_entry["stdin_bytes"] == len(text)
    assert long_entry["stdin_sha256"] == hashlib.sha256(text).hexdigest()
    medium = [f"line {i} " + "x" * 60 for i in range(120)]  # ~8 KiB, as a start's own script: kept whole
    audit.clear()
    runner.apply(Plan("p", [cmd("feed", note="medium", stdin=medium)]))
    assert audit[0]["stdin"] == medium and "stdin_sha256" not in audit[0]
