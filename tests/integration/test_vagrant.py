"""Vagrant labs that really boot: the Vagrantfile with the local box, one VM and two, in a VM host.

Each test brings the repository's own Vagrantfile up with `WRAPDOCK_BOX` (the box scripts/vagrant-box
builds and caches, wrapdock's virtualenv inside) under libvirt in a throwaway VM host (tests/vm.py:
libvirtd, its networks, dnsmasq, iptables rules and QEMU only in its own namespaces), checks what
provisioning printed (the seed lab's check matrix; with two VMs the private network, a static vxlan
overlay and a cluster one, etcd on lab1, between containers on the two VMs by address and by name),
runs real wrapdock commands in the VMs with one `vagrant ssh -c` each (every Vagrant command costs
seconds), destroys them, and checks that nothing is left: no domain, volume, network or QEMU process
(nor the etcd that ran in a VM) in the VM host, and nothing of libvirt's on the machine.
Software emulation on a busy machine is slow: every wait is a command with a generous deadline, never
a timing assertion. They run by default and skip, with the reason, where VMs cannot boot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.vm import VmHost, build_box, cannot_boot_vms, mirror_unreachable
from wrapdock import lab

pytestmark = [pytest.mark.integration, pytest.mark.vm]

UP_TIMEOUT = 2400        # seconds: boot, rsync, setup from the wheelhouse, the seed lab (minutes under TCG)
COMMAND_TIMEOUT = 600
WRAPDOCK = "sudo /vagrant/.venv/bin/wrapdock"
SEED_CHECKS = [check["name"] for check in lab.load("seed")["checks"]]


@pytest.fixture(scope="module")
def vagrant_home() -> Iterator[Path]:
    """A VAGRANT_HOME holding the local box (built once per recipe, then taken from the cache)."""
    reason = cannot_boot_vms()
    if reason:
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="wdvm-home-", dir="/var/tmp"))
    try:
        built = build_box(home)
        if built.returncode != 0:
            unreachable = mirror_unreachable()
            if unreachable:
                pytest.skip(f"the box is not cached and cannot be built: {unreachable}")
        assert built.returncode == 0, f"scripts/vagrant-box failed:\n{built.stdout}\n{built.stderr}"
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def vm_host(vagrant_home: Path) -> Iterator[VmHost]:
    before = machine_state()
    host = VmHost(vagrant_home)
    try:
        yield host
    finally:
        host.close()
    assert not host.top.exists()
    assert machine_state() == before
    ours = subprocess.run(["pgrep", "-af", str(host.top)], capture_output=True, text=True, check=False).stdout
    assert ours == ""


def machine_state() -> dict:
    """What libvirt would change on the machine if it ran there: links, iptables chains, /run/libvirt,
    machine cgroups, its files under /etc and /var/lib (names and modification times)."""
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    cgroups = Path("/sys/fs/cgroup")

    def files(top: str) -> list[tuple[str, int]]:
        return sorted((str(p), p.lstat().st_mtime_ns) for p in Path(top).rglob("*"))

    return {"links": re.findall(r"^((?:virbr|vnet)\S*)", links, re.MULTILINE),
            "libvirt chains": re.findall(r"^:(LIBVIRT\S*)", rules, re.MULTILINE),
            "/run/libvirt": Path("/run/libvirt").exists(),
            "cgroups": sorted(str(p) for p in [*cgroups.glob("machine*"), *cgroups.glob("*/machine*")]),
            "/etc/libvirt": files("/etc/libvirt"), "/var/lib/libvirt": files("/var/lib/libvirt")}


def failure(host: VmHost, done: subprocess.CompletedProcess) -> str:
    return (f"exit {done.returncode}\n--- stdout\n{done.stdout[-8000:]}\n--- stderr\n{done.stderr[-4000:]}"
            f"\n--- libvirtd.log\n{host.log('libvirtd.log')}")


def provision_lines(output: str, machine: str) -> list[str]:
    """What a machine's provisioner printed (Vagrant prefixes each line with `    NAME: `)."""
    prefix = f"    {machine}: "
    return [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix)]


def assert_seed_lab_passed(output: str, machine: str) -> None:
    lines = provision_lines(output, machine)
    assert f"{len(SEED_CHECKS)}/{len(SEED_CHECKS)} checks as expected" in lines, "\n".join(lines[-60:])
    # the matrix: one row per check of the seed lab
    for name in SEED_CHECKS:
        assert any(name in line for line in lines), f"{name!r} not in {machine}'s check matrix"


@contextmanager
def up_and_destroy(host: VmHost, hosts: int, seed_lab: bool = True) -> Iterator[subprocess.CompletedProcess]:
    """`vagrant up` (asserted to succeed), then always `vagrant destroy -f` and nothing left in the host."""
    before = host.leftovers()   # libvirt's own inactive network "default" is there from the start
    up = host.vagrant("up", "--provider", "libvirt", hosts=hosts, timeout=UP_TIMEOUT,
                      WRAPDOCK_SEED_LAB="1" if seed_lab else "0")
    try:
        assert up.returncode == 0, failure(host, up)
        yield up
    finally:
        destroy = host.vagrant("destroy", "-f", hosts=hosts, timeout=COMMAND_TIMEOUT)
    assert destroy.returncode == 0, failure(host, destroy)
    assert host.leftovers() == before


