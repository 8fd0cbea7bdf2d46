"""The /etc/hosts wrapdock keeps: who is listed, and why containers of one network share one file."""

from __future__ import annotations

from wrapdock.hostsfile import HEADER, content_key, hosts_lines, resolv_lines, shared_file_name

LOCAL = [HEADER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]


def container(name: str, *endpoints: tuple[str, str], add_hosts: tuple[str, ...] = (), hostname: str = "") -> dict:
    return {"id": name * 4, "name": name, "hostname": hostname or name, "add_hosts": list(add_hosts),
            "endpoints": [{"network": net, "address": address} for net, address in endpoints]}


BIRD = container("bird", ("web", "10.0.0.2"))
CAT = container("cat", ("web", "10.0.0.3"), hostname="kitty")
DB = container("db", ("back", "10.1.0.2"))
ROUTER = container("router", ("web", "10.0.0.4"), ("back", "10.1.0.4"), add_hosts=("outside:203.0.113.1",))
EVERYONE = [BIRD, CAT, DB, ROUTER]


def test_lists_everyone_on_its_networks_itself_included_by_name_the_h_ones_last() -> None:
    assert hosts_lines(BIRD, EVERYONE) == [*LOCAL, "10.0.0.2\tbird", "10.0.0.4\trouter", "10.0.0.3\tkitty cat"]


def test_two_networks_list_both_and_add_hosts_come_last() -> None:
    assert hosts_lines(ROUTER, EVERYONE) == [
        *LOCAL, "10.0.0.2\tbird", "10.1.0.2\tdb", "10.0.0.4\trouter", "10.1.0.4\trouter", "10.0.0.3\tkitty cat",
        "203.0.113.1\toutside"]


def test_containers_with_the_same_networks_and_add_hosts_share_one_file() -> None:
    dove = container("dove", ("web", "10.0.0.5"))
    assert content_key(BIRD) == content_key(dove) != content_key(ROUTER)
    assert shared_file_name(content_key(BIRD)) == shared_file_name(content_key(dove))
    assert shared_file_name(content_key(BIRD)) != shared_file_name(content_key(ROUTER))
    assert hosts_lines(BIRD, [*EVERYONE, dove]) == hosts_lines(dove, [*EVERYONE, dove])
    assert hosts_lines(BIRD, EVERYONE) != hosts_lines(DB, EVERYONE)
    assert content_key(container("x", ("web", "10.0.0.6"), add_hosts=("a:10.9.9.9",))) != content_key(BIRD)


def test_the_key_does_not_depend_on_the_order_of_the_networks() -> None:
    one = container("one", ("web", "10.0.0.8"), ("back", "10.1.0.8"))
    assert content_key(one) == content_key(ROUTER | {"add_hosts": []})


def test_a_container_with_a_host_name_of_its_own_gets_a_file_of_its_own_itself_first() -> None:
    web1 = container("web1", ("web", "10.0.0.7"), hostname="web")
    web2 = container("web2", ("web", "10.0.0.8"), hostname="web")
    web = container("web", ("web", "10.0.0.9"))
    crowd = [*EVERYONE, web1, web2, web]
    assert content_key(web1) != content_key(web2)
    assert content_key(web1)[0] == content_key(CAT)[0] == "own"
    entries = len(LOCAL)
    assert hosts_lines(web2, crowd)[entries] == "10.0.0.8\tweb web2"  # itself first, then as the others
    assert hosts_lines(web2, crowd)[entries + 1:] == [
        "10.0.0.2\tbird", "10.0.0.4\trouter", "10.0.0.9\tweb", "10.0.0.3\tkitty cat", "10.0.0.7\tweb web1"]
    assert hosts_lines(web1, crowd)[entries] == "10.0.0.7\tweb web1"
    # the shared file: `web` (its name) before the -h containers that took the name as host name
    assert hosts_lines(BIRD, crowd)[entries:] == [
        "10.0.0.2\tbird", "10.0.0.4\trouter", "10.0.0.9\tweb", "10.0.0.3\tkitty cat", "10.0.0.7\tweb web1",
        "10.0.0.8\tweb web2"]


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
