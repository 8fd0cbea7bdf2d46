"""Find the files that ship with wrapdock: script templates (templates/) and JSON Schemas (state/).

An installed wrapdock carries them as the packages wrapdock._templates and wrapdock._state (see
pyproject.toml); a checkout that was not installed reads the top-level folders.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _read(folder: str, package: str, name: str) -> str:
    # the files themselves first: importlib.resources costs more to import (~5 ms) than a `ps` may spend
    for candidate in (_PACKAGE / package.rsplit(".", 1)[1] / name,  # installed: wrapdock/_state/...
                      _PACKAGE.parent / folder / name):  # a checkout (editable install): state/...
        if candidate.is_file():
            return candidate.read_text()
    from importlib import resources  # any other loader (a zip, ...)

    return resources.files(package).joinpath(name).read_text()


@cache
def template(name: str) -> str:
    return _read("templates", "wrapdock._templates", name)


def fill(text: str, values: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders; shell syntax such as ${x#y} and "$@" passes through untouched."""
    import re

    def value(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", value, text)


@cache
def schema_text(kind: str) -> str:
    return _read("state", "wrapdock._state", f"{kind}.schema.json")
