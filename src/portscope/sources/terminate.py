"""Ending things: processes through pidfds, and one TCP flow through netlink SOCK_DESTROY.

A pidfd names one process for as long as it is open: a signal sent through it (``pidfd_send_signal``)
reaches that process or nobody, never a newcomer that was given its pid after it exited. What is read
about the process is anchored to the pidfd: psutil (its start time and state) and ``/proc/PID`` (its fds)
read it after the pidfd is opened, and what they read is trusted only if the pidfd's process has still
not exited once the reads are done (until it exits and is reaped, the pid cannot name anyone else).
A pidfd turns readable when its process exits, so waiting for many processes is one ``poll()``.

``SOCK_DESTROY`` (what ``ss -K`` sends) asks the kernel to abort one socket, found by its exact 4-tuple
and cookie; it needs CAP_NET_ADMIN and a kernel built with CONFIG_INET_DIAG_DESTROY (EOPNOTSUPP otherwise).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Iterable, Mapping, Sequence

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Family, Socket
from portscope.sources.procinfo import (
    _read_bytes,
    open_process_dir,
    parse_stat,
    raise_if_out_of_fds,
    still_holds,
)

PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread
# psutil's words for stopped (SIGSTOP, job control) or traced: a signal waits for SIGCONT
STOPPED_STATUSES = frozenset({"stopped", "tracing-stop"})


class Identity(str, enum.Enum):
    """What a pid names now, compared with the process a listing saw."""

    SAME = "same"  # the same process, still holding one of its sockets
    GONE = "gone"  # it exited
    REPLACED = "replaced"  # the pid names another process now (another start time)
    RELEASED = "released"  # the same process, holding none of those sockets any more


@dataclass_lite(frozen=True, slots=True)
class Checked:
    identity: Identity
    stopped: bool = False  # it will act on a signal only once continued
    kernel_thread: bool = False


class Sent(str, enum.Enum):
    SENT = "sent"
    GONE = "gone"  # ESRCH: it had exited
    DENIED = "denied"  # EPERM: not ours to signal


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or ``None`` when no such process exists."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except OSError as exc:
        raise_if_out_of_fds(exc, "pidfd_open")
        if exc.errno in (errno.ENOSYS, errno.EINVAL):
            raise SourceError("pidfd_open", "this kernel has no pidfds (Linux 5.3 or later is needed)") from None
        raise


def has_exited(pidfd: int) -> bool:
    """Has the pidfd's process exited (a zombie counts: its files are closed)? Never blocks."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def is_kernel_thread(stat: bytes) -> bool:
    """The PF_KTHREAD flag of /proc/PID/stat (psutil has no process flags)."""
    parse_stat(stat)  # a malformed line raises SourceError
    rest = stat[stat.rfind(b")") + 2 :].split()
    return len(rest) > 6 and rest[6].isdigit() and bool(int(rest[6]) & PF_KTHREAD)


def check_identity(
    pidfd: int,
    pid: int,
    started: float | None,
    sockets: Sequence[tuple[int, int]],
    proc_root: str = "/proc",
) -> Checked:
    """Is the pidfd's process the one a listing saw (start time ``started``, holding one of ``sockets``:
    (inode, fd) pairs) and does it still hold one of them? Its start time and state are psutil's, its fds are
    read through ``/proc/PID`` opened after the pidfd; all of it is trusted only when the pidfd's process has
    not exited by the end of the reads."""
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if started is not None and process.create_time() != started:
                return Checked(Identity.REPLACED)
            status = process.status()
    except psutil.NoSuchProcess:
        return Checked(Identity.GONE)
    dir_fd = open_process_dir(pid, proc_root)
    if dir_fd is None:
        return Checked(Identity.GONE)
    try:
        data = _read_bytes("stat", dir_fd)
        try:
            kernel_thread = data is not None and is_kernel_thread(data)
        except SourceError:
            return Checked(Identity.GONE)
        inodes = [inode for inode, _ in sockets]
        fds = [fd for _, fd in sockets]
        holds = still_holds(dir_fd, inodes, fds)
    finally:
        os.close(dir_fd)
    if has_exited(pidfd):
        return Checked(Identity.GONE)  # and its pid may name another process by now: nothing read counts
    if not holds:
        return Checked(Identity.RELEASED)
    return Checked(Identity.SAME, stopped=status in STOPPED_STATUSES, kernel_thread=kernel_thread)


