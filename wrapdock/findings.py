"""What `wrapdock doctor` reports: one finding per problem, each with the commands that fix it.

A module of its own so that the checks of each kind of object (doctor.py; overlaycheck.py for vxlan
networks) can make findings without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    """One problem doctor reports: how bad, which check, what it concerns, and the commands that fix it."""

    severity: str  # error | warning
    check: str  # a stable id, e.g. "orphan-veth"
    subject: str
    text: str  # one line: what is wrong and what it breaks
    fix: tuple[str, ...]  # commands

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "check": self.check, "subject": self.subject, "finding": self.text,
                "fix": list(self.fix)}
