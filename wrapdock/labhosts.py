"""Multi-host labs: a lab whose file declares `hosts:` runs each host as a sandbox host of its own.

What `lab up` builds, all of it printed commands through the runner (trail, rollback):
- the lab namespace: one network namespace (held by a `sleep` started with `unshare --net`) with two
  bridges: `underlay` (198.51.100.0/24: every host's eth0; 198.51.100.1 = the lab's etcd, when a
  network needs one) and `internet` (203.0.113.1/24: the outside world, with no route to any overlay);
- each host: `unshare --net --mount --pid --uts --ipc --fork` running a small init that mounts its own
  /run (so its `ip netns`, wrapdock state and container data are its own) and /sys, then sleeps; its
  eth0 on the underlay (the host's address) and its `uplink` on the internet (203.0.113.<same last
  octet>, the default route);
- inside each host, the same wrapdock CLI (entered with `nsenter --all`) brings up the host's share of
  the lab, a one-host lab file derived from this one (vxlan networks get --vtep and --peer from the
  hosts' addresses), with its own WRAPDOCK_CGROUP_PARENT.

The PIDs of the holders live in the lab's directory (<state dir>/labs/NAME): `lab down` asks every
host's wrapdock to take its share down, then kills exactly those PIDs, waits for them, removes the
hosts' cgroup parents and the directory. Nothing is made in the machine's own network namespace, and
no mount is made outside the hosts' own mount namespaces.

A host is reached only through `host_enter` (nsenter) and its wrapdock: a host on a remote machine
later would swap that prefix for another (ssh), not the plans.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

from wrapdock.errors import UsageError
from wrapdock.plan import Plan, Step, cmd

UNDERLAY = IPv4Network("198.51.100.0/24")
LAB_UNDERLAY_ADDRESS = IPv4Address("198.51.100.1")  # the lab namespace's own: etcd listens there
INTERNET = IPv4Network("203.0.113.0/24")
OUTSIDE_ADDRESS = IPv4Address("203.0.113.1")
ETCD_PORT = 2379
HOST_RUN_LAB = "/run/wrapdock-lab"  # inside each host: its share of the lab (lab.json, checks.json)
HOST_STATE_DIR = "/run/wrapdock"
HOST_DATA_DIR = "/run/wrapdock-data"
READY_MARK = "/run/.wrapdock-lab-host"
PID_PLACEHOLDER = re.compile(r"@pid:([^@\s]+)@")


# -- the lab file ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabHost:
    """A host of a multi-host lab: its name, position and underlay address."""

    name: str
    index: int  # 1-based, in file order: the names of its links in the lab namespace
    address: IPv4Address  # on the underlay: its VTEP

    @property
    def uplink(self) -> IPv4Address:
        """Its address on the internet: 203.0.113.<the underlay address's last octet>."""
        return INTERNET.network_address + (int(self.address) & 0xFF)


def hosts_of(lab: dict[str, Any]) -> list[LabHost]:
    return [LabHost(name, i, IPv4Address(spec["address"])) for i, (name, spec) in
            enumerate(lab.get("hosts", {}).items(), start=1)]


def is_multihost(lab: dict[str, Any]) -> bool:
    return "hosts" in lab


def network_hosts(spec: dict[str, Any]) -> list[str]:
    return list(spec.get("hosts") or ([spec["host"]] if "host" in spec else []))


def check_hosts(lab: dict[str, Any], where: str) -> None:
    """What the schema cannot say about hosts: addresses, where each network and container is."""
    networks, containers = lab.get("networks", {}), lab.get("containers", {})
    if not is_multihost(lab):
        for kind, objects in (("networks", networks), ("containers", containers)):
            for name, spec in objects.items():
                for key in ("host", "hosts"):
                    if key in spec:
                        raise UsageError(f"{where}: {kind}.{name}.{key}: only a lab with `hosts:` places objects "
                                         "on hosts")
        for name, spec in networks.items():
            if spec.get("cluster"):
                raise UsageError(f"{where}: networks.{name}.cluster: a cluster network needs a lab with `hosts:` "
                                 "(its etcd runs on the lab's underlay)")
        return
    seen: dict[IPv4Address, str] = {}
    for name, spec in lab["hosts"].items():
        text = spec["address"]
        try:
            address = ip_address(text)
        except ValueError:
            raise UsageError(f"{where}: hosts.{name}.address: {text!r} is not an IPv4 address") from None
        if not isinstance(address, IPv4Address) or address not in UNDERLAY or int(address) & 0xFF in (0, 1, 255):
            raise UsageError(f"{where}: hosts.{name}.address: {text} is not in the lab underlay {UNDERLAY} "
                             f"(.2 to .254; .1 is the lab's own): labs never use addresses of this machine's networks")
        if address in seen:
            raise UsageError(f"{where}: hosts.{name}.address: {address} is host {seen[address]}'s already")
        seen[address] = name
    hosts = set(lab["hosts"])
    for name, spec in networks.items():
        if "peers" in spec or "vtep" in spec:
            raise UsageError(f"{where}: networks.{name}: peers and vtep come from the hosts' addresses in a "
                             "lab with `hosts:`")
        on = network_hosts(spec)
        if spec.get("driver", "bridge") == "vxlan":
            if "host" in spec and "hosts" in spec:
                raise UsageError(f"{where}: networks.{name}: give `hosts` (the hosts the overlay spans), not both")
        else:
            if "hosts" in spec or "host" not in spec:
                raise UsageError(f"{where}: networks.{name}.host: a bridge network is on one host: give `host: NAME`")
            if spec.get("cluster"):
                raise UsageError(f"{where}: networks.{name}.cluster: only a vxlan network can be a cluster network")
        if spec.get("cluster") and not has_cluster_mode():
            raise UsageError(f"{where}: networks.{name}.cluster: this wrapdock has no cluster mode (--cluster) yet: "
                             "use a static vxlan network (leave cluster out)")
        if spec.get("external"):
            raise UsageError(f"{where}: networks.{name}.external: a multi-host lab makes all its networks")
        if not on:
            raise UsageError(f"{where}: networks.{name}.hosts: say which hosts the network spans")
        for host in on:
            if host not in hosts:
                raise UsageError(f"{where}: networks.{name}: unknown host {host!r} (hosts: {', '.join(hosts)})")
        _check_subnet(lab, name, where)
        if spec.get("driver") == "vxlan" and not spec.get("cluster"):
            _check_ranges(lab, name, on, where)
    for name, spec in containers.items():
        host = spec.get("host")
        if host is None:
            raise UsageError(f"{where}: containers.{name}.host: say which host the container runs on")
        if host not in hosts:
            raise UsageError(f"{where}: containers.{name}.host: unknown host {host!r} (hosts: {', '.join(hosts)})")
        for i, attachment in enumerate(spec.get("networks", [])):
            network = attachment if isinstance(attachment, str) else attachment["network"]
            if host not in network_hosts(networks[network]):
                raise UsageError(f"{where}: containers.{name}.networks[{i}]: network {network} is not on host {host}")
    outside = lab.get("outside", "outside")
    for i, check in enumerate(lab.get("checks", [])):
        source = check["from"]
        if source not in containers and source not in hosts and source != outside:
            raise UsageError(f"{where}: checks[{i}].from: {source!r} is no container or host of this lab, nor "
                             f"{outside!r}")
        if "listener" in check:
            listener = containers.get(check["listener"])
            if listener is None:
                raise UsageError(f"{where}: checks[{i}].listener: unknown container {check['listener']!r}")
            if source_host(lab, source) != listener["host"]:
                raise UsageError(f"{where}: checks[{i}].listener: a udp check's listener must be on the host the "
                                 "check runs from (its log is read there)")


