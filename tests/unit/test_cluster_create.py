"""A cluster network's create decides its subnet and VNI checks inside the claim: the claim's txn
requires the last-created key unchanged since the read the checks decided on, so of two creates
decided on one read only one claim succeeds; the other reads again and decides again (here: the
subnets overlap, one clear error, nothing changed). No etcd, no root: a small etcd double that
interprets the txn lines wrapdock prints (the compares it uses, put, del, get), two hosts' sessions
against it, and golden files for the plans.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from tests.unit.test_plans_network import check_golden, plan_text
from wrapdock import cluster, hostinfo, netspec
from wrapdock import clusterstore as cs
from wrapdock.errors import OperationFailed, UsageError
from wrapdock.runner import Result, Runner, Trail
from wrapdock.session import Session

URL = "etcd://198.51.100.1:2379"
VTEPS = {"a": "198.51.100.11", "b": "198.51.100.12"}
_COMPARE = re.compile(r'^(\w+)\("([^"]+)"\) (=|!=|<|>) (".*")$')


@dataclass
class FakeEtcd:
    """Keys with their mod revisions; answers `get --prefix -w json` and `txn` as etcdctl 3.4 does
    (first line SUCCESS/FAILURE, exit 0 either way). `before_txn` runs once before the next txn."""

    data: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # key -> (value, create rev, mod rev)
    revision: int = 1
    before_txn: Callable[[], None] | None = None
    txns: list[str] = field(default_factory=list)

    def get(self, prefix: str) -> str:
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        kvs = [{"key": b64(k), "create_revision": c, "mod_revision": m, "version": 1, "value": b64(v)}
               for k, (v, c, m) in sorted(self.data.items()) if k.startswith(prefix)]
        return json.dumps({"header": {"revision": self.revision}, "kvs": kvs, "count": len(kvs)})

    def _holds(self, line: str) -> bool:
        target, key, op, quoted = _COMPARE.match(line).groups()  # type: ignore[union-attr]
        wanted = json.loads(quoted)
        value, created, modified = self.data.get(key, (None, 0, 0))
        if target == "value":
            have: object = value
        else:
            have = {"create": created, "mod": modified, "version": int(value is not None)}[target]
            wanted = int(wanted)
        return {"=": have == wanted, "!=": have != wanted, ">": value is not None and have > wanted,
                "<": have < wanted}[op]

    def txn(self, stdin: str) -> str:
        if self.before_txn is not None:
            hook, self.before_txn = self.before_txn, None
            hook()
        self.txns.append(stdin)
        compares, success, failure = (part.splitlines() for part in stdin.split("\n\n")[:3])
        ok = all(self._holds(line) for line in compares)
        self.revision += 1
        out = []
        for op in success if ok else failure:
            words = shlex.split(op)
            if words[0] == "put":
                created = self.data.get(words[1], (None, self.revision, 0))[1]
                self.data[words[1]] = (words[2], created, self.revision)
                out.append("OK")
            elif words[0] == "del":
                out.append(str(int(self.data.pop(words[1], None) is not None)))
            else:
                out += [words[1], self.data[words[1]][0]] if words[1] in self.data else []
        return "\n".join(["SUCCESS" if ok else "FAILURE", "", *out]) + "\n"

    def values(self) -> dict[str, str]:
        return {k: v for k, (v, _c, _m) in self.data.items()}


@dataclass
class FakeClusterHost:
    """One host: its underlay interface, etcdctl against the shared FakeEtcd, every other command exits 0."""

    etcd: FakeEtcd
    vtep: str
    changes: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], stdin: str | None) -> Result:
        argv = tuple(argv)
        out = ""
        if hostinfo.is_host_query(argv, stdin):  # the links and addresses, the routes, forwarding, no iptables
            out = hostinfo.host_answer(json.dumps([{"ifname": "eth0", "mtu": 1500, "addr_info": [
                {"family": "inet", "local": self.vtep, "prefixlen": 24}]}]), json.dumps(
                [{"dst": "default", "dev": "eth0"}, {"dst": "198.51.100.0/24", "dev": "eth0"}]))
        elif "etcdctl" in argv and "get" in argv:
            out = self.etcd.get(argv[argv.index("--prefix") + 1])
        elif "etcdctl" in argv and argv[-1] == "txn":
            self.changes.append(argv)
            out = self.etcd.txn(stdin or "")
        elif argv[0] not in ("iptables-save",):
            self.changes.append(argv)
        return Result(argv, 0, out, "", 0.001)


def host_session(tmp_path, name: str, etcd: FakeEtcd, print_only: bool = False) -> tuple[Session, FakeClusterHost]:
    session = Session(state_dir=tmp_path / name / "state", data_dir=tmp_path / name / "data", trail_mode="quiet",
                      print_only=print_only, cluster=cs.parse_url(URL))
    host = FakeClusterHost(etcd, VTEPS[name])
    session.runner = Runner(Trail("quiet"), execute=host)  # type: ignore[misc]
    return session, host


def request(name: str, subnet: str, vni: int) -> netspec.NetworkRequest:
    return netspec.NetworkRequest(name=name, subnet=subnet, driver="vxlan", vni=vni, vtep=None)


@pytest.fixture(autouse=True)
def _as_root_without_tls(monkeypatch) -> None:
    monkeypatch.setattr(Session, "require_root", lambda self: None)
    monkeypatch.setenv("WRAPDOCK_HOSTNAME", "h")
    for variable in cs.TLS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def test_two_creates_decided_on_one_read_only_one_claim_wins_the_other_reads_again(tmp_path) -> None:
    etcd = FakeEtcd()
    one, _ = host_session(tmp_path, "a", etcd)
    two, two_host = host_session(tmp_path, "b", etcd)
    # host a's whole create lands between host b's read and host b's claim
    etcd.before_txn = lambda: cluster.create(one, request("blue", "10.210.0.0/16", 42))
    with pytest.raises(UsageError, match=r"subnet 10.210.128.0/17 overlaps subnet 10.210.0.0/16 of cluster "
                                         r"network 'blue'"):
        cluster.create(two, request("green", "10.210.128.0/17", 43))
    # b's one claim failed on the last-created key (its own keys were all free) and changed nothing
    assert [argv[-1] for argv in two_host.changes] == ["txn"]
    assert 'mod("/wrapdock/v1/last-created") = "0"' in etcd.txns[-1]
    assert sorted(etcd.values()) == ["/wrapdock/v1/last-created", "/wrapdock/v1/networks/blue/config",
                                     "/wrapdock/v1/networks/blue/hosts/198.51.100.11",
                                     "/wrapdock/v1/networks/blue/ranges/10.210.11.0-24", "/wrapdock/v1/vnis/42"]
    assert etcd.values()["/wrapdock/v1/last-created"] == "blue"
    assert list(two.state.all("network")) == [] and len(list(one.state.all("network"))) == 1


def test_a_create_that_lost_to_a_disjoint_one_decides_again_and_succeeds(tmp_path) -> None:
    etcd = FakeEtcd()
    one, _ = host_session(tmp_path, "a", etcd)
    two, _ = host_session(tmp_path, "b", etcd)
    etcd.before_txn = lambda: cluster.create(one, request("blue", "10.210.0.0/16", 42))
    cluster.create(two, request("green", "10.211.0.0/16", 43))
    assert etcd.values()["/wrapdock/v1/last-created"] == "green"
    assert sum("green/config" in t for t in etcd.txns) == 2  # its claim, then again after a fresh read


def test_a_create_that_keeps_losing_gives_up_after_three_reads_in_one_line(tmp_path) -> None:
    etcd = FakeEtcd()
    two, two_host = host_session(tmp_path, "b", etcd)
    others = iter(range(3))

    def another() -> None:  # before each of b's claims, some other network is created elsewhere
        n = next(others)
        etcd.data["/wrapdock/v1/last-created"] = (f"x{n}", etcd.revision, etcd.revision)
        etcd.revision += 1
        if n < 2:
            etcd.before_txn = another

    etcd.before_txn = another
    with pytest.raises(OperationFailed) as failed:
        cluster.create(two, request("green", "10.211.0.0/16", 43))
    assert "other cluster networks were created while this host checked VNI and subnet (3 times)" in \
        failed.value.message and "nothing was changed" in failed.value.message
    assert [argv[-1] for argv in two_host.changes] == ["txn"] * 3
    assert sorted(etcd.values()) == ["/wrapdock/v1/last-created"] and list(two.state.all("network")) == []


def test_create_and_last_leave_plans_golden(tmp_path) -> None:
    """The create's claim carries the fence (compare and put of the last-created key; its undo deletes
    that key only while it names this network); the last host's leave deletes it likewise."""
    etcd = FakeEtcd()
    one, _ = host_session(tmp_path, "a", etcd)
    cluster.create(one, request("blue", "10.210.0.0/16", 42))
    printing, _ = host_session(tmp_path, "b", etcd, print_only=True)
    cluster.create(printing, request("green", "10.211.0.0/16", 43))
    claim = printing.printed[0].steps[0]
    assert claim.argv[-1] == "txn" and claim.undo is not None
    created_revision = etcd.data["/wrapdock/v1/last-created"][2]
    assert f'mod("/wrapdock/v1/last-created") = "{created_revision}"' in claim.stdin
    leaving, _ = host_session(tmp_path, "a", etcd, print_only=True)
    cluster.leave(leaving, "blue", force=False)
    release = leaving.printed[0].steps[-1]
    assert release.undo is not None
    steps = [claim, claim.undo, release, release.undo]
    check_golden("cluster-create-claim-and-last-release.txt", "".join(
        plan_text(type(printing.printed[0])("", [s])) for s in steps))
    # the last-created key names the network: leave deletes it with the definition
    live, _ = host_session(tmp_path, "a", etcd)
    cluster.leave(live, "blue", force=False)
    assert etcd.values() == {}


