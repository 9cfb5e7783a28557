"""One pass over /proc/*/fd: socket inode -> every (pid, fd) that holds it.

Processes come and go while we walk; a vanished process is counted, not an error. As non-root the
fd tables of other users' (and non-dumpable) processes are unreadable: those are counted per uid
(and their pids kept), so the caller can say whose sockets' owners are hidden and which processes
refused.

/proc/PID/fd is the thread-group leader's fd table. A thread that called unshare(CLONE_FILES) has
its own table, seen only under /proc/PID/task/TID/fd, and a leader that exited (SYS_exit in the main
thread, as pthread_exit does) leaves an empty /proc/PID/fd while its threads keep their fds. Reading
every task of every process would double the walk, so :func:`walk_thread_tables` is a second pass
for the sockets the first one did not place: it lists each process's tasks and compares their fd
tables with kcmp(KCMP_FILES), one syscall per thread, and reads only the tables that differ.
"""

from __future__ import annotations

import errno
import marshal
import mmap
import os
import struct
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import field

from portscope.model.dataclass_lite import dataclass_lite
from portscope.sources.linux import end_child, write_all
from portscope.sources.procinfo import raise_if_out_of_fds

_SOCKET_PREFIX = "socket:["
_NETNS_PREFIX = "net:["
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


NetnsLink = tuple[int, int, str]  # (pid, fd, link) of an fd that may be open on a network namespace


@dataclass_lite
class FdScan:
    """What a walk saw of the processes: how many were read, had vanished, or refused (per uid).

    ``netns_links``, when given a list, also gets the fds the walk saw open on a network namespace
    (``net:[INODE]``, or ``/`` for one opened through a mount removed since: the caller stats those), so
    ``--netns all`` finds the namespaces kept alive only by an fd in the same pass.
    """

    scanned: int = 0
    vanished: int = 0
    denied_by_uid: Counter[int] = field(default_factory=Counter)
    netns_links: list[NetnsLink] | None = None
    denied_processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, uid) of each process that refused
    empty_pids: list[int] = field(default_factory=list)  # readable, with no fd at all: maybe an exited leader

    @property
    def denied(self) -> int:
        return sum(self.denied_by_uid.values())

    def deny(self, pid: int, uid: int) -> None:
        self.denied_by_uid[uid] += 1
        self.denied_processes.append((pid, uid))


def _owner_uid(proc_root: str, pid_name: str) -> int:
    try:
        return os.stat(f"{proc_root}/{pid_name}").st_uid
    except OSError:
        return -1


def open_files(proc_root: str = "/proc") -> int | None:
    """How many files are open on the host (the first figure of ``fs/file-nr``): about the fds a walk reads."""
    try:
        with open(f"{proc_root}/sys/fs/file-nr", "rb") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


Found = list[tuple[int, list[int], Sequence[int]]]  # per process: (pid, socket inodes, their fds: a list or array("i"))


def walk_socket_fds(
    wanted: dict[int, int] | None,
    proc_root: str,
    counts: FdScan,
    *,
    split: Callable[[int], bool] | None = None,
) -> Found:
    """Per readable process, in /proc order: ``(pid, inodes, fds)``, the wanted sockets it holds and
    through which fds.

    ``wanted`` maps each inode to itself, so the inodes given back are the caller's own int objects
    (one object per socket, not one more per holder). ``counts`` gets the scanned, vanished and
    denied processes.

    The readlink() per fd is the cost of the whole join (a few µs each, in the kernel). The fds are
    listed first; ``split`` then says, given their number, whether their links are read by two
    processes at once (this one and a forked child, sharing the units of a :class:`BackgroundWalk`):
    two CPUs, half the time. It is the caller's policy (:meth:`Parallelism.split_walk
    <portscope.engine.parallel.Parallelism.split_walk>`); by default this process walks alone.
    """
    listed = _list_fds(proc_root, counts)
    if split is not None and split(sum(len(names) for _, names in listed)):
        walk = BackgroundWalk.start(proc_root, listed=listed, wanted=wanted, namespaces=counts.netns_links is not None)
        if walk is not None:
            try:
                found = walk.found(wanted, counts)
            finally:
                walk.close()
            if found is not None:
                return found
    found, refused = _read_links(listed, wanted, proc_root, netns_links=counts.netns_links)
    _count_refused(refused, proc_root, counts)
    return found


