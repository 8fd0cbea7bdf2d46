"""The bridge network plans: golden files for their exact commands, and structural properties.

Regenerate the golden files after an intended change with:
    WRAPDOCK_UPDATE_GOLDEN=1 /tmp/venv/bin/python -m pytest tests/unit/test_plans_network.py
then review the diff of tests/golden/ before committing.
"""

from __future__ import annotations

import itertools
import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from wrapdock import names
from wrapdock.model import Network
from wrapdock.plan import Plan, Step, script_lines
from wrapdock.plan import batches as script_batches
from wrapdock.plans import iptables as ipt
from wrapdock.plans import network as network_plans
from wrapdock.shell import step_text

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
UPDATE = os.environ.get("WRAPDOCK_UPDATE_GOLDEN") == "1"

NETWORKS = {
    "normal": Network(name="web", id="a" * 64, driver="bridge", subnet=IPv4Network("10.20.0.0/24"),
                      gateway=IPv4Address("10.20.0.1"), bridge="web", created="2024-01-02T03:04:05+00:00"),
    "internal": Network(name="backend", id="b" * 64, driver="bridge", subnet=IPv4Network("10.30.0.0/16"),
                        gateway=IPv4Address("10.30.0.254"), bridge="backend", internal=True,
                        created="2024-01-02T03:04:05+00:00"),
    "mtu": Network(name="jumbo.net-1", id="c" * 64, driver="bridge", subnet=IPv4Network("172.20.5.0/28"),
                   gateway=IPv4Address("172.20.5.1"), bridge="br-jumbo", mtu=9000,
                   created="2024-01-02T03:04:05+00:00"),
}

EMPTY = ipt.Tables()  # a host without any of wrapdock's chains
OTHER = Network(name="other", id="d" * 64, driver="bridge", subnet=IPv4Network("10.99.0.0/24"),
                gateway=IPv4Address("10.99.0.1"), bridge="other", created="2024-01-02T03:04:05+00:00")


def made(*networks: Network) -> ipt.Tables:
    """The tables once `networks` were created on an empty host, one after the other."""
    tables = EMPTY
    for network in networks:
        tables = ipt.after(tables, network_plans.create(network, tables).steps)
    assert tables is not None
    return tables


def create(n: Network) -> Plan:
    return network_plans.create(n, EMPTY)


def remove(n: Network, last: bool) -> Plan:
    return network_plans.remove(n, last, made(n) if last else made(OTHER, n))


PLANS = {
    "create": create,
    "create-beside-another": lambda n: network_plans.create(n, made(OTHER)),  # the shared chains exist
    "remove-last": lambda n: remove(n, last=True),
    "remove-not-last": lambda n: remove(n, last=False),
}


def plan_text(plan: Plan) -> str:
    return "".join(step_text(step) + "\n" for step in plan.steps)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN_DIR / name
    if UPDATE:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with WRAPDOCK_UPDATE_GOLDEN=1 and review it")
    expected = path.read_text()
    assert actual == expected, (
        f"plan differs from {path}; if the change is intended, rerun with WRAPDOCK_UPDATE_GOLDEN=1 "
        "and review the diff")


@pytest.mark.parametrize("kind", sorted(NETWORKS))
@pytest.mark.parametrize("which", sorted(PLANS))
def test_plan_matches_golden(kind: str, which: str) -> None:
    plan = PLANS[which](NETWORKS[kind])
    check_golden(f"network-{which}-{kind}.txt", plan_text(plan))


def test_goldens_have_no_strays() -> None:
    """Every golden file belongs to a test (a renamed case does not leave a stale file behind)."""
    expected = {f"network-{which}-{kind}.txt" for which in PLANS for kind in NETWORKS}
    present = {p.name for p in GOLDEN_DIR.glob("network-*.txt")}
    assert present == expected


# -- helpers to read iptables argv ------------------------------------------------------------
ACTIONS = ("-A", "-I", "-D", "-C", "-N", "-X", "-S")


def is_iptables(argv: tuple[str, ...]) -> bool:
    return argv[:2] == ipt.IPTABLES


