"""portscope ls: every TCP/UDP socket with its processes."""

from __future__ import annotations

from typing import Any

import click

from portscope.cli.options import (
    COMMAND_SETTINGS,
    Command,
    color_option,
    family_options,
    json_option,
    netns_option,
    numeric_option,
    run_body,
)
from portscope.shell.values import complete_expression, complete_pids, complete_ports, complete_states, complete_users

BACKENDS = ("auto", "netlink", "proc")


@click.command("ls", cls=Command, context_settings=COMMAND_SETTINGS)
@click.option("-a", "--all", "all_states", is_flag=True, help="Every state, TIME-WAIT and bound-only sockets too.")
@click.option("-l", "--listening", is_flag=True, help="Only listeners (UDP: unconnected bound sockets).")
@click.option("-t", "--tcp", is_flag=True, help="TCP sockets.")
@click.option("-u", "--udp", is_flag=True, help="UDP sockets.")
@click.option("-x", "--unix", is_flag=True, help="UNIX sockets (with -t/-u: those too), with the peer's processes.")
@family_options("IPv4 sockets only.", "IPv6 sockets only.")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    shell_complete=complete_states,
    help="Only these states (repeatable, or comma-separated); groups: connected, synchronized, "
    "listening, bucket, big, all.",
)
@click.option(
    "-y",
    "--port",
    "ports",
    multiple=True,
    metavar="PORT[-PORT]",
    shell_complete=complete_ports,
    help="Local or remote port or range.",
)
@click.option(
    "--sport", multiple=True, metavar="PORT[-PORT]", shell_complete=complete_ports, help="Local port or range."
)
@click.option("--dport", multiple=True, metavar="PORT[-PORT]", help="Remote port or range.")
@click.option(
    "--src", multiple=True, metavar="ADDR[/LEN]", help="Local address or CIDR; [fe80::1%eth0]: on that interface."
)
@click.option(
    "--dst", multiple=True, metavar="ADDR[/LEN]", help="Remote address or CIDR; [fe80::1%eth0]: on that interface."
)
@click.option(
    "--pid", "pids", multiple=True, metavar="PID", shell_complete=complete_pids, help="Sockets held by this process."
)
@click.option(
    "--process",
    "process_names",
    multiple=True,
    metavar="NAME",
    help="Process name or command line contains NAME (python3 -m http.server: http).",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="USER",
    shell_complete=complete_users,
    help="Socket or process owned by USER (name or uid).",
)
@click.option(
    "--no-processes",
    "join_processes",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Skip the process join (faster).",
)
@click.option(
    "-p",
    "--processes",
    "show_processes",
    is_flag=True,
    help="Show the processes (as ss -p; always on here, unless --no-processes).",
)
@numeric_option()
@click.option("-H", "--no-header", "no_header", is_flag=True, help="No header line (as ss -H).")
@click.option(
    "--pids",
    "pids_only",
    is_flag=True,
    help="Only the holders' pids, one per line, each once (as lsof -t).",
)
@json_option("A JSON array, one object per socket (schema in portscope-ls(1)).")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="JSON Lines: the objects of --json, one per line.")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Where socket data comes from: netlink sock_diag, /proc/net, or netlink with /proc fallback.",
)
@netns_option()
@color_option()
@click.option("-e", "--extended", is_flag=True, help="Show uid, inode, socket cookie, v6only and device columns.")
@click.option("-o", "--timers", is_flag=True, help="Show the timer column (name, time left, retransmissions).")
@click.option("-m", "--memory", is_flag=True, help="Show socket memory (JSON key memory).")
@click.option("-i", "--info", is_flag=True, help="Show TCP internals: rtt, cwnd, rto, mss, rates (JSON key tcp_info).")
@click.argument("expression", nargs=-1, metavar="[EXPRESSION]...", shell_complete=complete_expression)
def ls(**params: Any) -> None:
    """List TCP and UDP sockets with the processes that hold them.

    By default: listening and connected sockets. -a adds TIME-WAIT and bound-only sockets. The
    letters of ss work: ls -tulpn, -tanp, -ltn, -4tl (-p is always on: processes are shown unless
    --no-processes).

    EXPRESSION is an ss(8) filter: state/exclude STATE, sport/dport OP PORT, src/dst ADDR[/LEN][:PORT],
    dev NAME, fwmark MARK[/MASK], autobound, combined with and, or, not and parentheses (left to right,
    as ss reads them), plus pid, user, process, unit, container and netns. It narrows what the options
    select.

    \b
    Examples:
      portscope ls -tulpn               listeners, as ss -tulpn
      portscope ls -a --port 8080       everything on port 8080
      portscope ls --state connected --dst 10.0.0.0/8
      portscope ls state established '( dport = :443 or sport = :443 )'
      portscope ls -ta 'sport >= :1024 and not src 127.0.0.0/8 and user www-data'
      portscope ls -ti state established dst 10.0.0.1   TCP internals, as ss -ti
      kill $(portscope ls --pids -l --port 8080)
      portscope ls -a -n --json --no-processes | jq length
      portscope ls -x                   UNIX sockets, the processes at both ends
      portscope ls -l --jsonl | jq -c '[.local_port, .processes[].name]'

    \b
    Exit status: 0 the sockets were listed (also when the reader stops early,
    as with | head).
    """
    from portscope.cli.bodies import ls as body

    run_body(body, params)
