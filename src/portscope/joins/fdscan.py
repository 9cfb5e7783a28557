"""One pass over /proc/*/fd: socket inode -> every (pid, fd) that holds it.

Processes come and go while we walk; a vanished process is counted, not an error. As non-root the
fd tables of other users' (and non-dumpable) processes are unreadable: those are counted per uid,
so the caller can say whose sockets' owners are hidden.
"""

from __future__ import annotations

import os
from collections import Counter
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
    readlink = os.readlink
    prefix = _SOCKET_PREFIX
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return result
    for pid_name in entries:
        if not pid_name.isdigit():
            continue
        try:
            dir_fd = os.open(f"{proc_root}/{pid_name}/fd", _DIR_FLAGS)
        except (FileNotFoundError, ProcessLookupError):
            result.vanished += 1
            continue
        except PermissionError:
            result.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
            continue
        except OSError:
            result.vanished += 1
            continue
        try:
            try:
                fd_names = os.listdir(dir_fd)
            except PermissionError:
                result.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
                continue
            except OSError:
                result.vanished += 1
                continue
            result.scanned += 1
            pid = int(pid_name)
            refused = False
            for fd_name in fd_names:
                try:
                    target = readlink(fd_name, dir_fd=dir_fd)
                except PermissionError:
                    refused = True  # an LSM or a ptrace check can refuse even root
                    continue
                except OSError:
                    continue  # fd closed meanwhile
                if not target.startswith(prefix):
                    continue
                inode = int(target[8:-1])
                if wanted is None or inode in wanted:
                    entry = holders.get(inode)
                    if entry is None:
                        holders[inode] = [(pid, int(fd_name))]
                    else:
                        entry.append((pid, int(fd_name)))
            if refused:
                result.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
        finally:
            os.close(dir_fd)
    return result
