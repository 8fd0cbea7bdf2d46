"""Container operations: run, start, stop, rm, exec, ps, inspect, logs, commit.

Safety order, as for networks: everything that can refuse is checked before the first command; the
container's record is written first with phase "creating" (so a crash leaves a record gc can act
on), the plan runs (rolled back on failure), then the record is marked "ready".
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from wrapdock import (
    cgroups,
    containerhosts,
    containerspec,
    hostports,
    hostsfile,
    hostsindex,
    imageconfig,
    images,
    imagestore,
    kernelfacts,
    nameindex,
    names,
    networks,
    portspec,
)
from wrapdock.containerspec import ContainerConfig, Volume

# reading containers lives in containerviews (ps imports it without all of this module)
from wrapdock.containerviews import all_records, current_status, find, find_in, paths_of, summaries, whole
from wrapdock.errors import UsageError
from wrapdock.ipam import Ipam
from wrapdock.leases import LeaseStore
from wrapdock.model import Network
from wrapdock.plan import Plan, Step, one_script
from wrapdock.plans import container as plans
from wrapdock.plans import endpoint as endpoint_plans
from wrapdock.plans.cgroups import Limits
from wrapdock.plans.container import ContainerPaths, Runtime
from wrapdock.plans.endpoint import Attachment
from wrapdock.portspec import PortMapping, PortRequest
from wrapdock.procstatus import live_pid
from wrapdock.session import Session


@dataclass
class RunRequest:
    """A `run` as the user gave it, before validation turns it into a ContainerConfig."""

    args: tuple[str, ...]  # [IMAGE] COMMAND...
    name: str | None = None
    env: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    memory: str | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None
    hostname: str | None = None
    workdir: str | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    auto_remove: bool = False
    network: str | None = None
    ip: str | None = None
    publish: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()
    lab: str | None = None
    entrypoint: str | None = None
    user: str | None = None
    publish_all: bool = False
    notes: list[str] = field(default_factory=list)


# -- records ------------------------------------------------------------------------------------
def _record(config: ContainerConfig, request: RunRequest, netns: str | None) -> dict[str, Any]:
    limits = config.limits
    return {
        "version": 1, "id": config.id, "name": config.name, "image": config.image,
        "command": list(config.command), "env": list(config.env), "hostname": config.hostname,
        "workdir": config.workdir,
        "volumes": [{"source": v.source, "target": v.target, "readonly": v.readonly} for v in config.volumes],
        "limits": {"memory": limits.memory, "cpus": limits.cpus, "cpu_shares": limits.cpu_shares,
                   "cpuset_cpus": limits.cpuset_cpus, "pids": limits.pids},
        "caps": list(config.caps), "privileged": config.privileged, "netns": netns,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "detach": request.detach, "auto_remove": request.auto_remove, "tty": request.tty,
        "phase": "creating", "owner_pid": os.getpid(),
        "net_mode": "none", "endpoints": [], "ports": [], "dns": list(request.dns),
        "add_hosts": list(request.add_hosts), "lab": request.lab, "user": config.user,
    }


def config_of(record: dict[str, Any]) -> ContainerConfig:
    return ContainerConfig(
        id=record["id"], name=record["name"], image=record["image"], command=tuple(record["command"]),
        env=tuple(record["env"]), hostname=record["hostname"], workdir=record["workdir"],
        volumes=tuple(Volume(v["source"], v["target"], v["readonly"], os.path.isfile(v["source"]))
                      for v in record["volumes"]),
        limits=Limits(**record["limits"]), caps=tuple(record["caps"]), privileged=record["privileged"],
        user=record.get("user", ""))


def runtime_of(session: Session, record: dict[str, Any]) -> Runtime:
    image = images.get(session, record["image"])
    lower = tuple(imagestore.lowerdirs(session, image)) if image is not None else ()
    return Runtime(images.host_busybox(), cgroups.detect(), lower, record["netns"])


def attachments(session: Session, record: dict[str, Any]) -> list[Attachment]:
    return [Attachment(networks.load(session, e["network"]), e["ifname"], e["host_ifname"], IPv4Address(e["address"]),
                       position == 0)
            for position, e in enumerate(record["endpoints"])]


def ports_of(record: dict[str, Any]) -> list[PortMapping]:
    return [portspec.from_record(p) for p in record["ports"]]


def _ipam(session: Session, network: Network) -> tuple[Ipam, LeaseStore]:
    """The network's allocator over its leases (saved by store.save(), under the lock)."""
    store = LeaseStore.of(session.state, network.name, network.ipam_range, network.gateway)
    assert store is not None
    return store.ipam(network.ipam_range, network.gateway), store


