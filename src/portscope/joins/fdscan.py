"""One pass over /proc/*/fd: socket inode -> every (pid, fd) that holds it.

Processes come and go while we walk; a vanished process is counted, not an error. As non-root the
fd tables of other users' (and non-dumpable) processes are unreadable: those are counted per uid,
so the caller can say whose sockets' owners are hidden.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

_SOCKET_PREFIX = "socket:["
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass
class FdScan:
    holders: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # inode -> [(pid, fd)]
    scanned: int = 0
    vanished: int = 0
    denied_by_uid: Counter[int] = field(default_factory=Counter)

    @property
    def denied(self) -> int:
        return sum(self.denied_by_uid.values())


def _owner_uid(proc_root: str, pid_name: str) -> int:
    try:
        return os.stat(f"{proc_root}/{pid_name}").st_uid
    except OSError:
        return -1


def scan_socket_fds(wanted: set[int] | None, proc_root: str = "/proc") -> FdScan:
    """Find the holders of the ``wanted`` socket inodes (all socket inodes when ``None``)."""
    result = FdScan()
    holders = result.holders
    canonical = None if wanted is None else {inode: inode for inode in wanted}
    for pid, inodes, fds in walk_socket_fds(canonical, proc_root, result):
        for inode, fd in zip(inodes, fds, strict=True):
            entry = holders.get(inode)
            if entry is None:
                holders[inode] = [(pid, fd)]
            else:
                entry.append((pid, fd))
    return result


def walk_socket_fds(
    wanted: dict[int, int] | None, proc_root: str, counts: FdScan
) -> Iterator[tuple[int, list[int], list[int]]]:
    """Per readable process: ``(pid, inodes, fds)``, the wanted sockets it holds and through which fds.

    ``wanted`` maps each inode to itself, so the inodes given back are the caller's own int objects
    (one object per socket, not one more per holder). ``counts`` gets the scanned, vanished and
    denied processes. The readlink() per fd is the cost of the whole join (a few µs each in the
    kernel), so the Python around it is kept to one list comprehension per process.
    """
    readlink = os.readlink
    prefix = _SOCKET_PREFIX
    wanted_get = wanted.get if wanted is not None else None
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return
    for pid_name in entries:
        if not pid_name.isdigit():
            continue
        try:
            dir_fd = os.open(f"{proc_root}/{pid_name}/fd", _DIR_FLAGS)
        except (FileNotFoundError, ProcessLookupError):
            counts.vanished += 1
            continue
        except PermissionError:
            counts.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
            continue
        except OSError:
            counts.vanished += 1
            continue
        inodes: list[int] = []
        fds: list[int] = []
        try:
            try:
                fd_names = os.listdir(dir_fd)
            except PermissionError:
                counts.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
                continue
            except OSError:
                counts.vanished += 1
                continue
            counts.scanned += 1
            try:
                targets = [readlink(fd_name, dir_fd=dir_fd) for fd_name in fd_names]
                refused = False
            except OSError:  # an fd closed meanwhile, or a refusal: redo this process one fd at a time
                targets, refused = _read_links_one_by_one(fd_names, dir_fd)
            for fd_name, target in zip(fd_names, targets, strict=True):
                if not target.startswith(prefix):
                    continue
                inode = int(target[8:-1])
                if wanted_get is not None:
                    inode = wanted_get(inode)
                    if inode is None:
                        continue
                inodes.append(inode)
                fds.append(int(fd_name))
            if refused:
                counts.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
        finally:
            os.close(dir_fd)
        if inodes:
            yield int(pid_name), inodes, fds


def _read_links_one_by_one(fd_names: list[str], dir_fd: int) -> tuple[list[str], bool]:
    """Link targets ("" for an fd that is gone) and whether any was refused."""
    targets = []
    refused = False
    for fd_name in fd_names:
        try:
            targets.append(os.readlink(fd_name, dir_fd=dir_fd))
        except PermissionError:
            refused = True  # an LSM or a ptrace check can refuse even root
            targets.append("")
        except OSError:
            targets.append("")  # fd closed meanwhile
    return targets, refused
