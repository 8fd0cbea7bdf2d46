"""What the running kernel offers that a plan's commands depend on: read here, by Python, and handed to the
plans as plain values (the plans stay pure)."""

from __future__ import annotations

import os

IPV6_SETTINGS = "/proc/sys/net/ipv6"


def has_ipv6() -> bool:
    """Whether the kernel has IPv6. Booted with `ipv6.disable=1` it has no IPv6 settings at all (no
    /proc/sys/net/ipv6), and `ip link set ... addrgenmode` fails there."""
    return os.path.isdir(IPV6_SETTINGS)
