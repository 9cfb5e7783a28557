"""Joins: sockets to the processes that hold them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from portscope.model.recordmaker import positional_maker
from portscope.model.records import Holder, JoinReport, Socket, UnixSocket
from portscope.sources.fdscan import BackgroundWalk, FdScan, Found, kept_sockets, walk_socket_fds, walk_thread_tables
from portscope.sources.procinfo import read_name_and_parent, read_process

DENIED_NAMED = 8  # processes that refused, named in the report (the count covers them all)
KTHREADD = 2  # the parent of every kernel thread

_make_holder = positional_maker(Holder)


def join_processes(
    sockets: Sequence[Socket | UnixSocket],
    proc_root: str = "/proc",
    *,
    prefetched: BackgroundWalk | None = None,
    split_walk: Callable[[int], bool] | None = None,
    also_wanted: Iterable[int] = (),
    walked: tuple[Found, FdScan] | None = None,
) -> tuple[dict[int, tuple[Holder, ...]], JoinReport]:
    """Map every listed socket's inode to all of its holders, with what could not be seen.

    ``prefetched``: a walk of /proc started earlier (see :meth:`BackgroundWalk.start`), used instead
    of walking now when it succeeded. ``split_walk``: otherwise, given the number of fds, whether to
    walk in two processes (see :func:`walk_socket_fds`); by default in this one. ``also_wanted``: more
    socket inodes whose holders to find in the same walk (the peers of UNIX sockets), not counted as
    hidden when no holder is seen. ``walked``: a walk already made for every socket (``wanted`` None)
    and what it saw, joined without walking again.
    """
    # inode -> the same int object, so the holders map shares the sockets' inodes (memory at 100k+)
    wanted = {sock.inode: sock.inode for sock in sockets if sock.inode is not None}
    for inode in also_wanted:
        wanted.setdefault(inode, inode)
    if not wanted:
        return {}, JoinReport(joined=True)
    counts = FdScan()
    found = prefetched.found(wanted, counts) if prefetched is not None else None
    if walked is not None:
        found, counts = kept_sockets(walked[0], wanted), walked[1]
    if found is None:
        counts = FdScan()
        found = walk_socket_fds(wanted, proc_root, counts, split=split_walk)
    wanted_count = len(wanted)
    # Sized once for every wanted socket, values None until made (and dropped if none is): a dict or a set grown
    # insert by insert leaves its old tables with malloc, which keeps the pages (a set of the placed inodes
    # grew RSS by 64 MB at 1M sockets, and half of it stayed after the set was freed).
    holders: dict[int, tuple[Holder, ...]] = dict.fromkeys(wanted)  # type: ignore[arg-type]
    del wanted  # before the holders are made: at 1M sockets its table is 40 MB
    # (fd,) tuples are immutable: one per fd number, shared; a list by fd number (a dict of the 12k fds a
    # busy process holds was 0.6 MB of the listing's peak at 40k sockets), fds past SHARED_FDS made apiece
    single_fd: list[tuple[int] | None] = []
    tables = [(pid, None, inodes, fds) for pid, inodes, fds in found]
    del found
    vanished, placed = _make_holders(tables, holders, proc_root, single_fd)
    # Sockets the leaders' tables do not hold may be in a thread's own table (rare: a pass only for them)
    if placed < len(holders):
        missing = {inode: inode for inode, held in holders.items() if held is None}
        vanished += _make_holders(walk_thread_tables(missing, proc_root, counts), holders, proc_root, single_fd)[0]
        for inode in missing:
            if holders[inode] is None:  # no holder seen
                del holders[inode]
    hidden: set[int] = set()
    unowned = 0
    if len(holders) < wanted_count:
        denied_uids = set(counts.denied_by_uid)
        my_uid = os.geteuid()
        for sock in sockets:
            if sock.inode is None or sock.inode in holders:
                continue
            # A socket can be held by any uid (fds are passed around), but its own uid is the best guess
            # of whose process table we could not read.
            if denied_uids and (sock.uid in denied_uids or sock.uid != my_uid):
                hidden.add(sock.inode)
            else:
                unowned += 1
    hidden_uids = {sock.uid for sock in sockets if sock.inode in hidden} if hidden else set()
    report = JoinReport(
        joined=True,
        processes_scanned=counts.scanned,
        processes_denied=counts.denied,
        processes_vanished=counts.vanished + vanished,
        unowned_sockets=unowned,
        hidden_inodes=frozenset(hidden),
        denied_processes=_named(counts, proc_root, hidden_uids),
        denied_reason=_denied_reason() if counts.denied_processes else None,
    )
    return holders, report


def _make_holders(
    tables: list, holders: dict[int, tuple[Holder, ...]], proc_root: str, single_fd: list[tuple[int] | None]
) -> tuple[int, int]:
    """Each table's process becomes holders at once (no second map of every (pid, fd)), added to ``holders``:
    how many processes were gone before they could be read, and how many sockets got their first holder.
    ``tables``: (pid, tid, inodes, fds), emptied."""
    vanished = placed = 0
    make_holder = _make_holder
    holders_get = holders.get
    for index, (pid, tid, inodes, fds) in enumerate(tables):
        tables[index] = None  # its lists go once made into holders (memory)
        process = read_process(pid, proc_root, seen=(inodes, fds), thread=tid)  # anchored: see read_process
        if process is None:
            vanished += 1
            continue
        if len(set(inodes)) == len(inodes):  # the usual case: one fd per socket in this process
            groups = zip(inodes, _fd_tuples(fds, single_fd), strict=True)
        else:
            by_inode: dict[int, list[int]] = {}
            for inode, fd in zip(inodes, fds, strict=True):
                by_inode.setdefault(inode, []).append(fd)
            groups = ((inode, tuple(sorted(group))) for inode, group in by_inode.items())
        for inode, fd_tuple in groups:
            holder = make_holder(process, fd_tuple, tid)
            held = holders_get(inode)
            if held is None:
                holders[inode] = (holder,)
                placed += 1
            elif held[-1].process.pid < pid:
                holders[inode] = (*held, holder)
            else:  # /proc lists pids in ascending order, but keep the promise for any walk order
                holders[inode] = tuple(sorted((*held, holder), key=_holder_pid))
    return vanished, placed


SHARED_FDS = 1 << 16  # fd numbers below this share their (fd,) tuple (a list of 8 bytes a number, at most)


def _fd_tuples(fds: list[int], shared: list[tuple[int] | None]) -> list[tuple[int]]:
    """``(fd,)`` for each fd, the same tuple object for the same number (``shared``, by fd number, grows)."""
    top = max(fds, default=-1) + 1
    if top > SHARED_FDS:  # a process with fds past the shared numbers (rare): tuples of its own
        return [(fd,) for fd in fds]
    if top > len(shared):
        shared.extend([None] * (top - len(shared)))
    return [shared[fd] or _share_fd(shared, fd) for fd in fds]


def _share_fd(shared: list[tuple[int] | None], fd: int) -> tuple[int]:
    made = shared[fd] = (fd,)
    return made


def _holder_pid(holder: Holder) -> int:
    return holder.process.pid


CAP_SYS_PTRACE = 19


def _denied_reason() -> str:
    """Why /proc/PID/fd refused (PTRACE_MODE_READ): no privileges, no CAP_SYS_PTRACE, or something above root."""
    if os.geteuid() != 0:
        return "not-permitted"
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    if not int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1:
                        return "no-ptrace-capability"
                    break
    except (OSError, ValueError, IndexError):
        pass
    return "refused-to-root"


def _named(counts: FdScan, proc_root: str, uids: set[int | None]) -> tuple[tuple[int, str | None, int | None], ...]:
    """A few processes that refused, by name: first those of the hidden sockets' owners; no kernel threads."""
    named = []
    for pid, uid in sorted(set(counts.denied_processes), key=lambda entry: (entry[1] not in uids, entry[0])):
        if len(named) == DENIED_NAMED:
            break
        stat = read_name_and_parent(pid, proc_root)
        if stat is not None and KTHREADD in (pid, stat[1]):
            continue  # a kernel thread holds no socket fd
        named.append((pid, stat[0] if stat else None, uid if uid >= 0 else None))
    return tuple(named)
