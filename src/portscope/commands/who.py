"""``who PORT`` as a library call: every process on a port, what it is, and what its sockets are doing.

One snapshot with the port filtered in the kernel (the /proc fd walk is the only expensive step and
runs once), then grouping by process, a lineage and details read for each holder (anchored to the
process the walk saw), and a classification of the sockets no visible process holds (TIME-WAIT and
orphans, or owners hidden from a non-root caller, by permissions or by a ``hidepid`` mount of /proc).
Imports the standard library only: the holders' details are read from /proc (:class:`DetailsReader`).
"""

from __future__ import annotations

import enum
import os
import time
from collections import Counter
from dataclasses import replace

from portscope.engine.snapshot import snapshot
from portscope.errors import PortscopeError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.endpoint import on_interface, parse_endpoint
from portscope.model.notation import format_endpoint, format_host
from portscope.model.query import ALL_NAMESPACES, PortRange, Query, port_in_ranges
from portscope.model.records import Family, Holder, Process, Proto, Snapshot, Socket, State, UnixSocket
from portscope.sources.lineage import Details, DetailsReader, Lineage, LineageReader
from portscope.sources.procinfo import HidePid, raise_if_out_of_fds, read_hidepid
from portscope.sources.services import Services, load_services

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:  # ipaddress is loaded where an address is compared (7M instructions: who 8080 on IPv4 needs none)
    import ipaddress

    from portscope.commands.places import Places
    from portscope.sources.containers import ContainerInfo
    from portscope.sources.forwarders import Forward

    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PEERS_SHOWN = 5
BOUND_STATES = frozenset({State.LISTEN, State.UNCONN, State.BOUND})


@dataclass_lite(frozen=True, slots=True)
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
    import ipaddress

    address = ipaddress.ip_address(text)
    return getattr(address, "ipv4_mapped", None) or address


def covered_families(sock: Socket) -> tuple[frozenset[Family], bool]:
    """Which address families a bound socket receives for, and whether that is certain.

    A ``[::]`` socket with IPV6_V6ONLY off takes IPv4 too (as ``::ffff:a.b.c.d``); ``/proc`` cannot
    tell the flag, so such a socket is reported as IPv6 with IPv4 uncertain.
    """
    if sock.family is Family.IPV4:
        return frozenset({Family.IPV4}), True
    import ipaddress

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


@dataclass_lite(frozen=True, slots=True)
class UnheldSocket:
    socket: Socket
    reason: Unheld


@dataclass_lite(frozen=True, slots=True)
class Listener:
    socket: Socket
    families: frozenset[Family]
    families_certain: bool


@dataclass_lite(frozen=True, slots=True)
class Peer:
    endpoint: str  # an address (clients of our port), or address:port (servers we talk to)
    count: int


@dataclass_lite(frozen=True, slots=True)
class Forwarding:
    """A forwarder's listener on the port, and the listeners its traffic reaches.

    docker-proxy, conmon, rootlessport and dockerd lead into a container's network namespace: ``targets``
    are the listeners found there on the forwarded-to address and port, held by ``target_pids``. A socket
    activation manager (PID 1) passed its listener itself: the target is that socket, held by the service.
    """

    forwarder: Process
    listener: Socket  # the forwarder's socket on the port
    forward: Forward
    targets: tuple[Socket, ...] = ()
    target_pids: tuple[int, ...] = ()
    unread: str | None = None  # why the namespace it leads to could not be looked into


@dataclass_lite(frozen=True, slots=True)
class ProcessOnPort:
    process: Process
    lineage: Lineage | None  # None when the process exited before we read it
    details: Details | None  # None when not read (its stat refused even to root)
    sockets: tuple[Socket, ...]  # its sockets on the port
    fds: tuple[tuple[int, tuple[int, ...]], ...]  # (socket inode, its fds in this process)
    listeners: tuple[Listener, ...]  # LISTEN, UNCONN and bound-only sockets
    state_counts: tuple[tuple[State, int], ...]  # the other sockets, most frequent state first
    peers: tuple[Peer, ...]  # the most frequent peers, at most PEERS_SHOWN
    peer_count: int  # distinct peers in all
    container: ContainerInfo | None = None  # the container it runs in or forwards to, named where known
    forwards: tuple[Forwarding, ...] = ()  # its listeners that lead elsewhere
    reached_through: tuple[Forwarding, ...] = ()  # the forwarders whose traffic reaches its sockets

    @property
    def inodes(self) -> tuple[int, ...]:
        return tuple(inode for inode, _ in self.fds)


