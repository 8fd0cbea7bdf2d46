"""Which commands `wrapdock gc` runs to bring the host back in line with the state, or to clear leftovers.

Every builder reuses the steps of the operation that made the object (a network's create plan, a
container's remove plan, the rule deletion by owner comment), so gc runs nothing the normal
operations would not. Every step is an ensure (`skip_if`), a guarded delete (`only_if`) or an
iptables-restore of exactly what gc's read of the tables showed missing (or there): a gc that stops
half-way can simply be run again. Each builder makes the plan of one repair (one object): gc runs
each on its own, so one that fails stops none of the others.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from wrapdock import names
from wrapdock.cgroups import CgroupLayout
from wrapdock.model import Network
from wrapdock.plan import Plan, Step, cmd
from wrapdock.plans import container as container_plans
from wrapdock.plans import endpoint as endpoint_plans
from wrapdock.plans import iptables as ipt
from wrapdock.plans import network as network_plans
from wrapdock.plans.container import ContainerPaths, Runtime
from wrapdock.portspec import from_record as port_from_record

UNKNOWN_EXIT = "255"  # what Docker records when it cannot know how a container ended


def _link_gone_probe(name: str) -> tuple[str, ...]:
    return ("ip", "link", "show", "dev", name)


def delete_link(name: str, note: str) -> Step:
    return cmd("ip", "link", "del", "dev", name, note=note, only_if=_link_gone_probe(name))


def reattach(network: Network, veths: list[str]) -> Step:
    """Put veths back on their (re-created) bridge, as endpoint.attach did: master, hairpin, up."""
    lines: list[str] = []
    for veth in veths:
        lines += [f"link set dev {veth} master {network.bridge}",
                  f"link set dev {veth} type bridge_slave hairpin on", f"link set dev {veth} up"]
    return cmd("ip", "-batch", "-", stdin=lines,
               note=f"put the containers' veths back on {network.bridge}: " + ", ".join(veths))


def repair_network(network: Network, reasons: list[str], veths: list[str], tables: ipt.Tables | None) -> Plan:
    """Re-run the network's create plan: the bridge only if it is missing, the address with `replace`.

    Its iptables steps add only the chains and rules that `tables` (gc's read) lack, so the whole plan only
    adds what is missing.
    """
    why = f"gc: the state has network {network.name}, the host lost part of it ({', '.join(reasons)})"
    plan = Plan(f"repair network {network.name} ({', '.join(reasons)}): re-run its create plan, each step an "
                "ensure, to bring the host back in line with the state")
    steps = network_plans.create(network, tables).steps
    link_note = steps[0].note
    for step in steps:
        if step is steps[0]:  # the bridge (and its route_localnet), as ensures: only what is missing
            br = network.bridge
            mtu = f" mtu {network.mtu}" if network.mtu else ""
            localnet = () if network.internal else (shlex.join(network_plans.route_localnet(network).argv),)
            step = dataclasses.replace(step, argv=("sh", "-s"), partial=False, undo=None, stdin=(
                "set -e",
                f"[ -d /sys/class/net/{br}/bridge ] || ip link add name {br}{mtu} type bridge",
                f"ip link set dev {br} alias {names.network_comment(network.name)}",
                f"ip addr replace {network.gateway_cidr} dev {br}",
                f"ip link set dev {br} up", *localnet))
        if step.note == link_note:  # the trail says why the create plan runs again
            step = dataclasses.replace(step, note=f"{why}: re-run its create plan, each step an ensure: {link_note}")
        plan.add(step)
    if veths:
        plan.add(reattach(network, veths))
    return plan


def ensure_forwarding() -> Plan:
    note = "let the host route packets (IPv4 forwarding): wrapdock's networks need it"
    probe = ("grep", "-qx", "1", network_plans.IP_FORWARD)
    step = cmd("sysctl", "-w", "net.ipv4.ip_forward=1", note=note, skip_if=probe)
    return Plan("turn IPv4 forwarding back on", [step])


def record_exit(name: str, paths: ContainerPaths) -> Step:
    """The shim died with the process: write the exit code file it would have written (unknown: 255)."""
    exitfile = str(paths.exitfile)
    return cmd("sh", "-c", f'echo {UNKNOWN_EXIT} > "$1"', "wrapdock-exit", exitfile,
               note=f"record that {name} has exited (code unknown: {UNKNOWN_EXIT}, as Docker records it)",
               skip_if=("test", "-e", exitfile))


def _unpublish(record: dict[str, Any]) -> list[Step]:
    ports = [port_from_record(p) for p in record["ports"]]
    return endpoint_plans.unpublish(record["id"], record["name"], ports) if ports else []


def remove_abandoned(record: dict[str, Any], paths: ContainerPaths, layout: CgroupLayout | None,
                     running: bool) -> Plan:
    """A container whose `run` was killed half-way: everything `rm -f` removes, each step guarded."""
    from wrapdock.containers import config_of

    if layout is None:  # no cgroup hierarchy: nothing to remove there
        layout = CgroupLayout(1, Path("/sys/fs/cgroup"), "wrapdock", ())
    plan = container_plans.remove(config_of(record), paths, Runtime("", layout, (), record["netns"]),
                                  running, _unpublish(record), [e["host_ifname"] for e in record["endpoints"]])
    plan.title = (f"remove container {record['name']} ({record['id'][:12]}): its `wrapdock run` was killed "
                  "half-way (phase creating, owner process gone)")
    return plan


def cut_endpoints(record: dict[str, Any], veths: list[str], drop_ports: bool) -> list[Step]:
    """Steps for endpoints whose plumbing is gone: what is left of their veths, and their port rules."""
    steps = _unpublish(record) if drop_ports else []
    steps += [delete_link(v, f"what is left of {record['name']}'s veth {v}") for v in veths]
    return steps


def orphan_process(container_id: str, paths: ContainerPaths, directory: Path | None) -> Plan:
    """An unrecorded container's process, then its directory: the directory goes only once the process is gone."""
    plan = Plan(f"kill the process of unrecorded container {container_id[:12]}"
                + (" and remove its directory" if directory else ""))
    plan.add(container_plans.kill_and_wait(paths, f"kill the container process of {container_id[:12]}, "
                                                   "whose record is gone"))
    if directory is not None:
        plan.add(orphan_dir(directory).steps[0])
    return plan


def orphan_rules(comment: str) -> Plan:
    return Plan(f"delete the iptables rules tagged {comment}",
                [ipt.delete_by_comment(comment, f"iptables rules tagged {comment} (the owner has no record)")])


def orphan_veth(name: str) -> Plan:
    return Plan(f"delete veth {name}", [delete_link(name, "wrapdock veths that no container owns")])


def orphan_netns(name: str) -> Plan:
    return Plan(f"delete network namespace {name}", [cmd(
        "ip", "netns", "del", name, note="network namespaces that held a wrapdock veth, recorded by no container",
        only_if=("test", "-e", f"/run/netns/{name}"))])


def orphan_vxlan(name: str) -> Plan:
    return Plan(f"delete VXLAN device {name}", [delete_link(name, "VXLAN devices of networks that have no record")])


def orphan_bridge(name: str) -> Plan:
    return Plan(f"delete bridge {name}", [delete_link(name, "bridges of networks that have no record")])


def orphan_cgroup(directory: Path) -> Plan:
    """`rmdir` of a cgroup fails (busy) while a process is in it or still exiting: gc reports it and goes on."""
    return Plan(f"remove cgroup {directory}", [cmd("rmdir", str(directory), note="cgroups of containers that have "
                                                   "no record", only_if=("test", "-d", str(directory)))])


def orphan_dir(directory: Path) -> Plan:
    return Plan(f"remove directory {directory}", [cmd(
        "rm", "-rf", "--one-file-system", str(directory), note="container directories that no record owns",
        only_if=("test", "-d", str(directory)))])


def orphan_layer(path: Path) -> Plan:
    """A layer directory, a `.partial` one or a short link that no image record names."""
    return Plan(f"remove image layer {path}", [cmd(
        "rm", "-rf", "--one-file-system", str(path), note="image layers that no image names",
        only_if=("test", "-L", str(path), "-o", "-e", str(path)))])


def unmount(point: str) -> Plan:
    """A wrapdock-* mount left in the data directory (a killed commit); gc unmounts the deepest first."""
    return Plan(f"unmount {point}", [cmd("umount", point, note="mounts named wrapdock-* in the data directory",
                                         only_if=("mountpoint", "-q", point))])


def skeleton(remove: bool, tables: ipt.Tables | None = None) -> Plan:
    if remove:
        return Plan("remove wrapdock's shared iptables chains: no network record remains",
                    ipt.remove_skeleton(tables))
    return Plan("restore wrapdock's shared iptables chains and their jumps", ipt.ensure_skeleton())
