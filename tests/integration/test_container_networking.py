"""Container networking with real containers and real packets (issue 4).

Every test runs in its own sandbox host with an `outside` namespace (203.0.113.1) behind the uplink
203.0.113.2, which has no route back to container subnets. Traffic goes only to containers, to
`outside` and to loopback. Every test ends by removing what it made and checking that nothing is
left: links, addresses, routes, iptables rules, netns, state records, leases, cgroups.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.ctnet import (
    HOST,
    SLEEP,
    Host,
    WrapdockBug,
    masquerade_jump,
    web_root,
)
from tests.sandbox import OUTSIDE_IP, OUTSIDE_NS, UPLINK_IP

pytestmark = pytest.mark.integration

TB, TB_GW = "testbridge", "162.16.0.1"
OB, OB_GW = "otherbridge", "162.17.0.1"
OWL_IP = "162.17.0.50"


def begin(sandbox) -> tuple[Host, dict]:
    """The outside world, then the snapshot every test must come back to."""
    sandbox.add_outside()
    return Host(sandbox), sandbox.snapshot()


def httpd(root, port: int = 80) -> tuple[str, ...]:
    """Options and command of a container serving `root` (index.html, /cgi-bin/ip) on `port`."""
    return ("-v", f"{root}:/www", "busybox", "httpd", "-f", "-p", str(port), "-h", "/www")


def two_lans(host: Host, tmp_path) -> dict[str, str]:
    """The article's setup: testbridge with bird (httpd, -p 8080:80) and robin (httpd); otherbridge with
    owl (httpd, --ip 162.17.0.50). Returns the containers' addresses."""
    host.wd("--quiet", "network", "create", "--driver", "bridge", "--subnet", "162.16.0.1/24", TB)
    host.network(OB, "162.17.0.1/24")
    # bird first: robin's /etc/hosts is written knowing it (robin reaches it by name)
    host.run("-name", "bird", "-net", TB, "-p", "8080:80", *httpd(web_root(tmp_path, "bird")))
    host.run_all(("--name", "robin", "--net", TB, *httpd(web_root(tmp_path, "robin"))),
                 ("--name", "owl", "--network", OB, "--ip", OWL_IP, *httpd(web_root(tmp_path, "owl"))))
    addresses = {"bird": host.address("bird", TB), "robin": host.address("robin", TB), "owl": host.address("owl", OB)}
    assert addresses["owl"] == OWL_IP
    for name, address in addresses.items():
        host.wait_http(f"http://{address}/", name)
    return addresses


