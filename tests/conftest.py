from __future__ import annotations

import pytest

from tests.sandbox import Sandbox, can_sandbox


@pytest.fixture
def sandbox():
    """A fresh sandbox host for one test; everything in it dies with it."""
    reason = can_sandbox()
    if reason:
        pytest.skip(reason)
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()
