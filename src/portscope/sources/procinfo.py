"""Process facts straight from /proc (faster than psutil for the few fields we need).

Odd bytes in command lines are kept visible as ``\\xNN`` escapes rather than dropped or crashing
the JSON encoder.
"""

from __future__ import annotations

import functools
import pwd

from portscope.errors import SourceError
from portscope.model.records import Process
from portscope.sources.linux import CLOCK_TICKS


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
                    value = line.split()[1]
                    return float(value) if value.isdigit() else None
    except (OSError, IndexError):
        pass
    return None


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _decimal(field: bytes, what: str, source: str) -> int:
    if not (field.isdigit() and len(field) <= 20):  # bytes.isdigit(): ASCII digits only
        raise SourceError(source, f"{what} is not a number: {field[:24]!r}")
    return int(field)


def parse_stat(data: bytes, source: str = "/proc/PID/stat") -> tuple[str, int, int]:
    """(comm, ppid, start time in clock ticks since boot) from /proc/<pid>/stat."""
    open_paren = data.find(b"(")
    close_paren = data.rfind(b")")  # comm may itself contain ')'
    if open_paren < 0 or close_paren < open_paren:
        raise SourceError(source, "no (comm) field")
    comm = data[open_paren + 1 : close_paren].decode("utf-8", "backslashreplace")
    rest = data[close_paren + 2 :].split()
    if len(rest) < 20:
        raise SourceError(source, f"{len(rest) + 2} fields, expected at least 22")
    return comm, _decimal(rest[1], "ppid", source), _decimal(rest[19], "starttime", source)


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    if not data:
        return ()
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return tuple(part.decode("utf-8", "backslashreplace") for part in parts)


def parse_status_uid(data: bytes, source: str = "/proc/PID/status") -> int | None:
    """The effective uid (as ps shows) from /proc/<pid>/status; None without a Uid line."""
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            fields = line.split()
            if len(fields) < 3:
                raise SourceError(source, f"short Uid line: {line[:40]!r}")
            uid = _decimal(fields[2], "uid", source)
            if uid > 0xFFFFFFFF:
                raise SourceError(source, f"uid {uid} out of range")
            return uid
    return None


def read_process(pid: int, proc_root: str = "/proc") -> Process | None:
    """Read one process; ``None`` if it vanished."""
    stat = _read_bytes(f"{proc_root}/{pid}/stat")
    if stat is None:
        return None
    try:
        comm, ppid, start_ticks = parse_stat(stat)
    except SourceError:
        return None
    status = _read_bytes(f"{proc_root}/{pid}/status")
    try:
        uid = parse_status_uid(status) if status else None
    except SourceError:
        uid = None  # unreadable: shown as unknown rather than guessed
    cmdline = parse_cmdline(_read_bytes(f"{proc_root}/{pid}/cmdline") or b"")
    btime = boot_time(proc_root)
    return Process(
        pid=pid,
        ppid=ppid,
        name=comm,
        uid=uid,
        user=user_name(uid) if uid is not None else None,
        cmdline=cmdline,
        start_time=btime + start_ticks / CLOCK_TICKS if btime is not None else None,
    )
