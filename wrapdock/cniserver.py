"""`wrapdock cni serve`: a resident process that answers `wrapdock-cni`'s calls, already warm.

A CNI plugin is one process per call, and podman makes an ADD and a DEL for every container: for a
Python plugin, most of such a call is starting the interpreter and importing wrapdock (~45 ms of a
~70 ms ADD), where a Go plugin starts in ~2 ms. The server imports everything once; each call then
costs a fork of it. The CNI reference plugins do the same for DHCP (`dhcp daemon`, which the `dhcp`
plugin forwards its calls to over a socket).

The plugin (wrapdock.cni) parses the call, then offers it to STATE_DIR/cni/server.sock. The server
checks that the caller is the same user and sees the same mount and network namespaces and the same
wrapdock (else it says "fallback" and the plugin does the call itself, as without a server); then a
forked child carries the call out exactly as the plugin would have — the same code, the caller's
environment, its own trail file (headed "by wrapdock cni serve") — and sends back the plugin's exit
code and stdout. No server, or one that does not answer: the plugin works alone, as before.

Requests and answers are one JSON document each way; the plugin closes its side after writing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wrapdock import cni

MAX_REQUEST_BYTES = 1 << 20  # a configuration with a prevResult is a few KiB
REQUEST_SECONDS = 30.0  # to read a request (the plugin writes it at once); the call itself has no limit


def mismatch(request: dict[str, Any], mine: dict[str, Any]) -> str | None:
    """Why this server must not carry out the request (None: it may)."""
    if request.get("protocol") != cni.SERVER_PROTOCOL:
        return f"protocol {request.get('protocol')!r}, the server speaks {cni.SERVER_PROTOCOL}"
    theirs = request.get("identity")
    if not isinstance(theirs, dict):
        return "no identity in the request"
    for key, value in mine.items():
        if theirs.get(key) != value:
            return f"{key} differs: the plugin's {theirs.get(key)!r}, the server's {value!r}"
    if not isinstance(request.get("env"), dict) or not isinstance(request.get("stdin"), str):
        return "the request has no env or stdin"
    return None


def _read_all(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"request larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def handle(conn: socket.socket, mine: dict[str, Any], server_pid: int) -> None:
    """In the forked child: one request, one answer."""
    try:
        request = json.loads(_read_all(conn))
        why = "the caller is another user" if _peer_uid(conn) != os.geteuid() else mismatch(request, mine)
    except (OSError, ValueError) as exc:
        request, why = {}, f"unreadable request: {exc}"
    conn.settimeout(None)
    if why is not None:
        answer: dict[str, Any] = {"fallback": why}
    else:
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        os.environ[cni.SERVED_BY_VARIABLE] = str(server_pid)
        code, stdout = cni.answer(dict(os.environ), request["stdin"])
        answer = {"code": code, "stdout": stdout}
    conn.sendall(json.dumps(answer).encode())


def listen(path: Path) -> socket.socket:
    """The listening socket, root's alone (0600); a socket file left by a server that died is replaced,
    one that answers is another server's: an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            from wrapdock.errors import UsageError

            raise UsageError(f"a server already listens on {path}")
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    server.listen(64)
    return server


# what the calls import as they go (found by listing sys.modules after each kind of call): imported
# once in the server, so that no forked child imports anything
CALL_MODULES = ("wrapdock.cniattach", "wrapdock.ipam", "wrapdock.names", "wrapdock.plan", "wrapdock.plans.endpoint",
                "wrapdock.plans.iptables", "wrapdock.portspec", "wrapdock.runner", "wrapdock.shell",
                "wrapdock.statecheck", "wrapdock.networks", "wrapdock.plans.driver", "wrapdock.hostports", "zlib")


def warm_up() -> None:
    """Everything a call needs, loaded now: the modules, sh, the state checks."""
    import importlib

    from wrapdock import state
    from wrapdock.quickimport import load_sh

    for name in CALL_MODULES:
        importlib.import_module(name)
    load_sh()
    state.prepare_checks()


def serve(path: Path, say: Callable[[str], None]) -> None:
    """Answer calls until SIGTERM or SIGINT; calls in progress finish in their own processes."""
    warm_up()
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    server = listen(path)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    server.settimeout(0.5)  # to notice a stop and reap finished children between calls
    mine, me = cni.server_identity(), os.getpid()
    say(f"wrapdock cni serve: pid {me}, listening on {path}")
    try:
        while not stopping:
            _reap()
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    server.close()
                    for signum in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(signum, signal.SIG_DFL)
                    conn.settimeout(REQUEST_SECONDS)  # a caller that never finishes its request
                    handle(conn, mine, me)
                except BaseException:  # the plugin sees a closed connection: "try again"
                    code = 1
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            conn.close()
    finally:
        server.close()
        if path.is_socket():
            path.unlink()
        say(f"wrapdock cni serve: pid {me} stopped")


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
