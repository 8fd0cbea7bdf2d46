"""What one wrapdock invocation works with: where state lives, how the trail shows, print-only or live.

Operations take a Session and either apply a plan (live) or collect it for the script (print-only);
they never decide that themselves.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from wrapdock.state import DEFAULT_STATE_DIR, StateStore

if TYPE_CHECKING:  # read-only commands (ps, inspect, logs) never import the runner
    from wrapdock.clusterstore import Cluster
    from wrapdock.plan import Plan
    from wrapdock.runner import Runner

DEFAULT_DATA_DIR = Path("/var/lib/wrapdock")


@dataclass
class Session:
    """One operation's context: where state and data live, the runner, the flags of the command."""

    state_dir: Path = DEFAULT_STATE_DIR
    data_dir: Path = DEFAULT_DATA_DIR
    trail_mode: str = "text"
    print_only: bool = False
    argv: list[str] = field(default_factory=list)
    printed: list[Plan] = field(default_factory=list)
    # print-only over a scratch state: records are written (to a temporary state dir), so a series of
    # operations (a whole lab) plans as if each had run - IPs advance, names resolve
    simulate: bool = False
    image_records_dir: Path | None = None
    cluster: Cluster | None = None  # --cluster / WRAPDOCK_CLUSTER: where cluster-mode networks live
    # print-only: the one iptables-save of this run (read once; later plans see it with the printed plans' edits)
    iptables_read: list = field(default_factory=list)

    @property
    def records_state(self) -> bool:
        """Whether operations write their records: live runs, and simulated print-only runs."""
        return not self.print_only or self.simulate

    @cached_property
    def state(self) -> StateStore:
        return StateStore(self.state_dir)

    @cached_property
    def images(self) -> StateStore:
        """Image records outlive a reboot: they live in the data directory, beside the images."""
        return StateStore(self.image_records_dir or self.data_dir)

    @cached_property
    def runner(self) -> Runner:
        from wrapdock.runner import Runner, Trail

        fail_at = os.environ.get("WRAPDOCK_FAIL_AT")
        return Runner(
            Trail(self.trail_mode, sys.stderr),
            audit=None if self.print_only else self.state.audit,
            fail_at=int(fail_at) if fail_at and fail_at.isdigit() else None,
        )

    def lock(self):
        """The state lock for a change; printing a script changes nothing, so it takes none."""
        from contextlib import nullcontext

        return nullcontext() if self.print_only else self.state.locked()

    def carry_out(self, plan: Plan) -> list:
        """Live: run the plan (rolled back on failure). Print-only: keep it for the script."""
        if self.print_only:
            self.printed.append(plan)
            return []
        return self.runner.apply(plan)

    def require_root(self) -> None:
        """Changing the host needs root; printing a script does not."""
        if not self.print_only and os.geteuid() != 0:
            from wrapdock.errors import EnvironmentProblem

            raise EnvironmentProblem("this changes the host and needs root (sudo); --print-only works without it")
