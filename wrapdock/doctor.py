"""`wrapdock doctor`: what is wrong with this host for wrapdock, and the command that fixes each thing.

Three layers, so that the analysis can be tested without a host:

  gather(session) -> Facts        reads: `ip -j ...`, `iptables-save` through runner.query (they show in
                                  the trail), /proc and /sys files, the state records
  assess(facts) -> Assessment     pure: which records disagree with the host, what is orphaned
  findings(facts, assessment)     pure: one Finding (severity, one-line explanation, fix commands) each

`wrapdock gc` (gc.py) acts on the same Assessment, so what doctor says gc would fix is what gc fixes.
vxlan networks have checks of their own (FDB against the peers, VTEP, MAC, MTU, other VXLAN devices,
peer probes) in overlaycheck.py, called from each layer here.

"Provably wrapdock's" is strict: a veth named wd + 10 hex + 1-2 digits; a bridge only when orphaned
wrapdock rules name it, no other rule does and only wrapdock veths are on it; a network namespace
only when it holds the peer of such a veth; a cgroup only when it is named by a container id under
wrapdock's parent cgroup; a directory only when it is named by a container id in DATA_DIR/containers;
a rule only when its comment is wrapdock's. Anything else is not reported and never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from wrapdock import cgroups, names, overlaycheck
from wrapdock.cgroups import CgroupLayout
from wrapdock.errors import EnvironmentProblem, StateError
from wrapdock.findings import ERROR, WARNING, Finding
from wrapdock.model import Network
from wrapdock.overlaycheck import OverlayFacts, OverlayIssues, VxlanInfo, parse_vxlan_info
from wrapdock.plan import Step
from wrapdock.plans import iptables as ipt
from wrapdock.plans import network as network_plans
from wrapdock.plans.container import ContainerPaths
from wrapdock.plans.endpoint import container_comment
from wrapdock.session import Session
from wrapdock.shell import quote
from wrapdock.state import FOLDERS, reference_errors

# tool -> the Debian package that has it
TOOLS = {
    "ip": "iproute2", "iptables": "iptables", "iptables-restore": "iptables", "iptables-save": "iptables",
    "nsenter": "util-linux", "unshare": "util-linux", "setpriv": "util-linux", "setsid": "util-linux",
    "busybox": "busybox-static", "sysctl": "procps", "script": "bsdutils",  # script: the pty of -t
}
UTIL_LINUX_MIN = (2, 38)  # setsid -f, nsenter/unshare options the plans use

VETH_NAME = re.compile(r"wd[0-9a-f]{10}[0-9]{1,2}")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
NETWORK_OWNER = names.network_comment("")  # "wrapdock:network="
CONTAINER_OWNER = container_comment("")  # "wrapdock:container="
MOUNT_PREFIX = "wrapdock-"
GC = "wrapdock gc"


# -- facts: what was read --------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """A network link as `ip -j link`/`addr` showed it."""

    name: str
    kind: str  # linkinfo.info_kind: "bridge", "veth", ... ("" when the kernel gives none)
    master: str | None = None
    up: bool = True
    addresses: tuple[str, ...] = ()  # IPv4 CIDRs, e.g. "10.0.0.1/24"
    netnsid: int | None = None  # the peer's network namespace (veth), as `ip netns list` numbers it
    alias: str = ""  # wrapdock's bridges carry wrapdock:network=NAME
    mtu: int = 1500
    mac: str = ""
    vxlan: VxlanInfo | None = None  # a VXLAN device's VNI, port, local and lower device


@dataclass(frozen=True)
class Route:
    """An IPv4 route of the main table, with its text for findings."""

    dst: IPv4Network
    dev: str | None
    text: str


@dataclass(frozen=True)
class Rule:
    """One `-A CHAIN ...` line of iptables-save."""

    table: str
    chain: str
    spec: tuple[str, ...]

    @property
    def comment(self) -> str | None:
        return _after(self.spec, "--comment")

    @property
    def target(self) -> str | None:
        return _after(self.spec, "-j") or _after(self.spec, "-g")

    @property
    def interfaces(self) -> set[str]:
        return {self.spec[i + 1] for i, word in enumerate(self.spec[:-1]) if word in ("-i", "-o")}

    @property
    def wrapdocks(self) -> bool:
        comment = self.comment or ""
        return comment == ipt.SKELETON_COMMENT or comment.startswith(names.COMMENT_PREFIX + ":")

    def delete_argv(self) -> tuple[str, ...]:
        return (*ipt.IPTABLES, "-t", self.table, "-D", self.chain, *self.spec)


@dataclass(frozen=True)
class Iptables:
    """The chains, policies and rules `iptables-save` showed."""

    chains: frozenset[tuple[str, str]] = frozenset()
    policies: dict[tuple[str, str], str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo that matters to wrapdock."""

    source: str
    point: str
    fstype: str


@dataclass(frozen=True)
class Runtime:
    """A container's process, read from the files its init and shim write (procstatus)."""

    live: bool = False
    started: bool = False  # pid and stat files exist: it ran at some point
    starting: bool = False  # a pid file but no stat file yet: `start` is under way
    exit_recorded: bool = False
    dir_exists: bool = True
    owner_alive: bool = False  # phase "creating": the wrapdock process that writes it still runs