def action_of(argv: tuple[str, ...]) -> tuple[int, str]:
    for index, word in enumerate(argv):
        if word in ACTIONS:
            return index, word
    raise AssertionError(f"no iptables action in {argv}")


def as_delete(argv: tuple[str, ...]) -> tuple[str, ...]:
    """An -A/-I rule argv as the matching -D (an -I's position number dropped)."""
    index, action = action_of(argv)
    assert action in ("-A", "-I"), argv
    rest = argv[index + 2:]
    if action == "-I" and rest and rest[0].isdigit():
        rest = rest[1:]
    return (*argv[:index], "-D", argv[index + 1], *rest)


def comment_of(argv: tuple[str, ...]) -> str | None:
    if "--comment" not in argv:
        return None
    return argv[argv.index("--comment") + 1]


def is_batch(step: Step) -> bool:
    return step.argv == ipt.RESTORE


def batch_argvs(step: Step) -> list[tuple[str, ...]]:
    """A restore step's input lines (one table's block or several) as the single iptables commands they stand
    for, in order; of a combined restore's undo (`sh -s`, a guarded restore per table), its restores' lines."""
    argvs, table = [], ""
    lines = step.stdin
    if step.argv == ("sh", "-s"):
        lines = tuple(line for line in lines if line.startswith(("*", "-")) or line == "COMMIT")
    assert lines[0].startswith("*") and lines[-1] == "COMMIT"
    assert len([line for line in lines if line.startswith("*")]) == lines.count("COMMIT")
    for line in lines:
        if line.startswith("*"):
            table = line[1:]
        elif line != "COMMIT":
            argvs.append((*ipt.IPTABLES, "-t", table, *line.split()))
    return argvs


def is_combined_undo(step: Step) -> bool:
    return step.argv == ("sh", "-s") and any(line.startswith("if iptables ") for line in step.stdin)


def restores(steps: list[Step]) -> list[Step]:
    """The iptables-restore batches of `steps`, also those a merged script runs (plan.batches)."""
    return [b for s in steps for b in script_batches(s) if is_batch(b)]


def iptables_argvs(plan: Plan) -> list[tuple[str, ...]]:
    """Every iptables command of the plan's steps (batches expanded, also inside merged scripts), in order."""
    found: list[tuple[str, ...]] = []
    for step in plan.steps:
        found += [a for b in restores([step]) for a in batch_argvs(b)] or (
            [step.argv] if is_iptables(step.argv) else [])
    return found


def all_argvs(plan: Plan) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for step in plan.steps:
        for one in (step, step.undo):
            if one is not None and (is_batch(one) or is_combined_undo(one)):
                found += batch_argvs(one)
        for argv in (step.argv, step.skip_if, step.only_if, step.undo.argv if step.undo else None):
            if argv:
                found.append(argv)
    return found


def rule_adds(plan: Plan) -> set[tuple[str, ...]]:
    return {a for a in iptables_argvs(plan) if action_of(a)[1] in ("-A", "-I")}


def rule_deletes(plan: Plan) -> set[tuple[str, ...]]:
    return {a for a in iptables_argvs(plan) if action_of(a)[1] == "-D"}


def chain_ops(plan: Plan, action: str) -> set[tuple[str, str]]:
    found = set()
    for argv in iptables_argvs(plan):
        index, act = action_of(argv)
        if act == action:
            found.add((argv[argv.index("-t") + 1], argv[index + 1]))
    return found


ALL_CASES = [pytest.param(n, id=k) for k, n in sorted(NETWORKS.items())]


# -- the tables, as iptables-save prints them (real output of iptables v1.8.9, nf_tables, in a fresh netns) ------
# network "web" made on an empty host, plus a foreign rule with a quoted comment in one of wrapdock's chains
SAVE_NORMAL = (Path(__file__).parent / "iptables-save" / "web-and-a-foreign-rule.txt").read_text()
# network "backend" (internal): iptables-save prints `-o backend ! -i backend` as `! -i backend -o backend`
SAVE_INTERNAL = (Path(__file__).parent / "iptables-save" / "backend-internal.txt").read_text()


