"""Socket details asked for on request (ls -o, -m, -i): memory and TCP internals, as the kernel reports them.

A module of their own: a listing that asks for none never creates these classes.
"""

from __future__ import annotations

from portscope.model.dataclass_lite import dataclass_lite


@dataclass_lite(frozen=True, slots=True)
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


@dataclass_lite(frozen=True, slots=True)
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


@dataclass_lite(frozen=True, slots=True)
class SocketDetails:
    """What ``-o``, ``-m`` and ``-i`` ask the kernel for, for one socket (netlink only)."""

    retransmits: int | None = None  # idiag_retrans: the count shown with the timer
    memory: MemInfo | None = None
    tcp_info: TcpInfo | None = None
