"""The one place where commands run: print the trail, execute through `sh`, roll back on failure.

Planning decides; this module only carries a plan out. Tests give it a fake executor (the seam),
never a mock of `sh`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from wrapdock.errors import EnvironmentProblem, OperationFailed
from wrapdock.plan import Plan, Step, cmd
from wrapdock.shell import brief, quote, step_text


@dataclass(frozen=True)
class Result:
    """What one command did: its exit code and output (a docstring: dataclasses needs no inspect then)."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    refused: bool = False  # exited 0 but answered otherwise than the step expects (`etcdctl txn`: FAILURE)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.refused


class Executor(Protocol):
    def __call__(self, argv: Sequence[str], stdin: str | None) -> Result: ...


_ANY_EXIT = [*range(-64, 0), *range(256)]


_commands: dict[str, object] = {}  # program name -> its sh.Command: found in PATH once per process


def _sh_command(name: str):
    """The `sh` command object for a program; a missing program is an environment problem."""
    from wrapdock.quickimport import load_sh  # only commands that change or read the host need sh

    sh = load_sh()
    command = _commands.get(name)
    if command is None:
        try:
            command = _commands[name] = sh.Command(name)
        except sh.CommandNotFound:
            raise EnvironmentProblem(f"command not found: {name} (see README: Set-up)") from None
    return sh, command


STDIN_PIECE = 4096  # PIPE_BUF on Linux: a write of this size to a pipe is whole, never cut short


def stdin_pieces(stdin: str) -> list[bytes]:
    """A command's input as `sh` is given it: in pieces of PIPE_BUF bytes, each written with one `os.write`.
    Given a string, `sh` writes 1 KiB pieces, each a round trip through its feeding thread: ~1.6 ms more
    for a 25 KiB script (the neighbours' /etc/hosts at 1000 containers: 150 interleaved runs)."""
    data = stdin.encode()
    return [data[i : i + STDIN_PIECE] for i in range(0, len(data), STDIN_PIECE)]


def sh_executor(argv: Sequence[str], stdin: str | None) -> Result:
    """Run one command with `sh`: no pty, output captured, every exit code returned (not raised)."""
    started = time.monotonic()
    _, command = _sh_command(argv[0])
    finished = command(
        *argv[1:],
        _in=None if stdin is None else stdin_pieces(stdin),
        _tty_out=False,
        _return_cmd=True,
        _ok_code=_ANY_EXIT,
        _decode_errors="replace",
    )
    return Result(
        argv=tuple(argv),
        exit_code=finished.exit_code,
        stdout=finished.stdout.decode(errors="replace"),
        stderr=finished.stderr.decode(errors="replace"),
        seconds=time.monotonic() - started,
    )


def sh_attached(argv: Sequence[str]) -> Result:
    """Run one command with this terminal (stdin, stdout, stderr inherited): a workload, an exec."""
    started = time.monotonic()
    sh, command = _sh_command(argv[0])
    try:
        command(*argv[1:], _fg=True)  # _fg takes no other options: a failure arrives as an exception
        code = 0
    except sh.ErrorReturnCode as failed:
        code = failed.exit_code
    return Result(tuple(argv), 128 - code if code < 0 else code, "", "", time.monotonic() - started)


class Trail:
    """Shows what runs: `+ command` lines under `# note` headings, or JSON lines, or nothing."""

    def __init__(self, mode: str = "text", stream: TextIO | None = None) -> None:
        if mode not in ("text", "json", "quiet"):
            raise ValueError(mode)
        self.mode = mode
        self.stream = stream
        self._last_note: str | None = None

    def _write(self, text: str) -> None:
        import sys

        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def heading(self, note: str) -> None:
        if self.mode == "text" and note != self._last_note:
            self._write(f"# {note}")
        self._last_note = note

    def command(self, text: str) -> None:
        if self.mode == "text":
            self._write("+ " + text.replace("\n", "\n  "))

    def remark(self, text: str) -> None:
        if self.mode == "text":
            self._write(f"  ({text})")

    def executed(self, result: Result, phase: str, note: str, stdin: Sequence[str]) -> None:
        if self.mode == "json":
            record = {
                "phase": phase,
                "note": note,
                "argv": list(result.argv),
                "exit_code": result.exit_code,
                "duration_ms": round(result.seconds * 1000, 3),
            }
            if stdin:
                record["stdin"] = list(stdin)
            self._write(json.dumps(record))


