"""Import `sh`, `tabulate` and `click` without the time they spend on things wrapdock does not use.

At import, `sh` imports asyncio (for its async iteration, which wrapdock never uses) and both read
their own version from the installed packages' metadata (importlib.metadata: ~40 ms, more than a
whole `ps` should take). `sh` also imports modules it needs only for terminals (pty, tty, termios,
struct), for running as another user (pwd, getpass) and for reporting an error between fork and exec
(traceback): ~6 ms of every command that changes the host; and logging, for loggers that log only at
DEBUG and INFO, which an unconfigured logging drops (~3 ms). All of those are deferred here: during
the import they are stand-ins that load the real module on first real use, and the originals are put
back right after. Everything of `sh` and `tabulate` works unchanged (tests/unit/test_quickimport.py).

This rests on what the tested releases import (pyproject.toml bounds them). So that a new release cannot
quietly undo it, each import checks its assumptions and `broken_assumptions()` says what no longer holds:
a stand-in the package no longer imports, a real module loaded during the import anyway, an import the
stand-ins break (then the package is imported plainly: slower, still working). The unit tests fail on any.

dataclasses writes each class's methods (__init__, __repr__, __eq__, __hash__, a frozen __setattr__) as
source text and compiles it at import: ~10 ms of every command. `load_dataclasses` gives it an `exec`
that takes the compiled code from a cache file next to the package's byte-code instead (the text is the
key, so a hit is the very code compile would give); `python -m wrapdock.quickimport --write-cache` writes
it (scripts/setup and the benches do).
"""

from __future__ import annotations

import builtins
import importlib
import marshal
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


class _LazyModule(types.ModuleType):
    """A module that imports the real one the first time one of its names is used."""

    def __init__(self, name: str, **ready: Any) -> None:
        super().__init__(name)
        self.__dict__.update(ready)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):  # the import machinery probing (__path__, __spec__): not a use
            raise AttributeError(attribute)
        real = sys.modules.get(self.__name__)
        if real is None or real is self:
            _first_uses.setdefault(self.__name__, attribute)
            sys.modules.pop(self.__name__, None)
            real = importlib.import_module(self.__name__)
        return getattr(real, attribute)


