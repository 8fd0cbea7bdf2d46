"""The cluster store: the --cluster URL, the key layout, the etcdctl command lines (golden files), the
parsing of `get -w json` and the txn verdict (`etcdctl txn` exits 0 on FAILURE too). No etcd, no root.

Regenerate the golden files after an intended change with WRAPDOCK_UPDATE_GOLDEN=1, then review them.
"""

from __future__ import annotations

import base64
import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from tests.unit.fakes import FakeHost
from tests.unit.test_plans_network import check_golden, plan_text
from wrapdock import clusterstore as cs
from wrapdock.cluster import Definition, HostRecord, View, free_range
from wrapdock.errors import UsageError
from wrapdock.plan import Plan
from wrapdock.runner import CommandFailed, Runner, Trail

STORE = cs.EtcdStore(cs.parse_url("etcd://198.51.100.1:2379,198.51.100.2:2379"))


@pytest.fixture(autouse=True)
def _no_tls(monkeypatch):
    for name in cs.TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_urls() -> None:
    cluster = cs.parse_url("etcd://198.51.100.1:2379,198.51.100.2:2379,198.51.100.1:2379")
    assert cluster.endpoints == ("198.51.100.1:2379", "198.51.100.2:2379")
    assert cluster.url == "etcd://198.51.100.1:2379,198.51.100.2:2379"
    assert cluster.etcdctl("get", "k")[:2] == ("etcdctl", "--endpoints=http://198.51.100.1:2379,http://198.51.100.2:2379")


def test_tls_comes_from_etcdctls_own_variables(monkeypatch) -> None:
    monkeypatch.setenv("ETCDCTL_CACERT", "/etc/ca.pem")
    assert cs.parse_url("etcd://198.51.100.1:2379").etcdctl()[1] == "--endpoints=https://198.51.100.1:2379"


@pytest.mark.parametrize("bad", ["198.51.100.1:2379", "http://198.51.100.1:2379", "etcd://", "etcd://host:2379",
                                 "etcd://198.51.100.1", "etcd://198.51.100.1:0", "etcd://198.51.100.1:99999",
                                 "etcd://300.1.1.1:2379", "etcd://198.51.100.1:2379;reboot",
                                 "etcd://198.51.100.1:2379,", "etcd://198.51.100.1:2379 x"])