AuditSink = Callable[[dict], None]
AUDIT_STDIN_BYTES = 4096  # the head kept of a longer input
AUDIT_STDIN_FULL_BYTES = 16384  # an input up to this size is kept whole (a start's own script: ~8 KiB)


def audited_stdin(stdin: Sequence[str]) -> dict:
    """What audit.log keeps of a command's input: all of it up to AUDIT_STDIN_FULL_BYTES; beyond that
    its first lines up to AUDIT_STDIN_BYTES, the number of lines and the SHA-256 of the whole input (as
    fed to the command). The /etc/hosts rewrite of a start lists every container of the network: logged
    in full, the log would grow with the square of the containers (94 MiB at 1000). (A start's own
    script is kept whole.)"""
    if sum(len(line) + 1 for line in stdin) <= AUDIT_STDIN_FULL_BYTES:  # characters: ~bytes, cheaper
        return {"stdin": list(stdin)}
    from wrapdock.names import sha256_hex

    head: list[str] = []
    kept = 0
    for line in stdin:
        kept += len(line) + 1
        if kept > AUDIT_STDIN_BYTES:
            break
        head.append(line)
    data = ("\n".join(stdin) + "\n").encode()
    return {"stdin": head, "stdin_lines": len(stdin), "stdin_bytes": len(data),
            "stdin_sha256": sha256_hex(data)}



