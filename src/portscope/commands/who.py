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
from portscope.model.endpoint import parse_endpoint
from portscope.model.notation import format_endpoint, format_host
from portscope.model.query import PortRange, Query, port_in_ranges
from portscope.model.records import Family, Holder, Process, Proto, Snapshot, Socket, State, UnixSocket
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

    def describe(self) -> str:
        where = "" if self.address is None else f"{format_host(str(self.address))}:"
        protos = "/".join(p.value for p in Proto if p in self.protocols)
        ports = ",".join(str(r) for r in self.ports)
        return f"{where}{ports} ({protos})"


def parse_target(text: str, services: Services | None = None, *, remote: bool = False) -> WhoTarget:
    """``8899``, ``:8899``, ``8899/udp``, ``127.0.0.1:8899``, ``[::1]:8899``, ``ssh``, ``http/tcp``, ``8000-8100``.

    who's reading of :func:`parse_endpoint`: ranges and ``/proto`` allowed, names not looked up, no
    zone ids (a socket's address carries none), a v4-mapped address means the IPv4 address.
    """
    raw = text.strip()
    if not raw:
        raise UsageError("empty port")
    if services is None:
        services = load_services()
    endpoint = parse_endpoint(raw, services, ranges=True)
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
    return WhoTarget(text=raw, ports=(endpoint.ports,), protocols=protocols, address=address, remote=remote)


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


def socket_matches(sock: Socket, target: WhoTarget) -> bool:
    local_hit = port_in_ranges(sock.local_port, target.ports) and (
        target.address is None or _local_address_matches(sock, target.address)
    )
    if local_hit or not target.remote:
        return local_hit
    return port_in_ranges(sock.remote_port, target.ports) and (
        target.address is None or _ip(sock.remote_address) == target.address
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
    if address.startswith("::ffff:"):  # (inet_ntop's text of a v4-mapped address: no parse for the others)
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
    target: WhoTarget | UnixTarget | str,
    *,
    remote: bool = False,
    netns: str | None = None,
    proc_root: str = "/proc",
) -> WhoResult | UnixWhoResult:
    """Everything on a port: its sockets, grouped by the processes that hold them.

    A UNIX socket's name (a path starting with ``/`` or ``.``, or ``@`` and an abstract name) gives a
    :class:`UnixWhoResult` instead: the processes holding sockets of that name and those at the other end.
    """
    if isinstance(target, str):
        target = parse_unix_target(target) if is_unix_target(target) else parse_target(target, remote=remote)
    if isinstance(target, UnixTarget) and remote:
        raise UsageError("--remote is for ports: a UNIX socket's peers are always shown")
    try:
        if isinstance(target, UnixTarget):
            return _who_holds_unix(target, netns, proc_root)
        return _who_is_on(target, netns, proc_root)
    except OSError as exc:
        raise_if_out_of_fds(exc, proc_root)
        raise


def _who_is_on(target: WhoTarget, netns: str | None, proc_root: str) -> WhoResult:
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


# ---------------------------------------------------------------------------------------------------
# UNIX sockets: who PATH, who @NAME


@dataclass(frozen=True, slots=True)
class UnixTarget:
    """A parsed ``who`` argument naming UNIX sockets: a filesystem path or ``@`` and an abstract name."""

    text: str  # as typed
    path: str  # absolute for a file; "@name" for an abstract name
    abstract: bool
    file: tuple[int, int] | None  # (st_dev, st_ino) of the socket file when it exists: matched whatever the path


def is_unix_target(text: str) -> bool:
    """Does ``text`` name UNIX sockets rather than a port? ``/path``, ``./path``, ``../path`` or ``@name``."""
    return text.startswith(("/", "@", "./", "../"))


def parse_unix_target(text: str) -> UnixTarget:
    if text == "@":
        raise UsageError("empty abstract socket name: give @NAME")
    if text.startswith("@"):
        return UnixTarget(text=text, path=text, abstract=True, file=None)
    import stat

    path = os.path.abspath(text)
    try:
        found = os.stat(text)
    except (FileNotFoundError, NotADirectoryError):
        return UnixTarget(text=text, path=path, abstract=False, file=None)  # unlinked: matched by its name
    except OSError as exc:
        raise UsageError(f"cannot look at {text!r}: {exc.strerror}") from None
    if not stat.S_ISSOCK(found.st_mode):
        raise UsageError(f"{text!r} is not a UNIX socket file")
    return UnixTarget(text=text, path=path, abstract=False, file=(found.st_dev, found.st_ino))


def unix_socket_matches(sock: UnixSocket, target: UnixTarget) -> bool:
    """A socket bound to the target's name: the same socket file (any path leading to it), the same path
    text, or for an abstract name the same name with its NUL bytes written ``@`` (as ss shows them)."""
    if sock.path is None or sock.abstract != target.abstract:
        return False
    if target.abstract:
        return sock.path == target.path or sock.path.replace("\0", "@") == target.path
    if target.file is not None and sock.file is not None:
        return sock.file == target.file
    return sock.path == target.path or os.path.abspath(sock.path) == target.path


