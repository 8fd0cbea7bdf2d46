"""Plans: what an operation will run, decided before anything runs.

A plan is pure data. The same plan feeds the live runner (trail + rollback), the `--print-only`
script renderer and the golden-file tests, so the three can never disagree.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

# ends an inlined batch's input: not the trail's own here-document end (the script is itself a batch)
INLINE_END = "WRAPDOCK_BATCH_EOF"


@dataclass(frozen=True)
class Step:
    """One command with the step that undoes it.

    `stdin` holds the input lines of a batch (`ip -batch -`, `iptables-restore --noflush`).
    `skip_if` is a probe that proves the step is already done (an "ensure": adding twice is
    harmless; a batch may have one too: `probe || batch <<EOF`); `only_if` is a probe that proves there
    is something to do (a delete that finds the object already gone goes on). Probes only read the host.
    """

    argv: tuple[str, ...]
    note: str
    stdin: tuple[str, ...] = ()
    undo: Step | None = None
    skip_if: tuple[str, ...] | None = None
    only_if: tuple[str, ...] | None = None
    partial: bool = False  # may fail half-way (an `ip -batch`, a script): then its own undo runs too
    # succeeded only if the first line of its output is this (`etcdctl txn` exits 0 on FAILURE too)
    answers: str | None = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a step needs a command")
        if self.skip_if and self.only_if:
            raise ValueError("a step is either an ensure (skip_if) or a guarded delete (only_if)")
        if self.stdin and self.only_if:  # `if probe; then batch <<EOF; fi` would not parse
            raise ValueError("a batch step cannot be guarded by an only_if probe")


@dataclass
class Plan:
    """An ordered list of steps for one operation; `title` heads the trail and the script.

    `repair` names a plan that is one of several independent repairs (gc's, e.g. "remove cgroup X"):
    its failure stops none of the others, and in a `--print-only` script not the script either, which
    names it at the end and exits 1.
    """

    title: str
    steps: list[Step] = field(default_factory=list)
    repair: str = ""

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def extend(self, steps: Iterable[Step]) -> None:
        self.steps.extend(steps)

    def __len__(self) -> int:
        return len(self.steps)


def cmd(*argv: str, note: str, undo: Step | None = None, stdin: Iterable[str] = (),
        skip_if: Iterable[str] | None = None, only_if: Iterable[str] | None = None, partial: bool = False,
        answers: str | None = None) -> Step:
    """Shorthand for building a step from argv words."""
    return Step(
        argv=tuple(argv),
        note=note,
        stdin=tuple(stdin),
        undo=undo,
        skip_if=tuple(skip_if) if skip_if is not None else None,
        only_if=tuple(only_if) if only_if is not None else None,
        partial=partial,
        answers=answers,
    )


def inlinable(step: Step) -> bool:
    """A step that can be a part of a script: no probe, no verdict on its output."""
    return not (step.skip_if or step.only_if or step.answers is not None)


def script_lines(step: Step) -> list[str]:
    """A step as lines of a `set -e` shell script (an `sh -s` step's own lines, a batch as a here-document,
    else its argv)."""
    if step.argv == ("sh", "-s"):
        return [line for line in step.stdin if line != "set -e"]
    if not inlinable(step):
        raise ValueError(f"cannot inline {step.argv[0]}: it has a probe or a verdict")
    if step.stdin:
        if INLINE_END in step.stdin:
            raise ValueError(f"batch input may not contain the line {INLINE_END}")
        return [f"{shlex.join(step.argv)} <<'{INLINE_END}'", *step.stdin, INLINE_END]
    return [shlex.join(step.argv)]


def batches(step: Step) -> list[Step]:
    """The batches a step feeds: a batch step itself; in a script (`sh -s`, as `inline` and `one_script`
    make them), each batch it runs as a here-document at the start of a line (`script_lines`), in order.
    What reads plans for their effect (the iptables lines a plan adds) reads merged scripts alike."""
    if step.argv != ("sh", "-s"):
        return [step] if step.stdin else []
    found: list[Step] = []
    lines = iter(step.stdin)
    for line in lines:
        if line.endswith(f" <<'{INLINE_END}'"):
            body: list[str] = []
            for inner in lines:
                if inner == INLINE_END:
                    break
                body.append(inner)
            found.append(cmd(*shlex.split(line.removesuffix(f" <<'{INLINE_END}'")), note=step.note, stdin=body))
    return found


def inline(steps: list[Step], note: str) -> Step:
    """Several steps as one `set -e` script (`sh -s`), in order: an undo that redoes what other steps did,
    with their very lines."""
    return cmd("sh", "-s", note=note, stdin=["set -e", *(line for s in steps for line in script_lines(s))])


def one_script(steps: list[Step], note: str) -> Step:
    """Several `sh -s` steps as one `sh -s` (one process, not one each), undone by their undos
    in reverse order, also as one script. It may stop half-way, so it is `partial`."""
    undos = [step.undo for step in reversed(steps) if step.undo is not None]
    undo = cmd("sh", "-s", note=note, stdin=["set -e", *(line for u in undos for line in script_lines(u))])
    return cmd("sh", "-s", note=note, stdin=["set -e", *(line for s in steps for line in script_lines(s))],
               undo=undo if undos else None, partial=True)