class Runner:
    """Executes plans step by step; on failure undoes the completed steps in reverse.

    `fail_at` (1-based) makes the k-th changing command of the run fail without running it: the
    fault-injection hook the reliability tests use (set from WRAPDOCK_FAIL_AT by the CLI).
    """

    def __init__(self, trail: Trail, execute: Executor = sh_executor, audit: AuditSink | None = None,
                 fail_at: int | None = None,
                 execute_attached: Callable[[Sequence[str]], Result] = sh_attached) -> None:
        self.trail = trail
        self.execute = execute
        self.execute_attached = execute_attached
        self.audit = audit
        self.fail_at = fail_at
        self.changes_run = 0

    # -- low level ---------------------------------------------------------------------------
    def _run(self, argv: Sequence[str], stdin: Sequence[str], phase: str, note: str) -> Result:
        text = "\n".join(stdin) + "\n" if stdin else None
        if phase == "do":
            self.changes_run += 1
            if self.fail_at is not None and self.changes_run == self.fail_at:
                result = Result(tuple(argv), 1, "", f"injected fault at command {self.fail_at}", 0.0)
                self._record(result, phase, note, stdin)
                return result
        result = self.execute(argv, text)
        self._record(result, phase, note, stdin)
        return result

    def _record(self, result: Result, phase: str, note: str, stdin: Sequence[str]) -> None:
        self.trail.executed(result, phase, note, stdin)
        if self.audit is not None:
            self.audit({
                "time": time.time(),
                "pid": os.getpid(),
                "phase": phase,
                "argv": list(result.argv),
                **audited_stdin(stdin),
                "exit_code": result.exit_code,
                "duration_ms": round(result.seconds * 1000, 3),
            })

    def query(self, argv: Sequence[str], note: str, stdin: Sequence[str] = ()) -> Result:
        """Read the host (never changes it); shown in the trail like any command (a batch with its input)."""
        self.trail.heading(note)
        self.trail.command(step_text(cmd(*argv, note=note, stdin=stdin)) if stdin else quote(argv))
        return self._run(argv, stdin, "query", note)

    # -- steps and plans -----------------------------------------------------------------------
    def _step(self, step: Step, phase: str) -> tuple[Result | None, bool]:
        """Run one step; returns (result of the main command or None if skipped, skipped?)."""
        self.trail.heading(step.note)
        self.trail.command(step_text(step))
        if step.skip_if:
            if self._run(step.skip_if, (), "check", step.note).ok:
                self.trail.remark("already in place")
                return None, True
        elif step.only_if and not self._run(step.only_if, (), "check", step.note).ok:
            self.trail.remark("already gone")
            return None, True
        result = self._run(step.argv, step.stdin, phase, step.note)
        if result.ok and step.answers is not None and _first_line(result.stdout) != step.answers:
            verdict = _first_line(result.stdout) or "nothing"
            result = Result(result.argv, result.exit_code, result.stdout,
                            f"it answered {verdict}, not {step.answers}: {_rest(result.stdout)}", result.seconds,
                            refused=True)
        return result, False

    def apply(self, plan: Plan) -> list[Step]:
        """Carry out a plan, or leave the host as it found it and raise OperationFailed.

        Returns the steps that ran, so a caller whose own next move fails can still roll them back.
        """
        completed: list[Step] = []
        current: Step | None = None
        try:
            for step in plan.steps:
                current = step
                result, skipped = self._step(step, "do")
                if skipped:
                    continue
                assert result is not None
                if not result.ok:
                    if step.partial:  # it may have done part of its work: undo that too
                        completed.append(step)
                    undone, undo_errors = self.rollback(completed)
                    completed, current = [], None  # rolled back: nothing left for the handler below
                    raise CommandFailed(result, undone, undo_errors)
                completed.append(step)
                current = None
        except BaseException:  # a missing tool or Ctrl-C halfway: still leave the host as it was
            if current is not None and current.partial and current not in completed:
                completed.append(current)
            if completed:
                self.rollback(completed)
            raise
        return completed

    def attach(self, step: Step) -> int:
        """Run a step on the user's terminal and return its exit code (the workload's: no rollback)."""
        self.trail.heading(step.note)
        self.trail.command(step_text(step))
        result = self.execute_attached(step.argv)
        self._record(result, "attach", step.note, ())
        return result.exit_code

    def rollback(self, completed: list[Step]) -> tuple[int, list[str]]:
        undos = [step.undo for step in reversed(completed) if step.undo is not None]
        errors: list[str] = []
        if not undos:
            return 0, errors
        self.trail.heading(f"rollback: undo {len(undos)} completed step(s), last first")
        self.trail._last_note = "rollback"  # keep the undo lines under the rollback heading
        for undo in undos:
            self.trail.command(step_text(undo))
            if undo.only_if and not self._run(undo.only_if, (), "check", "rollback").ok:
                self.trail.remark("already gone")
                continue
            result = self._run(undo.argv, undo.stdin, "undo", "rollback")
            if not result.ok:
                errors.append(f"{brief(undo.argv)}: {_last_line(result.stderr)}")
        return len(undos), errors


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def _rest(text: str) -> str:
    """What followed the verdict line (a txn's failure branch: who holds the key), on one line."""
    return " ".join(text.split("\n", 1)[1].split()) if "\n" in text else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


class CommandFailed(OperationFailed):
    """A plan's command failed and the plan was rolled back; `cause` (the command, its exit code and
    stderr) is kept apart from the rollback, for callers that report several failures (gc)."""

    def __init__(self, result: Result, undone: int, undo_errors: list[str]) -> None:
        self.result = result
        self.error = _last_line(result.stderr)
        self.cause = f"`{brief(result.argv)}` failed (exit {result.exit_code}): {self.error}"
        self.undone = undone
        self.undo_errors = undo_errors
        super().__init__(self.cause + "; " + self.rollback_text)

    @property
    def rollback_text(self) -> str:
        if self.undo_errors:
            return (f"rollback incomplete, {len(self.undo_errors)} undo step(s) failed: "
                    + "; ".join(self.undo_errors))
        return f"rolled back {self.undone} step(s)"