def test_bad_urls_are_one_clear_error(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid --cluster"):
        cs.parse_url(bad)


def test_key_layout() -> None:
    assert cs.config_key("ov") == "/wrapdock/v1/networks/ov/config"
    assert cs.host_key("ov", IPv4Address("198.51.100.11")) == "/wrapdock/v1/networks/ov/hosts/198.51.100.11"
    assert cs.range_key("ov", "10.210.11.0/24") == "/wrapdock/v1/networks/ov/ranges/10.210.11.0-24"
    assert cs.name_key("ov", "web") == "/wrapdock/v1/networks/ov/names/web"
    assert cs.vni_key(42) == "/wrapdock/v1/vnis/42"
    assert cs.LAST_CREATED_KEY == "/wrapdock/v1/last-created"


def test_claim_release_put_golden() -> None:
    values = {cs.range_key("ov", "10.210.11.0/24"): "198.51.100.11",
              cs.host_key("ov", "198.51.100.11"): cs.encode({"vtep": "198.51.100.11", "hostname": "a b\"c"})}
    claim = STORE.claim(values, "claim", require=[cs.config_key("ov")])
    release = STORE.release(values, "release")
    put = STORE.put(cs.name_key("ov", "web"), "x", "name", previous=None)
    steps = [claim, claim.undo, release, release.undo, put, put.undo]
    check_golden("cluster-store-steps.txt", plan_text(Plan("store", steps)))  # type: ignore[arg-type]
    assert claim.answers == "SUCCESS" and "| sed -n 1p | grep -x SUCCESS >/dev/null" in plan_text(Plan("", [claim]))
    assert claim.argv[:2] == ("timeout", cs.TXN_TIMEOUT)  # txn ignores --command-timeout


def test_get_json_is_parsed() -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    text = json.dumps({"header": {"revision": 5}, "kvs": [{"key": b64("/a"), "value": b64('{"x":1}')},
                                                          {"key": b64("/b")}]})
    assert cs.parse_get(text) == {"/a": '{"x":1}', "/b": ""}
    revisions = json.dumps({"kvs": [{"key": b64("/a"), "mod_revision": 7, "value": b64("x")}]})
    assert cs.parse_revisions(revisions) == {"/a": 7} and cs.parse_revisions("") == {}
    assert cs.parse_get(json.dumps({"header": {}})) == {}


def runner(stdout: str) -> tuple[Runner, FakeHost]:
    host = FakeHost()
    claim = STORE.claim({"/k": "v"}, "claim")
    host.outputs[claim.argv] = stdout
    return Runner(Trail("quiet"), execute=host), host


def test_a_txn_that_answers_failure_fails_its_step_and_rolls_back() -> None:
    run, host = runner("FAILURE\n\n/k\nother\n")
    first = STORE.put("/before", "1", "put", previous=None)
    with pytest.raises(CommandFailed) as failed:
        run.apply(Plan("p", [first, STORE.claim({"/k": "v"}, "claim")]))
    assert "it answered FAILURE, not SUCCESS: /k other" in failed.value.message
    assert host.argvs[-1] == first.undo.argv  # the put before it is undone
    ok, _ = runner("SUCCESS\n\nOK\n")
    assert len(ok.apply(Plan("p", [STORE.claim({"/k": "v"}, "claim")]))) == 1


def test_views_and_ranges() -> None:
    definition = Definition("ov", IPv4Network("10.210.0.0/16"), 42, 4789, 24, None)
    assert Definition.from_value(definition.to_value()) == definition
    me = HostRecord(IPv4Address("198.51.100.11"), "02:ff:c6:33:64:0b", "h1", IPv4Network("10.210.11.0/24"))
    view = View("ov", {cs.config_key("ov"): definition.to_value(), cs.host_key("ov", me.vtep): me.to_value(),
                       cs.range_key("ov", "10.210.11.0/24"): str(me.vtep),
                       cs.name_key("ov", "web"): cs.encode({"address": "10.210.11.2", "host": str(me.vtep)}),
                       cs.name_key("ov", "db"): cs.encode({"address": "10.210.12.2", "host": "198.51.100.12"})}, "ov")
    assert list(view.hosts) == [me.vtep] and view.definition == definition
    assert sorted(view.owned_by(me.vtep)) == sorted([cs.host_key("ov", me.vtep), cs.range_key("ov", "10.210.11.0/24"),
                                                    cs.name_key("ov", "web")])
    assert sorted(view.definition_keys()) == [cs.config_key("ov"), cs.vni_key(42)]
    # the range derived from the VTEP address if free, else the first free one
    assert free_range(definition, set(), me.vtep) == IPv4Network("10.210.11.0/24")
    assert free_range(definition, {IPv4Network("10.210.11.0/24"), IPv4Network("10.210.0.0/24")},
                      me.vtep) == IPv4Network("10.210.1.0/24")
    small = Definition("s", IPv4Network("10.9.0.0/30"), 1, 4789, 30, None)
    with pytest.raises(UsageError, match="every /30 range"):
        free_range(small, {IPv4Network("10.9.0.0/30")}, me.vtep)


def test_the_cli_refuses_a_malformed_cluster_url_in_one_line(capsys, monkeypatch) -> None:
    from wrapdock.cli import main

    monkeypatch.setenv("WRAPDOCK_CLUSTER", "etcd://198.51.100.1:2379;reboot")
    assert main(["network", "ls"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "wrapdock: error: invalid --cluster 'etcd://198.51.100.1:2379;reboot': '198.51.100.1:2379;reboot' is not "
        "IP:PORT (expected etcd://IP:PORT[,IP:PORT...])"]


def test_the_watcher_template_passes_shellcheck() -> None:
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/setup --tests installs it)")
    watcher = Path(__file__).resolve().parents[2] / "templates" / "cluster" / "wrapdock-watch"
    done = subprocess.run(["shellcheck", str(watcher)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