@dataclass_lite(frozen=True, slots=True)
class ProcessGroup:
    """The processes of one container (``container`` None: not in a container), the real owner first."""

    container: ContainerInfo | None
    processes: tuple[ProcessOnPort, ...]


@dataclass_lite(frozen=True)
class WhoResult:
    target: WhoTarget
    netns: str | None
    snapshot: Snapshot
    sockets: tuple[Socket, ...]  # every socket on the port, listeners first
    processes: tuple[ProcessOnPort, ...]
    unheld: tuple[UnheldSocket, ...]
    read_at: float  # seconds since the epoch, for "up 3h" and "52s left"
    hidepid: HidePid | None = None  # /proc hides other users' processes from us
    groups: tuple[ProcessGroup, ...] = ()  # ``processes`` by container, in the same order
    forwardings: tuple[Forwarding, ...] = ()
    looked_into: Snapshot | None = None  # the namespaces forwarders lead to, on their ports
    places: Places | None = None  # the names of namespaces and containers, as resolved for this answer

    @property
    def found(self) -> bool:
        return bool(self.sockets)

    def holders_of(self, sock: Socket) -> tuple[Holder, ...]:
        """The holders of any socket of the answer, the ones found behind forwarders too."""
        held = self.snapshot.holders_of(sock)
        if not held and self.looked_into is not None:
            held = self.looked_into.holders_of(sock)
        return held

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
    places: Places | None = None,
) -> WhoResult | UnixWhoResult:
    """Everything on a port: its sockets, grouped by container and by the processes that hold them.

    A listener held by a forwarder (docker-proxy, conmon, rootlessport, dockerd, a socket activation
    manager) is followed to what it forwards to: the container's namespace is looked into for the
    listener on the forwarded-to address and port, and its process is put next to the forwarder.
    ``places``: the namespace and container names to use (and to keep for rendering).

    A UNIX socket's name (a path starting with ``/`` or ``.``, or ``@`` and an abstract name) gives a
    :class:`UnixWhoResult` instead: the processes holding sockets of that name and those at the other end.
    """
    if isinstance(target, str):
        target = parse_unix_target(target) if is_unix_target(target) else parse_target(target, remote=remote)
    if isinstance(target, UnixTarget) and remote:
        raise UsageError("--remote is for ports: a UNIX socket's peers are always shown")
    if places is None:
        from portscope.commands.places import Places

        places = Places(proc_root)
    try:
        if isinstance(target, UnixTarget):
            return _who_holds_unix(target, netns, proc_root)
        return _who_is_on(target, netns, proc_root, places)
    except OSError as exc:
        raise_if_out_of_fds(exc, proc_root)
        raise