def _check_ranges(lab: dict[str, Any], name: str, on: list[str], where: str) -> None:
    """Static overlays derive each host's range from its address: refuse two hosts that would share one."""
    from wrapdock import overlayspec
    from wrapdock.netspec import parse_subnet

    spec = lab["networks"][name]
    subnet = parse_subnet(spec["subnet"]).network
    try:
        size = overlayspec.check_host_subnet_size(subnet, spec.get("host_subnet_size",
                                                                   overlayspec.DEFAULT_HOST_SUBNET_SIZE))
        vteps = [IPv4Address(lab["hosts"][h]["address"]) for h in on]
        overlayspec.host_range(subnet, size, vteps[0], vteps[1:])
    except UsageError as exc:
        raise UsageError(f"{where}: networks.{name}: {exc.message}") from None


def _check_subnet(lab: dict[str, Any], name: str, where: str) -> None:
    """A lab network inside the underlay or the internet would shadow them on its hosts."""
    from wrapdock.netspec import parse_subnet

    try:
        subnet = parse_subnet(lab["networks"][name]["subnet"]).network
    except UsageError as exc:
        raise UsageError(f"{where}: networks.{name}.subnet: {exc.message}") from None
    for reserved, what in ((UNDERLAY, "the lab's underlay"), (INTERNET, "the lab's internet")):
        if subnet.overlaps(reserved):
            raise UsageError(f"{where}: networks.{name}.subnet: {subnet} overlaps {what} ({reserved})")


def source_host(lab: dict[str, Any], source: str) -> str | None:
    """The host a check runs on: its container's, the host itself; None: the lab namespace (outside)."""
    if source in lab.get("containers", {}):
        return lab["containers"][source]["host"]
    return source if source in lab.get("hosts", {}) else None


def cluster_url() -> str:
    return f"etcd://{LAB_UNDERLAY_ADDRESS}:{ETCD_PORT}"


def has_cluster_mode() -> bool:
    """Whether this wrapdock has the global --cluster option (the etcd control plane)."""
    from wrapdock.cli import cli

    return any("--cluster" in param.opts for param in cli.params)


def cluster_commands(lab: dict[str, Any], host: LabHost) -> list[list[str]]:
    """The host's part of the lab's cluster networks, as wrapdock arguments: the first host of a
    network creates it in etcd (and joins), every other host joins it, each with its own VTEP."""
    commands = []
    for name, spec in lab.get("networks", {}).items():
        on = network_hosts(spec)
        if not spec.get("cluster") or host.name not in on:
            continue
        if host.name == on[0]:
            options = [f"--{key.replace('_', '-')}={spec[key]}" for key in ("vni", "port", "host_subnet_size", "mtu")
                       if key in spec]
            commands.append(["--cluster", cluster_url(), "network", "create", "--driver", "vxlan", "--subnet",
                             spec["subnet"], "--vtep", str(host.address), *options, name])
        else:
            commands.append(["--cluster", cluster_url(), "network", "join", name, "--vtep", str(host.address)])
    return commands


def cluster_networks_of(lab: dict[str, Any], host: LabHost) -> list[str]:
    return [name for name, spec in lab.get("networks", {}).items()
            if spec.get("cluster") and host.name in network_hosts(spec)]


def needs_etcd(lab: dict[str, Any]) -> bool:
    return any(spec.get("cluster") for spec in lab.get("networks", {}).values())


def share(lab: dict[str, Any], host: LabHost, checks: Sequence[dict[str, Any]] = (),
          standin: bool = False) -> dict[str, Any]:
    """The one-host lab a host's wrapdock brings up: its networks (vxlan ones with its VTEP and its peers'
    addresses) and its containers, under the lab's own name (so `lab down` there removes exactly them)."""
    addresses = {h.name: str(h.address) for h in hosts_of(lab)}
    networks: dict[str, Any] = {}
    for name, spec in lab.get("networks", {}).items():
        on = network_hosts(spec)
        if host.name not in on:
            continue
        mine = {k: v for k, v in spec.items() if k not in ("host", "hosts", "cluster")}
        if spec.get("cluster") and not standin:  # created or joined before the share comes up (cluster_commands)
            networks[name] = {"driver": "vxlan", "subnet": spec["subnet"], "external": True}
            continue
        if spec.get("driver") == "vxlan":
            mine["vtep"] = str(host.address)
            if not spec.get("cluster"):
                mine["peers"] = [addresses[h] for h in on if h != host.name]
        networks[name] = mine
    containers = {name: {k: v for k, v in spec.items() if k != "host"}
                  for name, spec in lab.get("containers", {}).items() if spec["host"] == host.name}
    sub = {"name": lab["name"], "description": f"host {host.name} of lab {lab['name']}",
           "networks": networks, "containers": containers}
    if checks:
        sub["checks"] = list(checks)
    return sub