def send_signal(pidfd: int, signum: int) -> Sent:
    """``pidfd_send_signal``; signal 0 only checks that the signal would be allowed."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return Sent.GONE
    except PermissionError:
        return Sent.DENIED
    return Sent.SENT


def wait_for_exits(pidfds: Mapping[int, int], timeout: float, clock=time.monotonic) -> set[int]:
    """Wait up to ``timeout`` seconds for the processes behind ``pidfds`` (key -> pidfd) to exit; returns
    the keys of those that did. Returns as soon as all have."""
    by_fd = {fd: key for key, fd in pidfds.items()}
    exited: set[int] = set()
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = clock() + max(0.0, timeout)
    while len(exited) < len(by_fd):
        left = deadline - clock()
        wait_ms = 0 if left <= 0 else min(int(left * 1000) + 1, 1000)  # a second at most: the deadline rules
        for fd, _ in poller.poll(wait_ms):
            exited.add(by_fd[fd])
            poller.unregister(fd)
        if clock() >= deadline:
            break
    return exited


def caller_lineage(proc_root: str = "/proc") -> tuple[int, ...]:
    """This process and its ancestors, nearest first, up to the top of its pid namespace."""
    chain = [os.getpid()]
    current = os.getppid()
    while current > 0 and current not in chain and len(chain) < 4096:
        chain.append(current)
        data = _read_bytes(f"{proc_root}/{current}/stat")
        try:
            current = parse_stat(data)[1] if data else 0
        except SourceError:
            break
    return tuple(chain)


def close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ---------------------------------------------------------------------------------------------------
# SOCK_DESTROY

NETLINK_SOCK_DIAG = 4
SOCK_DESTROY = 21
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFFFFFFFFFF
ALL_STATES = 0xFFFFFFFF
NLMSGHDR = struct.Struct("=IHHII")
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI")
SOCKID_PORTS = struct.Struct("!HH")
SOCKID_TAIL = struct.Struct("=IQ")  # idiag_if, idiag_cookie[2] read as one u64 in host order, as dumps give it
_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}


def _raw_address(family: Family, text: str) -> bytes:
    return socket.inet_pton(_AF[family], text).ljust(16, b"\0")


def destroy_request(sock: Socket, seq: int = 1) -> bytes:
    """The SOCK_DESTROY message for one TCP socket (exact 4-tuple, device and cookie when known)."""
    if sock.remote_address is None or sock.remote_port is None:
        raise ValueError("SOCK_DESTROY needs a connected socket")
    sockid = (
        SOCKID_PORTS.pack(sock.local_port, sock.remote_port)
        + _raw_address(sock.family, sock.local_address)
        + _raw_address(sock.family, sock.remote_address)
        + SOCKID_TAIL.pack(sock.ifindex or 0, INET_DIAG_NOCOOKIE if sock.cookie is None else sock.cookie)
    )
    body = INET_DIAG_REQ_V2.pack(_AF[sock.family], socket.IPPROTO_TCP, 0, ALL_STATES) + sockid
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse_ack(data: bytes) -> int:
    """The errno of a netlink acknowledgement (0: done)."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            break
        if msg_type == NLMSG_ERROR and offset + NLMSGHDR.size + 4 <= len(data):
            return -struct.unpack_from("=i", data, offset + NLMSGHDR.size)[0]
        offset += (length + 3) & ~3
    raise SourceError("netlink SOCK_DESTROY", "no acknowledgement in the answer")


def destroy_socket(sock: Socket) -> int:
    """Abort one TCP socket of the calling thread's network namespace; the errno (0: destroyed).

    EOPNOTSUPP: the kernel cannot (CONFIG_INET_DIAG_DESTROY off); EPERM: CAP_NET_ADMIN is missing;
    ENOENT: no such socket (any more).
    """
    try:
        channel = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise SourceError("netlink sock_diag", f"cannot open a socket: {exc.strerror}") from None
    with channel:
        channel.settimeout(5.0)
        try:
            channel.send(destroy_request(sock))
            return parse_ack(channel.recv(65536))
        except TimeoutError:
            raise SourceError("netlink SOCK_DESTROY", "no answer from the kernel") from None
        except OSError as exc:
            return exc.errno or errno.EIO
