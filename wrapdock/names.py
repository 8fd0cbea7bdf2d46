"""Every name wrapdock shows to the kernel or to iptables, derived and checked in one place.

Kernel limits: an interface name has at most 15 characters (IFNAMSIZ - 1); an iptables chain name
at most 28. Everything wrapdock owns carries the WRAPDOCK chain prefix or an owner comment, so that
gc and doctor can tell it apart from what belongs to others.
"""

from __future__ import annotations

import os
import re

from wrapdock.errors import UsageError

IFNAME_MAX = 15
CHAIN_MAX = 28
OBJECT_NAME_MAX = 64

# Docker's rule for object names: a letter or digit first, then letters, digits, _ . -
_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What `ip link` accepts and a reader can still type: no '/', ':', whitespace, quotes or non-ASCII.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]+")

COMMENT_PREFIX = "wrapdock"


def check_object_name(kind: str, name: str) -> str:
    """Refuse names that could not be used safely everywhere a name goes (files, comments, links)."""
    if not name:
        raise UsageError(f"{kind} name is empty")
    if len(name) > OBJECT_NAME_MAX:
        raise UsageError(f"{kind} name is {len(name)} characters long; at most {OBJECT_NAME_MAX} are allowed")
    if not _OBJECT_NAME.fullmatch(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return name


def check_ifname(name: str, what: str = "interface") -> str:
    if not name:
        raise UsageError(f"{what} name is empty")
    if len(name) > IFNAME_MAX:
        raise UsageError(
            f"{what} name {name!r} is {len(name)} characters long; Linux allows at most {IFNAME_MAX}"
        )
    if name in (".", "..", "all", "default") or not _IFNAME.fullmatch(name):
        raise UsageError(f"invalid {what} name {name!r}: use letters, digits, '_', '.' and '-'")
    return name


def bridge_name(network: str, explicit: str | None) -> str:
    """The network's bridge: its own name unless --bridge-name says otherwise."""
    if explicit is not None:
        return check_ifname(explicit, "bridge")
    if len(network) > IFNAME_MAX:
        raise UsageError(
            f"network name {network!r} is {len(network)} characters long, too long for a bridge name "
            f"(Linux allows at most {IFNAME_MAX}): choose a shorter name or give --bridge-name"
        )
    return check_ifname(network, "bridge")


def check_chain(name: str) -> str:
    if len(name) > CHAIN_MAX:
        raise ValueError(f"chain name {name} exceeds {CHAIN_MAX} characters")
    return name


def network_comment(network: str) -> str:
    """The owner tag on every iptables rule of a network."""
    return f"{COMMENT_PREFIX}:network={network}"


def new_id() -> str:
    """A 64-hex-digit id for a container, network or image, as Docker's (os.urandom: what the
    `secrets` module uses, without importing it and hashlib on every run)."""
    return os.urandom(32).hex()


def sha256_hex(data: bytes) -> str:
    """SHA-256 from CPython's built-in module (`_sha256`; `_sha2` since 3.12), as the stdlib's `random`
    takes it: hashlib loads OpenSSL first, ~4 ms of a command that needs one digest."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef]
        except ImportError:
            from hashlib import sha256
    return sha256(data).hexdigest()
