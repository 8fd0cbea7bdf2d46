"""tabulate's "plain" table (disable_numparse) for cells of one-column characters, without tabulate.

`ps` with 1000 containers spent ~70 ms in tabulate, mostly guessing each cell's type; the cells of
`ps` are strings already. The layout is tabulate 0.10's: a column is as wide as its widest cell and
at least its header plus two, cells lose surrounding blanks, columns are joined by two spaces, lines
end without trailing blanks (tests/unit/test_plaintable.py holds it to tabulate). Anything else (a line break in a cell,
characters two columns wide) goes to tabulate itself: plain_cells says which.
"""

from __future__ import annotations

from collections.abc import Sequence


def plain_cells(rows: Sequence[Sequence[str]]) -> bool:
    """Every cell a string of printable ASCII or '…': one column per character, one line."""
    return all(isinstance(cell, str) and _narrow(cell) for row in rows for cell in row)


def _narrow(cell: str) -> bool:
    plain = cell.replace("…", "")
    return plain.isascii() and plain.isprintable()


def plain_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    rows = [[cell.strip() for cell in row] for row in rows]  # as tabulate does (PRESERVE_WHITESPACE off)
    widths = [len(header) + 2 for header in headers]
    for row in rows:
        for column, cell in enumerate(row):
            if len(cell) > widths[column]:
                widths[column] = len(cell)
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
