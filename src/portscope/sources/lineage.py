"""Where a process comes from: its parent chain, age, and the systemd unit or container it runs in.

Everything is read straight from ``<proc_root>/<pid>/{stat,cgroup}`` (a few small reads per process,
no walk of /proc), with ``proc_root`` a parameter so tests can feed recorded trees. Processes may exit
while we read: a vanished process ends its chain early instead of failing.

The chain stops at the service manager: pid 1, a process without a parent in this pid namespace
(ppid 0), or a known subreaper (a user systemd, a container shim). The kernel does not expose the
PR_SET_CHILD_SUBREAPER flag in /proc, so subreapers are recognised by name.

A holder's own facts are anchored to the process the fd walk saw: its stat and cgroup are read
through an open ``/proc/PID`` directory and its start time must match the one seen in the walk.
:class:`DetailsReader` adds the executable, working directory, status and children, read through the
open ``/proc/PID`` directory of the process the walk saw.
"""

from __future__ import annotations

import os

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.sources.containers import ContainerInfo, container_of_cgroup, unescape_unit
from portscope.sources.linux import CLOCK_TICKS
from portscope.sources.procinfo import (
    _read_bytes,
    boot_time,
    open_process_dir,
    parse_stat,
    raise_if_out_of_fds,
    read_name_and_parent,
    start_seconds,
)

MAX_CHAIN = 64  # a guard against cycles in a tree that changes while we read it

# comm names (at most 15 characters) of processes that adopt orphans and supervise services
SUBREAPER_NAMES = frozenset(
    {
        "systemd",  # pid 1 or a user's service manager (systemd --user)
        "containerd-shim",  # containerd-shim-runc-v2 truncated to 15 characters
        "conmon",
        "crun",
        "tini",
        "dumb-init",
        "catatonit",
        "docker-init",
        "s6-svscan",
        "s6-supervise",
        "runsvdir",
        "runsv",
        "supervisord",
    }
)


@dataclass_lite(frozen=True, slots=True)
class Ancestor:
    pid: int
    name: str


@dataclass_lite(frozen=True, slots=True)
class Lineage:
    pid: int
    ancestors: tuple[Ancestor, ...]  # parent first; the last one is the service manager when reached
    complete: bool  # False when an ancestor vanished or could not be read before the manager was reached
    started: float | None  # seconds since the epoch
    uptime: float | None  # seconds since the process started
    cgroup: str | None  # the cgroup path that names the unit or container (None: unreadable)
    unit: str | None  # the innermost systemd .service or .scope
    container: ContainerInfo | None  # from the cgroup's shape: runtime, id, pod uid (no name)


# ---------------------------------------------------------------------------------------------------
# /proc/<pid>/cgroup


def pick_cgroup_path(text: str) -> str | None:
    """The most telling path in a /proc/<pid>/cgroup file.

    Lines are ``hierarchy:controllers:path``. The cgroup v2 line (``0::``) wins, then systemd's v1
    hierarchy, then any other controller: inside a cgroup namespace or on hybrid set-ups some of them
    show only ``/``.
    """
    unified = named = other = None
    seen = False
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        seen = True
        hierarchy, controllers, path = parts
        if path in ("", "/"):
            continue
        if hierarchy == "0" and controllers == "":
            unified = unified or path
        elif "name=systemd" in controllers.split(","):
            named = named or path
        else:
            other = other or path
    if not seen:
        return None
    return unified or named or other or "/"


def unit_of(path: str) -> str | None:
    """The innermost systemd unit (``.service`` or ``.scope``) in a cgroup path."""
    for segment in reversed([s for s in path.split("/") if s]):
        if segment.endswith((".service", ".scope")):
            return unescape_unit(segment)
    return None


# ---------------------------------------------------------------------------------------------------
# Reading


def _uptime(proc_root: str) -> float | None:
    data = _read_bytes(f"{proc_root}/uptime")
    try:
        return float(data.split()[0]) if data else None
    except (ValueError, IndexError):
        return None


def _parsed_stat(data: bytes | None) -> tuple[str, int, int] | None:
    try:
        return parse_stat(data) if data else None
    except SourceError:
        return None