def _who_is_on(target: WhoTarget, netns: str | None, proc_root: str, places: Places) -> WhoResult:
    if target.zone is not None and netns != ALL_NAMESPACES:
        from portscope.sources.zones import check_zone

        check_zone(target.zone, netns)
    snap = snapshot(build_query(target, netns), proc_root=proc_root)
    read_at = time.time()
    sockets = tuple(sorted((s for s in snap.sockets if socket_matches(s, target)), key=_socket_order))
    hidepid = read_hidepid(proc_root)
    my_uid = os.geteuid()
    places.learn(snap.namespaces)

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

    forwardings, looked_into = _follow_forwarders(sockets, snap, places, proc_root, target)
    seen = {id(sock) for sock in sockets}
    reached: list[Socket] = []
    for forwarding in forwardings:
        for sock in forwarding.targets:
            if id(sock) in seen or looked_into is None:
                continue
            seen.add(id(sock))
            reached.append(sock)
            for holder in looked_into.holders_of(sock):
                by_pid.setdefault(holder.process.pid, (holder.process, []))[1].append((sock, holder.fds))
    sockets = (*sockets, *reached)

    processes = []
    if by_pid:
        lineages = LineageReader(proc_root)
        details = DetailsReader(proc_root)
        for pid, (process, entries) in by_pid.items():
            lineage = lineages.lineage(pid, process.start_time)
            depth = details.details(pid, process.start_time)
            summary = _summarise(process, lineage, depth, entries, target)
            processes.append(_placed(summary, forwardings, places))
    groups = _grouped(processes, forwardings)
    return WhoResult(
        target=target,
        netns=netns,
        snapshot=snap,
        sockets=sockets,
        processes=tuple(p for group in groups for p in group.processes),
        unheld=tuple(unheld),
        read_at=read_at,
        hidepid=hidepid,
        groups=groups,
        forwardings=tuple(forwardings),
        looked_into=looked_into,
        places=places,
    )


# ---------------------------------------------------------------------------------------------------
# Forwarders and containers


def _follow_forwarders(
    sockets: tuple[Socket, ...], snap: Snapshot, places: Places, proc_root: str, target: WhoTarget
) -> tuple[list[Forwarding], Snapshot | None]:
    """The forwarders among the holders of the port's listeners, each with the listeners it leads to.

    The namespaces they lead into are read once, together (one /proc walk), on the forwarded-to ports
    only; a namespace the snapshot already read on those ports (``--netns all``) is not read again.
    """
    found: list[tuple[Holder, Socket, Forward]] = []
    for sock in sockets:
        if sock.state in BOUND_STATES:
            found += [(holder, sock, forward) for holder, forward in places.forwards(sock, snap.holders_of(sock))]
    if not found:
        return [], None
    lookups: dict[int, str] = {}  # namespace inode -> a path that enters it
    ports: set[int] = set()
    already = {info.inode for info in snap.namespaces if not info.error}  # --netns all read them

    def in_snapshot(forward: Forward) -> bool:
        return forward.netns_inode in already and port_in_ranges(forward.target_port, target.ports)

    for holder, _, forward in found:
        if forward.target_pid is not None or forward.target_port is None or in_snapshot(forward):
            continue
        path = places.netns_path(forward, holder.process.pid)
        inode = forward.netns_inode
        if path is not None and inode is not None:
            lookups.setdefault(inode, path)
            ports.add(forward.target_port)
    looked_into = None
    failure = None
    if lookups:
        from portscope.sources.namespaces import NamespaceRef

        protocols = frozenset(sock.proto for _, sock, _ in found)
        query = Query(
            protocols=protocols,
            states=frozenset({State.LISTEN, State.UNCONN}),
            local_ports=tuple(PortRange(port, port) for port in sorted(ports)),
        )
        refs = [NamespaceRef(inode, path) for inode, path in lookups.items()]
        try:
            looked_into = snapshot(query, proc_root=proc_root, namespaces=refs)
        except PortscopeError as exc:
            failure = str(exc)
    errors = {info.inode: info.error for info in looked_into.namespaces} if looked_into is not None else {}
    forwardings = []
    for holder, sock, forward in found:
        if forward.target_pid is not None:  # socket activation: the service holds the very same socket
            forwardings.append(Forwarding(holder.process, sock, forward, (sock,), (forward.target_pid,)))
            continue
        inode = forward.netns_inode
        if forward.target_port is not None and in_snapshot(forward):
            forwardings.append(Forwarding(holder.process, sock, forward, *_behind(sockets, sock, forward, snap)))
            continue
        if inode is None or forward.target_port is None or inode not in lookups:
            forwardings.append(Forwarding(holder.process, sock, forward))
            continue
        unread = failure or errors.get(inode)
        if looked_into is None or unread:
            forwardings.append(Forwarding(holder.process, sock, forward, unread=unread))
            continue
        forwardings.append(
            Forwarding(holder.process, sock, forward, *_behind(looked_into.sockets, sock, forward, looked_into))
        )
    return forwardings, looked_into


