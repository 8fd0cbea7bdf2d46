"""Import `sh`, `tabulate` and `click` without the time they spend on things wrapdock does not use.

At import, `sh` imports asyncio (for its async iteration, which wrapdock never uses) and both read
their own version from the installed packages' metadata (importlib.metadata: ~40 ms, more than a
whole `ps` should take). `sh` also imports modules it needs only for terminals (pty, tty, termios,
struct), for running as another user (pwd, getpass) and for reporting an error between fork and exec
(traceback): ~6 ms of every command that changes the host. All of those are deferred here: during
the import they are stand-ins that load the real module on first real use, and the originals are put
back right after. Everything of `sh` and `tabulate` works unchanged (tests/unit/test_quickimport.py).

This rests on what the tested releases import (pyproject.toml bounds them). So that a new release cannot
quietly undo it, each import checks its assumptions and `broken_assumptions()` says what no longer holds:
a stand-in the package no longer imports, a real module loaded during the import anyway, an import the
stand-ins break (then the package is imported plainly: slower, still working). The unit tests fail on any.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
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
    """What the imports so far showed to be no longer true of sh and tabulate (empty: all holds)."""
    return list(_broken)


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


def load_sh() -> types.ModuleType:
    return _import_with_stand_ins("sh", {
        "asyncio": _LazyModule("asyncio", Queue=_LazyAsyncioQueue, get_running_loop=_running_loop),
        "importlib.metadata": _metadata_stand_in(),
        "platform": _LazyModule("platform", system=_system),  # asked once, at import (~1.5 ms)
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
    inspect = {"inspect": _LazyModule("inspect", cleandoc=_cleandoc, isfunction=_isfunction)}
    _import_with_stand_ins("dataclasses", inspect)
    return _import_with_stand_ins("click", {**inspect, "platform": _LazyModule("platform", system=_system)})


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


