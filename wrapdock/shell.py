"""How a step reads as shell: one function shared by the trail and the `--print-only` script."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from wrapdock.plan import Step

HEREDOC_END = "WRAPDOCK_EOF"


def quote(argv: Sequence[str]) -> str:
    """Shell-quote every word (safe for any name, quote or metacharacter)."""
    return shlex.join(argv)


def brief(argv: Sequence[str]) -> str:
    """A command on one line, for an error message: a program given as an argument (an `sh -c` script) is named by
    its length, not printed (the trail and --print-only show it whole)."""
    return " ".join(shlex.quote(f"<{w.count(chr(10)) + 1}-line program>") if "\n" in w else shlex.quote(w)
                    for w in argv)


def probe_text(argv: Sequence[str]) -> str:
    """A probe only answers yes or no; its output is noise (`test` prints none)."""
    if argv[0] == "test":
        return quote(argv)
    return f"{quote(argv)} >/dev/null 2>&1"


def step_text(step: Step) -> str:
    """The shell text of a step: exactly what the runner does, in a form bash runs the same way."""
    line = quote(step.argv)
    # the verdict is the first output line, not the exit code (`etcdctl txn` exits 0 on FAILURE)
    verdict = f" | sed -n 1p | grep -x {quote([step.answers])} >/dev/null" if step.answers is not None else ""
    if step.stdin:
        body = "\n".join(step.stdin)
        if HEREDOC_END in body.split("\n"):
            raise ValueError(f"batch input may not contain the line {HEREDOC_END}")
        guard = f"{probe_text(step.skip_if)} || " if step.skip_if else ""
        return f"{guard}{line} <<'{HEREDOC_END}'{verdict}\n{body}\n{HEREDOC_END}"
    line += verdict
    if step.skip_if:
        return f"{probe_text(step.skip_if)} || {line}"
    if step.only_if:
        return f"if {probe_text(step.only_if)}; then {line}; fi"
    return line
