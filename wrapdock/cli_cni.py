"""`wrapdock cni print ADD|DEL` and `wrapdock network cni-config`: the CLI's side of CNI plugin mode."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from wrapdock._click import click
from wrapdock.cli import _emit_script, _session
from wrapdock.errors import UsageError

DEFAULT_CONF_DIR = "/etc/cni/net.d"


@click.group("cni")
def cni_group() -> None:
    """wrapdock as a CNI plugin (the plugin itself is the `wrapdock-cni` executable)."""


@cni_group.command("print")
@click.argument("command", type=click.Choice(["ADD", "DEL"], case_sensitive=False))
def cni_print(command: str) -> None:
    """Print the bash script of a CNI call instead of making it.

    The call is what the plugin would get: the CNI_* variables of this environment (CNI_CONTAINERID,
    CNI_IFNAME, CNI_NETNS, CNI_ARGS) and the network configuration on stdin. Nothing is changed; ADD
    shows the address the network would hand out now.
    """
    from wrapdock import cni, cniattach

    env = {**os.environ, "CNI_COMMAND": command.upper()}
    try:
        call = cni.parse(env, sys.stdin.read())
    except cni.CniError as error:
        raise UsageError(f"CNI {command.upper()}: {error.msg} (CNI error {error.code})") from None
    session = _session()
    session.print_only = True
    if call.state_dir:
        session.state_dir = Path(call.state_dir)
    try:
        if call.command == "ADD":
            cniattach.add(session, call)
        else:
            cniattach.delete(session, call.network, call.container_id, call.ifname)
    except cni.CniError as error:
        raise UsageError(f"CNI {call.command}: {error.msg} (CNI error {error.code})") from None
    _emit_script(session)


@cni_group.command("serve")
def cni_serve() -> None:
    """Answer wrapdock-cni's calls from one resident process (faster: no Python start-up per call).

    Listens on STATE_DIR/cni/server.sock (root only) until SIGTERM or Ctrl-C. While it runs, the
    plugin hands each ADD, DEL, CHECK, GC and STATUS to it; a forked child carries the call out exactly
    as the plugin would (same plans, same runner, same trail file). Without a server, or for a caller
    in other namespaces, the plugin does the call itself. For systemd: templates/cni/.
    """
    from wrapdock import cni, cniserver

    session = _session()
    session.require_root()
    cniserver.serve(session.state_dir / cni.SERVER_SOCKET, lambda line: click.echo(line, err=True))


def conflist(network: str, version: str, state_dir: Path) -> dict:
    """The network configuration list that names a wrapdock network (podman reads only *.conflist)."""
    return {"cniVersion": version, "name": network, "plugins": [{
        "type": "wrapdock", "network": network, "stateDir": str(state_dir),
        "capabilities": {"portMappings": True, "ips": True, "mac": True}}]}


@click.command("cni-config")
@click.argument("name")
@click.option("--dir", "directory", default=DEFAULT_CONF_DIR, show_default=True,
              help="Where the CNI callers read their configuration ('-': print it instead).")
@click.option("--cni-version", default="1.0.0", show_default=True,
              type=click.Choice(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
              help="The conflist's cniVersion (podman 4.3 and containerd 1.6 read at most 1.0.0).")
def network_cni_config(name: str, directory: str, cni_version: str) -> None:
    """Write DIR/10-wrapdock-NAME.conflist: network NAME as a CNI network for podman, containerd, ..."""
    from wrapdock import networks

    session = _session()
    network = networks.load(session, name)
    text = json.dumps(conflist(network.name, cni_version, session.state_dir), indent=2) + "\n"
    if directory == "-":
        click.echo(text, nl=False)
        return
    path = Path(directory) / f"10-wrapdock-{network.name}.conflist"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    click.echo(str(path))


def register(cli: click.Group, network: click.Group) -> None:
    cli.add_command(cni_group)
    network.add_command(network_cni_config)