def test_a_release_keeps_the_last_created_key_of_another_network(tmp_path) -> None:
    etcd = FakeEtcd()
    one, _ = host_session(tmp_path, "a", etcd)
    two, _ = host_session(tmp_path, "b", etcd)
    cluster.create(one, request("blue", "10.210.0.0/16", 42))
    cluster.create(two, request("green", "10.211.0.0/16", 43))
    cluster.leave(one, "blue", force=False)
    assert sorted(etcd.values()) == ["/wrapdock/v1/last-created", "/wrapdock/v1/networks/green/config",
                                     "/wrapdock/v1/networks/green/hosts/198.51.100.12",
                                     "/wrapdock/v1/networks/green/ranges/10.211.12.0-24", "/wrapdock/v1/vnis/43"]
    cluster.leave(two, "green", force=False)
    assert etcd.values() == {}


def test_a_join_whose_range_was_taken_meanwhile_claims_another_from_a_fresh_read(tmp_path) -> None:
    etcd = FakeEtcd()
    one, _ = host_session(tmp_path, "a", etcd)
    cluster.create(one, request("blue", "10.210.0.0/16", 42))
    two, two_host = host_session(tmp_path, "b", etcd)
    taken = cs.range_key("blue", "10.210.12.0/24")  # the range b derives from its VTEP, taken after b's read

    def someone_else() -> None:
        etcd.data[taken] = ("198.51.100.99", etcd.revision, etcd.revision)
        etcd.revision += 1

    etcd.before_txn = someone_else
    network = cluster.join(two, "blue", None)
    assert network.vxlan is not None and str(network.vxlan.host_range) == "10.210.0.0/24"  # the first free one
    assert [argv[-1] for argv in two_host.changes[:2]] == ["txn", "txn"]  # the lost claim, then the new one
    assert etcd.values()[taken] == "198.51.100.99"
    assert etcd.values()[cs.range_key("blue", "10.210.0.0/24")] == VTEPS["b"]