def _release(session: Session, record: dict[str, Any], network_names: list[str] | None = None) -> None:
    """Give back the container's addresses (all, or on the named networks); call with the lock held.
    Its record says which: one lease file each, whatever the number of leases."""
    for endpoint in record["endpoints"]:
        if network_names is not None and endpoint["network"] not in network_names:
            continue
        store = LeaseStore.of(session.state, endpoint["network"])
        if store is not None and store.release_addresses(record["id"], [endpoint["address"]]):
            store.save()


def _others(session: Session, container_id: str) -> list[dict[str, Any]]:
    """Every other container's summary (what planning needs of it)."""
    return [r for r in summaries(session) if r["id"] != container_id]


def _check_name_free(session: Session, name: str, others: list[dict[str, Any]] | None) -> None:
    """Refuse a name in use: among `others`, or through the name index (None: it is kept)."""
    if others is None:
        holder = nameindex.lookup(session.state, name)
        record = session.state.get("container", holder) if holder is not None else None
        taken = record is not None and record["name"] == name
    else:
        taken = any(other["name"] == name for other in others)
    if taken:
        raise UsageError(f"container name {name!r} is already in use")


def _host_ports(requests: list[PortRequest], others: list[dict[str, Any]]) -> list[PortMapping]:
    """The concrete mappings: the host ports -p names, if no other container publishes them, and free
    ones picked for the rest. Call with the lock held (the records read here are the ones to avoid)."""
    for other in others:
        for theirs in ports_of(other):
            for mine in (r.fixed for r in requests if r.fixed):
                if mine.clashes_with(theirs):
                    raise UsageError(f"host port {mine.host_port}/{mine.proto} is already published by container "
                                     f"{other['name']} ({theirs.text()})")
    if not hostports.needs_picking(requests):
        return [r.fixed for r in requests if r.fixed]
    return hostports.choose(requests, [p for other in others for p in ports_of(other)], hostports.read())


def _host_resolv() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


def etc_files(record: dict[str, Any]) -> dict[str, list[str]]:
    """The /etc files of a container besides /etc/hosts (see containerhosts.hosts_file)."""
    return {
        "resolv.conf": hostsfile.resolv_lines(_host_resolv(), record["dns"]),
        "hostname": [record["hostname"]],
    }


def _release_names(session: Session, record: dict[str, Any], network_names: set[str] | None = None) -> list[Step]:
    """The container's names in the cluster networks it is on (registered by run and network connect),
    or in the named ones only (network disconnect)."""
    steps = []
    for endpoint in record["endpoints"]:
        if network_names is not None and endpoint["network"] not in network_names:
            continue
        network_record = session.state.get("network", endpoint["network"])
        if network_record and network_record.get("vxlan", {}).get("cluster"):
            from wrapdock import clusternames

            steps.append(clusternames.release_name(Network.from_record(network_record), record["name"],
                                                   endpoint["address"]))
    return steps


# -- run ------------------------------------------------------------------------------------------
def _resolve_image(session: Session, args: tuple[str, ...], notes: list[str]) -> tuple[str, tuple[str, ...]]:
    """Docker's `run IMAGE ARGS...`; a first word that is no image runs in the default image (the series)."""
    if not args:
        return images.DEFAULT_IMAGE, ()
    first, rest = args[0], args[1:]
    if first == images.DEFAULT_IMAGE:
        return first, rest
    record = images.get(session, first)
    if record is not None:
        return record["name"], rest
    notes.append(f"{first!r} is not an image; running it in the default image {images.DEFAULT_IMAGE}")
    return images.DEFAULT_IMAGE, args


