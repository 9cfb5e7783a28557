"""The console script's two steps, without click: the fast path for the common command lines, else click.

:func:`main` first offers the command line to :mod:`portscope.cli.fast` (``ls``, ``who``, ``--help``, the
common completion requests, parsed from a table generated from the click declarations); whatever it
declines, click runs (:func:`portscope.cli.group.exit_status`), with click's messages and statuses.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys

from portscope.errors import ExitStatus

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import NoReturn


def main(argv: list[str] | None = None, kept: list | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    from portscope.cli.fast import answer

    status = answer(args, kept)
    if status is None:
        if "_PORTSCOPE_COMPLETE" in os.environ:  # a <TAB>: our shells' classes answer it, not click's stock ones
            import portscope.shell.scripts  # noqa: F401 - registers them with click
        from portscope.cli.group import exit_status

        debug = "--debug" in args or bool(os.environ.get("PORTSCOPE_DEBUG"))
        status = exit_status(args, debug)
    sys.exit(status)


def run() -> None:
    """The console script: :func:`main`, then leave without tearing the heap down.

    After a large listing, freeing tens of thousands of records one by one at interpreter exit costs
    tens of milliseconds for nothing (and when a command returns: it leaves its records in ``kept``); output
    is flushed first, and portscope registers no atexit work.
    For the same reason the cyclic collector stays off: its passes over the records find no cycles
    (records and their tuples have none).
    """
    gc.disable()
    kept: list = []  # the commands' results, never freed: the process leaves with os._exit below
    try:
        main(kept=kept)
        status: int = ExitStatus.OK
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:  # sys.exit("message"), as Python would print it
            from portscope.cli.runtime import say

            say(str(exc.code))
            status = ExitStatus.INTERNAL
    for stream in (sys.stdout, sys.stderr):  # what is left after an error; a closed reader loses it
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(status)
