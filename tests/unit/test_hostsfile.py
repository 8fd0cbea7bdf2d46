"""The /etc/hosts wrapdock keeps: who is listed, and why containers of one network share one content."""

from __future__ import annotations

from wrapdock.hostsfile import HEADER, content_key, hosts_lines, resolv_lines, shared_names

LOCAL = [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]


def container(name: str, *endpoints: tuple[str, str], add_hosts: tuple[str, ...] = (), hostname: str = "") -> dict:
    return {"id": name * 4, "name": name, "hostname": hostname or name, "add_hosts": list(add_hosts),
            "endpoints": [{"network": net, "address": address} for net, address in endpoints]}


BIRD = container("bird", ("web", "10.0.0.2"))
CAT = container("cat", ("web", "10.0.0.3"), hostname="kitty")
DB = container("db", ("back", "10.1.0.2"))
ROUTER = container("router", ("web", "10.0.0.4"), ("back", "10.1.0.4"), add_hosts=("outside:203.0.113.1",))
EVERYONE = [BIRD, CAT, DB, ROUTER]


def test_lists_everyone_on_its_networks_itself_included_sorted_by_name() -> None:
    assert hosts_lines(BIRD, EVERYONE) == [*LOCAL, "10.0.0.2\tbird", "10.0.0.3\tkitty cat", "10.0.0.4\trouter"]


def test_two_networks_list_both_and_add_hosts_come_last() -> None:
    assert hosts_lines(ROUTER, EVERYONE) == [
        *LOCAL, "10.0.0.2\tbird", "10.0.0.3\tkitty cat", "10.1.0.2\tdb", "10.0.0.4\trouter", "10.1.0.4\trouter",
        "203.0.113.1\toutside"]


def test_containers_with_the_same_networks_and_add_hosts_share_one_content() -> None:
    assert shared_names(EVERYONE) == set()
    assert content_key(BIRD, set()) == content_key(CAT, set()) != content_key(ROUTER, set())
    assert hosts_lines(BIRD, EVERYONE) == hosts_lines(CAT, EVERYONE)
    assert hosts_lines(BIRD, EVERYONE) != hosts_lines(DB, EVERYONE)


def test_a_name_used_twice_finds_itself_first_with_a_content_of_its_own() -> None:
    web1 = container("web1", ("web", "10.0.0.7"), hostname="web")
    web2 = container("web2", ("web", "10.0.0.8"), hostname="web")
    crowd = [*EVERYONE, web1, web2]
    shared = shared_names(crowd)
    assert shared == {"web"}
    assert content_key(web1, shared) != content_key(web2, shared)
    assert content_key(BIRD, shared) == content_key(CAT, shared)
    entries = len(LOCAL)
    assert hosts_lines(web2, crowd)[entries] == "10.0.0.8\tweb web2"  # itself first, then by name
    assert hosts_lines(web2, crowd)[entries + 1:] == [
        "10.0.0.2\tbird", "10.0.0.3\tkitty cat", "10.0.0.4\trouter", "10.0.0.7\tweb web1"]
    assert hosts_lines(web1, crowd)[entries] == "10.0.0.7\tweb web1"
    assert hosts_lines(BIRD, crowd)[entries:] == [
        "10.0.0.2\tbird", "10.0.0.3\tkitty cat", "10.0.0.4\trouter", "10.0.0.7\tweb web1", "10.0.0.8\tweb web2"]


def test_a_new_container_not_yet_in_the_list_is_still_listed() -> None:
    newcomer = container("ant", ("web", "10.0.0.9"))
    assert hosts_lines(newcomer, EVERYONE)[len(LOCAL)] == "10.0.0.9\tant"


def test_without_a_network_only_localhost_and_add_hosts() -> None:
    alone = container("solo", add_hosts=("db:10.9.9.9",))
    assert hosts_lines(alone, EVERYONE) == [*LOCAL, "10.9.9.9\tdb"]


def test_resolv_conf_leaves_out_loopback_nameservers() -> None:
    host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\n"
    assert resolv_lines(host, []) == ["# from the host's /etc/resolv.conf (loopback nameservers left out)",
                                      "search lan", "nameserver 10.0.0.1"]
    assert resolv_lines(host, ["9.9.9.9"]) == ["# from --dns", "nameserver 9.9.9.9"]
