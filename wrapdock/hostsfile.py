"""The /etc/hosts and /etc/resolv.conf wrapdock keeps for each container. Pure."""

from __future__ import annotations

from typing import Any

HEADER = "# kept by wrapdock: rewritten when containers join or leave this container's networks"


def hosts_lines(record: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """localhost, the container itself, every container on a network it shares, then --add-host."""
    lines = [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    own_networks = {e["network"] for e in record.get("endpoints", [])}
    for endpoint in record.get("endpoints", []):
        lines.append(f"{endpoint['address']}\t{_names(record)}")
    for other in sorted(others, key=lambda r: r["name"]):
        if other["id"] == record["id"]:
            continue
        for endpoint in other.get("endpoints", []):
            if endpoint["network"] in own_networks:
                lines.append(f"{endpoint['address']}\t{_names(other)}")
    for entry in record.get("add_hosts", []):
        name, _, address = entry.partition(":")
        lines.append(f"{address}\t{name}")
    return lines


def _names(record: dict[str, Any]) -> str:
    names = [record["hostname"]] + ([record["name"]] if record["name"] != record["hostname"] else [])
    return " ".join(names)


def resolv_lines(host_resolv: str, dns: list[str]) -> list[str]:
    """--dns if given; else the host's, without loopback nameservers (unreachable from a container)."""
    if dns:
        return ["# from --dns", *(f"nameserver {server}" for server in dns)]
    kept = []
    for line in host_resolv.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and (words[1].startswith("127.") or words[1] == "::1"):
            continue
        kept.append(line)
    return ["# from the host's /etc/resolv.conf (loopback nameservers left out)", *kept]