def _in_image(session: Session, config: ContainerConfig, image: dict[str, Any], lower: list[str],
              request: RunRequest) -> ContainerConfig:
    """What only the image's files can tell: the user's ids and, for layered images, the program's path
    (the init's busybox would run its own applet for a bare `sh`); both read from the layers."""
    import dataclasses

    from wrapdock.imagefs import ImageTree

    user_spec = request.user if request.user is not None else imageconfig.image_settings(image).get("User") or ""
    if session.print_only and not os.path.isdir(lower[0]):
        return config  # print-only before the image exists (the script makes busybox first)
    tree = ImageTree(lower)
    user = imageconfig.resolve_user(str(user_spec), tree).text() if user_spec else ""
    program = imageconfig.find_program(config.command[0], config.env, containerspec.DEFAULT_PATH, tree)
    if program is None:
        raise UsageError(f"{config.command[0]!r}: executable file not found in image {config.image}")
    command = (program, *config.command[1:]) if "layers" in image else config.command
    return dataclasses.replace(config, user=user, command=command)


def _online_cpus() -> int:
    return os.cpu_count() or 1


def build_config(session: Session, request: RunRequest) -> ContainerConfig:
    image, args = _resolve_image(session, request.args, request.notes)
    record = images.get(session, image)
    settings = imageconfig.image_settings(record)
    command = imageconfig.command(settings, args, request.entrypoint, image, bool(record and "config" in record))
    image_workdir = settings.get("WorkingDir") if isinstance(settings.get("WorkingDir"), str) else ""
    container_id = containerspec.new_id()
    name = containerspec.check_name(request.name) if request.name is not None else containerspec.random_name(
        container_id)
    online = _online_cpus()
    if request.cpu_shares is not None and not 2 <= request.cpu_shares <= 262144:
        raise UsageError(f"invalid --cpu-shares {request.cpu_shares}: it must be between 2 and 262144")
    if request.pids_limit is not None and request.pids_limit == 0:
        raise UsageError("invalid --pids-limit 0: give a positive number, or -1 for no limit")
    limits = Limits(
        memory=containerspec.parse_size(request.memory) if request.memory is not None else None,
        cpus=containerspec.parse_cpus(request.cpus, online),
        cpu_shares=request.cpu_shares,
        cpuset_cpus=containerspec.parse_cpuset(request.cpuset_cpus, online),
        pids=request.pids_limit,
    )
    return ContainerConfig(
        id=container_id, name=name, image=image, command=command,
        env=imageconfig.environment(settings, containerspec.parse_env(request.env, dict(os.environ))),
        hostname=containerspec.check_hostname(request.hostname or name[:63].replace("_", "-").replace(".", "-")),
        workdir=containerspec.check_workdir(request.workdir or image_workdir or "/"),
        volumes=tuple(containerspec.parse_volume(v, os.path.exists, os.path.isfile) for v in request.volumes),
        limits=limits,
        caps=containerspec.parse_caps(request.cap_add, request.cap_drop),
        privileged=request.privileged,
    )


def _check_network_options(request: RunRequest, exposed: list[str]) -> tuple[str, list[PortRequest]]:
    mode = "none" if request.network in (None, "none") else "host" if request.network == "host" else "bridge"
    requests = portspec.parse_all((*request.publish, *(exposed if request.publish_all else ())))
    if requests and mode != "bridge":
        raise UsageError("-p needs the container on a bridge network (--net NAME)")
    if request.ip and mode != "bridge":
        raise UsageError("--ip needs --net NAME")
    for server in request.dns:
        try:
            IPv4Address(server)
        except ValueError:
            raise UsageError(f"invalid --dns {server!r}: not an IPv4 address") from None
    for entry in request.add_hosts:
        host, sep, address = entry.partition(":")
        try:
            IPv4Address(address)
        except ValueError:
            raise UsageError(f"invalid --add-host {entry!r}: expected NAME:IPv4") from None
        if not sep or not containerspec.valid_hostname(host):
            raise UsageError(f"invalid --add-host {entry!r}: expected NAME:IPv4")
    return mode, requests