def _count_refused(refused: set[str], proc_root: str, counts: FdScan) -> None:
    for pid_name in refused:
        counts.deny(int(pid_name), _owner_uid(proc_root, pid_name))


def _list_fds(proc_root: str, counts: FdScan, skip: str | None = None) -> list[tuple[str, list[str]]]:
    """Every process's fd names, counting the processes that vanished or could not be read."""
    listed = []
    try:
        entries = os.listdir(proc_root)
    except OSError as exc:
        raise_if_out_of_fds(exc, proc_root)
        return listed
    for pid_name in entries:
        if not pid_name.isdigit() or pid_name == skip:
            continue
        try:
            names = os.listdir(f"{proc_root}/{pid_name}/fd")
        except (FileNotFoundError, ProcessLookupError):
            counts.vanished += 1
            continue
        except PermissionError:
            counts.deny(int(pid_name), _owner_uid(proc_root, pid_name))
            continue
        except OSError as exc:
            raise_if_out_of_fds(exc, proc_root)  # our limit, not a vanished process
            counts.vanished += 1
            continue
        counts.scanned += 1
        if names:
            listed.append((pid_name, names))
        else:
            counts.empty_pids.append(int(pid_name))
    return listed


def _read_links(
    listed: list[tuple[str, list[str]]],
    wanted: dict[int, int] | None,
    proc_root: str,
    *,
    netns_links: list[NetnsLink] | None = None,
) -> tuple[Found, set[str]]:
    """The socket links among ``listed`` fds, and the processes that refused some readlink();
    ``netns_links`` (a list) also gets those that may be open on a network namespace."""
    wanted_get = wanted.get if wanted is not None else None
    by_link = _by_link(wanted)
    found: Found = []
    refused: set[str] = set()
    for pid_name, fd_names in listed:
        result = _socket_links(
            f"{proc_root}/{pid_name}/fd",
            fd_names,
            wanted_get,
            proc_root,
            netns_links=netns_links,
            pid=int(pid_name),
            by_link=by_link,
        )
        if result is None:
            continue  # gone since it was listed: its fds are closed
        inodes, fds, refused_here = result
        if refused_here:
            refused.add(pid_name)
        if inodes:
            found.append((int(pid_name), inodes, fds))
    return found, refused


def _socket_links(
    fd_dir: str,
    fd_names: list[str],
    wanted_get: Callable[[int], int | None] | None,
    proc_root: str,
    *,
    netns_links: list[NetnsLink] | None = None,
    pid: int = 0,
    by_link: dict[str, int] | None = None,
) -> tuple[list[int], list[int], bool] | None:
    """(socket inodes, their fds, whether a readlink was refused) of one fd table; None if it is gone.
    ``netns_links`` (a list) also gets the fds open on a network namespace, as ``(pid, fd, link)``;
    ``by_link`` (:func:`_by_link`, a few wanted sockets) matches whole link texts instead."""
    readlink = os.readlink
    prefix = _SOCKET_PREFIX
    try:
        dir_fd = os.open(fd_dir, _DIR_FLAGS)
    except OSError as exc:
        raise_if_out_of_fds(exc, proc_root)
        return None
    inodes: list[int] = []
    fds: list[int] = []
    refused = False
    try:
        try:
            targets = [readlink(fd_name, dir_fd=dir_fd) for fd_name in fd_names]
        except OSError:  # an fd closed meanwhile, or a refusal: redo this table one fd at a time
            targets, refused = _read_links_one_by_one(fd_names, dir_fd)
        if by_link is not None and netns_links is None:  # who PORT: most processes hold none of them
            _match_links(by_link, fd_names, targets, inodes, fds)
            return inodes, fds, refused
        for fd_name, target in zip(fd_names, targets, strict=True):
            if not target.startswith(prefix):
                if netns_links is not None and (target.startswith(_NETNS_PREFIX) or target == "/"):
                    netns_links.append((pid, int(fd_name), target))
                continue
            inode = int(target[8:-1])
            if wanted_get is not None:
                inode = wanted_get(inode)
                if inode is None:
                    continue
            inodes.append(inode)
            fds.append(int(fd_name))
    finally:
        os.close(dir_fd)
    return inodes, fds, refused


