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

A network's chains and rules are made and removed by one `awk` step (`batch`): it reads the tables
once (`iptables-save`), keeps of the wanted lines only what is missing (`-N`, `-A`, `-I`) or still
there (`-D`, `-X`), and applies that in one `iptables-restore --noflush`. The decision is taken when
the step runs, not when it is planned, so the step is idempotent and a `--print-only` script stays
safe on a host that already has some of the rules; no chain is ever declared with `:CHAIN` (which
would flush it). Single rules (`add_rule`, `delete_rule`) stay "ensures" (`-C || -A`) and guarded
deletes (`-C && -D`) for the callers that repair one rule at a time (doctor).
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
    """The shared chains and their jumps, in one batch (what is already gone is left out)."""
    return [batch(skeleton_lines("remove"), "remove wrapdock's iptables chains (no network is left)")]


def skeleton_lines(action: str) -> list[tuple[str, str]]:
    """(table, line) of the shared chains and their jumps: `add` in creation order, `remove` reversed."""
    if action == "add":
        return ([(table, f"-N {chain}") for table, chain in _CHAINS]
                + [(r.table, _rule_line(r, "-I" if r.position is not None else "-A")) for r in _FIXED_RULES])
    return ([(r.table, _rule_line(r, "-D")) for r in _FIXED_RULES]
            + [(table, f"-X {chain}") for table, chain in _CHAINS])


def rule_lines(rules: list[Rule], action: str) -> list[tuple[str, str]]:
    """(table, line) adding (`add`: -A, or -I at its position) or deleting (`remove`: -D) `rules`."""
    if action == "add":
        return [(r.table, _rule_line(r, "-I" if r.position is not None else "-A")) for r in rules]
    return [(r.table, _rule_line(r, "-D")) for r in rules]


def _rule_line(r: Rule, action: str) -> str:
    position = (str(r.position),) if action == "-I" and r.position is not None else ()
    return " ".join([action, r.chain, *position, *(_restore_word(w) for w in r.spec)])


# -- batches decided when they run: one iptables-save, one iptables-restore ----------------------------
# stdin: the wanted lines in iptables-restore syntax (-N/-X a chain, -A/-I/-D a rule), grouped by table.
# awk reads the host's tables once and pipes to iptables-restore only what is missing (-N, -A, -I) or
# still there (-D, -X). Rules are compared as sets of options ("! -i b -o b" is "-o b ! -i b"), quotes
# dropped, as iptables-save may print them in another order than they were given. mode=if-unused (the
# undo of a create): the shared chains and their jumps go only if no rule but theirs is left in them.
BATCH_PROGRAM = r"""
function key(table, chain, spec,   n, w, u, i, j, k, t, neg, out) {
  gsub(/"/, "", spec); n = split(spec, w, " "); k = 0; neg = ""
  for (i = 1; i <= n; i++)
    if (w[i] == "!") neg = "! "
    else if (w[i] ~ /^-/ || k == 0) { u[++k] = neg w[i]; neg = "" }
    else u[k] = u[k] " " w[i]
  for (i = 2; i <= k; i++) { t = u[i]; for (j = i - 1; j > 0 && u[j] > t; j--) u[j + 1] = u[j]; u[j + 1] = t }
  out = table " " chain
  for (i = 1; i <= k; i++) out = out "|" u[i]
  return out
}
function spec(line,   s) {
  s = line; sub(/^[^ ]+ [^ ]+ ?/, "", s)
  if (line ~ /^-I [^ ]+ [0-9]+ /) sub(/^[0-9]+ /, "", s)
  return s
}
function owner(line,   s) {
  if (!match(line, /--comment ("[^"]*"|[^ ]+)/)) return ""
  s = substr(line, RSTART + 10, RLENGTH - 10); gsub(/"/, "", s); return s
}
BEGIN {
  save = "iptables-save"; restore = "iptables-restore -w --noflush"
  while ((getline line) > 0) want[++n] = line
  while ((save | getline line) > 0)
    if (line ~ /^[*]/) table = substr(line, 2)
    else if (line ~ /^:/) { split(substr(line, 2), f, " "); chains[table " " f[1]] = 1 }
    else if (line ~ /^-A /) { split(line, f, " "); k = key(table, f[2], spec(line)); have[k]++; who[k] = owner(line) }
  if (close(save) != 0) { print "iptables-save failed: cannot tell which rules exist" > "/dev/stderr"; exit 1 }
  if (mode == "if-unused") {
    for (i = 1; i <= n; i++) {
      split(want[i], f, " ")
      if (f[1] ~ /^[*]/) table = substr(f[1], 2)
      else if (f[1] == "-X") dropped[table " " f[2]] = 1
      else if (f[1] == "-D") gone[key(table, f[2], spec(want[i]))] = 1
    }
    for (k in have)
      if (((substr(k, 1, index(k, "|") - 1)) in dropped) && !(k in gone) && who[k] != skeleton) busy = 1
  }
  for (i = 1; i <= n; i++) {
    line = want[i]; split(line, f, " "); c = table " " f[2]
    if (f[1] ~ /^[*]/) { table = substr(f[1], 2); body = ""; continue }
    if (f[1] == "COMMIT") {
      if (body != "") { printf "*%s\n%sCOMMIT\n", table, body | restore; changed = 1 }
      continue
    }
    if (f[1] == "-N") { if (!(c in chains)) { body = body line "\n"; chains[c] = 1 } continue }
    if (f[1] == "-X") { if ((c in chains) && !busy) { body = body line "\n"; delete chains[c] } continue }
    k = key(table, f[2], spec(line))
    if (f[1] == "-D") { if (have[k] > 0 && !(busy && owner(line) == skeleton)) { body = body line "\n"; have[k]-- } }
    else if (!(have[k] > 0)) { body = body line "\n"; have[k] = 1 }
  }
  if (changed && close(restore) != 0) exit 1
}
"""


def batch(lines: list[tuple[str, str]], note: str, undo: Step | None = None, mode: str = "exact") -> Step:
    """One step that makes the missing of `lines` ((table, restore line), in order) or deletes what is
    still there: decided when it runs (see BATCH_PROGRAM), so it is idempotent and safe to print."""
    grouped: list[str] = []
    for table in dict.fromkeys(table for table, _ in lines):
        grouped += [f"*{table}", *(line for t, line in lines if t == table), "COMMIT"]
    return cmd("awk", "-v", f"mode={mode}", "-v", f"skeleton={SKELETON_COMMENT}", BATCH_PROGRAM.strip(),
               note=note, stdin=grouped, undo=undo, partial=True)


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
