"""Process facts straight from /proc (faster than psutil for the few fields we need).

Odd bytes in command lines are kept visible as ``\\xNN`` escapes rather than dropped or crashing
the JSON encoder.
"""

from __future__ import annotations

import functools
import os
import pwd

from portscope.model.records import Process

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@functools.cache
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


@functools.lru_cache(maxsize=4)
def boot_time(proc_root: str = "/proc") -> float | None:
    try:
        with open(f"{proc_root}/stat", "rb") as handle:
            for line in handle:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def parse_stat(data: bytes) -> tuple[str, int, int]:
    """(comm, ppid, start time in clock ticks since boot) from /proc/<pid>/stat."""
    open_paren = data.index(b"(")
    close_paren = data.rindex(b")")  # comm may itself contain ')'
    comm = data[open_paren + 1 : close_paren].decode("utf-8", "surrogateescape")
    rest = data[close_paren + 2 :].split()
    return comm, int(rest[1]), int(rest[19])


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    if not data:
        return ()
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return tuple(part.decode("utf-8", "surrogateescape") for part in parts)


def parse_status_uid(data: bytes) -> int | None:
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            fields = line.split()
            return int(fields[2]) if len(fields) > 2 else None  # the effective uid, as ps shows
    return None


def read_process(pid: int, fds: tuple[int, ...] = (), proc_root: str = "/proc") -> Process | None:
    """Read one process; ``None`` if it vanished."""
    stat = _read_bytes(f"{proc_root}/{pid}/stat")
    if stat is None:
        return None
    try:
        comm, ppid, start_ticks = parse_stat(stat)
    except (ValueError, IndexError):
        return None
    status = _read_bytes(f"{proc_root}/{pid}/status")
    uid = parse_status_uid(status) if status else None
    cmdline = parse_cmdline(_read_bytes(f"{proc_root}/{pid}/cmdline") or b"")
    btime = boot_time(proc_root)
    return Process(
        pid=pid,
        ppid=ppid,
        name=comm,
        uid=uid,
        user=user_name(uid) if uid is not None else None,
        cmdline=cmdline,
        start_time=btime + start_ticks / _CLOCK_TICKS if btime is not None else None,
        fds=fds,
    )
