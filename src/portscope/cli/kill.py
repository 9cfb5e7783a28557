"""portscope kill: free a port by signalling exactly the processes that hold it."""

from __future__ import annotations

import sys

import click

from portscope.cli.options import COMMAND_SETTINGS, Command, invocation, json_option, netns_option
from portscope.errors import ExitStatus, UsageError
from portscope.shell.values import complete_ports, complete_signals


@click.command("kill", cls=Command, context_settings=COMMAND_SETTINGS)
@click.argument("port", metavar="PORT", required=False, shell_complete=complete_ports)
@click.option("--dry-run", is_flag=True, help="Show what would be signalled; signal nothing.")
@click.option(
    "-s",
    "--signal",
    "signal_name",
    metavar="SIG",
    default="TERM",
    show_default=True,
    shell_complete=complete_signals,
    help="The first signal: a name (TERM, INT, HUP, KILL...) or a number.",
)
@click.option(
    "--timeout",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="How long to wait for the targets to exit before SIGKILL.",
)
@click.option("--no-escalate", is_flag=True, help="Never send SIGKILL: survivors are reported (exit status 5).")
@click.option(
    "--include-clients", is_flag=True, help="Also signal processes that hold only connections from the local port."
)
@click.option(
    "--force",
    is_flag=True,
    help="Signal processes of systemd services and containers, and container forwarders, too "
    "(never PID 1, kernel threads, service managers or portscope's own ancestors).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask before signalling (needed when not on a terminal).")
@click.option(
    "--connection",
    nargs=2,
    metavar="LOCAL REMOTE",
    default=None,
    help="Instead: close the one TCP connection from LOCAL to REMOTE (ADDR:PORT each) with SOCK_DESTROY, "
    "as ss -K does; no process is signalled.",
)
@json_option("One JSON object: query, targets, port_free, left (schema in README).")
@netns_option()
def kill(
    port: str | None,
    dry_run: bool,
    signal_name: str,
    timeout: float,
    no_escalate: bool,
    include_clients: bool,
    force: bool,
    yes: bool,
    connection: tuple[str, str] | None,
    as_json: bool,
    netns: str | None,
) -> None:
    """Free a port: signal exactly the processes that hold it, and check that it is free.

    PORT takes the forms of who (8080, 8080/tcp, 127.0.0.1:8080, [::1]:8080, http, 8000-8100);
    the port is matched exactly, never as a substring. The targets are every process holding a
    listening or bound socket on it (each holder of a shared socket); --include-clients adds the
    processes that hold only connections from that local port. A process found only through a remote
    port is never a target.

    Each target is opened as a pidfd and checked to be the process that was listed (its start
    time, and that it still holds the socket) before the signal is sent through the pidfd: a pid
    reused meanwhile is never signalled. SIGTERM (or --signal) first, then SIGKILL for those still
    running after --timeout, unless --no-escalate.

    Never signalled: PID 1, kernel threads, service managers, portscope and its ancestors. Unless
    --force: processes of a systemd service (use systemctl stop UNIT, and its .socket unit for socket
    activation), of a container, and forwarders of a container's port (docker-proxy, conmon: use
    docker stop NAME or podman stop NAME). When a holder is refused, nothing is signalled.

    On a terminal the targets are listed and a confirmation is asked (--yes skips it); without a
    terminal, --yes is needed.

    \b
    Examples:
      portscope kill 3000                every process listening on port 3000,
                                         after asking
      portscope kill 3000 --yes          without asking
      portscope kill 8080/tcp --dry-run  who would be signalled, who is refused
      portscope kill 127.0.0.1:5000 -s INT --timeout 10
      portscope kill 5432 --no-escalate  SIGTERM only; status 5 if one survives
      portscope kill 3000 --include-clients --yes
      portscope kill --connection 127.0.0.1:5432 127.0.0.1:51234
                                         close one TCP connection

    \b
    Exit status: 0 every target is gone and nothing listens on the port
    (--dry-run: something would be signalled; --connection: closed), 1 nothing
    to kill on the port (--dry-run: nothing would be signalled; --connection:
    no such connection), 2 bad input or a refusal (a guard, no confirmation,
    no terminal without --yes), 4 the system could not be read (--connection:
    the kernel cannot destroy sockets), 5 a target survived or could not be
    signalled, or the port is still held (and, as for every command, an
    internal error).
    """
    run = invocation()
    if connection is not None:
        if port is not None:
            raise UsageError("give PORT or --connection LOCAL REMOTE, not both")
        _close_connection(connection, netns, dry_run=dry_run, yes=yes, as_json=as_json)
        return
    if port is None:
        raise click.UsageError("missing argument PORT (or --connection LOCAL REMOTE)")

    from portscope.commands.kill import KillVerdict, kill_port
    from portscope.commands.names import Names

    def confirm(plan) -> bool:
        if yes:
            return True
        count = len(plan.to_signal)
        if not _stdin_is_terminal():
            raise UsageError(
                f"not signalling {count} process{'es' if count != 1 else ''} without confirmation: standard input "
                "is not a terminal (add --yes, or --dry-run to see them)"
            )
        from portscope.render.kill import plan_prompt_lines

        for line in plan_prompt_lines(plan):
            click.echo(line, err=True)
        return click.confirm("Proceed?", default=False, err=True)

    result = kill_port(
        port,
        signal=signal_name,
        timeout=timeout,
        escalate=not no_escalate,
        include_clients=include_clients,
        force=force,
        dry_run=dry_run,
        netns=netns,
        confirm=confirm,
    )
    run.answer = {
        KillVerdict.FREED: ExitStatus.OK,
        KillVerdict.WOULD_SIGNAL: ExitStatus.OK,
        KillVerdict.NOTHING: ExitStatus.NOT_FOUND,
        KillVerdict.REFUSED: ExitStatus.USAGE,
        KillVerdict.FAILED: ExitStatus.INTERNAL,  # kill's 5: a target survived or was denied, or the port is held
    }[result.verdict]

    from portscope.render.kill import render_kill

    render_kill(result, run.env, Names.resolve(), as_json=as_json)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _close_connection(connection: tuple[str, str], netns: str | None, *, dry_run: bool, yes: bool, as_json: bool):
    from portscope.commands.kill import ConnectionOutcome, close_connection
    from portscope.commands.names import Names

    run = invocation()

    def confirm(sock, snap) -> bool:
        if yes:
            return True
        if not _stdin_is_terminal():
            raise UsageError(
                "not closing the connection without confirmation: standard input is not a terminal (add --yes)"
            )
        from portscope.render.kill import socket_line

        click.echo(f"About to close: {socket_line(sock, snap)}", err=True)
        return click.confirm("Proceed?", default=False, err=True)

    result = close_connection(connection[0], connection[1], netns=netns, dry_run=dry_run, confirm=confirm)
    run.answer = {
        ConnectionOutcome.CLOSED: ExitStatus.OK,
        ConnectionOutcome.WOULD_CLOSE: ExitStatus.OK,
        ConnectionOutcome.NOT_FOUND: ExitStatus.NOT_FOUND,
        ConnectionOutcome.REFUSED: ExitStatus.USAGE,
        ConnectionOutcome.UNSUPPORTED: ExitStatus.UNREADABLE,
        ConnectionOutcome.DENIED: ExitStatus.INTERNAL,
    }[result.outcome]

    from portscope.render.kill import render_connection

    render_connection(result, run.env, Names.resolve(), as_json=as_json)
