"""``who PORT`` as a library call: every process on a port, what it is, and what its sockets are doing.

One snapshot with the port filtered in the kernel (the /proc fd walk is the only expensive step and
runs once), then grouping by process, a lineage and details read for each holder (anchored to the
process the walk saw), and a classification of the sockets no visible process holds (TIME-WAIT and
orphans, or owners hidden from a non-root caller, by permissions or by a ``hidepid`` mount of /proc).
Imports the standard library, and psutil for the holders' details (:class:`DetailsReader`).
"""

from __future__ import annotations

import enum
import ipaddress
import os
import time
from collections import Counter
from dataclasses import dataclass

from portscope.engine.snapshot import snapshot
from portscope.errors import UsageError
from portscope.model.endpoint import on_interface, parse_endpoint
from portscope.model.notation import format_endpoint, format_host
from portscope.model.query import ALL_NAMESPACES, PortRange, Query, port_in_ranges
from portscope.model.records import Family, Process, Proto, Snapshot, Socket, State
from portscope.sources.lineage import Details, DetailsReader, Lineage, LineageReader
from portscope.sources.procinfo import HidePid, raise_if_out_of_fds, read_hidepid
from portscope.sources.services import Services, load_services

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PEERS_SHOWN = 5
BOUND_STATES = frozenset({State.LISTEN, State.UNCONN, State.BOUND})


@dataclass(frozen=True, slots=True)
class WhoTarget:
    """A parsed ``who`` argument."""

    text: str  # as typed
    ports: tuple[PortRange, ...]
    protocols: frozenset[Proto]
    address: IPAddress | None  # None: any local address
    remote: bool = False  # also match the peer's port (and address)
    zone: str | None = None  # [fe80::1%eth0]: only sockets on that interface (name, or index in decimal)

    def describe(self) -> str:
        where = "" if self.address is None else f"{format_host(self.address_text())}:"
        protos = "/".join(p.value for p in Proto if p in self.protocols)
        ports = ",".join(str(r) for r in self.ports)
        return f"{where}{ports} ({protos})"

    def address_text(self) -> str:
        """The address as typed back: ``fe80::1%eth0`` with its zone id."""
        return f"{self.address}%{self.zone}" if self.zone else str(self.address)


def parse_target(text: str, services: Services | None = None, *, remote: bool = False) -> WhoTarget:
    """``8899``, ``:8899``, ``8899/udp``, ``127.0.0.1:8899``, ``[::1]:8899``, ``ssh``, ``http/tcp``, ``8000-8100``.

    who's reading of :func:`parse_endpoint`: ranges and ``/proto`` allowed, names not looked up, a
    v4-mapped address means the IPv4 address, and a zone id (``[fe80::1%eth0]:80``) narrows a
    link-local address to the sockets on that interface.
    """
    raw = text.strip()
    if not raw:
        raise UsageError("empty port")
    if services is None:
        services = load_services()
    endpoint = parse_endpoint(raw, services, ranges=True, zone_ids=True)
    address = endpoint.address
    address = getattr(address, "ipv4_mapped", None) or address
    if endpoint.proto is not None:
        protocols = frozenset({endpoint.proto})
    elif endpoint.service is None:
        protocols = frozenset(Proto)
    else:
        # a service name: the protocols it is registered for on that port (ssh: tcp, domain: both)
        port = endpoint.ports.low
        protocols = frozenset(p for p in Proto if services.by_name.get((endpoint.service, p.value)) == port)
        protocols = protocols or frozenset(Proto)
    return WhoTarget(
        text=raw, ports=(endpoint.ports,), protocols=protocols, address=address, remote=remote, zone=endpoint.zone
    )


def build_query(target: WhoTarget, netns: str | None = None) -> Query:
    """Every state (TIME-WAIT and bound-only too), the port filtered in the kernel."""
    families = frozenset(Family)
    if target.address is not None and target.address.version == 6:
        families = frozenset({Family.IPV6})  # IPv4 addresses also show up v4-mapped on IPv6 sockets
    return Query(
        protocols=target.protocols,
        families=families,
        states=None,
        local_ports=None if target.remote else target.ports,
        any_ports=target.ports if target.remote else None,
        join_processes=True,
        netns=netns,
    )


# ---------------------------------------------------------------------------------------------------
# Matching and classifying sockets


def _ip(text: str | None) -> IPAddress | None:
    if text is None:
        return None
    address = ipaddress.ip_address(text)
    return getattr(address, "ipv4_mapped", None) or address


