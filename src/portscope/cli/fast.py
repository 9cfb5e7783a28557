"""The common command lines without click: ``ls``, ``who``, ``stats``, ``--help`` and the common <TAB>s.

Importing click costs more than the interpreter's own start-up (``benchmarks/README.md``, "Start-up"), so the
lines people type most are answered from tables generated from the click declarations
(:mod:`portscope.cli.argtable`, :mod:`portscope.cli.helptext`, written by ``python -m portscope.docs``):

- a command line :mod:`portscope.cli.fastargs` parses exactly as click would runs the command's click-free
  body (:mod:`portscope.cli.bodies`) with the same parameters, the same output environment and the same
  exit statuses;
- ``portscope --help`` and ``portscope COMMAND --help`` (``-h`` too) print the page click prints, when click
  would print it at its widest (a terminal, or ``COLUMNS``, of 80 columns or more);
- a completion request for a command name (``portscope l<TAB>``) or for an option name right after the
  command (``portscope ls --st<TAB>``) is answered with click's items, quoted by the same code
  (:mod:`portscope.shell.protocol`).

:func:`answer` returns None for everything else, and click runs it as before: other commands, values to
complete, errors (click's messages and status 2), narrow terminals.
"""

from __future__ import annotations

import contextlib
import os
import sys

from portscope.cli.runtime import guarded

COMPLETE_VAR = "_PORTSCOPE_COMPLETE"
HELP_NAMES = ("--help", "-h")
WIDEST_HELP_COLUMNS = 80  # click wraps help at min(columns, max_content_width 80): the same page from 80 up
SHELL_WHITESPACE = " \t\r\n"  # what shlex splits completion lines at (quotes and backslashes are declined)


def answer(args: list[str], kept: list | None = None) -> int | None:
    """The exit status of the command line, answered without click; None: click's turn. ``kept``: where a
    command leaves its results for the process's end (:class:`~portscope.cli.runtime.Invocation`)."""
    if "PORTSCOPE_DEBUG" in os.environ:
        return None
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:
        return complete(instruction)
    if len(args) <= 2 and args[-1:] and args[-1] in HELP_NAMES:
        return print_help(args[0] if len(args) == 2 else "")
    from portscope.cli.fastargs import parse

    parsed = parse(args)
    if parsed is None:
        return None
    from portscope.cli.bodies import BODIES

    body = BODIES.get(parsed.command)
    if body is None:
        return None
    debug = "--debug" in args

    def call() -> int:
        from portscope.cli.runtime import CommandUsageError, Invocation, failed, interrupted, usage_line
        from portscope.errors import ExitStatus
        from portscope.render.environment import Environment

        run = None
        try:
            env = Environment.detect(color=parsed.group_color or "auto")
            if parsed.command_color is not None:
                env = env.with_colour(parsed.command_color)
            run = Invocation(debug=parsed.debug, env=env, kept=kept)  # (the group's --debug; `debug` is main()'s rule)
            body(run, **parsed.params)
            sys.stdout.flush()
        except BrokenPipeError:
            if _closed_pipe():
                return 1
            return int(run.answer) if run is not None else 0  # the reader went away: the answer stands
        except CommandUsageError as exc:
            return failed(usage_line(f"portscope {parsed.command}", str(exc), args), ExitStatus.USAGE, debug)
        except (KeyboardInterrupt, EOFError):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.write("\n")  # as click: a blank line closes the terminal's ^C
            return interrupted()
        return int(run.answer)

    return guarded(call, args, debug)


def _closed_pipe() -> int:
    """A BrokenPipeError out of a command or a help page, as the click path ends it: 0 when the reader of stdout
    went away (later writes go nowhere), else click's status 1 (a pipe of the library's own)."""
    from portscope.cli.runtime import silence_stdout, stdout_gone

    if not stdout_gone():
        return 1
    silence_stdout()
    return 0


def terminal_columns() -> int:
    """The columns click wraps its help to come from (``shutil.get_terminal_size``, without importing shutil)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno())
    except (AttributeError, ValueError, OSError):
        return 80
    return size.columns or 80


def print_help(command: str) -> int | None:
    """``portscope [COMMAND] --help`` as click prints it, where its page is the stored one."""
    from portscope.cli.helptext import PAGES

    page = PAGES.get(command)
    if page is None or terminal_columns() < WIDEST_HELP_COLUMNS:
        return None
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if not page.isascii() and encoding != "utf8":
        return None  # click would choose the encoding itself

    def call() -> int:
        try:
            sys.stdout.write(page)
            sys.stdout.flush()
        except BrokenPipeError:
            return _closed_pipe()
        return 0

    return guarded(call, [], False)


def _words(text: str) -> list[str] | None:
    """``text`` split as click splits a completion line (shlex), or None where quoting would matter."""
    if any(c in text for c in "\"'\\"):
        return None
    words, current = [], ""
    for c in text:
        if c in SHELL_WHITESPACE:
            if current:
                words.append(current)
            current = ""
        else:
            current += c
    if current:
        words.append(current)
    return words


def completion_words(shell: str) -> tuple[list[str], str] | None:
    """The complete words after the program name and the word being completed, as our completion classes read
    them from the environment (:mod:`portscope.shell.scripts`); None: click reads them."""
    environ = os.environ
    try:
        if shell == "bash" and "COMP_LINE" in environ:
            words = _words(environ["COMP_LINE"] + "\0")  # the sentinel keeps an empty last word
            if words is None:
                return None
            return words[1:-1], words[-1][:-1]
        words = _words(environ["COMP_WORDS"])
        if words is None:
            return None
        if shell == "fish":
            incomplete = environ["COMP_CWORD"]
            if incomplete:
                split = _words(incomplete)
                if not split:
                    return None
                incomplete = split[0]
            args = words[1:]
            if incomplete and args and args[-1] == incomplete:
                args.pop()
            return args, incomplete
        cword = int(environ["COMP_CWORD"])
    except (KeyError, ValueError):
        return None
    if cword < 0:
        return None
    return words[1:cword], words[cword] if cword < len(words) else ""


def complete(instruction: str) -> int | None:
    """A completion request for a command name or a command's option name; None for any other (click)."""
    shell, _, what = instruction.partition("_")
    from portscope.shell.protocol import ANSWERS

    if what != "complete" or shell not in ANSWERS:
        return None
    words = completion_words(shell)
    if words is None:
        return None
    args, incomplete = words
    if "=" in incomplete:
        return None
    from portscope.cli.argtable import COMMAND_FIELDS, COMMAND_ITEMS, COMMANDS

    option_items = COMMAND_FIELDS.index("option_items")

    if not args:  # the command: names, and the group's options after a non-alphanumeric start
        items = [(name, help_text) for name, help_text in COMMAND_ITEMS if name.startswith(incomplete)]
        if incomplete and not incomplete[0].isalnum():
            items += [item for item in COMMANDS[""][option_items] if item[0].startswith(incomplete)]
    elif len(args) == 1 and args[0] and args[0] in COMMANDS and incomplete[:1] == "-":
        items = [item for item in COMMANDS[args[0]][option_items] if item[0].startswith(incomplete)]
    else:
        return None
    text = ANSWERS[shell]([("plain", value, help_text) for value, help_text in items], incomplete)

    def call() -> int:
        sys.stdout.buffer.write(text.encode() + b"\n")
        sys.stdout.buffer.flush()
        return 0

    return guarded(call, [], False)
