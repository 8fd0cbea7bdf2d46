"""Shell completion as README documents it: the console script prints click's completion source, and
bash, having sourced it, completes wrapdock's commands (through `run()`, which leaves with os._exit)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _wrapdock_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a `wrapdock` that is the console script's entry point, run()."""
    shim = tmp_path / "bin" / "wrapdock"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -c "from wrapdock.cli import run; run()" "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}"}


def test_bash_completion_source_is_printed(tmp_path: Path) -> None:
    env = {**_wrapdock_on_path(tmp_path), "_WRAPDOCK_COMPLETE": "bash_source"}
    done = subprocess.run(["wrapdock"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "complete -o nosort -F _wrapdock_completion wrapdock" in done.stdout
    assert done.stderr == ""


def _bash_completes(tmp_path: Path, *words: str) -> list[str]:
    """What bash offers for the last of `words` after `eval "$(_WRAPDOCK_COMPLETE=bash_source wrapdock)"`."""
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to check bash completion")
    script = ('eval "$(_WRAPDOCK_COMPLETE=bash_source wrapdock)"\n'
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()\n'
              'complete -p wrapdock >/dev/null || exit 9\n'
              '_wrapdock_completion wrapdock\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script, "bash", *words], env=_wrapdock_on_path(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_a_command(tmp_path: Path) -> None:
    assert _bash_completes(tmp_path, "wrapdock", "net") == ["network"]


def test_bash_completes_subcommands_and_options(tmp_path: Path) -> None:
    assert _bash_completes(tmp_path, "wrapdock", "network", "") == [
        "cni-config", "connect", "create", "disconnect", "inspect", "join", "leave", "list", "rm", "sync"]
    assert "--all" in _bash_completes(tmp_path, "wrapdock", "ps", "--")


def test_the_line_scripts_setup_prints_turns_completion_on(tmp_path: Path) -> None:
    """scripts/setup prints `eval "$(_WRAPDOCK_COMPLETE=bash_source CHECKOUT/.venv/bin/wrapdock)"`."""
    setup = (Path(__file__).resolve().parents[2] / "scripts" / "setup").read_text()
    printf = next(line for line in setup.splitlines() if line.startswith("printf 'setup: shell completion"))
    env = _wrapdock_on_path(tmp_path)
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "wrapdock").symlink_to(tmp_path / "bin" / "wrapdock")
    script = f'{printf.removesuffix(" >&2")} 2>&1 | tail -1 > line\n. ./line\ncomplete -p wrapdock\n'
    done = subprocess.run(["bash", "-c", script], cwd=checkout, env={**env, "PWD": str(checkout)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "complete -o nosort -F _wrapdock_completion wrapdock\n"
