"""CNI attachments: the operations behind `wrapdock-cni` (ADD, DEL, CHECK, GC, STATUS).

An attachment is one interface that a CNI caller (podman, containerd, ...) asked wrapdock to put into
its container's network namespace. It is made exactly as `network connect` makes a container's
interface: the endpoint plans (veth, address, default route, published ports), carried out by the
one runner with its rollback, the address a lease in the network's own IPAM. Its owner is
`cni:CONTAINERID/IFNAME` (the spec's key for an attachment), its record
STATE_DIR/cni/attachments/NETWORK+CONTAINERID+IFNAME.json, its rules carry the comment
`wrapdock:cni=CONTAINERID/IFNAME` and its host-side veth is `wdc` + 12 hex digits of a hash of that
key (so DEL finds them again without a record). Every call leaves a trail file in STATE_DIR/cni/trail/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from wrapdock.cni import (
    CHECK_FAILED,
    COMMAND_FAILED,
    ENVIRONMENT,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
    NOT_AVAILABLE,
    REFUSED,
    SERVED_BY_VARIABLE,
    STATE_BROKEN,
    TRY_AGAIN,
    UNKNOWN_CONTAINER,
    Call,
    CniError,
    add_result,
)
from wrapdock.errors import EnvironmentProblem, OperationFailed, StateError, UsageError, WrapdockError
from wrapdock.model import Network
from wrapdock.session import Session
from wrapdock.state import DEFAULT_STATE_DIR

LOCK_SECONDS = 120  # then the caller hears "try again later" (11)
TRAILS_KEPT = 1000  # trail files in STATE_DIR/cni/trail: the newest are kept
OWNER_PREFIX = "cni:"


# -- names: derived from the spec's key (network, container id, interface) ---------------------------
def lease_owner(container_id: str, ifname: str) -> str:
    return f"{OWNER_PREFIX}{container_id}/{ifname}"


def record_name(network: str, container_id: str, ifname: str) -> str:
    return f"{network}+{container_id}+{ifname}"  # '+' is in none of the three


def host_ifname(container_id: str, ifname: str) -> str:
    """wdc + 12 hex digits: 15 characters, and never doctor's wd<10 hex><n> of CLI containers."""
    from wrapdock.names import sha256_hex

    return "wdc" + sha256_hex(f"{container_id}/{ifname}".encode())[:12]


def rule_tag(container_id: str, ifname: str) -> str:
    return f"wrapdock:cni={container_id}/{ifname}"


def mac_for(address: IPv4Address) -> str:
    """Docker's way: 02:42 and the four bytes of the address (unique on the network, stable)."""
    return "02:42:" + ":".join(f"{byte:02x}" for byte in address.packed)


def label(container_id: str, ifname: str) -> str:
    return f"CNI container {container_id[:12]} ({ifname})"


# -- reading ------------------------------------------------------------------------------------------
def records_on(session: Session, network: str) -> list[dict[str, Any]]:
    """The CNI attachments of a network (for `network inspect`, `network rm`, GC)."""
    return [r for r in session.state.all("cni") if r["network"] == network]


def views(session: Session, network: str) -> list[dict[str, Any]]:
    return [{"container_id": r["container_id"], "ifname": r["ifname"], "netns": r["netns"], "address": r["address"],
             "mac": r["mac"], "host_ifname": r["host_ifname"], "cni_network": r["cni_network"],
             "ports": r["ports"], "created": r["created"]} for r in records_on(session, network)]


def _network(session: Session, name: str, code: int = INVALID_CONFIG) -> Network:
    record = session.state.get("network", name)
    if record is None:
        raise CniError(code, f"no wrapdock network {name!r} (the configuration's \"network\"; create it with "
                       "`wrapdock network create`)")
    return Network.from_record(record)


def _stub_network(name: str) -> Network:
    """A network whose record is gone, for the notes of the steps that clean up after it."""
    return Network(name=name, id="", driver="bridge", subnet=IPv4Network("0.0.0.0/32"),
                   gateway=IPv4Address("0.0.0.0"), bridge="")


@contextmanager
def locked(session: Session, seconds: float = LOCK_SECONDS) -> Iterator[None]:
    """The state lock (the one every wrapdock command takes), waited for at most `seconds`: a CNI
    caller then hears "try again later" (11) instead of hanging."""
    if session.print_only:
        yield
        return
    from wrapdock.state import LockTimeout

    with ExitStack() as stack:
        try:
            stack.enter_context(session.state.locked(seconds))
        except LockTimeout as exc:
            raise CniError(TRY_AGAIN, str(exc)) from None
        yield