class LineageReader:
    """Reads lineages for several processes, reading each shared ancestor once."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._stats: dict[int, tuple[str, int, int] | None] = {}
        self._uptime = _uptime(proc_root)
        self._btime = boot_time(proc_root)

    def _stat(self, pid: int) -> tuple[str, int, int] | None:
        if pid not in self._stats:
            self._stats[pid] = _parsed_stat(_read_bytes(f"{self.proc_root}/{pid}/stat"))
        return self._stats[pid]

    def lineage(self, pid: int, started: float | None = None) -> Lineage | None:
        """``None`` if the process itself has vanished, or (with ``started``, the start time seen in the
        walk) if its pid now belongs to another process."""
        dir_fd = open_process_dir(pid, self.proc_root)
        if dir_fd is None:
            return None
        try:
            stat = _parsed_stat(_read_bytes("stat", dir_fd))
            if stat is None or (started is not None and start_seconds(stat[2], self._btime) != started):
                return None
            self._stats[pid] = stat
            cgroup_data = _read_bytes("cgroup", dir_fd)
        finally:
            os.close(dir_fd)
        _, ppid, start_ticks = stat
        ancestors, complete = self._chain(pid, ppid)
        start_s = start_ticks / CLOCK_TICKS
        cgroup = pick_cgroup_path(cgroup_data.decode("utf-8", "surrogateescape")) if cgroup_data else None
        return Lineage(
            pid=pid,
            ancestors=ancestors,
            complete=complete,
            started=start_seconds(start_ticks, self._btime),
            uptime=max(0.0, self._uptime - start_s) if self._uptime is not None else None,
            cgroup=cgroup,
            unit=unit_of(cgroup) if cgroup else None,
            container=container_of_cgroup(cgroup) if cgroup else None,
        )

    def _chain(self, pid: int, ppid: int) -> tuple[tuple[Ancestor, ...], bool]:
        if pid == 1 or ppid == 0:
            return (), True  # it is the service manager itself
        chain: list[Ancestor] = []
        seen = {pid}
        current = ppid
        while len(chain) < MAX_CHAIN:
            if current in seen:
                return tuple(chain), False
            seen.add(current)
            stat = self._stat(current)
            if stat is None:
                return tuple(chain), False
            name, parent, _ = stat
            chain.append(Ancestor(current, name))
            if current == 1 or parent == 0 or name in SUBREAPER_NAMES:
                return tuple(chain), True
            current = parent
        return tuple(chain), False


# ---------------------------------------------------------------------------------------------------
# Details: status, executable, working directory, children


EXITED = "exited"  # Details.status of a holder that went away while we read it

# The kernel's state letters (fs/proc/array.c) in psutil's words, as psutil's status() gives them
STATUS_OF_STATE = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "tracing-stop",
    "Z": "zombie",
    "X": "dead",
    "x": "dead",
    "K": "wake-kill",
    "W": "waking",
    "I": "idle",
    "P": "parked",
}
ZOMBIE = "zombie"
DELETED = " (deleted)"  # the kernel's mark on a link whose file was unlinked: a binary replaced on disk


@dataclass_lite(frozen=True, slots=True)
class Details:
    """What a holder is doing now, read after the walk from the process the walk saw."""

    status: str  # psutil's status (running, sleeping, disk-sleep, stopped, zombie, ...) or EXITED
    exe: str | None  # the executable; a replaced binary ends in " (deleted)"; None: unreadable or a zombie
    cwd: str | None
    children: tuple[int, ...]  # pids of its child processes (workers of a pre-forking server)

    @property
    def gone(self) -> bool:
        return self.status in (EXITED, ZOMBIE)


_GONE = Details(EXITED, None, None, ())


def status_of_stat(data: bytes) -> str:
    """psutil's status word for the state letter of a /proc/PID/stat ("?" for a letter it does not know)."""
    close_paren = data.rfind(b")")  # comm may itself contain ')'
    return STATUS_OF_STATE.get(data[close_paren + 2 : close_paren + 3].decode("ascii", "replace"), "?")


def _link(path: str, dir_fd: int) -> str | None:
    """``exe`` or ``cwd`` under ``dir_fd``: None where unreadable (another user's), or gone (a kernel thread's, a
    zombie's). The kernel's " (deleted)" is kept: nothing the link names is looked up (a FUSE mount could hang
    that), and it tells a binary replaced on disk from the running one."""
    try:
        text = os.readlink(path, dir_fd=dir_fd)
    except OSError:
        return None
    return text.split("\0")[0] or None


class _Refused(Exception):
    """A holder's stat refused even to root (a security module): no details, not an error."""


