"""When portscope uses a second CPU: the one place that decides on forked helpers.

Three helpers exist; this module decides when each runs:

- the dump prefetch (:class:`portscope.sources.netlink.TableDumps` with ``prefetch=True``): a forked child
  receives the sock_diag dumps from the kernel while this process decodes them;
- the shared /proc walk (:class:`portscope.sources.fdscan.BackgroundWalk`): a forked child reads the
  fd links while this process collects the sockets, then both read what is left. Started ahead of the
  collection where the host has many fds (a full listing or a port), or inside the join when the walk
  is large.
- the split writer (:class:`portscope.render.splitwriter.SplitWriter`): a forked child makes the second
  half of a large ``ls --json`` or ``--jsonl`` text, or of a large plain table, while this process makes the
  first, and passes it on after.

At most one of them runs at a time: the walk, when started ahead, is the longer task and keeps the
second CPU busy on its own. No helper is forked from a process that runs other threads: a child
forked beside them may inherit locks they hold (and the library must work from threads).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from portscope.model.dataclass_lite import dataclass_lite


def single_threaded() -> bool:
    """Whether forking is safe here: this process runs no other Python thread."""
    threading = sys.modules.get("threading")
    return hasattr(os, "fork") and (threading is None or threading.active_count() == 1)


@dataclass_lite(frozen=True, slots=True)
class Parallelism:
    """The thresholds above which forking pays (a fork costs a few milliseconds), and the decisions.

    ``enabled=False`` keeps everything in this process.
    """

    prefetch_min_sockets: int = 5000  # sockets in the namespace (sockstat) for the dump prefetch
    split_walk_min_fds: int = 8192  # fds on the host for a /proc walk in two processes
    split_render_min_sockets: int = 10000  # sockets in a listing (JSON or a plain table) written by two processes
    enabled: bool = True

    def may_fork(self) -> bool:
        return self.enabled and single_threaded()

    def walk_ahead(self, *, needs_processes: bool, port_filtered: bool, open_files: Callable[[], int | None]) -> bool:
        """Start the /proc walk before collecting? Wherever processes are joined on a host with many fds:
        the walk reads every fd whatever the query (a port filter only makes the matching cheaper), and it
        runs while the dump is received and decoded (for ``who PORT`` the kernel walks its whole socket
        table under the filter: tens of milliseconds at 40k sockets), where it would otherwise follow it.
        Such a walk would be split in two processes anyway (:meth:`split_walk`): the fork only comes sooner.
        ``open_files``: about how many fds the walk will read (host-wide; read only when the rest allows a
        fork): on a small host the walk takes less than the fork. Where that count is unknown, only a full
        listing walks ahead: a port may have no socket to join at all."""
        if not needs_processes or not self.may_fork():
            return False
        count = open_files()
        if count is None:
            return not port_filtered
        return count >= self.split_walk_min_fds

    def prefetch_dumps(
        self, *, kernel_filtered: bool, walking_ahead: bool, socket_count: Callable[[], int | None]
    ) -> bool:
        """Receive the dumps in a forked child? Only for a large unfiltered dump, and not beside a walk.

        ``socket_count``: about how many sockets the dumps hold (read only when the rest allows a relay).
        """
        if walking_ahead or kernel_filtered or not self.may_fork():
            return False
        return (socket_count() or 0) >= self.prefetch_min_sockets

    def split_walk(self, fd_count: int) -> bool:
        """Read this many listed fd links in two processes?"""
        return fd_count >= self.split_walk_min_fds and self.may_fork()

    def split_render(self, socket_count: int) -> bool:
        """Write the text of this many sockets in two processes (:class:`portscope.render.splitwriter.SplitWriter`:
        each half made on its own CPU, written in order)? Below ~10k sockets the fork costs more than half the
        writing saves (~1 µs a socket); and only where a CPU is to spare (:func:`cpu_to_spare`): on a busy
        machine the child only takes turns with this process, and the fork and its copy-on-write faults cost
        ~10% more CPU."""
        if socket_count < self.split_render_min_sockets or not self.may_fork():
            return False
        return cpu_to_spare()


PRESSURE_CALM = 10.0  # CPU pressure (% of the last 10 s some task waited for a CPU) below which a queue is passing


def cpu_to_spare(loadavg: str = "/proc/loadavg", pressure: str = "/proc/pressure/cpu") -> bool:
    """Whether a forked helper would get a CPU's time without crowding other work out: this process may use two
    CPUs or more, and right now at most as many tasks run or wait for a CPU as it may use (``loadavg``'s fourth
    field, this process included: on two CPUs, one other task at most, which then shares the second CPU with the
    helper); or more at this instant, while over the last 10 s hardly any task waited for a CPU (``pressure``:
    "some avg10" under :data:`PRESSURE_CALM`), so that they are passing. The pressure alone misleads: it counts
    this process's own helpers of the seconds before (the /proc walker). Unknown run queue: True."""
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        return False
    try:
        with open(loadavg, "rb") as handle:
            running = int(handle.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return True
    if running <= cpus:
        return True
    try:
        with open(pressure, "rb") as handle:
            waited = float(handle.readline().split(b"avg10=")[1].split()[0])
    except (OSError, ValueError, IndexError):  # no PSI (a kernel without it, psi=0): the instant decides
        return False
    return waited < PRESSURE_CALM


DEFAULT = Parallelism()
IN_PROCESS = Parallelism(enabled=False)
