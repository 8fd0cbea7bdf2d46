"""`--print-only`: a plan as a standalone bash script, laid out by templates/script.sh.tmpl."""

from __future__ import annotations

from collections.abc import Sequence

from wrapdock import __version__, resources
from wrapdock.plan import Plan
from wrapdock.shell import quote, step_text


def comment_text(text: str) -> str:
    """Text that is safe inside a `#` comment: a newline in a name must not end the comment."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def script_body(plans: Sequence[Plan]) -> str:
    blocks: list[str] = []
    for plan in plans:
        lines = [f"### {comment_text(plan.title)}"]
        last_note = None
        for step in plan.steps:
            if step.note != last_note:
                lines.append(f"# {comment_text(step.note)}")
                last_note = step.note
            lines.append(step_text(step))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_script(plans: Sequence[Plan], command: Sequence[str]) -> str:
    title = "; ".join(plan.title for plan in plans) or "nothing to do"
    return resources.fill(resources.template("script.sh.tmpl"), dict(
        title=comment_text(title),
        version=__version__,
        command=comment_text(quote(["wrapdock", *command])),
        body=script_body(plans),
    ))
