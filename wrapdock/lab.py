"""Labs: a topology and its connectivity checks in one YAML or JSON file (state/lab.schema.json).

`lab up` creates the networks, then the containers, through the same operations as the CLI (so every
command shows in the trail) and undoes everything it made if one step fails. Objects carry the lab's
name, so `lab down` removes exactly what the lab made. Checks send real packets: busybox ping, a TCP
connect, busybox wget, a UDP datagram, from a container's network namespace, the host, or the
namespace playing the outside world.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from wrapdock import resources
from wrapdock.checkoutcome import RAN_CODES, Outcome, bash_error_patterns, classify, could_not_run
from wrapdock.errors import EnvironmentProblem, UsageError
from wrapdock.session import Session

BUNDLED = ("seed", "campus", "overlay")


# -- loading --------------------------------------------------------------------------------------
def _place(path: list[Any]) -> str:
    """jsonschema's path as the user reads the file: containers.bird.ports[0]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def bundled_text(name: str) -> str:
    from importlib import resources as importlib_resources

    try:
        return importlib_resources.files("wrapdock._labs").joinpath(f"{name}.yaml").read_text()
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parent.parent / "labs" / f"{name}.yaml").read_text()


def load(ref: str) -> dict[str, Any]:
    """A lab from a file path, or a bundled lab by name; checked against state/lab.schema.json."""
    path = Path(ref)
    if path.is_file():
        text, where = path.read_text(), str(path)
    elif ref in BUNDLED:
        text, where = bundled_text(ref), f"bundled lab {ref}"
    else:
        raise UsageError(f"no such lab file: {ref} (bundled labs: {', '.join(BUNDLED)})")
    try:
        if where.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # yaml.YAMLError and json errors: one line, the place included
        raise UsageError(f"{where}: not valid YAML/JSON: {' '.join(str(exc).split())}") from None
    import jsonschema

    schema = json.loads(resources.schema_text("lab"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UsageError(f"{where}: {_place(list(first.path))}: {first.message}{more}")
    _check_references(data, where)
    from wrapdock import labhosts

    labhosts.check_hosts(data, where)
    return data


def _check_references(data: dict[str, Any], where: str) -> None:
    networks = set(data.get("networks", {}))
    containers = data.get("containers", {})
    for name, spec in containers.items():
        for i, attachment in enumerate(spec.get("networks", [])):
            network = attachment if isinstance(attachment, str) else attachment["network"]
            if network not in networks:
                raise UsageError(f"{where}: containers.{name}.networks[{i}]: unknown network {network!r}")
    for i, check in enumerate(data.get("checks", [])):
        if check.get("inside") and not ("ping" in check or "http" in check):
            raise UsageError(f"{where}: checks[{i}].inside: only a ping or http check runs inside its container")
        if check.get("inside") and check["from"] not in containers:
            raise UsageError(f"{where}: checks[{i}].inside: the check must start from a container")
        if "hosts" in data:  # multi-host labs: wrapdock.labhosts checks the sources
            continue
        if check["from"] not in ("host", data.get("outside", "outside")) and check["from"] not in containers:
            raise UsageError(f"{where}: checks[{i}].from: {check['from']!r} is no container of this lab, "
                             "'host' or 'outside'")
        if "listener" in check and check["listener"] not in containers:
            raise UsageError(f"{where}: checks[{i}].listener: unknown container {check['listener']!r}")


# -- up / down ----------------------------------------------------------------------------------
def _network_request(lab: dict[str, Any], name: str):
    from wrapdock.netspec import NetworkRequest

    spec = lab["networks"][name]
    return NetworkRequest(name=name, subnet=spec["subnet"], driver=spec.get("driver", "bridge"),
                          gateway=spec.get("gateway"), bridge_name=spec.get("bridge_name"), mtu=spec.get("mtu"),
                          internal=spec.get("internal", False), isolated=spec.get("isolated", False),
                          lab=lab["name"], vni=spec.get("vni"), port=spec.get("port"),
                          host_subnet_size=spec.get("host_subnet_size"), peers=tuple(spec.get("peers", ())),
                          vtep=spec.get("vtep"))


def _attachments(spec: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(a, None) if isinstance(a, str) else (a["network"], a.get("ip")) for a in spec.get("networks", [])]


def _run_request(lab: dict[str, Any], name: str):
    from wrapdock.containers import RunRequest

    spec = lab["containers"][name]
    env = spec.get("env", [])
    if isinstance(env, dict):
        env = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in env.items()]
    attachments = _attachments(spec)
    first_network, first_ip = attachments[0] if attachments else (None, None)
    cpus = spec.get("cpus")
    return RunRequest(
        args=(spec.get("image", "busybox"), *spec.get("command", ["sh"])), name=name, env=tuple(env),
        volumes=tuple(spec.get("volumes", [])), memory=spec.get("memory"),
        cpus=str(cpus) if cpus is not None else None, pids_limit=spec.get("pids_limit"),
        hostname=spec.get("hostname"), detach=True, network=first_network, ip=first_ip,
        publish=tuple(spec.get("ports", [])), dns=tuple(spec.get("dns", [])),
        add_hosts=tuple(spec.get("add_hosts", [])), lab=lab["name"])


def _say(text: str) -> None:
    import click

    click.echo(text, err=True)


def up(session: Session, lab: dict[str, Any]) -> None:
    """Networks first, then containers (extra networks by connect); on failure, everything made goes.
    A lab with `hosts:` is brought up host by host (wrapdock.labhosts)."""
    from wrapdock import containers, labhosts, networks

    if labhosts.is_multihost(lab):
        return labhosts.up(session, lab)

    total = len(lab.get("networks", {})) + len(lab.get("containers", {}))
    made: list[tuple[str, str]] = []
    step = 0
    try:
        for name, spec in lab.get("networks", {}).items():
            step += 1
            if spec.get("external"):  # made outside the lab (a cluster network the host joined)
                continue
            if not session.simulate:
                _say(f"==> [{step}/{total}] network {name}")
            networks.create(session, _network_request(lab, name))
            made.append(("network", name))
        for name, spec in lab.get("containers", {}).items():
            step += 1
            if not session.simulate:
                _say(f"==> [{step}/{total}] container {name}")
            containers.run(session, _run_request(lab, name))
            made.append(("container", name))
            for network, ip in _attachments(spec)[1:]:
                containers.connect(session, network, name, ip)
    except BaseException:
        if made and not session.print_only:
            _say(f"==> lab {lab['name']} failed: removing the {len(made)} object(s) it made")
            _remove(session, made)
        raise


def _remove(session: Session, made: list[tuple[str, str]]) -> None:
    from wrapdock import containers, networks

    container_names = [n for kind, n in made if kind == "container"]
    if container_names:
        containers.remove(session, list(reversed(container_names)), force=True)
    network_names = [n for kind, n in made if kind == "network"]
    if network_names:
        networks.remove(session, list(reversed(network_names)), force=True)


def down(session: Session, lab: dict[str, Any]) -> list[tuple[str, str]]:
    """Remove what this lab made (objects carrying its name); what is already gone is skipped."""
    from wrapdock import labhosts

    if labhosts.is_multihost(lab):
        return [("host", name) for name in labhosts.down(session, lab)]
    session.require_root()
    records = {r["name"]: r for r in session.state.all("container")}
    nets = {r["name"]: r for r in session.state.all("network")}
    made = [("container", n) for n in lab.get("containers", {}) if records.get(n, {}).get("lab") == lab["name"]]
    made += [("network", n) for n, spec in lab.get("networks", {}).items()
             if nets.get(n, {}).get("lab") == lab["name"] and not spec.get("external")]
    if made:
        _remove(session, made)
    return made


# -- checks ---------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """One lab check: what was expected and what the probe got."""

    name: str
    source: str
    target: str
    expect: str  # ok | fail
    got: str  # ok | fail (the probe ran, no answer) | error (it could not run)
    seconds: float
    detail: str  # one line: the probe's last line, or why it failed or could not run

    @property
    def agrees(self) -> bool:
        """An error never agrees: a check that could not run proves nothing, whatever it expected."""
        return self.got != "error" and self.expect == self.got


def _address_map(session: Session) -> dict[str, str]:
    return {r["name"]: r["endpoints"][0]["address"] for r in session.state.all("container") if r["endpoints"]}


def _resolve(target: str, addresses: dict[str, str]) -> str:
    return addresses.get(target, target)


def _host_port(text: str, addresses: dict[str, str]) -> tuple[str, str]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"expected ADDRESS:PORT, got {text!r}")
    return _resolve(host, addresses), port


