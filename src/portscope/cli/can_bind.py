"""portscope can-bind: would bind() (and listen()) of ADDR:PORT succeed here, and if not, why."""

from __future__ import annotations

import click

from portscope.cli.options import COMMAND_SETTINGS, color_option, family_options, invocation, json_option, netns_option
from portscope.shell.values import complete_interfaces, complete_local_addresses, complete_users


@click.command("can-bind", context_settings=COMMAND_SETTINGS)
@click.argument("address", metavar="ADDR:PORT", shell_complete=complete_local_addresses)
@click.option("--udp", is_flag=True, help="A UDP socket (default: TCP).")
@family_options("':PORT' and host names mean IPv4.", "':PORT' and host names mean IPv6 (default for ':PORT').")
@click.option("--reuseaddr", is_flag=True, help="The new socket sets SO_REUSEADDR.")
@click.option("--reuseport", is_flag=True, help="The new socket sets SO_REUSEPORT.")
@click.option(
    "--v6only/--no-v6only",
    "v6only_given",
    multiple=True,  # each use kept, so that --v6only --no-v6only is refused rather than the last one winning
    help="IPV6_V6ONLY on the new socket [default: net.ipv6.bindv6only of the namespace].",
)
@click.option(
    "--device",
    metavar="IFNAME",
    shell_complete=complete_interfaces,
    help="The new socket is pinned with SO_BINDTODEVICE.",
)
@click.option("--freebind", is_flag=True, help="The new socket sets IP_FREEBIND / IPV6_FREEBIND.")
@click.option(
    "--user",
    metavar="USER|UID",
    shell_complete=complete_users,
    help="Owner of the new socket (SO_REUSEPORT rule) and caller of bind() (privileged ports) [default: you].",
)
@click.option("--no-listen", is_flag=True, help="TCP: check bind() only, not bind() and then listen().")
@click.option(
    "--probe",
    is_flag=True,
    help="Settle the answer with a trial bind() of a throw-away socket with the same options, owned by USER, "
    "in the target namespace. Side effects: the port is held for an instant; a TCP probe rewrites the port's "
    "SO_REUSEPORT fast-path cache; a UDP probe joining a SO_REUSEPORT group may drop datagrams sent in that "
    "instant. It never calls listen().",
)
@json_option("One JSON object (schema in portscope-can-bind(1)).")
@netns_option("Evaluate inside another network namespace.")
@color_option()
def can_bind(
    address: str,
    udp: bool,
    ipv4: bool,
    ipv6: bool,
    reuseaddr: bool,
    reuseport: bool,
    v6only_given: tuple[bool, ...],
    device: str | None,
    freebind: bool,
    user: str | None,
    no_listen: bool,
    probe: bool,
    as_json: bool,
    netns: str | None,
) -> None:
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
    from portscope.commands.can_bind import BindRequest, check_bind
    from portscope.commands.names import Names
    from portscope.errors import ExitStatus, UsageError
    from portscope.model.records import Family

    if ipv4 and ipv6:
        raise UsageError("-4 and -6 exclude each other")
    if len(set(v6only_given)) > 1:
        raise UsageError("--v6only and --no-v6only exclude each other")
    v6only = v6only_given[0] if v6only_given else None
    if ipv4 and v6only is not None:
        raise UsageError(f"--{'' if v6only else 'no-'}v6only sets IPV6_V6ONLY, an IPv6 socket option; -4 asks for IPv4")
    request = BindRequest(
        target=address,
        udp=udp,
        reuseaddr=reuseaddr,
        reuseport=reuseport,
        v6only=v6only,
        device=device,
        freebind=freebind,
        user=user,
        listen=not no_listen,
        probe=probe,
        netns=netns,
        family=Family.IPV4 if ipv4 else Family.IPV6 if ipv6 else None,
    )
    report = check_bind(request)
    run = invocation()
    status = {"yes": ExitStatus.OK, "no": ExitStatus.NOT_FOUND, "uncertain": ExitStatus.UNCERTAIN}
    run.answer = status[report.verdict.value]

    from portscope.render.can_bind import render_can_bind

    render_can_bind(report, run.env, Names.resolve(), as_json=as_json)
