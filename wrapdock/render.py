"""`--print-only`: a plan as a standalone bash script, laid out by templates/script.sh.tmpl."""

from __future__ import annotations

from collections.abc import Sequence

from wrapdock import __version__, resources
from wrapdock.plan import Plan
from wrapdock.shell import quote, step_text


def comment_text(text: str) -> str:
    """Text that is safe inside a `#` comment: a newline in a name must not end the comment."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


FAILED = "failed_repairs"  # the script's list of the repairs that failed (plans with a `repair` name)


def _on_its_own(lines: list[str], repair: str) -> list[str]:
    """A repair's commands in a subshell of their own with `set -e`: the first failing command ends the
    repair, not the script, which notes it and goes on (no `if ! (...)`: that would switch `set -e` off)."""
    return ["set +e; (", "set -e", *lines, "); repair_status=$?; set -e",
            f'[ "$repair_status" -eq 0 ] || {FAILED}+=({quote([repair])})']


def script_body(plans: Sequence[Plan]) -> str:
    blocks: list[str] = []
    for plan in plans:
        lines: list[str] = []
        last_note = None
        for step in plan.steps:
            if step.note != last_note:
                lines.append(f"# {comment_text(step.note)}")
                last_note = step.note
            lines.append(step_text(step))
        if plan.repair and lines:
            lines = _on_its_own(lines, plan.repair)
        blocks.append("\n".join([f"### {comment_text(plan.title)}", *lines]))
    return "\n\n".join(blocks)


STOPS = ("It stops at the first failing command (set -e) and does not undo what ran before;")
GOES_ON = ("Each repair (### block) runs on its own: a failing command ends that repair, the script goes\n"
           "# on with the others, names the failed ones at the end and exits 1; nothing is undone;")


def render_script(plans: Sequence[Plan], command: Sequence[str]) -> str:
    title = "; ".join(plan.title for plan in plans) or "nothing to do"
    body = script_body(plans)
    repairs = any(plan.repair and plan.steps for plan in plans)
    if repairs:
        body = (f"{FAILED}=()\n\n{body}\n\n"
                f'if [ "${{#{FAILED}[@]}}" -gt 0 ]; then\n'
                f"    printf 'could not %s (its failing command is shown above)\\n' \"${{{FAILED}[@]}}\" >&2\n"
                "    exit 1\nfi")
    return resources.fill(resources.template("script.sh.tmpl"), dict(
        title=comment_text(title),
        version=__version__,
        command=comment_text(quote(["wrapdock", *command])),
        on_failure=GOES_ON if repairs else STOPS,
        body=body,
    ))