class _LazyAsyncioQueue:
    """sh binds asyncio.Queue at import; only its async iteration ever builds one."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        return asyncio.Queue(*args, **kwargs)


def _running_loop() -> Any:
    """sh asks for a running event loop on every command; without asyncio loaded there is none."""
    real = sys.modules.get("asyncio")
    if real is None or isinstance(real, _LazyModule):
        raise RuntimeError("no running event loop")
    return real.get_running_loop()


def _no_version(_name: str) -> str:
    return "unknown"


_broken: list[str] = []
_first_uses: dict[str, str] = {}  # deferred module -> the name whose use loaded the real one


def broken_assumptions() -> list[str]:
    """What the imports so far showed to be no longer true of sh, tabulate and dataclasses (empty: all
    holds). With dataclasses loaded through quickimport, it builds a small dataclass to see the cache's
    `exec` used as assumed."""
    return [*_broken, *_dataclass_problems()]


def _import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    installed = {module: stand_in for module, stand_in in stand_ins.items() if sys.modules.get(module) is None}
    already = set(sys.modules)
    sys.modules.update(installed)
    failure: Exception | None = None
    try:
        imported = importlib.import_module(name)
        loaded_anyway = [module for module, stand_in in installed.items() if sys.modules.get(module) is not stand_in]
    except Exception as exc:  # a release the stand-ins break: import it as it is, and say why
        failure = exc
    finally:
        for module, stand_in in installed.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]
    if failure is not None:
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]
        _broken.append(f"{_release(name)} does not import with quickimport's stand-ins "
                       f"({type(failure).__name__}: {failure}); imported without them")
        return importlib.import_module(name)
    for module in loaded_anyway:
        _broken.append(f"{_release(name)} uses {module}.{_first_uses.get(module, '?')} while importing: "
                       f"the real {module} is loaded on every import, deferring it saves nothing")
    for module, stand_in in installed.items():
        if module not in loaded_anyway and not _binds(imported, stand_in, set(sys.modules) - already):
            _broken.append(f"{_release(name)} no longer imports {module}: quickimport's stand-in for it is unused")
    return imported


def _binds(imported: types.ModuleType, stand_in: types.ModuleType, new_modules: set[str]) -> bool:
    """Whether the package, or a module it imported (click's uuid binds platform), kept the stand-in or
    one of its ready names (`from asyncio import Queue`)."""
    ready = [stand_in, *(value for key, value in vars(stand_in).items() if not key.startswith("__"))]
    names = _globals(imported)
    for name in new_modules:
        module = sys.modules.get(name)
        if isinstance(module, types.ModuleType) and module is not stand_in:
            names.update(vars(module))
    return any(value is item for value in names.values() for item in ready)


def _globals(imported: types.ModuleType) -> dict[str, Any]:
    """The package's own names; sh puts a wrapper in sys.modules in place of itself and keeps the module in it."""
    names = dict(vars(imported))
    for value in vars(imported).values():
        if isinstance(value, types.ModuleType) and value is not imported and value.__name__ == imported.__name__:
            names.update(vars(value))
    return names


def _release(name: str) -> str:
    """`sh 2.4.0`: only said when something is wrong, so the metadata's cost does not matter then."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def _metadata_stand_in() -> types.ModuleType:
    return _LazyModule("importlib.metadata", version=_no_version, PackageNotFoundError=LookupError)


# inspect: only for callbacks given as _out/_err (wrapdock gives none); ~8 ms
_SH_RARELY_USED = ("pty", "tty", "termios", "struct", "pwd", "getpass", "traceback", "inspect")


def _system() -> str:
    """platform.system() on a POSIX system: the kernel's name, as os.uname() gives it."""
    import os

    return os.uname().sysname


class _ShLogger:
    """What `logging.getLogger` gives sh, which logs at DEBUG and INFO only: dropped while no one has
    imported logging (then no one configured it, and an unconfigured logging drops them too), passed to
    the real logger once logging is loaded; anything else (error, exception, ...) is the real logger's.
    Importing logging costs each command that runs one ~3 ms."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _loaded(self) -> Any:
        real = sys.modules.get("logging")
        return None if real is None or isinstance(real, _LazyModule) else real.getLogger(self.name)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        logger = self._loaded()
        if logger is not None:
            logger.debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        logger = self._loaded()
        if logger is not None:
            logger.info(msg, *args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        import logging

        return getattr(logging.getLogger(self.name), attribute)


def load_sh() -> types.ModuleType:
    return _import_with_stand_ins("sh", {
        "asyncio": _LazyModule("asyncio", Queue=_LazyAsyncioQueue, get_running_loop=_running_loop),
        "importlib.metadata": _metadata_stand_in(),
        "platform": _LazyModule("platform", system=_system),  # asked once, at import (~1.5 ms)
        "logging": _LazyModule("logging", getLogger=_ShLogger),  # sh's loggers, one per command object
        **{name: _LazyModule(name) for name in _SH_RARELY_USED}})


def _cleandoc(doc: str) -> str:
    """inspect.cleandoc: for one line, what it does to one (tabs expanded, the left stripped); the real
    one for more."""
    if "\n" not in doc:
        return doc.expandtabs().lstrip()
    return _real_module("inspect").cleandoc(doc)


def _isfunction(value: object) -> bool:
    """inspect.isfunction, as the standard library defines it."""
    return isinstance(value, types.FunctionType)


def _real_module(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None or isinstance(module, _LazyModule):
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
    return module


def load_click() -> types.ModuleType:
    """click, and dataclasses before it, without `inspect` (~5 ms, with ast, dis and tokenize) and
    `platform` (~1.5 ms): while wrapdock's commands are defined click calls only inspect.cleandoc (on
    each option's one-line help) and inspect.isfunction; dataclasses calls inspect.signature only for a
    class without a docstring (every wrapdock dataclass has one); click's uuid asks platform.system()
    once. Anything else of inspect or platform loads the real module."""
    load_dataclasses()
    inspect = {"inspect": _LazyModule("inspect", cleandoc=_cleandoc, isfunction=_isfunction)}
    return _import_with_stand_ins("click", {**inspect, "platform": _LazyModule("platform", system=_system)})


def load_dataclasses() -> types.ModuleType:
    """dataclasses without `inspect` (see load_click), its methods' code taken from the cache file."""
    dataclasses = _import_with_stand_ins(
        "dataclasses", {"inspect": _LazyModule("inspect", cleandoc=_cleandoc, isfunction=_isfunction)})
    _use_compiled_methods(dataclasses)
    return dataclasses


def load_tabulate() -> Any:
    """tabulate.tabulate."""
    return _import_with_stand_ins("tabulate", {"importlib.metadata": _metadata_stand_in()}).tabulate


@contextmanager
def deferring(*names: str) -> Iterator[None]:
    """While importing under it, `names` are stand-ins (their real module loads on first use): for
    dataclasses' `inspect` (~8 ms), which it uses only for a dataclass without a docstring. The CNI
    plugin imports its modules so, once per call (tests/unit/test_quickimport.py checks it holds)."""
    installed = {name: _LazyModule(name) for name in names if sys.modules.get(name) is None}
    sys.modules.update(installed)
    try:
        yield
    finally:
        for name, stand_in in installed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]