def run(session: Session, request: RunRequest) -> tuple[ContainerConfig, int | None]:
    """Create and start a container; returns (config, the workload's exit code when attached)."""
    config = build_config(session, request)
    image_record = images.get(session, config.image)
    mode, requests = _check_network_options(
        request, imageconfig.exposed_ports(imageconfig.image_settings(image_record)))
    network = networks.load(session, request.network) if mode == "bridge" and request.network else None
    session.require_root()
    if config.image == images.DEFAULT_IMAGE:
        image_record = images.ensure_default(session)
    elif image_record is None:
        raise UsageError(f"no such image: {config.image}")
    lower = imagestore.lowerdirs(session, image_record)
    config = _in_image(session, config, image_record, lower, request)
    netns = None if mode == "host" else config.name
    runtime = Runtime(images.host_busybox(), cgroups.detect(), tuple(lower), netns)
    paths = paths_of(session, config.id)
    imagestore.check_mount_data(lower, str(paths.upper), str(paths.work))
    record = _record(config, request, netns)
    record["net_mode"] = mode
    watcher = plans.remove_when_done(config, paths, wrapdock_argv(session)) if (
        request.detach and request.auto_remove) else None
    # Under the state lock from the checks to the record: the address, the ports and the name are this
    # container's alone, and every /etc/hosts on its networks is rewritten from one consistent state.
    with session.lock():
        # a live run on a host that keeps the name index reads no other container's record, unless it
        # publishes ports (it checks theirs) or its /etc/hosts cannot be made from the files alone
        indexed = not session.print_only and nameindex.kept(session.state)
        others = None if indexed else _others(session, config.id)
        _check_name_free(session, config.name, others)
        if netns and Path(f"/run/netns/{netns}").exists():
            raise UsageError(f"a network namespace named {netns!r} already exists on this host")
        # decided here, before the plan: the trail and a --print-only script show the concrete ports
        if others is None and requests:
            others = _others(session, config.id)  # the ports the others publish
        ports = _host_ports(requests, others or [])
        record["ports"] = [p.to_record() for p in ports]
        if network is not None:
            ipam, leases = _ipam(session, network)
            address = ipam.reserve(request.ip, config.id) if request.ip else ipam.allocate(config.id)
            record["endpoints"] = [{"network": network.name, "ifname": "eth0",
                                    "host_ifname": endpoint_plans.host_ifname(config.id, 0), "address": str(address)}]
            if session.records_state:
                leases.save()
        network_names = {e["network"] for e in record["endpoints"]}
        joined = containerhosts.joining(session, record) if indexed else None
        if joined is None:
            others = _others(session, config.id) if others is None else others
            hosts = containerhosts.new_container_step(session, record, others)
            neighbours = containerhosts.hosts_step(session, network_names, [*others, record], others,
                                                   skip=containerhosts.hosts_file(session, record)[1])
        else:
            hosts, neighbours = joined
        if not session.print_only:  # the indexes first: a crash leaves a stale entry, never a missing one
            if indexed:
                nameindex.claim(session.state, config.name, config.id)
            else:
                nameindex.build(session.state, [*(others or []), record])
            if others is None:
                hostsindex.add(session, {name: {hostsfile.content_key(record)} for name in network_names})
            else:  # planned from the records: the networks' indexes too, written whole where there were none
                hostsindex.add(session, hostsindex.keys_by_network([*others, record], network_names), create=True)
        if session.records_state:  # first, so that gc can clean up after a crash from here on
            session.state.put("container", config.id, record)
        network_steps: list[Step] = []
        kernel_ipv6 = kernelfacts.has_ipv6()
        for att in attachments(session, record):
            network_steps += endpoint_plans.attach(att, netns or "", config.name, create_netns=att.primary,
                                                   kernel_ipv6=kernel_ipv6)
            if ports and att.primary:
                network_steps.append(endpoint_plans.publish(config.id, config.name, att, ports))
        plan = plans.prepare(config, paths, runtime, etc_files(record), network_steps, request.tty, hosts=hosts)
        if network is not None and network.scope == "cluster":  # its name for the other hosts: one etcdctl
            from wrapdock import clusternames

            claim = clusternames.register_name(network, config.name, record["endpoints"][0]["address"])
            if request.detach:  # while the init builds the root (~20-40 ms): the claim costs the start no time;
                neighbours = [claim, *neighbours]  # refused, it is undone like any failing step (the kill first)
            else:
                plan.steps.insert(0, claim)
        if request.detach:
            plan.extend(plans.start_detached(config, paths, runtime, request.tty, meanwhile=neighbours))
        else:
            plan.extend(neighbours)
        if watcher:  # -d --rm: its `rm -f` waits for this lock, so it never sees a half-made record
            plan.add(watcher)
        try:
            session.carry_out(plan)
        except BaseException:
            if session.records_state:
                _release(session, record)
                session.state.remove("container", config.id)
            if not session.print_only:
                nameindex.release(session.state, config.name, config.id)
            raise
        if session.records_state:
            record["phase"], record["owner_pid"] = "ready", None
            session.state.put("container", config.id, record)
    if session.print_only:
        if not request.detach:
            session.printed.append(Plan(f"run {config.name} in the foreground",
                                        plans.start_attached(config, paths, runtime, request.tty,
                                                             interactive=request.interactive)))
        return config, None
    if request.detach:
        return config, None
    code = _attach(session, config, paths, runtime, request.tty, request.interactive)
    if request.auto_remove:
        remove(session, [config.id], force=True)
    return config, code