def _source_netns(lab: dict[str, Any], check: dict[str, Any], netns: dict[str, str | None]) -> str | None:
    """The network namespace a check's probe runs in; None: the host's (also a --net host container's)."""
    source = check["from"]
    if source == "host":
        return None
    if source == lab.get("outside", "outside"):
        return source
    return netns.get(source)


def _target_host(check: dict[str, Any], addresses: dict[str, str]) -> str:
    if "ping" in check:
        return _resolve(check["ping"], addresses)
    if "http" in check:
        return _resolve(urlsplit(check["http"]).hostname or "", addresses)
    return _host_port(check.get("tcp") or check["udp"], addresses)[0]


def name_to_resolve(check: dict[str, Any], addresses: dict[str, str]) -> str | None:
    """The target's host name when it is neither an address nor a container of the lab, else None
    (also None inside a container: the probe itself says `bad address` there)."""
    import ipaddress

    if check.get("inside"):
        return None
    host = _target_host(check, addresses)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def resolve_command(lab: dict[str, Any], check: dict[str, Any], addresses: dict[str, str],
                    netns: dict[str, str | None]) -> list[str] | None:
    """Looks the target's name up where the probe will run, before it runs: a name that does not
    resolve is a broken check (an error), which a probe under `timeout` could only report as timed out
    when the resolver waits for an answer that never comes. getent exits 2 when there is none."""
    name = name_to_resolve(check, addresses)
    if name is None:
        return None
    source_netns = _source_netns(lab, check, netns)
    return [*(["ip", "netns", "exec", source_netns] if source_netns else []), "getent", "hosts", name]