def test_parse_save_reads_chains_and_rules_with_quoted_comments() -> None:
    tables = ipt.parse_save(SAVE_NORMAL)
    assert tables.has_chain("filter", ipt.ISO_IN_CHAIN) and tables.has_chain("nat", ipt.MASQ_CHAIN)
    assert tables.has_chain("filter", "FORWARD") and not tables.has_chain("nat", ipt.ISO_IN_CHAIN)
    owners = [owner for (table, chain, _), owner in tables.rules if chain == ipt.ISO_IN_CHAIN]
    assert owners == ["wrapdock:network=web", "not ours, with spaces"]
    assert len(tables.rules) == 16


def test_parse_save_compares_rules_as_sets_of_options() -> None:
    tables = ipt.parse_save(SAVE_INTERNAL)
    key = ("filter", ipt.ISOLATION_CHAIN,
           ipt.spec_key(["-o", "backend", "!", "-i", "backend", "-m", "comment", "--comment",
                         "wrapdock:network=backend", "-j", "DROP"]))
    assert tables.count(key) == 1
    assert ipt.spec_key(["!", "-i", "b", "-o", "b"]) == ipt.spec_key(["-o", "b", "!", "-i", "b"])
    assert ipt.spec_key(["!", "-i", "b", "-o", "b"]) != ipt.spec_key(["-i", "b", "!", "-o", "b"])


@pytest.mark.parametrize("network", ALL_CASES)
def test_what_create_adds_is_what_iptables_save_shows(network: Network) -> None:
    """The tables a create plan leaves (folded in Python) are the ones parsed from the real output."""
    real = ipt.parse_save(SAVE_NORMAL if network is NETWORKS["normal"] else SAVE_INTERNAL)
    if network is NETWORKS["mtu"]:
        return
    wanted = made(network)
    assert {k for k, _ in wanted.rules if k[0] == "filter"} == {k for k, o in real.rules
                                                               if k[0] == "filter" and o != "not ours, with spaces"}
    if network is NETWORKS["normal"]:
        assert sorted(wanted.rules) == sorted(r for r in real.rules if r[1] != "not ours, with spaces")
        assert {c for c in wanted.chains} == {c for c in real.chains if c[1].startswith("WRAPDOCK-")}


# -- create ------------------------------------------------------------------------------------
def _covered_by_link_del(step: Step, plan: Plan, bridge: str) -> bool:
    """`ip addr add ... dev BR` and `ip link set BR up` go away with the link; only if its add has the undo."""
    link_dies = any(s.undo is not None and s.undo.argv == ("ip", "link", "del", "dev", bridge) for s in plan.steps)
    argv = step.argv
    addr_on_bridge = argv[:3] == ("ip", "addr", "add") and argv[-2:] == ("dev", bridge)
    link_up = argv == ("ip", "link", "set", "dev", bridge, "up")
    link_sysctl = argv[:2] == ("sysctl", "-w") and argv[2].startswith(f"net/ipv4/conf/{bridge}/")
    return link_dies and (addr_on_bridge or link_up or link_sysctl)


@pytest.mark.parametrize("network", ALL_CASES)
def test_every_create_step_is_undone_or_covered(network: Network) -> None:
    plan = create(network)
    for step in plan.steps:
        assert step.undo is not None or _covered_by_link_del(step, plan, network.bridge), step_text(step)


