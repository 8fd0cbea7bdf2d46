"""wrapdock as an installed package runs it, for the benches: byte-compiled (pip compiles what it installs;
an editable checkout where PYTHONDONTWRITEBYTECODE is set would otherwise compile edited modules again on
every run) and with its dataclasses' methods compiled into their cache file (wrapdock/quickimport.py),
which scripts/setup writes too.

    python bench/precompile.py [PYTHON]      (PYTHON: the virtualenv's python with wrapdock; this one if none)
"""

from __future__ import annotations

import subprocess
import sys


def precompile(python: str) -> None:
    """Both, for the wrapdock that `python` imports."""
    package = subprocess.run([python, "-c", "import os, wrapdock; print(os.path.dirname(wrapdock.__file__))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", package], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "wrapdock.quickimport", "--write-cache"], check=True)  # says where, on stderr


if __name__ == "__main__":
    precompile(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