FEW_WANTED = 256  # up to this many wanted sockets, links are matched as whole strings


def _by_link(wanted: dict[int, int] | None) -> dict[str, int] | None:
    """For a few wanted sockets, their link texts ("socket:[INODE]") -> the caller's inode objects."""
    if wanted is None or len(wanted) > FEW_WANTED:
        return None
    return {f"{_SOCKET_PREFIX}{inode}]": kept for inode, kept in wanted.items()}


def _match_links(
    by_link: dict[str, int], fd_names: list[str], targets: list[str], inodes: list[int], fds: list[int]
) -> None:
    """The wanted sockets among one process's links: a process holding none of them is passed over by one
    set operation in C, instead of a parse of each link (the general loop in :func:`_read_links`)."""
    if by_link.keys().isdisjoint(targets):
        return
    for fd_name, target in zip(fd_names, targets, strict=True):
        inode = by_link.get(target)
        if inode is not None:
            inodes.append(inode)
            fds.append(int(fd_name))


class BackgroundWalk:
    """The /proc fd walk, run by a forked child while this process decodes the socket dump, and
    shared with this process once it is done decoding.

    The walk (one readlink per fd, mostly kernel time) takes longer than the decoding. The child lists
    every process's fds, publishes that list in shared memory as units of at most :data:`UNIT_FDS`
    fds, and reads units from the front; :meth:`found` reads units from the back until the two meet,
    then merges. Each side claims a unit by moving its own index in a shared page (one writer per
    index); a unit both happen to claim at the meeting point is read twice and kept once. Use
    :meth:`start`, then :meth:`found`, and :meth:`close` in any case.

    :func:`walk_socket_fds` uses the same split for a walk in two processes from the start: it lists
    the fds itself and passes them (and the wanted inodes) to :meth:`start`.
    """

    def __init__(
        self, pid: int, read_end: int, board: _Board, proc_root: str, namespaces: bool = False, child_lists: bool = True
    ) -> None:
        self._pid = pid
        self._read_end = read_end
        self._board = board
        self._proc_root = proc_root
        self._namespaces = namespaces  # the child also reports fds open on network namespaces
        self._child_lists = child_lists  # the child lists the fds (and says when they are published)

    @classmethod
    def start(
        cls,
        proc_root: str = "/proc",
        *,
        listed: list[tuple[str, list[str]]] | None = None,
        wanted: dict[int, int] | None = None,
        namespaces: bool = False,
    ) -> BackgroundWalk | None:
        """None when the child could not be started: then walk in-line.

        Forks: call it only where the parallelism policy allows (:mod:`portscope.engine.parallel`).
        ``listed``: the fds, already listed (and counted) here; ``wanted``: the inodes to keep, if known;
        ``namespaces``: also find the fds open on network namespaces (``FdScan.netns_links``).
        """
        board = _Board.create()
        if board is None:
            return None
        units = None
        try:
            if listed is not None:
                units = _units(listed)
                board.publish(units)
            read_end, write_end = os.pipe()
        except OSError:
            board.close()
            return None
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            board.close()
            return None
        if pid == 0:  # pragma: no cover - runs in the child, which ends with _exit
            _child_walks(proc_root, read_end, write_end, board, units, wanted, namespaces)
        os.close(write_end)
        return cls(pid, read_end, board, proc_root, namespaces, child_lists=units is None)

    def found(self, wanted: dict[int, int] | None, counts: FdScan) -> Found | None:
        """What :func:`walk_socket_fds` gives; None if the child failed. ``counts.netns_links`` is filled
        when the walk was started with ``namespaces``."""
        proc_root = self._proc_root
        mine: dict[int, tuple[Found, set[str]]] = {}
        links: dict[int, list[NetnsLink]] = {}
        data = self._share(wanted, mine, links)
        if data is None:
            end_child(self._pid)
            self._pid = 0
            return None
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return None
        try:
            theirs, scanned, vanished, denied, empty = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return None
        del data
        counts.scanned += scanned
        counts.vanished += vanished
        for pid, uid in denied:
            counts.deny(pid, uid)
        counts.empty_pids.extend(empty)
        found: Found = []
        refused: set[str] = set()
        for index in sorted(mine.keys() | theirs.keys()):  # unit order is /proc order
            if index in mine:
                part, part_refused = mine.pop(index)
            else:
                try:
                    unit_found, part_refused, links[index] = marshal.loads(self._board.read_found(*theirs.pop(index)))
                except (OSError, ValueError, EOFError, TypeError):
                    return None
                # the unit's own int objects are dropped here, unit by unit (memory of a full listing)
                part = kept_sockets(unit_found, wanted)
            if self._namespaces and counts.netns_links is not None:
                counts.netns_links.extend(tuple(link) for link in links.get(index, ()))
            refused.update(part_refused)
            for pid, inodes, fds in part:
                if found and found[-1][0] == pid:  # a process cut into several units
                    found[-1][1].extend(inodes)
                    found[-1][2].extend(fds)
                else:  # fds as C ints until made into holders: an int object each was 32 MB at 1M sockets
                    found.append((pid, inodes, array("i", fds)))
        _count_refused(refused, proc_root, counts)
        return found

    def _share(
        self, wanted: dict[int, int] | None, mine: dict[int, tuple[Found, set[str]]], links: dict[int, list[NetnsLink]]
    ) -> bytes | None:
        """Read units from the back (into ``mine`` and ``links``) until the child's front meets them; then the
        child's report, or None if it failed."""
        board = self._board
        if self._child_lists and wanted is not None and len(wanted) <= FEW_WANTED:
            # the child walks ahead without them: a few sockets let it match whole links and report only those
            board.tell_wanted(wanted)
        try:
            with os.fdopen(self._read_end, "rb") as pipe:
                self._read_end = -1
                # A child that lists the fds itself says when it has published them: wait for that, then share
                # the reading (a parent done early would otherwise wait for the whole walk).
                if self._child_lists and pipe.read(1) != _PUBLISHED:
                    return None  # it failed before publishing
                if board.published():
                    for index in iter(board.take_back, None):
                        try:
                            unit = board.unit(index)
                        except (OSError, ValueError, EOFError, TypeError):
                            return None  # claimed, so the child will not read it: the caller walks in-line
                        # netns_links only when asked: without them a few wanted sockets take the fast match
                        links[index] = []
                        mine[index] = _read_links(
                            [unit], wanted, self._proc_root, netns_links=links[index] if self._namespaces else None
                        )
                return pipe.read()
        except OSError:
            return None

    def close(self) -> None:
        if self._read_end >= 0:
            os.close(self._read_end)
            self._read_end = -1
        if self._pid:
            end_child(self._pid)
            self._pid = 0
        self._board.close()


