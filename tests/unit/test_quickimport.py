"""sh and tabulate are imported without asyncio, package metadata and (sh) its terminal and user
modules, and still work; so do those, after. A release of sh or tabulate that imports differently from
the tested ones fails here, saying what changed, rather than quietly making every command slower."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_tested_releases_hold_every_assumption_of_quickimport() -> None:
    probe = """
import json
from wrapdock.quickimport import broken_assumptions, load_click, load_sh, load_tabulate
load_click()
load_sh()
load_tabulate()
print(json.dumps(broken_assumptions()))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    broken = json.loads(done.stdout)
    assert broken == [], "wrapdock/quickimport.py no longer fits the installed releases:\n" + "\n".join(broken)


def test_the_cli_imports_without_inspect_and_its_stand_in_cleans_docs_as_inspect_does() -> None:
    probe = """
import json, sys
import wrapdock.cli
import wrapdock.containers
loaded = "inspect" in sys.modules
helps = []
def walk(command):
    helps.extend(p.help for p in command.params if getattr(p, "help", None))
    for sub in getattr(command, "commands", {}).values():
        walk(sub)
walk(wrapdock.cli.cli)
print(json.dumps([loaded, len(helps), helps]))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    loaded, count, texts = json.loads(done.stdout)
    assert loaded is False
    assert count > 50  # every option's help of every command was seen
    import inspect

    from wrapdock.quickimport import _cleandoc

    for text in [*texts, "", "  ", " \ta b ", "x\t", "two\n  lines\n"]:
        assert _cleandoc(text) == inspect.cleandoc(text), text


# A new release of sh, as it could be: each breaks one assumption of quickimport (the message names
# the installed release, whose metadata the stand-in sh here does not replace).
NEW_RELEASES = {
    "uses a deferred module while importing": (
        "import asyncio\nasyncio.get_event_loop_policy()\n"
        "from importlib import metadata\nimport pty, tty, termios, struct, pwd, getpass, traceback\n",
        "uses asyncio.get_event_loop_policy while importing: the real asyncio is loaded on every import"),
    "no longer imports a deferred module": (
        "import asyncio\nfrom importlib import metadata\nimport tty, termios, struct, pwd, getpass, traceback\n",
        "no longer imports pty: quickimport's stand-in for it is unused"),
    "imports a submodule of a deferred module": (
        "import asyncio.events\nfrom importlib import metadata\n"
        "import pty, tty, termios, struct, pwd, getpass, traceback\n",
        "does not import with quickimport's stand-ins (ModuleNotFoundError: No module named 'asyncio.events'"),
}


@pytest.mark.parametrize("change", NEW_RELEASES)
def test_a_release_that_breaks_an_assumption_is_named(tmp_path: Path, change: str) -> None:
    source, expected = NEW_RELEASES[change]
    (tmp_path / "sh.py").write_text(source + "def answer():\n    return 42\n")
    probe = """
import json
from wrapdock.quickimport import broken_assumptions, load_sh
print(load_sh().answer())
print(json.dumps(broken_assumptions()))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr
    answer, broken = done.stdout.splitlines()
    assert answer == "42"  # the package still works
    assert any(problem.startswith("sh ") and expected in problem for problem in json.loads(broken)), broken


# What the tested releases import when they are imported (imports inside functions do not count).
# quickimport defers some of these; a release that adds or drops one must be looked at again.
IMPORTED_AT_IMPORT = {
    "sh": {"asyncio", "collections", "collections.abc", "contextlib", "errno", "fcntl", "functools", "gc",
           "getpass", "glob", "importlib", "inspect", "io", "locale", "logging", "os", "platform", "pty", "pwd",
           "queue", "re", "select", "shlex", "signal", "stat", "struct", "sys", "termios", "textwrap",
           "threading", "time", "traceback", "tty", "types", "typing", "warnings", "weakref"},
    "tabulate": {".version", "collections", "collections.abc", "dataclasses", "functools", "html",
                 "importlib.metadata", "io", "itertools", "math", "re", "sys", "textwrap", "warnings", "wcwidth"},
}


class _ImportsAtImport(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        """A function's imports run when it is called, not at import."""

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.add("." * node.level + (node.module or ""))


@pytest.mark.parametrize("package", IMPORTED_AT_IMPORT)
def test_the_installed_release_imports_what_the_tested_one_did(package: str) -> None:
    spec = importlib.machinery.PathFinder.find_spec(package)  # not sys.modules: sh replaces itself there
    assert spec is not None and spec.origin, f"{package} is not installed"
    visitor = _ImportsAtImport()
    visitor.visit(ast.parse(Path(spec.origin).read_text()))
    added, gone = visitor.found - IMPORTED_AT_IMPORT[package], IMPORTED_AT_IMPORT[package] - visitor.found
    assert not added and not gone, (
        f"{package} {importlib.metadata.version(package)} imports differently from the release wrapdock was "
        f"tested with: new {sorted(added)}, no longer {sorted(gone)}. Time the new ones "
        f"(python -X importtime -c 'import {package}'), defer slow ones in wrapdock/quickimport.py, "
        f"then update IMPORTED_AT_IMPORT here.")


def test_every_dataclass_of_wrapdock_has_a_docstring() -> None:
    """dataclasses builds a docstring from inspect.signature for a class without one: ~0.3 ms each, and
    the real inspect (~5 ms) loaded into every command that defines one (quickimport.load_click)."""
    package = Path(__file__).resolve().parents[2] / "wrapdock"
    missing = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list)
                    and ast.get_docstring(node) is None):
                missing.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name}")
    assert missing == [], missing
