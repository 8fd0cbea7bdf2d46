"""The command line: parse, call an operation, format the answer. Nothing is decided here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from wrapdock import __version__
from wrapdock.errors import WrapdockError
from wrapdock.session import Session
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


def _emit_script(session: Session) -> None:
    """In print-only mode the result of a changing command is the script, on stdout."""
    from wrapdock.render import render_script

    click.echo(render_script(session.printed, session.argv), nl=False)


@click.group(cls=AliasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="wrapdock", message="%(prog)s %(version)s")
@click.option("--print-only", is_flag=True,
              help="Print what a changing command would run as a bash script; change nothing.")
@click.option("--quiet", is_flag=True, help="Do not print the command trail.")
@click.option("--trail", "trail_mode", type=click.Choice(["text", "json", "quiet"]), default="text",
              show_default=True, help="How the command trail is printed on stderr.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="WRAPDOCK_STATE_DIR",
              default=DEFAULT_STATE_DIR, show_default=True, help="Where wrapdock keeps its JSON state.")
@click.pass_context
def cli(ctx: click.Context, print_only: bool, quiet: bool, trail_mode: str, state_dir: Path) -> None:
    """Build Linux containers and container networks from real commands, and show every step.

    Every command that changes the host prints what it runs (the trail, on stderr) and can print it
    as a standalone bash script instead (--print-only).
    """
    invocation = ctx.obj or {}
    ctx.obj = Session(state_dir=state_dir, trail_mode="quiet" if quiet else trail_mode,
                      print_only=print_only, argv=list(invocation.get("argv", sys.argv[1:])))


# -- network ----------------------------------------------------------------------------------
@cli.group(cls=AliasGroup, aliases={"ls": "list", "remove": "rm"})
def network() -> None:
    """Manage bridge networks (create, list|ls, inspect, rm|remove)."""


@network.command("create")
@click.argument("name")
@click.option("--driver", "-d", default="bridge", show_default=True, help="Network driver (only bridge).")
@click.option("--subnet", required=True, help="IPv4 subnet, e.g. 10.20.0.0/24 or 162.16.0.1/24 "
              "(an address with host bits set becomes the gateway).")
@click.option("--gateway", help="Gateway address (default: the first usable address).")
@click.option("--bridge-name", help="Name of the bridge link (default: the network name; at most 15 chars).")
@click.option("--mtu", type=click.IntRange(68, 65535), help="MTU of the bridge.")
@click.option("--internal", is_flag=True, help="No NAT and no forwarding beyond the bridge.")
@print_only_option
def network_create(name: str, driver: str, subnet: str, gateway: str | None, bridge_name: str | None,
                   mtu: int | None, internal: bool) -> None:
    """Create a bridge network NAME."""
    from wrapdock import networks
    from wrapdock.netspec import NetworkRequest

    session = _session()
    created = networks.create(session, NetworkRequest(
        name=name, subnet=subnet, driver=driver, gateway=gateway, bridge_name=bridge_name, mtu=mtu,
        internal=internal))
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
        from tabulate import tabulate

        rows = [[v["name"], v["driver"], v["subnet"], v["gateway"], v["bridge"],
                 len({a["owner"] for a in v["allocations"]})] for v in views]
        click.echo(tabulate(rows, headers=["NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE", "CONTAINERS"],
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
@print_only_option
def network_rm(names: tuple[str, ...]) -> None:
    """Remove networks and exactly the links and rules they made (alias: remove)."""
    from wrapdock import networks

    session = _session()
    removed = networks.remove(session, list(names))
    if session.print_only:
        _emit_script(session)
    else:
        for network in removed:
            click.echo(network.name)


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


def run() -> None:
    sys.exit(main())
