"""Typed records shared by every layer: sockets, processes, and what a snapshot could not see.

A field a source cannot know is ``None``, never a guess: ``/proc/net/tcp`` has no bound device and
no IPV6_V6ONLY flag, and the kernel reports uid 0 and inode 0 as placeholders for TIME-WAIT and
SYN-RECV sockets, so those are ``None`` too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import field

from portscope.model.dataclass_lite import dataclass_lite

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from portscope.model.details import SocketDetails


class Proto(str, enum.Enum):
    TCP = "tcp"
    UDP = "udp"


class Family(str, enum.Enum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class State(str, enum.Enum):
    """Socket states as portscope names them (the values are the JSON interface)."""

    LISTEN = "listen"
    ESTABLISHED = "established"
    SYN_SENT = "syn-sent"
    SYN_RECV = "syn-recv"
    FIN_WAIT_1 = "fin-wait-1"
    FIN_WAIT_2 = "fin-wait-2"
    TIME_WAIT = "time-wait"
    CLOSE_WAIT = "close-wait"
    LAST_ACK = "last-ack"
    CLOSING = "closing"
    CLOSE = "close"
    BOUND = "bound"  # TCP: bound but neither listening nor connected (kernel's BOUND_INACTIVE)
    UNCONN = "unconn"  # UDP: bound, no peer


class Backend(str, enum.Enum):
    AUTO = "auto"
    NETLINK = "netlink"
    PROC = "proc"


# Kernel TCP state numbers (include/net/tcp_states.h).
TCP_STATE_BY_NUMBER: dict[int, State] = {
    1: State.ESTABLISHED,
    2: State.SYN_SENT,
    3: State.SYN_RECV,
    4: State.FIN_WAIT_1,
    5: State.FIN_WAIT_2,
    6: State.TIME_WAIT,
    7: State.BOUND,  # a TCP socket in CLOSE with a port is bound-only (dumped via BOUND_INACTIVE)
    8: State.CLOSE_WAIT,
    9: State.LAST_ACK,
    10: State.LISTEN,
    11: State.CLOSING,
    12: State.SYN_RECV,  # NEW_SYN_RECV: request sockets, shown as SYN-RECV like ss does
}
UDP_STATE_BY_NUMBER: dict[int, State] = {1: State.ESTABLISHED, 7: State.UNCONN}

UDP_STATES: frozenset[State] = frozenset(UDP_STATE_BY_NUMBER.values())

# UNIX sockets reuse the TCP state numbers (af_unix); ss names TCP_CLOSE "UNCONN" for them, as for UDP.
UNIX_STATE_BY_NUMBER: dict[int, State] = {
    1: State.ESTABLISHED,
    2: State.SYN_SENT,
    3: State.SYN_RECV,
    7: State.UNCONN,
    10: State.LISTEN,
}
UNIX_STATES: frozenset[State] = frozenset(UNIX_STATE_BY_NUMBER.values())


class UnixType(str, enum.Enum):
    """The kind of a UNIX socket (``SOCK_STREAM``, ``SOCK_DGRAM``, ``SOCK_SEQPACKET``)."""

    STREAM = "stream"
    DGRAM = "dgram"
    SEQPACKET = "seqpacket"


UNIX_TYPE_BY_NUMBER: dict[int, UnixType] = {1: UnixType.STREAM, 2: UnixType.DGRAM, 5: UnixType.SEQPACKET}

# Timer codes shared by inet_diag's idiag_timer and the "tr" column of /proc/net/tcp.
TIMER_BY_CODE: dict[int, str | None] = {0: None, 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}


@dataclass_lite(frozen=True, slots=True)
class Socket:
    proto: Proto
    family: Family
    state: State
    local_address: str
    local_port: int
    remote_address: str | None  # None when there is no peer
    remote_port: int | None
    recv_q: int | None
    send_q: int | None  # for a listener: the backlog (netlink only)
    uid: int | None  # sk_uid; None where the kernel reports a placeholder
    inode: int | None  # None for sockets without a file (TIME-WAIT, request sockets, orphans)
    ifindex: int | None  # bound device index, 0 = not bound, None = source cannot tell
    interface: str | None  # bound device name
    v6only: bool | None  # IPv6 listeners and unconnected sockets only
    timer: str | None
    timer_ms: int | None  # time left on the timer
    netns: int | None  # inode of the network namespace
    cookie: int | None = None  # kernel socket cookie (netlink only)


class Detail(str, enum.Enum):
    """Socket details asked for beyond the listing (ls -e, -o, -m, -i)."""

    EXTENDED = "extended"  # uid, inode, cookie, v6only, device: already in every record
    TIMERS = "timers"  # the timer with its retransmission count
    MEMORY = "memory"  # socket memory (INET_DIAG_SKMEMINFO)
    INFO = "info"  # TCP internals (INET_DIAG_INFO: struct tcp_info) and the congestion control (INET_DIAG_CONG)


@dataclass_lite(frozen=True, slots=True)
class UnixSocket:
    """One AF_UNIX socket: a record of its own, not a :class:`Socket` (no address, port or family to fill,
    and ``Proto`` stays the IP protocols that ports, ``who PORT`` and ``can-bind`` iterate over).

    ``path`` is the bound name as text (bytes that are not UTF-8 as ``surrogateescape`` characters):
    a filesystem path as it was given to bind(), or ``@`` and the abstract name (whose NUL bytes are kept
    as ``\\x00`` characters: renderers escape them); ``None`` for an unnamed socket. An accepted
    connection carries its listener's name, as the kernel reports it.
    """

    type: UnixType
    state: State
    path: str | None
    abstract: bool  # path is an abstract name ("@..."), not a file
    inode: int
    peer_inode: int | None  # the socket at the other end; None without a peer (or from /proc)
    recv_q: int | None  # for a listener: connections waiting to be accepted
    send_q: int | None  # for a listener: the backlog
    uid: int | None  # the socket's owner (netlink, Linux 5.3+); None from /proc
    netns: int | None
    file: tuple[int, int] | None = None  # (st_dev, st_ino) of the bound socket file (netlink only)
    cookie: int | None = None  # kernel socket cookie (netlink only)


@dataclass_lite(frozen=True, slots=True)
class Process:
    pid: int
    ppid: int | None
    name: str
    uid: int | None
    user: str | None
    cmdline: tuple[str, ...]
    start_time: float | None  # seconds since the epoch


@dataclass_lite(frozen=True, slots=True)
class Holder:
    """One process holding one socket, through these file descriptors."""

    process: Process
    fds: tuple[int, ...]
    # the thread whose own fd table holds them (unshare(CLONE_FILES), or a group whose leader exited);
    # None: the process's table, /proc/PID/fd
    tid: int | None = None


@dataclass_lite(frozen=True, slots=True)
class ProtoSource:
    """Which backend served one (protocol, family), and why a fallback was taken."""

    proto: Proto
    family: Family
    backend: Backend
    note: str | None = None


@dataclass_lite(frozen=True, slots=True)
class JoinReport:
    """What the process join could not see."""

    joined: bool
    processes_scanned: int = 0
    processes_denied: int = 0  # /proc/<pid>/fd unreadable (EACCES as non-root)
    processes_vanished: int = 0
    unowned_sockets: int = 0  # sockets with a file and no visible holder for another reason
    hidden_inodes: frozenset[int] = frozenset()  # sockets with a file whose holder we were not allowed to see
    # some of the processes that refused the walk: (pid, name, uid); name and uid None when unreadable
    denied_processes: tuple[tuple[int, str | None, int | None], ...] = ()
    # why they refused: "not-permitted" (other users' or non-dumpable processes, without privileges),
    # "no-ptrace-capability" (root without CAP_SYS_PTRACE), "refused-to-root" (a security module, ...)
    denied_reason: str | None = None

    @property
    def hidden_sockets(self) -> int:
        return len(self.hidden_inodes)


@dataclass_lite(frozen=True, slots=True)
class NetnsInfo:
    """One network namespace a snapshot read (``--netns all``), or could not read (``error`` set)."""

    inode: int
    host: bool  # the namespace of PID 1
    names: tuple[str, ...] = ()  # ip netns names (nsfs mounts in /run/netns)
    pid: int | None = None  # a process inside it
    path: str | None = None  # how it was entered: an nsfs mount, /proc/PID/ns/net or /proc/PID/fd/N
    error: str | None = None  # why it could not be read


@dataclass_lite(frozen=True)
class Snapshot:
    sockets: tuple[Socket, ...]
    holders: dict[int, tuple[Holder, ...]]  # socket inode -> holders
    sources: tuple[ProtoSource, ...]
    join: JoinReport
    netns: int | None
    bound_visible: bool | None  # could BOUND_INACTIVE sockets be listed? None: not asked
    warnings: tuple[str, ...] = field(default_factory=tuple)
    namespaces: tuple[NetnsInfo, ...] = ()  # with --netns all: every namespace looked at, read or not
    unix_sockets: tuple[UnixSocket, ...] = ()  # only when the query asked for them (Query.unix)
    unix_source: Backend | None = None  # where the UNIX sockets came from; None: not asked
    # socket cookie -> details, for the sockets they were asked for (Query.details): kept apart from the
    # records so that a plain listing decodes and builds exactly what it did before
    details: Mapping[int, SocketDetails] = field(default_factory=dict)
    details_asked: frozenset[Detail] = frozenset()

    def details_of(self, sock: Socket) -> SocketDetails | None:
        return self.details.get(sock.cookie) if sock.cookie is not None else None

    def holders_of(self, sock: Socket | UnixSocket) -> tuple[Holder, ...]:
        if sock.inode is None:
            return ()
        return self.holders.get(sock.inode, ())

    def peer_holders_of(self, sock: UnixSocket) -> tuple[Holder, ...]:
        """The processes at the other end of a connected UNIX socket (the peer inode's holders)."""
        if sock.peer_inode is None:
            return ()
        return self.holders.get(sock.peer_inode, ())

    def backend_summary(self) -> str:
        by_backend: dict[str, list[str]] = {}
        for src in self.sources:
            by_backend.setdefault(src.backend.value, []).append(
                f"{src.proto.value}{'6' if src.family is Family.IPV6 else ''}"
            )
        if self.unix_source is not None:
            by_backend.setdefault(self.unix_source.value, []).append("unix")
        return "; ".join(f"{name}: {','.join(parts)}" for name, parts in by_backend.items())