@pytest.mark.parametrize("network", ALL_CASES)
def test_create_steps_are_in_a_safe_order(network: Network) -> None:
    plan = create(network)
    argvs = [s.argv for s in plan.steps]
    bridge = plan.steps[0]  # one batch: the bridge, its owner alias, the gateway address, up
    mtu = f" mtu {network.mtu}" if network.mtu else ""
    batch = (f"link add name {network.bridge}{mtu} type bridge",
             f"link set dev {network.bridge} alias wrapdock:network={network.name}",
             f"addr add {network.gateway_cidr} dev {network.bridge}",
             f"link set dev {network.bridge} up")
    assert bridge.partial
    if network.internal:
        assert (bridge.argv, bridge.stdin) == (("ip", "-batch", "-"), batch)
    else:  # with its route_localnet, in the same process
        assert bridge.argv == ("sh", "-s")
        assert bridge.stdin == ("set -e", "ip -batch - <<'WRAPDOCK_BATCH_EOF'", *batch, "WRAPDOCK_BATCH_EOF",
                                f"sysctl -w net/ipv4/conf/{network.bridge}/route_localnet=1")
    assert bridge.undo is not None and bridge.undo.argv == ("ip", "link", "del", "dev", network.bridge)
    assert bridge.undo.only_if == ("test", "-d", f"/sys/class/net/{network.bridge}/bridge")
    # a rule can only jump to a chain that was created before it (nat's chains are made before its rules
    # too, and a table's block of the batch is applied as a whole)
    created: set[str] = set()
    assert argvs
    for argv in iptables_argvs(plan):
        index, action = action_of(argv)
        if action == "-N":
            created.add(argv[index + 1])
        elif action in ("-A", "-I"):
            chain = argv[index + 1]
            target = argv[argv.index("-j") + 1]
            for needed in (chain, target):
                if needed.startswith("WRAPDOCK-"):
                    assert needed in created, f"{argv} uses {needed} before it exists"


@pytest.mark.parametrize("network", ALL_CASES)
def test_create_adds_are_restores_with_exact_undo(network: Network) -> None:
    """iptables-restore --noflush with the missing lines: the shared chains one table per restore, the network's
    own lines in one restore for all its tables; each undo deletes exactly those rules and the chains it created,
    in reverse (a combined restore's undo table by table, last first, each only if its block went in)."""
    steps = create(network).steps
    batches = [s for s in steps if is_batch(s)]
    own = ["*filter"] if network.internal else ["*filter", "*nat"]
    assert [s.stdin[0] for s in batches[:2]] == ["*filter", "*nat"]  # the shared chains first, then its own
    assert len(batches) == 3 and [line for line in batches[2].stdin if line.startswith("*")] == own
    assert not [s for s in steps if is_iptables(s.argv)]
    for step in batches:
        combined = step.skip_if is None  # the network's own lines (ipt.one_restore), one table or several
        assert step.partial is combined and step.undo is not None
        assert is_combined_undo(step.undo) if combined else is_batch(step.undo)
        assert not [line for line in step.stdin if line.startswith(":")], "a :CHAIN line would flush the chain"
        adds, undo = batch_argvs(step), batch_argvs(step.undo)
        tables = list(dict.fromkeys(a[3] for a in adds))
        expected = [as_delete(a) for table in reversed(tables) for a in reversed(adds)
                    if a[3] == table and action_of(a)[1] in ("-A", "-I")]
        assert [a for a in undo if action_of(a)[1] == "-D"] == expected
        made_chains = [(a[3], a[action_of(a)[0] + 1]) for a in adds if action_of(a)[1] == "-N"]
        dropped = [(a[3], a[action_of(a)[0] + 1]) for a in undo if action_of(a)[1] == "-X"]
        assert dropped == list(reversed(made_chains))


def test_a_combined_restores_undo_deletes_only_the_tables_whose_block_went_in() -> None:
    """iptables-restore commits table by table: filter's block may be in when nat's failed. The undo checks each
    table for its block's first line (a `-C` of that rule) and runs that table's deletions only then."""
    (step,) = [s for s in network_plans.create(NETWORKS["normal"], made(OTHER)).steps if is_batch(s)]
    assert step.undo is not None
    script = step.undo.stdin
    guards = [line for line in script if line.startswith("if ")]
    first_filter = next(line for line in step.stdin if line.startswith("-A WRAPDOCK-FORWARD"))
    first_nat = step.stdin[step.stdin.index("*nat") + 1]
    assert first_nat.startswith("-I WRAPDOCK-MASQ 1 ")
    assert guards == [
        f"if iptables -w -t nat -C {first_nat[3:].replace(' 1 ', ' ', 1)} >/dev/null 2>&1; then "
        "iptables-restore -w --noflush <<'WRAPDOCK_BATCH_EOF'",
        f"if iptables -w -t filter -C {first_filter[3:]} >/dev/null 2>&1; then "
        "iptables-restore -w --noflush <<'WRAPDOCK_BATCH_EOF'"]
    assert script[0] == "set -e" and script.count("fi") == 2