# -- where things live ----------------------------------------------------------------------------
def lab_dir(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "labs" / name


def wrapdock_argv() -> list[str]:
    """This very wrapdock: the console script beside the interpreter, else `python -m wrapdock`."""
    script = Path(sys.executable).with_name("wrapdock")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wrapdock"]


def cgroup_parent(lab_name: str, host: str) -> str:
    """Containers' cgroups are the machine's (not namespaced): each host's go under a parent of its own,
    inside the caller's own parent name when it has one (tests give each sandbox one)."""
    outer = os.environ.get("WRAPDOCK_CGROUP_PARENT", "wrapdock")
    return f"{outer}-lab-{lab_name}-{host}"[:64]


def pid_word(pid: int | None, pidfile: Path) -> str:
    """A PID in a command: the real one live; in a printed script `"$(cat PIDFILE)"` (see render_pids)."""
    return str(pid) if pid is not None else f"@pid:{pidfile}@"


def render_pids(text: str) -> str:
    return PID_PLACEHOLDER.sub(lambda m: f'"$(cat {m.group(1)})"', text)


def host_enter(pid: str) -> list[str]:
    """Into a host: all its namespaces (net, mount, pid, uts, ipc); its /run is then its own."""
    return ["nsenter", "--target", pid, "--all", "--"]


def host_wrapdock(lab_name: str, host: LabHost, pid: str, *args: str, trail: str = "text",
                  parents: dict[str, str] | None = None) -> list[str]:
    """The host's own wrapdock (its state, data and cgroup parent: the one recorded in the lab's state
    when given), with this invocation's trail mode."""
    parent = (parents or {}).get(host.name) or cgroup_parent(lab_name, host.name)
    return [*host_enter(pid), "env", f"WRAPDOCK_STATE_DIR={HOST_STATE_DIR}", f"WRAPDOCK_DATA_DIR={HOST_DATA_DIR}",
            f"WRAPDOCK_CGROUP_PARENT={parent}", *wrapdock_argv(),
            *(["--trail", trail] if trail != "text" else []), *args]


@dataclass
class Pids:
    """The processes a lab's namespaces hang on, as kept in <lab dir>/state.json."""

    lab: int | None = None
    hosts: dict[str, int] | None = None  # host -> its init (PID 1 inside)
    holders: dict[str, int] | None = None  # host -> the unshare holding it (--kill-child)
    etcd: int | None = None

    def all(self) -> list[int]:
        return [p for p in (self.lab, *(self.hosts or {}).values(), *(self.holders or {}).values(), self.etcd)
                if p is not None]


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "state.json").read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


# -- plans ----------------------------------------------------------------------------------------
def host_init(host: LabHost) -> str:
    """PID 1 of a host: its own /run (netns, state, data), its own /sys (its links); the machine's
    cgroup mounts carried over (cgroups are not namespaced by mounts)."""
    return "; ".join((
        "set -e",
        "mount --make-rprivate /",
        "if mountpoint -q /run/netns; then umount -l /run/netns; fi",
        "mount -t tmpfs -o mode=755 wdlab-run /run",
        "mkdir -p /run/.cgroup",
        "mount --rbind /sys/fs/cgroup /run/.cgroup",
        "mount -t sysfs wdlab-sys /sys",
        "mount --move /run/.cgroup /sys/fs/cgroup",
        "rmdir /run/.cgroup",
        "ip link set lo up",
        f"hostname {host.name}",
        f"touch {READY_MARK}",
        "exec sleep infinity",
    ))


def _wait_lines(what: str, condition: str, log: Path) -> list[str]:
    return [
        "n=0",
        f"until {condition}; do",
        "    n=$((n + 1))",
        f'    if [ "$n" -gt 600 ]; then echo "{what} did not start within 30 s (see {log})" >&2; exit 1; fi',
        "    sleep 0.05",
        "done",
    ]


def start_plan(lab: dict[str, Any], directory: Path) -> Plan:
    """The lab namespace and the hosts, each a background process whose PID goes to a file."""
    plan = Plan(f"start the hosts of lab {lab['name']}")
    d = shlex.quote(str(directory))
    cleanup = cmd("sh", "-s", note="remove the lab's directory and its hosts' cgroup parents",
                  stdin=["set -e", *cgroup_cleanup_lines(lab), f"rm -rf -- {d}"])
    what = "PIDs, logs, etcd data" if needs_etcd(lab) else "PIDs, logs"
    plan.add(cmd("mkdir", "-p", "--", str(directory.parent), note=f"the lab's directory ({what})"))
    # without -p: the claim of the name (a second `lab up` of the same lab fails here, changing nothing)
    plan.add(cmd("mkdir", "--", str(directory), note=f"the lab's directory ({what})", undo=cleanup))
    lab_pid = directory / "lab.pid"
    plan.add(cmd("sh", "-s", note="the lab namespace: the underlay and the internet (a sleep holds it)", partial=True,
                 stdin=["set -e",
                        "setsid unshare --net -- sleep infinity </dev/null >/dev/null 2>&1 &",
                        f"echo $! > {shlex.quote(str(lab_pid))}",
                        *_wait_lines("the lab namespace",
                                     '[ "$(readlink /proc/$!/ns/net)" != "$(readlink /proc/self/ns/net)" ]', lab_pid)],
                 undo=cmd("sh", "-s", note="stop the lab namespace",
                          stdin=[f'kill -KILL "$(cat {shlex.quote(str(lab_pid))})" 2>/dev/null || true'])))
    for host in hosts_of(lab):
        holder, pidfile, log = (directory / f"{host.name}.holder.pid", directory / f"{host.name}.pid",
                                directory / f"{host.name}.log")
        q = {k: shlex.quote(str(v)) for k, v in (("holder", holder), ("pid", pidfile), ("log", log))}
        plan.add(cmd("sh", "-s", note=f"host {host.name}: a sandbox host of its own (net, mount, pid, uts, ipc)",
                     partial=True, stdin=[
                         "set -e",
                         "setsid unshare --net --mount --pid --uts --ipc --fork --kill-child --mount-proc "
                         f"--propagation private -- bash -c {shlex.quote(host_init(host))} "
                         f"</dev/null >{q['log']} 2>&1 &",
                         f"holder=$!; echo $holder > {q['holder']}",
                         *_wait_lines(f"host {host.name}", f"[ -e /proc/$holder/root{READY_MARK} ]", log),
                         f'set -- $(cat /proc/$holder/task/$holder/children); echo "$1" > {q["pid"]}'],
                     undo=cmd("sh", "-s", note=f"stop host {host.name}",
                              stdin=[f'kill -KILL "$(cat {q["holder"]})" 2>/dev/null || true'])))
    return plan