def _stat_of(path: str, dir_fd: int) -> bytes | None:
    """The stat file under ``dir_fd``; None when its process is gone (reaped, or never there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except PermissionError:
        raise _Refused from None
    except OSError as exc:
        raise_if_out_of_fds(exc, path)
        return None
    try:
        return os.read(fd, 4096) or None  # one read: the kernel makes the whole line at once
    except PermissionError:
        raise _Refused from None
    except OSError:
        return None  # ESRCH: gone between open and read
    finally:
        os.close(fd)


class DetailsReader:
    """Status, exe, cwd and children for one holder at a time, read through an open ``/proc/PID`` of the process
    the walk saw: its start time must be the walk's before the reads, and the directory must still answer after
    them. A pid is reused only once its process is reaped, and an open ``/proc/PID`` never leads to the newcomer:
    when both checks pass, everything read came from the walk's process. Read as psutil reads them (its words
    for the status), without importing it: psutil's import alone took longer than a small host's whole ``who``.

    A leader that ended with SYS_exit (pthread_exit in main) is a zombie while its other threads run on and
    hold its fds: the kernel says "zombie"; the group lives, so the status, exe and cwd are a live thread's.
    Children come from the kernel's per-thread lists (two small reads) and from one pass over every
    process's stat where the kernel has none.
    """

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._children: dict[int, list[int]] | None = None
        self._btime = boot_time(proc_root)

    def details(self, pid: int, started: float | None) -> Details | None:
        """``started``: the start time seen in the walk (``Process.start_time``)."""
        dir_fd = open_process_dir(pid, self.proc_root)
        if dir_fd is None:
            return _GONE
        try:
            stat = _stat_of("stat", dir_fd)
            parsed = _parsed_stat(stat)
            if parsed is None or (started is not None and start_seconds(parsed[2], self._btime) != started):
                return _GONE  # gone, or the pid names another process by now
            status = status_of_stat(stat)  # type: ignore[arg-type]
            links = ""  # of the links: the leader's, or a live thread's when the leader exited
            if status == ZOMBIE:
                status, links = _live_thread(dir_fd, pid) or (status, links)
            if status == ZOMBIE:  # its links are gone: psutil reports neither
                exe = cwd = None
            else:
                exe, cwd = _link(f"{links}exe", dir_fd), _link(f"{links}cwd", dir_fd)
            children = tuple(self._children_of(pid))
            if _stat_of("stat", dir_fd) is None:
                return _GONE  # reaped while we read (and its pid maybe reused): nothing read is kept
        except _Refused:
            return None
        finally:
            os.close(dir_fd)
        return Details(status, exe, cwd, children)

    def _children_of(self, pid: int) -> list[int]:
        own = _task_children(self.proc_root, pid)
        if own is not None:
            return own
        if self._children is None:
            # one pass for every holder, where the kernel keeps no children lists (CONFIG_PROC_CHILDREN off)
            children: dict[int, list[int]] = {}
            try:
                entries = os.listdir(self.proc_root)
            except OSError:
                entries = []
            for name in entries:
                if name.isdigit():
                    stat = read_name_and_parent(int(name), self.proc_root)
                    if stat is not None:
                        children.setdefault(stat[1], []).append(int(name))
            self._children = children
        return sorted(self._children.get(pid, ()))


def _live_thread(dir_fd: int, pid: int) -> tuple[str, str] | None:
    """(status, "task/TID/") of the first thread of a zombie leader's group that is not a zombie itself, or
    None. The thread is trusted only while it is still listed in the group."""
    try:
        task_fd = os.open("task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        tids = sorted(int(name) for name in os.listdir(task_fd) if name.isdigit() and name != str(pid))
    except OSError:
        return None
    finally:
        os.close(task_fd)
    for tid in tids:
        stat = _stat_of(f"task/{tid}/stat", dir_fd)
        if stat is None:
            continue
        status = status_of_stat(stat)
        if status not in (ZOMBIE, "dead") and _listed(f"task/{tid}", dir_fd):
            return status, f"task/{tid}/"
    return None


def _listed(path: str, dir_fd: int) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _task_children(proc_root: str, pid: int) -> list[int] | None:
    """The children the kernel lists for each thread (/proc/PID/task/TID/children): a few small reads where
    a pass over every process would be needed; None where the kernel has no such file."""
    try:
        tasks = os.listdir(f"{proc_root}/{pid}/task")
    except OSError:
        return None
    children: set[int] = set()
    for tid in tasks:
        data = _read_bytes(f"{proc_root}/{pid}/task/{tid}/children")
        if data is None:
            return None
        children.update(int(field) for field in data.split() if field.isdigit())
    return sorted(children)
