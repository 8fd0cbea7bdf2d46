"""What a lab check's probe got: ok, fail (it ran and got no answer) or error (it could not run).

A check that could not run must never pass, not even one that expects `fail`. The verdict comes from
what the probe itself says: its exit code, and for exit 1 (which busybox ping and wget, and bash's
/dev/tcp, also give for some errors) the text it printed. The standalone lab script applies the same
rules in bash (templates/lab.sh.tmpl, filled from ERROR_TEXTS and RAN_CODES here).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# Exit codes of a probe that ran and got no answer: busybox ping/wget and bash's /dev/tcp|udp give 1
# (no reply, refused, unreachable), `timeout` gives 124. Every other non-zero code is an error: 125
# (timeout itself failed), 126/127 (tool not executable / missing), 255 (`ip netns exec` could not
# enter the namespace or run the tool), 128+N (killed by a signal).
RAN_CODES = (1, 124)

# What the probes print when, with exit 1, they could not even try: the target does not resolve
# (busybox "bad address"; glibc's texts, as bash prints them) or ping may not open its socket.
ERROR_TEXTS = (
    "bad address",
    "Name or service not known",
    "Temporary failure in name resolution",
    "No address associated with hostname",
    "permission denied (are you root?)",
)


@dataclass(frozen=True)
class Outcome:
    """What one connectivity probe showed: an answer, silence, or why it could not run."""

    got: str  # ok | fail | error
    reason: str  # one line: why (the probe's last line, or what kept it from running)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def classify(exit_code: int, output: str) -> Outcome:
    """The outcome of a probe from its exit code and its output (stdout and stderr)."""
    if exit_code == 0:
        return Outcome("ok", last_line(output))
    for line in output.splitlines():  # the first line that says it could not try (as the script reads it)
        if any(text in line for text in ERROR_TEXTS):
            return Outcome("error", line.strip())
    if exit_code in RAN_CODES:
        return Outcome("fail", "timed out" if exit_code == 124 else last_line(output) or f"exit {exit_code}")
    return could_not_run(exit_code, output)


def could_not_run(exit_code: int, output: str) -> Outcome:
    """An error with its exit code and the last line the tool printed (e.g. `ip netns exec`'s)."""
    reason = last_line(output)
    return Outcome("error", f"exit {exit_code}: {reason}" if reason else f"exit {exit_code}")


def bash_error_patterns() -> str:
    """ERROR_TEXTS as one bash `case` pattern: *'bad address'*|*'Name or service not known'*|..."""
    return "|".join(f"*{shlex.quote(text)}*" for text in ERROR_TEXTS)
