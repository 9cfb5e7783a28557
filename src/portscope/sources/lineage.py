"""Where a process comes from: its parent chain, age, and the systemd unit or container it runs in.

Everything is read straight from ``<proc_root>/<pid>/{stat,cgroup}`` (a few small reads per process,
no walk of /proc), with ``proc_root`` a parameter so tests can feed recorded trees. Processes may exit
while we read: a vanished process ends its chain early instead of failing.

The chain stops at the service manager: pid 1, a process without a parent in this pid namespace
(ppid 0), or a known subreaper (a user systemd, a container shim). The kernel does not expose the
PR_SET_CHILD_SUBREAPER flag in /proc, so subreapers are recognised by name.

A holder's own facts are anchored to the process the fd walk saw: its stat and cgroup are read
through an open ``/proc/PID`` directory and its start time must match the one seen in the walk.
:class:`DetailsReader` adds the executable, working directory, status and children through psutil,
bracketed by psutil's start time of the process.
"""

from __future__ import annotations

import os

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.sources.containers import ContainerInfo, container_of_cgroup, unescape_unit
from portscope.sources.linux import CLOCK_TICKS
from portscope.sources.procinfo import _read_bytes, boot_time, open_process_dir, parse_stat, start_seconds

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
# Details through psutil


EXITED = "exited"  # Details.status of a holder that went away while we read it


@dataclass_lite(frozen=True, slots=True)
class Details:
    """What a holder is doing now, read after the walk from the process the walk saw."""

    status: str  # psutil's status (running, sleeping, disk-sleep, stopped, zombie, ...) or EXITED
    exe: str | None  # the executable; a replaced binary ends in " (deleted)"; None: unreadable or a zombie
    cwd: str | None
    children: tuple[int, ...]  # pids of its child processes (workers of a pre-forking server)

    @property
    def gone(self) -> bool:
        return self.status in (EXITED, "zombie")


_GONE = Details(EXITED, None, None, ())


def load_details_reader(_sockets: object = None) -> None:
    """Import psutil ahead of :class:`DetailsReader`: ``who`` has ``snapshot`` run this while its forked
    walker reads /proc (``snapshot(meanwhile=...)``, which passes the sockets), where the import would
    otherwise follow the walk."""
    import psutil  # noqa: F401


def _link(read) -> str | None:
    """psutil's ``exe()`` or ``cwd()``: ``None`` where it is unreadable (another user's, a kernel thread's)."""
    import psutil

    try:
        return read() or None
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None


class DetailsReader:
    """Status, exe, cwd and children for one holder at a time, read by psutil from the process the walk saw:
    psutil's start time must be the walk's before the reads, and psutil's own identity check
    (``is_running()``: the pid's start time again) must pass after them. A pid is reused only once its process
    is reaped, and the newcomer's start time differs: when both checks pass, everything read came from it.

    A leader that ended with SYS_exit (pthread_exit in main) is a zombie while its other threads run on and
    hold its fds: psutil says "zombie"; the group lives, so the status, exe and cwd are a live thread's.
    Children come from the kernel's per-thread lists (two small reads) and from one psutil pass over every
    process where the kernel has none. psutil reads ``/proc``: under another ``proc_root`` nothing is read.
    """

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._children: dict[int, list[int]] | None = None

    def details(self, pid: int, started: float | None) -> Details | None:
        """``started``: the start time seen in the walk (``Process.start_time``)."""
        if self.proc_root != "/proc":
            return None
        import psutil

        try:
            leader = psutil.Process(pid)
            with leader.oneshot():
                if started is not None and leader.create_time() != started:
                    return _GONE  # the pid names another process by now
                status = leader.status()
                reader = leader  # of the links: the leader, or a live thread when the leader exited
                if status == psutil.STATUS_ZOMBIE:
                    status, reader = _live_thread(leader, pid) or (status, leader)
                if status == psutil.STATUS_ZOMBIE:  # its links are gone: psutil reports neither
                    exe = cwd = None
                else:
                    exe, cwd = _link(reader.exe), _link(reader.cwd)
            children = tuple(self._children_of(pid))
            if not leader.is_running():
                return _GONE  # reaped while we read (and its pid maybe reused): nothing read is kept
        except psutil.NoSuchProcess:
            return _GONE
        except psutil.AccessDenied:  # its stat refused (a security module): nothing to show, not an error
            return None
        return Details(status, exe, cwd, children)

    def _children_of(self, pid: int) -> list[int]:
        own = _task_children(self.proc_root, pid)
        if own is not None:
            return own
        if self._children is None:
            import psutil

            # one pass for every holder: psutil's Process.children() reads all of /proc on each call
            children: dict[int, list[int]] = {}
            for process in psutil.process_iter(["ppid"]):
                ppid = process.info["ppid"]
                if ppid is not None:
                    children.setdefault(ppid, []).append(process.pid)
            self._children = children
        return sorted(self._children.get(pid, ()))


def _live_thread(leader, pid: int):
    """(status, psutil.Process of the thread) for the first thread of a zombie leader's group that is not a
    zombie itself, or None. The thread is trusted only while it is still listed in the group."""
    import psutil

    try:
        tids = sorted(thread.id for thread in leader.threads() if thread.id != pid)
    except psutil.Error:
        return None
    for tid in tids:
        try:
            thread = psutil.Process(tid)
            status = thread.status()
        except psutil.Error:
            continue
        if status not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) and os.path.exists(f"/proc/{pid}/task/{tid}"):
            return status, thread
    return None


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
