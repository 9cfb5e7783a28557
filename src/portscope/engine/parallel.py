"""Forked helper processes: the collectors fork to use a second CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def may_fork() -> bool:
    """Only from a single-threaded process: a child forked beside other threads may inherit held locks."""
    threading = sys.modules.get("threading")
    return hasattr(os, "fork") and (threading is None or threading.active_count() == 1)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def end_child(pid: int) -> None:
    """Stop a helper if it still runs, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