def covered_families(sock: Socket) -> tuple[frozenset[Family], bool]:
    """Which address families a bound socket receives for, and whether that is certain.

    A ``[::]`` socket with IPV6_V6ONLY off takes IPv4 too (as ``::ffff:a.b.c.d``); ``/proc`` cannot
    tell the flag, so such a socket is reported as IPv6 with IPv4 uncertain.
    """
    if sock.family is Family.IPV4:
        return frozenset({Family.IPV4}), True
    address = ipaddress.ip_address(sock.local_address)
    if getattr(address, "ipv4_mapped", None) is not None:
        return frozenset({Family.IPV4}), True
    if address.is_unspecified:
        if sock.v6only is False:
            return frozenset(Family), True
        return frozenset({Family.IPV6}), sock.v6only is True
    return frozenset({Family.IPV6}), True


def _local_address_matches(sock: Socket, address: IPAddress) -> bool:
    """Would traffic to ``address`` reach this socket: the same address, or a wildcard covering it."""
    local = _ip(sock.local_address)
    if local == address:
        return True
    if local is None or not local.is_unspecified:
        return False
    if sock.family is Family.IPV4:
        return address.version == 4
    return address.version == 6 or sock.v6only is not True


def _on_zone(sock: Socket, zone: str | None) -> bool:
    """With a zone id: the socket is on that interface, or bound to no device at all (it receives on
    every interface), or its device is unknown (/proc: the address alone decides)."""
    if zone is None or not sock.ifindex:
        return True
    return on_interface(zone, sock.ifindex, sock.interface) is not False


def socket_matches(sock: Socket, target: WhoTarget) -> bool:
    local_hit = port_in_ranges(sock.local_port, target.ports) and (
        target.address is None or (_local_address_matches(sock, target.address) and _on_zone(sock, target.zone))
    )
    if local_hit or not target.remote:
        return local_hit
    return port_in_ranges(sock.remote_port, target.ports) and (
        target.address is None or (_ip(sock.remote_address) == target.address and _on_zone(sock, target.zone))
    )


class Unheld(str, enum.Enum):
    """Why no process is shown for a socket."""

    NO_FILE = "no-file"  # TIME-WAIT, SYN-RECV, orphaned closing sockets: the kernel owns them alone
    HIDDEN = "hidden"  # its holder is among the processes we may not inspect
    UNOWNED = "unowned"  # no process holds it: a kernel socket, or the holder exited meanwhile


@dataclass(frozen=True, slots=True)
class UnheldSocket:
    socket: Socket
    reason: Unheld


@dataclass(frozen=True, slots=True)
class Listener:
    socket: Socket
    families: frozenset[Family]
    families_certain: bool


@dataclass(frozen=True, slots=True)
class Peer:
    endpoint: str  # an address (clients of our port), or address:port (servers we talk to)
    count: int


@dataclass(frozen=True, slots=True)
class ProcessOnPort:
    process: Process
    lineage: Lineage | None  # None when the process exited before we read it
    details: Details | None  # None when not read (a proc_root psutil does not read)
    sockets: tuple[Socket, ...]  # its sockets on the port
    fds: tuple[tuple[int, tuple[int, ...]], ...]  # (socket inode, its fds in this process)
    listeners: tuple[Listener, ...]  # LISTEN, UNCONN and bound-only sockets
    state_counts: tuple[tuple[State, int], ...]  # the other sockets, most frequent state first
    peers: tuple[Peer, ...]  # the most frequent peers, at most PEERS_SHOWN
    peer_count: int  # distinct peers in all

    @property
    def inodes(self) -> tuple[int, ...]:
        return tuple(inode for inode, _ in self.fds)


@dataclass(frozen=True)
class WhoResult:
    target: WhoTarget
    netns: str | None
    snapshot: Snapshot
    sockets: tuple[Socket, ...]  # every socket on the port, listeners first
    processes: tuple[ProcessOnPort, ...]
    unheld: tuple[UnheldSocket, ...]
    read_at: float  # seconds since the epoch, for "up 3h" and "52s left"
    hidepid: HidePid | None = None  # /proc hides other users' processes from us

    @property
    def found(self) -> bool:
        return bool(self.sockets)

    @property
    def hidden(self) -> tuple[UnheldSocket, ...]:
        return tuple(u for u in self.unheld if u.reason is Unheld.HIDDEN)


