"""The command line: parse, call an operation, format the answer. Nothing is decided here."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from wrapdock import __version__
from wrapdock._click import click
from wrapdock.errors import UsageError as WrapdockUsage
from wrapdock.errors import WrapdockError
from wrapdock.plaintable import plain_cells, plain_table
from wrapdock.quickimport import load_tabulate, save_compiled_methods
from wrapdock.session import DEFAULT_DATA_DIR, Session
from wrapdock.state import DEFAULT_STATE_DIR

EXIT_INTERNAL = 70


class AliasGroup(click.Group):
    """A group whose commands also answer to other names (`network ls` = `network list`)."""

    def __init__(self, *args: Any, aliases: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = aliases or {}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


def _session() -> Session:
    return click.get_current_context().find_object(Session)


def _set_print_only(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Session).print_only = True


print_only_option = click.option(
    "--print-only", is_flag=True, expose_value=False, callback=_set_print_only,
    help="Print the commands as a bash script instead of running them; change nothing.")

format_option = click.option("--format", "output_format", type=click.Choice(["table", "json"]),
                             default="table", show_default=True, help="Output format.")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """click's version_option would import importlib.metadata (~30 ms) to find a version we know."""
    if value and not ctx.resilient_parsing:
        click.echo(f"wrapdock {__version__}")
        ctx.exit()


def _emit_script(session: Session) -> None:
    """In print-only mode the result of a changing command is the script, on stdout (a multi-host lab's
    PIDs, known only when it runs, read from the lab's PID files)."""
    from wrapdock.labhosts import render_pids
    from wrapdock.render import render_script

    click.echo(render_pids(render_script(session.printed, session.argv)), nl=False)


