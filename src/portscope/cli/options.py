"""What the commands share: their common options, declared once, and the state of one run.

Help texts differ where the meaning does (``-4`` filters ``ls`` but picks the family of ``can-bind``'s
address); the flags, destinations, metavars and completions are declared here only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from portscope.errors import ExitStatus
from portscope.render.environment import Environment
from portscope.shell.values import complete_netns

F = TypeVar("F", bound=Callable[..., Any])
COMMAND_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


@dataclass
class Invocation:
    """One run of the command line: --debug, the output environment, and the command's answer.

    A command sets ``answer`` (0, 1, 3) as soon as it knows it, before rendering: a reader that stops
    early (``| head``) ends the output, not the answer.
    """

    debug: bool
    env: Environment
    answer: ExitStatus = ExitStatus.OK


def invocation() -> Invocation:
    """This run's state, made by the group (or here, for a command invoked on its own)."""
    ctx = click.get_current_context()
    run = ctx.find_object(Invocation)
    if run is None:
        run = ctx.obj = Invocation(debug=False, env=Environment.detect())
    return run


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