@dataclass
class Facts:
    """Everything doctor and gc read from the host, so that judging it is pure (and testable without root)."""

    # where wrapdock keeps things
    data_dir: Path = Path("/var/lib/wrapdock")
    # the environment
    euid: int = 0
    tools: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(TOOLS, True))
    util_linux: tuple[int, int] | None = None
    busybox: str | None = "/bin/busybox"
    busybox_static: bool | None = True
    sysctl: dict[str, str] = field(default_factory=dict)  # "ip_forward", "bridge-nf-call-iptables", ...
    backends_with_rules: dict[str, bool] = field(default_factory=dict)  # "legacy"/"nft" -> has rules
    # the host
    links: dict[str, Link] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    netns: dict[str, int | None] = field(default_factory=dict)  # name -> id
    iptables: Iptables | None = field(default_factory=Iptables)  # None: could not be read
    iptables_error: str | None = None
    cgroup_layout: CgroupLayout | None = None
    cgroups: dict[str, list[Path]] = field(default_factory=dict)  # container id -> its cgroup dirs
    busy_cgroups: set[Path] = field(default_factory=set)  # dirs that still hold processes
    container_dirs: dict[str, Path] = field(default_factory=dict)  # id -> DATA_DIR/containers/ID
    dir_pids: dict[str, int] = field(default_factory=dict)  # id -> live PID of an unrecorded dir
    layer_dirs: dict[str, Path] = field(default_factory=dict)  # name in DATA_DIR/layers -> path (HEX, HEX.partial)
    layer_links: dict[str, Path] = field(default_factory=dict)  # name in DATA_DIR/l -> path
    used_layers: set[str] | None = field(default_factory=set)  # HEX of every image's layers; None: unknown
    mounts: list[Mount] = field(default_factory=list)
    # the state
    networks: list[Network] = field(default_factory=list)
    ipam: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: list[dict[str, Any]] = field(default_factory=list)
    cni: list[dict[str, Any]] = field(default_factory=list)  # attachments made for CNI callers
    runtime: dict[str, Runtime] = field(default_factory=dict)
    broken_state: list[str] = field(default_factory=list)
    # vxlan networks: FDB, containers' MTU, peer probes (overlaycheck)
    overlay: OverlayFacts = field(default_factory=OverlayFacts)


# -- parsers (pure) ----------------------------------------------------------------------------------
def _after(words: tuple[str, ...], flag: str) -> str | None:
    for i, word in enumerate(words[:-1]):
        if word == flag:
            return words[i + 1]
    return None


def parse_links(text: str) -> dict[str, Link]:
    """`ip -j -d addr show`: links with their kind, master, state and IPv4 addresses."""
    links: dict[str, Link] = {}
    for entry in json.loads(text or "[]"):
        addresses = tuple(f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])
                          if a.get("family") == "inet")
        links[entry["ifname"]] = Link(
            name=entry["ifname"], kind=entry.get("linkinfo", {}).get("info_kind", ""), master=entry.get("master"),
            up="UP" in entry.get("flags", []), addresses=addresses, netnsid=entry.get("link_netnsid"),
            alias=entry.get("ifalias", ""), mtu=entry.get("mtu", 1500), mac=entry.get("address", ""),
            vxlan=parse_vxlan_info(entry))
    return links


def parse_routes(text: str) -> list[Route]:
    routes = []
    for entry in json.loads(text or "[]"):
        dst = entry.get("dst", "default")
        if dst == "default":
            continue
        kind = entry.get("type")
        dev = entry.get("dev")
        text_ = " ".join(w for w in (kind if kind and kind != "unicast" else None, dst, f"dev {dev}" if dev else None)
                         if w)
        routes.append(Route(IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False), dev, text_))
    return routes


def parse_netns(text: str) -> dict[str, int | None]:
    """`ip -j netns list` (empty output when there is none)."""
    return {entry["name"]: entry.get("id") for entry in json.loads(text.strip() or "[]")}


def parse_iptables_save(text: str) -> Iptables:
    table = ""
    chains: set[tuple[str, str]] = set()
    policies: dict[tuple[str, str], str] = {}
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            words = line[1:].split()
            chains.add((table, words[0]))
            if len(words) > 1 and words[1] != "-":
                policies[(table, words[0])] = words[1]
        elif line.startswith("-A "):
            words = shlex.split(line)
            rules.append(Rule(table, words[1], tuple(words[2:])))
    return Iptables(frozenset(chains), policies, tuple(rules))


def has_rules(save_output: str) -> bool:
    return any(line.startswith("-A ") for line in save_output.splitlines())


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mounts.append(Mount(source=_unescape(tail[1]), point=_unescape(fields[4]), fstype=tail[0]))
    return mounts


