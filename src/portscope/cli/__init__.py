"""The command line: thin click commands over the library, one module per command.

Start-up is kept lean: these modules import only click and the small record/query modules; the
collectors, rich and pyroute2 are imported inside the commands that need them.

Exit statuses are decided here, by category (:class:`portscope.errors.ExitStatus`): a command's answer
(0, 1, 3), bad input (2), a system that could not be read (4), anything unexpected (5), Ctrl-C (130).
An error never ends with 0, 1 or 3.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import itertools
import os
import re
import select
import sys
from typing import NoReturn

import click

from portscope import __version__
from portscope.cli.options import Invocation, color_option
from portscope.errors import ExitStatus, PortscopeError
from portscope.render.environment import Environment
from portscope.render.text import safe_text

_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2+: a group run without a command
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


class PortscopeGroup(click.Group):
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
            if not _stdout_gone():  # a pipe of the library's own, not the reader: an error like any other
                raise
            _silence_stdout()
        run = ctx.find_object(Invocation)
        ctx.exit(run.answer if run is not None else ExitStatus.OK)  # click would drop a returned status

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """An unknown command is refused with the one it most likely meant (``lss``: ls, ``list``: ls,
        ``bind``: can-bind), whatever the click release."""
        unknown = args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None
        if unknown and not ctx.resilient_parsing:  # completion asks too: it answers nothing, never an error
            raise click.UsageError(unknown_command_message(args[0], self.list_commands(ctx)), ctx)
        return super().resolve_command(ctx, args)


# What people coming from other tools type for a command (the did-you-mean of unknown commands).
COMMAND_SYNONYMS = {
    "list": "ls",
    "ss": "ls",
    "netstat": "ls",
    "sockets": "ls",
    "ports": "ls",
    "lsof": "who",
    "fuser": "who",
    "port": "who",
    "whois": "who",
    "bind": "can-bind",
    "check": "can-bind",
    "canbind": "can-bind",
    "can_bind": "can-bind",
    "completions": "completion",
    "stat": "stats",
    "summary": "stats",
}


def unknown_command_message(name: str, commands: list[str]) -> str:
    import difflib

    guess = COMMAND_SYNONYMS.get(name.lower())
    if guess not in commands:
        close = difflib.get_close_matches(name.lower(), commands, n=1, cutoff=0.5)
        guess = close[0] if close else None
    hint = f"did you mean {guess!r}? " if guess else ""
    return f"unknown command {name!r} ({hint}commands: {', '.join(commands)})"


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


# The commands, by name: "module:attribute". A command's module is imported only when that command runs (or
# help lists them all), so `portscope ls` loads neither can-bind's nor completion's option declarations.
COMMANDS: dict[str, str] = {
    "can-bind": "portscope.cli.can_bind:can_bind",
    "completion": "portscope.cli.completion:completion",
    "export": "portscope.cli.serve:export",
    "kill": "portscope.cli.kill:kill",
    "ls": "portscope.cli.ls:ls",
    "serve": "portscope.cli.serve:serve",
    "stats": "portscope.cli.stats:stats",
    "wait": "portscope.cli.watch:wait",
    "watch": "portscope.cli.watch:watch",
    "who": "portscope.cli.who:who",
}


def _stdout_gone() -> bool:
    """Is stdout a pipe or socket whose reader has closed? (poll reports POLLERR or POLLHUP then)"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # errors and hang-ups are reported without asking
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    # The reader went away: later writes and the final flush go to /dev/null instead of failing again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _say(line: str) -> None:
    """One line on stderr, escaped (it may quote names and arguments); a closed stderr loses the line, never
    changes the status."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(safe_text(line) + "\n")
        sys.stderr.flush()


def _os_error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        text += " (raise the limit with ulimit -n)"
    return text + (f": {exc.filename}" if exc.filename else "")


def exit_status(args: list[str], debug: bool) -> int:
    """Run the command line and map how it ended to an exit status; an error is said on one line."""
    try:
        status = cli.main(args=args, prog_name="portscope", standalone_mode=False)
    except SystemExit:
        # click's own answer to EPIPE while it parses (portscope --help | head -0): sys.exit(1). Commands'
        # output never gets here (PortscopeGroup.invoke), nor does anything else with standalone_mode off.
        if not _stdout_gone():
            raise
        _silence_stdout()
        return ExitStatus.OK
    except (click.exceptions.Abort, KeyboardInterrupt):
        _say("portscope: interrupted")
        return ExitStatus.INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:
        commands = ", ".join(cli.list_commands(exc.ctx)) if exc.ctx else ", ".join(sorted(COMMANDS))
        return _failed(f"portscope: error: no command given (one of {commands}; see --help)", ExitStatus.USAGE, debug)
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
            message += _port_letter_hint(exc, args)
        return _failed(f"{where}: error: {message} (see --help)", ExitStatus.USAGE, debug)
    except PortscopeError as exc:
        return _failed(f"portscope: error: {exc}{_sudo_hint(str(exc), args)}", exc.exit_status, debug)
    except MemoryError:
        return _failed("portscope: error: out of memory", ExitStatus.UNREADABLE, debug)
    except OSError as exc:  # the system refused something the library did not expect to be refused
        return _failed(f"portscope: error: {_os_error_text(exc)}", ExitStatus.UNREADABLE, debug)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        hint = "" if debug else " (run with --debug for the traceback)"
        return _failed(f"portscope: internal error: {message}{hint}", ExitStatus.INTERNAL, debug)
    return status if isinstance(status, int) else ExitStatus.OK


def _port_letter_hint(exc: click.UsageError, args: list[str]) -> str:
    """``ls -p 80``: -p shows processes here, as in ss; say which option filters ports."""
    if exc.ctx is None or exc.ctx.command.name != "ls":
        return ""
    # a short-option cluster ending in p, then what reads as a port: 80, 8000-8100, 80,443
    after_p = (following for flag, following in itertools.pairwise(args) if re.fullmatch(r"-[a-zA-Z0-9]*p", flag))
    if not any(re.fullmatch(r"[0-9][0-9,-]*", following) for following in after_p):
        return ""
    return " (-p shows the processes, as in ss; the port filter is -y/--port)"


def _sudo_hint(message: str, args: list[str]) -> str:
    """For an error that root would not meet: the command to run instead, with this program's full path
    (a venv or pipx install is not on root's PATH)."""
    if "run as root" not in message or os.geteuid() == 0:
        return ""
    import shlex

    from portscope.render.environment import program_path

    return f": sudo {program_path()} {shlex.join(args)}"


def _failed(line: str, status: int, debug: bool) -> int:
    if debug:
        import traceback

        with contextlib.suppress(OSError, ValueError, AttributeError):
            traceback.print_exc(file=sys.stderr)
    # one line, whatever the message (click lists choices on lines of their own); only ASCII white space is
    # folded: a U+2028 in a name is shown escaped, as everything else from outside
    _say(" ".join(re.split(r"[ \t\n\r\f\v]+", line.strip())))
    return status


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    if "_PORTSCOPE_COMPLETE" in os.environ:  # a <TAB>: our shells' classes answer it, not click's stock ones
        import portscope.shell.scripts  # noqa: F401 - registers them with click
    debug = "--debug" in args or bool(os.environ.get("PORTSCOPE_DEBUG"))
    sys.exit(exit_status(args, debug))


def run() -> None:
    """The console script: :func:`main`, then leave without tearing the heap down.

    After a large listing, freeing tens of thousands of records one by one at interpreter exit costs
    tens of milliseconds for nothing; output is flushed first, and portscope registers no atexit work.
    For the same reason the cyclic collector stays off: its passes over the records find no cycles
    (records and their tuples have none).
    """
    gc.disable()
    try:
        main()
        status: int = ExitStatus.OK
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:  # sys.exit("message"), as Python would print it
            _say(str(exc.code))
            status = ExitStatus.INTERNAL
    for stream in (sys.stdout, sys.stderr):  # what is left after an error; a closed reader loses it
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(status)
