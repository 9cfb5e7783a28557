"""portscope ls: every TCP/UDP socket with its processes."""

from __future__ import annotations

import sys

import click

from portscope.shell.values import complete_netns, complete_pids, complete_ports, complete_states, complete_users

BACKENDS = ("auto", "netlink", "proc")


@click.command("ls", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-a", "--all", "all_states", is_flag=True, help="Every state, TIME-WAIT and bound-only sockets too.")
@click.option("-l", "--listening", is_flag=True, help="Only listeners (UDP: unconnected bound sockets).")
@click.option("-t", "--tcp", is_flag=True, help="TCP sockets.")
@click.option("-u", "--udp", is_flag=True, help="UDP sockets.")
@click.option("-4", "--ipv4", "ipv4", is_flag=True, help="IPv4 sockets only.")
@click.option("-6", "--ipv6", "ipv6", is_flag=True, help="IPv6 sockets only.")
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
    "-p",
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
@click.option("--src", multiple=True, metavar="ADDR[/LEN]", help="Local address or CIDR.")
@click.option("--dst", multiple=True, metavar="ADDR[/LEN]", help="Remote address or CIDR.")
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
@click.option("--no-processes", is_flag=True, help="Skip the process join (faster).")
@click.option("-n", "--numeric", is_flag=True, help="Show no service names.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per socket (schema in README).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Where socket data comes from: netlink sock_diag, /proc/net, or netlink with /proc fallback.",
)
@click.option(
    "--netns", metavar="NAME|PID|PATH", shell_complete=complete_netns, help="Look inside another network namespace."
)
def ls(
    all_states: bool,
    listening: bool,
    tcp: bool,
    udp: bool,
    ipv4: bool,
    ipv6: bool,
    states: tuple[str, ...],
    ports: tuple[str, ...],
    sport: tuple[str, ...],
    dport: tuple[str, ...],
    src: tuple[str, ...],
    dst: tuple[str, ...],
    pids: tuple[str, ...],
    process_names: tuple[str, ...],
    users: tuple[str, ...],
    no_processes: bool,
    numeric: bool,
    as_json: bool,
    backend: str,
    netns: str | None,
) -> None:
    """List TCP and UDP sockets with the processes that hold them.

    By default: listening and connected sockets. -a adds TIME-WAIT and bound-only sockets.

    \b
    Examples:
      portscope ls -l                 listeners, like ss -tulpn
      portscope ls -a --port 8080     everything on port 8080
      portscope ls --state connected --dst 10.0.0.0/8
      portscope ls -a -n --json --no-processes | jq length
    """
    from portscope.commands.ls import LsOptions, list_sockets

    options = LsOptions(
        all_states=all_states,
        listening=listening,
        tcp=tcp,
        udp=udp,
        ipv4=ipv4,
        ipv6=ipv6,
        states=states,
        ports=ports,
        sport=sport,
        dport=dport,
        src=src,
        dst=dst,
        pids=pids,
        process_names=process_names,
        users=users,
        join_processes=not no_processes,
        backend=backend,
        netns=netns,
    )
    result = list_sockets(options)

    from portscope.render.ls import render_listing

    render_listing(result, sys.stdout, as_json=as_json, numeric=numeric)