def wire_plan(lab: dict[str, Any], directory: Path, pids: dict[str, int | None]) -> Plan:
    """The links: each host's eth0 on the underlay bridge, its uplink on the internet bridge."""
    plan = Plan(f"wire the hosts of lab {lab['name']}")
    lab_pid = pid_word(pids.get(""), directory / "lab.pid")
    batch = ["link set lo up", "link add underlay type bridge", "link set underlay up",
             "link add internet type bridge", f"addr add {OUTSIDE_ADDRESS}/{INTERNET.prefixlen} dev internet",
             "link set internet up"]
    if needs_etcd(lab):
        batch.append(f"addr add {LAB_UNDERLAY_ADDRESS}/{UNDERLAY.prefixlen} dev underlay")
    hosts = hosts_of(lab)
    lab_ns = ["nsenter", "--target", lab_pid, "--net", "--", "ip"]
    plan.add(cmd(*lab_ns, "-batch", "-", stdin=batch,
                 note="the lab namespace: bridges underlay and internet (203.0.113.1)"))
    for host in hosts:  # one command per pair: the host's PID is a word of its own (a script reads it from a file)
        pid = pid_word(pids.get(host.name), directory / f"{host.name}.pid")
        note = f"host {host.name}: eth0 on the underlay, uplink on the internet (veth pairs from the lab namespace)"
        plan.add(cmd(*lab_ns, "link", "add", f"ul{host.index}", "master", "underlay", "up", "type", "veth", "peer",
                     "name", "eth0", "netns", pid, note=note))
        plan.add(cmd(*lab_ns, "link", "add", f"wan{host.index}", "master", "internet", "up", "type", "veth", "peer",
                     "name", "uplink", "netns", pid, note=note))
    for host in hosts:
        pid = pid_word(pids.get(host.name), directory / f"{host.name}.pid")
        plan.add(cmd(*host_enter(pid), "ip", "-batch", "-", note=f"host {host.name}: its underlay and uplink",
                     stdin=[f"addr add {host.address}/{UNDERLAY.prefixlen} dev eth0", "link set eth0 up",
                            f"addr add {host.uplink}/{INTERNET.prefixlen} dev uplink", "link set uplink up",
                            f"route add default via {OUTSIDE_ADDRESS}"]))
    return plan


def handover_plan(lab: dict[str, Any], host: LabHost, pid: str, file: str = "lab.json",
                  checks: Sequence[dict[str, Any]] = ()) -> Plan:
    """Give the host its share of the lab, as a file in its own /run."""
    text = json.dumps(share(lab, host, checks), indent=1, sort_keys=False)
    return Plan(f"host {host.name}: its share of lab {lab['name']}", [
        cmd(*host_enter(pid), "sh", "-c", f"mkdir -p {HOST_RUN_LAB} && cat > {HOST_RUN_LAB}/{file}",
            stdin=text.splitlines(), note=f"host {host.name}: its share of the lab ({HOST_RUN_LAB}/{file})")])


def cgroup_cleanup_lines(lab: dict[str, Any], parents: dict[str, str] | None = None) -> list[str]:
    """Remove the hosts' cgroup parents (and what a killed container left in them), waiting for the
    killed processes to leave them."""
    from wrapdock import cgroups
    from wrapdock.errors import EnvironmentProblem

    names = [(parents or {}).get(h.name) or cgroup_parent(lab["name"], h.name) for h in hosts_of(lab)]
    try:
        dirs = [str(d) for name in names for d in cgroups.detect(name).parent_dirs().values()]
    except EnvironmentProblem:  # no cgroup hierarchy here (a printed script): the v2 path
        dirs = [f"/sys/fs/cgroup/{name}" for name in names]
    if not dirs:
        return []
    return [f"for d in {' '.join(shlex.quote(d) for d in dirs)}; do",
            "    n=0",
            '    while [ -d "$d" ] && ! find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; do',
            "        n=$((n + 1))",
            '        if [ "$n" -gt 600 ]; then echo "cgroup $d is still busy" >&2; exit 1; fi',
            "        sleep 0.05",
            "    done",
            "done"]


def stop_plan(lab: dict[str, Any], directory: Path, every: Sequence[str],
              parents: dict[str, str] | None = None) -> Plan:
    """Kill exactly the lab's processes (PIDs, or placeholders for a script), wait until they are gone
    (or zombies: a parent that does not reap them holds no namespace), remove the cgroups and the directory."""
    plan = Plan(f"stop the hosts of lab {lab['name']}")
    if every:
        plan.add(cmd("sh", "-s", note="kill the lab's processes (their PIDs, from the lab's state)", stdin=[
            *(f"kill -KILL {p} 2>/dev/null || true" for p in every),
            f"for p in {' '.join(str(p) for p in every)}; do",
            "    n=0",
            "    while [ -e /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null; do",
            "        n=$((n + 1))",
            '        if [ "$n" -gt 600 ]; then echo "process $p did not end" >&2; exit 1; fi',
            "        sleep 0.05",
            "    done",
            "done"]))
    plan.add(cmd("sh", "-s", note="remove the lab's directory and its hosts' cgroup parents",
                 stdin=["set -e", *cgroup_cleanup_lines(lab, parents), f"rm -rf -- {shlex.quote(str(directory))}"]))
    return plan


