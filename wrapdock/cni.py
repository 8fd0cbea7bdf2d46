"""`wrapdock-cni`: wrapdock as a CNI plugin, a third front end beside the CLI and the labs.

A CNI caller (podman, containerd, a kubelet's runtime) runs the plugin with the call in CNI_*
variables and the network configuration as JSON on stdin, and reads the result (or a JSON error)
from stdout. This module only parses the call and formats the answer; what a call does is
wrapdock.cniattach, which works like `network connect`/`disconnect` (the same endpoint plans, the
same runner with its rollback, the network's own IPAM).

VERSION comes first and alone: podman asks every plugin of every network for it on every command,
so it is answered from this module, which imports nothing of wrapdock beyond it (no sh, no
jsonschema, no plans; tests/unit/test_cni.py measures it).
"""

from __future__ import annotations

import json
import os
import sys

Any = object  # the annotations' Any, without importing typing (VERSION's start-up counts)

# the versions whose results wrapdock can write (0.3.0 to 1.1.0 share the result's shape)
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# the spec's error codes, and wrapdock's own (100+; README "CNI plugin mode")
INCOMPATIBLE_VERSION = 1
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
DECODE = 6
INVALID_CONFIG = 7
TRY_AGAIN = 11
NOT_AVAILABLE = 50  # STATUS: the network cannot take ADDs
REFUSED = 100  # the request conflicts with the state (address taken, port published, subnet full)
COMMAND_FAILED = 101  # a command failed; what the call had done was rolled back
STATE_BROKEN = 102
ENVIRONMENT = 103  # not root, a tool missing
CHECK_FAILED = 104  # CHECK: the interface, address, route or a rule is not as recorded
INTERNAL = 105  # a bug in wrapdock

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_HEX = frozenset("0123456789abcdefABCDEF")


def valid_id(text: str) -> bool:
    """The spec's container id (and a wrapdock network name): letters, digits, _ . -, not first . or -."""
    return bool(text) and text[0].isascii() and text[0].isalnum() and set(text) <= _NAME_CHARS


def valid_ifname(text: str) -> bool:
    return 0 < len(text) <= 15 and set(text) <= _NAME_CHARS and text not in (".", "..")


def valid_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(part) == 2 and set(part) <= _HEX for part in parts)


class CniError(Exception):
    """An answer of the CNI error kind: {"code", "msg", "details"} on stdout and a non-zero exit."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = " ".join(msg.split())
        self.details = " ".join(details.split())


class Call:
    """One CNI call, checked: what the caller asked, in wrapdock's terms. (A plain class: dataclasses
    costs VERSION ~10 ms of imports.)"""

    def __init__(self, command: str, version: str, network: str = "", cni_network: str = "",
                 container_id: str = "", ifname: str = "", netns: str = "", args: dict[str, str] | None = None,
                 ports: tuple[dict[str, Any], ...] = (), ips: tuple[str, ...] = (), mac: str | None = None,
                 prev_result: dict[str, Any] | None = None,
                 valid_attachments: tuple[tuple[str, str], ...] | None = None, state_dir: str | None = None) -> None:
        self.command = command
        self.version = version  # the caller's cniVersion: the result is written in it
        self.network = network  # the wrapdock network (the plugin's "network", else the conflist's name)
        self.cni_network = cni_network  # the conflist's "name"
        self.container_id = container_id
        self.ifname = ifname
        self.netns = netns
        self.args = args or {}  # CNI_ARGS
        self.ports = ports  # runtimeConfig.portMappings, checked
        self.ips = ips  # runtimeConfig.ips (or CNI_ARGS IP=): the addresses asked for
        self.mac = mac  # runtimeConfig.mac (or CNI_ARGS MAC=)
        self.prev_result = prev_result
        self.valid_attachments = valid_attachments  # GC: (container id, ifname) to keep
        self.state_dir = state_dir  # the plugin's "stateDir" (else $WRAPDOCK_STATE_DIR, else the default)


def _version_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def version_result(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED)}


def error_result(version: str, error: CniError) -> dict[str, Any]:
    answer: dict[str, Any] = {"cniVersion": version, "code": error.code, "msg": error.msg}
    if error.details:
        answer["details"] = error.details
    return answer


def add_result(version: str, record: dict[str, Any], gateway: str, prefixlen: int) -> dict[str, Any]:
    """The ADD result of an attachment record, in the caller's version (the sandbox interface carries
    its MAC: podman refuses a result without one)."""
    ip: dict[str, Any] = {"interface": 0, "address": f"{record['address']}/{prefixlen}", "gateway": gateway}
    if _version_key(version) < (1, 0, 0):
        ip["version"] = "4"
    routes = [{"dst": "0.0.0.0/0", "gw": gateway}] if record["primary"] else []
    return {"cniVersion": version,
            "interfaces": [{"name": record["ifname"], "mac": record["mac"], "sandbox": record["netns"]}],
            "ips": [ip], "routes": routes, "dns": {}}


# -- parsing ------------------------------------------------------------------------------------
def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS: `K=V;K=V` (IgnoreUnknown=1 and the K8S_* keys are read and left alone)."""
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"invalid CNI_ARGS {text!r}: expected KEY=VALUE;KEY=VALUE")
        pairs[key] = value
    return pairs