def _peer_key(sock: Socket, target: WhoTarget) -> str | None:
    if sock.remote_address is None or sock.remote_port is None:
        return None
    address = sock.remote_address
    mapped = _ip(address)
    if mapped is not None and mapped.version == 4:
        address = str(mapped)
    if port_in_ranges(sock.local_port, target.ports):
        return address  # we are the server: the client's port is ephemeral, its address is what matters
    return format_endpoint(address, sock.remote_port)


def _summarise(
    process: Process,
    lineage: Lineage | None,
    details: Details | None,
    entries: list[tuple[Socket, tuple[int, ...]]],
    target: WhoTarget,
) -> ProcessOnPort:
    sockets = tuple(sock for sock, _ in entries)
    listeners = []
    states: Counter[State] = Counter()
    peers: Counter[str] = Counter()
    for sock in sockets:
        if sock.state in BOUND_STATES:
            families, certain = covered_families(sock)
            listeners.append(Listener(sock, families, certain))
            continue
        states[sock.state] += 1
        key = _peer_key(sock, target)
        if key is not None:
            peers[key] += 1
    top = sorted(peers.items(), key=lambda item: (-item[1], item[0]))[:PEERS_SHOWN]
    return ProcessOnPort(
        process=process,
        lineage=lineage,
        details=details,
        sockets=sockets,
        fds=tuple((sock.inode, fds) for sock, fds in entries if sock.inode is not None),
        listeners=tuple(listeners),
        state_counts=tuple(sorted(states.items(), key=lambda item: (-item[1], item[0].value))),
        peers=tuple(Peer(endpoint, count) for endpoint, count in top),
        peer_count=len(peers),
    )


def _socket_order(sock: Socket):
    # listeners first; TIME-WAIT and other timed sockets by the time they have left, soonest first
    timer = sock.timer_ms if sock.timer_ms is not None else -1
    return (
        sock.state not in BOUND_STATES,
        sock.proto.value,
        sock.local_port,
        sock.state is State.TIME_WAIT,
        timer,
        sock.family.value,
        sock.local_address,
    )


def who_is_on(
    target: WhoTarget | str,
    *,
    remote: bool = False,
    netns: str | None = None,
    proc_root: str = "/proc",
) -> WhoResult:
    """Everything on a port: its sockets, grouped by the processes that hold them."""
    if isinstance(target, str):
        target = parse_target(target, remote=remote)
    try:
        return _who_is_on(target, netns, proc_root)
    except OSError as exc:
        raise_if_out_of_fds(exc, proc_root)
        raise


def _who_is_on(target: WhoTarget, netns: str | None, proc_root: str) -> WhoResult:
    if target.zone is not None and netns != ALL_NAMESPACES:
        from portscope.sources.zones import check_zone

        check_zone(target.zone, netns)
    snap = snapshot(build_query(target, netns), proc_root=proc_root)
    read_at = time.time()
    sockets = tuple(sorted((s for s in snap.sockets if socket_matches(s, target)), key=_socket_order))
    hidepid = read_hidepid(proc_root)
    my_uid = os.geteuid()

    by_pid: dict[int, tuple[Process, list[tuple[Socket, tuple[int, ...]]]]] = {}
    unheld: list[UnheldSocket] = []
    hidden_inodes = snap.join.hidden_inodes
    for sock in sockets:
        holders = snap.holders_of(sock)
        for holder in holders:
            entry = by_pid.setdefault(holder.process.pid, (holder.process, []))
            entry[1].append((sock, holder.fds))
        if holders:
            continue
        if sock.inode is None:
            unheld.append(UnheldSocket(sock, Unheld.NO_FILE))
        elif sock.inode in hidden_inodes or (hidepid is not None and hidepid.invisible and sock.uid != my_uid):
            # under hidepid=invisible other users' processes are not even listed, so nothing counted them
            unheld.append(UnheldSocket(sock, Unheld.HIDDEN))
        else:
            unheld.append(UnheldSocket(sock, Unheld.UNOWNED))

    processes = []
    if by_pid:
        lineages = LineageReader(proc_root)
        details = DetailsReader(proc_root)
        for pid, (process, entries) in by_pid.items():
            lineage = lineages.lineage(pid, process.start_time)
            depth = details.details(pid, process.start_time)
            processes.append(_summarise(process, lineage, depth, entries, target))
    processes.sort(key=lambda p: (not p.listeners, p.process.pid))
    return WhoResult(
        target=target,
        netns=netns,
        snapshot=snap,
        sockets=sockets,
        processes=tuple(processes),
        unheld=tuple(unheld),
        read_at=read_at,
        hidepid=hidepid,
    )
