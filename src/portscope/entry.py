"""The console script: :func:`portscope.cli.run`, with the command line itself imported under a quiet Ctrl-C.

click and the command modules take tens of milliseconds to load; a Ctrl-C meanwhile would end in a
traceback from the import machinery instead of the usual exit status.
"""

from __future__ import annotations

import io
import os
import sys

INTERRUPTED = 130  # errors.ExitStatus.INTERRUPTED, without importing anything yet


def reopen_closed_standard_fds() -> None:
    """Put /dev/null on fds 0-2 where they are closed, before anything opens a file.

    Started with a closed stdout (``>&-``), the next file opened would become fd 1 and receive the output
    (a memfd, a netlink socket); a closed stderr would turn every note into an error. Python starts
    with ``sys.stdout`` or ``sys.stderr`` None then: they get a stream on the new fd.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:  # open() takes the lowest free fd, which is this one (those below are open by now)
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            mode = "r" if fd == 0 else "w"
            stream = io.TextIOWrapper(io.FileIO(fd, mode, closefd=False), errors="backslashreplace", write_through=True)
            setattr(sys, name, stream)


VERSION_FLAGS = ({"--version"}, {"-V"})


def print_version_quickly(args: list[str]) -> bool:
    """``portscope --version`` without loading click: the same line click's version option prints."""
    if set(args) not in VERSION_FLAGS or "PORTSCOPE_DEBUG" in os.environ or "_PORTSCOPE_COMPLETE" in os.environ:
        return False
    from portscope import __version__

    try:
        sys.stdout.write(f"portscope, version {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # portscope --version | true: the reader is gone, the answer stands
        pass
    return True


def run() -> None:
    reopen_closed_standard_fds()
    if print_version_quickly(sys.argv[1:]):
        os._exit(0)
    try:
        from portscope.cli import run as run_cli
    except KeyboardInterrupt:
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    run_cli()
