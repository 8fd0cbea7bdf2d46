"""The bridge driver: which commands create and remove a network, in which order.

create = the bridge link with the gateway address, up, and its route_localnet (one `sh -s`); IPv4
forwarding (live: only if the host read showed it off); wrapdock's chains; the network's own FORWARD and
NAT rules. remove = the same, backwards. The iptables part is planned against
the host's tables (`tables`, parsed from one iptables-save the operation read): iptables-restore with
only what is missing (create: one for all tables) or still there (remove: one per table), so a second
run finishes what a failed first run left; shared chains missing entirely come first, in a restore per
table that is skipped if they exist by then (see plans/iptables.py).
"""

from __future__ import annotations

from dataclasses import replace

from wrapdock import names
from wrapdock.model import Network
from wrapdock.plan import Plan, Step, cmd, inlinable, inline, one_script
from wrapdock.plans import iptables as ipt

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def _rules(network: Network) -> list[ipt.Rule]:
    """The network's own rules; all carry the comment `wrapdock:network=NAME`."""
    br = network.bridge
    tag = names.network_comment(network.name)

    def rule(table: str, chain: str, *spec: str, position: int | None = None) -> ipt.Rule:
        return ipt.rule(table, chain, *spec, comment=tag, position=position)

    rules = [
        rule("filter", ipt.FORWARD_CHAIN, "-i", br, "-o", br, "-j", "ACCEPT"),  # same bridge (br_netfilter)
        # what --isolated networks may not exchange with this one
        rule("filter", ipt.ISO_OUT_CHAIN, "-o", br, "-j", "DROP"),
        rule("filter", ipt.ISO_IN_CHAIN, "-i", br, "-j", "DROP"),
    ]
    if network.internal:
        return [*rules,
                rule("filter", ipt.ISOLATION_CHAIN, "-i", br, "!", "-o", br, "-j", "DROP"),
                rule("filter", ipt.ISOLATION_CHAIN, "-o", br, "!", "-i", br, "-j", "DROP")]
    if network.isolated:
        rules += [rule("filter", ipt.ISOLATION_CHAIN, "-i", br, "!", "-o", br, "-j", ipt.ISO_OUT_CHAIN),
                  rule("filter", ipt.ISOLATION_CHAIN, "-o", br, "!", "-i", br, "-j", ipt.ISO_IN_CHAIN)]
    return [
        *rules,
        rule("filter", ipt.FORWARD_CHAIN, "-i", br, "!", "-o", br, "-j", "ACCEPT"),
        rule("filter", ipt.FORWARD_CHAIN, "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
             "-j", "ACCEPT"),
        rule("filter", ipt.FORWARD_CHAIN, "-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"),
        rule("nat", ipt.MASQ_CHAIN, "-o", br, "-j", "RETURN", position=1),
        rule("nat", ipt.POSTROUTING_CHAIN, "-s", str(network.subnet), "!", "-o", br, "-j", ipt.MASQ_CHAIN),
        # published ports reached via 127.0.0.1: the loopback source must not reach the container
        rule("nat", ipt.POSTROUTING_CHAIN, "-s", "127.0.0.0/8", "-o", br, "-j", "MASQUERADE"),
    ]


def _rules_note(network: Network) -> str:
    if network.internal:
        return f"iptables: {network.bridge} is internal: traffic stays on the bridge"
    isolated = "; isolated from other wrapdock networks" if network.isolated else ""
    return (f"iptables: forward {network.bridge}'s traffic and published ports, masquerade {network.subnet} "
            f"leaving the host (not towards other wrapdock networks){isolated}")