# -- ADD ------------------------------------------------------------------------------------------------
def _check_ports(session: Session, ports: list, others: list[dict[str, Any]]) -> None:
    from wrapdock.portspec import from_record

    taken = [(f"container {r['name']}", from_record(p)) for r in session.state.all("container") for p in r["ports"]]
    taken += [(label(r["container_id"], r["ifname"]), from_record(p)) for r in others for p in r["ports"]]
    for position, mine in enumerate(ports):
        for earlier in ports[:position]:
            if mine.clashes_with(earlier):
                raise UsageError(f"host port {mine.host_port}/{mine.proto} is asked for twice")
        for who, theirs in taken:
            if mine.clashes_with(theirs):
                raise UsageError(f"host port {mine.host_port}/{mine.proto} is already published by {who} "
                                 f"({theirs.text()})")


def add(session: Session, call: Call) -> tuple[dict[str, Any], Network]:
    """Connect the caller's namespace to the network, as `network connect` does; returns the record."""
    from wrapdock import kernelfacts
    from wrapdock.leases import LeaseStore
    from wrapdock.plan import Plan
    from wrapdock.plans import endpoint as endpoint_plans
    from wrapdock.plans.endpoint import Attachment
    from wrapdock.portspec import from_record

    network = _network(session, call.network)
    session.require_root()
    if not session.print_only and not os.path.exists(call.netns):
        raise CniError(INVALID_ENV, f"CNI_NETNS {call.netns} does not exist")
    owner = lease_owner(call.container_id, call.ifname)
    name = label(call.container_id, call.ifname)
    with locked(session):
        key = record_name(network.name, call.container_id, call.ifname)
        # an attachment of the same key whose veth is gone lost its namespace without a DEL (`ctr run -d`
        # never sends one, and ctr reuses container names): this ADD takes its place, as its DEL would
        stale = session.state.get("cni", key)
        if stale is not None and os.path.exists(f"/sys/class/net/{stale['host_ifname']}"):
            raise UsageError(f"{name} is already attached to network {network.name} (DEL it first)")
        others = [r for r in session.state.all("cni")
                  if record_name(r["network"], r["container_id"], r["ifname"]) != key]
        # the first interface of a container carries its default route and, as in Docker, its published
        # ports (podman sends its portMappings with every network's ADD: `podman network connect` too)
        primary = not any(r["container_id"] == call.container_id for r in others)
        ports = [from_record(p) for p in call.ports] if primary else []
        _check_ports(session, ports, others)
        leases = LeaseStore.of(session.state, network.name, network.ipam_range, network.gateway)
        assert leases is not None
        ipam = leases.ipam(network.ipam_range, network.gateway)  # as `network connect`'s
        if stale is not None:
            leases.release_addresses(owner, [stale["address"]])
        address = ipam.reserve(call.ips[0], owner) if call.ips else ipam.allocate(owner)
        att = Attachment(network, call.ifname, host_ifname(call.container_id, call.ifname), address, primary,
                         mac=call.mac or mac_for(address))
        steps = del_steps(network, call.container_id, call.ifname, stale) if stale is not None else []
        steps.append(_joined(endpoint_plans.attach(att, call.netns, name, kernel_ipv6=kernelfacts.has_ipv6())))
        if ports:
            steps.append(endpoint_plans.publish(call.container_id, name, att, ports,
                                                tag=rule_tag(call.container_id, call.ifname)))
        record = {"version": 1, "network": network.name, "cni_network": call.cni_network,
                  "container_id": call.container_id, "ifname": call.ifname, "netns": call.netns,
                  "host_ifname": att.host_ifname, "address": str(address), "mac": att.mac, "primary": primary,
                  "ports": [p.to_record() for p in ports],
                  "created": datetime.now(UTC).isoformat(timespec="seconds")}
        completed = session.carry_out(Plan(f"CNI ADD: connect {name} to network {network.name}", steps))
        if session.records_state:
            try:
                leases.save()
                session.state.put("cni", key, record)
            except BaseException:
                session.runner.rollback(completed)
                raise
    return record, network


