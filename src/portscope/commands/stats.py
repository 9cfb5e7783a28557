"""``stats`` as a library call: ``ss -s`` and what it cannot show, as records.

Two sources, kept apart because they count differently: the sock_diag dumps (every socket of the
namespace, counted by protocol, family or type, and state) and the kernel's own counters
(``/proc/net/sockstat{,6}`` and ``Tcp: CurrEstab``, from which ``ss -s`` makes its summary, reproduced
as :class:`SsSummary`). Beyond ``ss -s``: the busiest listening ports by connection count and the
bound-only TCP sockets, with the processes that hold them (one /proc walk, for those sockets only).
"""

from __future__ import annotations

from collections import Counter

from portscope.engine.snapshot import snapshot
from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import ALL_NAMESPACES, Query
from portscope.model.records import Family, Holder, Proto, Snapshot, Socket, State, UnixType
from portscope.sources import netns as netns_module
from portscope.sources.join import join_processes
from portscope.sources.sockstat import Counters, read_counters

BUSIEST_SHOWN = 10
# A TCP socket without a file in these states, and not a timewait sock, is an orphan: its process closed
# it and the kernel finishes the close alone (a connection waiting to be accepted has no file either, but
# is ESTABLISHED or CLOSE-WAIT).
ORPHAN_STATES = frozenset({State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.LAST_ACK})


@dataclass_lite(frozen=True, slots=True)
class StateCounts:
    """The sockets of one table of the dumps: a protocol and a family (IP) or a type (UNIX)."""

    proto: str  # "tcp", "udp", "unix"
    kind: str  # "ipv4", "ipv6"; for UNIX: "stream", "dgram", "seqpacket"
    total: int
    states: tuple[tuple[State, int], ...]  # most frequent first


@dataclass_lite(frozen=True, slots=True)
class TransportRow:
    """A row of ``ss -s``'s table, from sockstat's ``inuse`` counters (None: the counter is absent)."""

    name: str  # "RAW", "UDP", "TCP", "INET", "FRAG"
    total: int | None
    ipv4: int | None
    ipv6: int | None


@dataclass_lite(frozen=True, slots=True)
class SsSummary:
    """What ``ss -s`` prints, computed as ss computes it from the kernel's counters."""

    total: int | None  # sockets: used (every socket of the namespace, UNIX ones too)
    tcp_total: int | None  # TCP alloc + tw
    tcp_estab: int | None  # Tcp: CurrEstab (ESTABLISHED and CLOSE-WAIT)
    tcp_closed: int | None  # alloc - (inuse + inuse6 - tw)
    tcp_orphaned: int | None
    tcp_timewait: int | None
    transport: tuple[TransportRow, ...]


@dataclass_lite(frozen=True, slots=True)
class BusyPort:
    """A listening TCP port and the connections on it (accepted or not, every state but TIME-WAIT)."""

    port: int
    listeners: tuple[Socket, ...]
    connections: int
    established: int
    time_wait: int


@dataclass_lite(frozen=True)
class StatsReport:
    netns: str | None
    netns_inode: int | None
    counts: tuple[StateCounts, ...]  # from the dumps: tcp, udp (ipv4, ipv6), then unix by type
    time_wait: int  # TIME-WAIT sockets in the dumps
    orphans: int  # orphaned TCP sockets in the dumps (this namespace only; sockstat's are host-wide)
    counters: Counters  # sockstat and sockstat6 as the kernel wrote them
    summary: SsSummary
    busiest: tuple[BusyPort, ...]  # the listening ports with the most connections, at most BUSIEST_SHOWN
    bound_only: tuple[Socket, ...]  # TCP sockets bound and neither listening nor connected
    bound_visible: bool | None  # could bound-only sockets be listed at all?
    snapshot: Snapshot  # its holders cover the listeners of ``busiest`` and ``bound_only``

    def holders_of(self, sock: Socket) -> tuple[Holder, ...]:
        return self.snapshot.holders_of(sock)


def _value(counters: Counters, group: str, key: str) -> int | None:
    return counters.get(group, {}).get(key)


