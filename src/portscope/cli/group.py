"""The click group: every command line the fast path (:mod:`portscope.cli.fast`) declines runs here, with
click's parsing, help, messages and completion. These modules import only click and the small record/query
modules; the collectors, rich and pyroute2 are imported inside the commands that need them."""

from __future__ import annotations

import importlib
import re
import sys
from typing import NoReturn

import click

from portscope import __version__
from portscope.cli import COMMAND_SYNONYMS, COMMANDS
from portscope.cli.options import Invocation, color_option, ordered_help_names
from portscope.cli.runtime import failed, guarded, interrupted, port_letter_hint, silence_stdout, stdout_gone
from portscope.errors import ExitStatus
from portscope.render.environment import Environment

_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2+: a group run without a command
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


class PortscopeGroup(click.Group):
    get_help_option_names = ordered_help_names

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> NoReturn:
        """Run the command, flush its output, and give its answer.

        The one place a closed stdout is handled: a reader that stops early (``| head``) is not an error,
        and the answer stands (``ls`` 0; ``who`` and ``can-bind`` what they found). click alone would turn
        EPIPE into status 1.
        """
        try:
            super().invoke(ctx)
            sys.stdout.flush()
        except BrokenPipeError:
            if not stdout_gone():  # a pipe of the library's own, not the reader: an error like any other
                raise
            silence_stdout()
        run = ctx.find_object(Invocation)
        ctx.exit(run.answer if run is not None else ExitStatus.OK)  # click would drop a returned status

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """An unknown command is refused with the one it most likely meant (``lss``: ls, ``list``: ls,
        ``bind``: can-bind), whatever the click release."""
        unknown = args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None
        if unknown and not ctx.resilient_parsing:  # completion asks too: it answers nothing, never an error
            raise click.UsageError(unknown_command_message(args[0], self.list_commands(ctx)), ctx)
        return super().resolve_command(ctx, args)


def unknown_command_message(name: str, commands: list[str]) -> str:
    import difflib

    guess = COMMAND_SYNONYMS.get(name.lower())
    if guess not in commands:
        close = difflib.get_close_matches(name.lower(), commands, n=1, cutoff=0.5)
        guess = close[0] if close else None
    hint = f"did you mean '{guess}'? " if guess else ""
    return f"unknown command '{name}' ({hint}commands: {', '.join(commands)})"


@click.group(cls=PortscopeGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="portscope")
@click.option("--debug", is_flag=True, envvar="PORTSCOPE_DEBUG", help="Show tracebacks for errors.")
@color_option()
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Inspect TCP, UDP and UNIX sockets: who holds them, and why a bind() would fail.

    \b
    portscope ls -tulpn        sockets and their processes (ss, netstat, lsof -i)
    portscope who 8080         every process on a port (lsof -i :8080, fuser)
    portscope can-bind :8080   would a bind succeed here, and if not, why
    portscope kill 8080        stop exactly the processes holding a port
    portscope stats            socket counts by state (ss -s), busiest ports
    portscope watch            sockets as they appear and vanish, live
    portscope wait 8080        until something listens on a port (--free: until
                               it could be bound)
    """
    # The one output environment of this run: every renderer gets it from here (--color, eager, made it
    # already when given).
    run = ctx.find_object(Invocation)
    if run is None:
        ctx.obj = Invocation(debug=debug, env=Environment.detect())
    else:
        run.debug = debug


def exit_status(args: list[str], debug: bool) -> int:
    """Run the command line through click and map how it ended to an exit status; an error is said on one
    line."""

    def clicked() -> int:
        try:
            status = cli.main(args=args, prog_name="portscope", standalone_mode=False)
        except SystemExit:
            # click's own answer to EPIPE while it parses (portscope --help | head -0): sys.exit(1). Commands'
            # output never gets here (PortscopeGroup.invoke), nor does anything else with standalone_mode off.
            if not stdout_gone():
                raise
            silence_stdout()
            return ExitStatus.OK
        except click.exceptions.Abort:
            return interrupted()
        except click.exceptions.NoArgsIsHelpError as exc:
            commands = ", ".join(cli.list_commands(exc.ctx)) if exc.ctx else ", ".join(sorted(COMMANDS))
            line = f"portscope: error: no command given (one of {commands}; see --help)"
            return failed(line, ExitStatus.USAGE, debug)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "portscope"
            if isinstance(exc, _NO_ARGS):  # click's message would be the whole help page
                message = f"missing command ({', '.join(sorted(COMMANDS))})"
            elif isinstance(exc, click.NoSuchOption) and re.fullmatch(r"-[0-9]+", exc.option_name) and exc.ctx:
                # "who -5": a negative port, not an option
                low = 0 if exc.ctx.command.name == "can-bind" else 1
                message = f"port {exc.option_name} is out of range ({low}-65535)"
            else:
                message = " ".join(exc.format_message().split())  # one line: click lists choices on several
                message += port_letter_hint(exc.ctx.command.name if exc.ctx else "", args)
            return failed(f"{where}: error: {message} (see --help)", ExitStatus.USAGE, debug)
        return status if isinstance(status, int) else ExitStatus.OK

    return guarded(clicked, args, debug)
