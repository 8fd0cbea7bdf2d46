from __future__ import annotations

import pytest

from wrapdock import kernelfacts


@pytest.fixture(autouse=True)
def _kernel_with_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans read whether the kernel has IPv6; the goldens are those of a kernel that has it, whatever this
    machine's."""
    monkeypatch.setattr(kernelfacts, "has_ipv6", lambda: True)
