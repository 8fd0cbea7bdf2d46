"""sh and tabulate are imported without asyncio, package metadata and (sh) its terminal and user
modules, and still work; so do those, after. A release of sh or tabulate that imports differently from
the tested ones fails here, saying what changed, rather than quietly making every command slower."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import json
import marshal
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


def test_sh_runs_without_logging_and_logs_to_it_once_it_is_loaded() -> None:
    probe = """
import sys
from wrapdock.quickimport import load_sh
sh = load_sh()
sh.Command("true")(_tty_out=False)
print("logging" in sys.modules)
import logging
seen = []
handler = logging.Handler()
handler.emit = lambda record: seen.append(record.levelname)
logging.getLogger("sh").addHandler(handler)
logging.getLogger("sh").setLevel(logging.DEBUG)
sh.Command("true")(_tty_out=False)
print(sorted(set(seen)))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "['DEBUG', 'INFO']"]


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


# The compiled dataclass methods (quickimport's `exec` for dataclasses and its cache file).

PROBE_CLASSES = '''
import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Point:
    """A frozen, ordered one."""
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


@dataclass
class Box:
    """A mutable one with a factory."""
    name: str
    items: list[int] = field(default_factory=list)
'''

BEHAVIOUR = '''
import dataclasses, json, sys, types
import wrapdock.quickimport as quickimport
quickimport._methods.file = sys.argv[1]
quickimport.load_dataclasses()
module = types.ModuleType("wrapdock.cacheprobe")  # a wrapdock module: what a run records
sys.modules[module.__name__] = module
exec(compile(sys.argv[2], "cacheprobe.py", "exec"), module.__dict__)
Point, Box = module.Point, module.Box
seen = [repr(Point(1)), Point(1, 2) == Point(1, 2), Point(1) != Point(2), hash(Point(1, 2)) == hash(Point(1, 2)),
        Point(1) < Point(2), sorted([Point(2), Point(1, 5)]) == [Point(1, 5), Point(2)], repr(Box("b")),
        Box("b").items is not Box("b").items, Box("a") == Box("a"), Box.__hash__ is None,
        [type(hint).__name__ for hint in Point.__init__.__annotations__.values()]]
try:
    Point(1).x = 2
except dataclasses.FrozenInstanceError as error:
    seen.append(f"frozen: {error}")
try:
    Point()
except TypeError as error:
    seen.append(str(error))
if sys.argv[3:] == ["save"]:
    quickimport.save_compiled_methods()
m = quickimport._methods
print(json.dumps({"seen": seen, "hits": m.hits, "misses": m.misses, "calls": m.calls}))
'''


def _texts(classes: str) -> list[str]:
    """The method texts dataclasses builds for `classes`."""
    import dataclasses
    import types
    from unittest import mock

    texts: list[str] = []
    real_exec = exec

    def recording(source: str, *args: object) -> None:
        texts.append(source)
        real_exec(source, *args)

    module = types.ModuleType("cacheprobe_texts")
    with mock.patch.dict(sys.modules, {module.__name__: module}), mock.patch.object(
            dataclasses, "exec", recording, create=True):
        exec(compile(classes, "cacheprobe.py", "exec"), module.__dict__)
    return texts