# The compiled methods of dataclasses. dataclasses (3.11, 3.12: one call per method; 3.13: one per class)
# builds methods by `exec(source_text, globals, namespace)`, a name it looks up in its own module first:
# the stand-in put there compiles only texts the cache file does not hold, and runs the code as exec would.

_METHODS_FORMAT = 1  # of the file after its magic number; a new one makes old files unused, never misread


class _CompiledMethods:
    """The cache file: a section of entries (source text -> marshalled code) per module, each read (and
    checked) when that module builds its first method; what this run built for wrapdock's modules."""

    def __init__(self) -> None:
        self.file: str | None = None  # where it is read and written (tests point it elsewhere)
        self.data: bytes | None = None  # the file as read; None: not read yet
        self.index: dict[str, tuple[int, int, int]] = {}  # module -> offset, size, CRC-32 of its section
        self.base = 0  # where the sections start (offsets count from there)
        self.sections: dict[str | None, dict[str, bytes]] = {}  # the sections read so far
        self.seen: dict[str, dict[str, bytes]] = {}  # wrapdock module -> its texts this run (when recording)
        self.changed: set[str] = set()  # wrapdock modules with a text compiled this run
        self.hits = 0
        self.misses = 0
        self.calls = 0  # of the stand-in, in the shape assumed
        self.other_calls: list[str] = []  # other shapes seen (passed to exec as they are)
        self.recording = not sys.dont_write_bytecode  # as Python writes .pyc files (PYTHONDONTWRITEBYTECODE)
        self.installed = False

    def path(self) -> str | None:
        """wrapdock/__pycache__/dataclass-methods.cpython-311.bin, where this Python puts the package's
        byte-code (sys.pycache_prefix too); None where it writes none."""
        if self.file is None:
            try:
                pyc = importlib._bootstrap_external.cache_from_source(__file__)  # type: ignore[attr-defined]
            except (NotImplementedError, ValueError):  # sys.implementation.cache_tag is None
                return None
            self.file = os.path.join(os.path.dirname(pyc), f"dataclass-methods.{sys.implementation.cache_tag}.bin")
        return self.file

    def code(self, source: str, namespace: dict[str, Any]) -> types.CodeType:
        """The code compiling `source` gives, from the cache when it holds it."""
        module = namespace.get("__name__")
        if type(module) is not str:
            module = None
        entries = self.sections.get(module)
        if entries is None:
            entries = self._section(module)
        blob = entries.get(source)
        code = None
        if blob is not None:
            try:
                code = marshal.loads(blob)
            except Exception:  # a damaged entry: compiled as if absent
                code = None
        if type(code) is types.CodeType:
            self.hits += 1
        else:
            self.misses += 1
            # dont_inherit: exec compiles with the calling module's __future__ flags, dataclasses has none
            # (quickimport's `annotations` would turn the methods' annotations into strings)
            code = compile(source, "<string>", "exec", dont_inherit=True)
            blob = None
        if self.recording and module is not None and (module == "wrapdock" or module.startswith("wrapdock.")):
            if blob is None:
                blob = marshal.dumps(code)
                self.changed.add(module)
            self.seen.setdefault(module, {})[source] = blob
        return code

    def _section(self, module: str | None) -> dict[str, bytes]:
        """A module's entries; none from a missing, unreadable, damaged or other Python's file."""
        self.sections[module] = {}
        if self.data is None:
            self._read()
        raw = self._raw_section(module) if module is not None else None
        if raw is not None:
            try:
                entries = marshal.loads(raw)
            except Exception:  # whatever a damaged section raises
                entries = None
            if type(entries) is dict:
                self.sections[module] = entries
        return self.sections[module]

    def _raw_section(self, module: str) -> memoryview | None:
        """The section's bytes if its checksum holds."""
        try:
            offset, size, checksum = self.index[module]
            raw = memoryview(self.data or b"")[self.base + offset:self.base + offset + size]
            import zlib  # built into the interpreter: no file to read

            return raw if len(raw) == size and zlib.crc32(raw) == checksum else None
        except Exception:  # not there, or an index entry of another shape
            return None

    def _read(self) -> None:
        """The file and its index: header (magic number, b"wdcm", format), the index's size and CRC-32,
        the index (marshal: module -> offset from its end, size, CRC-32 of its section), the sections."""
        self.data, self.index = b"", {}
        path = self.path()
        if path is None:
            return
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            return
        header = _methods_header()
        start = len(header) + 8
        if not data.startswith(header) or len(data) < start:
            return
        import zlib

        size = int.from_bytes(data[start - 8:start - 4], "little")
        raw = memoryview(data)[start:start + size]
        if len(raw) != size or zlib.crc32(raw) != int.from_bytes(data[start - 4:start], "little"):
            return
        try:
            index = marshal.loads(raw)
        except Exception:  # whatever a damaged file raises
            return
        if type(index) is dict:
            self.data, self.index, self.base = data, index, start + size

    def sections_to_write(self) -> dict[str, bytes]:
        """The file's sections (marshalled) with those of the modules this run compiled for made again
        from what this run built for them: all of such a module's classes were built at its import, so
        texts an edit made stale go."""
        if self.data is None:
            self._read()
        sections = {}
        for module in self.index:
            if module not in self.changed and type(module) is str:
                raw = self._raw_section(module)
                if raw is not None:
                    sections[module] = bytes(raw)
        for module in self.changed:
            sections[module] = marshal.dumps(self.seen[module])
        return sections