def test_a_live_create_beside_another_is_one_script_undone_rules_first_then_the_bridge() -> None:
    """The usual live create (chains there, forwarding on): the links, route_localnet and the one restore in
    one script (one process). It may stop anywhere: its undo is the restore's (each table only if its
    block went in), then the bridge, only if it is there."""
    network = NETWORKS["normal"]
    apart = network_plans.create(network, made(OTHER), forwarding=None).steps  # (a sysctl probe: apart)
    links, restore = [s for s in apart if s.argv[0] != "sysctl"]
    (script,) = network_plans.create(network, made(OTHER), forwarding=True).steps
    assert script.argv == ("sh", "-s") and script.partial
    assert script.stdin == ("set -e", *links.stdin[1:], *script_lines(restore))
    assert script.undo is not None and restore.undo is not None
    assert script.undo.stdin == ("set -e", *restore.undo.stdin[1:],
                                 "[ ! -d /sys/class/net/web/bridge ] || ip link del dev web")
    # a restore of one table (internal) has the same guarded undo: one script too
    assert len(network_plans.create(NETWORKS["internal"], made(OTHER), forwarding=True).steps) == 1


@pytest.mark.parametrize("network", ALL_CASES)
def test_create_adds_only_what_is_missing(network: Network) -> None:
    assert not [s for s in network_plans.create(network, made(network)).steps if is_batch(s)], "all there"
    beside = network_plans.create(network, made(OTHER))  # the shared chains and jumps are there
    assert not chain_ops(beside, "-N")
    tag = names.network_comment(network.name)
    assert {comment_of(a) for a in rule_adds(beside)} == {tag}
    assert rule_adds(beside) == {a for a in rule_adds(create(network)) if comment_of(a) == tag}


@pytest.mark.parametrize("network", ALL_CASES)
def test_create_on_a_bare_host_guards_the_shared_chains(network: Network) -> None:
    """Shared chains the read shows all missing come in a restore per table of their own, skipped if the table's
    first chain exists when it runs: a --print-only script stays safe where wrapdock made them since. The
    network's own restores then hold no `-N` and none of the shared rules."""
    for tables in (EMPTY, None):
        batches = [s for s in network_plans.create(network, tables).steps if is_batch(s)]
        guarded, own = batches[:2], batches[2:]
        assert [s.skip_if for s in guarded] == [("iptables", "-w", "-t", "filter", "-S", ipt.FORWARD_CHAIN),
                                                ("iptables", "-w", "-t", "nat", "-S", ipt.DNAT_CHAIN)]
        for step in guarded:
            assert {comment_of(a) for a in batch_argvs(step) if "-N" not in a} == {ipt.SKELETON_COMMENT}
            assert step.undo is not None and step.undo.skip_if is None
        assert made(network).chains == frozenset(ipt.after(EMPTY, guarded).chains)
        assert [s for s in own if s.skip_if is None] == own
        assert not [line for s in own for line in s.stdin if line.startswith("-N")]
        assert {comment_of(a) for s in own for a in batch_argvs(s)} == {names.network_comment(network.name)}
    script = step_text(batches[0])
    assert script.startswith(f"iptables -w -t filter -S {ipt.FORWARD_CHAIN} >/dev/null 2>&1 || iptables-restore")