def create(network: Network, tables: ipt.Tables | None, forwarding: bool | None = None) -> Plan:
    br = network.bridge
    plan = Plan(f"create bridge network {network.name} ({network.subnet}, gateway {network.gateway}, "
                f"bridge {br})")
    link_note = f"bridge {br} with gateway {network.gateway_cidr}"
    mtu = ("mtu", str(network.mtu)) if network.mtu else ()
    # One batch: the bridge carries its owner in its alias from its first microsecond, so gc can tell
    # it is wrapdock's even if wrapdock is killed right after. `name`/`dev` before every link name: a
    # bridge called "up" or "mtu" is a name, not a keyword.
    batch = cmd("ip", "-batch", "-", note=link_note, partial=True, stdin=(
        f"link add name {br}{' ' + ' '.join(mtu) if mtu else ''} type bridge",
        f"link set dev {br} alias {names.network_comment(network.name)}",
        f"addr add {network.gateway_cidr} dev {br}",
        f"link set dev {br} up",
    ), undo=cmd("ip", "link", "del", "dev", br, note=link_note,
                only_if=("test", "-d", f"/sys/class/net/{br}/bridge")))
    links = with_route_localnet(network, [batch])
    rules = host_steps(network, tables, forwarding)
    if len(rules) == 1 and inlinable(rules[0]):
        # the usual case (chains there, forwarding on): the one restore of ipt.one_restore (the other
        # steps host_steps makes have probes), whose undo checks table by table whether its block went
        # in. With the links in one script: each command wrapdock runs itself costs ~4-5 ms beyond its
        # own run. Its undo, all of it guarded: the rules, then the bridge if it is there.
        guarded = cmd("sh", "-s", note=link_note,
                      stdin=["set -e", f"[ ! -d /sys/class/net/{br}/bridge ] || ip link del dev {br}"])
        plan.add(one_script([replace(links, undo=guarded), *rules], f"{links.note}; {rules[0].note}"))
    else:
        plan.add(links)
        plan.extend(rules)
    return plan


def host_steps(network: Network, tables: ipt.Tables | None, forwarding: bool | None = None) -> list[Step]:
    """What every network with a bridge needs once its links exist (and route_localnet, see
    with_route_localnet): forwarding, the shared chains and the network's own rules (the vxlan driver
    reuses them unchanged). `forwarding`: True when a live read showed it on, so no step at all; else
    (off, or unknown: a --print-only script) the switch, checked first where it runs."""
    plan = Plan("")
    if not network.internal and not forwarding:
        forward_note = "let the host route packets (IPv4 forwarding)"
        plan.add(cmd("sysctl", "-w", "net.ipv4.ip_forward=1", note=forward_note,
                     skip_if=("grep", "-qx", "1", IP_FORWARD),
                     undo=cmd("sysctl", "-w", "net.ipv4.ip_forward=0", note=forward_note)))
    note = f"{_rules_note(network)} ({ipt.decided(tables, adding=True)})"
    plan.extend(ipt.addition_steps(tables, _rules(network), note))
    return plan.steps


ROUTE_LOCALNET_NOTE = "published ports answer on 127.0.0.1 too (route_localnet on the bridge)"


def route_localnet(network: Network) -> Step:
    """No undo of its own: the setting goes with the bridge (the vxlan driver redoes it with the bridge)."""
    # the slash form: a bridge name may hold dots, which the dotted form would split
    return cmd("sysctl", "-w", f"net/ipv4/conf/{network.bridge}/route_localnet=1", note=ROUTE_LOCALNET_NOTE)


def with_route_localnet(network: Network, steps: list[Step]) -> Step:
    """The steps that make the network's links (the first one's undo deletes them all), and for a network
    that is not internal its bridge's route_localnet after them, as one `sh -s` (one process, not one
    each): undone by the first step's undo, the setting goes with the bridge. It may stop half-way: partial."""
    if network.internal and len(steps) == 1:
        return steps[0]
    first = steps[0]
    more = [] if network.internal else [route_localnet(network)]
    note = first.note if network.internal else f"{first.note}; {ROUTE_LOCALNET_NOTE}"
    return replace(inline([*steps, *more], note), undo=first.undo, partial=True)


def own_rule_steps(network: Network) -> list[Step]:
    """The network's own rules, one ensure (`-C || -A`) each: what doctor checks and repairs one by one."""
    note = _rules_note(network)
    return [ipt.add_rule(r, note) for r in _rules(network)]


def remove(network: Network, last: bool, tables: ipt.Tables | None) -> Plan:
    """Remove exactly what create made; `last`: no other network remains, so the chains go too (if
    nothing else is left in them)."""
    br = network.bridge
    plan = Plan(f"remove bridge network {network.name} ({network.subnet}, bridge {br})")
    plan.extend(remove_rules(network, tables, last))
    plan.add(cmd("ip", "link", "del", "dev", br, note=f"bridge {br} (its address and routes go with it)",
                 only_if=("test", "-d", f"/sys/class/net/{br}/bridge")))  # a bridge of that name, not any link
    return plan


def remove_rules(network: Network, tables: ipt.Tables | None, last: bool = False) -> list[Step]:
    """The network's own rules that are there, deleted in reverse; with `last`, the shared chains too."""
    note = f"iptables: remove {network.name}'s rules"
    if last:
        note += " and wrapdock's shared chains (no network is left; kept if anything else is in them)"
    edits = ipt.removals(tables, list(reversed(_rules(network))), skeleton=last)
    return ipt.edit_steps(edits, f"{note} ({ipt.decided(tables, adding=False)})")
