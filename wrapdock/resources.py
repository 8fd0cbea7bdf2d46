"""Find the files that ship with wrapdock: script templates (templates/) and JSON Schemas (state/).

An installed wrapdock carries them as the packages wrapdock._templates and wrapdock._state (see
pyproject.toml); a checkout that was not installed reads the top-level folders.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _read(folder: str, package: str, name: str) -> str:
    try:
        return resources.files(package).joinpath(name).read_text()
    except ModuleNotFoundError:  # running from a checkout that was not installed
        return (_CHECKOUT / folder / name).read_text()


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
