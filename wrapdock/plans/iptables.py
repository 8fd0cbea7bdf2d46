"""iptables rules as data, and the steps that add or remove them.

wrapdock keeps every rule in its own chains, entered once from the built-in chains:

  filter FORWARD     -> WRAPDOCK-FORWARD   (first rule: -j WRAPDOCK-ISOLATION, then per-network ACCEPTs)
  filter             WRAPDOCK-ISOLATION    (DROPs only: what an --internal network may not forward)
  nat    POSTROUTING -> WRAPDOCK-POSTROUTING (per network: traffic from its subnet leaving it -> WRAPDOCK-MASQ)
  nat                WRAPDOCK-MASQ         (per network: -o BRIDGE -j RETURN, then one final MASQUERADE)

Within each chain the per-network rules do not depend on their order, so networks can come and go in
any order. Traffic from one wrapdock network to another RETURNs before the MASQUERADE: it is routed
with its real source address. Each rule carries a comment naming its owner; adds are "ensures"
(`-C || -A`), deletes are guarded (`-C && -D`), so both are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from wrapdock import names
from wrapdock.plan import Step, cmd

IPTABLES = ("iptables", "-w")

FORWARD_CHAIN = names.check_chain("WRAPDOCK-FORWARD")
ISOLATION_CHAIN = names.check_chain("WRAPDOCK-ISOLATION")
POSTROUTING_CHAIN = names.check_chain("WRAPDOCK-POSTROUTING")
MASQ_CHAIN = names.check_chain("WRAPDOCK-MASQ")

SKELETON_COMMENT = names.COMMENT_PREFIX


@dataclass(frozen=True)
class Rule:
    """One rule: its table, chain and match/target words; `position` inserts instead of appending."""

    table: str
    chain: str
    spec: tuple[str, ...]
    position: int | None = None

    def argv(self, action: str) -> tuple[str, ...]:
        base = (*IPTABLES, "-t", self.table, action, self.chain)
        if action in ("-I",) and self.position is not None:
            base = (*base, str(self.position))
        return (*base, *self.spec)


def rule(table: str, chain: str, *spec: str, comment: str, position: int | None = None) -> Rule:
    """A rule whose target words come last, with the owner comment placed before them."""
    if "-j" not in spec:
        raise ValueError("a rule needs a target")
    cut = spec.index("-j")
    return Rule(table, chain, (*spec[:cut], "-m", "comment", "--comment", comment, *spec[cut:]), position)


def add_rule(r: Rule, note: str) -> Step:
    action = "-I" if r.position is not None else "-A"
    return cmd(*r.argv(action), note=note, skip_if=r.argv("-C"), undo=cmd(*r.argv("-D"), note=note))


def delete_rule(r: Rule, note: str) -> Step:
    return cmd(*r.argv("-D"), note=note, only_if=r.argv("-C"))


def _chain_probe(table: str, chain: str) -> tuple[str, ...]:
    return (*IPTABLES, "-t", table, "-S", chain)


def add_chain(table: str, chain: str, note: str) -> Step:
    return cmd(*IPTABLES, "-t", table, "-N", chain, note=note, skip_if=_chain_probe(table, chain),
               undo=cmd(*IPTABLES, "-t", table, "-X", chain, note=note))


def delete_chain(table: str, chain: str, note: str) -> Step:
    return cmd(*IPTABLES, "-t", table, "-X", chain, note=note, only_if=_chain_probe(table, chain))


# -- the skeleton shared by all networks ------------------------------------------------------
_CHAINS = (("filter", FORWARD_CHAIN), ("filter", ISOLATION_CHAIN), ("nat", POSTROUTING_CHAIN),
           ("nat", MASQ_CHAIN))
_FIXED_RULES = (
    rule("filter", "FORWARD", "-j", FORWARD_CHAIN, comment=SKELETON_COMMENT, position=1),
    rule("filter", FORWARD_CHAIN, "-j", ISOLATION_CHAIN, comment=SKELETON_COMMENT, position=1),
    rule("nat", "POSTROUTING", "-j", POSTROUTING_CHAIN, comment=SKELETON_COMMENT, position=1),
    rule("nat", MASQ_CHAIN, "-j", "MASQUERADE", comment=SKELETON_COMMENT),
)
SKELETON_NOTE = "wrapdock's iptables chains (shared by all networks; kept while one exists)"


def ensure_skeleton() -> list[Step]:
    steps = [add_chain(table, chain, SKELETON_NOTE) for table, chain in _CHAINS]
    steps += [add_rule(r, SKELETON_NOTE) for r in _FIXED_RULES]
    return steps


def remove_skeleton() -> list[Step]:
    note = "remove wrapdock's iptables chains (no network is left)"
    steps = [delete_rule(r, note) for r in _FIXED_RULES]
    steps += [delete_chain(table, chain, note) for table, chain in _CHAINS]
    return steps
