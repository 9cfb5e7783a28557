"""Typed records shared by every layer: sockets, processes, and what a snapshot could not see.

A field a source cannot know is ``None``, never a guess: ``/proc/net/tcp`` has no bound device and
no IPV6_V6ONLY flag, and the kernel reports uid 0 and inode 0 as placeholders for TIME-WAIT and
SYN-RECV sockets, so those are ``None`` too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


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

# Timer codes shared by inet_diag's idiag_timer and the "tr" column of /proc/net/tcp.
TIMER_BY_CODE: dict[int, str | None] = {0: None, 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class MemInfo:
    """sk_meminfo (include/uapi/linux/sock_diag.h), bytes except ``drops``."""

    rmem_alloc: int
    rcvbuf: int
    wmem_alloc: int
    sndbuf: int
    fwd_alloc: int
    wmem_queued: int
    optmem: int
    backlog: int | None  # not in kernels before 3.15
    drops: int | None  # not in kernels before 4.5


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The parts of struct tcp_info people read, in the kernel's units (None: older kernel without it)."""

    state: int
    ca_state: int
    retransmits: int  # unrecovered RTO timeouts in a row
    probes: int
    backoff: int
    options: int
    snd_wscale: int
    rcv_wscale: int
    rto_us: int
    ato_us: int
    mss: int  # snd_mss
    rcv_mss: int
    unacked: int
    sacked: int
    lost: int
    retrans: int  # segments retransmitted and not yet acknowledged
    last_send_ms: int  # since the last data sent
    last_ack_send_ms: int
    last_receive_ms: int  # since the last data received
    last_ack_receive_ms: int
    pmtu: int
    rcv_ssthresh: int
    rtt_us: int
    rttvar_us: int
    ssthresh: int | None  # None: still "infinite" (slow start never left)
    cwnd: int
    advmss: int
    reordering: int
    rcv_rtt_us: int
    rcv_space: int
    total_retrans: int
    pacing_rate: int | None  # bytes per second; None: unlimited (~0) or older kernel
    max_pacing_rate: int | None
    bytes_acked: int | None
    bytes_received: int | None
    segs_out: int | None
    segs_in: int | None
    notsent_bytes: int | None
    min_rtt_us: int | None
    data_segs_in: int | None
    data_segs_out: int | None
    delivery_rate: int | None  # bytes per second
    busy_us: int | None
    rwnd_limited_us: int | None
    sndbuf_limited_us: int | None
    delivered: int | None
    delivered_ce: int | None
    bytes_sent: int | None
    bytes_retrans: int | None
    dsack_dups: int | None
    reord_seen: int | None
    rcv_ooopack: int | None
    snd_wnd: int | None
    rcv_wnd: int | None
    congestion: str | None  # the congestion control algorithm (INET_DIAG_CONG)


@dataclass(frozen=True, slots=True)
class SocketDetails:
    """What ``-o``, ``-m`` and ``-i`` ask the kernel for, for one socket (netlink only)."""

    retransmits: int | None = None  # idiag_retrans: the count shown with the timer
    memory: MemInfo | None = None
    tcp_info: TcpInfo | None = None


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    ppid: int | None
    name: str
    uid: int | None
    user: str | None
    cmdline: tuple[str, ...]
    start_time: float | None  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Holder:
    """One process holding one socket, through these file descriptors."""

    process: Process
    fds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProtoSource:
    """Which backend served one (protocol, family), and why a fallback was taken."""

    proto: Proto
    family: Family
    backend: Backend
    note: str | None = None


@dataclass(frozen=True, slots=True)
class JoinReport:
    """What the process join could not see."""

    joined: bool
    processes_scanned: int = 0
    processes_denied: int = 0  # /proc/<pid>/fd unreadable (EACCES as non-root)
    processes_vanished: int = 0
    unowned_sockets: int = 0  # sockets with a file and no visible holder for another reason
    hidden_inodes: frozenset[int] = frozenset()  # sockets with a file whose holder we were not allowed to see

    @property
    def hidden_sockets(self) -> int:
        return len(self.hidden_inodes)


@dataclass(frozen=True, slots=True)
class NetnsInfo:
    """One network namespace a snapshot read (``--netns all``), or could not read (``error`` set)."""

    inode: int
    host: bool  # the namespace of PID 1
    names: tuple[str, ...] = ()  # ip netns names (nsfs mounts in /run/netns)
    pid: int | None = None  # a process inside it
    path: str | None = None  # how it was entered: an nsfs mount, /proc/PID/ns/net or /proc/PID/fd/N
    error: str | None = None  # why it could not be read


@dataclass(frozen=True)
class Snapshot:
    sockets: tuple[Socket, ...]
    holders: dict[int, tuple[Holder, ...]]  # socket inode -> holders
    sources: tuple[ProtoSource, ...]
    join: JoinReport
    netns: int | None
    bound_visible: bool | None  # could BOUND_INACTIVE sockets be listed? None: not asked
    warnings: tuple[str, ...] = field(default_factory=tuple)
    namespaces: tuple[NetnsInfo, ...] = ()  # with --netns all: every namespace looked at, read or not
    # socket cookie -> details, for the sockets they were asked for (Query.details): kept apart from the
    # records so that a plain listing decodes and builds exactly what it did before
    details: Mapping[int, SocketDetails] = field(default_factory=dict)
    details_asked: frozenset[Detail] = frozenset()

    def details_of(self, sock: Socket) -> SocketDetails | None:
        return self.details.get(sock.cookie) if sock.cookie is not None else None

    def holders_of(self, sock: Socket) -> tuple[Holder, ...]:
        if sock.inode is None:
            return ()
        return self.holders.get(sock.inode, ())

    def backend_summary(self) -> str:
        by_backend: dict[str, list[str]] = {}
        for src in self.sources:
            by_backend.setdefault(src.backend.value, []).append(
                f"{src.proto.value}{'6' if src.family is Family.IPV6 else ''}"
            )
        return "; ".join(f"{name}: {','.join(parts)}" for name, parts in by_backend.items())