@click.group(cls=AliasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
@click.option("--print-only", is_flag=True,
              help="Print what a changing command would run as a bash script; change nothing.")
@click.option("--quiet", is_flag=True, help="Do not print the command trail.")
@click.option("--trail", "trail_mode", type=click.Choice(["text", "json", "quiet"]), default="text",
              show_default=True, help="How the command trail is printed on stderr.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="WRAPDOCK_STATE_DIR",
              default=DEFAULT_STATE_DIR, show_default=True, help="Where wrapdock keeps its JSON state.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="WRAPDOCK_DATA_DIR",
              default=DEFAULT_DATA_DIR, show_default=True,
              help="Where images and containers' writable layers live.")
@click.option("--cluster", "cluster_url", envvar="WRAPDOCK_CLUSTER", metavar="etcd://IP:PORT[,IP:PORT...]",
              help="The etcd cluster of cluster-mode vxlan networks (TLS: etcdctl's ETCDCTL_CACERT, "
              "ETCDCTL_CERT, ETCDCTL_KEY).")
@click.pass_context
def cli(ctx: click.Context, print_only: bool, quiet: bool, trail_mode: str, state_dir: Path,
        data_dir: Path, cluster_url: str | None) -> None:
    """Build Linux containers and container networks from real commands, and show every step.

    Every command that changes the host prints what it runs (the trail, on stderr) and can print it
    as a standalone bash script instead (--print-only).
    """
    invocation = ctx.obj or {}
    cluster = None
    if cluster_url:
        from wrapdock.clusterstore import parse_url

        cluster = parse_url(cluster_url)
    ctx.obj = Session(state_dir=state_dir, data_dir=data_dir, trail_mode="quiet" if quiet else trail_mode,
                      print_only=print_only, argv=list(invocation.get("argv", sys.argv[1:])), cluster=cluster)


# -- network ----------------------------------------------------------------------------------
@cli.group(cls=AliasGroup, aliases={"ls": "list", "remove": "rm"})
def network() -> None:
    """Manage networks (create, list|ls, inspect, rm|remove; join, leave, sync for vxlan)."""


@network.command("create")
@click.argument("name")
@click.option("--driver", "-d", default="bridge", show_default=True,
              help="Network driver: bridge (one host) or vxlan (a bridge across hosts: static --peer list, "
              "or with --cluster defined in etcd and joined by this host).")
@click.option("--subnet", required=True, help="IPv4 subnet, e.g. 10.20.0.0/24 or 162.16.0.1/24 "
              "(an address with host bits set becomes the gateway).")
@click.option("--gateway", help="Gateway address (default: the first usable address).")
@click.option("--bridge-name", help="Name of the bridge link (default: the network name; at most 15 chars).")
@click.option("--mtu", type=click.IntRange(68, 65535), help="MTU of the bridge.")
@click.option("--internal", is_flag=True, help="No NAT and no forwarding beyond the bridge.")
@click.option("--isolated", is_flag=True, help="No traffic to or from other wrapdock networks (Docker's way).")
@click.option("--vni", type=int, help="vxlan: VXLAN network identifier, 1-16777215 (default: derived from NAME).")
@click.option("--port", type=int, help="vxlan: UDP port of the VXLAN packets (default: 4789).")
@click.option("--host-subnet-size", type=int,
              help="vxlan: prefix length of each host's address range (default: 24).")
@click.option("--host-range", help="vxlan: this host's range (default: derived from its VTEP address).")
@click.option("--peer", "peers", multiple=True, help="vxlan: another host's VTEP address; repeatable.")
@click.option("--vtep", help="vxlan: this host's VTEP address or underlay interface (default: the default "
              "route's interface).")
@print_only_option
def network_create(name: str, driver: str, subnet: str, gateway: str | None, bridge_name: str | None,
                   mtu: int | None, internal: bool, isolated: bool, vni: int | None, port: int | None,
                   host_subnet_size: int | None, host_range: str | None, peers: tuple[str, ...],
                   vtep: str | None) -> None:
    """Create a network NAME (a bridge, or with --driver vxlan this host's part of an overlay)."""
    from wrapdock import networks
    from wrapdock.netspec import NetworkRequest

    session = _session()
    created = networks.create(session, NetworkRequest(
        name=name, subnet=subnet, driver=driver, gateway=gateway, bridge_name=bridge_name, mtu=mtu,
        internal=internal, isolated=isolated, vni=vni, port=port, host_subnet_size=host_subnet_size,
        host_range=host_range, peers=peers, vtep=vtep))
    if session.print_only:
        _emit_script(session)
    else:
        click.echo(created.name)


@network.command("list")
@format_option
@click.option("--quiet", "-q", is_flag=True, help="Only print network names.")
def network_list(output_format: str, quiet: bool) -> None:
    """List networks (alias: ls)."""
    from wrapdock import networks

    session = _session()
    views = [networks.describe(session, n) for n in networks.all_networks(session)]
    if quiet:
        for view in views:
            click.echo(view["name"])
    elif output_format == "json":
        click.echo(json.dumps(views, indent=2))
    else:
        tabulate = load_tabulate()

        rows = [[v["name"], v["driver"], v["scope"], v["subnet"], v["gateway"], v["bridge"],
                 len({a["owner"] for a in v["allocations"]})] for v in views]
        click.echo(tabulate(rows, headers=["NAME", "DRIVER", "SCOPE", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"],
                            tablefmt="plain"))


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("--format", "output_format", type=click.Choice(["json"]), default="json", show_default=True,
              help="Output format.")
def network_inspect(names: tuple[str, ...], output_format: str) -> None:
    """Show networks as JSON, with their IP allocations."""
    from wrapdock import networks

    click.echo(json.dumps(networks.inspect(_session(), list(names)), indent=2))


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Disconnect attached containers first.")
@print_only_option
def network_rm(names: tuple[str, ...], force: bool) -> None:
    """Remove networks and exactly the links and rules they made (alias: remove)."""
    from wrapdock import networks

    session = _session()
    removed = networks.remove(session, list(names), force=force)
    if session.print_only:
        _emit_script(session)
    else:
        for network in removed:
            click.echo(network.name)


@network.command("join")
@click.argument("name")
@click.option("--peer", "peers", multiple=True,
              help="Static vxlan: the VTEP address of a host that joined the network; repeatable.")
@click.option("--vtep", help="Cluster vxlan: this host's VTEP address or underlay interface (default: the "
              "default route's interface).")
@print_only_option
def network_join(name: str, peers: tuple[str, ...], vtep: str | None) -> None:
    """Cluster vxlan: this host joins NAME (claims a range, registers, creates its devices).
    Static vxlan (--peer): add peers, then sync this host's kernel."""
    from wrapdock import networks

    session = _session()
    joined, plan = networks.join(session, name, list(peers), vtep)
    if peers:
        _report_sync(session, name, plan)
    elif session.print_only:
        _emit_script(session)
    else:
        click.echo(joined.name)


@network.command("leave")
@click.argument("name")
@click.option("--host", "host", help="Another host: its VTEP address (cluster: or host name).")
@click.option("--force", "-f", is_flag=True, help="With --host: the host is gone for good (dead), drop it anyway; "
              "without: disconnect this host's containers first.")
@print_only_option
def network_leave(name: str, host: str | None, force: bool) -> None:
    """Cluster vxlan: this host leaves NAME, or (--host HOST --force) a dead host's registration goes.
    Static vxlan: drop a peer (--host VTEP), then sync; this host itself leaves with `network rm`."""
    from wrapdock import networks

    session = _session()
    network, plan = networks.leave(session, name, host, force)
    if host is None and network is not None and network.scope == "cluster":
        if session.print_only:
            _emit_script(session)
        else:
            click.echo(name)
        return
    _report_sync(session, name, plan)


@network.command("sync")
@click.argument("name")
@print_only_option
def network_sync(name: str) -> None:
    """Make this host's kernel match NAME's peers: read the FDB, run only the difference."""
    from wrapdock import networks

    session = _session()
    _report_sync(session, name, networks.sync(session, name))


def _report_sync(session: Session, name: str, plan: Any) -> None:
    if session.print_only:
        _emit_script(session)
    elif plan.steps:
        click.echo(f"{name}: {len(plan.steps)} change(s)")
    else:
        click.echo(f"{name}: in sync, nothing to do")


@network.command("connect")
@click.argument("network_name", metavar="NETWORK")
@click.argument("container")
@click.option("--ip", help="The address on NETWORK (default: the next free one).")
@print_only_option
def network_connect(network_name: str, container: str, ip: str | None) -> None:
    """Give a container one more interface (eth1, eth2, ...) on NETWORK."""
    from wrapdock import containers

    session = _session()
    record = containers.connect(session, network_name, container, ip)
    _report(session, [record["name"]])


@network.command("disconnect")
@click.argument("network_name", metavar="NETWORK")
@click.argument("container")
@click.option("--force", "-f", is_flag=True, help="Also withdraw ports published through NETWORK.")
@print_only_option
def network_disconnect(network_name: str, container: str, force: bool) -> None:
    """Take a container off NETWORK (its interface and address there)."""
    from wrapdock import containers

    session = _session()
    record = containers.disconnect(session, network_name, container, force)
    _report(session, [record["name"]])


# -- containers -------------------------------------------------------------------------------
def _need_a_terminal(session) -> None:
    """-it relays this terminal to the container's: as Docker, refuse when stdin is not one."""
    if not session.print_only and not sys.stdin.isatty():
        raise WrapdockUsage("the input device is not a TTY (-it needs a terminal; use -t or -i alone)")


_NO_INTERSPERSED = {"allow_interspersed_args": False}


# as in Docker, `run -h NAME` is the host name: run's help is --help only
@cli.command("run", context_settings={**_NO_INTERSPERSED, "help_option_names": ["--help"]})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--name", "-name", "name", help="Container name (also the series' -name).")
@click.option("--detach", "-d", is_flag=True, help="Run in the background; output goes to `wrapdock logs`.")
@click.option("--interactive", "-i", is_flag=True, help="Keep stdin attached.")
@click.option("--tty", "-t", is_flag=True, help="A terminal of its own (a pty of the container's /dev/pts).")
@click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits.")
@click.option("--env", "-e", multiple=True, help="KEY=VALUE (or KEY to pass this environment's value).")
@click.option("--volume", "-v", "volumes", multiple=True, help="HOST_PATH:CONTAINER_PATH[:ro|rw] bind mount.")
@click.option("--memory", "-m", help="Memory limit, e.g. 64m (over it the container is OOM-killed).")
@click.option("--cpus", help="CPU limit, e.g. 0.5.")
@click.option("--cpu-shares", type=int, help="Relative CPU weight (2-262144).")
@click.option("--cpuset-cpus", help="CPUs the container may use, e.g. 0-1.")
@click.option("--pids-limit", type=int, help="Maximum number of processes (-1: no limit).")
@click.option("--hostname", "-h", help="Host name inside (default: the container name).")
@click.option("--workdir", "-w", help="Working directory inside.")
@click.option("--cap-add", multiple=True, help="Add a capability (e.g. NET_ADMIN, or ALL).")
@click.option("--cap-drop", multiple=True, help="Drop a capability (or ALL).")
@click.option("--privileged", is_flag=True, help="All capabilities.")
@click.option("--net", "--network", "-net", "network",
              help="A wrapdock network NAME, 'none' (the default: only lo) or 'host' (the host's network).")
@click.option("--ip", help="The container's address on --net (default: the next free one).")
@click.option("--publish", "-p", multiple=True,
              help="[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|/udp] (ranges a-b too; without a host "
              "port, a free one is picked); repeatable.")
@click.option("--dns", multiple=True, help="Nameserver for /etc/resolv.conf (default: the host's).")
@click.option("--add-host", multiple=True, help="NAME:IP line for /etc/hosts.")
@click.option("--entrypoint", help="Replace the image's Entrypoint (and clear its Cmd); '' for none.")
@click.option("--user", "-u", help="USER[:GROUP] to run as: numbers, or names of the image's /etc/passwd.")
@click.option("--publish-all", "-P", is_flag=True, help="Publish every port the image exposes to a free host port.")
@print_only_option
def run_command(args: tuple[str, ...], name: str | None, detach: bool, interactive: bool, tty: bool,
                auto_remove: bool, env: tuple[str, ...], volumes: tuple[str, ...], memory: str | None,
                cpus: str | None, cpu_shares: int | None, cpuset_cpus: str | None, pids_limit: int | None,
                hostname: str | None, workdir: str | None, cap_add: tuple[str, ...], cap_drop: tuple[str, ...],
                privileged: bool, network: str | None, ip: str | None, publish: tuple[str, ...],
                dns: tuple[str, ...], add_host: tuple[str, ...], entrypoint: str | None, user: str | None,
                publish_all: bool) -> None:
    """Run a command in a new container: run [OPTIONS] [IMAGE] [COMMAND [ARG...]].

    When the first word is not an image (the series' `run top`), it runs in the default image busybox.
    """
    from wrapdock import containers

    if detach and interactive and not tty:
        raise WrapdockUsage("-d -i needs -t: wrapdock has no attach, so a detached container's input stays empty")
    session = _session()
    if interactive and tty and not detach:
        _need_a_terminal(session)
    request = containers.RunRequest(
        args=args, name=name, env=env, volumes=volumes, memory=memory, cpus=cpus, cpu_shares=cpu_shares,
        cpuset_cpus=cpuset_cpus, pids_limit=pids_limit, hostname=hostname, workdir=workdir, cap_add=cap_add,
        cap_drop=cap_drop, privileged=privileged, detach=detach, interactive=interactive, tty=tty,
        auto_remove=auto_remove, network=network, ip=ip, publish=publish, dns=dns, add_hosts=add_host,
        entrypoint=entrypoint, user=user, publish_all=publish_all)
    config, code = containers.run(session, request)
    for note in request.notes:
        click.echo(f"wrapdock: note: {note}", err=True)
    if session.print_only:
        _emit_script(session)
    elif detach:
        click.echo(config.id)
    if code:
        click.get_current_context().exit(code)


@cli.command("ps")
@click.option("--all", "-a", "show_all", is_flag=True, help="Also stopped containers.")
@click.option("--quiet", "-q", is_flag=True, help="Only ids.")
@format_option
def ps_command(show_all: bool, quiet: bool, output_format: str) -> None:
    """List containers (running ones; -a for all)."""
    from wrapdock import containerviews  # reads only: a light import

    views = containerviews.listing(_session(), show_all)
    if quiet:
        for v in views:
            click.echo(v["id"][:12])
    elif output_format == "json":
        click.echo(json.dumps(views, indent=2))
    else:
        import shlex

        def short(command: list[str]) -> str:
            text = shlex.join(command)
            return text if len(text) <= 30 else text[:29] + "…"

        rows = [[v["id"][:12], v["name"], v["image"], short(v["command"]), v["state"]["text"],
                 str(v["state"]["pid"] or ""), containerviews.ago(v["created"]),
                 ", ".join(e["address"] for e in v["endpoints"]), ", ".join(v["published"])] for v in views]
        headers = ["ID", "NAME", "IMAGE", "COMMAND", "STATUS", "PID", "CREATED", "ADDRESSES", "PORTS"]
        click.echo(plain_table(rows, headers) if plain_cells(rows) else
                   load_tabulate()(rows, headers=headers, tablefmt="plain", disable_numparse=True))


@cli.command("port")
@click.argument("container")
@click.argument("port", metavar="[PORT[/PROTO]]", required=False)
def port_command(container: str, port: str | None) -> None:
    """List a container's published ports, or the host address of one of its ports (as in Docker)."""
    from wrapdock import containerviews  # reads only: a light import

    for line in containerviews.port_lines(_session(), container, port):
        click.echo(line)


@cli.command("logs")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the container stops.")
@click.argument("container")
def logs_command(follow: bool, container: str) -> None:
    """Print a detached container's output."""
    from wrapdock import containerviews  # reads only: a light import

    containerviews.logs(_session(), container, follow)


@cli.command("exec", context_settings=_NO_INTERSPERSED)
@click.option("--interactive", "-i", is_flag=True, help="Keep stdin attached.")
@click.option("--tty", "-t", is_flag=True, help="A terminal of its own (a pty of the container's /dev/pts).")
@click.option("--user", "-u", help="USER[:GROUP] (default: the container's user).")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@print_only_option
def exec_command(interactive: bool, tty: bool, user: str | None, container: str, command: tuple[str, ...]) -> None:
    """Run a command inside a running container (its namespaces, root, cgroups, env, capabilities)."""
    from wrapdock import containers

    session = _session()
    if interactive and tty:
        _need_a_terminal(session)
    code = containers.exec_in(session, container, list(command), tty, interactive, user)
    if session.print_only:
        _emit_script(session)
    elif code:
        click.get_current_context().exit(code)


@cli.command("stop")
@click.option("--time", "-t", "timeout", type=click.IntRange(0, 3600), default=10, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.argument("containers_", metavar="CONTAINER...", nargs=-1, required=True)
@print_only_option
def stop_command(timeout: int, containers_: tuple[str, ...]) -> None:
    """Stop containers: SIGTERM, then SIGKILL after -t seconds."""
    from wrapdock import containers

    session = _session()
    stopped = containers.stop(session, list(containers_), timeout)
    _report(session, [r["name"] for r in stopped])


@cli.command("start")
@click.argument("containers_", metavar="CONTAINER...", nargs=-1, required=True)
@print_only_option
def start_command(containers_: tuple[str, ...]) -> None:
    """Start stopped containers again, with their configuration (detached)."""
    from wrapdock import containers

    session = _session()
    started = containers.start(session, list(containers_))
    _report(session, [r["name"] for r in started])


@cli.command("rm")
@click.option("--force", "-f", is_flag=True, help="Kill running containers first.")
@click.argument("containers_", metavar="CONTAINER...", nargs=-1, required=True)
@print_only_option
def rm_command(force: bool, containers_: tuple[str, ...]) -> None:
    """Remove containers: their process (-f), namespace, cgroups, layer and record."""
    from wrapdock import containers

    session = _session()
    removed = containers.remove(session, list(containers_), force)
    _report(session, [r["name"] for r in removed])


@cli.command("inspect")
@click.argument("containers_", metavar="CONTAINER...", nargs=-1, required=True)
def inspect_command(containers_: tuple[str, ...]) -> None:
    """Show containers as JSON: configuration, state, paths."""
    from wrapdock import containerviews  # reads only: a light import

    session = _session()
    click.echo(json.dumps([containerviews.view(session, containerviews.find(session, ref)) for ref in containers_],
                          indent=2))


@cli.command("commit")
@click.argument("container")
@click.argument("image")
@print_only_option
def commit_command(container: str, image: str) -> None:
    """Save a container's files (its layer over its image) as a new image."""
    from wrapdock import containers

    session = _session()
    record = containers.commit(session, container, image)
    _report(session, [record["name"]])


# -- images -------------------------------------------------------------------------------------
@cli.group("image", cls=AliasGroup, aliases={"list": "ls", "remove": "rm"})
def image_group() -> None:
    """Manage images (load, save, import, ls|list, inspect, tag, rm|remove)."""


@image_group.command("load")
@click.option("--input", "-i", "path", required=True,
              help="An OCI image layout (directory or tar) or a `docker save` tarball.")
@click.option("--name", help="Load the archive's single image under this name instead of its own.")
@print_only_option
def image_load(path: str, name: str | None) -> None:
    """Load every image of an archive: its layers checked, unpacked once each, its tags."""
    from wrapdock import images

    session = _session()
    records = images.load(session, path, name)
    if session.print_only:
        _emit_script(session)
    else:
        for record in records:
            click.echo(f"Loaded image: {record['name']}")


@image_group.command("save")
@click.option("--output", "-o", required=True, help="The archive to write.")
@click.option("--format", "archive_format", type=click.Choice(["oci", "docker"]), default="oci", show_default=True,
              help="oci: an OCI layout as a tar (oci-archive); docker: the same with Docker's manifest.json.")
@click.argument("names_", metavar="IMAGE...", nargs=-1, required=True)
@print_only_option
def image_save(output: str, archive_format: str, names_: tuple[str, ...]) -> None:
    """Write images to an archive that docker/podman load, skopeo and umoci read."""
    from wrapdock import images

    session = _session()
    saved = images.save(session, list(names_), output, archive_format)
    _report(session, saved)


@image_group.command("tag")
@click.argument("source")
@click.argument("target")
def image_tag(source: str, target: str) -> None:
    """Give image SOURCE the name TARGET too (the same layers)."""
    from wrapdock import images

    images.tag(_session(), source, target)


@image_group.command("inspect")
@click.argument("names_", metavar="IMAGE...", nargs=-1, required=True)
def image_inspect(names_: tuple[str, ...]) -> None:
    """Show images as JSON: config (Entrypoint, Cmd, Env, User, ExposedPorts, Labels, ...) and layers."""
    from wrapdock import images

    click.echo(json.dumps(images.inspect(_session(), list(names_)), indent=2))


@image_group.command("import")
@click.argument("tarball")
@click.argument("name")
@print_only_option
def image_import(tarball: str, name: str) -> None:
    """Import a root filesystem tarball (such as `docker export` writes) as image NAME."""
    from wrapdock import images

    session = _session()
    record = images.import_tarball(session, tarball, name)
    _report(session, [record["name"]])


@image_group.command("ls")
@format_option
def image_ls(output_format: str) -> None:
    """List images."""
    from wrapdock import containerviews, images

    session = _session()
    views = [{**{k: v for k, v in r.items() if k != "config"}, "size": images.size(session, r["name"]),
              "containers": containerviews.image_users(session, r["name"])} for r in images.all_images(session)]
    if output_format == "json":
        click.echo(json.dumps(views, indent=2))
        return
    tabulate = load_tabulate()

    rows = [[v["name"], v["id"][:12], containerviews.ago(v["created"]), len(v.get("layers") or [None]),
             f"{v['size'] / 1e6:.1f}MB", v["source"]] for v in views]
    click.echo(tabulate(rows, headers=["NAME", "ID", "CREATED", "LAYERS", "SIZE", "SOURCE"], tablefmt="plain"))


@image_group.command("rm")
@click.argument("names_", metavar="IMAGE...", nargs=-1, required=True)
@print_only_option
def image_rm(names_: tuple[str, ...]) -> None:
    """Remove images (refused while a container uses one)."""
    from wrapdock import containerviews, images

    session = _session()
    for name in names_:
        canonical = images.check_image_name(name)
        images.remove(session, canonical, containerviews.image_users(session, canonical))
    _report(session, [images.check_image_name(n) for n in names_])


# -- labs -----------------------------------------------------------------------------------------
@cli.group("lab")
def lab_group() -> None:
    """Whole topologies from a YAML/JSON file: up, check, down, script, graph, ls."""


lab_argument = click.argument("lab_file", metavar="FILE|NAME")


@lab_group.command("up")
@lab_argument
@print_only_option
def lab_up(lab_file: str) -> None:
    """Create the lab's networks and containers (all of it is removed again if a step fails)."""
    from wrapdock import lab

    session = _session()
    data = lab.load(lab_file)
    lab.up(session, data)
    if session.print_only:
        _emit_script(session)
    else:
        hosts = f"{len(data['hosts'])} host(s), " if "hosts" in data else ""
        click.echo(f"lab {data['name']} is up: {hosts}{len(data.get('networks', {}))} network(s), "
                   f"{len(data.get('containers', {}))} container(s)")


@lab_group.command("down")
@lab_argument
@print_only_option
def lab_down(lab_file: str) -> None:
    """Remove exactly what the lab made; what is gone already is skipped."""
    from wrapdock import lab

    session = _session()
    data = lab.load(lab_file)
    removed = lab.down(session, data)
    if session.print_only:
        _emit_script(session)
    else:
        if "hosts" in data:
            click.echo(f"lab {data['name']} is down: stopped {len(removed)} host(s)")
        else:
            click.echo(f"lab {data['name']} is down: removed {len(removed)} object(s)")


@lab_group.command("check")
@lab_argument
@format_option
def lab_check(lab_file: str, output_format: str) -> None:
    """Send the lab's checks as real packets; exit 1 if any check disagrees with its expectation or
    could not run (an error: its source is missing or stopped, a tool is missing, the target does not
    resolve)."""
    from wrapdock import lab

    session = _session()
    results = lab.run_checks(session, lab.load(lab_file))
    if output_format == "json":
        click.echo(json.dumps([{**r.__dict__, "agrees": r.agrees} for r in results], indent=2))
    else:
        tabulate = load_tabulate()

        rows = [[i, r.name, r.source, r.target, r.expect, r.got, "yes" if r.agrees else "NO",
                 f"{r.seconds * 1000:.0f} ms", "" if r.agrees else _one_line(r.detail)]
                for i, r in enumerate(results, start=1)]
        click.echo(tabulate(rows, headers=["#", "CHECK", "FROM", "TO", "EXPECT", "GOT", "AS EXPECTED", "TIME",
                                           "WHY NOT"], tablefmt="simple"))
        agree = sum(1 for r in results if r.agrees)
        errors = sum(1 for r in results if r.got == "error")
        click.echo(f"{agree}/{len(results)} checks as expected" + (f", {errors} could not run" if errors else ""))
    for i, r in enumerate(results, start=1):
        if r.got == "error":
            click.echo(f"wrapdock: error: check {i} ({r.name}) could not run: {_one_line(r.detail)}", err=True)
    if any(not r.agrees for r in results):
        click.get_current_context().exit(1)


@lab_group.command("script")
@lab_argument
@click.option("--host", "only", metavar="NAME", help="Multi-host labs: only this host's script (or 'underlay').")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Multi-host labs: write one file per script (underlay.sh, HOST.sh) into this directory.")
def lab_script(lab_file: str, only: str | None, output_dir: Path | None) -> None:
    """The whole lab as one standalone bash script (up, check, down); a multi-host lab as one script per
    host plus `underlay` (the lab namespace, the hosts, their wiring, etcd, the checks from outside)."""
    from wrapdock import lab, labhosts

    session = _session()
    data = lab.load(lab_file)
    if not labhosts.is_multihost(data):
        if only or output_dir:
            raise WrapdockUsage("--host and --output-dir are for labs with hosts: (this one has none)")
        click.echo(lab.script({"data_dir": session.data_dir}, data, session.argv), nl=False)
        return
    if only is not None and only != "underlay" and only not in data["hosts"]:
        raise WrapdockUsage(f"--host {only}: no such host in lab {data['name']} (hosts: underlay, "
                            f"{', '.join(data['hosts'])})")
    texts = labhosts.scripts({"data_dir": session.data_dir, "state_dir": session.state_dir}, data, session.argv)
    if only is not None:
        texts = {only: texts[only]}
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (output_dir / f"{name}.sh").write_text(text)
            click.echo(output_dir / f"{name}.sh")
        return
    for i, (name, text) in enumerate(texts.items()):
        if len(texts) > 1:
            click.echo(f"{'' if i == 0 else chr(10)}#### {name}.sh " + "#" * 60)
        click.echo(text, nl=False)


@lab_group.command("hosts")
@lab_argument
def lab_hosts(lab_file: str) -> None:
    """A multi-host lab's hosts: addresses, PIDs while it is up, and how to enter each one."""
    from wrapdock import labhosts

    tabulate = load_tabulate()
    session = _session()
    data = __import__("wrapdock.lab", fromlist=["load"]).load(lab_file)
    if not labhosts.is_multihost(data):
        raise WrapdockUsage(f"lab {data['name']} has no hosts: (it runs on this host)")
    click.echo(tabulate(labhosts.host_rows(session, data), headers=["HOST", "UNDERLAY", "UPLINK", "PID", "ENTER"],
                        tablefmt="plain"))


@lab_group.command("graph")
@lab_argument
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write SVG or PNG (by the file's suffix; needs Graphviz's dot) instead of printing DOT.")
def lab_graph(lab_file: str, output: str | None) -> None:
    """The topology as Graphviz DOT: bridges, containers, interfaces, addresses, published ports."""
    from wrapdock import lab

    dot_text = lab.graph(lab.load(lab_file))
    if output is None:
        click.echo(dot_text, nl=False)
        return
    suffix = Path(output).suffix.lstrip(".").lower()
    if suffix not in ("svg", "png"):
        raise WrapdockUsage(f"--output must end in .svg or .png, not {output!r}")
    from wrapdock.runner import sh_executor

    result = sh_executor(["dot", f"-T{suffix}", "-o", output], dot_text)
    if not result.ok:
        raise WrapdockUsage(f"dot failed: {result.stderr.strip()}")
    click.echo(output)


@lab_group.command("ls")
def lab_ls() -> None:
    """The bundled labs (use their names in place of a file)."""
    tabulate = load_tabulate()

    from wrapdock import lab

    click.echo(tabulate(lab.describe_bundled(), headers=["NAME", "DESCRIPTION"], tablefmt="plain"))


def _report(session: Session, names: list[str]) -> None:
    if session.print_only:
        _emit_script(session)
    else:
        for name in names:
            click.echo(name)


from wrapdock.cli_maintenance import register as _register_maintenance  # noqa: E402  (needs the options above)

_register_maintenance(cli)

from wrapdock.cli_cni import register as _register_cni  # noqa: E402  (needs the options above)

_register_cni(cli, network)


# -- entry point ------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every failure leaves as one line on stderr and a documented exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="wrapdock", standalone_mode=False, obj={"argv": args})
        code = result if isinstance(result, int) else 0
    except WrapdockError as exc:
        click.echo(f"wrapdock: error: {exc.message}", err=True)
        code = exc.exit_code
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "wrapdock"
        click.echo(f"wrapdock: error: {_one_line(exc.format_message())} (see '{where} --help')", err=True)
        code = exc.exit_code
    except click.ClickException as exc:
        click.echo(f"wrapdock: error: {_one_line(exc.format_message())}", err=True)
        code = exc.exit_code
    except click.Abort:
        click.echo("wrapdock: aborted", err=True)
        code = 130
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as exc:  # a bug: still one line, with the traceback on request
        if os.environ.get("WRAPDOCK_DEBUG"):
            raise
        click.echo(f"wrapdock: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                   "(set WRAPDOCK_DEBUG=1 for the traceback)", err=True)
        code = EXIT_INTERNAL
    return code


def _default_signals() -> None:
    """A shell starts its background jobs with SIGINT and SIGQUIT ignored, and an ignored signal stays
    ignored across exec (and a POSIX shell cannot undo it): a container started from such a job could
    never be interrupted. wrapdock takes the default dispositions back, so what it starts gets them too
    (as Docker's containers do); a Python handler, unlike SIG_IGN, is not inherited by exec."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def run() -> None:
    """The console script. Leaves with os._exit once its output is flushed: the interpreter's own
    teardown (freeing every module and object) takes ~30 ms, more than some whole commands, and by
    now everything wrapdock opened is closed (state files are written with fsync and renamed; a
    crash-safe state never depends on the exit path)."""
    _default_signals()
    try:
        code = main()
    except SystemExit as exc:  # click's shell completion (_WRAPDOCK_COMPLETE=...) answers, then sys.exit()s
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):  # `wrapdock ps | head -1`; a closed stream
            stream.flush()
    save_compiled_methods()  # dataclass methods this run compiled, for the next (as Python writes a .pyc)
    os._exit(code)
