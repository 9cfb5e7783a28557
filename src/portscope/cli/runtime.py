"""What a run of the command line needs without click: its state, and how it ends.

Both ways of running a command use this module: click's (:mod:`portscope.cli.group`) and the click-free
path of the common command lines (:mod:`portscope.cli.fast`). Exit statuses are decided here, by category
(:class:`portscope.errors.ExitStatus`): a command's answer (0, 1, 3), bad input (2), a system that could
not be read (4), anything unexpected (5), Ctrl-C (130). An error never ends with 0, 1 or 3, and is said on
one line.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sys
from collections.abc import Callable

from portscope.errors import ExitStatus, PortscopeError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.render.environment import Environment
from portscope.render.text import safe_text


@dataclass_lite
class Invocation:
    """One run of the command line: --debug, the output environment, and the command's answer.

    A command sets ``answer`` (0, 1, 3) as soon as it knows it, before rendering: a reader that stops
    early (``| head``) ends the output, not the answer.
    """

    debug: bool
    env: Environment
    answer: ExitStatus = ExitStatus.OK
    # results to leave alive until the process leaves: the console script ends with os._exit, and freeing
    # tens of thousands of records one by one when a command returns costs milliseconds for nothing
    kept: list | None = None

    def keep(self, result: object) -> None:
        if self.kept is not None:
            self.kept.append(result)


class CommandUsageError(Exception):
    """Bad input found by a command's body (an ``ls`` expression that cannot be read): said as click says
    its own usage errors, ``portscope ls: error: ... (see --help)``, status 2."""


def stdout_gone() -> bool:
    """Is stdout a pipe or socket whose reader has closed? (poll reports POLLERR or POLLHUP then)"""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # errors and hang-ups are reported without asking
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def silence_stdout() -> None:
    # The reader went away: later writes and the final flush go to /dev/null instead of failing again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def say(line: str) -> None:
    """One line on stderr, escaped (it may quote names and arguments); a closed stderr loses the line, never
    changes the status."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(safe_text(line) + "\n")
        sys.stderr.flush()


def os_error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        text += " (raise the limit with ulimit -n)"
    return text + (f": {exc.filename}" if exc.filename else "")


def port_letter_hint(command: str, args: list[str]) -> str:
    """``ls -p 80``: -p shows processes here, as in ss; say which option filters ports."""
    if command != "ls":
        return ""
    import re  # errors only: re costs a few ms of every start-up

    # a short-option cluster ending in p, then what reads as a port: 80, 8000-8100, 80,443
    after_p = (following for flag, following in itertools.pairwise(args) if re.fullmatch(r"-[a-zA-Z0-9]*p", flag))
    if not any(re.fullmatch(r"[0-9][0-9,-]*", following) for following in after_p):
        return ""
    return " (-p shows the processes, as in ss; the port filter is -y/--port)"


def usage_line(command_path: str, message: str, args: list[str]) -> str:
    """A usage error as click's path says it: one line (click lists choices on several), with the -p hint."""
    command = command_path.rpartition(" ")[2] if " " in command_path else ""
    return f"{command_path}: error: {' '.join(message.split())}{port_letter_hint(command, args)} (see --help)"


def sudo_hint(message: str, args: list[str]) -> str:
    """For an error that root would not meet: the command to run instead, with this program's full path
    (a venv or pipx install is not on root's PATH)."""
    if "run as root" not in message or os.geteuid() == 0:
        return ""
    import shlex

    from portscope.render.environment import program_path

    return f": sudo {program_path()} {shlex.join(args)}"


def failed(line: str, status: int, debug: bool) -> int:
    if debug:
        import traceback

        with contextlib.suppress(OSError, ValueError, AttributeError):
            traceback.print_exc(file=sys.stderr)
    # one line, whatever the message (click lists choices on lines of their own); only ASCII white space is
    # folded: a U+2028 in a name is shown escaped, as everything else from outside
    import re

    say(" ".join(re.split(r"[ \t\n\r\f\v]+", line.strip())))
    return status


def interrupted() -> int:
    say("portscope: interrupted")
    return ExitStatus.INTERRUPTED


def guarded(call: Callable[[], int], args: list[str], debug: bool) -> int:
    """``call()``'s status, or the status of the error it ended with (said on one line)."""
    try:
        return call()
    except KeyboardInterrupt:
        return interrupted()
    except PortscopeError as exc:
        return failed(f"portscope: error: {exc}{sudo_hint(str(exc), args)}", exc.exit_status, debug)
    except MemoryError:
        return failed("portscope: error: out of memory", ExitStatus.UNREADABLE, debug)
    except OSError as exc:  # the system refused something the library did not expect to be refused
        return failed(f"portscope: error: {os_error_text(exc)}", ExitStatus.UNREADABLE, debug)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        hint = "" if debug else " (run with --debug for the traceback)"
        return failed(f"portscope: internal error: {message}{hint}", ExitStatus.INTERNAL, debug)