def _attach(session: Session, config: ContainerConfig, paths: ContainerPaths, runtime: Runtime, tty: bool,
            interactive: bool) -> int:
    steps = plans.start_attached(config, paths, runtime, tty, interactive=interactive)
    code = 0
    for step in steps:
        code = session.runner.attach(step)
    return code


def wrapdock_argv(session: Session) -> list[str]:
    """How a helper started by a plan calls this wrapdock again, with the same state and data dirs."""
    return [sys.executable, "-m", "wrapdock", "--quiet", "--state-dir", str(session.state_dir),
            "--data-dir", str(session.data_dir)]


# -- start / stop / rm -------------------------------------------------------------------------------
def start(session: Session, refs: list[str]) -> list[dict[str, Any]]:
    session.require_root()
    records = [find(session, ref) for ref in refs]
    for record in records:
        if current_status(session, record).state == "running":
            raise UsageError(f"container {record['name']} is already running")
    for record in records:
        config, paths = config_of(record), paths_of(session, record["id"])
        runtime = runtime_of(session, record)
        from wrapdock.plans import cgroups as cgroup_plans

        # fresh cgroups (an OOM kill counted during an earlier run is not this run's), in one script
        fresh = [*cgroup_plans.remove(runtime.cgroups, config.id),
                 *cgroup_plans.create(runtime.cgroups, config.id, config.limits)]
        steps = [one_script(fresh, fresh[-1].note),
                 *plans.start_detached(config, paths, runtime, record["tty"], again=True)]
        plan = Plan(f"start container {config.name}", steps)
        session.carry_out(plan)
    return records


def stop(session: Session, refs: list[str], timeout: int) -> list[dict[str, Any]]:
    session.require_root()
    records = [find(session, ref) for ref in refs]
    for record in records:
        paths = paths_of(session, record["id"])
        pid = live_pid(paths)
        if pid is None:
            continue  # already stopped: Docker says nothing either
        session.carry_out(plans.stop(record["name"], pid, paths, timeout))
    return records


def remove(session: Session, refs: list[str], force: bool) -> list[dict[str, Any]]:
    session.require_root()
    with session.lock():  # one state from the references to the last record removed
        # a live rm on a host that keeps the name index reads the records it removes, not the others'
        indexed = not session.print_only and nameindex.kept(session.state)
        current = None if indexed else summaries(session)
        found = [find(session, ref) if current is None else whole(session, find_in(current, ref)) for ref in refs]
        records = list({r["id"]: r for r in found}.values())
        running = {r["id"]: live_pid(paths_of(session, r["id"])) is not None for r in records}
        for record in records:
            if running[record["id"]] and not force:
                raise UsageError(f"container {record['name']} is running: stop it first or use rm -f")
        for record in records:
            config = config_of(record)
            network_steps = endpoint_plans.unpublish(record["id"], record["name"], ports_of(record)) if record[
                "ports"] else []
            # the neighbours' /etc/hosts are rewritten inside the cleanup script, while the kernel takes
            # the veths down: no process of their own, and no time of their own at 200 neighbours
            left = containerhosts.leaving(session, record) if indexed else None
            if left is None:
                current = [r for r in (summaries(session) if current is None else current) if r["id"] != record["id"]]
                hosts, gone = _leaving_from_records(session, record, current)
            else:
                hosts, gone = left
            # a script cannot know whether the container will be running: it gets the (guarded) kill step
            plan = plans.remove(config, paths_of(session, record["id"]), runtime_of(session, record),
                                running[record["id"]] or (force and session.print_only),
                                network_steps, [e["host_ifname"] for e in record["endpoints"]], meanwhile=hosts)
            plan.extend(_release_names(session, record))
            session.carry_out(plan)
            if session.records_state:
                _release(session, record)
                session.state.remove("container", record["id"])
            if not session.print_only:  # the indexes after the record: a crash leaves a stale entry
                nameindex.release(session.state, record["name"], record["id"])
                hostsindex.discard(session, gone)
    return records


