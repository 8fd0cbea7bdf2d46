"""The /etc/hosts and /etc/resolv.conf wrapdock keeps for each container. Pure."""

from __future__ import annotations

from typing import Any

HEADER = "# kept by wrapdock: rewritten when containers join or leave this container's networks"


def view_key(record: dict[str, Any]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Containers with the same networks and --add-host entries have the same /etc/hosts."""
    return frozenset(e["network"] for e in record.get("endpoints", [])), tuple(record.get("add_hosts", []))


def hosts_lines(record: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """localhost, every container on a network this one is on (itself too, by name), then --add-host.

    The content depends only on view_key(record), so the containers of one network share it.
    """
    networks, add_hosts = view_key(record)
    lines = [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    members = {other["id"]: other for other in others}
    members[record["id"]] = record
    for member in sorted(members.values(), key=lambda r: (r["name"], r["id"])):
        for endpoint in member.get("endpoints", []):
            if endpoint["network"] in networks:
                lines.append(f"{endpoint['address']}\t{_names(member)}")
    for entry in add_hosts:
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