def etcd_plan(directory: Path, lab_pid: str) -> Plan:
    """etcd bound to the underlay, data in the lab's directory, its PID in etcd.pid."""
    data, log, pidfile = directory / "etcd", directory / "etcd.log", directory / "etcd.pid"
    url = f"http://{LAB_UNDERLAY_ADDRESS}:{ETCD_PORT}"
    etcd = ["etcd", "--name", "lab", "--data-dir", str(data), "--listen-client-urls", url,
            "--advertise-client-urls", url, "--listen-peer-urls", f"http://{LAB_UNDERLAY_ADDRESS}:2380",
            "--initial-advertise-peer-urls", f"http://{LAB_UNDERLAY_ADDRESS}:2380",
            "--initial-cluster", f"lab=http://{LAB_UNDERLAY_ADDRESS}:2380"]
    return Plan("the lab's etcd", [cmd("sh", "-s", note=f"etcd on the underlay ({url}), data in {data}",
                                       partial=True, stdin=[
        "set -e",
        f"setsid nsenter --target {lab_pid} --net -- {shlex.join(etcd)} </dev/null >{shlex.quote(str(log))} 2>&1 &",
        f"echo $! > {shlex.quote(str(pidfile))}",
        *_wait_lines("etcd", f"nsenter --target {lab_pid} --net -- etcdctl --endpoints {url} "
                     "endpoint health >/dev/null 2>&1", log)],
        undo=cmd("sh", "-s", note="stop etcd",
                 stdin=[f'kill -KILL "$(cat {shlex.quote(str(pidfile))})" 2>/dev/null || true']))])


# -- operations -----------------------------------------------------------------------------------
def _say(text: str) -> None:
    import click

    click.echo(text, err=True)


def _pids_from_files(session, directory: Path, lab: dict[str, Any]) -> dict[str, Any]:
    """The PIDs the start plan wrote (read with `cat`, in the trail)."""
    from wrapdock.errors import OperationFailed

    files = [directory / "lab.pid", *(directory / f"{h.name}.pid" for h in hosts_of(lab)),
             *(directory / f"{h.name}.holder.pid" for h in hosts_of(lab))]
    result = session.runner.query(["cat", *map(str, files)], "the PIDs of the lab's namespaces")
    words = result.stdout.split()
    if not result.ok or len(words) != len(files) or not all(w.isdigit() for w in words):
        raise OperationFailed(f"could not read the lab's PIDs from {directory}: {result.stderr.strip()}")
    count = len(hosts_of(lab))
    values = [int(w) for w in words]
    return {"lab": values[0],
            "hosts": {h.name: v for h, v in zip(hosts_of(lab), values[1:1 + count], strict=True)},
            "holders": {h.name: v for h, v in zip(hosts_of(lab), values[1 + count:], strict=True)}}


def _write_state(directory: Path, lab: dict[str, Any], pids: dict[str, Any]) -> None:
    state = {"version": 1, "name": lab["name"], **pids,
             "cgroup_parents": {h.name: cgroup_parent(lab["name"], h.name) for h in hosts_of(lab)}}
    path = directory / "state.json"
    path.with_suffix(".tmp").write_text(json.dumps(state, indent=2) + "\n")
    path.with_suffix(".tmp").replace(path)


def _in_host(session, argv: list[str], note: str) -> int:
    """A host's wrapdock on this terminal (its own trail shows as it runs); in print-only, a script line."""
    if session.print_only:
        session.printed.append(Plan(note, [cmd(*argv, note=note)]))
        return 0
    return session.runner.attach(Step(tuple(argv), note))


def up(session, lab: dict[str, Any]) -> None:
    """The hosts and their wiring, then each host's share through its own wrapdock; on a failure the
    hosts are stopped again (killing a host ends everything in it) and the lab's directory goes."""
    from wrapdock.errors import OperationFailed

    session.require_root()
    directory = lab_dir(session.state_dir, lab["name"])
    if not session.print_only and directory.exists():
        raise UsageError(f"lab {lab['name']} is already up (its state: {directory}): `wrapdock lab down "
                         f"{lab['name']}` first")
    hosts = hosts_of(lab)
    if session.print_only:
        for plan in (start_plan(lab, directory), wire_plan(lab, directory, {})):
            session.printed.append(plan)
        if needs_etcd(lab):
            session.printed.append(etcd_plan(directory, pid_word(None, directory / "lab.pid")))
        for host in hosts:
            pid = pid_word(None, directory / f"{host.name}.pid")
            for args in cluster_commands(lab, host):
                _in_host(session, host_wrapdock(lab["name"], host, pid, *args),
                         f"host {host.name}: its part of a cluster network (wrapdock network {args[3]})")
        for host in hosts:
            pid = pid_word(None, directory / f"{host.name}.pid")
            session.printed.append(handover_plan(lab, host, pid))
            _in_host(session, host_wrapdock(lab["name"], host, pid, "lab", "up", f"{HOST_RUN_LAB}/lab.json"),
                     f"host {host.name}: its share of the lab, by its own wrapdock")
        for host in hosts:
            pid = pid_word(None, directory / f"{host.name}.pid")
            for name in cluster_networks_of(lab, host):
                _in_host(session, host_wrapdock(lab["name"], host, pid, "network", "sync", name),
                         f"host {host.name}: wrapdock network sync {name}")
        return
    _say(f"==> lab {lab['name']}: {len(hosts)} host(s), each a sandbox host of its own")
    completed = session.runner.apply(start_plan(lab, directory))
    try:
        pids = _pids_from_files(session, directory, lab)
        _write_state(directory, lab, pids)
        completed += session.runner.apply(wire_plan(lab, directory, {"": pids["lab"], **pids["hosts"]}))
        if needs_etcd(lab):
            completed += session.runner.apply(etcd_plan(directory, str(pids["lab"])))
            pids["etcd"] = int((directory / "etcd.pid").read_text().split()[0])
            _write_state(directory, lab, pids)
        for host in hosts:  # cluster networks first: created on their first host, joined on the others
            pid = str(pids["hosts"][host.name])
            for args in cluster_commands(lab, host):
                code = _in_host(session, host_wrapdock(lab["name"], host, pid, *args, trail=session.trail_mode),
                                f"host {host.name}: its part of a cluster network (wrapdock network {args[3]})")
                if code != 0:
                    raise OperationFailed(f"host {host.name}: `wrapdock {shlex.join(args)}` failed (exit {code}); "
                                          "the lab's hosts were stopped")
        for host in hosts:
            pid = str(pids["hosts"][host.name])
            completed += session.runner.apply(handover_plan(lab, host, pid))
            _say(f"==> host {host.name} ({host.address}): wrapdock lab up, inside the host")
            code = _in_host(session, host_wrapdock(lab["name"], host, pid, "lab", "up", f"{HOST_RUN_LAB}/lab.json",
                                                         trail=session.trail_mode),
                            f"host {host.name}: its share of the lab, by its own wrapdock")
            if code != 0:
                raise OperationFailed(f"host {host.name}: `wrapdock lab up` failed (exit {code}, its own trail is "
                                      "above); the lab's hosts were stopped")
        for host in hosts:  # every container is up: each host learns the others' names (and FDB) from etcd
            pid = str(pids["hosts"][host.name])
            for name in cluster_networks_of(lab, host):
                code = _in_host(session, host_wrapdock(lab["name"], host, pid, "network", "sync", name,
                                                       trail=session.trail_mode),
                                f"host {host.name}: wrapdock network sync {name}")
                if code != 0:
                    raise OperationFailed(f"host {host.name}: `wrapdock network sync {name}` failed (exit {code})")
    except BaseException:
        _say(f"==> lab {lab['name']} failed: stopping its hosts")
        session.runner.rollback(completed)
        raise


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s*Z", status, re.MULTILINE)


