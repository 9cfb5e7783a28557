"""The command line: thin click commands over the library, one module per command.

Start-up is kept lean: these modules import only click and the small record/query modules; the
collectors, rich and pyroute2 are imported inside the commands that need them.
"""

from __future__ import annotations

import gc
import os
import sys

import click

from portscope import __version__
from portscope.errors import ExitStatus, PortscopeError
from portscope.render.text import safe_text

_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2+: a group run without a command
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class PortscopeGroup(click.Group):
    def invoke(self, ctx: click.Context):
        # click turns EPIPE into exit status 1; a reader that stops early (| head) is not an error.
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()


@click.group(cls=PortscopeGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="portscope")
@click.option("--debug", is_flag=True, envvar="PORTSCOPE_DEBUG", help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Inspect TCP and UDP ports and sockets: who holds them, and why a bind() would fail.

    \b
    portscope ls               sockets with their processes (ss -tulpn, netstat, lsof -i)
    portscope who 8080         every process on a port (lsof -i :8080, fuser 8080/tcp)
    portscope can-bind :8080   would a bind succeed here, and if not, why
    """
    ctx.obj = {"debug": debug}


def _register_commands() -> None:
    # Each command module imports only click and small modules; the work is imported inside the commands.
    from portscope.cli.can_bind import can_bind
    from portscope.cli.completion import completion
    from portscope.cli.ls import ls
    from portscope.cli.who import who

    for command in (ls, who, can_bind, completion):
        cli.add_command(command)


_register_commands()


def _error(message: str, status: int = ExitStatus.USAGE) -> None:
    click.echo(f"portscope: error: {safe_text(message)}", err=True)  # it may quote names and arguments
    sys.exit(status)


def _silence_stdout() -> None:
    # The reader went away (| head): later writes and the final flush must not complain.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _quiet_broken_pipe() -> None:
    _silence_stdout()
    sys.exit(ExitStatus.OK)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("PORTSCOPE_DEBUG"))
    try:
        status = cli.main(args=args, prog_name="portscope", standalone_mode=False)
    except click.exceptions.Abort:
        _error("aborted", ExitStatus.INTERRUPTED)
    except click.UsageError as exc:
        if debug:
            raise
        where = exc.ctx.command_path if exc.ctx else "portscope"
        if isinstance(exc, _NO_ARGS):  # click's message would be the whole help page
            message = f"missing command ({', '.join(sorted(cli.commands))})"
        else:
            message = safe_text(" ".join(exc.format_message().split()))  # one line: click lists choices on several
        click.echo(f"{where}: error: {message} (see --help)", err=True)
        sys.exit(ExitStatus.USAGE)
    except PortscopeError as exc:
        if debug:
            raise
        _error(str(exc), exc.exit_status)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except KeyboardInterrupt:
        sys.exit(ExitStatus.INTERRUPTED)
    except OSError as exc:
        if debug:
            raise
        _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(status if isinstance(status, int) else ExitStatus.OK)


def run() -> None:
    """The console script: :func:`main`, then leave without tearing the heap down.

    After a large listing, freeing tens of thousands of records one by one at interpreter exit costs
    tens of milliseconds for nothing; output is flushed first, and portscope registers no atexit work.
    For the same reason the cyclic collector stays off: its passes over the records find no cycles
    (records and their tuples have none) and cost about 5% of a large listing, measured.
    """
    gc.disable()
    try:
        main()
        status: int = ExitStatus.OK
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:  # sys.exit("message"), as Python would print it
            print(safe_text(str(exc.code)), file=sys.stderr)
            status = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.stderr.flush()
    os._exit(status)
