"""Process facts straight from /proc (faster than psutil for the few fields we need).

Details are anchored to one process: they are read relative to an open ``/proc/PID`` directory,
which stays tied to the process it was opened for (reads through it fail once that process is
reaped, even if its pid is reused), and checked against what the fd walk saw. Odd bytes in command
lines are kept visible as ``\\xNN`` escapes rather than dropped or crashing the JSON encoder.
"""

from __future__ import annotations

import errno
import functools
import os
import pwd
import re
from collections.abc import Sequence

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Process
from portscope.sources.linux import CLOCK_TICKS

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})
VERIFY_FDS = 8  # fds tried, first seen first, to find one that still links to the socket the walk saw


def raise_if_out_of_fds(exc: OSError, source: str) -> None:
    """EMFILE/ENFILE is this process's limit, not a vanished process: say so instead of skipping."""
    if exc.errno in _OUT_OF_FDS:
        raise SourceError(source, "too many open files (raise the limit: ulimit -n)") from exc


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


def _read_bytes(path: str, dir_fd: int | None = None) -> bytes | None:
    """The whole file (``path`` relative to ``dir_fd`` if given); ``None`` if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise_if_out_of_fds(exc, path)
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None  # ESRCH: the process went away between open and read
    finally:
        os.close(fd)


def open_process_dir(pid: int, proc_root: str = "/proc") -> int | None:
    """An fd on ``<proc_root>/<pid>`` that keeps naming this process; ``None`` if it is gone."""
    try:
        return os.open(f"{proc_root}/{pid}", _DIR_FLAGS)
    except OSError as exc:
        raise_if_out_of_fds(exc, f"{proc_root}/{pid}")
        return None


def still_holds(dir_fd: int, inodes: Sequence[int], fds: Sequence[int], fd_dir: str = "fd") -> bool:
    """Whether the process behind ``dir_fd`` holds one of these sockets through the fd the walk saw.

    Read after the details: the process that answers is the one they were read from, so a pid reused
    between the walk and the details cannot lend its command line to the walk's holder. A few are tried,
    in the walk's order, as connections may close meanwhile: /proc lists fds lowest first, the longest
    held as a rule (sorting a busy process's 12k fds here took 2 ms each, in the listing's serial tail).
    """
    for fd, inode in zip(fds[:VERIFY_FDS], inodes[:VERIFY_FDS], strict=True):
        try:
            if os.readlink(f"{fd_dir}/{fd}", dir_fd=dir_fd) == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


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
    comm = data[open_paren + 1 : close_paren].decode("utf-8", "surrogateescape")
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
    return tuple(part.decode("utf-8", "surrogateescape") for part in parts)


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


def read_process(
    pid: int,
    proc_root: str = "/proc",
    *,
    seen: tuple[Sequence[int], Sequence[int]] | None = None,
    thread: int | None = None,
) -> Process | None:
    """Read one process; ``None`` if it vanished.

    ``seen``: the (socket inodes, fds) the walk found in it. Then the process must still hold one of
    them after its details were read (see :func:`still_holds`), else it counts as vanished.
    ``thread``: the walk found them in this thread's own fd table (task/TID/fd); its command line
    stands in for a leader that exited (a zombie leader has none).
    """
    dir_fd = open_process_dir(pid, proc_root)
    if dir_fd is None:
        return None
    task = f"task/{thread}/" if thread is not None else ""
    try:
        stat = _read_bytes("stat", dir_fd)
        if stat is None:
            return None
        try:
            comm, ppid, start_ticks = parse_stat(stat)
        except SourceError:
            return None
        status = _read_bytes("status", dir_fd)
        cmdline = parse_cmdline(_read_bytes("cmdline", dir_fd) or b"")
        if not cmdline and task:
            cmdline = parse_cmdline(_read_bytes(f"{task}cmdline", dir_fd) or b"")
        if seen is not None and not still_holds(dir_fd, *seen, fd_dir=f"{task}fd"):
            return None
    finally:
        os.close(dir_fd)
    try:
        uid = parse_status_uid(status) if status else None
    except SourceError:
        uid = None  # unreadable: shown as unknown rather than guessed
    btime = boot_time(proc_root)
    return Process(
        pid=pid,
        ppid=ppid,
        name=comm,
        uid=uid,
        user=user_name(uid) if uid is not None else None,
        cmdline=cmdline,
        start_time=start_seconds(start_ticks, btime),
    )


def read_name_and_parent(pid: int, proc_root: str = "/proc") -> tuple[str, int] | None:
    """(comm, ppid) from /proc/PID/stat, readable even where the process's fds are not; None if gone."""
    stat = _read_bytes(f"{proc_root}/{pid}/stat")
    if stat is None:
        return None
    try:
        comm, ppid, _ = parse_stat(stat)
    except SourceError:
        return None
    return comm, ppid


def start_seconds(start_ticks: int, btime: float | None) -> float | None:
    """A process's start (stat field 22) in seconds since the epoch: also its identity with its pid."""
    return btime + start_ticks / CLOCK_TICKS if btime is not None else None


# ---------------------------------------------------------------------------------------------------
# hidepid: other users' processes missing from /proc by design

# hidepid values (numbers or, since Linux 5.8, names) that leave other users' /proc/PID out of listings
HIDEPID_INVISIBLE = frozenset({"2", "invisible", "4", "ptraceable"})
HIDEPID_ALIASES = {"1": "noaccess", "2": "invisible", "4": "ptraceable"}
HIDEPID_ALIASES |= {name: number for number, name in HIDEPID_ALIASES.items()}


@dataclass_lite(frozen=True, slots=True)
class HidePid:
    """The ``hidepid=`` option of a proc mount: which processes of other users we cannot see."""

    value: str  # as mounted: "2", "invisible", "noaccess", ...
    gid: int | None  # members of this group see everything (the gid= option)

    @property
    def invisible(self) -> bool:
        """Other users' processes are missing from /proc, not merely unreadable: nothing counts them."""
        return self.value in HIDEPID_INVISIBLE

    @property
    def option(self) -> str:
        """``hidepid=invisible (hidepid=2)``: as mounted, and its other spelling."""
        alias = HIDEPID_ALIASES.get(self.value)
        return f"hidepid={self.value}" + (f" (hidepid={alias})" if alias else "")


def unescape_mountinfo(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_hidepid(mountinfo: str, mount_point: str) -> HidePid | None:
    """The hidepid of the proc mount at ``mount_point`` (the last one mounted there: the one seen)."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 4 or len(fields) < 5 or unescape_mountinfo(fields[4]) != mount_point:
            continue
        if fields[dash + 1] != "proc":
            found = None  # something else is mounted over it
            continue
        options = dict(option.partition("=")[::2] for option in fields[dash + 3].split(","))
        value = options.get("hidepid")
        gid = options.get("gid", "")
        found = HidePid(value, int(gid) if gid.isascii() and gid.isdigit() else None) if value else None
        if value in ("0", "off"):
            found = None
    return found


def read_hidepid(proc_root: str = "/proc") -> HidePid | None:
    """Whether ``proc_root`` hides other users' processes from us (never for root, or a member of gid=)."""
    if os.geteuid() == 0:
        return None  # hidepid never hides from a process with CAP_SYS_PTRACE
    data = _read_bytes("/proc/self/mountinfo")
    if data is None:
        return None
    hidepid = parse_hidepid(data.decode("utf-8", "surrogateescape"), os.path.realpath(proc_root))
    if hidepid is None or (hidepid.gid is not None and hidepid.gid in (os.getegid(), *os.getgroups())):
        return None
    return hidepid
