"""Turn `run` options into a checked container configuration, or one clear error. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from wrapdock import names
from wrapdock.errors import UsageError
from wrapdock.plans.cgroups import Limits

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default capability set; everything else (NET_ADMIN, SYS_ADMIN, ...) is dropped.
DEFAULT_CAPS = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
                "net_bind_service", "net_raw", "sys_chroot", "mknod", "audit_write", "setfcap")
ALL_CAPS = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
            "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
            "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
            "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
            "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
            "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore")
MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum too

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([bkmg]?)b?", re.IGNORECASE)
_CPUSET = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


@dataclass(frozen=True)
class Volume:
    """One `-v SOURCE:TARGET[:ro]`, validated."""

    source: str
    target: str
    readonly: bool = False
    file: bool = False  # the host path is a file, not a directory (seen when planning)

    def spec(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.readonly else 'rw'}"


@dataclass(frozen=True)
class ContainerConfig:
    """A container as planned and recorded: everything a start, exec or inspect needs, validated."""

    id: str
    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[str, ...]
    hostname: str
    workdir: str = "/"
    volumes: tuple[Volume, ...] = ()
    limits: Limits = field(default_factory=Limits)
    caps: tuple[str, ...] = DEFAULT_CAPS
    privileged: bool = False
    user: str = ""  # "UID:GID" resolved from the image (or -u); "": root, as the init is


def new_id() -> str:
    return names.new_id()


_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
               "nimble", "proud", "quiet", "rapid", "sharp", "tidy", "vivid", "witty", "young", "zesty")
_NOUNS = ("bird", "robin", "owl", "finch", "heron", "lark", "swift", "wren", "crane", "eagle",
          "falcon", "gull", "hawk", "ibis", "jay", "kite", "loon", "magpie", "osprey", "tern")


def random_name(container_id: str) -> str:
    """Docker-style adjective_noun, made unique with a few characters of the id."""
    seed = int(container_id[:8], 16)
    return f"{_ADJECTIVES[seed % 20]}_{_NOUNS[(seed // 20) % 20]}_{container_id[:4]}"


def parse_env(items: tuple[str, ...], host_env: dict[str, str]) -> tuple[str, ...]:
    """-e KEY=VALUE, or -e KEY to pass the value wrapdock sees (skipped when unset), as Docker does."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not _ENV_KEY.fullmatch(key):
            raise UsageError(f"invalid environment variable {item!r}: expected KEY=VALUE, KEY made of "
                             "letters, digits and '_', not starting with a digit")
        if "\0" in value:
            raise UsageError(f"invalid environment variable {key}: the value holds a NUL byte")
        if sep:
            result[key] = value
        elif key in host_env:
            result[key] = host_env[key]
    return tuple(f"{k}={v}" for k, v in result.items())


def parse_size(text: str, what: str = "memory") -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"invalid {what} size {text!r}: use a number with an optional unit b, k, m or g (e.g. 64m)")
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])
    if value < MIN_MEMORY:
        raise UsageError(f"invalid {what} size {text!r}: the minimum is 6m")
    return value


def parse_volume(text: str, exists, is_file=lambda _path: False) -> Volume:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"invalid volume {text!r}: expected HOST_PATH:CONTAINER_PATH[:ro|rw]")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError(f"invalid volume {text!r}: the mode must be ro or rw")
    for path, what in ((source, "host"), (target, "container")):
        if not path.startswith("/") or "\n" in path or "," in path:
            raise UsageError(f"invalid volume {text!r}: the {what} path must be absolute (and hold no ',' or newline)")
    target = str(PurePosixPath(target))
    if target == "/" or ".." in PurePosixPath(target).parts:
        raise UsageError(f"invalid volume {text!r}: the container path must be below / and hold no '..'")
    if not exists(source):
        raise UsageError(f"invalid volume {text!r}: the host path {source} does not exist")
    return Volume(source, target, mode == "ro", is_file(source))


def parse_cpus(value: str | None, online: int) -> float | None:
    if value is None:
        return None
    try:
        cpus = float(value)
    except ValueError:
        raise UsageError(f"invalid --cpus {value!r}: expected a number such as 0.5") from None
    if not 0.01 <= cpus <= online:
        raise UsageError(f"invalid --cpus {value!r}: it must be between 0.01 and {online} (the CPUs online)")
    return cpus


def parse_cpuset(value: str | None, online: int) -> str | None:
    if value is None:
        return None
    if not _CPUSET.fullmatch(value):
        raise UsageError(f"invalid --cpuset-cpus {value!r}: expected a list such as 0-1,3")
    for part in value.split(","):
        low, _, high = part.partition("-")
        if int(high or low) >= online or int(low) > int(high or low):
            raise UsageError(f"invalid --cpuset-cpus {value!r}: this host has CPUs 0-{online - 1}")
    return value


def parse_caps(add: tuple[str, ...], drop: tuple[str, ...]) -> tuple[str, ...]:
    def norm(cap: str) -> str:
        name = cap.lower().removeprefix("cap_")
        if name != "all" and name not in ALL_CAPS:
            raise UsageError(f"unknown capability {cap!r}")
        return name

    adds, drops = [norm(c) for c in add], [norm(c) for c in drop]
    # Docker's rules (TweakCapabilities): --cap-add ALL is everything but the drops; --cap-drop ALL
    # keeps only the adds; otherwise the default set, minus the drops, plus the adds
    if "all" in adds:
        return tuple(c for c in ALL_CAPS if c not in drops)
    base = [] if "all" in drops else [c for c in DEFAULT_CAPS if c not in drops]
    return tuple(dict.fromkeys([*base, *(c for c in adds if c not in base)]))


def valid_hostname(hostname: str) -> bool:
    return len(hostname) <= 64 and bool(_HOSTNAME.fullmatch(hostname))


def check_hostname(hostname: str) -> str:
    if not valid_hostname(hostname):
        raise UsageError(f"invalid hostname {hostname!r}")
    return hostname


def check_workdir(workdir: str) -> str:
    if not workdir.startswith("/") or "\n" in workdir:
        raise UsageError(f"invalid working directory {workdir!r}: it must be an absolute path")
    return str(PurePosixPath(workdir))


def check_name(name: str) -> str:
    return names.check_object_name("container", name)