def down(session, lab: dict[str, Any]) -> list[str]:
    """Each host's wrapdock takes its share down, then the lab's processes are killed by their PIDs."""
    session.require_root()
    directory = lab_dir(session.state_dir, lab["name"])
    state = read_state(directory)
    if state is None and directory.is_dir():  # an up that died before it wrote its state: the PID files
        state = _state_from_pid_files(directory, lab)
    if state is None:
        if session.print_only:
            session.printed.append(_placeholder_stop_plan(lab, directory))
        return []
    pids = Pids(lab=state.get("lab"), hosts=state.get("hosts"), holders=state.get("holders"),
                etcd=state.get("etcd"))
    from wrapdock.errors import OperationFailed

    parents = state.get("cgroup_parents") or {}
    stopped = []
    for host in hosts_of(lab):
        pid = (pids.hosts or {}).get(host.name)
        if not _alive(pid):
            continue
        stopped.append(host.name)
        note = f"host {host.name}: wrapdock lab down, inside the host"
        try:  # its own trail is not needed: killing the host below ends whatever this leaves
            session.carry_out(Plan(note, [cmd(*host_wrapdock(lab["name"], host, str(pid), "--quiet", "lab", "down",
                                                              f"{HOST_RUN_LAB}/lab.json", parents=parents),
                                              note=note)]))
        except OperationFailed as exc:
            _say(f"==> host {host.name}: {exc.message}; stopping the host ends what is left")
    session.carry_out(stop_plan(lab, directory, [str(p) for p in pids.all()], parents))
    return stopped


def _state_from_pid_files(directory: Path, lab: dict[str, Any]) -> dict[str, Any]:
    def read(name: str) -> int | None:
        try:
            text = (directory / name).read_text().split()
        except OSError:
            return None
        return int(text[0]) if text and text[0].isdigit() else None

    hosts = hosts_of(lab)
    return {"lab": read("lab.pid"), "etcd": read("etcd.pid"),
            "hosts": {h.name: p for h in hosts if (p := read(f"{h.name}.pid")) is not None},
            "holders": {h.name: p for h in hosts if (p := read(f"{h.name}.holder.pid")) is not None}}


def _placeholder_stop_plan(lab: dict[str, Any], directory: Path) -> Plan:
    words = [pid_word(None, directory / "lab.pid")]
    words += [pid_word(None, directory / f"{h.name}.holder.pid") for h in hosts_of(lab)]
    if needs_etcd(lab):
        words.append(pid_word(None, directory / "etcd.pid"))
    return stop_plan(lab, directory, words)


# -- checks ---------------------------------------------------------------------------------------
def addresses_in_hosts(lab: dict[str, Any], pids: dict[str, int]) -> dict[str, str]:
    """Each container's first address, from its host's own state (read through /proc/PID/root)."""
    from wrapdock.state import StateStore

    found: dict[str, str] = {}
    for host in hosts_of(lab):
        pid = pids.get(host.name)
        if not _alive(pid):
            continue
        store = StateStore(Path(f"/proc/{pid}/root{HOST_STATE_DIR}"))
        for record in store.all("container"):
            if record.get("endpoints") and record["name"] in lab.get("containers", {}):
                found[record["name"]] = record["endpoints"][0]["address"]
    return found


