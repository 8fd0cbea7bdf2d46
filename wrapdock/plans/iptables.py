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
routed with its real source address. Each rule carries a comment naming its owner.

A network's chains and rules are made and removed by iptables-restore --noflush with exactly the
lines that are missing (`-N`, `-A`, `-I`) or still there (`-D`, `-X`): removed by one restore per
table, its own rules added by one restore for all tables (one_restore). Python decides which lines,
from one `iptables-save` the operation reads (runner.query or the host read, under wrapdock's lock) and
parses here (`parse_save`); rules are compared as sets of options, as iptables-save prints them in its
own order. No chain is ever declared with `:CHAIN` (which would flush it). Each step's undo deletes (or
re-adds) exactly its own lines (a restore for several tables: of those tables whose block went in).
A `--print-only` script holds what was missing when it was printed, with one exception that keeps it
safe where wrapdock has run since: shared chains the read showed all missing in a table come in a
restore of their own, skipped if that table's first chain exists (`iptables -S WRAPDOCK-FORWARD`,
`... WRAPDOCK-DNAT`).
Single rules and chains (`add_rule`, `add_chain`) stay "ensures" (`-C || -A`) for the callers that
check and repair one at a time (doctor, gc's restore of the shared chains).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from wrapdock import names
from wrapdock.plan import INLINE_END, Step, batches, cmd
from wrapdock.shell import probe_text

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


def _chain_probe(table: str, chain: str) -> tuple[str, ...]:
    return (*IPTABLES, "-t", table, "-S", chain)


def add_chain(table: str, chain: str, note: str) -> Step:
    return cmd(*IPTABLES, "-t", table, "-N", chain, note=note, skip_if=_chain_probe(table, chain),
               undo=cmd(*IPTABLES, "-t", table, "-X", chain, note=note))


# -- the skeleton shared by all networks ------------------------------------------------------
_CHAINS = (("filter", FORWARD_CHAIN), ("filter", ISOLATION_CHAIN), ("filter", ISO_OUT_CHAIN),
           ("filter", ISO_IN_CHAIN), ("nat", DNAT_CHAIN), ("nat", POSTROUTING_CHAIN), ("nat", MASQ_CHAIN))
_SKELETON_TABLES = tuple(dict.fromkeys(table for table, _ in _CHAINS))
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


def remove_skeleton(tables: Tables | None) -> list[Step]:
    """The shared chains and their jumps, if nothing but their own rules is left in them (gc)."""
    return edit_steps(_skeleton_removal(tables, []),
                      f"remove wrapdock's iptables chains (no network is left; {decided(tables, adding=False)})")


# -- the host's tables, read once (iptables-save) and parsed here ------------------------------------------
SAVE_QUERY = ("iptables-save",)
SAVE_NOTE = "read the host's iptables (the plan adds only what is missing and deletes only what is there)"

RuleKey = tuple[str, str, tuple[str, ...]]  # table, chain, the rule's options in a canonical order


def spec_key(spec: Sequence[str]) -> tuple[str, ...]:
    """A rule's words as a sorted tuple of options: iptables-save prints `-o b ! -i b` as `! -i b -o b`."""
    groups: list[str] = []
    negate = False
    for word in spec:
        if word == "!":
            negate = True
        elif word.startswith("-") or not groups:
            groups.append(("! " if negate else "") + word)
            negate = False
        else:
            groups[-1] += " " + word
    return tuple(sorted(groups))


@dataclass(frozen=True)
class Tables:
    """The chains and rules of the host's tables, as iptables-save showed them (or after a plan's edits)."""

    chains: frozenset[tuple[str, str]] = frozenset()
    rules: tuple[tuple[RuleKey, str | None], ...] = ()  # each rule's key and owner comment

    def has_chain(self, table: str, chain: str) -> bool:
        return (table, chain) in self.chains

    def count(self, key: RuleKey) -> int:
        return sum(1 for k, _ in self.rules if k == key)

    def edited(self, table: str, line: str) -> Tables:
        """These tables after one iptables-restore line (-N, -X, -A, -I, -D) of wrapdock's."""
        words = shlex.split(line)
        action, chain, spec = words[0], words[1], words[2:]
        if action == "-N":
            return Tables(self.chains | {(table, chain)}, self.rules)
        if action == "-X":
            return Tables(self.chains - {(table, chain)}, self.rules)
        if action == "-I" and spec and spec[0].isdigit():
            spec = spec[1:]
        key = (table, chain, spec_key(spec))
        if action in ("-A", "-I"):
            return Tables(self.chains, (*self.rules, (key, _after(spec, "--comment"))))
        index = next((i for i, (k, _) in enumerate(self.rules) if k == key), None)
        if index is None:  # a delete of a rule that is not there (iptables-restore would refuse it)
            return self
        return Tables(self.chains, self.rules[:index] + self.rules[index + 1:])


def _after(words: Sequence[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words and words.index(flag) + 1 < len(words) else None


def parse_save(text: str) -> Tables:
    """iptables-save's output: which chains exist in which table, and each `-A` rule (quotes undone)."""
    table = ""
    chains: set[tuple[str, str]] = set()
    rules: list[tuple[RuleKey, str | None]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add((table, line[1:].split()[0]))
        elif line.startswith("-A "):
            words = shlex.split(line)
            rules.append(((table, words[1], spec_key(words[2:])), _after(words, "--comment")))
    return Tables(frozenset(chains), tuple(rules))


def from_rules(chains: Iterable[tuple[str, str]], rules: Iterable[tuple[str, str, Sequence[str]]]) -> Tables:
    """Tables from rules already parsed elsewhere (doctor's facts): (table, chain, words after the chain)."""
    return Tables(frozenset(chains), tuple(((t, c, spec_key(s)), _after(s, "--comment")) for t, c, s in rules))


def after(tables: Tables | None, steps: Iterable[Step]) -> Tables | None:
    """The tables once `steps` ran: their iptables-restore input applied, also where a script runs it
    (a merged network create or container start), for planning several plans from one read."""
    if tables is None:
        return None
    for step in steps:
        if step.argv[:1] == ("sh",) and UNRULE in step.argv:  # delete_by_comment: all the owner's rules go
            owner, where = step.argv[step.argv.index(UNRULE) + 2], re.findall(r"iptables-save -t (\w+)", step.argv[2])
            tables = Tables(tables.chains, tuple((k, c) for k, c in tables.rules if c != owner or k[0] not in where))
        for batch in batches(step):
            if batch.argv[:1] != RESTORE[:1]:
                continue
            table = ""
            for line in batch.stdin:
                if line.startswith("*"):
                    table = line[1:]
                elif line != "COMMIT":
                    tables = tables.edited(table, line)
    return tables


# -- the edits: decided here from the tables, applied by iptables-restore ------------------------------
# iptables-restore commits table by table (a failure in nat leaves filter's block applied). Deletions get
# one restore per table, which keeps a failed step and its undo exact; additions go in one restore for all
# tables, whose undo checks which tables' blocks went in (one_restore).
RESTORE = ("iptables-restore", "-w", "--noflush")

Edit = tuple[str, str, str]  # table, the restore line, the line that undoes it


def _key(r: Rule) -> RuleKey:
    return r.table, r.chain, spec_key(r.spec)


def _add_line(r: Rule) -> str:
    return _rule_line(r, "-I" if r.position is not None else "-A")


def additions(tables: Tables | None, rules: Sequence[Rule], skeleton: bool = True) -> list[Edit]:
    """What is missing of the shared chains and their jumps (`skeleton`) and of `rules`: `-N` only for
    chains that do not exist (never `:CHAIN`, which would flush one), `-A`/`-I` only for absent rules.
    Unknown tables (None: iptables-save could not be read) count as empty."""
    have = tables or Tables()
    edits: list[Edit] = []
    if skeleton:
        edits += [(t, f"-N {c}", f"-X {c}") for t, c in _CHAINS if not have.has_chain(t, c)]
    seen: set[RuleKey] = set()
    for r in [*(_FIXED_RULES if skeleton else ()), *rules]:
        key = _key(r)
        if key not in seen and not have.count(key):
            edits.append((r.table, _add_line(r), _rule_line(r, "-D")))
        seen.add(key)
    return edits


def addition_steps(tables: Tables | None, rules: Sequence[Rule], note: str) -> list[Step]:
    """The steps that add what is missing of the shared chains and of `rules`. A table whose shared chains
    the read shows all missing gets them in a step of its own, skipped if its first chain exists when it
    runs: a --print-only script stays safe on a host where wrapdock (or another script) made them since.
    A skeleton only partly there (a repair) gets exactly its missing lines, unguarded, with `rules`."""
    have = tables or Tables()
    steps = [_skeleton_step(table) for table in _SKELETON_TABLES
             if not any(have.has_chain(t, c) for t, c in _CHAINS if t == table)]
    return steps + one_restore(additions(after(have, steps), rules), note)


def _skeleton_step(table: str) -> Step:
    """The table's shared chains, their jumps and their own rules: one restore, skipped if the table's first
    shared chain exists (a restore applies a table's block whole, so the first chain stands for all)."""
    edits = [(t, f"-N {c}", f"-X {c}") for t, c in _CHAINS if t == table]
    edits += [(r.table, _add_line(r), _rule_line(r, "-D")) for r in _FIXED_RULES if r.table == table]
    first = next(c for t, c in _CHAINS if t == table)
    (step,) = edit_steps(edits, f"{SKELETON_NOTE}: {table}, unless {first} is there already")
    return replace(step, skip_if=_chain_probe(table, first))


def removals(tables: Tables | None, rules: Sequence[Rule], skeleton: bool = False) -> list[Edit]:
    """`-D` of those of `rules` that are there; with `skeleton`, then the shared chains and their jumps, but
    only if no rule but theirs and `rules` is left in them. Unknown tables: every rule counts as there."""
    edits: list[Edit] = []
    left: dict[RuleKey, int] = {}
    for r in rules:
        key = _key(r)
        left.setdefault(key, 1 if tables is None else tables.count(key))
        if left[key] > 0:
            edits.append((r.table, _rule_line(r, "-D"), _add_line(r)))
            left[key] -= 1
    if skeleton:
        edits += _skeleton_removal(tables, [_key(r) for r in rules])
    return edits


def _skeleton_removal(tables: Tables | None, going: list[RuleKey]) -> list[Edit]:
    shared = set(_CHAINS)
    if tables is not None:
        rest = list(tables.rules)
        for key in going:  # the rules deleted along with the chains
            index = next((n for n, (k, _) in enumerate(rest) if k == key), None)
            if index is not None:
                del rest[index]
        jumps = {f"{flag} {chain}" for _, chain in _CHAINS for flag in ("-j", "-g")}
        if any(owner != SKELETON_COMMENT and ((k[0], k[1]) in shared or jumps & set(k[2])) for k, owner in rest):
            return []  # something else (a container's rule, another tool's) is in them or uses them: keep them
    edits: list[Edit] = []
    for r in _FIXED_RULES:
        if tables is None or tables.count(_key(r)):
            edits.append((r.table, _rule_line(r, "-D"), _add_line(r)))
    for table, chain in _CHAINS:
        if tables is None or tables.has_chain(table, chain):
            edits.append((table, f"-X {chain}", f"-N {chain}"))
    return edits


def decided(tables: Tables | None, adding: bool) -> str:
    """What a restore's lines were decided against: said in the trail and in a --print-only script."""
    if tables is None:
        return "iptables-save could not be read when planned: assumes the tables match wrapdock's state"
    return f"only what this host's iptables-save showed {'missing' if adding else 'there'} when planned"


def edit_steps(edits: list[Edit], note: str) -> list[Step]:
    """One iptables-restore --noflush per table with the edits' lines; its undo reverses exactly those."""
    steps: list[Step] = []
    for table in dict.fromkeys(t for t, _, _ in edits):
        lines = [line for t, line, _ in edits if t == table]
        inverse = [back for t, _, back in reversed(edits) if t == table]
        undo = cmd(*RESTORE, note="rollback", stdin=[f"*{table}", *inverse, "COMMIT"])
        steps.append(cmd(*RESTORE, note=note, stdin=[f"*{table}", *lines, "COMMIT"], undo=undo))
    return steps


def one_restore(edits: list[Edit], note: str) -> list[Step]:
    """Additions to one or several tables in ONE iptables-restore (one process, not one per table).

    iptables-restore commits table by table (iptables-legacy, and iptables-nft too: a failure in nat leaves
    filter's block applied), so the step is partial, and its undo checks, table by table (last first), whether
    that table's block went in: its first line's rule (`-C`) or chain (`-S`) is there. A block goes in whole
    or not at all and every line of it was missing when planned, so that line stands for the block; the undo
    deletes exactly that block's lines. Only for additions (a deletion's block would need the opposite test).
    So the undo is right whether or not the step ran: the step can be a part of a script that stops before
    it (plans.network.create)."""
    tables = list(dict.fromkeys(t for t, _, _ in edits))
    if not tables:
        return []
    lines: list[str] = []
    for table in tables:
        lines += [f"*{table}", *(line for t, line, _ in edits if t == table), "COMMIT"]
    undo_lines = ["set -e"]
    for table in reversed(tables):
        first = next(line for t, line, _ in edits if t == table)
        inverse = [back for t, _, back in reversed(edits) if t == table]
        undo_lines += [f"if {probe_text(_witness(table, first))}; then {shlex.join(RESTORE)} <<'{INLINE_END}'",
                       f"*{table}", *inverse, "COMMIT", INLINE_END, "fi"]
    undo = cmd("sh", "-s", note="rollback", stdin=undo_lines)
    return [cmd(*RESTORE, note=note, stdin=lines, undo=undo, partial=True)]


def _witness(table: str, line: str) -> tuple[str, ...]:
    """The probe that tells whether an added restore line (`-N`, `-A`, `-I`) is in the table."""
    words = shlex.split(line)
    action, chain, spec = words[0], words[1], words[2:]
    if action == "-N":
        return _chain_probe(table, chain)
    if action not in ("-A", "-I"):
        raise ValueError(f"not an addition: {line}")
    if action == "-I" and spec and spec[0].isdigit():
        spec = spec[1:]
    return (*IPTABLES, "-t", table, "-C", chain, *spec)


def _rule_line(r: Rule, action: str) -> str:
    position = (str(r.position),) if action == "-I" and r.position is not None else ()
    return " ".join([action, r.chain, *position, *(_restore_word(w) for w in r.spec)])


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


UNRULE = "wrapdock-unrule"  # delete_by_comment's $0: how `after` knows such a step


def delete_by_comment(comment: str, note: str, tables: tuple[str, ...] = ("filter", "nat"),
                      extra: str = "") -> Step:
    """Delete every rule of `tables` whose comment is exactly `comment`: one save, one restore."""
    save = " ".join(f"iptables-save -t {t};" for t in tables)
    script = f'{{ {save} }} | awk -v c="$2" "$1" | iptables-restore -w --noflush' + extra
    return cmd("sh", "-c", script, UNRULE, OWNER_RULES_AS_DELETES, comment, note=note)