def _behind(
    candidates: tuple[Socket, ...], listener: Socket, forward: Forward, snap: Snapshot
) -> tuple[tuple[Socket, ...], tuple[int, ...]]:
    """The listeners among ``candidates`` that a forward's traffic reaches, and the pids holding them."""
    targets = tuple(
        s
        for s in candidates
        if s.netns == forward.netns_inode
        and s.proto is listener.proto
        and forward.target_port is not None
        and _leads_to(s, forward.target_address, forward.target_port)
    )
    return targets, tuple(dict.fromkeys(h.process.pid for s in targets for h in snap.holders_of(s)))


def _leads_to(sock: Socket, address: str | None, port: int) -> bool:
    """Does traffic forwarded to ``address``:``port`` reach this listener (that address or a wildcard)?"""
    if sock.local_port != port:
        return False
    if address is None:
        return True
    import ipaddress

    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return False
    wanted = getattr(wanted, "ipv4_mapped", None) or wanted
    return _local_address_matches(sock, wanted)


def _placed(entry: ProcessOnPort, forwardings: list[Forwarding], places: Places) -> ProcessOnPort:
    """The process with its container and the forwardings it takes part in."""
    pid = entry.process.pid
    forwards = tuple(f for f in forwardings if f.forwarder.pid == pid)
    reached = tuple(f for f in forwardings if pid in f.target_pids)
    lineage = entry.lineage
    container = None
    if lineage is not None and lineage.container is not None and lineage.cgroup:
        container = places.index.for_cgroup(lineage.cgroup)  # the cgroup's shape, named from the runtime's files
    if container is None:
        container = next((f.forward.container for f in forwards if f.forward.container is not None), None)
    if container is None:
        for sock in entry.sockets:
            container = places.container(sock, ())
            if container is not None:
                break
    return replace(entry, container=container, forwards=forwards, reached_through=reached)


def _grouped(processes: list[ProcessOnPort], forwardings: list[Forwarding]) -> tuple[ProcessGroup, ...]:
    """By container, then process: in each group the processes a forwarder leads to come first, each
    followed by its forwarders, then the others (listeners first, by pid)."""
    groups: dict[str | None, list[ProcessOnPort]] = {}
    containers: dict[str | None, ContainerInfo | None] = {None: None}
    for entry in processes:
        key = entry.container.id if entry.container is not None else None
        containers.setdefault(key, entry.container)
        groups.setdefault(key, []).append(entry)
    ordered: list[ProcessGroup] = []
    for key, members in groups.items():
        members.sort(key=lambda p: (not p.listeners, p.process.pid))
        by_pid = {p.process.pid: p for p in members}
        placed: dict[int, ProcessOnPort] = {}
        for entry in members:
            if not entry.reached_through or entry.process.pid in placed:
                continue
            placed[entry.process.pid] = entry
            for forwarding in entry.reached_through:
                forwarder = by_pid.get(forwarding.forwarder.pid)
                if forwarder is not None and forwarder.process.pid not in placed:
                    placed[forwarder.process.pid] = forwarder
        for entry in members:
            placed.setdefault(entry.process.pid, entry)
        ordered.append(ProcessGroup(containers[key], tuple(placed.values())))
    # listeners' groups first; the host's processes before containers', containers by name
    ordered.sort(
        key=lambda g: (
            not any(p.listeners for p in g.processes),
            g.container is not None,
            (g.container.name or g.container.id) if g.container is not None else "",
        )
    )
    return tuple(ordered)


# ---------------------------------------------------------------------------------------------------
# UNIX sockets: who PATH, who @NAME


@dataclass_lite(frozen=True, slots=True)
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
        raise UsageError(f"cannot look at '{text}': {exc.strerror}") from None
    if not stat.S_ISSOCK(found.st_mode):
        raise UsageError(f"'{text}' is not a UNIX socket file")
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


@dataclass_lite(frozen=True, slots=True)
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


@dataclass_lite(frozen=True)
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
