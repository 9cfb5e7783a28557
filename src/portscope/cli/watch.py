"""portscope watch and portscope wait: sockets as they come and go, and waiting for a port.

Both run for long: for their duration the cyclic garbage collector is back on (the console script turns
it off for short commands) and SIGTERM and SIGHUP end them like Ctrl-C; ``watch`` on a terminal also
reads single keys ('q'). All of it is restored when the command ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import signal
import stat
import sys
from collections.abc import Iterator
from typing import Any

import click

from portscope.cli.ls import ls as ls_command
from portscope.cli.options import (
    BIND_OPTION_NAMES,
    COMMAND_SETTINGS,
    Command,
    bind_request,
    bind_socket_options,
    invocation,
    json_option,
    netns_option,
    numeric_option,
)
from portscope.errors import ExitStatus
from portscope.shell.values import complete_ports


class _Ended(Exception):
    """SIGTERM or SIGHUP during a long-running command: it ends as it would on Ctrl-C."""


def _end(signum: int, frame: Any) -> None:
    raise _Ended(signum)


@contextlib.contextmanager
def long_running() -> Iterator[None]:
    """For a command that runs for long: the garbage collector on, SIGTERM and SIGHUP ending it cleanly;
    the previous settings come back when it ends."""
    collecting = gc.isenabled()
    gc.enable()  # run() turns it off for short commands; over hours the odd cycle (rich, tracebacks) adds up
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave signals alone
                previous[signum] = signal.signal(signum, _end)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if not collecting:
            gc.disable()


@contextlib.contextmanager
def single_keys(enabled: bool) -> Iterator[int | None]:
    """stdin in cbreak mode (keys arrive one by one, not echoed) while the live view runs; yields its fd,
    or None when stdin is not a terminal."""
    fd = None
    with contextlib.suppress(AttributeError, ValueError, OSError):
        if enabled and sys.stdin is not None and sys.stdin.isatty():
            fd = sys.stdin.fileno()
    if fd is None:
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _reader_gone() -> bool:
    from portscope.cli.runtime import stdout_gone as _stdout_gone  # the one test for a closed reader

    return _stdout_gone()


def _quit_pressed(fd: int) -> bool:
    try:
        keys = os.read(fd, 64)
    except (BlockingIOError, InterruptedError):
        return False
    return not keys or b"q" in keys.lower()  # end of input ends it too


def _pipe_fd(stream: Any) -> int | None:
    """The fd of an output that is a pipe: its reader going away wakes the watch (EPOLLERR on the write end),
    so that ``watch | head -1`` ends without waiting for another event to write."""
    try:
        fd = stream.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (AttributeError, ValueError, OSError):
        return None


# ls options that only shape ls's own output (--json, --jsonl, --pids, -H, the detail columns): watch writes events
LS_OUTPUT_OPTIONS = frozenset({"as_json", "as_jsonl", "pids_only", "no_header", "extended", "timers", "memory", "info"})


def _with_ls_filters(function):
    """Every ls option but those that shape ls's own output (LS_OUTPUT_OPTIONS), declared once, by ls (the
    library is not imported here: start-up)."""
    filters = [param for param in ls_command.params if param.name not in LS_OUTPUT_OPTIONS]
    function.__click_params__ = [*getattr(function, "__click_params__", []), *reversed(filters)]
    return function


def _ls_options(options: dict[str, Any]):
    """The LsOptions of the ls filters given (an ls option that only shapes ls's output has no field)."""
    from portscope.commands.ls import LsOptions

    fields = {field.name for field in dataclasses.fields(LsOptions)}
    return LsOptions(**{name: value for name, value in options.items() if name in fields})


@click.command("watch", cls=Command, context_settings=COMMAND_SETTINGS)
@click.option(
    "--interval",
    type=float,
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between two scans.",
)
@click.option(
    "--jsonl",
    is_flag=True,
    help="One JSON object per line per event, flushed as it happens (the default when the output is not a terminal).",
)
@click.option("--changes-only", is_flag=True, help="No 'appeared' events for what exists at the start.")
@_with_ls_filters
def watch(interval: float, jsonl: bool, changes_only: bool, numeric: bool, **options: Any) -> None:
    """Watch sockets appear, vanish and change hands, live.

    On a terminal: a table refreshed in place, new sockets marked +, vanished ones greyed (-) for a few
    refreshes, holder and state changes marked ~ with what they were, and counts per state and per
    listening port with their change since the start; q or Ctrl-C ends it. Otherwise (or with --jsonl):
    one JSON object per event (appeared, vanished, changed). Listeners by default; -a, -l, --state and
    every ls filter apply.

    Between two scans a socket can open and close unseen. watch also reads the kernel's sock_diag destroy
    notifications (what ss -E reads) and reports such a socket as it closes (marked ±; source "destroy"
    in JSON). Without them (refused by a sandbox, or --backend proc; a note says so) polling misses every
    socket that lives less than one interval; and any change undone within one interval (a holder that
    forks and exits again) is missed either way.

    \b
    Examples:
      portscope watch                          listeners, live
      portscope watch -a --port 8080           every socket on port 8080
      portscope watch --jsonl | jq -c 'select(.event != "changed")'
      portscope watch --jsonl --changes-only --netns all
      portscope watch --state connected --dst 10.0.0.0/8 --interval 0.5

    \b
    Exit status: 0 ended by q, Ctrl-C, SIGTERM or SIGHUP (also when the reader of
    the output goes away).
    """
    from portscope.commands.names import Names
    from portscope.commands.watch import Watcher, check_interval, watch_query

    check_interval(interval, "--interval")
    query = watch_query(_ls_options(options))
    run = invocation()
    env = run.env
    names = Names.resolve(numeric=numeric)
    live = env.is_tty and not jsonl

    from portscope.render.watch import JsonLines, LiveView, watch_title

    with long_running(), Watcher(query, report_first=not changes_only) as watcher:
        if live:
            notes = (watcher.short_lived_note,) if watcher.short_lived_note else ()
            view: Any = LiveView(env, names, title=watch_title(query), interval=interval, notes=notes)
        else:
            view = JsonLines(env, names)
            if watcher.short_lived_note:
                view.note(watcher.short_lived_note)
        pipe = None if live else _pipe_fd(env.stdout)
        try:
            with single_keys(live) as keys, view if live else contextlib.nullcontext():
                wake = tuple(fd for fd in (keys, pipe) if fd is not None)
                for update in watcher.updates(interval, wake=wake):
                    if keys in update.woken and _quit_pressed(keys):
                        break
                    if pipe in update.woken and _reader_gone():
                        raise BrokenPipeError  # the end of the output, not an error (PortscopeGroup.invoke)
                    view.show(update)
        except (KeyboardInterrupt, _Ended):
            pass  # how a watch ends: the answer is 0
    run.answer = ExitStatus.OK


@click.command("wait", cls=Command, context_settings=COMMAND_SETTINGS)
@click.argument("port", metavar="PORT", shell_complete=complete_ports)
@click.option(
    "--free",
    is_flag=True,
    help="Wait until can-bind would answer yes for the port (with the options below), not for a listener.",
)
@click.option(
    "--timeout",
    type=float,
    metavar="SECONDS",
    help="Give up after this long (exit status 1) [default: wait forever].",
)
@click.option(
    "--interval",
    type=float,
    default=0.1,
    show_default=True,
    metavar="SECONDS",
    help="Time between two checks: one kernel dump filtered to the port.",
)
@bind_socket_options(
    "UDP only; with --free, a UDP socket (default: TCP).",
    "Only listeners that take IPv4; with --free, ':PORT' means IPv4.",
    "Only listeners that take IPv6; with --free, ':PORT' means IPv6 (the default).",
)
@json_option("What it saw as JSON: the ls --json array of the listeners, or with --free can-bind's object.")
@numeric_option()
@netns_option("Wait inside another network namespace.")
def wait(
    port: str,
    free: bool,
    timeout: float | None,
    interval: float,
    as_json: bool,
    numeric: bool,
    netns: str | None,
    **options: Any,
) -> None:
    """Wait until something listens on PORT, or with --free until it could be bound.

    PORT takes the forms of who: 8080, 53/udp, 127.0.0.1:8080, '[::1]:8080', http, 8000-8100. A listener
    is a listening TCP socket or an unconnected bound UDP socket that traffic to PORT would reach.
    With --free it returns as soon as can-bind PORT, with the same options (--udp, --reuseaddr, --user, ...),
    would answer yes: no listener, connection or TIME-WAIT socket left in the way. It prints what it saw:
    the listeners with their processes, or the can-bind answer (on a timeout, why the port is not free).

    Each check is one kernel dump filtered to the port; processes are looked up only for the answer, and
    with --free can-bind is asked again only when the sockets on the port change. A listener that opens
    and closes again within one interval can be missed.

    \b
    Examples:
      portscope wait 8080 && curl localhost:8080       a server is up
      portscope wait 5432 --timeout 30 --netns db      give up after 30 s
      portscope wait 8080 --free && ./server           the old server has let go
      portscope wait :53 --free --udp --reuseport
      portscope wait 127.0.0.1:9000 --json

    \b
    Exit status: 0 the condition holds, 1 the timeout passed first.
    """
    from portscope.commands.names import Names
    from portscope.commands.watch import wait_for_port
    from portscope.errors import UsageError

    template = bind_request(port, netns, **options)
    if not free:
        given = [name for name in BIND_OPTION_NAMES if options[name] not in (False, None)]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} describes the new socket of --free: add --free")
    with long_running():
        try:
            result = wait_for_port(
                port,
                free=free,
                timeout=timeout,
                interval=interval,
                netns=netns,
                udp=template.udp,
                family=template.family,
                bind=template,
            )
        except _Ended:
            raise KeyboardInterrupt from None  # interrupted: 130, as Ctrl-C
    run = invocation()
    run.answer = ExitStatus.OK if result.holds else ExitStatus.NOT_FOUND

    from portscope.render.watch import render_wait

    render_wait(result, run.env, Names.resolve(numeric=numeric), as_json=as_json)