def rewrite_check(lab: dict[str, Any], check: dict[str, Any], here: str | None,
                  addresses: dict[str, str]) -> dict[str, Any]:
    """A check as the host `here` runs it: names of containers elsewhere become their addresses (the lab
    resolves them, as a one-host lab does), the host itself becomes `host`."""
    from urllib.parse import urlsplit, urlunsplit

    containers = lab.get("containers", {})

    def resolve(name: str) -> str:
        if name in containers and containers[name]["host"] != here:
            return addresses.get(name, name)
        return name

    out = dict(check)
    if check["from"] in lab.get("hosts", {}):
        out["from"] = "host"
    if check.get("inside"):  # the source container resolves the name itself
        return out
    if "ping" in check:
        out["ping"] = resolve(check["ping"])
    for key in ("tcp", "udp"):
        if key in check:
            host, _, port = check[key].rpartition(":")
            out[key] = f"{resolve(host)}:{port}"
    if "http" in check:
        parts = urlsplit(check["http"])
        netloc = resolve(parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        out["http"] = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return out


def run_checks(session, lab: dict[str, Any]):
    """Each host runs the checks that start there (its wrapdock's `lab check`, JSON back); the checks
    from outside run in the lab namespace. Any check that could not run is an error."""
    from wrapdock.checkoutcome import Outcome, classify
    from wrapdock.lab import CheckResult, check_command

    checks = lab.get("checks", [])
    directory = lab_dir(session.state_dir, lab["name"])
    state = read_state(directory)
    results: list[CheckResult | None] = [None] * len(checks)

    def error(i: int, why: str) -> CheckResult:
        return CheckResult(checks[i].get("name", f"check {i + 1}"), checks[i]["from"], "",
                           checks[i].get("expect", "ok"), "error", 0.0, why)

    if not state:
        return [error(i, f"lab {lab['name']} is not up (no state in {directory})") for i in range(len(checks))]
    pids = state.get("hosts", {})
    addresses = addresses_in_hosts(lab, pids)
    for host in hosts_of(lab):
        mine = [i for i, c in enumerate(checks) if source_host(lab, c["from"]) == host.name]
        if not mine:
            continue
        pid = pids.get(host.name)
        if not _alive(pid):
            for i in mine:
                results[i] = error(i, f"host {host.name} is not running")
            continue
        session.carry_out(handover_plan(lab, host, str(pid), "checks.json",
                                        [rewrite_check(lab, checks[i], host.name, addresses) for i in mine]))
        answer = session.runner.query(host_wrapdock(lab["name"], host, str(pid), "--quiet", "lab", "check",
                                                    f"{HOST_RUN_LAB}/checks.json", "--format", "json",
                                                    parents=state.get("cgroup_parents")),
                                      f"host {host.name}: its checks, by its own wrapdock")
        try:
            got = json.loads(answer.stdout)
        except ValueError:
            got = None
        if not isinstance(got, list) or len(got) != len(mine):
            why = (answer.stderr.strip().splitlines() or [f"exit {answer.exit_code}"])[-1]
            for i in mine:
                results[i] = error(i, f"host {host.name}: lab check did not answer: {why}")
            continue
        for i, item in zip(mine, got, strict=True):
            results[i] = CheckResult(item["name"], checks[i]["from"], item["target"], item["expect"], item["got"],
                                     item["seconds"], item["detail"])
    import time

    lab_pid = state.get("lab")
    for i, check in enumerate(checks):
        if results[i] is not None:
            continue
        started = time.monotonic()
        probe = {**rewrite_check(lab, check, None, addresses), "from": "host"}
        argv, target = check_command(lab, probe, addresses, {})
        if not _alive(lab_pid):
            outcome = Outcome("error", "the lab namespace (outside) is not running")
        else:
            result = session.runner.query(["nsenter", "--target", str(lab_pid), "--net", "--", *argv],
                                          f"check {i + 1}: {check.get('name', '')}")
            outcome = classify(result.exit_code, f"{result.stdout}\n{result.stderr}")
            if outcome.got == "ok" and "contains" in check and check["contains"] not in result.stdout:
                outcome = Outcome("fail", f"answer does not contain {check['contains']!r}")
        results[i] = CheckResult(check.get("name", f"check {i + 1}"), check["from"], target,
                                 check.get("expect", "ok"), outcome.got, time.monotonic() - started, outcome.reason)
    return [r for r in results if r is not None]


# -- scripts --------------------------------------------------------------------------------------
def host_view(host: LabHost):
    """An executor that answers a host's read-only queries as the lab host would (its eth0 on the
    underlay, its uplink, the default route), for planning its script before it exists; any other
    command goes to this machine, as a one-host `lab script` does."""
    from wrapdock import hostinfo
    from wrapdock.runner import Result, sh_executor

    links = [{"ifname": "lo", "mtu": 65536, "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
             {"ifname": "eth0", "mtu": 1500, "addr_info": [{"family": "inet", "local": str(host.address),
                                                            "prefixlen": UNDERLAY.prefixlen}]},
             {"ifname": "uplink", "mtu": 1500, "addr_info": [{"family": "inet", "local": str(host.uplink),
                                                              "prefixlen": INTERNET.prefixlen}]}]
    routes = [{"dst": "default", "gateway": str(OUTSIDE_ADDRESS), "dev": "uplink"},
              {"dst": str(UNDERLAY), "dev": "eth0"}, {"dst": str(INTERNET), "dev": "uplink"}]

    def execute(argv: Sequence[str], stdin: str | None) -> Result:
        if hostinfo.is_host_query(argv, stdin):  # the lab host's links and routes; iptables as this machine's
            saved = sh_executor(hostinfo.SAVE_ARGV, None)
            return Result(tuple(argv), saved.exit_code,
                          hostinfo.host_answer(json.dumps(links), json.dumps(routes), "1", saved.stdout),
                          saved.stderr, saved.seconds)
        return sh_executor(argv, stdin)

    return execute


def scripts(session_args: dict[str, Any], lab: dict[str, Any], argv: list[str]) -> dict[str, str]:
    """One standalone script per host (its share: networks, containers, the checks that start there),
    and `underlay`: the lab namespace, the hosts, their wiring, etcd, and the checks from outside."""
    from wrapdock import lab as lab_module
    from wrapdock.render import comment_text, script_body

    hosts = hosts_of(lab)
    addresses: dict[str, str] = {}
    # a cluster network is planned as a static stand-in (the same bridge, the range etcd gives a fresh lab:
    # the one derived from the host's address), whose own plans are left out: wrapdock makes the real one
    standins = {name for name, spec in lab.get("networks", {}).items() if spec.get("cluster")}
    for host in hosts:
        with _cgroup_parent_of(lab, host):
            addresses.update(lab_module.simulate(session_args, share(lab, host, standin=True), host_view(host),
                                                 standins).addresses)
    checks = lab.get("checks", [])
    directory = lab_dir(session_args.get("state_dir", Path("/var/run/wrapdock")), lab["name"])
    out: dict[str, str] = {}
    plans = [start_plan(lab, directory), wire_plan(lab, directory, {})]
    if needs_etcd(lab):
        plans.append(etcd_plan(directory, pid_word(None, directory / "lab.pid")))
    outside = [{**rewrite_check(lab, c, None, addresses), "from": "host"} for c in checks
               if source_host(lab, c["from"]) is None]
    lab_ns = ["nsenter", "--target", pid_word(None, directory / "lab.pid"), "--net", "--"]
    lines = []
    for i, check in enumerate(outside):
        command, _ = lab_module.check_command(lab, check, addresses, {})
        words = [check.get("name", f"check {i + 1}"), check.get("expect", "ok"), check.get("contains", ""), "",
                 "", "", "", ""]
        lines.append(f"    check {shlex.join(words)} {shlex.join([*lab_ns, *command])}")
    from wrapdock import resources
    from wrapdock.checkoutcome import RAN_CODES, bash_error_patterns

    enter = {h.name: f'nsenter --target "$(cat {directory / (h.name + ".pid")})" --all --' for h in hosts}
    header = (f"{lab.get('description', '')}. This script: the lab namespace (underlay, internet 203.0.113.1"
              f"{', etcd' if needs_etcd(lab) else ''}), the hosts {', '.join(h.name for h in hosts)} and their wiring; "
              "then run each host's script inside it: " + "; ".join(f"{enter[h.name]} bash {h.name}.sh up"
                                                                      for h in hosts))
    out["underlay"] = render_pids(resources.fill(resources.template("lab.sh.tmpl"), {
        "name": comment_text(f"{lab['name']} (underlay)"),
        "description": comment_text(header),
        "command": comment_text(shlex.join(["wrapdock", *argv])),
        "version": __import__("wrapdock").__version__,
        "up": lab_module._indent(script_body(plans)),
        "checks": "\n".join(lines) or "    :",
        "error_patterns": bash_error_patterns(),
        "ran_codes": "|".join(str(code) for code in RAN_CODES),
        "down": lab_module._indent(script_body([_placeholder_stop_plan(lab, directory)])),
    }))
    for host in hosts:
        mine = [rewrite_check(lab, c, host.name, addresses) for c in checks if source_host(lab, c["from"]) == host.name]
        # cluster networks live in etcd: wrapdock itself creates or joins them, and syncs after the containers
        before = [Plan(f"host {host.name}: its part of cluster network {args[-1] if args[3] == 'create' else args[4]}",
                       [cmd(*wrapdock_argv(), *args, note="cluster networks need wrapdock (their state is in etcd)")])
                  for args in cluster_commands(lab, host)]
        after = [Plan(f"host {host.name}: names and peers of cluster network {name} (run it again once every "
                      "host is up)", [cmd(*wrapdock_argv(), "network", "sync", name, note="wrapdock network sync")])
                 for name in cluster_networks_of(lab, host)]
        with _cgroup_parent_of(lab, host):
            out[host.name] = lab_module.script(session_args, share(lab, host, mine, standin=True), argv,
                                               host_view(host), before, after, standins)
    return out


@contextmanager
def _cgroup_parent_of(lab: dict[str, Any], host: LabHost) -> Iterator[None]:
    """Plan a host's script with the cgroup parent its wrapdock has live (the underlay's down removes it)."""
    parent = cgroup_parent(lab["name"], host.name)
    before = os.environ.get("WRAPDOCK_CGROUP_PARENT")
    os.environ["WRAPDOCK_CGROUP_PARENT"] = parent
    try:
        yield
    finally:
        if before is None:
            del os.environ["WRAPDOCK_CGROUP_PARENT"]
        else:
            os.environ["WRAPDOCK_CGROUP_PARENT"] = before


# -- graph ----------------------------------------------------------------------------------------
def graph(lab: dict[str, Any]) -> str:
    """Graphviz DOT: each host a cluster (its bridges, containers), overlays spanning the clusters,
    the underlay and the outside."""
    from wrapdock.lab import _attachments, _dot_id
    from wrapdock.netspec import parse_subnet

    lines = [f"graph {_dot_id('lab ' + lab['name'])} {{", "  rankdir=LR;", "  compound=true;",
             '  node [fontname="Helvetica"];',
             f'  underlay [shape=box, style=rounded, label={_dot_id(f"underlay {UNDERLAY}")}];',
             f'  outside [shape=cloud, label={_dot_id(f"outside {OUTSIDE_ADDRESS}")}];']
    if needs_etcd(lab):
        lines.append(f'  etcd [shape=cylinder, label={_dot_id(f"etcd {LAB_UNDERLAY_ADDRESS}:{ETCD_PORT}")}];')
        lines.append("  etcd -- underlay;")
    networks = lab.get("networks", {})
    for name, spec in networks.items():
        if spec.get("driver") == "vxlan":
            mode = "cluster (etcd)" if spec.get("cluster") else "static peers"
            label = f"{name} (vxlan, {mode})\\n{parse_subnet(spec['subnet']).network}"
            lines.append(f"  {_dot_id('net:' + name)} [shape=ellipse, style=filled, fillcolor=lightsalmon, "
                         f"label={_dot_id(label)}];")
    for host in hosts_of(lab):
        lines.append(f"  subgraph {_dot_id('cluster_' + host.name)} {{")
        lines.append(f"    label={_dot_id(f'{host.name} {host.address}')};")
        lines.append(f"    {_dot_id('host:' + host.name)} [shape=box3d, label={_dot_id(host.name)}];")
        for name, spec in networks.items():
            if spec.get("driver") != "vxlan" and spec.get("host") == host.name:
                label = f"{name}\\n{parse_subnet(spec['subnet']).network}"
                lines.append(f"    {_dot_id('net:' + name)} [shape=ellipse, style=filled, fillcolor=lightblue, "
                             f"label={_dot_id(label)}];")
                lines.append(f"    {_dot_id('host:' + host.name)} -- {_dot_id('net:' + name)};")
        for name, spec in lab.get("containers", {}).items():
            if spec["host"] != host.name:
                continue
            ports = spec.get("ports", [])
            label = name + (("\\n" + "\\n".join(f"-p {p}" for p in ports)) if ports else "")
            lines.append(f"    {_dot_id('c:' + name)} [shape=box, label={_dot_id(label)}];")
        lines.append("  }")
        lines.append(f"  {_dot_id('host:' + host.name)} -- underlay [label={_dot_id(f'eth0 {host.address}')}];")
        lines.append(f"  {_dot_id('host:' + host.name)} -- outside [style=dashed, "
                     f"label={_dot_id(f'uplink {host.uplink}')}];")
        for name, spec in networks.items():
            if spec.get("driver") == "vxlan" and host.name in network_hosts(spec):
                lines.append(f"  {_dot_id('host:' + host.name)} -- {_dot_id('net:' + name)} [style=dotted];")
    for name, spec in lab.get("containers", {}).items():
        for i, (network, ip) in enumerate(_attachments(spec)):
            edge = f"eth{i}" + (f" {ip}" if ip else "")
            lines.append(f"  {_dot_id('c:' + name)} -- {_dot_id('net:' + network)} [label={_dot_id(edge)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def host_rows(session, lab: dict[str, Any]) -> list[list[str]]:
    """HOST, UNDERLAY, UPLINK, PID (while up), the command that enters it (its wrapdock included)."""
    state = read_state(lab_dir(session.state_dir, lab["name"])) or {}
    rows = []
    for host in hosts_of(lab):
        pid = (state.get("hosts") or {}).get(host.name)
        up = _alive(pid)
        enter = shlex.join(host_wrapdock(lab["name"], host, str(pid), parents=state.get("cgroup_parents"))
                           [:-len(wrapdock_argv())]) if up else ""
        rows.append([host.name, str(host.address), str(host.uplink), str(pid) if up else "-", enter])
    return rows
