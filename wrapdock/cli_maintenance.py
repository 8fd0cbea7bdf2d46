"""`wrapdock doctor` and `wrapdock gc`: parse, call doctor.examine / gc.reconcile, format."""

from __future__ import annotations

import json

from wrapdock._click import click
from wrapdock.cli import _emit_script, _session, format_option, print_only_option
from wrapdock.quickimport import load_tabulate

EXIT_FINDINGS = 1


@click.command("doctor")
@format_option
def doctor_command(output_format: str) -> None:
    """Check the host for wrapdock and explain each problem with the command that fixes it.

    Checks the tools (and util-linux >= 2.38), root, IPv4 forwarding, a FORWARD DROP policy with
    bridge-nf-call-iptables, both iptables backends in use, strict rp_filter, each network's bridge,
    address, rules (MASQUERADE) and overlapping routes, and state that disagrees with the host:
    containers whose process is gone, half-created containers, and wrapdock's veths, bridges,
    namespaces, rules, cgroups, directories, addresses and mounts that no record owns. Most of these
    `wrapdock gc` fixes.

    Exit status: 0 only when there is no finding at all; 1 when there is at least one, warnings
    included (a warning is something that works now but will bite, or a leftover).
    Forwarding, FORWARD DROP and rp_filter are only checked while a wrapdock network exists.
    """
    from wrapdock import doctor

    found = doctor.examine(_session())
    if output_format == "json":
        click.echo(json.dumps([f.to_dict() for f in found], indent=2))
    elif not found:
        click.echo("no problems found")
    else:
        tabulate = load_tabulate()

        rows = [[f.severity, f.text, "\n".join(f.fix)] for f in found]
        click.echo(tabulate(rows, headers=["SEVERITY", "FINDING", "FIX"], tablefmt="plain"))
    if found:
        click.get_current_context().exit(EXIT_FINDINGS)


@click.command("gc")
@format_option
@print_only_option
def gc_command(output_format: str) -> None:
    """Reconcile the state and the host after crashes, kills or reboots.

    Records the exit of containers whose process died unseen; releases the addresses and drops the
    endpoints of stopped containers whose network plumbing is gone; removes containers a killed
    `wrapdock run` left half-made, as rm -f would; re-creates a network's missing bridge or rules
    from its create plan; and removes what no record owns but is provably wrapdock's (wd* veths,
    rules with wrapdock's owner comments, cgroups, container directories, addresses, its chains
    when no network is left). Never touches anything else. Running it again finds nothing to do.

    Each repair runs on its own: one that fails (a cgroup still busy) stops none of the others.
    Exit status: 0 when every repair was done; 1 when one or more failed, each named on stderr
    with its failed command and that command's error (a second gc finds only those).
    """
    from wrapdock import gc
    from wrapdock.errors import OperationFailed

    session = _session()
    outcome = gc.reconcile(session)
    if session.print_only:
        _emit_script(session)
    elif output_format == "json":
        click.echo(json.dumps(outcome.done, indent=2))
    elif not outcome.done and not outcome.failed:
        click.echo("nothing to do: the state and the host agree")
    else:
        for line in outcome.done:
            click.echo(line)
    for line in outcome.failed:
        click.echo(f"wrapdock: error: gc could not {line}", err=True)
    if outcome.failed:
        click.get_current_context().exit(OperationFailed.exit_code)


def register(cli: click.Group) -> None:
    cli.add_command(doctor_command)
    cli.add_command(gc_command)