def _methods_header() -> bytes:
    """This Python's byte-code magic number (as .pyc files start), a name and the format."""
    magic = importlib._bootstrap_external.MAGIC_NUMBER  # type: ignore[attr-defined]
    return magic + b"wdcm" + _METHODS_FORMAT.to_bytes(4, "little")


_methods = _CompiledMethods()


def _exec_with_cache(source: Any, globals: Any = None, locals: Any = None, /, *args: Any, **kwargs: Any) -> None:
    """exec, for dataclasses: a source text with its globals is compiled through the cache; anything
    else goes to exec as it is."""
    if type(source) is str and type(globals) is dict and not args and not kwargs:
        _methods.calls += 1
        builtins.exec(_methods.code(source, globals), globals, locals)
        return
    _methods.other_calls.append(f"({', '.join(type(a).__name__ for a in (source, globals, locals, *args))}"
                                f"{''.join(f', {key}=' for key in kwargs)})")
    if globals is None:  # exec's default: its caller's namespaces, not this function's
        caller = sys._getframe(1)
        globals, locals = caller.f_globals, caller.f_locals if locals is None else locals
    builtins.exec(source, globals, locals, *args, **kwargs)


def _use_compiled_methods(dataclasses: types.ModuleType) -> None:
    if _methods.installed or vars(dataclasses).get("exec") is _exec_with_cache:
        return
    if "exec" in vars(dataclasses):
        _broken.append(f"dataclasses of Python {sys.version.split()[0]} has a name `exec` of its own: "
                       "quickimport's compiled-methods cache is not used (methods compiled as before)")
        return
    dataclasses.exec = _exec_with_cache  # type: ignore[attr-defined]
    _methods.installed = True


