"""plain_table draws what tabulate's "plain" format draws (ps uses it for speed)."""

from __future__ import annotations

import random

from tabulate import tabulate

from wrapdock.plaintable import plain_cells, plain_table

HEADERS = ["ID", "NAME", "IMAGE", "COMMAND", "STATUS", "PID", "CREATED", "ADDRESSES", "PORTS"]


def _cell(rng: random.Random) -> str:
    return "".join(rng.choice("ab c-_.:/…0123456789") for _ in range(rng.choice([0, 0, 1, 3, 12, 40])))


def test_same_as_tabulate_plain() -> None:
    rng = random.Random(16)
    for size in (0, 1, 2, 7, 50):
        rows = [[_cell(rng) for _ in HEADERS] for _ in range(size)]
        assert plain_cells(rows)
        assert plain_table(rows, HEADERS) == tabulate(rows, headers=HEADERS, tablefmt="plain", disable_numparse=True)


def test_cells_tabulate_must_draw() -> None:
    assert plain_cells([["abc", "12", "x…"]])
    assert not plain_cells([["two\nlines"]])
    assert not plain_cells([["wide 漢字"]])
    assert not plain_cells([[12]])