def parse_util_linux(text: str) -> tuple[int, int] | None:
    match = re.search(r"util-linux\s+(?:version\s+)?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def elf_is_static(data: bytes) -> bool | None:
    """Whether an ELF executable has no program interpreter (PT_INTERP); None if it is no ELF file."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    order = "little" if data[5] == 1 else "big"

    def num(offset: int, size: int) -> int:
        return int.from_bytes(data[offset:offset + size], order)

    if data[4] == 2:
        phoff, phentsize, phnum = num(0x20, 8), num(0x36, 2), num(0x38, 2)
    else:
        phoff, phentsize, phnum = num(0x1C, 4), num(0x2A, 2), num(0x2C, 2)
    for index in range(phnum):
        start = phoff + index * phentsize
        if start + 4 > len(data):
            return None
        if num(start, 4) == 3:  # PT_INTERP: the dynamic loader
            return False
    return True


# -- gather (reads the host) ----------------------------------------------------------------------
def _read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_state(session: Session, facts: Facts) -> None:
    store = session.state
    loaded: dict[str, list[dict[str, Any]]] = {}
    for kind in ("network", "ipam", "container", "cni", "lease"):
        loaded[kind] = []
        folder = store.root / FOLDERS[kind]
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                record = store.get(kind, path.stem)
            except StateError as exc:
                facts.broken_state.append(exc.message)
                continue
            if record is None:
                continue
            reference = reference_errors(kind, record)  # jsonschema itself, the reference checker
            if reference:
                facts.broken_state.append(f"{path}: {reference[0]}")
                continue
            loaded[kind].append(record)
    for record in loaded["network"]:
        try:
            facts.networks.append(Network.from_record(record))
        except (KeyError, ValueError) as exc:
            facts.broken_state.append(f"network record {record.get('name')}: {exc}")
    facts.ipam = {record["network"]: record for record in loaded["ipam"]}
    for lease in loaded["lease"]:  # one file per lease (wrapdock/leases.py), listed as the record once listed them
        ipam = facts.ipam.setdefault(lease["network"], {"network": lease["network"], "allocations": {}})
        ipam["allocations"][lease["address"]] = {key: lease[key] for key in ("owner", "time") if key in lease}
    facts.containers = loaded["container"]
    facts.cni = loaded["cni"]


def _read_runtime(facts: Facts) -> None:
    from wrapdock.procstatus import live_pid

    for record in facts.containers:
        paths = ContainerPaths(facts.data_dir / "containers" / record["id"])
        has_pid, has_stat = paths.pidfile.exists(), paths.statfile.exists()
        facts.runtime[record["id"]] = Runtime(
            live=live_pid(paths) is not None, started=has_pid and has_stat, starting=has_pid and not has_stat,
            exit_recorded=paths.exitfile.exists(), dir_exists=paths.dir.is_dir(),
            owner_alive=_pid_alive(record.get("owner_pid")) if record["phase"] == "creating" else False)


def _read_cgroups(facts: Facts) -> None:
    try:
        layout = cgroups.detect()
    except EnvironmentProblem:
        return
    facts.cgroup_layout = layout
    for parent in layout.parent_dirs().values():
        if not parent.is_dir():
            continue
        for child in sorted(parent.iterdir()):
            if child.is_dir() and CONTAINER_ID.fullmatch(child.name):
                facts.cgroups.setdefault(child.name, []).append(child)
                if _read(child / "cgroup.procs"):
                    facts.busy_cgroups.add(child)


def _read_container_dirs(facts: Facts) -> None:
    from wrapdock.procstatus import live_pid

    folder = facts.data_dir / "containers"
    if not folder.is_dir():
        return
    recorded = {r["id"] for r in facts.containers}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.is_symlink() and CONTAINER_ID.fullmatch(child.name):
            facts.container_dirs[child.name] = child
            if child.name not in recorded:
                pid = live_pid(ContainerPaths(child))
                if pid is not None:
                    facts.dir_pids[child.name] = pid


def _read_layers(session: Session, facts: Facts) -> None:
    """The image store's layer directories and links, and the layers image records name."""
    for folder, found in (("layers", facts.layer_dirs), ("l", facts.layer_links)):
        with contextlib.suppress(OSError):  # no such folder: nothing stored yet
            found.update({entry.name: Path(entry.path) for entry in os.scandir(facts.data_dir / folder)})
    if not facts.layer_dirs and not facts.layer_links:
        return
    try:
        records = session.images.all("image")
    except StateError as exc:  # a layer of an unreadable record is not provably unused
        facts.broken_state.append(exc.message)
        facts.used_layers = None
        return
    facts.used_layers = {layer["diff_id"].split(":", 1)[1] for r in records for layer in r.get("layers") or []}


SYSCTLS = {
    "ip_forward": "/proc/sys/net/ipv4/ip_forward",
    "bridge-nf-call-iptables": "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "rp_filter.all": "/proc/sys/net/ipv4/conf/all/rp_filter",
    "rp_filter.default": "/proc/sys/net/ipv4/conf/default/rp_filter",
}


def _query_ok(session: Session, argv: tuple[str, ...], note: str) -> str:
    result = session.runner.query(argv, note)
    if not result.ok:
        raise EnvironmentProblem(f"`{quote(argv)}` failed (exit {result.exit_code}): {result.stderr.strip()}")
    return result.stdout


def gather(session: Session, environment: bool = True) -> Facts:
    """Read everything the checks need. `environment`: also the tools and iptables backends (doctor)."""
    facts = Facts(data_dir=session.data_dir, euid=os.geteuid())
    _read_state(session, facts)
    if environment:
        facts.tools = {tool: shutil.which(tool) is not None for tool in TOOLS}
        if facts.tools["setsid"]:
            version = session.runner.query(("setsid", "--version"), "doctor: util-linux version (setsid -f)")
            facts.util_linux = parse_util_linux(version.stdout + version.stderr)
        try:
            from wrapdock.images import host_busybox

            facts.busybox = host_busybox()
            with open(facts.busybox, "rb") as handle:
                facts.busybox_static = elf_is_static(handle.read(1 << 16))
        except (EnvironmentProblem, OSError):
            facts.busybox, facts.busybox_static = None, None
    facts.sysctl = {key: value for key, path in SYSCTLS.items() if (value := _read(path)) is not None}
    note = "read the host's links, addresses, routes and network namespaces"
    if facts.tools.get("ip", True):  # doctor without ip: reported as a missing tool
        facts.links = parse_links(_query_ok(session, ("ip", "-j", "-d", "addr", "show"), note))
        facts.routes = parse_routes(_query_ok(session, ("ip", "-j", "-4", "route", "show", "table", "main"), note))
        facts.netns = parse_netns(_query_ok(session, ("ip", "-j", "netns", "list"), note))
    for network in facts.networks:
        value = _read(f"/proc/sys/net/ipv4/conf/{network.bridge}/route_localnet")
        if value is not None:
            facts.sysctl[f"route_localnet.{network.bridge}"] = value
    if facts.euid == 0 and facts.tools.get("iptables-save", True):
        note = "read the iptables rules (wrapdock's carry an owner comment)"
        result = session.runner.query(("iptables-save",), note)
        if result.ok:
            facts.iptables = parse_iptables_save(result.stdout)
        else:
            facts.iptables, facts.iptables_error = None, f"exit {result.exit_code}: {result.stderr.strip()}"
        if environment:
            for backend in ("legacy", "nft"):
                command = f"iptables-{backend}-save"
                if shutil.which(command):
                    out = session.runner.query((command,), "doctor: which iptables backends hold rules")
                    facts.backends_with_rules[backend] = out.ok and has_rules(out.stdout)
    else:
        facts.iptables = None
        facts.iptables_error = "reading iptables needs root" if facts.euid else "iptables-save is not installed"
    _read_cgroups(facts)
    _read_container_dirs(facts)
    _read_layers(session, facts)
    facts.mounts = [m for m in parse_mountinfo(_read("/proc/self/mountinfo") or "")
                    if m.source.startswith(MOUNT_PREFIX)]
    _read_runtime(facts)
    overlaycheck.gather(session, facts, probe=environment)  # doctor probes the peers, gc does not
    return facts


# -- assessment (pure) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cut:
    """An endpoint whose plumbing is gone: its lease goes back and the record drops it."""

    container: str  # id
    network: str
    host_ifname: str
    reason: str
    veth_present: bool


@dataclass
class Assessment:
    """What doctor made of the facts: the problems found, grouped by the repair each needs."""

    abandoned: list[dict[str, Any]] = field(default_factory=list)  # phase creating, owner dead
    exit_unrecorded: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    veth_gone_live: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    detached_veths: list[tuple[dict[str, Any], dict[str, Any], Network]] = field(default_factory=list)
    netns_gone: list[dict[str, Any]] = field(default_factory=list)  # stopped, no endpoints left, no netns
    bridge_gone: list[Network] = field(default_factory=list)
    not_a_bridge: list[Network] = field(default_factory=list)
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # network -> what is missing
    missing_rules: dict[str, list[Step]] = field(default_factory=dict)  # network -> its missing rule steps
    masquerade_missing: list[Network] = field(default_factory=list)
    overlaps: list[tuple[Network, Route]] = field(default_factory=list)
    forwarding_off: bool = False
    skeleton_missing: list[str] = field(default_factory=list)
    skeleton_orphaned: bool = False
    skeleton_foreign: list[Rule] = field(default_factory=list)
    orphan_rules: dict[str, list[Rule]] = field(default_factory=dict)  # owner comment -> rules
    orphan_veths: list[Link] = field(default_factory=list)
    orphan_bridges: list[Link] = field(default_factory=list)
    orphan_vxlans: list[Link] = field(default_factory=list)  # VXLAN devices of networks that have no record
    overlay_broken: dict[str, list[str]] = field(default_factory=dict)  # vxlan network -> what is wrong
    overlays: dict[str, OverlayIssues] = field(default_factory=dict)  # vxlan network -> overlaycheck's findings
    orphan_netns: list[str] = field(default_factory=list)
    orphan_cgroups: list[Path] = field(default_factory=list)  # removable (empty, or emptied by a kill)
    busy_cgroups: list[Path] = field(default_factory=list)  # orphaned but still holding processes
    orphan_dirs: list[Path] = field(default_factory=list)
    orphan_layers: list[Path] = field(default_factory=list)  # layer dirs and links no image names
    orphan_processes: dict[str, int] = field(default_factory=dict)  # id -> PID (its dir has no record)
    orphan_leases: list[tuple[str, str, str]] = field(default_factory=list)  # (network, address, owner)
    orphan_ipam: list[str] = field(default_factory=list)
    cni_gone: list[dict[str, Any]] = field(default_factory=list)  # CNI attachments whose veth is gone
    mounts: list[Mount] = field(default_factory=list)  # wrapdock-* mounts (gc: those under DATA_DIR)

    @property
    def repairs(self) -> list[str]:
        """Networks whose create plan gc re-runs (each step an ensure)."""
        broken = {n.name for n in self.bridge_gone} | set(self.incomplete) | set(self.missing_rules)
        return sorted(broken)


def _rule_key(argv: Iterable[str]) -> tuple[str, str, str | None]:
    words = tuple(argv)
    table = _after(words, "-t") or "filter"
    action = next(i for i, w in enumerate(words) if w in ("-A", "-I", "-C", "-D"))
    return table, words[action + 1], _after(words, "-j")


def expected_rules(network: Network) -> list[Step]:
    """The network's own rules (made by one batch of its create plan), one ensure each."""
    return network_plans.own_rule_steps(network)


def _skeleton_expected() -> tuple[set[tuple[str, str]], list[Step]]:
    chains: set[tuple[str, str]] = set()
    rules: list[Step] = []
    for step in ipt.ensure_skeleton():
        if "-N" in step.argv:
            chains.add((_after(step.argv, "-t") or "filter", _after(step.argv, "-N") or ""))
        else:
            rules.append(step)
    return chains, rules


def _missing(expected: list[Step], present: list[Rule]) -> list[Step]:
    have = Counter((r.table, r.chain, r.target) for r in present)
    missing = []
    for step in expected:
        key = _rule_key(step.argv)
        if have[key] > 0:
            have[key] -= 1
        else:
            missing.append(step)
    return missing


def _assess_containers(facts: Facts, a: Assessment) -> None:
    networks = {n.name: n for n in facts.networks}
    for record in facts.containers:
        rt = facts.runtime.get(record["id"], Runtime())
        if record["phase"] == "creating":
            if not rt.owner_alive:
                a.abandoned.append(record)
            continue  # a live `run` is still setting it up: not ours to judge
        stopped = not rt.live and not rt.starting
        if stopped and rt.started and not rt.exit_recorded:
            a.exit_unrecorded.append(record)
        netns = record.get("netns")
        netns_there = bool(netns) and netns in facts.netns
        kept = 0
        for endpoint in record["endpoints"]:
            veth = facts.links.get(endpoint["host_ifname"])
            network = networks.get(endpoint["network"])
            reason = None
            if network is None:
                reason = f"network {endpoint['network']} has no record"
            elif stopped and not netns_there:
                reason = f"its network namespace {netns} is gone"
            elif stopped and veth is None:
                reason = f"its veth {endpoint['host_ifname']} is gone"
            if reason is not None:
                a.cuts.append(Cut(record["id"], endpoint["network"], endpoint["host_ifname"], reason,
                                  veth is not None))
                continue
            kept += 1
            if veth is None:
                a.veth_gone_live.append((record, endpoint))
            elif veth.master != network.bridge and network not in a.not_a_bridge:
                a.detached_veths.append((record, endpoint, network))
        if stopped and netns and not netns_there and kept == 0 and rt.dir_exists:
            a.netns_gone.append(record)


def _assess_overlay(facts: Facts, network: Network) -> list[str]:
    """What a vxlan network lacks on this host. gc does not repair overlays (yet): it would need the
    vxlan create plan as ensures; `network rm` + `create` rebuilds one."""
    assert network.vxlan is not None
    wrong: list[str] = []
    bridge, device = facts.links.get(network.bridge), facts.links.get(network.vxlan.device)
    if bridge is None or bridge.kind != "bridge":
        wrong.append(f"bridge {network.bridge} gone")
    elif network.gateway_cidr not in bridge.addresses:
        wrong.append(f"no address {network.gateway_cidr}")
    if device is None or device.kind != "vxlan":
        wrong.append(f"VXLAN device {network.vxlan.device} gone")
    elif device.master != network.bridge:
        wrong.append(f"{network.vxlan.device} not on {network.bridge}")
    for link in (bridge, device):
        if link is not None and not link.up:
            wrong.append(f"{link.name} down")
    if facts.iptables is not None:
        tag = names.network_comment(network.name)
        lost = _missing(expected_rules(network), [r for r in facts.iptables.rules if r.comment == tag])
        if lost:
            wrong.append(f"{len(lost)} iptables rule(s) missing")
    return wrong


def _assess_networks(facts: Facts, a: Assessment) -> None:
    rules = facts.iptables.rules if facts.iptables else ()
    for network in facts.networks:
        if network.vxlan is not None:
            wrong = _assess_overlay(facts, network)
            if wrong:
                a.overlay_broken[network.name] = wrong
            continue
        link = facts.links.get(network.bridge)
        if link is None:
            a.bridge_gone.append(network)
        elif link.kind != "bridge":
            a.not_a_bridge.append(network)
            continue
        else:
            missing = []
            if network.gateway_cidr not in link.addresses:
                missing.append(f"address {network.gateway_cidr}")
            if not link.up:
                missing.append("state UP")
            if not network.internal and facts.sysctl.get(f"route_localnet.{network.bridge}", "1") != "1":
                missing.append("route_localnet=1")
            if missing:
                a.incomplete[network.name] = missing
        if facts.iptables is not None:
            tag = names.network_comment(network.name)
            lost = _missing(expected_rules(network), [r for r in rules if r.comment == tag])
            if lost:
                a.missing_rules[network.name] = lost
                if any(_rule_key(s.argv)[2] == ipt.MASQ_CHAIN for s in lost):
                    a.masquerade_missing.append(network)
        for route in facts.routes:
            if route.dst.overlaps(network.subnet) and route.dev != network.bridge:
                a.overlaps.append((network, route))
    if any(not n.internal for n in facts.networks) and facts.sysctl.get("ip_forward", "1") != "1":
        a.forwarding_off = True


def _assess_iptables(facts: Facts, a: Assessment) -> None:
    if facts.iptables is None:
        return
    view = facts.iptables
    chains, skeleton_rules = _skeleton_expected()
    ours = {c for c in view.chains if c[1].startswith("WRAPDOCK-")}
    present_skeleton = [r for r in view.rules if r.comment == ipt.SKELETON_COMMENT]
    networks = {n.name for n in facts.networks}
    containers = {r["id"] for r in facts.containers}
    for rule in view.rules:
        comment = rule.comment or ""
        owner_gone = ((comment.startswith(NETWORK_OWNER) and comment[len(NETWORK_OWNER):] not in networks)
                      or (comment.startswith(CONTAINER_OWNER) and comment[len(CONTAINER_OWNER):] not in containers))
        if owner_gone:
            a.orphan_rules.setdefault(comment, []).append(rule)
        elif not rule.wrapdocks and (rule.chain.startswith("WRAPDOCK-") or (rule.target or "").startswith("WRAPDOCK-")):
            a.skeleton_foreign.append(rule)
    if facts.networks:
        missing_chains = sorted(f"{t} {c}" for t, c in chains - view.chains)
        missing_rules = [quote(s.argv) for s in _missing(skeleton_rules, present_skeleton)]
        a.skeleton_missing = missing_chains + missing_rules
    elif (ours or present_skeleton) and not a.skeleton_foreign:
        a.skeleton_orphaned = True


def _assess_orphans(facts: Facts, a: Assessment) -> None:
    recorded = {r["id"]: r for r in facts.containers}
    owned_veths = {e["host_ifname"] for r in facts.containers for e in r["endpoints"]}
    recorded_netns = {r["netns"] for r in facts.containers if r.get("netns")}
    bridges = {n.bridge for n in facts.networks}
    for link in facts.links.values():
        if link.kind == "veth" and VETH_NAME.fullmatch(link.name) and link.name not in owned_veths:
            a.orphan_veths.append(link)
    # a network namespace is provably wrapdock's when it holds the peer of an orphaned wrapdock veth
    peer_ids = {v.netnsid for v in a.orphan_veths if v.netnsid is not None}
    a.orphan_netns = sorted(name for name, nsid in facts.netns.items()
                            if nsid is not None and nsid in peer_ids and name not in recorded_netns)
    # a bridge is provably wrapdock's when only orphaned wrapdock rules name it and only wrapdock veths are on it
    if facts.iptables is not None:
        named = {i for comment, rules in a.orphan_rules.items() if comment.startswith(NETWORK_OWNER)
                 for r in rules for i in r.interfaces}
        foreign = {i for r in facts.iptables.rules if not r.wrapdocks for i in r.interfaces}
        for name in sorted(named - foreign - bridges):
            link = facts.links.get(name)
            ports = [p for p in facts.links.values() if p.master == name]
            if link and link.kind == "bridge" and all(VETH_NAME.fullmatch(p.name) and p.name not in owned_veths
                                                      for p in ports):
                a.orphan_bridges.append(link)
    # a bridge whose alias names a network that has no record (wrapdock was killed while creating it)
    network_names = {n.name for n in facts.networks}
    for link in facts.links.values():
        owner = link.alias.removeprefix(NETWORK_OWNER) if link.alias.startswith(NETWORK_OWNER) else None
        if link.kind == "vxlan" and owner is not None and owner not in network_names:
            a.orphan_vxlans.append(link)
        if (link.kind == "bridge" and owner is not None and owner not in network_names
                and link.name not in bridges and link not in a.orphan_bridges):
            a.orphan_bridges.append(link)
    for container_id, dirs in sorted(facts.cgroups.items()):
        if container_id in recorded:
            continue
        for directory in dirs:
            killed = container_id in facts.dir_pids
            (a.busy_cgroups if directory in facts.busy_cgroups and not killed else a.orphan_cgroups).append(directory)
    for container_id, directory in sorted(facts.container_dirs.items()):
        if container_id not in recorded:
            a.orphan_dirs.append(directory)
            if container_id in facts.dir_pids:
                a.orphan_processes[container_id] = facts.dir_pids[container_id]
    networks = {n.name for n in facts.networks}
    abandoned = {r["id"] for r in a.abandoned}
    cni_held = {(r["network"], r["address"], f"cni:{r['container_id']}/{r['ifname']}") for r in facts.cni}
    for name, ipam in sorted(facts.ipam.items()):
        if name not in networks:
            a.orphan_ipam.append(name)
            continue
        for address, entry in sorted(ipam["allocations"].items()):
            owner = entry["owner"]
            record = recorded.get(owner)
            if owner in abandoned or (name, address, owner) in cni_held:
                continue
            if record is None or not any(e["network"] == name and e["address"] == address for e in record["endpoints"]):
                a.orphan_leases.append((name, address, owner))
    if facts.used_layers is not None:
        used = facts.used_layers
        a.orphan_layers = [path for name, path in sorted(facts.layer_links.items())
                           if not any(h.startswith(name) for h in used)]
        a.orphan_layers += [path for name, path in sorted(facts.layer_dirs.items()) if name not in used]
    # a CNI attachment whose veth is gone lost its namespace without a DEL (`ctr run -d`, a crashed engine)
    a.cni_gone = [r for r in facts.cni if r["host_ifname"] not in facts.links and r["network"] in networks]
    by_name = {n.name: n for n in facts.networks}
    for record in facts.cni:  # one off its bridge (gc re-created the bridge) goes back on, as a container's does
        veth, network = facts.links.get(record["host_ifname"]), by_name.get(record["network"])
        if veth is not None and network is not None and veth.master != network.bridge and network not in a.not_a_bridge:
            owner = f"cni:{record['container_id']}/{record['ifname']}"
            a.detached_veths.append(({"name": owner, "id": owner}, {**record, "network": network.name}, network))
    a.mounts = sorted(facts.mounts, key=lambda m: m.point)


def assess(facts: Facts) -> Assessment:
    a = Assessment()
    _assess_networks(facts, a)
    _assess_containers(facts, a)
    _assess_iptables(facts, a)
    _assess_orphans(facts, a)
    a.overlays = overlaycheck.assess(facts)
    return a


# -- findings (pure) ---------------------------------------------------------------------------------
def under(path: str, root: Path) -> bool:
    return Path(path).is_relative_to(root)


def _environment(facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    for tool, present in facts.tools.items():
        if not present:
            out.append(Finding(ERROR, "tool-missing", tool, f"{tool} is not installed (wrapdock runs it)",
                               (f"apt-get install {TOOLS[tool]}",)))
    if facts.busybox and facts.busybox_static is False:
        out.append(Finding(ERROR, "busybox-dynamic", facts.busybox,
                           f"{facts.busybox} is linked dynamically: containers run it without the host's libraries",
                           ("apt-get install busybox-static",)))
    if facts.util_linux is not None and facts.util_linux < UTIL_LINUX_MIN:
        have = ".".join(map(str, facts.util_linux))
        need = ".".join(map(str, UTIL_LINUX_MIN))
        out.append(Finding(ERROR, "util-linux-old", f"util-linux {have}",
                           f"util-linux {have} is older than {need} (setsid -f and the nsenter/unshare options "
                           "wrapdock uses)", (f"install util-linux >= {need} (Debian 12 or newer)",)))
    if facts.euid != 0:
        out.append(Finding(ERROR, "not-root", f"uid {facts.euid}",
                           "not running as root: wrapdock changes links, rules and mounts (iptables, the state's "
                           "indexes and the /etc/hosts files were not read)",
                           ("sudo wrapdock doctor",)))
    return out


def _host(facts: Facts, a: Assessment) -> list[Finding]:
    out: list[Finding] = []
    if facts.iptables is None and facts.euid == 0:
        out.append(Finding(ERROR, "iptables-unreadable", "iptables-save",
                           f"cannot read the iptables rules ({facts.iptables_error})", ("iptables-save",)))
    if a.forwarding_off:
        out.append(Finding(ERROR, "ip-forward-off", "net.ipv4.ip_forward",
                           "IPv4 forwarding is off: containers cannot reach anything beyond their bridge",
                           ("sysctl -w net.ipv4.ip_forward=1", f"or: {GC}")))
    if facts.networks:
        policy = facts.iptables.policies.get(("filter", "FORWARD")) if facts.iptables else None
        if policy == "DROP" and facts.sysctl.get("bridge-nf-call-iptables") == "1":
            out.append(Finding(
                WARNING, "forward-drop", "filter FORWARD policy DROP",
                "FORWARD drops by default (Docker sets this) and bridge-nf-call-iptables=1 sends bridged traffic "
                "through it: wrapdock's WRAPDOCK-FORWARD accepts cover its own bridges, every other bridge or routed "
                "flow without its own ACCEPT is dropped",
                ("add ACCEPT rules for the other traffic you need (iptables -I FORWARD -i BRIDGE -o BRIDGE -j ACCEPT)",
                 "or, only if nothing relies on the DROP: iptables -P FORWARD ACCEPT (forwards everything the "
                 "host routes, Docker's isolation included)")))
        strict = [k.split(".")[1] for k in ("rp_filter.all", "rp_filter.default") if facts.sysctl.get(k) == "1"]
        if strict:
            out.append(Finding(
                WARNING, "rp-filter-strict", "net.ipv4.conf." + ",".join(strict) + ".rp_filter=1",
                "strict reverse-path filtering drops routed packets that arrive on another interface than the reply "
                "would leave by (asymmetric routing, several uplinks)",
                tuple(f"sysctl -w net.ipv4.conf.{k}.rp_filter=2  # loose mode" for k in strict)))
    if len(facts.backends_with_rules) == 2 and all(facts.backends_with_rules.values()):
        out.append(Finding(
            WARNING, "iptables-both-backends", "iptables-legacy and iptables-nft",
            "both iptables-legacy and iptables-nft hold rules; the rules of one are invisible to the other, and "
            "wrapdock's go to `iptables` only",
            ("iptables-legacy-save; iptables-nft-save  # compare, then move every rule to one backend",
             "update-alternatives --config iptables")))
    return out


def _networks(facts: Facts, a: Assessment) -> list[Finding]:
    out: list[Finding] = []
    for network in a.bridge_gone:
        out.append(Finding(ERROR, "network-bridge-gone", network.name,
                           f"network {network.name}: its bridge {network.bridge} is gone (deleted by hand, a reboot)",
                           (f"{GC}  # re-runs its create plan", f"or: wrapdock network rm {network.name}")))
    for network in a.not_a_bridge:
        out.append(Finding(ERROR, "network-not-a-bridge", network.name,
                           f"network {network.name}: the link {network.bridge} is not a bridge (not wrapdock's)",
                           (f"wrapdock network rm {network.name}", f"ip -d link show dev {network.bridge}")))
    for name, missing in sorted(a.incomplete.items()):
        out.append(Finding(ERROR, "network-incomplete", name,
                           f"network {name}: its bridge lacks " + ", ".join(missing),
                           (f"{GC}  # re-runs its create plan",)))
    for name, wrong in sorted(a.overlay_broken.items()):
        out.append(Finding(ERROR, "network-vxlan-broken", name,
                           f"vxlan network {name}: " + ", ".join(wrong) + " (gc does not repair overlays)",
                           (f"wrapdock network rm -f {name}", "wrapdock network create --driver vxlan ... "
                            f"{name}  # as before, with the same --subnet, --vni, --peer")))
    for network in a.masquerade_missing:
        steps = [s for s in a.missing_rules[network.name] if _rule_key(s.argv)[2] == ipt.MASQ_CHAIN]
        out.append(Finding(ERROR, "network-masquerade-missing", network.name,
                           f"network {network.name}: no MASQUERADE rule for {network.subnet}: its containers cannot "
                           "reach beyond the host", (*(quote(s.argv) for s in steps), f"or: {GC}")))
    for name, steps in sorted(a.missing_rules.items()):
        others = [s for s in steps if _rule_key(s.argv)[2] != ipt.MASQ_CHAIN]
        if others:
            out.append(Finding(ERROR, "network-rules-missing", name,
                               f"network {name}: {len(others)} of its iptables rules are missing",
                               (*(quote(s.argv) for s in others), f"or: {GC}")))
    for network, route in a.overlaps:
        out.append(Finding(ERROR, "network-overlap", network.name,
                           f"network {network.name} ({network.subnet}) overlaps the host route {route.text}: "
                           "traffic for part of it goes elsewhere",
                           (f"ip route del {route.text}  # if it is stale",
                            f"or: wrapdock network rm {network.name}; wrapdock network create --subnet FREE_SUBNET "
                            f"{network.name}")))
    if a.skeleton_missing:
        out.append(Finding(ERROR, "chains-incomplete", "WRAPDOCK-* chains",
                           "wrapdock's shared chains or their jumps are missing: " + "; ".join(a.skeleton_missing),
                           (GC,)))
    if a.skeleton_orphaned:
        out.append(Finding(WARNING, "chains-orphaned", "WRAPDOCK-* chains",
                           "wrapdock's shared chains remain but no network does", (GC,)))
    for rule in a.skeleton_foreign:
        line = quote(("-A", rule.chain, *rule.spec))
        out.append(Finding(WARNING, "chains-foreign-rule", f"{rule.table} {rule.chain}",
                           f"a rule without wrapdock's comment uses wrapdock's chains ({line}); gc keeps the chains "
                           "while it is there", (quote(rule.delete_argv()) + "  # if nothing needs it",)))
    return out


def _containers(facts: Facts, a: Assessment) -> list[Finding]:
    out: list[Finding] = []
    names_by_id = {r["id"]: r["name"] for r in facts.containers}
    for record in a.abandoned:
        out.append(Finding(ERROR, "container-abandoned", record["name"],
                           f"container {record['name']} is still 'creating' but its wrapdock process "
                           f"{record['owner_pid']} is gone (killed half-way)",
                           (f"{GC}  # removes it as rm -f would", f"or: wrapdock rm -f {record['id'][:12]}")))
    for record in a.exit_unrecorded:
        out.append(Finding(WARNING, "container-exit-unrecorded", record["name"],
                           f"container {record['name']}: its process is gone and no exit code was recorded",
                           (f"{GC}  # records exit code 255 (unknown)",)))
    for cut in a.cuts:
        name = names_by_id.get(cut.container, cut.container[:12])
        out.append(Finding(WARNING, "container-endpoint-gone", name,
                           f"container {name} on {cut.network}: {cut.reason}; its address is still held",
                           (f"{GC}  # releases the address and drops the endpoint",)))
    for record, endpoint in a.veth_gone_live:
        out.append(Finding(WARNING, "container-veth-gone", record["name"],
                           f"running container {record['name']}: its veth {endpoint['host_ifname']} on "
                           f"{endpoint['network']} is gone",
                           (f"wrapdock network disconnect {endpoint['network']} {record['name']}",
                            f"wrapdock network connect --ip {endpoint['address']} {endpoint['network']} "
                            f"{record['name']}")))
    for record, endpoint, network in a.detached_veths:
        out.append(Finding(ERROR, "container-veth-detached", record["name"],
                           f"container {record['name']}: its veth {endpoint['host_ifname']} is not on bridge "
                           f"{network.bridge}", (f"ip link set {endpoint['host_ifname']} master {network.bridge}",
                                                 f"or: {GC}")))
    for record in a.netns_gone:
        out.append(Finding(WARNING, "container-netns-gone", record["name"],
                           f"stopped container {record['name']}: its network namespace {record['netns']} is gone, "
                           "so it cannot start again", (f"wrapdock rm {record['id'][:12]}",)))
    return out


def _orphans(facts: Facts, a: Assessment) -> list[Finding]:
    out: list[Finding] = []
    for container_id, pid in sorted(a.orphan_processes.items()):
        out.append(Finding(WARNING, "orphan-process", container_id[:12],
                           f"a container process (PID {pid}) runs from {facts.container_dirs[container_id]}, which no "
                           "record owns", (f"kill -s KILL {pid}", f"or: {GC}")))
    for comment, rules in sorted(a.orphan_rules.items()):
        out.append(Finding(WARNING, "orphan-rules", comment,
                           f"{len(rules)} iptables rule(s) tagged {comment}, whose owner has no record",
                           tuple(quote(r.delete_argv()) for r in rules)))
    for link in a.orphan_veths:
        out.append(Finding(WARNING, "orphan-veth", link.name,
                           f"veth {link.name} is wrapdock's but no container owns it",
                           (f"ip link del {link.name}",)))
    for link in a.orphan_bridges:
        out.append(Finding(WARNING, "orphan-bridge", link.name,
                           f"bridge {link.name} belongs to a network that has no record (only its orphaned rules "
                           "name it)", (f"ip link del {link.name}",)))
    for link in a.orphan_vxlans:
        out.append(Finding(WARNING, "orphan-vxlan", link.name,
                           f"VXLAN device {link.name} belongs to a network that has no record",
                           (f"ip link del {link.name}", f"or: {GC}")))
    for name in a.orphan_netns:
        out.append(Finding(WARNING, "orphan-netns", name,
                           f"network namespace {name} holds a wrapdock veth but no container records it",
                           (f"ip netns del {name}",)))
    for directory in a.orphan_cgroups:
        out.append(Finding(WARNING, "orphan-cgroup", str(directory),
                           f"cgroup of {directory.name[:12]}, a container that has no record",
                           (f"rmdir {quote([str(directory)])}",)))
    for directory in a.busy_cgroups:
        out.append(Finding(WARNING, "orphan-cgroup-busy", str(directory),
                           f"cgroup of {directory.name[:12]}, a container that has no record, still holds "
                           "processes, which gc does not kill (until they are gone, gc names it and exits 1)",
                           (f"kill -s KILL $(cat {quote([str(directory / 'cgroup.procs')])}); "
                            f"rmdir {quote([str(directory)])}",)))
    for directory in a.orphan_dirs:
        out.append(Finding(WARNING, "orphan-dir", str(directory),
                           f"container directory {directory.name[:12]} that no record owns",
                           (f"rm -rf --one-file-system {quote([str(directory)])}",)))
    for path in a.orphan_layers:
        out.append(Finding(WARNING, "orphan-layer", str(path),
                           f"image layer {path.name[:12]} ({'link' if path.parent.name == 'l' else 'directory'}) "
                           "that no image names (a load or commit killed half-way)",
                           (f"rm -rf --one-file-system {quote([str(path)])}",)))
    for network, address, owner in a.orphan_leases:
        out.append(Finding(WARNING, "orphan-lease", f"{network} {address}",
                           f"address {address} on {network} is held by {owner[:12]}, which has no record of it",
                           (f"{GC}  # releases it",)))
    for record in a.cni_gone:
        out.append(Finding(WARNING, "cni-attachment-gone", f"{record['network']} {record['address']}",
                           f"CNI attachment cni:{record['container_id']}/{record['ifname']} on {record['network']}: "
                           f"its veth {record['host_ifname']} is gone (its namespace went without a DEL)",
                           (f"{GC}  # takes it away as a DEL would",)))
    for name in a.orphan_ipam:
        out.append(Finding(WARNING, "orphan-ipam", name, f"IP allocations of network {name}, which has no record",
                           (f"{GC}  # forgets them",)))
    for mount in a.mounts:
        scope = "" if under(mount.point, facts.data_dir) else " (outside the data directory: gc leaves it)"
        out.append(Finding(WARNING, "leftover-mount", mount.point,
                           f"{mount.fstype} mount {mount.source} on {mount.point} left by wrapdock{scope}",
                           (f"umount {quote([mount.point])}",)))
    return out


def findings(facts: Facts, a: Assessment) -> list[Finding]:
    found = [Finding(ERROR, "state-broken", "state", text, ("fix or remove the file (wrapdock leaves it alone)",))
             for text in facts.broken_state]
    found += _environment(facts) + _host(facts, a) + _networks(facts, a) + _containers(facts, a) + _orphans(facts, a)
    found += overlaycheck.findings(facts, a.overlays)
    return sorted(found, key=lambda f: f.severity != ERROR)  # errors first, otherwise in the order found


# -- the operation -------------------------------------------------------------------------------
def examine(session: Session) -> list[Finding]:
    """Read the host and the state (under the state lock when it can be taken) and report."""
    from contextlib import nullcontext

    session.runner.audit = None  # doctor changes nothing: its reads go to the trail, not to the audit log
    lockable = os.geteuid() == 0 and session.state.root.is_dir()
    with session.state.locked() if lockable else nullcontext():
        facts = gather(session)
        found = findings(facts, assess(facts)) + _cluster(session, facts)
        if not facts.broken_state and facts.euid == 0:  # (without root: the not-root finding says why not)
            found += _indexes(session, facts)
    return sorted(found, key=lambda f: f.severity != ERROR)


def _indexes(session: Session, facts: Facts) -> list[Finding]:
    """The name and /etc/hosts indexes, and the /etc/hosts files a run or rm edits, against the records."""
    from wrapdock import containerhosts, hostsindex, nameindex

    out = [Finding(WARNING, "name-index", "container names", text, (f"{GC}  # writes it again from the records",))
           for text in nameindex.differences(session.state, facts.containers)]
    networks = {n.name for n in facts.networks}
    for network, keys in sorted(hostsindex.missing(session, facts.containers, networks).items()):
        out.append(Finding(WARNING, "hosts-index", network,
                           f"the index of /etc/hosts files of network {network} lacks {len(keys)} file(s): a run or "
                           "rm would not update them", (f"{GC}  # writes it again from the records",)))
    for path, on in sorted(containerhosts.out_of_date(session, facts.containers, networks).items()):
        out.append(Finding(WARNING, "hosts-file", path,
                           f"/etc/hosts of containers on {', '.join(sorted(on)) or 'no network'} does not list what "
                           f"the records do: {path}", (f"{GC}  # writes it again",)))
    return out


def _cluster(session: Session, facts: Facts) -> list[Finding]:
    """Cluster-mode vxlan networks: what etcd holds against this host (wrapdock/cluster.py reads it)."""
    if not any(n.scope == "cluster" for n in facts.networks):
        return []
    from wrapdock import cluster

    return [Finding(p.severity, p.check, p.subject, p.text, p.fix) for p in cluster.problems(session, facts.networks)]
