"""Test doubles for the runner's one seam: the `execute(argv, stdin) -> Result` callable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from wrapdock.runner import Result

Matcher = Callable[[tuple[str, ...]], bool]


@dataclass
class FakeHost:
    """Records every command; fails the ones named in `failing`; probes succeed only if listed in `present`.

    A command whose argv is in `failing` exits 1 with its stderr; a probe (any argv in `probes`) exits 0
    only if it is also in `present`; everything else exits 0.
    """

    failing: dict[tuple[str, ...], str] = field(default_factory=dict)
    present: set[tuple[str, ...]] = field(default_factory=set)
    probes: set[tuple[str, ...]] = field(default_factory=set)
    outputs: dict[tuple[str, ...], str] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)
    raising: dict[tuple[str, ...], BaseException] = field(default_factory=dict)

    def __call__(self, argv: Sequence[str], stdin: str | None) -> Result:
        key = tuple(argv)
        self.calls.append((key, stdin))
        if key in self.raising:
            raise self.raising[key]
        if key in self.failing:
            return Result(key, 1, "", self.failing[key], 0.0125)
        if key in self.probes:
            return Result(key, 0 if key in self.present else 1, "", "", 0.001)
        return Result(key, 0, self.outputs.get(key, ""), "", 0.0125)

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls]

    def declare_probes(self, probes: Iterable[Sequence[str]]) -> None:
        self.probes.update(tuple(p) for p in probes)


def forbid(argv: Sequence[str], stdin: str | None) -> Result:
    """An executor for tests that must never reach the host."""
    raise AssertionError(f"test tried to run a host command: {list(argv)}")
