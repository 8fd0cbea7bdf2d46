"""wrapdock-cni without root: the call's parsing, the result per cniVersion, the error codes, the
cost of VERSION, `cni print`, `network cni-config`, and doctor/gc leaving CNI leases alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tests.unit.test_doctor import checks, healthy, net, plans_of
from wrapdock import cli_cni, cniattach, doctor, gc
from wrapdock.cli import main
from wrapdock.cni import (
    DECODE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    SUPPORTED,
    CniError,
    add_result,
    parse,
    parse_args,
)
from wrapdock.doctor import Link
from wrapdock.ipam import RecordStore
from wrapdock.model import Network
from wrapdock.state import StateStore

PODMAN_ID = "d743b9a8554c7a4ce4df58f4592df0d524e62e4e545ab2337e2059edf08a14d6"
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": PODMAN_ID, "CNI_IFNAME": "eth0",
       "CNI_NETNS": "/run/netns/netns-7103e04e", "CNI_PATH": "/usr/lib/cni",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=clever_khorana"}


def config(version: str = "1.0.0", **extra) -> str:
    return json.dumps({"cniVersion": version, "name": "wdnet", "type": "wrapdock", "network": "wdnet",
                       "capabilities": {"portMappings": True, "ips": True, "mac": True}, **extra})


def code_of(env: dict, stdin: str) -> int:
    with pytest.raises(CniError) as caught:
        parse(env, stdin)
    return caught.value.code


# -- parsing ----------------------------------------------------------------------------------------
def test_parse_what_podman_sends_on_add() -> None:
    call = parse(ENV, config(runtimeConfig={"aliases": {"wdnet": ["d743b9a8554c"]}, "portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]}))
    assert (call.command, call.version, call.network, call.container_id, call.ifname, call.netns) == (
        "ADD", "1.0.0", "wdnet", PODMAN_ID, "eth0", "/run/netns/netns-7103e04e")
    assert call.ports == ({"host_ip": None, "host_port": 8080, "container_port": 80, "proto": "tcp"},
                          {"host_ip": "127.0.0.1", "host_port": 5353, "container_port": 53, "proto": "udp"})
    assert call.ips == () and call.mac is None and call.args["K8S_POD_NAME"] == "clever_khorana"


def test_static_address_and_mac_from_cni_args_or_runtime_config() -> None:
    call = parse({**ENV, "CNI_ARGS": "IgnoreUnknown=1;MAC=02:42:AC:11:00:99;IP=10.123.0.50"}, config())
    assert (call.ips, call.mac) == (("10.123.0.50",), "02:42:ac:11:00:99")
    call = parse(ENV, config(runtimeConfig={"ips": ["10.123.0.51/24"], "mac": "02:00:00:00:00:01"}))
    assert (call.ips, call.mac) == (("10.123.0.51",), "02:00:00:00:00:01")


def test_the_network_defaults_to_the_conflist_name() -> None:
    stdin = json.dumps({"cniVersion": "0.4.0", "name": "other", "type": "wrapdock"})
    call = parse(ENV, stdin)
    assert (call.network, call.cni_network) == ("other", "other")


def test_del_without_a_namespace_is_a_valid_call() -> None:
    """containerd's `ctr run --cni` sends DEL with CNI_NETNS empty."""
    call = parse({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, config())
    assert call.netns == ""


@pytest.mark.parametrize(("env", "stdin", "code"), [
    ({}, "{}", INVALID_ENV),
    ({**ENV, "CNI_COMMAND": "FROB"}, config(), INVALID_ENV),
    ({**ENV, "CNI_CONTAINERID": ""}, config(), INVALID_ENV),
    ({**ENV, "CNI_CONTAINERID": "a/b"}, config(), INVALID_ENV),
    ({**ENV, "CNI_IFNAME": ""}, config(), INVALID_ENV),
    ({**ENV, "CNI_IFNAME": "x" * 16}, config(), INVALID_ENV),
    ({**ENV, "CNI_NETNS": ""}, config(), INVALID_ENV),
    ({**ENV, "CNI_NETNS": "relative"}, config(), INVALID_ENV),
    ({**ENV, "CNI_ARGS": "novalue"}, config(), INVALID_ENV),
    (ENV, "{not json", DECODE),
    (ENV, "[1, 2]", DECODE),
    (ENV, json.dumps({"cniVersion": "1.0.0", "type": "wrapdock"}), INVALID_CONFIG),
    (ENV, config(network="bad/name"), INVALID_CONFIG),
    (ENV, config(stateDir="relative"), INVALID_CONFIG),
    (ENV, config(runtimeConfig={"portMappings": [{"hostPort": 0, "containerPort": 80}]}), INVALID_CONFIG),
    (ENV, config(runtimeConfig={"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}),
     INVALID_CONFIG),
    (ENV, config(runtimeConfig={"ips": ["10.0.0.2/24", "10.0.0.3/24"]}), INVALID_CONFIG),
    (ENV, config(runtimeConfig={"mac": "zz"}), INVALID_CONFIG),
    (ENV, config(version="0.2.0"), INCOMPATIBLE_VERSION),
    (ENV, config(version="2.0.0"), INCOMPATIBLE_VERSION),
    ({**ENV, "CNI_COMMAND": "CHECK"}, config(version="0.3.1"), INCOMPATIBLE_VERSION),
])
def test_bad_calls_get_the_spec_error_codes(env: dict, stdin: str, code: int) -> None:
    assert code_of(env, stdin) == code


def test_cni_args() -> None:
    assert parse_args("") == {}
    assert parse_args("IgnoreUnknown=1;K8S_POD_NAME=a=b") == {"IgnoreUnknown": "1", "K8S_POD_NAME": "a=b"}


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_reads_both_names_of_the_attachment_list(key: str) -> None:
    call = parse({"CNI_COMMAND": "GC"}, config(version="1.1.0", **{key: [
        {"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth1"}]}))
    assert call.valid_attachments == (("a", "eth0"), ("b", "eth1"))


def test_status_needs_no_container() -> None:
    assert parse({"CNI_COMMAND": "STATUS"}, config(version="1.1.0")).network == "wdnet"


# -- results --------------------------------------------------------------------------------------------
RECORD = {"ifname": "eth0", "mac": "02:42:0a:7b:00:02", "netns": "/run/netns/x", "address": "10.123.0.2",
          "primary": True}


@pytest.mark.parametrize("version", SUPPORTED)
def test_result_shape_per_version(version: str) -> None:
    result = add_result(version, RECORD, "10.123.0.1", 24)
    assert result["cniVersion"] == version
    assert result["interfaces"] == [{"name": "eth0", "mac": "02:42:0a:7b:00:02", "sandbox": "/run/netns/x"}]
    ip = {"interface": 0, "address": "10.123.0.2/24", "gateway": "10.123.0.1"}
    if version < "1.0.0":
        ip["version"] = "4"  # 0.3.x and 0.4.0 say the family; 1.0.0 dropped it
    assert result["ips"] == [ip]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.123.0.1"}]


def test_a_second_interface_carries_no_default_route() -> None:
    assert add_result("1.0.0", {**RECORD, "ifname": "eth1", "primary": False}, "10.123.0.1", 24)["routes"] == []


# -- the executable ---------------------------------------------------------------------------------------
def plugin(env: dict, stdin: str, *python_flags: str, bare: str | None = None) -> subprocess.CompletedProcess:
    """The plugin in a fresh interpreter; `bare`: that code instead (a baseline)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    code = bare or "from wrapdock.cni import run; run()"
    return subprocess.run([sys.executable, *python_flags, "-c", code],
                          input=stdin, capture_output=True, text=True, env={**clean, **env}, timeout=60)


def test_version_answers_what_podman_probes() -> None:
    env = {"CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "", "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy",
           "CNI_PATH": "dummy", "CNI_ARGS": ""}
    done = plugin(env, '{"cniVersion":"1.0.0"}')
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout) == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED)}


def imported(done: subprocess.CompletedProcess) -> set[str]:
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_version_imports_no_runner_no_schema_checker_no_plans() -> None:
    """podman asks for VERSION on every command: it must cost a Python start-up and little more.
    What it imports beyond a bare start-up that parses JSON (the config on stdin; json brings re) is
    counted."""
    baseline = plugin({}, "", "-X", "importtime", bare="import json")
    done = plugin({"CNI_COMMAND": "VERSION"}, '{"cniVersion":"1.0.0"}', "-X", "importtime")
    assert done.returncode == 0 and baseline.returncode == 0, done.stderr
    extra = imported(done) - imported(baseline)
    assert "wrapdock.cni" in extra
    heavy = {m for m in extra if m.split(".")[0] in ("sh", "jsonschema", "click", "tabulate", "yaml", "dataclasses",
                                                      "typing", "re", "pathlib", "ipaddress")
             or m.startswith(("wrapdock.plan", "wrapdock.runner", "wrapdock.cniattach", "wrapdock.state"))}
    assert heavy == set()


def test_add_and_del_never_load_inspect_nor_openssl() -> None:
    """inspect (~8 ms: dataclasses wants it only for a dataclass without a docstring, sh only for callbacks)
    and hashlib's OpenSSL (~4 ms) are not loaded by what an ADD or a DEL imports and builds."""
    code = """if True:
        import sys
        from wrapdock.quickimport import deferring, load_dataclasses, load_sh
        load_dataclasses()  # as wrapdock.cni.main imports it
        with deferring("inspect"):
            from wrapdock import cniattach
        from ipaddress import IPv4Address
        from wrapdock import ipam, portspec, runner, shell
        from wrapdock.plans import endpoint
        from wrapdock.plan import Plan
        network = cniattach._stub_network("n")
        att = endpoint.Attachment(network, "eth0", cniattach.host_ifname("c", "eth0"), IPv4Address("10.0.0.2"), True)
        steps = [cniattach._joined(endpoint.attach(att, "/run/netns/x", "c", kernel_ipv6=True)),
                 *cniattach.del_steps(network, "c", "eth0", None)]
        Plan("t", steps)
        portspec.PortMapping(None, 80, 80, "tcp")
        runner.Result(("true",), 0, "", "", 0.0)
        load_sh()
        print(sorted(m for m in ("inspect", "_hashlib", "hashlib") if m in sys.modules))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("env", "stdin", "code"), [
    ({}, config(), INVALID_ENV),
    ({**ENV, "CNI_IFNAME": ""}, config(), INVALID_ENV),
    (ENV, "{", DECODE),
    (ENV, config(version="0.2.0"), INCOMPATIBLE_VERSION),
])
def test_errors_are_cni_json_on_stdout_with_a_failing_exit(env: dict, stdin: str, code: int) -> None:
    done = plugin(env, stdin)
    assert done.returncode != 0
    answer = json.loads(done.stdout)
    assert answer["code"] == code and answer["msg"] and answer["cniVersion"] in SUPPORTED
    assert "Traceback" not in done.stdout + done.stderr


def test_an_unknown_wrapdock_network_is_an_invalid_config_with_a_trail(tmp_path: Path) -> None:
    done = plugin({**ENV, "CNI_NETNS": "/proc/self/ns/net"}, config(version="0.4.0", stateDir=str(tmp_path)))
    answer = json.loads(done.stdout)
    assert (done.returncode, answer["code"], answer["cniVersion"]) == (1, INVALID_CONFIG, "0.4.0")
    assert "no wrapdock network 'wdnet'" in answer["msg"]
    trails = list((tmp_path / "cni" / "trail").iterdir())
    assert len(trails) == 1 and "ADD" in trails[0].name and "error 7" in trails[0].read_text()


# -- names ----------------------------------------------------------------------------------------------------
def test_host_side_names_fit_and_are_not_taken_for_cli_leftovers() -> None:
    name = cniattach.host_ifname(PODMAN_ID, "eth0")
    assert len(name) == 15 and name.startswith("wdc") and not doctor.VETH_NAME.fullmatch(name)
    assert name == cniattach.host_ifname(PODMAN_ID, "eth0") != cniattach.host_ifname(PODMAN_ID, "eth1")
    assert cniattach.mac_for(IPv4Network("10.123.0.2/32").network_address) == "02:42:0a:7b:00:02"
    assert cniattach.lease_owner("wd-c1", "eth0") == "cni:wd-c1/eth0"


# -- cni print and network cni-config --------------------------------------------------------------------------
def make_network(state_dir: Path) -> Network:
    network = net("wdnet", "10.123.0.0/24")
    store = StateStore(state_dir)
    store.put("network", network.name, {**network.to_record(), "created": "t"})
    store.put("ipam", network.name, RecordStore.new_record(network.name, network.subnet, network.gateway))
    return network


def run_cli(monkeypatch, capsys, env: dict, stdin: str, *args: str) -> tuple[int, str, str]:
    import io

    for key in [k for k in os.environ if k.startswith("CNI_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cni_print_add_is_the_connect_plan_with_the_published_ports(tmp_path, monkeypatch, capsys) -> None:
    make_network(tmp_path)
    stdin = config(runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    code, out, err = run_cli(monkeypatch, capsys, ENV, stdin, "--state-dir", str(tmp_path), "cni", "print", "ADD")
    assert code == 0, err
    veth = cniattach.host_ifname(PODMAN_ID, "eth0")
    assert f"link add name {veth} type veth peer name eth0 address 02:42:0a:7b:00:02 netns /run/netns/netns-7103e04e" \
        in out
    assert "nsenter --net=/run/netns/netns-7103e04e ip -batch -" in out
    assert "addr add 10.123.0.2/24 dev eth0" in out and "route add default via 10.123.0.1" in out
    assert (f"-A WRAPDOCK-DNAT -p tcp --dport 8080 -m comment --comment wrapdock:cni={PODMAN_ID}/eth0 -j DNAT "
            "--to-destination 10.123.0.2:80") in out
    assert not list(tmp_path.glob("cni/attachments/*")), "print changes nothing"


def test_cni_print_del_removes_by_name_and_tag_without_a_record(tmp_path, monkeypatch, capsys) -> None:
    make_network(tmp_path)
    env = {**ENV, "CNI_COMMAND": "ignored", "CNI_NETNS": ""}
    code, out, err = run_cli(monkeypatch, capsys, env, config(), "--state-dir", str(tmp_path), "cni", "print", "DEL")
    assert code == 0, err
    assert f"ip link del dev {cniattach.host_ifname(PODMAN_ID, 'eth0')}" in out
    assert f"wrapdock:cni={PODMAN_ID}/eth0" in out


def test_cni_print_of_a_bad_call_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, {}, "{", "--state-dir", str(tmp_path), "cni", "print", "ADD")
    assert code == 2 and out == "" and err.count("\n") == 1 and "CNI error 6" in err


def test_network_cni_config_writes_a_conflist_podman_reads(tmp_path, monkeypatch, capsys) -> None:
    make_network(tmp_path / "state")
    code, out, err = run_cli(monkeypatch, capsys, {}, "", "--state-dir", str(tmp_path / "state"), "network",
                             "cni-config", "wdnet", "--dir", str(tmp_path / "netd"), "--cni-version", "0.4.0")
    assert code == 0, err
    path = tmp_path / "netd" / "10-wrapdock-wdnet.conflist"
    assert out.strip() == str(path)
    written = json.loads(path.read_text())
    assert written == cli_cni.conflist("wdnet", "0.4.0", tmp_path / "state")
    assert written["plugins"][0]["type"] == "wrapdock" and written["plugins"][0]["network"] == "wdnet"
    code, out, err = run_cli(monkeypatch, capsys, {}, "", "--state-dir", str(tmp_path / "state"), "network",
                             "cni-config", "nosuch", "--dir", str(tmp_path / "netd"))
    assert code == 2 and "no such network" in err


# -- doctor and gc -----------------------------------------------------------------------------------------------
def cni_record(network: str, address: str, container_id: str = "c1") -> dict:
    return {"version": 1, "network": network, "cni_network": network, "container_id": container_id,
            "ifname": "eth0", "netns": "/run/netns/x", "host_ifname": cniattach.host_ifname(container_id, "eth0"),
            "address": address, "mac": "02:42:0a:4d:00:05", "primary": True, "ports": [], "created": "t"}


def test_doctor_keeps_leases_of_cni_attachments_and_names_stray_ones() -> None:
    network = net()
    facts = healthy(network)
    store = RecordStore(facts.ipam[network.name])
    store.put("10.77.0.5", cniattach.lease_owner("c1", "eth0"), round_robin=True)
    store.put("10.77.0.6", cniattach.lease_owner("c2", "eth0"), round_robin=True)
    facts.cni = [cni_record(network.name, "10.77.0.5")]
    veth = facts.cni[0]["host_ifname"]
    facts.links[veth] = Link(veth, "veth", master=network.bridge)
    assert checks(facts) == [("orphan-lease", "n1 10.77.0.6")]


def test_only_the_newest_trail_files_are_kept(tmp_path: Path) -> None:
    names = [f"20261202T1400{second:02d}.000000Z-1-ADD-c{second}-eth0.log" for second in range(12)]
    for name in reversed(names):
        (tmp_path / name).write_text("")
    (tmp_path / "notes.txt").write_text("not a trail")
    cniattach.prune_trails(tmp_path, keep=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[-5:], "notes.txt"])


def test_gc_takes_away_a_cni_attachment_whose_veth_is_gone(tmp_path: Path) -> None:
    """`ctr run -d` never sends DEL: once the namespace is gone, gc does what that DEL would have done."""
    network = net()
    facts = healthy(network)
    kept, gone = cni_record(network.name, "10.77.0.5", "c1"), cni_record(network.name, "10.77.0.6", "c2")
    gone["ports"] = [{"host_ip": None, "host_port": 8080, "container_port": 80, "proto": "tcp"}]
    store = RecordStore(facts.ipam[network.name])
    for record in (kept, gone):
        store.put(record["address"], cniattach.lease_owner(record["container_id"], "eth0"), round_robin=True)
    facts.cni = [kept, gone]
    facts.links[kept["host_ifname"]] = Link(kept["host_ifname"], "veth", master=network.bridge)
    assert checks(facts) == [("cni-attachment-gone", "n1 10.77.0.6")]
    [action] = plans_of(facts)
    [step] = action.plan.steps  # one script: its rules by their tag, then its veth only if still there
    assert step.argv == ("sh", "-s") and step.stdin[0] == "set -e"
    assert step.stdin[1].startswith("sh -c ") and "wrapdock:cni=c2/eth0" in step.stdin[1]
    assert step.stdin[2] == (f"if ip link show dev {gone['host_ifname']} >/dev/null 2>&1; "
                             f"then ip link del dev {gone['host_ifname']}; fi")
    assert [(e.kind, e.container, e.addresses) for e in action.edits] == [
        ("release", "cni:c2/eth0", ("10.77.0.6",)), ("forget-cni", "n1+c2+eth0", ())]

    state = StateStore(tmp_path)
    state.put("cni", "n1+c2+eth0", gone)
    state.put("ipam", "n1", facts.ipam["n1"])
    from wrapdock.session import Session

    session = Session(state_dir=tmp_path)
    for edit in action.edits:
        gc.apply_edit(session, edit)
    assert state.get("cni", "n1+c2+eth0") is None
    from wrapdock.leases import LeaseStore

    assert sorted(LeaseStore.of(state, "n1").held()) == ["10.77.0.5"]


def test_gc_puts_a_cni_veth_back_on_its_bridge() -> None:
    network = net()
    facts = healthy(network)
    record = cni_record(network.name, "10.77.0.5")
    RecordStore(facts.ipam[network.name]).put("10.77.0.5", "cni:c1/eth0", round_robin=True)
    facts.cni = [record]
    facts.links[record["host_ifname"]] = Link(record["host_ifname"], "veth", master=None)
    assert checks(facts) == [("container-veth-detached", "cni:c1/eth0")]
    [action] = plans_of(facts)
    assert record["host_ifname"] in "\n".join(line for step in action.plan.steps for line in step.stdin)