# -- DEL ------------------------------------------------------------------------------------------------
def del_steps(network: Network, container_id: str, ifname: str, record: dict[str, Any] | None) -> list:
    """What a DEL runs (pure; gc runs it too): the attachment's rules by their tag and its veth by
    name, each only if there (the veth went with the namespace when that is gone). Without a record,
    whatever a killed ADD may have left."""
    from wrapdock.plans import endpoint as endpoint_plans
    from wrapdock.plans.endpoint import Attachment
    from wrapdock.portspec import from_record

    name = label(container_id, ifname)
    ports = [from_record(p) for p in record["ports"]] if record else []
    steps = []
    if record is None or ports:
        steps += endpoint_plans.unpublish(container_id, name, ports, tag=rule_tag(container_id, ifname))
    att = Attachment(network, ifname, record["host_ifname"] if record else host_ifname(container_id, ifname),
                     IPv4Address(record["address"]) if record else network.gateway, False)
    steps.append(endpoint_plans.detach(att, name))
    return [_joined(steps)]


def _script_line(step) -> str:
    """A step as one line of a `set -e` script, exactly as the runner would run it: a batch is piped in
    (its lines as printf's arguments: no nested here-document), a guarded delete keeps its probe."""
    from wrapdock.shell import quote, step_text

    if step.stdin:
        return f"printf '%s\\n' {quote(step.stdin)} | {quote(step.argv)}"
    return step_text(step)


def _joined(steps: list):
    """Steps as one `sh -s` that stops at the first failure, as the runner would: one process where each
    step and each probe was one (each a fork of this Python process, ~4-5 ms). It may stop half-way, so
    it is `partial` and its undo is its steps' undos, which must not fail on what is not there (a veth
    deleted only if it exists); an ADD and a DEL are each one such script (and the ADD's port rules, which
    have an exact undo, a step of their own)."""
    from wrapdock.plan import cmd

    undos = [step.undo for step in reversed(steps) if step.undo is not None]
    assert len(undos) <= 1, "only steps with at most one (idempotent) undo are joined"
    if len(steps) == 1 and not steps[0].only_if and not steps[0].skip_if:
        return steps[0]
    note = "; ".join(dict.fromkeys(step.note for step in steps))
    return cmd("sh", "-s", note=note, stdin=["set -e", *(_script_line(step) for step in steps)],
               undo=undos[0] if undos else None, partial=True)


def delete(session: Session, network_name: str, container_id: str, ifname: str) -> bool:
    """Take the attachment away, whatever is left of it: its rules, its veth, its lease and its record.
    Succeeds when there is nothing (twice, unknown, no netns); returns whether there was a record."""
    from wrapdock.leases import LeaseStore
    from wrapdock.plan import Plan

    session.require_root()
    with locked(session):
        key = record_name(network_name, container_id, ifname)
        record = session.state.get("cni", key)
        network_record = session.state.get("network", network_name)
        network = Network.from_record(network_record) if network_record else _stub_network(network_name)
        steps = del_steps(network, container_id, ifname, record)
        session.carry_out(Plan(f"CNI DEL: disconnect {label(container_id, ifname)} from network {network_name}",
                               steps))
        if session.records_state:
            leases = LeaseStore.of(session.state, network_name)
            if leases is not None:
                owner = lease_owner(container_id, ifname)
                if record is not None:  # its record says which address
                    leases.release_addresses(owner, [record["address"]])
                else:  # whatever a killed ADD may have left: every lease is read
                    leases.ipam().release(owner)
                leases.save()
            session.state.remove("cni", key)
    return record is not None


def remove_all(session: Session, network_name: str) -> int:
    """DEL every attachment of a network (`network rm -f`)."""
    doomed = records_on(session, network_name)
    for record in doomed:
        delete(session, network_name, record["container_id"], record["ifname"])
    return len(doomed)


# -- CHECK ------------------------------------------------------------------------------------------------
def _json(session: Session, argv: tuple[str, ...], note: str) -> tuple[list[dict[str, Any]] | None, str]:
    import json

    result = session.runner.query(argv, note)
    if not result.ok:
        return None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.exit_code}"
    return json.loads(result.stdout or "[]"), ""


