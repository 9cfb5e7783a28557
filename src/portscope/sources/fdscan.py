"""One pass over /proc/*/fd: socket inode -> every (pid, fd) that holds it.

Processes come and go while we walk; a vanished process is counted, not an error. As non-root the
fd tables of other users' (and non-dumpable) processes are unreadable: those are counted per uid,
so the caller can say whose sockets' owners are hidden.
"""

from __future__ import annotations

import marshal
import mmap
import os
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from portscope.sources.linux import end_child, write_all
from portscope.sources.procinfo import raise_if_out_of_fds

_SOCKET_PREFIX = "socket:["
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass
class FdScan:
    """What a walk saw of the processes: how many were read, had vanished, or refused (per uid)."""

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


def open_files(proc_root: str = "/proc") -> int | None:
    """How many files are open on the host (the first figure of ``fs/file-nr``): about the fds a walk reads."""
    try:
        with open(f"{proc_root}/sys/fs/file-nr", "rb") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


Found = list[tuple[int, list[int], list[int]]]  # per process: (pid, socket inodes, their fds)


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
        walk = BackgroundWalk.start(proc_root, listed=listed, wanted=wanted)
        if walk is not None:
            try:
                found = walk.found(wanted, counts)
            finally:
                walk.close()
            if found is not None:
                return found
    found, refused = _read_links(listed, wanted, proc_root)
    _count_refused(refused, proc_root, counts)
    return found


def _count_refused(refused: set[str], proc_root: str, counts: FdScan) -> None:
    for pid_name in refused:
        counts.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1


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
            counts.denied_by_uid[_owner_uid(proc_root, pid_name)] += 1
            continue
        except OSError as exc:
            raise_if_out_of_fds(exc, proc_root)  # our limit, not a vanished process
            counts.vanished += 1
            continue
        counts.scanned += 1
        if names:
            listed.append((pid_name, names))
    return listed


def _read_links(
    listed: list[tuple[str, list[str]]], wanted: dict[int, int] | None, proc_root: str
) -> tuple[Found, set[str]]:
    """The socket links among ``listed`` fds, and the processes that refused some readlink()."""
    readlink = os.readlink
    prefix = _SOCKET_PREFIX
    wanted_get = wanted.get if wanted is not None else None
    by_link = _by_link(wanted)
    found: Found = []
    refused: set[str] = set()
    for pid_name, fd_names in listed:
        try:
            dir_fd = os.open(f"{proc_root}/{pid_name}/fd", _DIR_FLAGS)
        except OSError as exc:
            raise_if_out_of_fds(exc, proc_root)
            continue  # gone since it was listed: its fds are closed
        inodes: list[int] = []
        fds: list[int] = []
        try:
            try:
                targets = [readlink(fd_name, dir_fd=dir_fd) for fd_name in fd_names]
            except OSError:  # an fd closed meanwhile, or a refusal: redo this process one fd at a time
                targets, refused_here = _read_links_one_by_one(fd_names, dir_fd)
                if refused_here:
                    refused.add(pid_name)
            if by_link is not None:  # a few sockets wanted (who PORT): most processes hold none of them
                _match_links(by_link, fd_names, targets, inodes, fds)
                fd_names = targets = []  # (nothing left for the loop below)
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
        finally:
            os.close(dir_fd)
        if inodes:
            found.append((int(pid_name), inodes, fds))
    return found, refused


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

    def __init__(self, pid: int, read_end: int, board: _Board, proc_root: str) -> None:
        self._pid = pid
        self._read_end = read_end
        self._board = board
        self._proc_root = proc_root

    @classmethod
    def start(
        cls,
        proc_root: str = "/proc",
        *,
        listed: list[tuple[str, list[str]]] | None = None,
        wanted: dict[int, int] | None = None,
    ) -> BackgroundWalk | None:
        """None when the child could not be started: then walk in-line.

        Forks: call it only where the parallelism policy allows (:mod:`portscope.engine.parallel`).
        ``listed``: the fds, already listed (and counted) here; ``wanted``: the inodes to keep, if known.
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
            _child_walks(proc_root, read_end, write_end, board, units, wanted)
        os.close(write_end)
        return cls(pid, read_end, board, proc_root)

    def found(self, wanted: dict[int, int] | None, counts: FdScan) -> Found | None:
        """What :func:`walk_socket_fds` gives; None if the child failed."""
        proc_root = self._proc_root
        mine: dict[int, tuple[Found, set[str]]] = {}
        board = self._board
        if board.published():
            for index in iter(board.take_back, None):
                try:
                    unit = board.unit(index)
                except (OSError, ValueError, EOFError, TypeError):
                    return None  # claimed, so the child will not read it: the caller walks in-line
                mine[index] = _read_links([unit], wanted, proc_root)
        data = b""
        try:
            with os.fdopen(self._read_end, "rb") as pipe:
                self._read_end = -1
                data = pipe.read()
        except OSError:
            return None
        finally:
            _, status = os.waitpid(self._pid, 0)
            self._pid = 0
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return None
        try:
            theirs, scanned, vanished, denied = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return None
        counts.scanned += scanned
        counts.vanished += vanished
        counts.denied_by_uid.update(dict(denied))
        found: Found = []
        refused: set[str] = set()
        for index in sorted(mine.keys() | theirs.keys()):  # unit order is /proc order
            if index in mine:
                part, part_refused = mine[index]
            else:
                part, part_refused = _kept(theirs[index][0], wanted), theirs[index][1]
            refused.update(part_refused)
            for pid, inodes, fds in part:
                if found and found[-1][0] == pid:  # a process cut into several units
                    found[-1][1].extend(inodes)
                    found[-1][2].extend(fds)
                else:
                    found.append((pid, inodes, fds))
        _count_refused(refused, proc_root, counts)
        return found

    def close(self) -> None:
        if self._read_end >= 0:
            os.close(self._read_end)
            self._read_end = -1
        if self._pid:
            end_child(self._pid)
            self._pid = 0
        self._board.close()


def _kept(found: Found, wanted: dict[int, int] | None) -> Found:
    """The wanted sockets of a walk made by the child, as the caller's own int objects."""
    if wanted is None:
        return found
    wanted_get = wanted.get
    kept: Found = []
    for pid, inodes, fds in found:
        mine = [wanted_get(inode) for inode in inodes]
        if any(inode is not None for inode in mine):
            pairs = [(inode, fd) for inode, fd in zip(mine, fds, strict=True) if inode is not None]
            kept.append((pid, [inode for inode, _ in pairs], [fd for _, fd in pairs]))
    return kept


