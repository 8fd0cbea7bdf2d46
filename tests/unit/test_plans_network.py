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
from wrapdock.plan import Plan, Step
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

PLANS = {
    "create": lambda n: network_plans.create(n),
    "remove-last": lambda n: network_plans.remove(n, last=True),
    "remove-not-last": lambda n: network_plans.remove(n, last=False),
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
    return step.argv[0] == "awk" and step.argv[-1] == ipt.BATCH_PROGRAM.strip()


def batch_argvs(step: Step) -> list[tuple[str, ...]]:
    """A batch step's input lines as the single iptables commands they stand for, in order."""
    argvs, table = [], ""
    for line in step.stdin:
        if line.startswith("*"):
            table = line[1:]
        elif line != "COMMIT":
            argvs.append((*ipt.IPTABLES, "-t", table, *line.split()))
    return argvs


def iptables_argvs(plan: Plan) -> list[tuple[str, ...]]:
    """Every iptables command of the plan's steps (batches expanded), in order."""
    found: list[tuple[str, ...]] = []
    for step in plan.steps:
        found += batch_argvs(step) if is_batch(step) else [step.argv] if is_iptables(step.argv) else []
    return found


def all_argvs(plan: Plan) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for step in plan.steps:
        for one in (step, step.undo):
            if one is not None and is_batch(one):
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
    plan = network_plans.create(network)
    for step in plan.steps:
        assert step.undo is not None or _covered_by_link_del(step, plan, network.bridge), step_text(step)


@pytest.mark.parametrize("network", ALL_CASES)
def test_create_steps_are_in_a_safe_order(network: Network) -> None:
    plan = network_plans.create(network)
    argvs = [s.argv for s in plan.steps]
    bridge = plan.steps[0]  # one batch: the bridge, its owner alias, the gateway address, up
    mtu = f" mtu {network.mtu}" if network.mtu else ""
    assert bridge.argv == ("ip", "-batch", "-") and bridge.partial
    assert bridge.stdin == (f"link add name {network.bridge}{mtu} type bridge",
                            f"link set dev {network.bridge} alias wrapdock:network={network.name}",
                            f"addr add {network.gateway_cidr} dev {network.bridge}",
                            f"link set dev {network.bridge} up")
    assert bridge.undo is not None and bridge.undo.argv == ("ip", "link", "del", "dev", network.bridge)
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
def test_create_adds_are_ensures_with_exact_undo(network: Network) -> None:
    """The iptables adds are one batch decided at run time (only what is missing is added); its undo deletes
    exactly those rules, and the shared chains only if nothing else is left in them."""
    batches = [s for s in network_plans.create(network).steps if is_batch(s)]
    assert len(batches) == 1 and not [s for s in network_plans.create(network).steps if is_iptables(s.argv)]
    (step,) = batches
    assert "mode=exact" in step.argv and step.partial
    assert step.undo is not None and is_batch(step.undo) and "mode=if-unused" in step.undo.argv
    adds = batch_argvs(step)
    undo = batch_argvs(step.undo)
    expected_deletes = [as_delete(a) for a in adds if action_of(a)[1] in ("-A", "-I")]
    assert sorted(a for a in undo if action_of(a)[1] == "-D") == sorted(expected_deletes)
    made = [(a[3], a[action_of(a)[0] + 1]) for a in adds if action_of(a)[1] == "-N"]
    dropped = [(a[3], a[action_of(a)[0] + 1]) for a in undo if action_of(a)[1] == "-X"]
    assert sorted(made) == sorted(dropped)


def test_mtu_only_when_asked() -> None:
    with_mtu = network_plans.create(NETWORKS["mtu"]).steps[0].stdin[0]
    without = network_plans.create(NETWORKS["normal"]).steps[0].stdin[0]
    assert with_mtu == "link add name br-jumbo mtu 9000 type bridge"
    assert "mtu" not in without


def test_internal_network_has_no_nat_and_no_forwarding_switch() -> None:
    network = NETWORKS["internal"]
    plan = network_plans.create(network)
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
    plan = network_plans.create(network)
    adds = rule_adds(plan)
    assert any(("-s", str(network.subnet)) == a[i:i + 2] and a[-2:] == ("-j", ipt.MASQ_CHAIN)
               for a in adds for i in range(len(a)))
    sysctl = [s for s in plan.steps if s.argv[0] == "sysctl" and "ip_forward" in s.argv[2]]
    assert len(sysctl) == 1
    assert sysctl[0].skip_if is not None and sysctl[0].undo is not None


# -- remove ------------------------------------------------------------------------------------
@pytest.mark.parametrize("last", [True, False])
@pytest.mark.parametrize("network", ALL_CASES)
def test_every_remove_step_is_guarded(network: Network, last: bool) -> None:
    plan = network_plans.remove(network, last=last)
    assert plan.steps
    for step in plan.steps:
        # a guarded delete, or a batch that deletes only what it finds when it runs
        assert (step.only_if is not None or (is_batch(step) and "mode=exact" in step.argv)), step_text(step)
        assert step.skip_if is None and step.undo is None


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_guards_probe_the_thing_they_delete(network: Network) -> None:
    for step in network_plans.remove(network, last=True).steps:
        if is_batch(step):
            assert {action_of(a)[1] for a in batch_argvs(step)} <= {"-D", "-X"}
        else:
            assert step.only_if is not None
            assert step.argv == ("ip", "link", "del", "dev", network.bridge)
            assert step.only_if == ("test", "-d", f"/sys/class/net/{network.bridge}/bridge")


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_last_deletes_exactly_what_create_adds(network: Network) -> None:
    create = network_plans.create(network)
    remove = network_plans.remove(network, last=True)
    assert {as_delete(a) for a in rule_adds(create)} == rule_deletes(remove)
    assert chain_ops(create, "-N") == chain_ops(remove, "-X")
    delete_steps = [a for a in iptables_argvs(remove) if action_of(a)[1] == "-D"]
    assert len(delete_steps) == len(set(delete_steps)), "a rule is deleted twice"


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_not_last_deletes_exactly_the_networks_own_rules(network: Network) -> None:
    create = network_plans.create(network)
    remove = network_plans.remove(network, last=False)
    tag = names.network_comment(network.name)
    own = {as_delete(a) for a in rule_adds(create) if comment_of(a) == tag}
    assert own
    assert rule_deletes(remove) == own
    assert not chain_ops(remove, "-X")


@pytest.mark.parametrize("network", ALL_CASES)
def test_remove_last_deletes_chains_after_their_rules(network: Network) -> None:
    argvs = iptables_argvs(network_plans.remove(network, last=True))
    for table in ("filter", "nat"):
        mine = [a for a in argvs if a[3] == table]
        first_chain_delete = min(i for i, a in enumerate(mine) if "-X" in a)
        last_rule_delete = max(i for i, a in enumerate(mine) if "-D" in a)
        assert last_rule_delete < first_chain_delete


def test_remove_plans_of_two_networks_never_touch_each_others_rules() -> None:
    a, b = NETWORKS["normal"], NETWORKS["mtu"]
    deletes_a = rule_deletes(network_plans.remove(a, last=False))
    adds_b = {as_delete(x) for x in rule_adds(network_plans.create(b))}
    shared = deletes_a & adds_b
    assert not shared


# -- names and comments --------------------------------------------------------------------------
@pytest.mark.parametrize("network", ALL_CASES)
def test_rules_carry_owner_comment(network: Network) -> None:
    tag = names.network_comment(network.name)
    assert tag == f"wrapdock:network={network.name}"
    plans = [network_plans.create(network), network_plans.remove(network, last=True)]
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
    for plan in (network_plans.create(network), network_plans.remove(network, last=True)):
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
