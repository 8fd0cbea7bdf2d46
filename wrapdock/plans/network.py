"""The bridge driver: which commands create and remove a network, in which order.

create = the bridge link with the gateway address, up; IPv4 forwarding; wrapdock's chains; the
network's own FORWARD and NAT rules. remove = the same, backwards, each delete guarded so that a
second run finishes what a failed first run left.
"""

from __future__ import annotations

from wrapdock import names
from wrapdock.model import Network
from wrapdock.plan import Plan, cmd
from wrapdock.plans import iptables as ipt

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def _rules(network: Network) -> list[ipt.Rule]:
    """The network's own rules; all carry the comment `wrapdock:network=NAME`."""
    br = network.bridge
    tag = names.network_comment(network.name)
    same_bridge = ipt.rule("filter", ipt.FORWARD_CHAIN, "-i", br, "-o", br, "-j", "ACCEPT", comment=tag)
    if network.internal:
        return [
            same_bridge,
            ipt.rule("filter", ipt.ISOLATION_CHAIN, "-i", br, "!", "-o", br, "-j", "DROP", comment=tag),
            ipt.rule("filter", ipt.ISOLATION_CHAIN, "-o", br, "!", "-i", br, "-j", "DROP", comment=tag),
        ]
    return [
        same_bridge,
        ipt.rule("filter", ipt.FORWARD_CHAIN, "-i", br, "!", "-o", br, "-j", "ACCEPT", comment=tag),
        ipt.rule("filter", ipt.FORWARD_CHAIN, "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                 "-j", "ACCEPT", comment=tag),
        ipt.rule("nat", ipt.MASQ_CHAIN, "-o", br, "-j", "RETURN", comment=tag, position=1),
        ipt.rule("nat", ipt.POSTROUTING_CHAIN, "-s", str(network.subnet), "!", "-o", br, "-j", ipt.MASQ_CHAIN,
                 comment=tag),
    ]


def _rules_note(network: Network) -> str:
    if network.internal:
        return f"iptables: {network.bridge} is internal: traffic stays on the bridge"
    return (f"iptables: forward {network.bridge}'s traffic, masquerade {network.subnet} leaving the host, "
            "not towards other wrapdock networks")


def create(network: Network) -> Plan:
    br = network.bridge
    plan = Plan(f"create bridge network {network.name} ({network.subnet}, gateway {network.gateway}, "
                f"bridge {br})")
    link_note = f"bridge {br} with gateway {network.gateway_cidr}"
    mtu = ("mtu", str(network.mtu)) if network.mtu else ()
    plan.add(cmd("ip", "link", "add", br, *mtu, "type", "bridge", note=link_note,
                 undo=cmd("ip", "link", "del", br, note=link_note)))
    plan.add(cmd("ip", "addr", "add", network.gateway_cidr, "dev", br, note=link_note))
    plan.add(cmd("ip", "link", "set", br, "up", note=link_note))
    if not network.internal:
        forward_note = "let the host route packets (IPv4 forwarding)"
        plan.add(cmd("sysctl", "-w", "net.ipv4.ip_forward=1", note=forward_note,
                     skip_if=("grep", "-qx", "1", IP_FORWARD),
                     undo=cmd("sysctl", "-w", "net.ipv4.ip_forward=0", note=forward_note)))
    plan.extend(ipt.ensure_skeleton())
    note = _rules_note(network)
    plan.extend(ipt.add_rule(r, note) for r in _rules(network))
    return plan


def remove(network: Network, last: bool) -> Plan:
    """Remove exactly what create made; `last`: no other network remains, so the chains go too."""
    br = network.bridge
    plan = Plan(f"remove bridge network {network.name} ({network.subnet}, bridge {br})")
    note = f"iptables: remove {network.name}'s rules"
    plan.extend(ipt.delete_rule(r, note) for r in reversed(_rules(network)))
    plan.add(cmd("ip", "link", "del", br, note=f"bridge {br} (its address and routes go with it)",
                 only_if=("ip", "link", "show", "dev", br)))
    if last:
        plan.extend(ipt.remove_skeleton())
    return plan
