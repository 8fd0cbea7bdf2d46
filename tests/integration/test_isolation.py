"""What a container cannot see or change, probed from inside: as its workload and through `wrapdock exec`
(both hold Docker's default capabilities), and what `--privileged` widens.

Asserted for a default container:
- it sees only its own processes (PID 1 is its workload) and only its own mounts;
- /proc/sys and /sys are read-only; no link, address or route can be added or changed, no mount made;
  the missing CAP_NET_ADMIN (busybox has no iptables) shows in CapEff (bit 12 cleared) and in every
  netlink refusal;
- another container's files are nowhere in its tree;
- none of the refused attempts changed the sandbox host or the container's own network.
With --privileged: mount, link, address and route changes work (inside its own namespaces: the host is
untouched), CapEff holds every capability; the namespaces stay as they were (its own processes and
mounts only) and wrapdock still mounts /proc/sys read-only - a privileged container holds
CAP_SYS_ADMIN and could remount it, which is what --privileged means; the test shows it.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.containerlab import DOCKER_DEFAULT_CAPS, mount_points
from tests.integration.reliability import assert_no_leftovers, ok, picture, prepare

pytestmark = pytest.mark.integration

NET, SUBNET, GATEWAY = "inet", "10.98.0.0/24", "10.98.0.1"
MARKER = "MARKER-5f1e2d"
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21

# Each probe prints one line: "@@ NAME EXIT OUTPUT" (output on one line)
PROBES = r"""
p() { name=$1; shift; out=$("$@" 2>&1); rc=$?; echo "@@ $name $rc $(echo "$out" | tr '\n' ' ')"; }
mkdir -p /mnt
p proc_sys sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
p proc_sys_kernel sh -c 'echo pwned > /proc/sys/kernel/hostname'
p sys sh -c 'echo 1400 > /sys/class/net/lo/mtu'
p link_add ip link add wdv0 type veth peer name wdv1
p link_down ip link set lo down
p addr_add ip addr add 10.98.0.250/24 dev eth0
p route_add ip route add 10.99.0.0/24 via GATEWAY
p route_del ip route del default
p mount mount -t tmpfs probe /mnt
p remount_proc_sys mount -o remount,rw /proc/sys
p hostname hostname pwned
p find_marker find / -xdev -name MARKER
p cap grep CapEff /proc/self/status
echo "@@@ ps"; ps -o pid,args
echo "@@@ mountinfo"; cat /proc/self/mountinfo
echo "@@@ links"; ip -o link
echo "@@@ routes"; ip route
""".replace("GATEWAY", GATEWAY).replace("MARKER", MARKER)


def probe(text: str) -> tuple[dict[str, tuple[int, str]], dict[str, str]]:
    """(probe name -> (exit code, output), section -> text) from the probes' output."""
    results, sections, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith("@@@ "):
            current = line[4:]
            sections[current] = ""
        elif line.startswith("@@ "):
            name, code, *rest = line[3:].split(" ", 2)
            results[name] = (int(code), rest[0].strip() if rest else "")
        elif current:
            sections[current] += line + "\n"
    return results, sections


def cap_eff(results) -> int:
    return int(results["cap"][1].split()[-1], 16)


def processes_in(ps_text: str) -> list[str]:
    return [line.split(None, 1)[1] for line in ps_text.splitlines()[1:] if line.strip()]


def assert_default_isolation(results, sections, workload: str) -> None:
    refused = ("proc_sys", "proc_sys_kernel", "sys", "link_add", "link_down", "addr_add", "route_add", "route_del",
               "mount", "remount_proc_sys", "hostname")
    for name in refused:
        assert results[name][0] != 0, f"{name} was allowed: {results[name]}"
    for name in ("proc_sys", "proc_sys_kernel", "sys"):
        assert "Read-only file system" in results[name][1], results[name]
    for name in ("link_add", "link_down", "addr_add", "route_add", "route_del", "mount", "remount_proc_sys",
                 "hostname"):
        # EPERM, as each tool words it (busybox mount: "permission denied (are you root?)")
        assert re.search("not permitted|permission denied", results[name][1]), results[name]
    caps = cap_eff(results)
    assert caps == int(DOCKER_DEFAULT_CAPS, 16)
    assert not caps & (1 << CAP_NET_ADMIN) and not caps & (1 << CAP_SYS_ADMIN)
    # only its own processes: its workload as PID 1, then the probe's own shell and ps
    listed = processes_in(sections["ps"])
    assert listed[0].startswith(workload), sections["ps"]
    assert all(line.startswith(("sh -c", "{ps} sh -c", "ps -o")) for line in listed[1:]), sections["ps"]
    assert len(listed) <= 4, sections["ps"]
    for host_process in ("sleep infinity", "wrapdock", "nsenter", "python", "unshare", "wrapdock-shim"):
        assert host_process not in sections["ps"], sections["ps"]
    assert_own_mounts(sections["mountinfo"])
    # its network is as it was: lo and eth0, the default route via the gateway
    assert re.findall(r"^\d+: ([^:@]+)", sections["links"], re.M) == ["lo", "eth0"], sections["links"]
    assert sections["routes"].startswith(f"default via {GATEWAY} dev eth0"), sections["routes"]
    assert "10.99.0.0" not in sections["routes"] and "wdv0" not in sections["links"]