@pytest.mark.parametrize("network", ALL_CASES)
def test_create_repairs_a_partly_missing_skeleton_unguarded(network: Network) -> None:
    """Some shared chains there, some not (a repair): exactly the missing lines, in the network's own restore."""
    full = made(OTHER)
    partial = ipt.Tables(full.chains - {("filter", ipt.ISO_IN_CHAIN)},
                         tuple((k, c) for k, c in full.rules if k[1] != ipt.ISO_IN_CHAIN))
    batches = restores(network_plans.create(network, partial).steps)
    assert [s.skip_if for s in batches] == [None] * len(batches)
    assert [line for s in batches for line in s.stdin if line.startswith("-N")] == [f"-N {ipt.ISO_IN_CHAIN}"]
    repaired, whole = ipt.after(partial, batches), made(OTHER, network)
    assert repaired is not None and repaired.chains == whole.chains
    lost = [(k, c) for k, c in full.rules if k[1] == ipt.ISO_IN_CHAIN and c != ipt.SKELETON_COMMENT]  # other's
    assert sorted(repaired.rules) == sorted(r for r in whole.rules if r not in lost)


def test_create_compares_rules_as_iptables_save_prints_them() -> None:
    """A rule present in iptables-save's order (`! -i b -o b` for `-o b ! -i b`, quoted comment) is not
    added again; the one missing rule is the only line of the restore."""
    network = NETWORKS["internal"]
    tables = ipt.parse_save(SAVE_INTERNAL.replace(
        '-A WRAPDOCK-ISO-IN -i backend -m comment --comment "wrapdock:network=backend" -j DROP\n', ""))
    (step,) = restores(network_plans.create(network, tables).steps)
    assert step.stdin == ("*filter", "-A WRAPDOCK-ISO-IN -i backend -m comment --comment wrapdock:network=backend "
                          "-j DROP", "COMMIT")


def test_mtu_only_when_asked() -> None:
    with_mtu = create(NETWORKS["mtu"]).steps[0].stdin[2]
    without = create(NETWORKS["normal"]).steps[0].stdin[2]
    assert with_mtu == "link add name br-jumbo mtu 9000 type bridge"
    assert "mtu" not in without


def forward_steps(plan: Plan) -> list[Step]:
    return [s for s in plan.steps if "net.ipv4.ip_forward=1" in s.argv]


def test_forwarding_switch_only_when_a_live_read_did_not_show_it_on() -> None:
    network = NETWORKS["normal"]
    assert forward_steps(network_plans.create(network, EMPTY, forwarding=True)) == []
    for forwarding in (False, None):  # off: switched, undone by a rollback; unknown (--print-only): checked first
        (step,) = forward_steps(network_plans.create(network, EMPTY, forwarding=forwarding))
        assert step.skip_if == ("grep", "-qx", "1", "/proc/sys/net/ipv4/ip_forward")
        assert step.undo is not None and step.undo.argv == ("sysctl", "-w", "net.ipv4.ip_forward=0")


def test_internal_network_has_no_nat_and_no_forwarding_switch() -> None:
    network = NETWORKS["internal"]
    plan = create(network)
    tag = names.network_comment(network.name)
    own = [a for a in rule_adds(plan) if comment_of(a) == tag]
    assert own
    assert not [a for a in own if "nat" in a]
    assert not [s for s in plan.steps if s.argv[0] == "sysctl"]
    drops = [a for a in own if a[-2:] == ("-j", "DROP")]
    # two DROPs keep its traffic on the bridge; the ISO-OUT/ISO-IN pair every network has serves --isolated ones
    assert len([a for a in drops if ipt.ISOLATION_CHAIN in a]) == 2
    assert len([a for a in drops if ipt.ISO_OUT_CHAIN in a or ipt.ISO_IN_CHAIN in a]) == 2
    assert not [a for a in own if a[-2:] == ("-j", "ACCEPT") and ("!", "-o") in itertools.pairwise(a)]


def test_normal_network_masquerades_its_subnet() -> None:
    network = NETWORKS["normal"]
    plan = create(network)
    adds = rule_adds(plan)
    assert any(("-s", str(network.subnet)) == a[i:i + 2] and a[-2:] == ("-j", ipt.MASQ_CHAIN)
               for a in adds for i in range(len(a)))
    sysctl = [s for s in plan.steps if s.argv[0] == "sysctl" and "ip_forward" in s.argv[2]]
    assert len(sysctl) == 1
    assert sysctl[0].skip_if is not None and sysctl[0].undo is not None


