"""A real terminal for tests: a pty whose slave is the controlling terminal of a command run in a sandbox.

The test plays the user: it types bytes into the master, reads what the terminal shows, and resizes
it (TIOCSWINSZ on the master: the kernel sends SIGWINCH to the terminal's foreground process group).
Every wait polls the screen with a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

from tests.sandbox import Sandbox, wrapdock_argv


class Terminal:
    def __init__(self, box: Sandbox, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)
        # setsid -c: a new session whose controlling terminal is this pty, as a login shell has
        self.proc = subprocess.Popen(["setsid", "-c", *box.enter_argv(), *wrapdock_argv(), "--quiet", *args],
                                     stdin=slave, stdout=slave, stderr=slave, env={**os.environ, **box.env})
        os.close(slave)
        self.screen = ""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _read(self, timeout: float) -> bool:
        """Append what the terminal shows within `timeout`; False once it is closed."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave is closed
            return False
        self.screen += data.decode(errors="replace")
        return bool(data)

    def expect(self, pattern: str, seconds: float = 30.0, since: int = 0) -> re.Match:
        """Wait until the screen (from offset `since`) matches `pattern`; returns the match."""
        deadline = time.monotonic() + seconds
        while True:
            match = re.search(pattern, self.screen[since:])
            if match:
                return match
            if time.monotonic() > deadline or not self._read(min(0.2, max(deadline - time.monotonic(), 0))):
                match = re.search(pattern, self.screen[since:])
                if match:
                    return match
                raise AssertionError(f"the terminal did not show {pattern!r} in {seconds}s; it shows:\n"
                                     f"{self.screen!r}")

    def mark(self) -> int:
        """An offset for expect(since=...): only what the terminal shows from now on."""
        while self._read(0):
            if not select.select([self.master], [], [], 0)[0]:
                break
        return len(self.screen)

    def wait(self, seconds: float = 60.0) -> int:
        """The command's exit code (reading the screen meanwhile, so it never blocks on a full pty)."""
        deadline = time.monotonic() + seconds
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the command did not end in {seconds}s; the terminal shows:\n{self.screen!r}")
            if not self._read(0.1):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.1)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
