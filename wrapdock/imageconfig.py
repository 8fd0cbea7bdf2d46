"""An image's config applied to `run`: the command (Entrypoint + Cmd), Env, WorkingDir, User, ExposedPorts.

Pure decisions; the image's files are read through an ImageTree (its layers, as the container will
see them), so a user name is looked up in the image's /etc/passwd and a command in the image's PATH,
never on the host and never with a tool inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wrapdock.errors import UsageError
from wrapdock.imagefs import ImageTree


@dataclass(frozen=True)
class User:
    """A numeric user and group, resolved from the image's `User` or `-u`."""

    uid: int
    gid: int

    def text(self) -> str:
        return f"{self.uid}:{self.gid}"


def image_settings(record: dict[str, Any] | None) -> dict[str, Any]:
    """The `config` section of an image config ({} for images made without one)."""
    if not record:
        return {}
    settings = (record.get("config") or {}).get("config")
    return settings if isinstance(settings, dict) else {}


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def command(settings: dict[str, Any], args: tuple[str, ...], entrypoint: str | None, image: str,
            has_config: bool) -> tuple[str, ...]:
    """Docker's rule: Entrypoint + Cmd; ARGS replace Cmd; --entrypoint replaces Entrypoint and clears Cmd."""
    if entrypoint is not None:
        head = [entrypoint] if entrypoint else []
        tail = list(args)
    else:
        head = _strings(settings.get("Entrypoint"))
        tail = list(args) if args else _strings(settings.get("Cmd"))
    words = tuple(head + tail)
    if words:
        return words
    if not has_config:
        return ("sh",)  # images made without a config (busybox, import, commit) start a shell, as before
    raise UsageError(f"no command specified: image {image} has no Entrypoint or Cmd, give one after the image name")


def environment(settings: dict[str, Any], user_env: tuple[str, ...]) -> tuple[str, ...]:
    """The image's Env, then -e (which wins for the same name)."""
    merged: dict[str, str] = {}
    for item in [*_strings(settings.get("Env")), *user_env]:
        key, _, value = item.partition("=")
        if key:
            merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


def exposed_ports(settings: dict[str, Any]) -> list[str]:
    """ExposedPorts as -p arguments for -P (`8080/tcp`)."""
    ports = settings.get("ExposedPorts")
    if not isinstance(ports, dict):
        return []
    result = []
    for key in ports:
        number, _, proto = str(key).partition("/")
        if number.isdigit():
            result.append(f"{number}/{proto or 'tcp'}")
    return result


def _table(text: str | None) -> list[list[str]]:
    if not text:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(spec: str, tree: ImageTree) -> User:
    """USER[:GROUP], each a number or a name of the image's /etc/passwd and /etc/group."""
    name, _, group = spec.partition(":")
    passwd = _table(tree.read_text("/etc/passwd"))
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in passwd if len(e) > 3 and e[2] == name), None)
    else:
        entry = next((e for e in passwd if e and e[0] == name), None)
        if entry is None or len(entry) < 4 or not entry[2].isdigit():
            raise UsageError(f"unable to find user {name}: no matching entries in the image's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and len(entry) > 3 and entry[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            groups = _table(tree.read_text("/etc/group"))
            found = next((g for g in groups if g and g[0] == group and len(g) > 2 and g[2].isdigit()), None)
            if found is None:
                raise UsageError(f"unable to find group {group}: no matching entries in the image's /etc/group")
            gid = int(found[2])
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise UsageError(f"invalid user {spec!r}: ids go up to 4294967294")
    return User(uid, gid)


def find_program(program: str, env: tuple[str, ...], default_path: str, tree: ImageTree) -> str | None:
    """The absolute path of the command in the image (its PATH), or None."""
    if "/" in program:
        return program if tree.exists(program) else None
    path = default_path
    for item in env:
        if item.startswith("PATH="):
            path = item[5:]
    for directory in path.split(":"):
        if directory.startswith("/") and tree.exists(f"{directory}/{program}"):
            return f"{directory.rstrip('/')}/{program}"
    return None
