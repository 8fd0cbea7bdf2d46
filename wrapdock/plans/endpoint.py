"""A container on a bridge network: the series' manual wiring, planned.

Per network: a veth pair whose container end is created directly inside the container's network
namespace (an address set before a move would be lost), the host end on the bridge and up; the
address from IPAM, the link up and, on the first network, the default route via the gateway. The
host side is one `ip -batch`, the container side one `nsenter --net=NETNS ip -batch` (iproute2 takes no -n on
batch lines). Published ports are one `iptables-restore --noflush` batch of the container's rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from wrapdock.model import Network
from wrapdock.plan import Step, cmd
from wrapdock.plans import iptables as ipt
from wrapdock.portspec import PortMapping


@dataclass(frozen=True)
class Attachment:
    """One interface of a container on a network (a veth: host end on the bridge, inside end in the netns)."""

    network: Network
    ifname: str  # inside: eth0, eth1, ...
    host_ifname: str  # on the host, on the bridge
    address: IPv4Address
    primary: bool  # carries the default route
    mac: str | None = None  # the container end's MAC (CNI reports it); None: the kernel picks one

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.network.subnet.prefixlen}"


def host_ifname(container_id: str, index: int) -> str:
    """wd + 10 characters of the id + the interface number: unique, at most 14 characters."""
    return f"wd{container_id[:10]}{index}"


def container_comment(container_id: str) -> str:
    return f"wrapdock:container={container_id}"


def in_netns(netns: str, *argv: str) -> tuple[str, ...]:
    """A command inside a network namespace, a named one (/run/netns/NAME) or a path (a CNI caller's, or
    /proc/PID/ns/net): `nsenter --net=PATH`, not `ip -n NAME`. iproute2's -n also unshares a mount
    namespace to mount the namespace's /sys, which copies the host's whole mount table (one mount
    per named netns: +4-8 ms a start at 1000 containers); the commands run here are netlink only."""
    return ("nsenter", f"--net={netns if '/' in netns else f'/run/netns/{netns}'}", *argv)


def attach(att: Attachment, netns: str, name: str, create_netns: bool = False, *, kernel_ipv6: bool) -> list[Step]:
    """Two `ip -batch` runs; with `create_netns`, they also make the namespace and bring its lo up.

    `kernel_ipv6` (kernelfacts.has_ipv6): the networks are IPv4-only, so neither end takes part in IPv6.
    - The container's interface gets no IPv6 link-local address (`addrgenmode none`, before it is up), as
      Docker turns IPv6 off on an interface that has no IPv6 address. Otherwise each new interface sends a
      duplicate-address check, multicast listener reports and router solicitations (repeated for as long
      as it lives, RFC 7559), and the bridge floods each to every port: next to 1000 containers, ~1000
      deliveries each, a few thousand a second for the whole network.
    - The host end, a bridge port, gets none either (the same line in the host's batch). Else each port
      holds a link-local address and its two routes in the host's IPv6 tables, which the kernel walks
      (with its address list) every time an interface goes down: next to 1000 containers ~3000 routes,
      ~3 ms of kernel time an `rm`. What stays is one multicast route per port (ff00::/8, as any
      interface with IPv6 has); `disable_ipv6` would drop that too, but `ip` has no word for it: one
      more process for every attachment.
    A kernel without IPv6 has neither the settings nor the chatter."""
    net = att.network
    mtu = f" mtu {net.mtu}" if net.mtu else ""
    mac = f" address {att.mac}" if att.mac else ""
    note = f"connect {name} to {net.name}: veth {att.host_ifname} on {net.bridge}, {att.ifname} {att.cidr} inside"
    undo_lines = ["set -e", f"[ ! -e /sys/class/net/{att.host_ifname} ] || ip link del dev {att.host_ifname}"]
    if create_netns:
        note = f"network namespace {netns} (ip netns exec {netns} ... works on the host); " + note
        undo_lines.append(f"[ ! -e /run/netns/{netns} ] || ip netns del {netns}")
    host = cmd("ip", "-batch", "-", note=note, partial=True, stdin=(
        *([f"netns add {netns}"] if create_netns else []),
        f"link add name {att.host_ifname}{mtu} type veth peer name {att.ifname}{mac}{mtu} netns {netns}",
        f"link set dev {att.host_ifname} master {net.bridge}",
        # hairpin: a container reaching its own published port through the host is bridged back out
        # of the port it came in by (br_netfilter does that after the DNAT)
        f"link set dev {att.host_ifname} type bridge_slave hairpin on",
        *([f"link set dev {att.host_ifname} addrgenmode none"] if kernel_ipv6 else []),
        f"link set dev {att.host_ifname} up",
    ), undo=cmd("sh", "-s", note=note, stdin=undo_lines))
    inside = [*(["link set dev lo up"] if create_netns else []),
              *([f"link set dev {att.ifname} addrgenmode none"] if kernel_ipv6 else []),
              f"addr add {att.cidr} dev {att.ifname}", f"link set dev {att.ifname} up"]
    if att.primary:
        inside.append(f"route add default via {net.gateway}")
    return [host, cmd(*in_netns(netns, "ip", "-batch", "-"), note=note, stdin=inside)]


def default_route(att: Attachment, netns: str, name: str) -> Step:
    return cmd("ip", "-n", netns, "route", "replace", "default", "via", str(att.network.gateway),
               note=f"{name}'s default route now goes via {att.network.name} ({att.network.gateway})")


def detach(att: Attachment, name: str) -> Step:
    """Deleting the host end deletes the pair (the netns may outlive its last process)."""
    return cmd("ip", "link", "del", "dev", att.host_ifname, note=f"disconnect {name} from {att.network.name}",
               only_if=("ip", "link", "show", "dev", att.host_ifname))


def port_rules(container_id: str, att: Attachment, ports: list[PortMapping], tag: str | None = None) -> list[ipt.Rule]:
    """The rules of published ports, tagged with their owner (a container's comment, or `tag`)."""
    tag = tag or container_comment(container_id)
    rules: list[ipt.Rule] = []
    for p in ports:
        to_host = ("-d", p.host_ip) if p.host_ip else ()
        rules.append(ipt.rule("nat", ipt.DNAT_CHAIN, "-p", p.proto, *to_host, "--dport", str(p.host_port),
                              "-j", "DNAT", "--to-destination", f"{att.address}:{p.container_port}", comment=tag))
        # hairpin: a container of the same network going through the host's address; the reply must
        # come back through the host to be un-NATed
        # (only DNAT'd connections: with br_netfilter, a neighbour's direct connection passes here too)
        rules.append(ipt.rule("nat", ipt.POSTROUTING_CHAIN, "-s", str(att.network.subnet), "-d", f"{att.address}/32",
                              "-o", att.network.bridge, "-p", p.proto, "--dport", str(p.container_port),
                              "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE", comment=tag))
    return rules


def publish(container_id: str, name: str, att: Attachment, ports: list[PortMapping], tag: str | None = None) -> Step:
    """The rules in one batch; undone by their owner comment, which finds nothing to delete if the batch
    never ran (a start's script that stopped before it: see plans.container.prepare)."""
    rules = port_rules(container_id, att, ports, tag)
    note = f"publish {name}'s ports: " + ", ".join(p.text() for p in ports)
    return cmd("iptables-restore", "-w", "--noflush", note=note, stdin=ipt.restore_lines(rules, "-A"),
               undo=ipt.delete_by_comment(tag or container_comment(container_id), note, tables=("nat",)))


def unpublish(container_id: str, name: str, ports: list[PortMapping], tag: str | None = None) -> list[Step]:
    """One step: the container's rules (all in nat) by their owner comment, then the conntrack
    entries of its ports (conntrack would keep sending a reused port to the old address)."""
    note = f"withdraw {name}'s published ports (every rule with its owner comment)"
    forget = " ".join(f"conntrack -D -p {p.proto} --orig-port-dst {p.host_port} >/dev/null 2>&1 || true;"
                      for p in ports)
    extra = f" && if command -v conntrack >/dev/null; then {forget} fi" if ports else ""
    return [ipt.delete_by_comment(tag or container_comment(container_id), note, tables=("nat",), extra=extra)]