@dataclass(frozen=True, slots=True)
class UnixProcess:
    """A process on a UNIX socket name: a holder of sockets of that name, or a peer connected to them."""

    process: Process
    lineage: Lineage | None
    details: Details | None
    sockets: tuple[UnixSocket, ...]  # its sockets here (a peer's socket in another namespace is not listed)
    fds: tuple[tuple[int, tuple[int, ...]], ...]  # (socket inode, its fds in this process)
    state_counts: tuple[tuple[State, int], ...]  # its sockets by state, most frequent first
    partners: tuple[tuple[int, str], ...]  # (pid, name) of the processes at the other end, by pid

    @property
    def inodes(self) -> tuple[int, ...]:
        return tuple(inode for inode, _ in self.fds)


@dataclass(frozen=True)
class UnixWhoResult:
    target: UnixTarget
    netns: str | None
    snapshot: Snapshot
    sockets: tuple[UnixSocket, ...]  # the sockets of that name: listeners first, then connections
    processes: tuple[UnixProcess, ...]  # the holders
    peers: tuple[UnixProcess, ...]  # the processes at the other end of the connected ones
    unheld: tuple[UnixSocket, ...]  # sockets of that name without a visible holder
    read_at: float

    @property
    def found(self) -> bool:
        return bool(self.sockets)


def _unix_order(sock: UnixSocket):
    return (sock.state is not State.LISTEN and sock.state is not State.UNCONN, sock.type.value, sock.inode)


def _unix_entries(
    by_pid: dict[int, tuple[Process, list[tuple[int, tuple[int, ...]]]]],
    by_inode: dict[int, UnixSocket],
    partners_of: dict[int, dict[int, str]],
    lineages: LineageReader,
    details: DetailsReader,
) -> tuple[UnixProcess, ...]:
    entries = []
    for pid, (process, fds) in sorted(by_pid.items()):
        sockets = tuple(by_inode[inode] for inode, _ in fds if inode in by_inode)
        states = Counter(sock.state for sock in sockets)
        entries.append(
            UnixProcess(
                process=process,
                lineage=lineages.lineage(pid, process.start_time),
                details=details.details(pid, process.start_time),
                sockets=sockets,
                fds=tuple(fds),
                state_counts=tuple(sorted(states.items(), key=lambda item: (-item[1], item[0].value))),
                partners=tuple(sorted(partners_of.get(pid, {}).items())),
            )
        )
    return tuple(entries)


def _who_holds_unix(target: UnixTarget, netns: str | None, proc_root: str) -> UnixWhoResult:
    snap = snapshot(Query(protocols=frozenset(), unix=True, join_processes=True, netns=netns), proc_root=proc_root)
    read_at = time.time()
    sockets = tuple(sorted((u for u in snap.unix_sockets if unix_socket_matches(u, target)), key=_unix_order))
    by_inode = {u.inode: u for u in snap.unix_sockets}
    holders_by_pid: dict[int, tuple[Process, list[tuple[int, tuple[int, ...]]]]] = {}
    peers_by_pid: dict[int, tuple[Process, list[tuple[int, tuple[int, ...]]]]] = {}
    partners_of: dict[int, dict[int, str]] = {}  # pid -> the pids (and names) at the other end
    unheld = []

    def add(table, holders: tuple[Holder, ...], inode: int) -> None:
        for holder in holders:
            entry = table.setdefault(holder.process.pid, (holder.process, []))
            if all(known != inode for known, _ in entry[1]):
                entry[1].append((inode, holder.fds))

    for sock in sockets:
        holders = snap.holders_of(sock)
        if not holders:
            unheld.append(sock)
        add(holders_by_pid, holders, sock.inode)
        if sock.peer_inode is None:
            continue
        peer_holders = snap.peer_holders_of(sock)
        add(peers_by_pid, peer_holders, sock.peer_inode)
        for mine in holders:
            for theirs in peer_holders:
                partners_of.setdefault(mine.process.pid, {})[theirs.process.pid] = theirs.process.name
                partners_of.setdefault(theirs.process.pid, {})[mine.process.pid] = mine.process.name
    lineages = LineageReader(proc_root)
    details = DetailsReader(proc_root)
    return UnixWhoResult(
        target=target,
        netns=netns,
        snapshot=snap,
        sockets=sockets,
        processes=_unix_entries(holders_by_pid, by_inode, partners_of, lineages, details),
        peers=_unix_entries(peers_by_pid, by_inode, partners_of, lineages, details),
        unheld=tuple(unheld),
        read_at=read_at,
    )
