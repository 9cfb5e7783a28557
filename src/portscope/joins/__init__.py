"""Joins: sockets to the processes that hold them."""

from __future__ import annotations

import os
from collections.abc import Sequence

from portscope.joins.fdscan import scan_socket_fds
from portscope.joins.procinfo import read_process
from portscope.records import Holder, JoinReport, Socket


def join_processes(
    sockets: Sequence[Socket], proc_root: str = "/proc"
) -> tuple[dict[int, tuple[Holder, ...]], JoinReport]:
    """Map every listed socket's inode to all of its holders, with what could not be seen."""
    wanted = {sock.inode for sock in sockets if sock.inode is not None}
    if not wanted:
        return {}, JoinReport(joined=True)
    scan = scan_socket_fds(wanted, proc_root)

    fds_by_pid: dict[int, list[int]] = {}
    for pairs in scan.holders.values():
        for pid, fd in pairs:
            fds_by_pid.setdefault(pid, []).append(fd)
    processes = {}
    vanished = scan.vanished
    for pid, fds in fds_by_pid.items():
        process = read_process(pid, tuple(sorted(fds)), proc_root)
        if process is None:
            vanished += 1
        else:
            processes[pid] = process

    holders: dict[int, tuple[Holder, ...]] = {}
    for inode, pairs in scan.holders.items():
        by_pid: dict[int, list[int]] = {}
        for pid, fd in pairs:
            if pid in processes:
                by_pid.setdefault(pid, []).append(fd)
        if by_pid:
            holders[inode] = tuple(Holder(processes[pid], tuple(sorted(fds))) for pid, fds in sorted(by_pid.items()))

    hidden: set[int] = set()
    unowned = 0
    if len(holders) < len(wanted):
        denied_uids = set(scan.denied_by_uid)
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
        processes_scanned=scan.scanned,
        processes_denied=scan.denied,
        processes_vanished=vanished,
        hidden_sockets=len(hidden),
        unowned_sockets=unowned,
        hidden_inodes=frozenset(hidden),
    )
    return holders, report
