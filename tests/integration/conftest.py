from __future__ import annotations

import pytest

from tests.sandbox import Sandbox, can_sandbox


@pytest.fixture
def sandbox_factory():
    """More fresh sandbox hosts for one test (e.g. to run a --print-only script where wrapdock never ran)."""
    reason = can_sandbox()
    if reason:
        pytest.skip(reason)
    boxes: list[Sandbox] = []

    def make() -> Sandbox:
        box = Sandbox()
        boxes.append(box)
        return box

    try:
        yield make
    finally:
        for box in boxes:
            box.close()
