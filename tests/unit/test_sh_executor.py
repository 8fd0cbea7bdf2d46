"""The real executor (`sh`) with harmless programs: no root, nothing on the host changes."""

from __future__ import annotations

from wrapdock.runner import STDIN_PIECE, sh_executor, stdin_pieces


def test_a_commands_input_goes_whole_in_pipe_sized_pieces() -> None:
    """PIPE_BUF pieces (one write each, never cut short); a character split between two arrives whole."""
    text = "10.100.0.2\tc2 é\n" * 2000
    pieces = stdin_pieces(text)
    assert all(len(p) == STDIN_PIECE for p in pieces[:-1]) and 0 < len(pieces[-1]) <= STDIN_PIECE
    assert b"".join(pieces).decode() == text
    assert stdin_pieces("") == []
    assert sh_executor(["cat"], text).stdout == text
    assert sh_executor(["cat"], "").stdout == ""
    assert sh_executor(["sh", "-s"], "exit 3\n").exit_code == 3