def kept_sockets(found: Found, wanted: dict[int, int] | None) -> Found:
    """The wanted sockets of a walk made by the child, as the caller's own int objects."""
    if wanted is None:
        return found
    wanted_get = wanted.get
    kept: Found = []
    for pid, inodes, fds in found:
        mine = list(map(wanted_get, inodes))
        if mine and None not in mine:  # every socket of this table wanted (a full listing): no pairs to pick
            kept.append((pid, mine, fds))
        elif any(inode is not None for inode in mine):
            pairs = [(inode, fd) for inode, fd in zip(mine, fds, strict=True) if inode is not None]
            kept.append((pid, [inode for inode, _ in pairs], [fd for _, fd in pairs]))
    return kept


_PUBLISHED = b"P"  # the first byte on the walker's pipe when it listed the fds itself: the units are published

UNIT_FDS = 256  # fds per unit of shared walking: a claim costs about a microsecond, a unit about a millisecond


def _units(listed: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    return [
        (pid_name, names[at : at + UNIT_FDS]) for pid_name, names in listed for at in range(0, len(names), UNIT_FDS)
    ]


class _Board:
    """Shared between the walker and its parent: the units (a memfd), two claim indexes (a page), the
    wanted inodes once the parent knows them (a second memfd), and what the child found in its units (a
    third: the parent reads them one at a time, where a report through the pipe would be held whole).

    Page layout, native int64s: units published (0/1), number of units, front (the child's next
    unit), back (the lowest unit the parent claimed), then the number of wanted inodes plus one (0: not
    told). The list memfd holds each unit's end offset, then the units, each marshalled on its own: the
    parent reads only the units it claims. The wanted memfd holds the inodes as native uint64s. The found
    memfd holds the child's units one after another, each marshalled on its own, at the offsets it reports.
    """

    _LAYOUT = struct.Struct("=qqqq")
    _FRONT = 16
    _BACK = 24
    _WANTED = 32
    _INDEX = struct.Struct("=q")

    def __init__(self, page: mmap.mmap, list_fd: int, wanted_fd: int, found_fd: int) -> None:
        self._page = page
        self._list_fd = list_fd
        self._wanted_fd = wanted_fd
        self._found_fd = found_fd
        self._found_end = 0  # the child: where its next unit goes
        self._ends: list[int] = []

    @classmethod
    def create(cls) -> _Board | None:
        fds: list[int] = []
        try:
            for name in ("portscope-walk", "portscope-wanted", "portscope-found"):
                fds.append(os.memfd_create(name, os.MFD_CLOEXEC))
            page = mmap.mmap(-1, cls._WANTED + 8)  # anonymous and shared: it survives fork() as one page
        except (AttributeError, OSError):
            for fd in fds:
                os.close(fd)
            return None
        return cls(page, *fds)

    def tell_wanted(self, inodes: Collection[int]) -> None:
        """The parent: these are the only inodes to report (the child reads them before its next unit)."""
        try:
            write_all(self._wanted_fd, struct.pack(f"={len(inodes)}Q", *inodes))
        except (OSError, struct.error):
            return  # not told: the child reports every socket, as before
        self._INDEX.pack_into(self._page, self._WANTED, len(inodes) + 1)  # last: after the inodes are written

    def wanted(self) -> dict[int, int] | None:  # pragma: no cover - in the child
        """The child: the inodes the parent told, as :func:`walk_socket_fds` takes them; None until told."""
        told = self._INDEX.unpack_from(self._page, self._WANTED)[0]
        if not told:
            return None
        try:
            inodes = struct.unpack(f"={told - 1}Q", os.pread(self._wanted_fd, 8 * (told - 1), 0))
        except (OSError, struct.error):
            return None
        return {inode: inode for inode in inodes}

    def publish(self, units: list[tuple[str, list[str]]]) -> None:
        blobs = [marshal.dumps(unit) for unit in units]
        header = 8 * len(blobs)
        ends = []
        end = header
        for blob in blobs:
            end += len(blob)
            ends.append(end)
        write_all(self._list_fd, struct.pack(f"={len(ends)}q", *ends) + b"".join(blobs))
        self._LAYOUT.pack_into(self._page, 0, 0, len(units), 0, len(units))
        self._INDEX.pack_into(self._page, 0, 1)  # last: the parent reads nothing before this

    def published(self) -> bool:
        """Whether the units are there; reads their offsets the first time they are."""
        if self._ends:
            return True
        published, count, _, _ = self._LAYOUT.unpack_from(self._page)
        if not published or not count:
            return False
        try:
            self._ends = list(struct.unpack(f"={count}q", os.pread(self._list_fd, 8 * count, 0)))
        except (OSError, struct.error):
            return False
        return True

    def unit(self, index: int) -> tuple[str, list[str]]:
        start = self._ends[index - 1] if index else 8 * len(self._ends)
        return marshal.loads(os.pread(self._list_fd, self._ends[index] - start, start))

    def take_front(self) -> int | None:  # pragma: no cover - in the child
        front = self._INDEX.unpack_from(self._page, self._FRONT)[0]
        if front >= self._INDEX.unpack_from(self._page, self._BACK)[0]:
            return None
        self._INDEX.pack_into(self._page, self._FRONT, front + 1)
        return front

    def take_back(self) -> int | None:
        back = self._INDEX.unpack_from(self._page, self._BACK)[0] - 1
        if back < self._INDEX.unpack_from(self._page, self._FRONT)[0]:
            return None
        self._INDEX.pack_into(self._page, self._BACK, back)
        return back

    def add_found(self, blob: bytes) -> tuple[int, int]:  # pragma: no cover - in the child
        """The child: keep one unit's marshalled result; where it is."""
        write_all(self._found_fd, blob)
        start = self._found_end
        self._found_end += len(blob)
        return start, len(blob)

    def read_found(self, start: int, length: int) -> bytes:
        return os.pread(self._found_fd, length, start)

    def close(self) -> None:
        self._page.close()
        for fd in (self._list_fd, self._wanted_fd, self._found_fd):
            if fd >= 0:
                os.close(fd)
        self._list_fd = self._wanted_fd = self._found_fd = -1


def _child_walks(
    proc_root: str,
    read_end: int,
    write_end: int,
    board: _Board,
    units: list[tuple[str, list[str]]] | None,
    wanted: dict[int, int] | None,
    namespaces: bool = False,
) -> None:  # pragma: no cover - runs in the forked child
    status = 1
    try:
        os.close(read_end)
        counts = FdScan()
        if units is None:
            # not this child itself: it holds copies of every fd of the caller
            units = _units(_list_fds(proc_root, counts, str(os.getpid())))
            board.publish(units)
            write_all(write_end, _PUBLISHED)  # the parent may share the reading from now on
        theirs = {}  # index -> where its result is on the board: the parent reads them one at a time
        for index in iter(board.take_front, None):
            if wanted is None:  # walking ahead of the dump: the parent tells the few sockets it wants when known
                wanted = board.wanted()
            links: list[NetnsLink] | None = [] if namespaces else None
            found, refused = _read_links([units[index]], wanted, proc_root, netns_links=links)
            theirs[index] = board.add_found(marshal.dumps((found, sorted(refused), links or [])))
        payload = (theirs, counts.scanned, counts.vanished, counts.denied_processes, counts.empty_pids)
        write_all(write_end, marshal.dumps(payload))
        status = 0
    finally:
        os._exit(status)  # no atexit handlers, no flushing of buffers inherited from the parent


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


# ---------------------------------------------------------------------------------------------------
# Fd tables other than the leader's

ThreadFound = list[tuple[int, int, list[int], list[int]]]  # per thread table: (pid, tid, socket inodes, their fds)

KCMP_FILES = 2
# kcmp(2) by machine; where unknown the fd names of the tables are compared instead
_KCMP_SYSCALL = {
    "x86_64": 312,
    "aarch64": 272,
    "arm64": 272,
    "riscv64": 272,
    "loongarch64": 272,
    "i386": 349,
    "i686": 349,
    "armv7l": 378,
    "armv6l": 378,
    "ppc64le": 354,
    "ppc64": 354,
    "s390x": 343,
}


class _TableComparer:
    """Whether two tasks share one fd table: kcmp(KCMP_FILES), or None when the kernel cannot say."""

    def __init__(self) -> None:
        import ctypes  # only on this rare path: it costs start-up time

        self._ctypes = ctypes
        self._number = _KCMP_SYSCALL.get(os.uname().machine)
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall if self._number is not None else None

    def same(self, first: int, second: int) -> bool | None:
        if self._syscall is None:
            return None
        result = self._syscall(self._number, first, second, KCMP_FILES, 0, 0)
        if result < 0:
            if self._ctypes.get_errno() == errno.ENOSYS:
                self._syscall = None  # kernel built without kcmp
            return None
        return result == 0


def walk_thread_tables(wanted: dict[int, int], proc_root: str, counts: FdScan) -> ThreadFound:
    """The ``wanted`` sockets held in fd tables other than their thread-group leader's.

    For the sockets the walk of /proc/PID/fd did not place: threads that unshared their fd table
    (unshare(CLONE_FILES)) and groups whose leader exited. Each readable process's tasks are listed; a
    thread whose table is not the leader's (kcmp, or different fd names where kcmp is missing) is read
    once per distinct table. Processes without any fd come first (an exited leader shows none), and the
    pass ends as soon as every wanted socket is placed. Processes that refused the first walk are
    skipped; threads that refuse are counted with them.
    """
    remaining = dict(wanted)
    found: ThreadFound = []
    if not remaining:
        return found
    try:
        entries = os.listdir(proc_root)
    except OSError as exc:
        raise_if_out_of_fds(exc, proc_root)
        return found
    refused = {pid for pid, _ in counts.denied_processes}
    empty = set(counts.empty_pids)
    pids = sorted((int(name) for name in entries if name.isdigit()), key=lambda pid: (pid not in empty, pid))
    comparer: _TableComparer | None = None
    for pid in pids:
        if not remaining:
            break
        if pid in refused:
            continue
        try:
            tids = [int(name) for name in os.listdir(f"{proc_root}/{pid}/task") if name.isdigit() and name != str(pid)]
        except OSError as exc:
            raise_if_out_of_fds(exc, proc_root)
            continue  # gone, or not ours to read
        if not tids:
            continue
        if comparer is None:
            comparer = _TableComparer()
        leader_names: list[str] | None = None
        tables: list[int] = []  # one thread per private table already read in this process
        for tid in sorted(tids):
            same = comparer.same(pid, tid)
            if same is None:  # no kcmp: a different set of fd numbers gives a private table away
                if leader_names is None:
                    leader_names = _fd_names(f"{proc_root}/{pid}/fd")
                same = _fd_names(f"{proc_root}/{pid}/task/{tid}/fd") == leader_names
            if same or any(comparer.same(other, tid) for other in tables):
                continue
            tables.append(tid)
            fd_dir = f"{proc_root}/{pid}/task/{tid}/fd"
            try:
                names = os.listdir(fd_dir)
            except PermissionError:
                counts.deny(pid, _owner_uid(proc_root, str(pid)))
                break
            except OSError as exc:
                raise_if_out_of_fds(exc, proc_root)
                continue  # the thread ended
            result = _socket_links(fd_dir, names, remaining.get, proc_root)
            if result is None:
                continue
            inodes, fds, refused_here = result
            if refused_here:
                counts.deny(pid, _owner_uid(proc_root, str(pid)))
            if inodes:
                found.append((pid, tid, inodes, fds))
                for inode in inodes:
                    remaining.pop(inode, None)
    return found


def _fd_names(fd_dir: str) -> list[str] | None:
    try:
        return sorted(os.listdir(fd_dir))
    except OSError:
        return None
