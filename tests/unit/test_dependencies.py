"""Every dependency in pyproject.toml is bounded above to the tested major release (0.x: minor), and
the installed releases (the tested ones) are inside the bounds."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(line) for line in
                [*PROJECT["dependencies"], *(line for extra in PROJECT["optional-dependencies"].values()
                                             for line in extra)]]


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_bounded_to_the_installed_major(requirement: Requirement) -> None:
    installed = Version(importlib.metadata.version(requirement.name))
    assert requirement.specifier.contains(installed), f"{requirement.name} {installed} is outside {requirement}"
    uppers = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
    assert uppers, f"{requirement} admits any future release: bound it (<{installed.major + 1})"
    next_breaking = (Version(f"{installed.major + 1}") if installed.major
                     else Version(f"0.{installed.minor + 1}"))
    assert min(uppers) == next_breaking, f"{requirement}: the tested release is {installed}, bound it <{next_breaking}"
