"""Import `sh` and `tabulate` without the time they spend on things wrapdock does not use.

At import, `sh` imports asyncio (for its async iteration, which wrapdock never uses) and both read
their own version from the installed packages' metadata (importlib.metadata: ~40 ms, more than a
whole `ps` should take). `sh` also imports modules it needs only for terminals (pty, tty, termios,
struct), for running as another user (pwd, getpass) and for reporting an error between fork and exec
(traceback): ~6 ms of every command that changes the host. All of those are deferred here: during
the import they are stand-ins that load the real module on first real use, and the originals are put
back right after. Everything of `sh` and `tabulate` works unchanged (tests/unit/test_quickimport.py).
"""

from __future__ import annotations

import importlib
import sys
import types
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


def _import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    saved = {module: sys.modules.get(module) for module in stand_ins}
    for module, stand_in in stand_ins.items():
        if saved[module] is None:
            sys.modules[module] = stand_in
    try:
        return importlib.import_module(name)
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


def _metadata_stand_in() -> types.ModuleType:
    return _LazyModule("importlib.metadata", version=_no_version, PackageNotFoundError=LookupError)


_SH_RARELY_USED = ("pty", "tty", "termios", "struct", "pwd", "getpass", "traceback")


def load_sh() -> types.ModuleType:
    return _import_with_stand_ins("sh", {
        "asyncio": _LazyModule("asyncio", Queue=_LazyAsyncioQueue, get_running_loop=_running_loop),
        "importlib.metadata": _metadata_stand_in(),
        **{name: _LazyModule(name) for name in _SH_RARELY_USED}})


def load_tabulate() -> Any:
    """tabulate.tabulate."""
    return _import_with_stand_ins("tabulate", {"importlib.metadata": _metadata_stand_in()}).tabulate