def _need(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise CniError(INVALID_ENV, f"{name} is not set")
    return value


def _decode(stdin: str) -> dict[str, Any]:
    try:
        config = json.loads(stdin)
    except ValueError as exc:
        raise CniError(DECODE, f"the network configuration on stdin is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CniError(DECODE, "the network configuration on stdin is not a JSON object")
    return config


def _ports(runtime: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    mappings = runtime.get("portMappings") or []
    if not isinstance(mappings, list):
        raise CniError(INVALID_CONFIG, "runtimeConfig.portMappings is not a list")
    checked = []
    for entry in mappings:
        if not isinstance(entry, dict):
            raise CniError(INVALID_CONFIG, f"invalid port mapping {entry!r}")
        host, inside = entry.get("hostPort"), entry.get("containerPort")
        proto = str(entry.get("protocol") or "tcp").lower()
        host_ip = entry.get("hostIP") or None
        if (not isinstance(host, int) or not isinstance(inside, int) or not 1 <= host <= 65535
                or not 1 <= inside <= 65535 or proto not in ("tcp", "udp")):
            raise CniError(INVALID_CONFIG, f"invalid port mapping {json.dumps(entry)}: hostPort and containerPort "
                           "1-65535, protocol tcp or udp")
        if host_ip in ("0.0.0.0", "::", ""):
            host_ip = None
        if host_ip is not None and (not isinstance(host_ip, str) or ":" in host_ip):
            raise CniError(INVALID_CONFIG, f"invalid port mapping {json.dumps(entry)}: hostIP must be IPv4")
        checked.append({"host_ip": host_ip, "host_port": host, "container_port": inside, "proto": proto})
    return tuple(checked)


def _attachments(runtime: dict[str, Any], config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """GC's list of attachments to keep (`cni.dev/valid-attachments`, or the older `cni.dev/attachments`)."""
    for source in (config, runtime):
        for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
            if key in source:
                entries = source[key]
                if not isinstance(entries, list) or not all(
                        isinstance(e, dict) and isinstance(e.get("containerID"), str) for e in entries):
                    raise CniError(INVALID_CONFIG, f"{key} must be a list of {{containerID, ifname}}")
                return tuple((e["containerID"], str(e.get("ifname", ""))) for e in entries)
    return ()


def parse(env: dict[str, str], stdin: str) -> Call:
    """The call as the spec defines it: CNI_* variables and the configuration on stdin."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND is {command!r}: expected one of {', '.join(COMMANDS)}")
    config = _decode(stdin) if stdin.strip() or command != "VERSION" else {}
    version = config.get("cniVersion", "0.1.0" if command != "VERSION" else SUPPORTED[-1])
    if not isinstance(version, str) or not version:
        raise CniError(INVALID_CONFIG, "cniVersion must be a string")
    if command == "VERSION":
        return Call(command, version)
    if version not in SUPPORTED:
        raise CniError(INCOMPATIBLE_VERSION, f"incompatible CNI version {version!r}: wrapdock supports "
                       + ", ".join(SUPPORTED))
    if command == "CHECK" and _version_key(version) < (0, 4, 0):
        raise CniError(INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, not {version}")
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "the network configuration has no \"name\"")
    network = config.get("network", name)
    if not isinstance(network, str) or not valid_id(network) or len(network) > 64:
        raise CniError(INVALID_CONFIG, f"\"network\" {network!r} is not a wrapdock network name")
    state_dir = config.get("stateDir")
    if state_dir is not None and (not isinstance(state_dir, str) or not state_dir.startswith("/")):
        raise CniError(INVALID_CONFIG, "\"stateDir\" must be an absolute path")
    runtime = config.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise CniError(INVALID_CONFIG, "runtimeConfig is not an object")
    prev = config.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(INVALID_CONFIG, "prevResult is not an object")
    common = {"version": version, "network": network, "cni_network": name, "state_dir": state_dir}
    if command in ("STATUS", "GC"):
        return Call(command, **common,
                    valid_attachments=_attachments(runtime, config) if command == "GC" else None)
    container_id = _need(env, "CNI_CONTAINERID")
    if not valid_id(container_id):
        raise CniError(INVALID_ENV, f"CNI_CONTAINERID {container_id!r}: letters, digits, '_', '.' and '-' only")
    ifname = _need(env, "CNI_IFNAME")
    if not valid_ifname(ifname):
        raise CniError(INVALID_ENV, f"CNI_IFNAME {ifname!r} is not an interface name (at most 15 characters)")
    netns = env.get("CNI_NETNS", "")
    if command != "DEL":  # a DEL may come without one (containerd's does): the namespace is gone
        netns = _need(env, "CNI_NETNS")
    if netns and not netns.startswith("/"):
        raise CniError(INVALID_ENV, f"CNI_NETNS {netns!r} is not a path")
    args = parse_args(env.get("CNI_ARGS", ""))
    ips = runtime.get("ips") or ([args["IP"]] if args.get("IP") else [])
    if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
        raise CniError(INVALID_CONFIG, "runtimeConfig.ips must be a list of addresses")
    if len(ips) > 1:
        raise CniError(INVALID_CONFIG, f"{len(ips)} addresses asked for: a wrapdock network gives one (IPv4)")
    mac = runtime.get("mac") or args.get("MAC") or None
    if mac is not None and (not isinstance(mac, str) or not valid_mac(mac)):
        raise CniError(INVALID_CONFIG, f"invalid MAC address {mac!r}")
    return Call(command, **common, container_id=container_id, ifname=ifname, netns=netns, args=args,
                ports=_ports(runtime), ips=tuple(ip.split("/")[0] for ip in ips),
                mac=mac.lower() if mac else None, prev_result=prev)


# -- the executable ---------------------------------------------------------------------------------
def _emit(answer: dict[str, Any]) -> None:
    sys.stdout.write(_text(answer))
    sys.stdout.flush()


def _caller_version(stdin: str) -> str:
    """The cniVersion to answer an error in: the caller's, when its configuration says one."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        version = None
    return version if isinstance(version, str) and version in SUPPORTED else SUPPORTED[-1]


def main() -> int:
    """The console script: one call, its result (or error) on stdout, 0 or 1."""
    env = dict(os.environ)
    if env.get("CNI_COMMAND") == "VERSION":  # the cheap path: nothing else is read or imported
        try:
            call = parse(env, sys.stdin.read())
        except CniError as error:
            _emit(error_result(SUPPORTED[-1], error))
            return 1
        _emit(version_result(call.version))
        return 0
    code, text = answer(env, sys.stdin.read(), offer=env.get(SERVER_SWITCH_VARIABLE, "on") != "off")
    sys.stdout.write(text)
    sys.stdout.flush()
    return code


def answer(env: dict[str, str], stdin: str, offer: bool = False) -> tuple[int, str]:
    """One call: the exit code and what goes to stdout. `offer`: to `wrapdock cni serve` first, if one
    listens (wrapdock.cniserver); else, or when it declines, carried out here."""
    version = SUPPORTED[-1]
    try:
        version = _caller_version(stdin)
        call = parse(env, stdin)
        if call.command == "VERSION":
            return 0, _text(version_result(call.version))
        served = _offer(call, env, stdin) if offer else None
        if served is not None:
            return served
        from wrapdock.quickimport import deferring, load_dataclasses

        load_dataclasses()  # without inspect, its methods' code from the cache file (quickimport)
        with deferring("inspect"):  # anything else's inspect: loaded only if used
            from wrapdock import cniattach  # everything that acts: only now

        result = cniattach.serve(call)
    except CniError as error:
        return 1, _text(error_result(version, error))
    except Exception as exc:  # a bug: still a CNI error, never a traceback
        return 1, _text(error_result(version, CniError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")))
    return 0, _text(result) if result is not None else ""


# -- the resident server's client side (the server: wrapdock.cniserver) -------------------------------
SERVER_PROTOCOL = 1
SERVER_SOCKET = "cni/server.sock"  # in the state directory
SERVER_SWITCH_VARIABLE = "WRAPDOCK_CNI_SERVER"  # "off": never offer a call to the server
SERVED_BY_VARIABLE = "WRAPDOCK_CNI_SERVED_BY"  # set in the server's child that carries a call out
DEFAULT_STATE_DIR = "/var/run/wrapdock"  # state.DEFAULT_STATE_DIR, without importing it (a unit test compares)


def server_identity() -> dict[str, Any]:
    """What the plugin and the server must share for the server to act for the plugin: the user, the
    mount, network and PID namespaces (paths like CNI_NETNS, /proc/PID/ns/net too, mean the same to
    both) and the same wrapdock."""
    from wrapdock import __version__

    spaces = {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("mnt", "net", "pid")}
    return {"uid": os.geteuid(), **spaces, "wrapdock": f"{__version__} {os.path.dirname(os.path.abspath(__file__))}"}


def server_socket(state_dir: str | None, env: dict[str, str]) -> str:
    return f"{state_dir or env.get('WRAPDOCK_STATE_DIR') or DEFAULT_STATE_DIR}/{SERVER_SOCKET}"


def _offer(call: Call, env: dict[str, str], stdin: str) -> tuple[int, str] | None:
    """The call carried out by the server: (exit code, stdout); None: no server, or it declined (the
    caller differs from it): carry it out here. Once the server has the call, it is the server's: a
    connection that ends without an answer is CNI error 11 (try again), never a second attempt here."""
    if SERVED_BY_VARIABLE in env:
        return None
    import _socket  # not `socket`: its enums cost a plugin call ~3 ms

    path = server_socket(call.state_dir, env)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
            request = {"protocol": SERVER_PROTOCOL, "identity": server_identity(), "env": env, "stdin": stdin}
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(_socket.SHUT_WR)
        except OSError:
            return None  # no server listens (or it went away before it had the call)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            raise CniError(TRY_AGAIN, f"wrapdock cni serve ({path}) failed during the call: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        reply = None
    if isinstance(reply, dict) and "fallback" in reply:
        return None
    if not (isinstance(reply, dict) and isinstance(reply.get("code"), int) and isinstance(reply.get("stdout"), str)):
        raise CniError(TRY_AGAIN, f"wrapdock cni serve ({path}) ended the call without an answer "
                       "(its trail: STATE_DIR/cni/trail/)")
    return reply["code"], reply["stdout"]


def _text(answer: dict[str, Any]) -> str:
    return json.dumps(answer) + "\n"


def run() -> None:
    code = main()
    sys.stdout.flush()
    quickimport = sys.modules.get("wrapdock.quickimport")  # not imported by VERSION
    if quickimport is not None:
        quickimport.save_compiled_methods()  # dataclass methods this call compiled, for the next
    os._exit(code)