def assert_own_mounts(mountinfo: str) -> None:
    points = mount_points(mountinfo)
    # /dev/.wrapdock: a container whose /etc/hosts is shared (not one with a host name of its own, -h)
    assert set(points) - {"/dev/.wrapdock"} == {"/", "/dev", "/dev/pts", "/dev/shm", "/proc", "/proc/sys", "/sys",
                                                "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}, sorted(points)
    assert points["/"][0] == "overlay"
    # the /etc files are the container's own files (in its directory on the host), nothing else of the host;
    # /etc/hosts comes through its etc directory (a link to the file its group of containers shares)
    for name, where in (("hosts", "etc/hosts"), ("resolv.conf", "resolv.conf"), ("hostname", "hostname")):
        assert re.fullmatch(rf".*/containers/[0-9a-f]{{64}}/{re.escape(where)}", points[f"/etc/{name}"][2]), mountinfo
    shared = "/dev/.wrapdock" in points
    assert not shared or re.fullmatch(r".*/containers/[0-9a-f]{64}/etc", points["/dev/.wrapdock"][2]), mountinfo
    ro = {line.split()[4]: line.split()[5] for line in mountinfo.splitlines()}
    assert ro["/proc/sys"].startswith("ro") and ro["/sys"].startswith("ro"), mountinfo
    # shared with the containers on the same networks: no container can change its neighbours' names
    assert not shared or (ro["/etc/hosts"].startswith("ro") and ro["/dev/.wrapdock"].startswith("ro")), mountinfo


def test_a_default_container_sees_and_changes_only_itself(sandbox):
    box = sandbox
    start = box.snapshot()
    prepare(box, (NET, SUBNET))
    ok(box, "--quiet", "run", "-d", "--name", "a", "--net", NET, "busybox", "sh", "-c",
       f"echo secret > /{MARKER}; exec sleep 600")
    ok(box, "--quiet", "run", "-d", "--name", "b", "--net", NET, "busybox", "sleep", "600")
    # a and b share one /etc/hosts file, read-only inside: a cannot point b's names elsewhere
    refused = box.wrapdock("--quiet", "exec", "a", "sh", "-c", "echo '203.0.113.9 a' >> /etc/hosts", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    before = picture(box)

    # the marker is in a's tree (the probe can find it) ...
    found = ok(box, "--quiet", "exec", "a", "find", "/", "-xdev", "-name", MARKER).stdout
    assert found == f"/{MARKER}\n"
    # ... and nowhere in b's, probed through exec; the same probes as a workload of its own
    results, sections = probe(ok(box, "--quiet", "exec", "b", "sh", "-c", PROBES).stdout)
    assert results["find_marker"] == (0, ""), results["find_marker"]
    assert_default_isolation(results, sections, "sleep 600")
    workload = ok(box, "--quiet", "run", "--rm", "--net", NET, "busybox", "sh", "-c", PROBES).stdout
    results, sections = probe(workload)
    assert results["find_marker"] == (0, "")
    assert_default_isolation(results, sections, "sh -c  p() {")
    assert picture(box) == before, "a refused attempt changed the host"

    ok(box, "--quiet", "rm", "-f", "a", "b")
    ok(box, "--quiet", "network", "rm", NET)
    assert_no_leftovers(box, start)


def test_privileged_widens_capabilities_not_namespaces(sandbox):
    box = sandbox
    start = box.snapshot()
    prepare(box, (NET, SUBNET))
    ok(box, "--quiet", "run", "-d", "--name", "priv", "--privileged", "--net", NET, "busybox", "sleep", "600")
    before = picture(box)
    hostname = box.sh("hostname").stdout

    results, sections = probe(ok(box, "--quiet", "exec", "priv", "sh", "-c", PROBES).stdout)
    for name in ("link_add", "link_down", "addr_add", "route_add", "route_del", "mount", "hostname"):
        assert results[name][0] == 0, f"{name} refused in a privileged container: {results[name]}"
    assert "wdv0" in sections["links"] and "10.99.0.0/24" in sections["routes"]
    caps = cap_eff(results)
    assert caps & (1 << CAP_NET_ADMIN) and caps & (1 << CAP_SYS_ADMIN)
    assert caps & int(DOCKER_DEFAULT_CAPS, 16) == int(DOCKER_DEFAULT_CAPS, 16)
    # /proc/sys and /sys are mounted read-only as for any container: a write is refused ...
    for name in ("proc_sys", "proc_sys_kernel", "sys"):
        assert results[name][0] != 0 and "Read-only file system" in results[name][1], results[name]
    # ... but CAP_SYS_ADMIN may remount them: that is what --privileged grants (the probe did, after the
    # writes); it changes only the container's own network namespace's settings
    assert results["remount_proc_sys"][0] == 0, results["remount_proc_sys"]
    # the namespaces are the same as a default container's: its own processes and mounts only
    listed = processes_in(sections["ps"])
    assert listed[0] == "sleep 600", sections["ps"]
    assert not any(word in sections["ps"] for word in ("sleep infinity", "wrapdock", "nsenter", "python"))
    assert "/mnt" in mount_points(sections["mountinfo"])  # its own mount, in its own namespace
    # every change stayed inside the container: the sandbox host is exactly as before, its name too
    assert picture(box) == before, "a privileged container changed the host"
    assert box.sh("hostname").stdout == hostname
    assert ok(box, "--quiet", "exec", "priv", "hostname").stdout == "pwned\n"  # (its own UTS namespace)

    ok(box, "--quiet", "rm", "-f", "priv")
    ok(box, "--quiet", "network", "rm", NET)
    assert_no_leftovers(box, start)