UNIT_FDS = 256  # fds per unit of shared walking: a claim costs about a microsecond, a unit about a millisecond


def _units(listed: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    return [
        (pid_name, names[at : at + UNIT_FDS]) for pid_name, names in listed for at in range(0, len(names), UNIT_FDS)
    ]


class _Board:
    """Shared between the walker and its parent: the units (a memfd) and two claim indexes (a page).

    Page layout, native int64s: units published (0/1), number of units, front (the child's next
    unit), back (the lowest unit the parent claimed). The memfd holds each unit's end offset, then
    the units, each marshalled on its own: the parent reads only the units it claims.
    """

    _LAYOUT = struct.Struct("=qqqq")
    _FRONT = 16
    _BACK = 24
    _INDEX = struct.Struct("=q")

    def __init__(self, page: mmap.mmap, list_fd: int) -> None:
        self._page = page
        self._list_fd = list_fd
        self._ends: list[int] = []

    @classmethod
    def create(cls) -> _Board | None:
        try:
            list_fd = os.memfd_create("portscope-walk", os.MFD_CLOEXEC)
        except (AttributeError, OSError):
            return None
        try:
            page = mmap.mmap(-1, cls._LAYOUT.size)  # anonymous and shared: it survives fork() as one page
        except OSError:
            os.close(list_fd)
            return None
        return cls(page, list_fd)

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

    def close(self) -> None:
        self._page.close()
        if self._list_fd >= 0:
            os.close(self._list_fd)
            self._list_fd = -1


def _child_walks(
    proc_root: str,
    read_end: int,
    write_end: int,
    board: _Board,
    units: list[tuple[str, list[str]]] | None,
    wanted: dict[int, int] | None,
) -> None:  # pragma: no cover - runs in the forked child
    status = 1
    try:
        os.close(read_end)
        counts = FdScan()
        if units is None:
            # not this child itself: it holds copies of every fd of the caller
            units = _units(_list_fds(proc_root, counts, str(os.getpid())))
            board.publish(units)
        done = {index: _read_links([units[index]], wanted, proc_root) for index in iter(board.take_front, None)}
        theirs = {index: (found, sorted(refused)) for index, (found, refused) in done.items()}
        payload = (theirs, counts.scanned, counts.vanished, list(counts.denied_by_uid.items()))
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