def _dataclass_problems() -> list[str]:
    """Builds a small frozen, ordered dataclass through the stand-in: it must be called in the assumed
    shape, and the methods must work."""
    dataclasses = sys.modules.get("dataclasses")
    if not _methods.installed or dataclasses is None:
        return []
    python = f"dataclasses of Python {sys.version.split()[0]}"
    if vars(dataclasses).get("exec") is not _exec_with_cache:
        return [f"{python}: quickimport's `exec` stand-in was replaced; the compiled-methods cache is unused"]
    calls, others = _methods.calls, len(_methods.other_calls)

    def body(namespace: dict[str, Any]) -> None:  # a module not in sys.modules: its methods are not recorded
        namespace.update(__module__="wrapdock-quickimport-probe", __doc__="A probe.",
                         __annotations__={"n": int, "s": str})

    try:
        probe = dataclasses.dataclass(frozen=True, order=True)(types.new_class("Probe", (), {}, body))
    except Exception as exc:  # said, not raised
        return [f"{python}: a dataclass does not build through quickimport's `exec` ({type(exc).__name__}: {exc})"]
    problems = [f"{python} calls exec with {shape}, not (source text, globals, namespace): those are compiled "
                f"as before, not cached" for shape in _methods.other_calls[others:]]
    if _methods.calls == calls and not problems:
        problems.append(f"{python} no longer builds methods through a global `exec`: quickimport's "
                        "compiled-methods cache is unused (methods compiled as before)")
    one, same, more = probe(1, "x"), probe(1, "x"), probe(2, "x")
    try:
        one.n = 3
        frozen = False
    except dataclasses.FrozenInstanceError:
        frozen = True
    if not (one == same and hash(one) == hash(same) and one < more and frozen
            and repr(one) == "Probe(n=1, s='x')" and probe.__init__.__annotations__ == {"n": int, "s": str,
                                                                                         "return": None}):
        problems.append(f"{python}: methods built through quickimport's `exec` do not behave as dataclasses'")
    return problems


def save_compiled_methods() -> None:
    """At the end of a run that compiled methods of wrapdock's modules, writes them into the cache file,
    as Python writes a missing .pyc: not under PYTHONDONTWRITEBYTECODE, silently not where it cannot."""
    if not _methods.changed or sys.dont_write_bytecode:
        return
    path = _methods.path()
    if path is not None:
        _write_methods(path, _methods.sections_to_write())
    _methods.changed = set()


def _write_methods(path: str, sections: dict[str, bytes]) -> bool:
    """Written whole under another name, then renamed over the old: a reader sees one file or the other."""
    import zlib

    index, offset = {}, 0
    for module, section in sections.items():
        index[module] = (offset, len(section), zlib.crc32(section))
        offset += len(section)
    body = marshal.dumps(index)
    data = b"".join([_methods_header(), len(body).to_bytes(4, "little"), zlib.crc32(body).to_bytes(4, "little"),
                     body, *sections.values()])
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError:
        with suppress(OSError):
            os.unlink(temporary)
        return False
    return True


def modules_with_dataclasses() -> list[str]:
    """wrapdock's modules whose source mentions a dataclass (the package's __main__ excepted: it runs the CLI)."""
    package = os.path.dirname(os.path.abspath(__file__))
    found = []
    for folder, subfolders, files in os.walk(package):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py") or name == "__main__.py":
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as source:
                if "dataclass" not in source.read():
                    continue
            relative = os.path.relpath(os.path.join(folder, name[:-3]), os.path.dirname(package))
            found.append(relative.replace(os.sep, ".").removesuffix(".__init__"))
    return found


def write_method_cache(path: str | None = None) -> tuple[str, int]:
    """The warm-up: imports every wrapdock module with a dataclass, compiling each method (nothing read
    from an old file: what an edit made stale goes), and writes the file. Its path and entries."""
    _methods.data, _methods.index, _methods.recording = b"", {}, True
    if path is not None:
        _methods.file = path
    load_click()
    for module in modules_with_dataclasses():
        importlib.import_module(module)
    target = _methods.path()
    if target is None:
        raise OSError("this Python writes no byte-code (sys.implementation.cache_tag is None)")
    if not _write_methods(target, {module: marshal.dumps(texts) for module, texts in _methods.seen.items()}):
        raise OSError(f"cannot write {target}")
    return target, sum(len(texts) for texts in _methods.seen.values())


def _main(argv: list[str]) -> int:
    if argv != ["--write-cache"]:
        print("usage: python -m wrapdock.quickimport --write-cache", file=sys.stderr)
        return 2
    from wrapdock import quickimport  # the package's module, not this __main__ copy

    try:
        path, count = quickimport.write_method_cache()
    except OSError as error:
        print(f"wrapdock.quickimport: {error}", file=sys.stderr)
        return 1
    print(f"wrapdock.quickimport: {count} compiled dataclass methods in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