def _add(*values: int | None) -> int | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def ss_summary(counters: Counters, tcp_estab: int | None) -> SsSummary:
    """``ss -s`` from the counters: its arithmetic, with None where a counter is missing."""
    alloc, tw = _value(counters, "TCP", "alloc"), _value(counters, "TCP", "tw")
    tcp4, tcp6 = _value(counters, "TCP", "inuse"), _value(counters, "TCP6", "inuse") or 0
    closed = None
    if alloc is not None and tcp4 is not None and tw is not None:
        closed = alloc - (tcp4 + tcp6 - tw)
    rows = []
    inet4: list[int | None] = []
    inet6: list[int | None] = []
    for name, group4, group6 in (("RAW", "RAW", "RAW6"), ("UDP", "UDP", "UDP6"), ("TCP", "TCP", "TCP6")):
        v4, v6 = _value(counters, group4, "inuse"), _value(counters, group6, "inuse") or 0
        rows.append(TransportRow(name, _add(v4, v6), v4, v6))
        inet4.append(v4)
        inet6.append(v6)
    rows.append(TransportRow("INET", _add(*inet4, *inet6), _add(*inet4), _add(*inet6)))
    frag4, frag6 = _value(counters, "FRAG", "inuse"), _value(counters, "FRAG6", "inuse") or 0
    rows.append(TransportRow("FRAG", _add(frag4, frag6), frag4, frag6))
    return SsSummary(
        total=_value(counters, "sockets", "used"),
        tcp_total=_add(alloc, tw),
        tcp_estab=tcp_estab,
        tcp_closed=closed,
        tcp_orphaned=_value(counters, "TCP", "orphan"),
        tcp_timewait=tw,
        transport=tuple(rows),
    )


def _state_counts(proto: str, kind: str, states: Counter[State]) -> StateCounts:
    ordered = tuple(sorted(states.items(), key=lambda item: (-item[1], item[0].value)))
    return StateCounts(proto, kind, sum(states.values()), ordered)


def _busiest(sockets: tuple[Socket, ...]) -> tuple[BusyPort, ...]:
    listeners: dict[tuple[int | None, int], list[Socket]] = {}
    for sock in sockets:
        if sock.proto is Proto.TCP and sock.state is State.LISTEN:
            listeners.setdefault((sock.netns, sock.local_port), []).append(sock)
    connections: Counter[tuple[int | None, int]] = Counter()
    established: Counter[tuple[int | None, int]] = Counter()
    time_wait: Counter[tuple[int | None, int]] = Counter()
    for sock in sockets:
        key = (sock.netns, sock.local_port)
        if sock.proto is not Proto.TCP or key not in listeners or sock.remote_port is None:
            continue
        if sock.state is State.TIME_WAIT:
            time_wait[key] += 1
            continue
        connections[key] += 1
        if sock.state is State.ESTABLISHED:
            established[key] += 1
    busy = [
        BusyPort(key[1], tuple(group), connections[key], established[key], time_wait[key])
        for key, group in listeners.items()
        if connections[key] or time_wait[key]
    ]
    busy.sort(key=lambda b: (-b.connections, -b.time_wait, b.port))
    return tuple(busy[:BUSIEST_SHOWN])


def socket_stats(*, netns: str | None = None, processes: bool = True, proc_root: str = "/proc") -> StatsReport:
    """The sockets of one network namespace counted, the kernel's counters, and the busiest ports."""
    if netns == ALL_NAMESPACES:
        raise UsageError("stats counts one network namespace at a time (the kernel's counters are per namespace)")
    target = netns_module.resolve(netns) if netns else None
    with netns_module.entered(target) as ns_inode:
        counters, tcp_estab = read_counters()
    snap = snapshot(Query(states=None, join_processes=False, unix=True, netns=netns), proc_root=proc_root)
    tables: dict[tuple[str, str], Counter[State]] = {}
    for proto in (Proto.TCP, Proto.UDP):
        for family in (Family.IPV4, Family.IPV6):
            tables[(proto.value, family.value)] = Counter()
    for kind in UnixType:
        tables[("unix", kind.value)] = Counter()
    time_wait = orphans = 0
    for sock in snap.sockets:
        tables[(sock.proto.value, sock.family.value)][sock.state] += 1
        if sock.state is State.TIME_WAIT:
            time_wait += 1
        elif sock.inode is None and sock.state in ORPHAN_STATES and sock.timer != "timewait":
            orphans += 1
    for usock in snap.unix_sockets:
        tables[("unix", usock.type.value)][usock.state] += 1
    busiest = _busiest(snap.sockets)
    bound_only = tuple(
        sorted((s for s in snap.sockets if s.state is State.BOUND), key=lambda s: (s.local_port, s.local_address))
    )
    if processes:
        wanted = [sock for busy in busiest for sock in busy.listeners] + list(bound_only)
        holders, report = join_processes(wanted, proc_root)
        snap = Snapshot(
            sockets=snap.sockets,
            holders=holders,
            sources=snap.sources,
            join=report,
            netns=snap.netns,
            bound_visible=snap.bound_visible,
            warnings=snap.warnings,
            unix_sockets=snap.unix_sockets,
            unix_source=snap.unix_source,
        )
    return StatsReport(
        netns=netns,
        netns_inode=ns_inode,
        counts=tuple(_state_counts(proto, kind, states) for (proto, kind), states in tables.items()),
        time_wait=time_wait,
        orphans=orphans,
        counters=counters,
        summary=ss_summary(counters, tcp_estab),
        busiest=busiest,
        bound_only=bound_only,
        bound_visible=snap.bound_visible,
        snapshot=snap,
    )