def _behaviour(cache: Path, *extra: str, classes: str = PROBE_CLASSES, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", BEHAVIOUR, str(cache), classes, *extra], capture_output=True,
                          text=True, check=False, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return json.loads(done.stdout)


def test_methods_from_the_cache_behave_as_compiled_ones_and_a_run_writes_them_only_as_pyc_files_are(
        tmp_path: Path) -> None:
    cache = tmp_path / "__pycache__" / "dataclass-methods.bin"
    writing = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    not_writing = {**writing, "PYTHONDONTWRITEBYTECODE": "1"}
    compiled = _behaviour(cache, "save", env=not_writing)
    assert compiled["misses"] == compiled["calls"] > 0 and compiled["hits"] == 0
    assert not cache.exists()  # PYTHONDONTWRITEBYTECODE: no file, as no .pyc
    assert _behaviour(cache, "save", env=writing) == compiled  # still compiled: nothing to read yet
    assert cache.exists()
    cached = _behaviour(cache, env=not_writing)  # reading is not writing
    assert cached["hits"] == compiled["calls"] and cached["misses"] == 0
    assert cached["seen"] == compiled["seen"]
    assert "frozen: cannot assign to field 'x'" in cached["seen"]
    assert ["type", "type", "GenericAlias", "NoneType"] in cached["seen"]  # real annotations, not strings
    # an edited class: its module's section is written again with this run's texts only (the old go)
    edited = PROBE_CLASSES.replace("    name: str\n", "    name: str\n    size: int = 0\n")
    assert _behaviour(cache, "save", classes=edited, env=writing)["misses"] > 0
    again = _behaviour(cache, classes=edited, env=not_writing)
    assert again["misses"] == 0 and again["hits"] == again["calls"] == compiled["calls"]
    from wrapdock import quickimport

    methods = quickimport._CompiledMethods()
    methods.file = str(cache)
    assert len(methods._section("wrapdock.cacheprobe")) == len(set(_texts(edited)))


def _a_written_cache(path: Path, texts: list[str]) -> None:
    from wrapdock import quickimport

    assert quickimport._write_methods(str(path), {"wrapdock.probe": marshal.dumps({
        text: marshal.dumps(compile(text, "<string>", "exec", dont_inherit=True)) for text in texts})})


METHOD_TEXT = "def __create_fn__():\n def __repr__(self):\n  return 'probe'\n return __repr__"


def _looked_up(path: Path) -> tuple[int, int]:
    """Hits and misses of one method's text with the cache file at `path`, and that it is the compiled code."""
    from wrapdock import quickimport

    methods = quickimport._CompiledMethods()
    methods.file = str(path)
    code = methods.code(METHOD_TEXT, {"__name__": "wrapdock.probe"})
    assert code == compile(METHOD_TEXT, "<string>", "exec", dont_inherit=True)
    return methods.hits, methods.misses


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "a bit flipped":
        data[-20] ^= 0x04
        path.write_bytes(data)
    elif how == "another Python's":
        data[0] ^= 0xFF  # the magic number
        path.write_bytes(data)
    elif how == "its index damaged":
        data[22] ^= 0x10  # after the header (12 bytes), the index's size and CRC-32
        path.write_bytes(data)
    elif how == "another format":
        data[8] += 1  # after the magic number and b"wdcm"
        path.write_bytes(data)
    elif how == "a directory":
        path.unlink()
        path.mkdir()
    elif how == "garbage":
        path.write_bytes(b"\x00\xff" * 500)


@pytest.mark.parametrize("how", ["missing", "empty", "truncated", "a bit flipped", "its index damaged",
                                 "another Python's", "another format", "a directory", "garbage"])
def test_a_missing_damaged_or_foreign_cache_file_means_compiling_as_before(tmp_path: Path, how: str) -> None:
    path = tmp_path / "dataclass-methods.bin"
    _a_written_cache(path, [METHOD_TEXT])
    assert _looked_up(path) == (1, 0)
    _damage(path, how)
    assert _looked_up(path) == (0, 1)


def test_an_entry_that_is_not_code_is_compiled(tmp_path: Path) -> None:
    from wrapdock import quickimport

    path = tmp_path / "dataclass-methods.bin"
    for entry in (marshal.dumps(42), b"\xff\x00"):
        assert quickimport._write_methods(str(path), {"wrapdock.probe": marshal.dumps({METHOD_TEXT: entry})})
        assert _looked_up(path) == (0, 1)
    assert quickimport._write_methods(str(path), {"wrapdock.probe": marshal.dumps(["not", "a", "dict"])})
    assert _looked_up(path) == (0, 1)


def test_the_warm_up_makes_every_method_of_every_wrapdock_dataclass_a_hit(tmp_path: Path) -> None:
    cache = tmp_path / "dataclass-methods.bin"
    write = f"from wrapdock import quickimport\nprint(quickimport.write_method_cache({str(cache)!r})[1])"
    done = subprocess.run([sys.executable, "-c", write], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    written = int(done.stdout)
    probe = f"""
import importlib, json
from wrapdock import quickimport
quickimport._methods.file = {str(cache)!r}
quickimport.load_click()
modules = quickimport.modules_with_dataclasses()
for module in modules:
    importlib.import_module(module)
m = quickimport._methods
print(json.dumps([m.hits, m.misses, m.calls, m.other_calls, len(modules)]))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    hits, misses, calls, other_calls, modules = json.loads(done.stdout)
    assert modules > 20 and "wrapdock.model" in quickimport_modules()
    assert (hits, misses, other_calls) == (calls, 0, []) and calls >= written > 100  # some texts recur


def quickimport_modules() -> list[str]:
    from wrapdock import quickimport

    return quickimport.modules_with_dataclasses()


def test_every_cached_method_is_what_compiling_its_text_gives(tmp_path: Path) -> None:
    """Keyed by the whole text: a hit is the same code compiling would make (the warm-up's whole file)."""
    from wrapdock import quickimport

    cache = tmp_path / "dataclass-methods.bin"
    write = f"from wrapdock import quickimport\nquickimport.write_method_cache({str(cache)!r})"
    subprocess.run([sys.executable, "-c", write], check=True)
    methods = quickimport._CompiledMethods()
    methods.file = str(cache)
    methods._read()
    entries = {text: blob for module in methods.index for text, blob in methods._section(module).items()}
    assert len(methods.index) > 20 and len(entries) > 100
    for text, blob in entries.items():
        assert marshal.loads(blob) == compile(text, "<string>", "exec", dont_inherit=True), text


# A Python whose dataclasses builds its methods otherwise: each breaks the cache's assumption, which is
# named; the dataclasses still work (their methods compiled as before).
NEW_DATACLASSES = {
    "no global exec": (r"\bexec\(txt, ", "__import__('builtins').exec(txt, ",
                       "no longer builds methods through a global `exec`"),
    "exec of compiled code": (r"\bexec\(txt, ", "exec(compile(txt, '<string>', 'exec'), ",
                              "calls exec with (code, dict, dict), not (source text, globals, namespace)"),
    "an exec of its own": (r"\Z", "\nexec = exec\n", "has a name `exec` of its own"),
}


@pytest.mark.parametrize("change", NEW_DATACLASSES)
def test_a_dataclasses_that_builds_methods_otherwise_is_named(tmp_path: Path, change: str) -> None:
    import re

    pattern, replacement, expected = NEW_DATACLASSES[change]
    real = importlib.machinery.PathFinder.find_spec("dataclasses")
    assert real is not None and real.origin
    source, count = re.subn(pattern, replacement, Path(real.origin).read_text(), count=1)
    assert count == 1, f"{real.origin} no longer has {pattern!r}: update this test"
    (tmp_path / "dataclasses.py").write_text(source)
    probe = """
import json, sys
from wrapdock.quickimport import broken_assumptions, load_dataclasses
dataclasses = load_dataclasses()
assert dataclasses.__file__.startswith(sys.argv[1]), dataclasses.__file__
@dataclasses.dataclass(frozen=True)
class Answer:
    '''The answer.'''
    value: int
print(Answer(42).value, Answer(42) == Answer(42))
print(json.dumps(broken_assumptions()))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=False,
                          env=env)
    assert done.returncode == 0, done.stderr
    answer, broken = done.stdout.splitlines()
    assert answer == "42 True"
    assert any(problem.startswith("dataclasses of Python") and expected in problem
               for problem in json.loads(broken)), broken