def unresolved(name: str) -> str:
    return f"{name} does not resolve (getent hosts found no address)"


def check_command(lab: dict[str, Any], check: dict[str, Any], addresses: dict[str, str],
                  netns: dict[str, str | None], token: str = "wrapdock-check") -> tuple[list[str], str]:
    """(argv that exits 0 when the check passes, what it targets). Runs in the source's netns."""
    source_netns = _source_netns(lab, check, netns)
    prefix = ["ip", "netns", "exec", source_netns] if source_netns else []
    if check.get("inside"):
        return inside_command(check, source_netns or "")
    if "ping" in check:
        target = _resolve(check["ping"], addresses)
        return [*prefix, "busybox", "ping", "-c", "1", "-W", "2", target], target
    if "tcp" in check:
        host, port = _host_port(check["tcp"], addresses)
        return [*prefix, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"], f"{host}:{port}"
    if "udp" in check:
        host, port = _host_port(check["udp"], addresses)
        return [*prefix, "bash", "-c", f"echo {token} >/dev/udp/{host}/{port}"], f"{host}:{port}/udp"
    parts = urlsplit(check["http"])
    host = _resolve(parts.hostname or "", addresses)
    netloc = host + (f":{parts.port}" if parts.port else "")
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return [*prefix, "timeout", "5", "busybox", "wget", "-qO-", url], url


INSIDE = ('ns=$1; shift; exec nsenter --target "$(ip netns pids "$ns" | head -n 1)" --mount --uts --net '
          '--root --wd -- "$@"')


def inside_command(check: dict[str, Any], netns: str) -> tuple[list[str], str]:
    """A probe run inside the source container (entered through a process of its network namespace):
    the container's own root, tools and /etc/hosts, so the target name is the container's to resolve."""
    enter = ["sh", "-c", INSIDE, "wrapdock-inside", netns]
    if "ping" in check:
        return [*enter, "ping", "-c", "1", "-W", "2", check["ping"]], check["ping"]
    return [*enter, "timeout", "5", "wget", "-qO-", check["http"]], check["http"]


def _source_problem(session: Session, lab: dict[str, Any], check: dict[str, Any],
                    records: dict[str, dict[str, Any]]) -> str | None:
    """Why the probe cannot run at all: its source or listener container is missing or not running.

    A stopped container keeps its network namespace (README: Limits), so a probe from it would still
    get answers: the container's own status (as `ps` reads it) decides, before any packet is sent.
    """
    from wrapdock.containerviews import current_status

    source = check["from"]
    for who in (None if source in ("host", lab.get("outside", "outside")) else source, check.get("listener")):
        if who is None:
            continue
        record = records.get(who)
        if record is None:
            return f"container {who} does not exist (is the lab up?)"
        status = current_status(session, record)
        if status.state != "running":
            return f"container {who} is not running ({status.text()})"
    return None


def _probe(session: Session, lab: dict[str, Any], check: dict[str, Any], records: dict[str, dict[str, Any]],
           argv: list[str], lookup: list[str] | None, note: str, token: str) -> Outcome:
    """Run one check's probe and judge it: ok, fail (ran, no answer) or error (could not run)."""
    from wrapdock import containers

    problem = _source_problem(session, lab, check, records)
    if problem:
        session.runner.trail.heading(note)
        session.runner.trail.remark(f"error: {problem}")
        return Outcome("error", problem)
    try:
        if lookup:
            found = session.runner.query(lookup, note)
            if found.exit_code == 2:
                return Outcome("error", unresolved(lookup[-1]))
            if not found.ok:
                return could_not_run(found.exit_code, f"{found.stdout}\n{found.stderr}")
        result = session.runner.query(argv, note)
    except EnvironmentProblem as exc:  # the tool is not on this host's PATH
        return Outcome("error", exc.message)
    outcome = classify(result.exit_code, f"{result.stdout}\n{result.stderr}")
    if outcome.got == "ok" and "contains" in check and check["contains"] not in result.stdout:
        return Outcome("fail", f"answer does not contain {check['contains']!r}")
    if outcome.got == "ok" and "udp" in check:
        time.sleep(0.3)
        log = containers.paths_of(session, containers.find(session, check["listener"])["id"]).log
        if not (log.is_file() and token in log.read_text(errors="replace")):
            return Outcome("fail", f"{check['listener']} did not receive the datagram")
    return outcome


def run_checks(session: Session, lab: dict[str, Any]) -> list[CheckResult]:
    from wrapdock import labhosts

    if labhosts.is_multihost(lab):
        return labhosts.run_checks(session, lab)
    records = {r["name"]: r for r in session.state.all("container")}
    addresses = _address_map(session)
    netns = {name: r["netns"] for name, r in records.items()}
    results = []
    for i, check in enumerate(lab.get("checks", [])):
        token = f"wrapdock-check-{i}-{int(time.time() * 1000)}"
        argv, target = check_command(lab, check, addresses, netns, token)
        started = time.monotonic()
        lookup = resolve_command(lab, check, addresses, netns)
        outcome = _probe(session, lab, check, records, argv, lookup, f"check {i + 1}: {check.get('name', '')}",
                         token)
        results.append(CheckResult(check.get("name", f"check {i + 1}"), check["from"], target,
                                   check.get("expect", "ok"), outcome.got, time.monotonic() - started,
                                   outcome.reason))
    return results


# -- script ---------------------------------------------------------------------------------------
@dataclass
class Simulation:
    """A one-host lab planned over a scratch state: its plans and what it would have made."""

    up_plans: list[Any]
    down_plans: list[Any]
    addresses: dict[str, str]
    netns: dict[str, str | None]
    logs: dict[str, str]


def simulate(session_args: dict[str, Any], lab: dict[str, Any], execute: Any = None,
             standins: set[str] | frozenset[str] = frozenset()) -> Simulation:
    """`up` then `down` in print-only mode over a scratch state, as if each operation had run, so
    addresses advance exactly as they would live on a host where none of the lab exists yet. `execute`
    answers the host's read-only queries (a lab host that does not exist yet; default: this machine).
    `standins`: vxlan networks planned only for their containers' sake (their own plans are left out)."""
    from wrapdock import containers
    from wrapdock.plans import iptables as ipt

    with tempfile.TemporaryDirectory(prefix="wrapdock-lab-") as scratch:
        session = Session(**session_args, print_only=True, simulate=True, trail_mode="quiet",
                          image_records_dir=Path(scratch) / "images")
        session.state_dir = Path(scratch) / "state"
        if execute is not None:
            from wrapdock.runner import Runner, Trail

            session.__dict__["runner"] = Runner(Trail("quiet"), execute=execute)
        up(session, lab)
        up_plans = [p for p in session.printed if not _standin_plan(p.title, standins)]
        addresses = _address_map(session)
        netns = {r["name"]: r["netns"] for r in session.state.all("container")}
        logs = {r["name"]: str(containers.paths_of(session, r["id"]).log) for r in session.state.all("container")}
        if session.iptables_read:  # down decides against the tables as up leaves them, not as first read
            session.iptables_read[0] = ipt.after(session.iptables_read[0],
                                                 [step for plan in session.printed for step in plan.steps])
        session.printed.clear()
        down(session, lab)
        down_plans = [p for p in session.printed if not _standin_plan(p.title, standins)]
        return Simulation(up_plans, down_plans, addresses, netns, logs)


def _standin_plan(title: str, standins: set[str] | frozenset[str]) -> bool:
    return any(title.startswith((f"create vxlan network {n} (", f"remove vxlan network {n} (")) for n in standins)


def script(session_args: dict[str, Any], lab: dict[str, Any], argv: list[str], execute: Any = None,
           before: list[Any] | None = None, after: list[Any] | None = None,
           standins: set[str] | frozenset[str] = frozenset()) -> str:
    """The whole lab as one bash script: `up`, `check` and `down` functions, run by the last argument,
    planned over a scratch state (see simulate). `before` and `after` are plans `up` runs around the
    lab's own (a multi-host lab's cluster networks: wrapdock's own commands)."""
    from wrapdock.render import comment_text, script_body

    simulated = simulate(session_args, lab, execute, standins)
    up_plans, down_plans = simulated.up_plans, simulated.down_plans
    addresses, netns, logs = simulated.addresses, simulated.netns, simulated.logs
    checks = []
    for i, check in enumerate(lab.get("checks", [])):
        token = f"wrapdock-check-{i + 1}"
        command, _ = check_command(lab, check, addresses, netns, token)
        # the containers whose namespaces must hold a process (running) for the probe to mean anything
        running = [netns[who] for who in (check["from"], check.get("listener")) if netns.get(who)]
        words = [check.get("name", f"check {i + 1}"), check.get("expect", "ok"), check.get("contains", ""),
                 logs[check["listener"]] if "udp" in check else "", token, " ".join(running),
                 _source_netns(lab, check, netns) or "", name_to_resolve(check, addresses) or ""]
        checks.append(f"    check {shlex.join(words)} {shlex.join(command)}")
    return resources.fill(resources.template("lab.sh.tmpl"), {
        "name": comment_text(lab["name"]),
        "description": comment_text(lab.get("description", "")),
        "command": comment_text(shlex.join(["wrapdock", *argv])),
        "version": __import__("wrapdock").__version__,
        "up": _indent(script_body([*(before or []), *up_plans, *(after or [])])),
        "checks": "\n".join(checks) or "    :",
        "error_patterns": bash_error_patterns(),
        "ran_codes": "|".join(str(code) for code in RAN_CODES),
        "down": _indent(script_body(down_plans)),
    })


def _indent(text: str) -> str:
    out = []
    in_heredoc = False
    for line in text.splitlines():
        if in_heredoc:
            out.append(line)
            in_heredoc = line != "WRAPDOCK_EOF"
            continue
        out.append("    " + line if line else "")
        in_heredoc = line.endswith("<<'WRAPDOCK_EOF'")
    return "\n".join(out) or "    :"


# -- graph ----------------------------------------------------------------------------------------
def _dot_id(text: str) -> str:
    """A quoted DOT id; `\\n` (a line break in a label) stays one: names never hold a backslash."""
    return '"' + text.replace("\\", "\\\\").replace("\\\\n", "\\n").replace('"', '\\"') + '"'


def graph(lab: dict[str, Any], addresses: dict[str, dict[str, str]] | None = None) -> str:
    """Graphviz DOT: bridges, containers, interfaces with addresses, published ports."""
    from wrapdock import labhosts

    if labhosts.is_multihost(lab):
        return labhosts.graph(lab)
    addresses = addresses or {}
    lines = [f"graph {_dot_id('lab ' + lab['name'])} {{", "  rankdir=LR;", '  node [fontname="Helvetica"];',
             '  host [shape=box3d, label="host"];']
    for name, spec in lab.get("networks", {}).items():
        from wrapdock.netspec import parse_subnet

        iface = parse_subnet(spec["subnet"])
        gateway = spec.get("gateway") or (iface.ip if iface.ip != iface.network.network_address
                                          else iface.network.network_address + 1)
        flags = [f for f in ("internal", "isolated") if spec.get(f)]
        label = f"{spec.get('bridge_name', name)}\\n{iface.network}\\ngw {gateway}" + (
            f"\\n({', '.join(flags)})" if flags else "")
        lines.append(f"  {_dot_id('net:' + name)} [shape=ellipse, style=filled, fillcolor=lightblue, "
                     f"label={_dot_id(label)}];")
        lines.append(f"  host -- {_dot_id('net:' + name)} [label={_dot_id(str(gateway))}];")
    for name, spec in lab.get("containers", {}).items():
        ports = spec.get("ports", [])
        label = name + (("\\n" + "\\n".join(f"-p {p}" for p in ports)) if ports else "")
        lines.append(f"  {_dot_id('c:' + name)} [shape=box, label={_dot_id(label)}];")
        for i, (network, ip) in enumerate(_attachments(spec)):
            address = ip or addresses.get(name, {}).get(network, "")
            edge = f"eth{i}" + (f" {address}" if address else "")
            lines.append(f"  {_dot_id('c:' + name)} -- {_dot_id('net:' + network)} [label={_dot_id(edge)}];")
    if lab.get("checks"):
        lines.append(f"  {_dot_id(lab.get('outside', 'outside'))} [shape=cloud];")
        lines.append(f"  host -- {_dot_id(lab.get('outside', 'outside'))} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def describe_bundled() -> list[tuple[str, str]]:
    import yaml

    return [(name, yaml.safe_load(bundled_text(name)).get("description", "")) for name in BUNDLED]

