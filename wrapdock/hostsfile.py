"""The /etc/hosts and /etc/resolv.conf wrapdock keeps for containers. Pure."""

from __future__ import annotations

from typing import Any

HEADER = "# kept by wrapdock: rewritten when containers join or leave this container's networks"
REMOTE = "remote:"  # the id prefix of another host's container (cluster networks: names across hosts)


def content_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """Containers with the same key get the same /etc/hosts, and share one file (one inode, see
    shared_file_name): the same networks and --add-host entries. A container whose host name is not
    its name (`-h`) gets a file of its own: another container may answer to that name too, and its
    own name must find itself first. The key depends on the container alone, so it changes only when
    the container's networks do (network connect, disconnect)."""
    if record["hostname"] != record["name"]:
        return ("own", record["id"])
    endpoints = record.get("endpoints", [])  # (computed for each container of a network: one endpoint is quick)
    networks = (endpoints[0]["network"],) if len(endpoints) == 1 else tuple(sorted({e["network"] for e in endpoints}))
    return ("shared", networks, tuple(record.get("add_hosts") or ()))


def shared_file_name(key: tuple[Any, ...]) -> str:
    """The name of a shared /etc/hosts under DATA_DIR/hosts: a digest of its key (networks are free
    text up to a length, a file name is not)."""
    from wrapdock.names import sha256_hex

    return sha256_hex(repr(key).encode())[:24]


def hosts_lines(record: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """localhost, every container on a network this one is on (itself too, by name), then --add-host.

    The containers whose host name is their name come first, sorted by name (names are unique on a
    host, and across the hosts of a cluster network): so every container of a group finds itself
    under its name before a `-h` container that took the same host name; the `-h` ones follow, also
    by name. A `-h` container's own file lists itself first.
    """
    networks = {e["network"] for e in record.get("endpoints", [])}
    lines = [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    members = {other["id"]: other for other in others}
    members[record["id"]] = record
    listed = sorted(members.values(), key=lambda r: (r["hostname"] != r["name"], r["name"], r["id"]))
    if record["hostname"] != record["name"]:
        listed.sort(key=lambda r: r["id"] != record["id"])  # stable: itself first, the rest as they were
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


# -- editing a file in place: a container joins or leaves (run, rm), without the other containers' records
LOCAL_LINES = 3  # HEADER and the two localhost lines


def member_lines(record: dict[str, Any], networks: set[str] | frozenset[str]) -> list[str]:
    """The lines that list `record` in a file of containers on `networks` (one per endpoint there)."""
    names = "\t" + " ".join(_names(record))
    return [endpoint["address"] + names for endpoint in record.get("endpoints", []) if endpoint["network"] in networks]


def _line_order(line: str) -> tuple[bool, str]:
    """Where a member's line sorts (hosts_lines' order): by the container's name, the `-h` ones last.
    The line names its container last, after the host name when that differs ("ADDRESS\\tHOST NAME")."""
    names = line.partition("\t")[2].split(" ")
    return len(names) > 1, names[-1]


def with_member(lines: list[str], record: dict[str, Any], networks: set[str] | frozenset[str],
                first: int = 0, tail: int = 0) -> list[str]:
    """`lines` (a file hosts_lines made) with `record` listed where hosts_lines would list it. `first`:
    the lines of the file's own container (a `-h` container lists itself first); `tail`: the
    --add-host lines at the end. The members in between are sorted, so this is a bisection."""
    import bisect

    mine = member_lines(record, networks)
    if not mine:
        return lines
    place = bisect.bisect_left(lines, _line_order(mine[0]), LOCAL_LINES + first, len(lines) - tail, key=_line_order)
    return [*lines[:place], *mine, *lines[place:]]


def without_member(lines: list[str], record: dict[str, Any], tail: int = 0) -> list[str]:
    """`lines` without the lines that list `record` (not its --add-host lines at the end, not the header)."""
    mine = set(member_lines(record, {e["network"] for e in record.get("endpoints", [])}))
    end = len(lines) - tail
    return [line for number, line in enumerate(lines) if number >= end or number < LOCAL_LINES or line not in mine]