def _leaving_from_records(session: Session, record: dict[str, Any], others: list[dict[str, Any]]
                          ) -> tuple[list[Step], dict[str, set[hostsindex.Key]]]:
    """rm planned from the records (--print-only, or a network without an index): the neighbours'
    /etc/hosts step, and the index entries that go with the container. Live, the networks' indexes
    are written first, whole where there were none, as they are before it goes."""
    network_names = {e["network"] for e in record["endpoints"]}
    steps = containerhosts.hosts_step(session, network_names, others, [*others, record],
                                      drop=containerhosts.last_of_its_group(session, record, others))
    if session.print_only:
        return steps, {}
    before = hostsindex.keys_by_network([*others, record], network_names)
    hostsindex.add(session, before, create=True)
    after = hostsindex.keys_by_network(others, network_names)
    return steps, {name: before[name] - after[name] for name in network_names}


# -- network connect / disconnect --------------------------------------------------------------------
def connect(session: Session, network_name: str, ref: str, ip: str | None) -> dict[str, Any]:
    network = networks.load(session, network_name)
    session.require_root()
    with session.lock():
        record = find(session, ref)
        if record["net_mode"] == "host":
            raise UsageError(f"container {record['name']} uses the host's network (--net host)")
        if any(e["network"] == network.name for e in record["endpoints"]):
            raise UsageError(f"container {record['name']} is already connected to {network.name}")
        used = {e["ifname"] for e in record["endpoints"]}
        index = next(i for i in range(100) if f"eth{i}" not in used)
        ipam, leases = _ipam(session, network)
        address = ipam.reserve(ip, record["id"]) if ip else ipam.allocate(record["id"])
        endpoint = {"network": network.name, "ifname": f"eth{index}",
                    "host_ifname": endpoint_plans.host_ifname(record["id"], index), "address": str(address)}
        att = Attachment(network, endpoint["ifname"], endpoint["host_ifname"], address, primary=not record["endpoints"])
        connected = {**record, "endpoints": [*record["endpoints"], endpoint], "net_mode": "bridge"}
        others = [r for r in summaries(session) if r["id"] != record["id"]]
        steps = endpoint_plans.attach(att, record["netns"], record["name"], kernel_ipv6=kernelfacts.has_ipv6())
        if network.scope == "cluster":  # its name for the other hosts, claimed first (as run does)
            from wrapdock import clusternames

            steps.insert(0, clusternames.register_name(network, record["name"], str(address)))
        now_on = {e["network"] for e in connected["endpoints"]}
        hostsindex.add(session, hostsindex.keys_by_network([connected], now_on))  # before its files are written
        steps += containerhosts.hosts_step(session, now_on, [*others, connected], [*others, record], also=record["id"])
        steps += _rebind_hosts(session, record, connected)
        completed = session.carry_out(Plan(f"connect container {record['name']} to network {network.name}", steps))
        if not session.records_state:
            return record
        try:
            leases.save()
            session.state.put("container", record["id"], connected)
        except BaseException:
            session.runner.rollback(completed)
            raise
    return connected


