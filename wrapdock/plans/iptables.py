"""iptables rules as data, and the steps that add or remove them.

wrapdock keeps every rule in its own chains, entered once from the built-in chains:

  filter FORWARD     -> WRAPDOCK-FORWARD     first -j WRAPDOCK-ISOLATION, then per-network ACCEPTs
  filter               WRAPDOCK-ISOLATION   DROPs, and the jumps of --isolated networks into:
  filter               WRAPDOCK-ISO-OUT     per network: -o BRIDGE -j DROP (an isolated one may not reach it)
  filter               WRAPDOCK-ISO-IN      per network: -i BRIDGE -j DROP (it may not reach an isolated one)
  nat    PREROUTING  -> WRAPDOCK-DNAT        (to a local address) per published port: DNAT to the container
  nat    OUTPUT      -> WRAPDOCK-DNAT        (to a local address, 127.0.0.1 included) the same, for the host itself
  nat    POSTROUTING -> WRAPDOCK-POSTROUTING per network: its subnet leaving it -> WRAPDOCK-MASQ; loopback and
                                             hairpin MASQUERADEs for published ports
  nat                  WRAPDOCK-MASQ       per network: -o BRIDGE -j RETURN, then one final MASQUERADE

Within each chain the rules do not depend on their order, so networks and containers can come and go
in any order. Traffic from one wrapdock network to another RETURNs before the MASQUERADE: it is
routed with its real source address. Each rule carries a comment naming its owner; adds are
"ensures" (`-C || -A`), deletes are guarded (`-C && -D`), so both are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from wrapdock import names
from wrapdock.plan import Step, cmd

IPTABLES = ("iptables", "-w")

FORWARD_CHAIN = names.check_chain("WRAPDOCK-FORWARD")
ISOLATION_CHAIN = names.check_chain("WRAPDOCK-ISOLATION")
ISO_OUT_CHAIN = names.check_chain("WRAPDOCK-ISO-OUT")
ISO_IN_CHAIN = names.check_chain("WRAPDOCK-ISO-IN")
DNAT_CHAIN = names.check_chain("WRAPDOCK-DNAT")
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
_CHAINS = (("filter", FORWARD_CHAIN), ("filter", ISOLATION_CHAIN), ("filter", ISO_OUT_CHAIN),
           ("filter", ISO_IN_CHAIN), ("nat", DNAT_CHAIN), ("nat", POSTROUTING_CHAIN), ("nat", MASQ_CHAIN))
_LOCAL = ("-m", "addrtype", "--dst-type", "LOCAL")
_FIXED_RULES = (
    rule("filter", "FORWARD", "-j", FORWARD_CHAIN, comment=SKELETON_COMMENT, position=1),
    rule("filter", FORWARD_CHAIN, "-j", ISOLATION_CHAIN, comment=SKELETON_COMMENT, position=1),
    rule("nat", "PREROUTING", *_LOCAL, "-j", DNAT_CHAIN, comment=SKELETON_COMMENT, position=1),
    rule("nat", "OUTPUT", *_LOCAL, "-j", DNAT_CHAIN, comment=SKELETON_COMMENT, position=1),
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


# -- batches: one iptables-restore for all of a container's rules -------------------------------
def restore_lines(rules: list[Rule], action: str) -> list[str]:
    """iptables-restore input that adds (-A) or deletes (-D) `rules`, grouped by table."""
    lines: list[str] = []
    for table in dict.fromkeys(r.table for r in rules):
        lines.append(f"*{table}")
        for r in rules:
            if r.table == table:
                lines.append(" ".join([action, r.chain, *(_restore_word(w) for w in r.spec)]))
        lines.append("COMMIT")
    return lines


_UNSAFE_FOR_RESTORE = set(" \t\n\"'\\")


def _restore_word(word: str) -> str:
    """iptables-restore splits words on blanks; wrapdock's names and comments never need quoting."""
    if _UNSAFE_FOR_RESTORE & set(word):
        raise ValueError(f"cannot pass {word!r} through iptables-restore")
    return word


# iptables-save's output, kept to the table headers, COMMITs and the owner's rules turned into deletes:
# the input of one iptables-restore (nothing of the owner's left: an empty restore, fine)
OWNER_RULES_AS_DELETES = ('/^[*]/ || /^COMMIT/ {print; next} '
                          'index($0, "--comment " c " ") || index($0, "--comment \\"" c "\\" ") '
                          '{sub(/^-A /, "-D "); print}')


def delete_by_comment(comment: str, note: str, tables: tuple[str, ...] = ("filter", "nat"),
                      extra: str = "") -> Step:
    """Delete every rule of `tables` whose comment is exactly `comment`: one save, one restore."""
    save = " ".join(f"iptables-save -t {t};" for t in tables)
    script = f'{{ {save} }} | awk -v c="$2" "$1" | iptables-restore -w --noflush' + extra
    return cmd("sh", "-c", script, "wrapdock-unrule", OWNER_RULES_AS_DELETES, comment, note=note)