# -- remove ------------------------------------------------------------------------------------
@pytest.mark.parametrize("last", [True, False])
@pytest.mark.parametrize("network", ALL_CASES)
def test_every_remove_step_is_guarded_or_exact(network: Network, last: bool) -> None:
    plan = remove(network, last=last)
    assert plan.steps
    for step in plan.steps:
        if is_batch(step):  # deletes only what the tables showed; its undo re-adds exactly that, in reverse
            assert step.undo is not None and step.undo.stdin[0] == step.stdin[0]
            deletes = [a for a in batch_argvs(step) if action_of(a)[1] == "-D"]
            re_adds = [as_delete(a) for a in batch_argvs(step.undo) if action_of(a)[1] in ("-A", "-I")]
            assert re_adds == list(reversed(deletes))
        else:
            assert step.only_if is not None and step.undo is None, step_text(step)
        assert step.skip_if is None


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_guards_probe_the_thing_they_delete(network: Network) -> None:
    for step in remove(network, last=True).steps:
        if is_batch(step):
            assert {action_of(a)[1] for a in batch_argvs(step)} <= {"-D", "-X"}
        else:
            assert step.only_if is not None
            assert step.argv == ("ip", "link", "del", "dev", network.bridge)
            assert step.only_if == ("test", "-d", f"/sys/class/net/{network.bridge}/bridge")


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_deletes_only_what_is_there(network: Network) -> None:
    assert not [s for s in network_plans.remove(network, True, EMPTY).steps if is_batch(s)]
    gone = made(OTHER)  # the chains are there, the network's rules are not: the chains still go
    assert not rule_deletes(network_plans.remove(network, False, gone))


@pytest.mark.parametrize("foreign", [f'-A {ipt.ISO_IN_CHAIN} -i eth9 -m comment --comment "not ours" -j DROP',
                                     f"-A INPUT -j {ipt.FORWARD_CHAIN}"], ids=["in-a-chain", "jumps-to-one"])
@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_last_keeps_the_chains_while_anything_else_is_in_them(network: Network, foreign: str) -> None:
    plan = network_plans.remove(network, True, made(network).edited("filter", foreign))
    assert not chain_ops(plan, "-X")
    assert rule_deletes(plan) == {as_delete(a) for a in rule_adds(create(network))
                                  if comment_of(a) == names.network_comment(network.name)}


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_last_deletes_exactly_what_create_adds(network: Network) -> None:
    made_plan = create(network)
    removal = remove(network, last=True)
    assert {as_delete(a) for a in rule_adds(made_plan)} == rule_deletes(removal)
    assert chain_ops(made_plan, "-N") == chain_ops(removal, "-X")
    delete_steps = [a for a in iptables_argvs(removal) if action_of(a)[1] == "-D"]
    assert len(delete_steps) == len(set(delete_steps)), "a rule is deleted twice"


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_not_last_deletes_exactly_the_networks_own_rules(network: Network) -> None:
    made_plan = create(network)
    removal = remove(network, last=False)
    tag = names.network_comment(network.name)
    own = {as_delete(a) for a in rule_adds(made_plan) if comment_of(a) == tag}
    assert own
    assert rule_deletes(removal) == own
    assert not chain_ops(removal, "-X")


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_last_deletes_chains_after_their_rules(network: Network) -> None:
    argvs = iptables_argvs(remove(network, last=True))
    for table in ("filter", "nat"):
        mine = [a for a in argvs if a[3] == table]
        first_chain_delete = min(i for i, a in enumerate(mine) if "-X" in a)
        last_rule_delete = max(i for i, a in enumerate(mine) if "-D" in a)
        assert last_rule_delete < first_chain_delete


def test_remove_plans_of_two_networks_never_touch_each_others_rules() -> None:
    a, b = NETWORKS["normal"], NETWORKS["mtu"]
    deletes_a = rule_deletes(remove(a, last=False))
    adds_b = {as_delete(x) for x in rule_adds(create(b))}
    shared = deletes_a & adds_b
    assert not shared


