"""portscope can-bind: would bind() (and listen()) of ADDR:PORT succeed here, and if not, why."""

from __future__ import annotations

from typing import Any

import click

from portscope.cli.options import (
    COMMAND_SETTINGS,
    Command,
    bind_request,
    bind_socket_options,
    color_option,
    invocation,
    json_option,
    netns_option,
)
from portscope.shell.values import complete_local_addresses


@click.command("can-bind", cls=Command, context_settings=COMMAND_SETTINGS)
@click.argument("address", metavar="ADDR:PORT", shell_complete=complete_local_addresses)
@bind_socket_options(
    "A UDP socket (default: TCP).",
    "':PORT' and host names mean IPv4.",
    "':PORT' and host names mean IPv6 (default for ':PORT').",
)
@json_option("One JSON object (schema in portscope-can-bind(1)).")
@netns_option("Evaluate inside another network namespace.")
@color_option()
def can_bind(address: str, as_json: bool, netns: str | None, **options: Any) -> None:
    """Predict whether binding ADDR:PORT would work here, and explain why not.

    \b
    ADDR:PORT is 0.0.0.0:21, [::]:8080, 127.0.0.1:8899, [fe80::1%eth0]:80,
    :8080 (the wildcard), localhost:8080, or a service name (:http, 0.0.0.0:ssh).

    The answer follows Linux's bind() rules (address checks, privileged ports, wildcard and dual-stack
    overlap, SO_BINDTODEVICE, SO_REUSEADDR/SO_REUSEPORT, TIME-WAIT, listen()). Where it depends on what
    cannot be seen (the TCP SO_REUSEPORT fast-path history, the UDP hash-chain order, options of
    TIME-WAIT sockets) it says "uncertain" and why; --probe asks the kernel.

    \b
    Examples:
      portscope can-bind :8080                   a TCP server on every address
      portscope can-bind 127.0.0.1:8080 --reuseaddr
      portscope can-bind '[::]:443' --reuseport --user www-data
      portscope can-bind :53 --udp --probe       settle it with a trial bind()
      portscope can-bind '[fe80::1%eth0]:80'     link-local: needs its interface
      portscope can-bind 0.0.0.0:http --json

    \b
    Exit status: 0 can bind, 1 cannot, 3 uncertain.
    """
    from portscope.commands.can_bind import check_bind
    from portscope.commands.names import Names
    from portscope.errors import ExitStatus

    request = bind_request(address, netns, **options)  # --udp, -4/-6 and the new socket's options
    report = check_bind(request)
    run = invocation()
    status = {"yes": ExitStatus.OK, "no": ExitStatus.NOT_FOUND, "uncertain": ExitStatus.UNCERTAIN}
    run.answer = status[report.verdict.value]

    from portscope.render.can_bind import render_can_bind

    render_can_bind(report, run.env, Names.resolve(), as_json=as_json)