def check(session: Session, call: Call) -> None:
    """Compare the host with the record: the interface (up, MAC, address), the default route, the
    host end on the bridge, every port rule. Every difference is named in one CNI error (104)."""
    from wrapdock.plans.endpoint import Attachment, in_netns, port_rules
    from wrapdock.portspec import from_record

    network = _network(session, call.network)
    record = session.state.get("cni", record_name(network.name, call.container_id, call.ifname))
    if record is None:
        raise CniError(UNKNOWN_CONTAINER, f"{label(call.container_id, call.ifname)} is not attached to "
                       f"network {network.name}")
    problems: list[str] = []
    netns, ifname, cidr = call.netns, call.ifname, f"{record['address']}/{network.subnet.prefixlen}"
    note = f"CNI CHECK: {label(call.container_id, call.ifname)} on network {network.name}"
    links, error = _json(session, in_netns(netns, "ip", "-j", "addr", "show", "dev", ifname), note)
    if links is None or not links:
        problems.append(f"no interface {ifname} in {netns} ({error})")
    else:
        link = links[0]
        have = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("family") == "inet"}
        if cidr not in have:
            problems.append(f"{ifname} lacks its address {cidr} (has {', '.join(sorted(have)) or 'none'})")
        if "UP" not in link.get("flags", []):
            problems.append(f"{ifname} is down")
        if link.get("address") != record["mac"]:
            problems.append(f"{ifname} has MAC {link.get('address')}, not {record['mac']}")
        if record["primary"]:
            routes, error = _json(session, in_netns(netns, "ip", "-j", "-4", "route", "show", "default"), note)
            if not any(r.get("gateway") == str(network.gateway) and r.get("dev") == ifname for r in routes or []):
                problems.append(f"no default route via {network.gateway} dev {ifname}")
    hosts, error = _json(session, ("ip", "-j", "link", "show", "dev", record["host_ifname"]), note)
    if not hosts:
        problems.append(f"the host end {record['host_ifname']} is gone ({error})")
    elif hosts[0].get("master") != network.bridge:
        problems.append(f"the host end {record['host_ifname']} is not on bridge {network.bridge}")
    att = Attachment(network, ifname, record["host_ifname"], IPv4Address(record["address"]), record["primary"])
    for rule in port_rules(call.container_id, att, [from_record(p) for p in record["ports"]],
                           tag=rule_tag(call.container_id, call.ifname)):
        if not session.runner.query(rule.argv("-C"), note).ok:
            problems.append(f"iptables rule missing: -t {rule.table} -A {rule.chain} {' '.join(rule.spec)}")
    if call.prev_result is not None:
        given = {ip.get("address", "").split("/")[0] for ip in call.prev_result.get("ips", []) if isinstance(ip, dict)}
        if record["address"] not in given:
            problems.append(f"prevResult does not hold the address {record['address']}")
    if problems:
        raise CniError(CHECK_FAILED, f"{label(call.container_id, call.ifname)} on network {network.name}: "
                       + "; ".join(problems))


# -- GC and STATUS (spec 1.1) ------------------------------------------------------------------------
def collect(session: Session, network_name: str, keep: tuple[tuple[str, str], ...]) -> list[str]:
    """DEL every attachment of the network that `keep` does not name (an empty ifname keeps all of a
    container's), then release CNI leases that no attachment holds; returns what went."""
    from wrapdock.leases import LeaseStore

    kept_ids = {cid for cid, ifname in keep if not ifname}
    kept = set(keep)
    gone = []
    for record in records_on(session, network_name):
        if record["container_id"] in kept_ids or (record["container_id"], record["ifname"]) in kept:
            continue
        delete(session, network_name, record["container_id"], record["ifname"])
        gone.append(lease_owner(record["container_id"], record["ifname"]))
    with locked(session):
        leases = LeaseStore.of(session.state, network_name)
        held = {(r["address"], lease_owner(r["container_id"], r["ifname"])) for r in records_on(session, network_name)}
        if leases is not None:
            stray = [(address, owner) for address, owner in leases.allocations().items()
                     if owner.startswith(OWNER_PREFIX) and (address, owner) not in held]
            for address, owner in stray:
                session.runner.trail.heading(f"CNI GC: release {address}, held by {owner} without an attachment")
                leases.remove(address)
                gone.append(owner)
            if stray and session.records_state:
                leases.save()
    return gone


def status(session: Session, call: Call) -> None:
    """Whether the network can take ADDs: its bridge up with the gateway address, its rules in place."""
    from wrapdock.doctor import expected_rules

    network = _network(session, call.network, code=NOT_AVAILABLE)
    note = f"CNI STATUS: network {network.name}"
    problems = []
    links, error = _json(session, ("ip", "-j", "addr", "show", "dev", network.bridge), note)
    if not links:
        problems.append(f"bridge {network.bridge} is missing ({error})")
    else:
        have = {f"{a['local']}/{a['prefixlen']}" for a in links[0].get("addr_info", []) if a.get("family") == "inet"}
        if network.gateway_cidr not in have:
            problems.append(f"bridge {network.bridge} lacks {network.gateway_cidr}")
        if "UP" not in links[0].get("flags", []):
            problems.append(f"bridge {network.bridge} is down")
    missing = [step for step in expected_rules(network) if step.skip_if and not session.runner.query(
        step.skip_if, note).ok]
    if missing:
        problems.append(f"{len(missing)} iptables rule(s) of the network are missing")
    if problems:
        raise CniError(NOT_AVAILABLE, f"network {network.name} cannot take ADDs: " + "; ".join(problems)
                       + " (`wrapdock gc` repairs it)")