# -- names and comments --------------------------------------------------------------------------
@pytest.mark.parametrize("network", ALL_CASES)
def test_rules_carry_owner_comment(network: Network) -> None:
    tag = names.network_comment(network.name)
    assert tag == f"wrapdock:network={network.name}"
    plans = [create(network), remove(network, last=True)]
    own = 0
    for plan in plans:
        for argv in all_argvs(plan):
            if not is_iptables(argv) or action_of(argv)[1] not in ("-A", "-I", "-D", "-C"):
                continue
            comment = comment_of(argv)
            index = action_of(argv)[0]
            chain, target = argv[index + 1], argv[argv.index("-j") + 1]
            if comment == names.COMMENT_PREFIX:
                # the shared skeleton: only the fixed jumps into wrapdock's chains and the final MASQUERADE
                assert target.startswith("WRAPDOCK-") or (chain, target) == (ipt.MASQ_CHAIN, "MASQUERADE")
            else:
                assert comment == tag, argv
                own += 1
            # the comment comes before the target, so `-C`/`-D` match what `-A` added
            assert argv.index("--comment") < argv.index("-j")
    assert own > 0


@pytest.mark.parametrize("network", ALL_CASES)
def test_chain_names_fit_iptables(network: Network) -> None:
    chains = set()
    for plan in (create(network), remove(network, last=True)):
        for argv in all_argvs(plan):
            if is_iptables(argv):
                index, _ = action_of(argv)
                chains.add(argv[index + 1])
                if "-j" in argv:
                    chains.add(argv[argv.index("-j") + 1])
    assert {c for c in chains if c.startswith("WRAPDOCK")} == {
        ipt.FORWARD_CHAIN, ipt.ISOLATION_CHAIN, ipt.ISO_OUT_CHAIN, ipt.ISO_IN_CHAIN, ipt.DNAT_CHAIN,
        ipt.POSTROUTING_CHAIN, ipt.MASQ_CHAIN}
    for chain in chains:
        assert len(chain) <= names.CHAIN_MAX, chain


def test_check_chain_refuses_long_names() -> None:
    assert names.check_chain("X" * 28) == "X" * 28
    with pytest.raises(ValueError):
        names.check_chain("X" * 29)


def test_rule_needs_a_target() -> None:
    with pytest.raises(ValueError):
        ipt.rule("filter", "FORWARD", "-i", "x", comment="c")


def test_after_applies_a_delete_by_comment() -> None:
    """A printed script's later plans see a container's rules gone once its delete_by_comment step ran (in the
    tables it names only): a lab script's `down` then removes the shared chains after the last network."""
    owner = "wrapdock:container=x"
    tables = ipt.from_rules([("nat", ipt.DNAT_CHAIN), ("filter", ipt.FORWARD_CHAIN)],
                            [("nat", ipt.DNAT_CHAIN, ["-m", "comment", "--comment", owner, "-j", "DNAT"]),
                             ("filter", ipt.FORWARD_CHAIN, ["-m", "comment", "--comment", owner, "-j", "ACCEPT"])])
    left = ipt.after(tables, [ipt.delete_by_comment(owner, "n", tables=("nat",))])
    assert left is not None and [k[0] for k, _ in left.rules] == ["filter"]


@pytest.mark.parametrize("network", ALL_CASES)
def test_the_tables_after_a_merged_create_hold_its_rules(network: Network) -> None:
    """A live create beside another network is one script; the tables planned after it (a lab's down, a
    --print-only session's next plan, gc's next repair) still hold the rules that script adds."""
    beside = made(OTHER)
    (script,) = network_plans.create(network, beside, forwarding=True).steps
    assert script.argv == ("sh", "-s")
    apart = [s for s in network_plans.create(network, beside, forwarding=None).steps if s.argv[0] != "sysctl"]
    merged, separate = ipt.after(beside, [script]), ipt.after(beside, apart)
    assert merged is not None and separate is not None
    assert sorted(merged.rules) == sorted(separate.rules) and len(merged.rules) > len(beside.rules)
    assert [b.argv[0] for b in script_batches(script)] == ["ip", "iptables-restore"]  # the links, the rules
