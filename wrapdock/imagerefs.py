"""Image names as Docker spells them (`busybox`, `bb2:v1`, `localhost/app:1.0`), checked and normalized.

One image has one name per tag; `NAME` and `NAME:latest` are the same image (as in Docker), and
`docker.io/library/NAME` is `NAME`. Records are files, so a name maps to a file key without '/'.
"""

from __future__ import annotations

import re

from wrapdock.errors import UsageError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?"
_REFERENCE = re.compile(rf"(?:(?P<host>{_HOST})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
                        r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?")
_LEGACY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # the names wrapdock took before references


def normalize(reference: str) -> str:
    """The canonical name of a reference, or UsageError: `docker.io/library/x:latest` -> `x`."""
    text = reference.strip()
    if len(text) > 255 or "@" in text:
        raise UsageError(f"invalid image name {reference!r}: expected NAME[:TAG] (digests are not supported)")
    match = _REFERENCE.fullmatch(text)
    if not match:
        if _LEGACY.fullmatch(text):
            return text
        raise UsageError(f"invalid image name {reference!r}: expected NAME[:TAG], NAME of lower-case letters, "
                         "digits, '.', '_', '-' and '/'")
    host, path, tag = match.group("host"), match.group("path"), match.group("tag")
    if host is not None and "." not in host and ":" not in host and host != "localhost":
        path, host = f"{host}/{path}", None  # `library/x`: a path, not a registry host
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        host = None
    if host is None and path.startswith("library/"):
        path = path.removeprefix("library/")
    name = f"{host}/{path}" if host else path
    return name if tag in (None, "latest") else f"{name}:{tag}"


def file_key(name: str) -> str:
    """The record's file name for a normalized name: '/' is not allowed in a file name, '+' in no name."""
    return name.replace("/", "+")


def valid(reference: str) -> bool:
    try:
        normalize(reference)
    except UsageError:
        return False
    return True