# -- one call -----------------------------------------------------------------------------------------
def session_for(call: Call, print_only: bool = False) -> Session:
    state_dir = call.state_dir or os.environ.get("WRAPDOCK_STATE_DIR") or str(DEFAULT_STATE_DIR)
    return Session(state_dir=Path(state_dir), print_only=print_only, argv=["cni", call.command])


def dispatch(session: Session, call: Call) -> dict[str, Any] | None:
    if call.command == "ADD":
        record, network = add(session, call)
        return add_result(call.version, record, str(network.gateway), network.subnet.prefixlen)
    if call.command == "DEL":
        delete(session, call.network, call.container_id, call.ifname)
    elif call.command == "CHECK":
        check(session, call)
    elif call.command == "GC":
        collect(session, call.network, call.valid_attachments or ())
    elif call.command == "STATUS":
        status(session, call)
    return None


def _cni_error(error: WrapdockError) -> CniError:
    if isinstance(error, UsageError):
        return CniError(REFUSED, error.message)
    if isinstance(error, StateError):
        return CniError(STATE_BROKEN, error.message)
    if isinstance(error, EnvironmentProblem):
        return CniError(ENVIRONMENT, error.message)
    if isinstance(error, OperationFailed):
        return CniError(COMMAND_FAILED, error.message)
    return CniError(INTERNAL, error.message)


def prune_trails(folder: Path, keep: int = TRAILS_KEPT) -> None:
    """Keep the newest `keep` trail files (their names start with the time): the state directory is
    usually a tmpfs, and a busy node makes two files per container."""
    names = sorted(name for name in os.listdir(folder) if name.endswith(".log"))
    for name in names[:-keep] if len(names) > keep else []:
        with suppress(FileNotFoundError):  # another call pruned it first
            os.unlink(folder / name)


def _trail_file(session: Session, call: Call):
    """STATE_DIR/cni/trail/TIME-PID-COMMAND-CONTAINER-IFNAME.log (stdout is the result, not the trail)."""
    folder = session.state_dir / "cni" / "trail"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        prune_trails(folder, TRAILS_KEPT - 1)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        who = "-".join(filter(None, (call.container_id[:12], call.ifname))) or call.network
        return open(folder / f"{stamp}-{os.getpid()}-{call.command}-{who}.log", "w")
    except OSError as exc:
        raise CniError(ENVIRONMENT, f"cannot write the trail in {folder}: {exc.strerror}") from None


def serve(call: Call) -> dict[str, Any] | None:
    """Carry out one call with its trail in a file of its own; every failure becomes a CniError."""
    import json

    from wrapdock.runner import Runner, Trail

    session = session_for(call)
    with _trail_file(session, call) as trail:
        served_by = os.environ.get(SERVED_BY_VARIABLE)
        trail.write(f"# wrapdock-cni {call.command} cniVersion={call.version} network={call.network} "
                    f"(conflist {call.cni_network}) container={call.container_id} ifname={call.ifname} "
                    f"netns={call.netns}{f' (by wrapdock cni serve, pid {served_by})' if served_by else ''}\n")
        fail_at = os.environ.get("WRAPDOCK_FAIL_AT")
        session.runner = Runner(Trail("text", trail), audit=session.state.audit,
                                fail_at=int(fail_at) if fail_at and fail_at.isdigit() else None)
        try:
            answer = dispatch(session, call)
        except CniError as error:
            trail.write(f"# error {error.code}: {error.msg}\n")
            raise
        except WrapdockError as error:
            converted = _cni_error(error)
            trail.write(f"# error {converted.code}: {converted.msg}\n")
            raise converted from None
        except Exception as exc:
            import traceback

            trail.write(traceback.format_exc())
            raise CniError(INTERNAL, f"internal error: {type(exc).__name__}: {exc} (traceback in {trail.name})") \
                from None
        trail.write(f"# result: {json.dumps(answer)}\n" if answer is not None else "# done\n")
    return answer
