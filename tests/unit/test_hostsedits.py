"""A run or rm edits /etc/hosts files in place (hostsfile.with_member, without_member): the result must be
the file hosts_lines makes from every record, whoever the file belongs to and whoever joins or leaves."""

from __future__ import annotations

import random

import pytest

from wrapdock.hostsfile import LOCAL_LINES, content_key, hosts_lines, member_lines, with_member, without_member

NETWORKS = ("web", "back", "db")


def crowd(seed: int) -> list[dict]:
    """Containers on one to three networks, some with a host name of their own (-h, sometimes another
    container's name), some with --add-host entries, and other hosts' containers (cluster networks)."""
    rng = random.Random(seed)
    names = rng.sample([f"{stem}{n}" for stem in ("a", "b", "web", "z", "m") for n in ("", "1", "2", "10")], 14)
    records = []
    for number, name in enumerate(names):
        on = rng.sample(NETWORKS, rng.choice((1, 1, 1, 2, 3)))
        hostname = name if rng.random() < 0.7 else rng.choice([*names, "other"])
        records.append({
            "id": f"{number:02x}" * 32, "name": name, "hostname": hostname,
            "add_hosts": rng.sample(["x:10.9.9.9", "y:10.9.9.8"], rng.choice((0, 0, 1, 2))),
            "endpoints": [{"network": net, "address": f"10.{NETWORKS.index(net)}.0.{number + 2}"} for net in on]})
    for number, name in enumerate(("r1", "remote", "b5")):  # cluster networks: listed, never file owners
        records.append({"id": f"remote:web:{name}", "name": name, "hostname": name,
                        "endpoints": [{"network": "web", "address": f"10.0.1.{number + 2}"}]})
    return records


def layout(owner: dict) -> tuple[frozenset[str], int, int]:
    """What the edits need to know of a file: as containerhosts._layout tells it."""
    networks = frozenset(e["network"] for e in owner["endpoints"])
    first = len(member_lines(owner, networks)) if content_key(owner)[0] == "own" else 0
    return networks, first, len(owner["add_hosts"])


@pytest.mark.parametrize("seed", range(40))
def test_a_container_joining_is_listed_where_hosts_lines_would_list_it(seed: int) -> None:
    records = crowd(seed)
    local = [r for r in records if not r["id"].startswith("remote:")]
    for joiner in local:
        before = [r for r in records if r is not joiner]
        for owner in local:
            if owner is joiner:
                continue
            edited = with_member(hosts_lines(owner, before), joiner, *layout(owner))
            assert edited == hosts_lines(owner, records), (owner["name"], joiner["name"])


@pytest.mark.parametrize("seed", range(40))
def test_a_container_leaving_is_taken_out_and_nothing_else(seed: int) -> None:
    records = crowd(seed)
    local = [r for r in records if not r["id"].startswith("remote:")]
    for leaver in local:
        after = [r for r in records if r is not leaver]
        for owner in local:
            if owner is leaver:
                continue
            edited = without_member(hosts_lines(owner, records), leaver, tail=len(owner["add_hosts"]))
            assert edited == hosts_lines(owner, after), (owner["name"], leaver["name"])


def test_an_add_host_line_that_looks_like_the_leaver_stays() -> None:
    bird = {"id": "b" * 64, "name": "bird", "hostname": "bird",
            "endpoints": [{"network": "web", "address": "10.0.0.2"}]}
    owner = {"id": "c" * 64, "name": "cat", "hostname": "cat", "add_hosts": ["bird:10.0.0.2"],
             "endpoints": [{"network": "web", "address": "10.0.0.3"}]}
    lines = hosts_lines(owner, [bird])
    assert lines.count("10.0.0.2\tbird") == 2
    assert without_member(lines, bird, tail=1) == [*lines[:LOCAL_LINES], "10.0.0.3\tcat", "10.0.0.2\tbird"]


def test_a_container_on_none_of_the_files_networks_changes_nothing() -> None:
    owner = {"id": "c" * 64, "name": "cat", "hostname": "cat",
             "endpoints": [{"network": "web", "address": "10.0.0.3"}]}
    stranger = {"id": "d" * 64, "name": "dog", "hostname": "dog",
                "endpoints": [{"network": "db", "address": "10.2.0.3"}]}
    lines = hosts_lines(owner, [])
    assert with_member(lines, stranger, frozenset({"web"})) == lines
    assert without_member(lines, stranger) == lines


def test_a_file_that_is_not_text_is_left_as_it_is(tmp_path) -> None:
    """A `-h` container may write bytes of its own into its /etc/hosts: a run or rm leaves that file
    alone (doctor names it, gc writes it again) instead of failing on it."""
    from wrapdock.containerhosts import _lines_of

    (tmp_path / "hosts").write_bytes(b"127.0.0.1\tlocalhost\n\xff\xfe\n")
    assert _lines_of(str(tmp_path / "hosts")) is None
    (tmp_path / "hosts").write_text("127.0.0.1\tlocalhost\n")
    assert _lines_of(str(tmp_path / "hosts")) == ["127.0.0.1\tlocalhost"]
    assert _lines_of(str(tmp_path / "gone")) is None
