"""The /etc/hosts and /etc/resolv.conf wrapdock keeps for each container. Pure."""

from __future__ import annotations

from typing import Any

HEADER = "# kept by wrapdock: rewritten when containers join or leave this container's networks"


def content_key(record: dict[str, Any], shared_names: set[str]) -> tuple[Any, ...]:
    """Containers with the same key get the same /etc/hosts: the same networks and --add-host
    entries, unless the container has a name another container has too (a `-h` used twice): its own
    name must find itself first, so it gets a content of its own. `shared_names` = shared_names(...)."""
    if shared_names.intersection(_names(record)):
        return ("own", record["id"])
    return frozenset(e["network"] for e in record.get("endpoints", [])), tuple(record.get("add_hosts", []))


def shared_names(records: list[dict[str, Any]]) -> set[str]:
    """Host names that more than one of these containers answers to."""
    seen: set[str] = set()
    shared: set[str] = set()
    for record in records:
        for name in set(_names(record)):
            (shared if name in seen else seen).add(name)
    return shared


def hosts_lines(record: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """localhost, every container on a network this one is on (itself too, by name), then --add-host.

    Sorted by container name, so that the containers of one network can share one content (see
    content_key); a container whose name another one has too is listed first, so it finds itself.
    """
    networks = {e["network"] for e in record.get("endpoints", [])}
    lines = [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    members = {other["id"]: other for other in others}
    members[record["id"]] = record
    listed = sorted(members.values(), key=lambda r: (r["name"], r["id"]))
    if shared_names(listed).intersection(_names(record)):
        listed.sort(key=lambda r: r["id"] != record["id"])  # stable: itself first, the rest by name
    for member in listed:
        for endpoint in member.get("endpoints", []):
            if endpoint["network"] in networks:
                lines.append(f"{endpoint['address']}\t{' '.join(_names(member))}")
    for entry in record.get("add_hosts", []):
        name, _, address = entry.partition(":")
        lines.append(f"{address}\t{name}")
    return lines


def _names(record: dict[str, Any]) -> list[str]:
    return [record["hostname"]] + ([record["name"]] if record["name"] != record["hostname"] else [])


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
