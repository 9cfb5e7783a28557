"""Joins: sockets to the processes that hold them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from portscope.engine.recordmaker import positional_maker
from portscope.model.records import Holder, JoinReport, Socket, UnixSocket
from portscope.sources.fdscan import BackgroundWalk, FdScan, Found, kept_sockets, walk_socket_fds
from portscope.sources.procinfo import read_process

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
    holders: dict[int, tuple[Holder, ...]] = {}
    holders_get = holders.get
    make_holder = _make_holder
    single_fd: dict[int, tuple[int]] = {}  # (fd,) tuples are immutable: one per fd number, shared
    vanished = 0
    found = prefetched.found(wanted, counts) if prefetched is not None else None
    if walked is not None:
        found, counts = kept_sockets(walked[0], wanted), walked[1]
    if found is None:
        counts = FdScan()
        found = walk_socket_fds(wanted, proc_root, counts, split=split_walk)
    # Each process becomes holders at once: no second map of every (pid, fd).
    for pid, inodes, fds in found:
        process = read_process(pid, proc_root, seen=(inodes, fds))  # anchored: see read_process
        if process is None:
            vanished += 1
            continue
        if len(set(inodes)) == len(inodes):  # the usual case: one fd per socket in this process
            groups = zip(inodes, [single_fd.get(fd) or single_fd.setdefault(fd, (fd,)) for fd in fds], strict=True)
        else:
            by_inode: dict[int, list[int]] = {}
            for inode, fd in zip(inodes, fds, strict=True):
                by_inode.setdefault(inode, []).append(fd)
            groups = ((inode, tuple(sorted(group))) for inode, group in by_inode.items())
        for inode, fd_tuple in groups:
            holder = make_holder(process, fd_tuple)
            held = holders_get(inode)
            if held is None:
                holders[inode] = (holder,)
            elif held[-1].process.pid < pid:
                holders[inode] = (*held, holder)
            else:  # /proc lists pids in ascending order, but keep the promise for any walk order
                holders[inode] = tuple(sorted((*held, holder), key=_holder_pid))

    hidden: set[int] = set()
    unowned = 0
    if len(holders) < len(wanted):
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
    report = JoinReport(
        joined=True,
        processes_scanned=counts.scanned,
        processes_denied=counts.denied,
        processes_vanished=counts.vanished + vanished,
        unowned_sockets=unowned,
        hidden_inodes=frozenset(hidden),
    )
    return holders, report


def _holder_pid(holder: Holder) -> int:
    return holder.process.pid
