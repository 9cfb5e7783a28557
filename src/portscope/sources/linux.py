"""Facts of the running Linux system read once, and small system-call helpers the sources share."""

from __future__ import annotations

import contextlib
import os
from _signal import SIGKILL  # the C module: signal.py builds three enums at import (~3M instructions)

# Clock ticks per second: the unit of start times in /proc/<pid>/stat and of timers in /proc/net/tcp.
CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def end_child(pid: int) -> None:
    """Stop a forked helper if it still runs, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
