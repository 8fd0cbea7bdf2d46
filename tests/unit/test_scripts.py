"""The repository's own shell scripts (set-up, the lab, the tests, CI, the bench) pass shellcheck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["scripts/setup", "scripts/lab", "scripts/test", "scripts/vagrant-box", ".ci/run", "bench/run"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/setup --tests installs it)")
    done = subprocess.run(["shellcheck", str(ROOT / script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_shell_script_is_listed() -> None:
    """A new script under scripts/, .ci/ or bench/ is checked too."""
    found = {str(path.relative_to(ROOT)) for folder in ("scripts", ".ci", "bench") for path in (ROOT / folder).iterdir()
             if path.is_file() and path.read_bytes().startswith(b"#!/usr/bin/env bash")}
    assert found == set(SCRIPTS)
