"""What the commands share: their common options, declared once, and the state of one run.

Help texts differ where the meaning does (``-4`` filters ``ls`` but picks the family of ``can-bind``'s
address); the flags, destinations, metavars and completions are declared here only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from portscope.cli.runtime import Invocation
from portscope.render.environment import COLOR_MODES, Environment
from portscope.shell.values import complete_interfaces, complete_netns, complete_users

F = TypeVar("F", bound=Callable[..., Any])
COMMAND_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 80,
}  # --help fits 80 columns


def ordered_help_names(command: click.Command, ctx: click.Context) -> list[str]:
    """The help option's names in the declared order: click makes them a set, whose order changes from one
    process to the next (string hashing), and completion answers and the generated tables must not."""
    taken = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    return [name for name in ctx.help_option_names if name not in taken]


class Command(click.Command):
    get_help_option_names = ordered_help_names


def invocation() -> Invocation:
    """This run's state, made by the group (or here, for a command invoked on its own)."""
    ctx = click.get_current_context()
    run = ctx.find_object(Invocation)
    if run is None:
        run = ctx.obj = Invocation(debug=False, env=Environment.detect())
    return run


def run_body(body: Callable[..., None], params: dict[str, Any]) -> None:
    """Run a command's click-free body (:mod:`portscope.cli.bodies`) with click's parameters; its usage errors
    become click's, said with the command's path."""
    from portscope.cli.runtime import CommandUsageError

    try:
        body(invocation(), **params)
    except CommandUsageError as exc:
        raise click.UsageError(str(exc), ctx=click.get_current_context()) from None


def _set_colour(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    run = ctx.find_object(Invocation)
    if run is None:
        ctx.obj = Invocation(debug=False, env=Environment.detect(color=value))
    else:
        run.env = run.env.with_colour(value)


def color_option() -> Callable[[F], F]:
    """``--color[=auto|always|never]``, as GNU ls: given to the group or a command, it sets the colour of this
    run's one output environment (``--color`` alone is ``always``)."""
    return click.option(
        "--color",
        type=click.Choice(COLOR_MODES),
        default=None,
        is_flag=False,
        flag_value="always",
        expose_value=False,
        is_eager=True,
        callback=_set_colour,
        help="Colour: auto (a terminal, unless NO_COLOR), always (for watch -c, less -R), never.",
    )


def netns_option(help: str = "Look inside another network namespace.") -> Callable[[F], F]:
    return click.option("--netns", metavar="NAME|PID|PATH", shell_complete=complete_netns, help=help)


def json_option(help: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def numeric_option() -> Callable[[F], F]:
    return click.option("-n", "--numeric", is_flag=True, help="Show no service names.")


def family_options(ipv4_help: str, ipv6_help: str) -> Callable[[F], F]:
    """``-4/--ipv4`` and ``-6/--ipv6``, as the parameters ``ipv4`` and ``ipv6``."""
    ipv4 = click.option("-4", "--ipv4", "ipv4", is_flag=True, help=ipv4_help)
    ipv6 = click.option("-6", "--ipv6", "ipv6", is_flag=True, help=ipv6_help)

    def decorator(function: F) -> F:
        return ipv4(ipv6(function))

    return decorator


# The options of a new socket, as can-bind takes them; ``wait --free`` asks can-bind with the same ones.
BIND_OPTION_NAMES = ("reuseaddr", "reuseport", "v6only", "device", "freebind", "user", "no_listen", "probe")


def _one_v6only(ctx: click.Context, param: click.Parameter, given: tuple[bool, ...]) -> bool | None:
    if len(set(given)) > 1:
        raise click.UsageError("--v6only and --no-v6only exclude each other", ctx)
    return given[0] if given else None


def bind_socket_options(udp_help: str, ipv4_help: str, ipv6_help: str) -> Callable[[F], F]:
    """``--udp``, ``-4/-6`` and the new socket's options of can-bind (:data:`BIND_OPTION_NAMES`)."""
    declared = [
        click.option("--udp", is_flag=True, help=udp_help),
        family_options(ipv4_help, ipv6_help),
        click.option("--reuseaddr", is_flag=True, help="The new socket sets SO_REUSEADDR."),
        click.option("--reuseport", is_flag=True, help="The new socket sets SO_REUSEPORT."),
        click.option(
            "--v6only/--no-v6only",
            multiple=True,  # every use kept: --v6only --no-v6only is refused rather than the last one winning
            callback=_one_v6only,
            help="IPV6_V6ONLY on the new socket [default: net.ipv6.bindv6only of the namespace].",
        ),
        click.option(
            "--device",
            metavar="IFNAME",
            shell_complete=complete_interfaces,
            help="The new socket is pinned with SO_BINDTODEVICE.",
        ),
        click.option("--freebind", is_flag=True, help="The new socket sets IP_FREEBIND / IPV6_FREEBIND."),
        click.option(
            "--user",
            metavar="USER|UID",
            shell_complete=complete_users,
            help="Owner of the new socket (SO_REUSEPORT rule) and caller of bind() (privileged ports) [default: you].",
        ),
        click.option("--no-listen", is_flag=True, help="TCP: check bind() only, not bind() and then listen()."),
        click.option(
            "--probe",
            is_flag=True,
            help="Settle the answer with a trial bind() of a throw-away socket with the same options, owned by "
            "USER, in the target namespace. Side effects: the port is held for an instant; a TCP probe rewrites "
            "the port's SO_REUSEPORT fast-path cache; a UDP probe joining a SO_REUSEPORT group may drop datagrams "
            "sent in that instant. It never calls listen().",
        ),
    ]

    def decorator(function: F) -> F:
        for option in reversed(declared):
            function = option(function)
        return function

    return decorator


def bind_request(target: str, netns: str | None, **options: Any):
    """can-bind's :class:`~portscope.commands.can_bind.BindRequest` from the options above, by name."""
    from portscope.commands.can_bind import BindRequest
    from portscope.errors import UsageError
    from portscope.model.records import Family

    if options["ipv4"] and options["ipv6"]:
        raise UsageError("-4 and -6 exclude each other")
    if options["ipv4"] and options["v6only"] is not None:
        flag = "--v6only" if options["v6only"] else "--no-v6only"
        raise UsageError(f"{flag} sets IPV6_V6ONLY, an IPv6 socket option; -4 asks for IPv4")
    return BindRequest(
        target=target,
        udp=options["udp"],
        reuseaddr=options["reuseaddr"],
        reuseport=options["reuseport"],
        v6only=options["v6only"],
        device=options["device"],
        freebind=options["freebind"],
        user=options["user"],
        listen=not options["no_listen"],
        probe=options["probe"],
        netns=netns,
        family=Family.IPV4 if options["ipv4"] else Family.IPV6 if options["ipv6"] else None,
    )