def disconnect(session: Session, network_name: str, ref: str, force: bool = False) -> dict[str, Any]:
    """Take a container off a network; -f also withdraws ports published through that network."""
    names.check_object_name("network", network_name)
    session.require_root()
    with session.lock():
        record = find(session, ref)
        position = next((i for i, e in enumerate(record["endpoints"]) if e["network"] == network_name), None)
        if position is None:
            raise UsageError(f"container {record['name']} is not connected to network {network_name}")
        withdraw = position == 0 and bool(record["ports"])
        if withdraw and not force:
            raise UsageError(f"container {record['name']} publishes ports on {network_name}: use -f to withdraw "
                             "them too")
        all_attachments = attachments(session, record)
        att = all_attachments[position]
        steps = endpoint_plans.unpublish(record["id"], record["name"], ports_of(record)) if withdraw else []
        # the default route went with the first network: the next one that leads out carries it now
        successor = next((a for a in all_attachments if a is not att and not a.network.internal), None)
        left = {**record, "endpoints": [e for i, e in enumerate(record["endpoints"]) if i != position]}
        if position == 0 and successor is not None:  # the first endpoint is the one with the default route
            moved = next(e for e in left["endpoints"] if e["network"] == successor.network.name)
            left["endpoints"] = [moved, *(e for e in left["endpoints"] if e is not moved)]
        if withdraw:
            left["ports"] = []
        others = [r for r in summaries(session) if r["id"] != record["id"]]
        # the names before the link: the detach has no undo, so what may fail comes first
        hostsindex.add(session, hostsindex.keys_by_network([left], {e["network"] for e in left["endpoints"]}))
        steps += containerhosts.hosts_step(session, {network_name, *(e["network"] for e in record["endpoints"])},
                                           [*others, left], [*others, record], also=record["id"])
        steps += _rebind_hosts(session, record, left)
        steps.append(endpoint_plans.detach(att, record["name"]))
        if position == 0 and successor is not None:
            steps.append(endpoint_plans.default_route(successor, record["netns"], record["name"]))
        # a cluster network: its name goes from etcd first (undone by putting it back)
        steps[:0] = _release_names(session, record, {network_name})
        session.carry_out(Plan(f"disconnect container {record['name']} from network {network_name}", steps))
        if not session.records_state:
            return record
        _release(session, record, [network_name])
        session.state.put("container", record["id"], left)
    return left


def _rebind_hosts(session: Session, before: dict[str, Any], after: dict[str, Any]) -> list[Step]:
    """A container whose networks changed shares another group's /etc/hosts now (a file the hosts
    step has just written): its link, and its bind mount while it runs, move there. (The file it
    leaves stays until gc, if nobody uses it.)"""
    kind, old_path = containerhosts.hosts_file(session, before)
    new_path = containerhosts.hosts_file(session, after)[1]
    if kind == "own" or new_path == old_path:
        return []
    paths = paths_of(session, before["id"])
    return [plans.rebind_hosts(before["name"], live_pid(paths), paths, new_path, old_path, images.host_busybox())]


def attached_to(session: Session, network_name: str) -> list[dict[str, Any]]:
    return [r for r in all_records(session) if any(e["network"] == network_name for e in r["endpoints"])]


# -- exec ---------------------------------------------------------------------------------------------
def _environ(pid: int) -> list[str]:
    """The container's environment, read from its PID 1 as the series does."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return [item.decode(errors="replace") for item in raw.split(b"\0") if item]


def exec_in(session: Session, ref: str, command: list[str], tty: bool, interactive: bool = True,
            user: str | None = None) -> int:
    from wrapdock.imagefs import ImageTree

    session.require_root()
    record = find(session, ref)
    pid = live_pid(paths_of(session, record["id"]))
    if pid is None:
        raise UsageError(f"container {record['name']} is not running")
    if not command:
        raise UsageError("exec needs a command")
    config = config_of(record)
    env = _environ(pid)
    # the container's files as it sees them: its user names, and the program in its PATH (a bare name
    # would otherwise run the host busybox's applet of that name)
    tree = ImageTree([f"/proc/{pid}/root"])
    ids = imageconfig.resolve_user(user, tree).text() if user else config.user
    image = images.get(session, record["image"])
    program = imageconfig.find_program(command[0], tuple(env), containerspec.DEFAULT_PATH, tree)
    if program is not None and image is not None and "layers" in image:
        command = [program, *command[1:]]
    if tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    no_input = None if interactive else paths_of(session, record["id"]).tty_input
    step = plans.exec_step(config, pid, env, command, cgroups.detect(), tty, no_input, images.host_busybox(), ids)
    if session.print_only:
        session.printed.append(Plan(f"exec in container {record['name']}", [step]))
        return 0
    return session.runner.attach(step)


def commit(session: Session, ref: str, image: str) -> dict[str, Any]:
    """The container's layer as a new layer over its image's (files changed while it runs may be caught
    half-way: stop it first for a consistent layer)."""
    image = images.check_image_name(image)
    session.require_root()
    record = find(session, ref)
    with session.lock():
        if images.get(session, image) is not None:
            raise UsageError(f"image {image!r} already exists")
        paths = paths_of(session, record["id"])
        return images.commit(session, image, record["name"], record["image"], paths.upper)
