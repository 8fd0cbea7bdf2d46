"""sh and tabulate are imported without asyncio, package metadata and (sh) its terminal and user
modules, and still work; so do those, after."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from wrapdock.quickimport import load_sh
sh = load_sh()
result = sh.Command("echo")("hello", _tty_out=False, _return_cmd=True)
assert result.stdout == b"hello\\n", result.stdout
assert result.exit_code == 0
failed = sh.Command("sh")("-c", "exit 3", _tty_out=False, _return_cmd=True, _ok_code=range(256))
assert failed.exit_code == 3
print("asyncio" in sys.modules, "importlib.metadata" in sys.modules)
print(sorted(m for m in ("pty", "tty", "termios", "struct", "pwd", "getpass", "traceback") if m in sys.modules))
# what they are for still works, loading them on first use: a terminal, an error before exec
on_a_terminal = sh.Command("sh")("-c", "test -t 1 && echo terminal", _tty_out=True, _return_cmd=True)
assert on_a_terminal.stdout == b"terminal\\n", on_a_terminal.stdout
try:
    sh.Command("true")(_cwd="/nonexistent-wrapdock-dir", _tty_out=False)
except sh.ForkException as failed:
    assert "nonexistent-wrapdock-dir" in str(failed), failed
else:
    raise AssertionError("no ForkException")
import asyncio
async def answer():
    return 42
print(asyncio.run(answer()))
"""


def test_sh_runs_without_asyncio_and_asyncio_still_works() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False False", "[]", "42"]


def test_read_only_commands_import_neither_sh_nor_jsonschema(tmp_path) -> None:
    probe = f"""
import sys
from wrapdock.cli import main
for argv in (["--version"], ["--help"], ["ps"], ["network", "ls"], ["ps", "-a", "--format", "json"]):
    try:
        main(["--state-dir", "{tmp_path}/state", "--data-dir", "{tmp_path}/data", *argv])
    except SystemExit:
        pass
print(sorted(m for m in ("sh", "jsonschema", "yaml") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_tabulate_imports_without_package_metadata_and_still_tabulates() -> None:
    probe = """
import sys
from wrapdock.quickimport import load_tabulate
tabulate = load_tabulate()
print(repr(tabulate([["a", 1]], headers=["NAME", "N"], tablefmt="plain")))
print("importlib.metadata" in sys.modules)
from importlib.metadata import version
print(version("click") != "unknown")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr("NAME      N\na         1"), "False", "True"]
