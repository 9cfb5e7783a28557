"""portscope who: every process on a port, what it is, and what its sockets are doing."""

from __future__ import annotations

from typing import Any

import click

from portscope.cli.options import (
    COMMAND_SETTINGS,
    Command,
    color_option,
    json_option,
    netns_option,
    numeric_option,
    run_body,
)
from portscope.shell.values import complete_ports


@click.command("who", cls=Command, context_settings=COMMAND_SETTINGS)
@click.argument("port", metavar="PORT", shell_complete=complete_ports)
@click.option("--remote", is_flag=True, help="Also match the peer's port: connections made TO this port.")
@numeric_option()
@json_option("One JSON object: query, sockets, processes (schema in portscope-who(1)).")
@netns_option()
@color_option()
def who(**params: Any) -> None:
    """Every process on a port: command, parents, unit or container, and its sockets.

    PORT is a port, a range, or a service name, optionally with an address and a protocol.
    Without a protocol both TCP and UDP are searched. Processes are grouped by container; a
    forwarder's listener (docker-proxy, conmon, rootlessport, socket activation) is followed to the
    process listening behind it, in the container's own network namespace. A path (/run/docker.sock,
    ./sock) or @NAME (an abstract name) asks about UNIX sockets: who holds them, and who is at the other end.

    \b
    Examples:
      portscope who 8080              every process on local port 8080
      portscope who 53/udp            UDP only
      portscope who 127.0.0.1:8080    sockets reached by 127.0.0.1:8080 (wildcards
                                      too)
      portscope who '[::1]:8080'      the same for IPv6
      portscope who '[fe80::1%eth0]:53'  a link-local address on one interface
      portscope who http/tcp          a service name from /etc/services
      portscope who 8000-8100         a range
      portscope who --remote 443      also our connections to port 443 elsewhere
      portscope who 8080 --netns all  every network namespace and container
      portscope who /run/docker.sock  who holds a UNIX socket, who is connected
      portscope who @/tmp/.X11-unix/X0  an abstract UNIX socket name

    \b
    Exit status: 0 something is on the port (or bound to the name), 1 nothing is.
    """
    from portscope.cli.bodies import who as body

    run_body(body, params)