def ssh(host: VmHost, machine: str, command: str, hosts: int) -> subprocess.CompletedProcess:
    done = host.vagrant("ssh", machine, "-c", command, hosts=hosts, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, failure(host, done)
    return done


def test_one_vm_lab_boots_runs_the_seed_lab_and_a_wrapdock_command(vm_host: VmHost) -> None:
    with up_and_destroy(vm_host, hosts=1) as up:
        assert "Running provisioner: wrapdock lab" in up.stdout
        assert_seed_lab_passed(up.stdout, "lab1")
        # no pip in the VM: the box brought the virtualenv
        assert "setup: creating .venv" not in up.stdout
        # a real wrapdock command in the VM: a network made, listed, its bridge on the VM, removed; the VM
        # is software-emulated with the fast CPU model
        done = ssh(vm_host, "lab1", f"{WRAPDOCK} --quiet network create --driver bridge --subnet 162.30.0.1/24 "
                                    f"vmnet && {WRAPDOCK} network ls && ip -br addr show vmnet && "
                                    f"{WRAPDOCK} --quiet network rm vmnet && grep -m1 'model name' /proc/cpuinfo "
                                    "&& hostname", hosts=1)
        assert re.search(r"^vmnet\s+bridge\s", done.stdout, re.MULTILINE), done.stdout
        assert "162.30.0.1/24" in done.stdout
        assert "QEMU Virtual CPU" in done.stdout
        assert done.stdout.strip().endswith("wrapdock-lab")


def test_two_vm_lab_runs_a_static_and_a_cluster_vxlan_overlay_across_the_vms(vm_host: VmHost) -> None:
    # the overlay lab only: the seed lab in each VM (WRAPDOCK_SEED_LAB=1, the default) would add ~2 min
    # under emulation and prove nothing the one-VM test does not
    with up_and_destroy(vm_host, hosts=2, seed_lab=False) as up:
        second = provision_lines(up.stdout, "lab2")
        assert "wrapdock: wrapdock-lab2 (192.168.56.12) reaches lab1 at 192.168.56.11" in second, "\n".join(second)
        # real packets between containers on the two VMs, VXLAN over the private network: lab2's container
        # pinged lab1's while provisioning
        assert "wrapdock: container lab2 (10.210.12.2) reaches lab1's container at 10.210.11.2 over the vxlan " \
               "overlay" in second, "\n".join(second)
        assert "$ wrapdock lab up seed" not in up.stdout
        # the cluster overlay: etcd on lab1's private address; lab2 joined the network lab1 created in it,
        # its container reached lab1's by address and, after lab2's sync, by name
        first = provision_lines(up.stdout, "lab1")
        assert any(re.fullmatch(r"wrapdock: etcd 3\.\S+ serves etcd://192\.168\.56\.11:2379 on wrapdock-lab1", line)
                   for line in first), "\n".join(first)
        assert "wrapdock: container lab2-cluster (10.211.12.2) reaches lab1-cluster at 10.211.11.2 over the cluster " \
               "overlay, by address and by name" in second, "\n".join(second)
        # and the other way, with wrapdock in lab1: its view of the overlays, its static container pinging
        # lab2's; then lab1 syncs the cluster network (lab2 joined and named its container after lab1's
        # last look at etcd) and its cluster container pings lab2's by name, then by address
        done = ssh(vm_host, "lab1", f"{WRAPDOCK} network ls && ip -4 -br addr show eth1 && "
                                    "sudo bridge fdb show dev wdvx42 | grep '^00:00:00:00:00:00' && "
                                    f"{WRAPDOCK} exec lab1 ping -c 3 -W 5 10.210.12.2 && "
                                    f"{WRAPDOCK} network sync cluster && "
                                    "sudo bridge fdb show dev wdvx43 | grep '^00:00:00:00:00:00' && "
                                    f"{WRAPDOCK} exec lab1-cluster ping -c 3 -W 5 lab2-cluster && "
                                    f"{WRAPDOCK} exec lab1-cluster ping -c 3 -W 5 10.211.12.2 && "
                                    "etcdctl --endpoints=http://192.168.56.11:2379 get --prefix --keys-only "
                                    "/wrapdock/v1/networks/cluster/ && hostname", hosts=2)
        assert re.search(r"^overlay\s+vxlan\s", done.stdout, re.MULTILINE), done.stdout
        assert re.search(r"^cluster\s+vxlan\s", done.stdout, re.MULTILINE), done.stdout
        assert re.search(r"^eth1\s+UP\s+192\.168\.56\.11/24", done.stdout, re.MULTILINE), done.stdout
        assert "dst 192.168.56.12 " in done.stdout   # lab2 is lab1's static peer, and its cluster peer after the sync
        assert len(re.findall(r"^00:00:00:00:00:00 dst 192\.168\.56\.12 ", done.stdout, re.MULTILINE)) == 2, done.stdout
        assert "PING lab2-cluster (10.211.12.2)" in done.stdout   # the name, resolved to lab2's container
        assert done.stdout.count(" 0% packet loss") == 3, done.stdout
        # both VMs registered in etcd
        assert "192.168.56.11" in done.stdout and "192.168.56.12" in done.stdout
        assert done.stdout.strip().endswith("wrapdock-lab1")