def four_cases(host: Host, tmp_path, ip: dict[str, str]) -> str:
    """Host, outside, same LAN, other LAN, and bird's published port from outside; returns the pid of
    the outside web server (stopped by the caller)."""
    # 1. container <-> host
    assert host.ping("robin", TB_GW)
    assert host.ping("robin", UPLINK_IP)
    assert host.ping(HOST, ip["robin"])

    # 2. container -> outside, which has no route back: the reply finds its way only thanks to NAT
    no_route = host.sandbox.sh("ip", "-n", OUTSIDE_NS, "route", "get", ip["robin"], check=False)
    assert no_route.returncode != 0, no_route.stdout
    pid = host.serve(OUTSIDE_NS, web_root(tmp_path, "outside"), 8000)
    host.wait_http(f"http://{OUTSIDE_IP}:8000/", "outside")
    assert host.ping("robin", OUTSIDE_IP)
    assert host.remote_addr("robin", f"http://{OUTSIDE_IP}:8000/cgi-bin/ip") == UPLINK_IP  # masqueraded
    assert host.remote_addr("owl", f"http://{OUTSIDE_IP}:8000/cgi-bin/ip") == UPLINK_IP

    # 3. two containers on one LAN: by name (/etc/hosts) and by address, seen with their own address
    assert host.exec("robin", "ping", "-c1", "-W2", "bird").returncode == 0  # through `wrapdock exec`
    assert host.ping("robin", ip["bird"])
    assert host.ping("bird", ip["robin"])
    assert host.remote_addr("bird", f"http://{ip['robin']}/cgi-bin/ip") == ip["bird"]
    # straight to the container port bird publishes: not caught by the hairpin MASQUERADE (which
    # br_netfilter shows bridged traffic too), so bird sees robin itself
    assert host.remote_addr("robin", "http://bird/cgi-bin/ip") == ip["robin"]

    # 4. containers on two LANs, routed by the host: the receiver sees the sender's real address
    assert host.exec("owl", "ping", "-c1", "-W2", ip["bird"]).returncode == 0
    assert host.ping("robin", OWL_IP)
    assert host.ping("owl", ip["robin"])
    assert host.remote_addr("owl", f"http://{ip['robin']}/cgi-bin/ip") == OWL_IP
    assert host.remote_addr("owl", f"http://{ip['bird']}/cgi-bin/ip") == OWL_IP
    assert host.remote_addr("robin", f"http://{OWL_IP}/cgi-bin/ip") == ip["robin"]

    # a published port, from the outside (whose address bird sees: DNAT only changes the destination),
    # from the host via 127.0.0.1, and from the other LAN via the host's address
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") == "bird"
    assert host.remote_addr(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/cgi-bin/ip") == OUTSIDE_IP
    assert host.fetch(HOST, "http://127.0.0.1:8080/") == "bird"
    assert host.remote_addr("owl", f"http://{UPLINK_IP}:8080/cgi-bin/ip") == OWL_IP
    return pid


def test_four_cases_and_the_outside_only_through_masquerade(sandbox, tmp_path):
    host, start = begin(sandbox)
    ip = two_lans(host, tmp_path)
    server = four_cases(host, tmp_path, ip)

    # the proof that the outside is reached only thanks to NAT: without testbridge's MASQUERADE jump
    # (and with conntrack's memory of earlier flows gone) robin's echo requests leave with
    # 162.16.0.x, for which the outside has no route back
    jump = masquerade_jump(sandbox, "162.16.0.0/24", TB)
    sandbox.sh("iptables", "-w", "-t", "nat", "-D", *jump[1:])
    sandbox.sh("sh", "-c", "command -v conntrack >/dev/null || exit 0; conntrack -F >/dev/null 2>&1 || true")
    assert host.pings(("robin", OUTSIDE_IP), ("robin", UPLINK_IP), wait=2) == [False, True]
    assert host.ping("owl", OUTSIDE_IP)  # otherbridge keeps its own jump

    sandbox.sh("kill", server)
    # rm -f and network rm still clean up (their deletes are guarded: the missing rule is fine)
    host.teardown(start, ["bird", "robin", "owl"], [TB, OB])


def test_forward_policy_drop_does_not_stop_the_four_cases(sandbox, tmp_path):
    sandbox.sh("iptables", "-P", "FORWARD", "DROP")  # what Docker sets on a host
    host, start = begin(sandbox)
    assert "*filter :FORWARD DROP" in start["iptables"]
    ip = two_lans(host, tmp_path)
    server = four_cases(host, tmp_path, ip)
    sandbox.sh("kill", server)
    host.teardown(start, ["bird", "robin", "owl"], [TB, OB])  # (start has the DROP policy)


def test_published_ports(sandbox, tmp_path):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    bird_80, bird_81 = web_root(tmp_path, "bird80"), web_root(tmp_path, "bird81")
    host.run_all(
        ("--name", "bird", "--net", TB, "-p", "8080:80", "-p", "9000-9001:80-81", "-p", "5353:53/udp",
         "-v", f"{bird_80}:/www", "-v", f"{bird_81}:/www81",
         "busybox", "sh", "-c", "httpd -p 81 -h /www81 && exec httpd -f -p 80 -h /www"),
        ("--name", "lark", "--net", TB, "-p", "127.0.0.1:8082:80", *httpd(web_root(tmp_path, "lark"))),
        ("--name", "robin", "--net", TB, *SLEEP),
    )
    bird, lark = host.address("bird", TB), host.address("lark", TB)
    host.wait_http(f"http://{bird}/", "bird80")
    host.wait_http(f"http://{bird}:81/", "bird81")
    host.wait_http(f"http://{lark}/", "lark")

    # from the outside namespace, through the uplink address
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") == "bird80"
    # from the sandbox host itself, via its uplink address and via 127.0.0.1
    assert host.fetch(HOST, f"http://{UPLINK_IP}:8080/") == "bird80"
    assert host.fetch(HOST, "http://127.0.0.1:8080/") == "bird80"
    # hairpin: another container of the same bridge, and bird itself, through the host's address
    assert host.fetch("robin", f"http://{UPLINK_IP}:8080/") == "bird80"
    # (masqueraded to the gateway: the reply must come back through the host to be un-NATed)
    assert host.remote_addr("robin", f"http://{UPLINK_IP}:8080/cgi-bin/ip") == TB_GW
    assert host.fetch("bird", f"http://{UPLINK_IP}:8080/") == "bird80"
    # a range: 9000->80, 9001->81
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:9000/") == "bird80"
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:9001/") == "bird81"
    # bound to 127.0.0.1: there, and nowhere else
    assert host.fetch(HOST, "http://127.0.0.1:8082/") == "lark"
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8082/") is None
    assert host.fetch(HOST, f"http://{UPLINK_IP}:8082/") is None

    # UDP: a datagram from the outside to 5353 arrives on port 53 in bird's network namespace, with
    # the sender's address (busybox nc has no -u: a small Python receiver and sender stand in)
    listener = host.udp_listen("bird", 53)
    got = host.udp_send_until_received(listener, OUTSIDE_NS, UPLINK_IP, 5353, "udp-hello")
    assert got == f"{OUTSIDE_IP} udp-hello"

    # a second container on a host port already published: refused before anything happens
    before = sandbox.snapshot()
    leases = host.leases(TB)
    clash = sandbox.wrapdock("run", "-d", "--name", "dup", "--net", TB, "-p", "8080:80", *SLEEP, check=False)
    assert clash.returncode == 2, clash.stderr
    assert clash.stderr.strip().splitlines()[-1].startswith("wrapdock: error:"), clash.stderr
    assert "8080" in clash.stderr and "bird" in clash.stderr, clash.stderr
    assert sandbox.snapshot() == before
    assert host.leases(TB) == leases
    assert sorted(v["name"] for v in host.listing()) == ["bird", "lark", "robin"]
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") == "bird80"  # still bird's

    host.teardown(start, ["bird", "lark", "robin"], [TB])
    # and the ports are gone with the rules
    assert host.fetch(HOST, "http://127.0.0.1:8080/") is None


def test_isolated_and_internal_networks(sandbox):
    host, start = begin(sandbox)
    host.network("iso", "10.40.0.0/24", "--isolated")
    host.network("plain", "10.41.0.0/24")
    host.network("plain2", "10.43.0.0/24")
    host.network("intern", "10.42.0.0/24", "--internal")
    members = {"iso1": "iso", "iso2": "iso", "pl": "plain", "pl2": "plain2", "in1": "intern", "in2": "intern"}
    host.run_all(*(("--name", name, "--net", net, *SLEEP) for name, net in members.items()))
    ip = {name: host.address(name, net) for name, net in members.items()}

    reached = host.pings(
        ("iso1", ip["iso2"]), ("iso2", ip["iso1"]), ("iso1", "10.40.0.1"), ("iso1", OUTSIDE_IP),
        ("in1", ip["in2"]), ("in2", ip["in1"]), ("in1", "10.42.0.1"),
        # the control: between two ordinary networks, routing works
        ("pl", ip["pl2"]), ("pl2", ip["pl"]), ("pl", OUTSIDE_IP),
        wait=3)
    assert reached == [True] * 10

    blocked = host.pings(
        # --isolated: not to another wrapdock network, nor from one
        ("iso1", ip["pl"]), ("pl", ip["iso1"]), ("iso2", ip["pl2"]), ("pl2", ip["iso2"]),
        # --internal: not to the outside, nor to other networks, nor from them
        ("in1", OUTSIDE_IP), ("in1", ip["pl"]), ("pl", ip["in1"]), ("in2", ip["iso1"]), ("iso1", ip["in2"]),
        wait=1)
    assert blocked == [False] * 9

    host.teardown(start, list(members), ["iso", "plain", "plain2", "intern"])


def test_connect_and_disconnect(sandbox, tmp_path):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    host.network(OB, "162.17.0.1/24")
    host.run_all(("--name", "robin", "--net", TB, *SLEEP),
                 ("--name", "owl", "--net", OB, "--ip", OWL_IP, *httpd(web_root(tmp_path, "owl"))))
    robin_tb = host.address("robin", TB)
    host.wait_http(f"http://{OWL_IP}/", "owl")
    assert host.links("robin") == ["lo", "eth0"]
    # before: robin reaches owl routed through the host, owl sees robin's testbridge address
    assert host.remote_addr("robin", f"http://{OWL_IP}/cgi-bin/ip") == robin_tb

    host.wd("--quiet", "network", "connect", OB, "robin")
    robin_ob = host.address("robin", OB)
    assert robin_ob.startswith("162.17.0.") and robin_ob != OWL_IP
    assert host.links("robin") == ["lo", "eth0", "eth1"]
    eth1 = host.inside("robin", "ip", "-4", "-o", "addr", "show", "dev", "eth1")
    assert f"inet {robin_ob}/24" in eth1.stdout, eth1.stdout
    # IPv4-only networks: no IPv6 link-local address on the container's interfaces (whose chatter the
    # bridge would flood to every port), while the kernel has IPv6 (lo keeps ::1)
    ipv6 = host.inside("robin", "ip", "-6", "-o", "addr", "show").stdout
    assert re.findall(r"^\d+: (\S+)\s+inet6 (\S+)", ipv6, re.M) == [("lo", "::1/128")], ipv6
    # nor on the host ends (bridge ports): no address, and no route of theirs in the host's tables but the
    # multicast one every interface with IPv6 has
    ports = host.sandbox.sh("ip", "-o", "link", "show", "type", "veth").stdout
    ends = re.findall(r"^\d+: (wd\w+)@", ports, re.M)
    assert len(ends) == 3, ports  # robin's two, owl's one
    host_ipv6 = host.sandbox.sh("ip", "-6", "-o", "addr", "show").stdout + "".join(
        line for line in host.sandbox.sh("ip", "-6", "route", "show", "table", "all").stdout.splitlines(True)
        if not line.startswith("multicast ff00::/8 "))
    assert not [end for end in ends if end in host_ipv6], host_ipv6
    assert robin_ob in {a["address"] for a in host.leases(OB)}
    assert host.network_view(OB)["containers"] == ["owl", "robin"]
    # now directly on otherbridge: owl sees robin's address there; and they know each other's names
    assert host.remote_addr("robin", f"http://{OWL_IP}/cgi-bin/ip") == robin_ob
    assert host.hosts("robin")["owl"] == OWL_IP
    assert host.hosts("owl")["robin"] == robin_ob
    assert host.ping("robin", "owl")
    assert host.ping("owl", "robin")

    host.wd("--quiet", "network", "disconnect", OB, "robin")
    assert host.links("robin") == ["lo", "eth0"]
    assert [a["address"] for a in host.leases(OB)] == [OWL_IP]
    assert host.network_view(OB)["containers"] == ["owl"]
    assert "owl" not in host.hosts("robin")
    assert "robin" not in host.hosts("owl")
    assert not host.ping("owl", robin_ob, wait=1)
    assert host.remote_addr("robin", f"http://{OWL_IP}/cgi-bin/ip") == robin_tb  # routed again

    # the file robin shared with nobody on testbridge + otherbridge is left; gc removes it, not the two in use
    def shared_files() -> list[str]:
        return sandbox.sh("ls", "/run/wrapdock-data/hosts").stdout.split()

    assert len(shared_files()) == 3
    host.wd("--quiet", "gc")
    assert len(shared_files()) == 2
    assert host.hosts("robin")["robin"] == robin_tb and host.hosts("owl")["owl"] == OWL_IP  # the ones in use

    host.teardown(start, ["robin", "owl"], [TB, OB])


def test_names_in_etc_hosts_and_resolv_conf(sandbox):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    # one after the other: each test of /etc/hosts must not depend on which run finished first
    host.run("--name", "beta", "--net", TB, *SLEEP)
    beta = host.address("beta", TB)
    host.run("--name", "alpha", "--net", TB, "--add-host", "db:10.9.9.9", "--add-host", f"store:{beta}",
             "--dns", "192.0.2.53", *SLEEP)
    alpha = host.address("alpha", TB)

    alpha_hosts, beta_hosts = host.hosts("alpha"), host.hosts("beta")
    assert alpha_hosts["alpha"] == alpha and alpha_hosts["beta"] == beta
    assert alpha_hosts["db"] == "10.9.9.9" and alpha_hosts["store"] == beta
    assert beta_hosts["beta"] == beta and beta_hosts["alpha"] == alpha
    assert "db" not in beta_hosts
    assert host.ping("alpha", "beta")
    assert host.ping("alpha", "store")  # --add-host resolves (to a container of the sandbox)
    assert host.ping("beta", "alpha")
    resolv = host.file("alpha", "/etc/resolv.conf")
    assert [line for line in resolv.splitlines() if line.startswith("nameserver")] == ["nameserver 192.0.2.53"]
    assert "192.0.2.53" not in host.file("beta", "/etc/resolv.conf")

    # a third container joins: everyone knows it; it knows everyone
    host.run("--name", "gamma", "--net", TB, *SLEEP)
    gamma = host.address("gamma", TB)
    assert host.hosts("alpha")["gamma"] == gamma
    assert host.hosts("beta")["gamma"] == gamma
    gamma_hosts = host.hosts("gamma")
    assert (gamma_hosts["gamma"], gamma_hosts["alpha"], gamma_hosts["beta"]) == (gamma, alpha, beta)
    assert host.ping("alpha", "gamma")

    # it leaves: its name is gone everywhere (the address is free again, the name resolves no more)
    host.wd("--quiet", "rm", "-f", "gamma")
    assert "gamma" not in host.hosts("alpha")
    assert "gamma" not in host.hosts("beta")
    assert "bad address" in host.inside("alpha", "ping", "-c1", "-W1", "gamma").stderr.lower()
    assert host.hosts("alpha")["db"] == "10.9.9.9"  # --add-host survives the rewrites

    # two containers with one host name (-h web): each finds itself by it, the others find one of them
    host.run("--name", "delta", "-h", "web", "--net", TB, *SLEEP)
    host.run("--name", "epsilon", "-h", "web", "--net", TB, *SLEEP)
    delta, epsilon = host.address("delta", TB), host.address("epsilon", TB)
    assert host.hosts("delta")["web"] == delta and host.hosts("epsilon")["web"] == epsilon
    assert host.hosts("delta")["epsilon"] == epsilon and host.hosts("alpha")["web"] in (delta, epsilon)
    echo = host.inside("epsilon", "ping", "-c1", "-W1", "web")
    assert echo.returncode == 0 and f"({epsilon})" in echo.stdout, echo.stdout + echo.stderr

    host.teardown(start, ["alpha", "beta", "delta", "epsilon"], [TB])


def test_a_network_shares_one_hosts_file_a_h_container_has_its_own(sandbox):
    """beta and gamma (one network, no --add-host) see one /etc/hosts inode; kid (-h beta) has its own,
    itself first, while beta's name still finds beta; the group's file goes with its last container."""
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    for args in (("--name", "beta"), ("--name", "gamma"), ("--name", "kid", "-h", "beta")):
        host.run(*args, "--net", TB, *SLEEP)

    def inode(name: str) -> str:
        proc = host.inside(name, "stat", "-c", "%i", "/etc/hosts")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert inode("beta") == inode("gamma") != inode("kid")
    shared = sandbox.sh("ls", "/run/wrapdock-data/hosts").stdout.split()
    assert len(shared) == 1, shared
    assert host.hosts("beta")["beta"] == host.hosts("gamma")["beta"] == host.address("beta", TB)
    assert host.hosts("kid")["beta"] == host.address("kid", TB)
    assert host.hosts("gamma")["kid"] == host.address("kid", TB)  # rewritten when kid came: one file
    host.wd("--quiet", "rm", "-f", "beta", "gamma")
    assert sandbox.sh("ls", "/run/wrapdock-data/hosts").stdout.split() == []
    assert "gamma" not in host.hosts("kid")
    host.teardown(start, ["kid"], [TB])


def test_run_and_rm_edit_the_files_which_stay_what_the_records_make(sandbox):
    """A live run or rm adds or takes out its container's lines in the files its network's index names
    (wrapdock/containerhosts.py), reading no other container's record. From a state without the
    indexes (an earlier wrapdock: planned from the records, which write them), through runs and rms of
    every kind (-h, --add-host, two networks, connect, disconnect), every file stays what the records
    make (doctor's hosts-file check); a file that went wrong is found by doctor and written by gc."""
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    host.network(OB, "162.17.0.1/24")
    host.run("--name", "m1", "--net", TB, *SLEEP)
    host.run("--name", "m2", "--net", TB, *SLEEP)
    sandbox.sh("rm", "-r", "/run/wrapdock/container-names", "/run/wrapdock/hosts")  # as an earlier wrapdock left it
    host.run("--name", "m3", "--net", TB, *SLEEP)
    assert sorted(sandbox.sh("ls", "/run/wrapdock/container-names").stdout.split()) == ["m1", "m2", "m3"]
    assert sandbox.sh("ls", "/run/wrapdock/hosts").stdout.split() == [f"{TB}.json"]
    host.run("--name", "kid", "-h", "m1", "--net", TB, *SLEEP)
    host.run("--name", "ext", "--add-host", "far:203.0.113.9", "--net", TB, *SLEEP)
    host.run("--name", "z9", "--net", OB, *SLEEP)
    host.wd("--quiet", "network", "connect", OB, "m2")
    host.run("--name", "a0", "--net", TB, *SLEEP)  # sorts first: listed before everyone
    host.wd("--quiet", "rm", "-f", "m3", "ext")
    host.wd("--quiet", "network", "disconnect", OB, "m2")
    host.run("--name", "zz", "--net", OB, *SLEEP)
    host.wd("--quiet", "rm", "-f", "m1")
    assert host.wd("doctor").stdout == "no problems found\n"
    kid = host.hosts("kid")
    assert kid["m1"] == host.address("kid", TB) and kid["a0"] == host.address("a0", TB)  # -h m1: itself
    assert "m3" not in kid and "ext" not in kid and "zz" not in kid
    assert host.hosts("zz") == {"localhost": "127.0.0.1", "ip6-localhost": "::1", "ip6-loopback": "::1",
                                "z9": host.address("z9", OB), "zz": host.address("zz", OB)}
    assert '"name": "kid"' in host.wd("inspect", "kid").stdout  # found by name through the index

    a0_hosts = f"{host.view('a0')['paths']['dir']}/etc/hosts"  # a link to its group's file
    inode = sandbox.sh("stat", "-c", "%i", a0_hosts).stdout.strip()
    tampered = sandbox.sh("find", "/run/wrapdock-data/hosts", "-inum", inode).stdout.strip()
    sandbox.sh("sh", "-c", 'grep -v "a0$" "$1" > /tmp/hosts && cat /tmp/hosts > "$1"', "-", tampered)  # in place
    assert "a0" not in host.hosts("m2")
    found = host.sandbox.wrapdock("doctor", check=False)
    assert found.returncode == 1 and "does not list what the records do: " + tampered in found.stdout, found.stdout
    sandbox.sh("rm", "/run/wrapdock/container-names/zz", "/run/wrapdock/hosts/" + OB + ".json")  # indexes gone wrong
    found = host.sandbox.wrapdock("doctor", check=False).stdout
    assert "container zz has no link" in found, found  # (a network without its index is planned from the records)
    host.wd("--quiet", "gc")
    assert host.wd("doctor").stdout == "no problems found\n"
    assert sandbox.sh("readlink", "/run/wrapdock/container-names/zz").stdout.strip() == host.view("zz")["id"]
    assert sandbox.sh("test", "-f", f"/run/wrapdock/hosts/{OB}.json", check=False).returncode == 0
    assert "a0" in host.hosts("m2")  # the tampered file, written again by gc
    host.teardown(start, ["kid", "m2", "z9", "a0", "zz"], [TB, OB])


def test_network_rm_force_with_containers_attached_leaves_nothing(sandbox, tmp_path):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    host.network(OB, "162.17.0.1/24")
    host.run_all(("--name", "robin", "--net", TB, *SLEEP),
                 ("--name", "owl", "--net", OB, "--ip", OWL_IP, "-p", "8080:80", *httpd(web_root(tmp_path, "owl"))))
    host.wd("--quiet", "network", "connect", OB, "robin")
    host.wait_http(f"http://{OWL_IP}/", "owl")
    assert host.fetch("robin", f"http://{OWL_IP}/") == "owl"
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") == "owl"

    host.wd("--quiet", "network", "rm", "-f", OB)
    assert OB not in host.wd("network", "ls", "-q").stdout.split()
    assert sandbox.state_records("ipam") == [f"{TB}.json"]
    # the containers live on without an interface there; owl's published port went with it
    assert host.links("robin") == ["lo", "eth0"]
    assert host.links("owl") == ["lo"]
    assert [e["network"] for e in host.view("robin")["endpoints"]] == [TB]
    assert host.view("owl")["endpoints"] == []
    assert host.view("owl")["published"] == []
    assert "owl" not in host.hosts("robin")
    assert host.ping("robin", TB_GW)
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") is None
    assert host.pings(("robin", OWL_IP), ("owl", TB_GW), wait=1) == [False, False]

    host.teardown(start, ["robin", "owl"], [TB])


def test_rm_deletes_the_veth_even_while_a_host_process_holds_the_namespace(sandbox):
    """rm deletes the netns first and lets it take the veth along; a process the host started in the
    namespace (ip netns exec) keeps it alive, and rm then deletes the veth itself after its wait."""
    from tests.integration.containerlab import wait_for

    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    host.run("--name", "robin", "--net", TB, *SLEEP)

    def veths() -> list[str]:
        return [line.split(":")[1].strip().split("@")[0] for line in sandbox.sh("ip", "-o", "link").stdout.splitlines()
                if line.split(":")[1].strip().startswith("wd")]

    assert len(veths()) == 1
    holder = sandbox.bash("ip netns exec robin sleep 60 >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        wait_for(lambda: holder in sandbox.sh("ip", "netns", "pids", "robin", check=False).stdout.split(),
                 what="the holder in robin's namespace")
        host.wd("--quiet", "rm", "-f", "robin")
        assert veths() == []
    finally:
        sandbox.sh("kill", holder, check=False)
    host.teardown(start, [], [TB])


def test_disconnect_from_the_default_route_network_keeps_the_way_out(sandbox):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    host.network(OB, "162.17.0.1/24")
    host.run("--name", "robin", "--net", TB, *SLEEP)
    host.wd("--quiet", "network", "connect", OB, "robin")
    assert host.ping("robin", OUTSIDE_IP)  # out through testbridge

    host.wd("--quiet", "network", "disconnect", TB, "robin")
    assert host.links("robin") == ["lo", "eth1"]
    assert host.ping("robin", OB_GW)
    out_after_disconnect = host.ping("robin", OUTSIDE_IP)
    host.wd("--quiet", "network", "connect", TB, "robin")
    out_after_reconnect = host.ping("robin", OUTSIDE_IP)

    host.teardown(start, ["robin"], [TB, OB])
    if not (out_after_disconnect and out_after_reconnect):
        raise WrapdockBug(f"robin, on {OB} (and later {TB} again), reaches {OUTSIDE_IP}: after the disconnect "
                          f"{out_after_disconnect}, after connecting {TB} again {out_after_reconnect}")


def test_host_and_none_networking_and_the_views(sandbox, tmp_path):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    host.run_all(("--name", "hostc", "--net", "host", *SLEEP),
                 ("--name", "nonec", "--net", "none", *SLEEP),
                 ("--name", "plainc", *SLEEP),
                 ("--name", "webc", "--net", TB, "-p", "8080:80", *httpd(web_root(tmp_path, "webc"))))
    webc = host.address("webc", TB)
    host.wait_http(f"http://{webc}/", "webc")

    # --net host: the sandbox host's interfaces, and its way out
    assert {"lo", "uplink", TB} <= set(host.links("hostc"))
    assert host.ping("hostc", OUTSIDE_IP)
    # --net none and no --net: only lo (which is up), no way anywhere
    for name in ("nonec", "plainc"):
        assert host.links(name) == ["lo"]
        assert host.ping(name, "127.0.0.1")
    assert host.pings(("nonec", OUTSIDE_IP), ("plainc", UPLINK_IP), ("nonec", webc), wait=1) == [False] * 3
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8080/") == "webc"

    # the views
    table = host.wd("ps").stdout.splitlines()
    header = table[0].split()
    assert header[-2:] == ["ADDRESSES", "PORTS"], table[0]
    rows = {line.split()[1]: line for line in table[1:]}
    assert set(rows) == {"hostc", "nonec", "plainc", "webc"}
    assert rows["webc"].split()[-2:] == [webc, "0.0.0.0:8080->80/tcp"], rows["webc"]
    assert webc not in rows["hostc"] and "->" not in rows["hostc"]
    view = host.inspect("webc")
    assert view["addresses"] == [f"{webc} ({TB}, eth0)"]
    assert view["published"] == ["0.0.0.0:8080->80/tcp"]
    hostc = host.inspect("hostc")
    assert hostc["addresses"] == [] and hostc["published"] == []
    network = host.network_view(TB)
    assert network["containers"] == ["webc"]
    assert [a["address"] for a in network["allocations"]] == [webc]

    host.teardown(start, ["hostc", "nonec", "plainc", "webc"], [TB])


def test_print_only_run_prints_the_network_steps_and_changes_nothing(sandbox, tmp_path):
    host, start = begin(sandbox)
    host.network(TB, "162.16.0.1/24")
    before = sandbox.snapshot()

    script = host.wd("--print-only", "run", "-d", "--name", "p1", "--net", TB, "-p", "8090:80",
                     "busybox", "httpd", "-f", "-p", "80").stdout
    for heredoc in ("ip -batch -", "nsenter --net=/run/netns/p1 ip -batch -", "iptables-restore -w --noflush"):
        assert re.search(rf"^{re.escape(heredoc)} <<'?(\w+)'?$", script, re.MULTILINE), (heredoc, script)
    assert "addr add 162.16.0.2/24 dev eth0" in script
    assert "route add default via 162.16.0.1" in script
    assert re.search(r"^-A WRAPDOCK-DNAT -p tcp --dport 8090 .*--to-destination 162\.16\.0\.2:80$", script,
                     re.MULTILINE), script

    # nothing changed: no record, no netns, no links, no rules, no lease, no cgroup, no port
    assert sandbox.snapshot() == before
    assert sandbox.state_records("containers") == []
    assert sandbox.sh("ls", "-A", "/run/wrapdock-data/containers", check=False).stdout == ""
    assert host.leases(TB) == []
    assert sandbox.cgroup_dirs() == []
    assert host.fetch(OUTSIDE_NS, f"http://{UPLINK_IP}:8090/") is None

    # the lease was not taken: the real run gets the address the script showed, and answers there
    host.run("--name", "p1", "--net", TB, "-p", "8090:80", *httpd(web_root(tmp_path, "p1")))
    assert host.address("p1", TB) == "162.16.0.2"
    host.wait_http(f"http://{UPLINK_IP}:8090/", "p1", where=OUTSIDE_NS)

    host.teardown(start, ["p1"], [TB])
