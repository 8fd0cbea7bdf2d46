"""click, imported through quickimport (without `inspect`, ~5 ms of every command): the CLI imports it
from here first, before any module that imports dataclasses."""

from wrapdock.quickimport import load_click

click = load_click()
