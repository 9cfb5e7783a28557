"""``watch`` and ``wait`` as library calls: sockets as they come and go, and waiting for a port.

:class:`SocketDiff` compares successive :func:`~portscope.engine.snapshot.snapshot` results, keyed by
socket identity (the kernel's socket cookie where netlink gives one, else the addresses, ports, inode
and state), and turns them into typed :class:`WatchEvent` records: appeared, vanished, changed (state,
owner or holders). :class:`Watcher` runs it at an interval and, where permitted, also listens to the
kernel's sock_diag destroy notifications (:mod:`portscope.sources.destroyfeed`), so that a socket
that lived between two scans is still reported. :func:`wait_for_port` waits until something listens
on a port, or until ``can-bind`` would answer yes, with a port-filtered kernel dump per tick and no
``/proc`` walk until it reports.

Nothing here changes process-wide state (signal handlers, the garbage collector, the terminal): a
long-running program or a thread may use it; the command line sets those for the commands' duration.
"""

from __future__ import annotations

import enum
import math
import selectors
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from portscope.commands.can_bind import BindReport, BindRequest, check_bind
from portscope.commands.ls import LsOptions, build_query
from portscope.commands.who import WhoTarget, covered_families, parse_target, socket_matches
from portscope.engine.snapshot import _socket_predicates, snapshot
from portscope.errors import SourceError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.filter import RecordFacts, matcher
from portscope.model.notation import format_host
from portscope.model.query import ALL_NAMESPACES, STATE_GROUPS, PortRange, Query
from portscope.model.records import Backend, Family, Holder, NetnsInfo, Proto, Snapshot, Socket, State

if TYPE_CHECKING:
    from portscope.commands.places import Places
    from portscope.model.filter import Matcher

__all__ = [
    "Change",
    "Origin",
    "Seen",
    "SocketDiff",
    "WaitResult",
    "WatchEvent",
    "WatchUpdate",
    "Watcher",
    "socket_identity",
    "wait_for_port",
    "watch_query",
]

MIN_INTERVAL = 0.01  # seconds: below this a loop would mostly measure itself
LISTENING = frozenset({State.LISTEN, State.UNCONN})


class Change(str, enum.Enum):
    APPEARED = "appeared"
    VANISHED = "vanished"
    CHANGED = "changed"  # the same socket, in another state, or with another owner or other holders


class Origin(str, enum.Enum):
    POLL = "poll"  # two scans differ
    DESTROY = "destroy"  # the kernel announced the socket's end; no scan saw it


@dataclass_lite(frozen=True, slots=True)
class Seen:
    """A socket as one scan saw it, with its holders then."""

    socket: Socket
    holders: tuple[Holder, ...] = ()


@dataclass_lite(frozen=True, slots=True)
class WatchEvent:
    change: Change
    time: float  # seconds since the epoch
    seen: Seen  # appeared, changed: as it is now; vanished: as last seen
    before: Seen | None = None  # changed: as it was
    origin: Origin = Origin.POLL


@dataclass_lite(frozen=True)
class WatchUpdate:
    """What one step of :meth:`Watcher.updates` brings: a scan, notifications, or a woken file descriptor."""

    time: float  # seconds since the epoch
    events: tuple[WatchEvent, ...]
    snapshot: Snapshot | None  # the scan's; None when no scan was made for this update
    scans: int  # scans made so far
    seen: Mapping[Hashable, Seen] | None = None  # the scan's sockets by identity (None: as ``snapshot`` gives)
    woken: tuple[int, ...] = ()  # ``wake`` file descriptors that became readable
    lost: int = 0  # destroy notifications the kernel dropped since the last update


def socket_identity(sock: Socket) -> Hashable:
    """What stays the same for one socket from scan to scan: its cookie, where the source gives one.

    Without a cookie (``/proc``) the addresses, ports, inode and state stand for it: a state change is
    then another socket.
    """
    if sock.cookie is not None:
        return sock.cookie
    return (
        sock.proto,
        sock.family,
        sock.netns,
        sock.local_address,
        sock.local_port,
        sock.remote_address,
        sock.remote_port,
        sock.inode,
        sock.state,
    )


def _aspect(sock: Socket, holders: tuple[Holder, ...]) -> tuple:
    """What a ``changed`` event is about. Queues and timers move all the time and are left out."""
    if not holders:
        who: tuple = ()
    elif len(holders) == 1:
        process = holders[0].process
        who = ((process.pid, process.name, process.start_time or 0.0),)
    else:
        who = tuple(sorted((h.process.pid, h.process.name, h.process.start_time or 0.0) for h in holders))
    return sock.state, sock.uid, sock.interface, sock.v6only, who


class SocketDiff:
    """Successive snapshots in, events out. Holds only the last scan's sockets (and the identities of
    those that vanished in the last two scans), so its memory follows the number of sockets, not time."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, Seen] = {}
        self._aspects: dict[Hashable, tuple] = {}
        self._gone: list[set[Hashable]] = [set(), set()]  # vanished in the last scan, and the one before
        self.scans = 0

    @property
    def current(self) -> dict[Hashable, Seen]:
        """The last scan's sockets by identity (do not modify)."""
        return self._seen

    def update(self, snap: Snapshot, now: float, *, report: bool = True) -> list[WatchEvent]:
        """The events from the previous scan to ``snap``; ``report`` False: take it in silently (a first scan
        whose sockets are not news)."""
        holders_of = snap.holders_of
        seen: dict[Hashable, Seen] = {}
        aspects: dict[Hashable, tuple] = {}
        for sock in snap.sockets:
            key = socket_identity(sock)
            holders = holders_of(sock)
            seen[key] = Seen(sock, holders)
            aspects[key] = _aspect(sock, holders)
        events: list[WatchEvent] = []
        if report:
            previous, before_aspects = self._seen, self._aspects
            events += (WatchEvent(Change.VANISHED, now, old) for key, old in previous.items() if key not in seen)
            for key, entry in seen.items():
                old_aspect = before_aspects.get(key)
                if old_aspect is None:
                    events.append(WatchEvent(Change.APPEARED, now, entry))
                elif old_aspect != aspects[key]:
                    events.append(WatchEvent(Change.CHANGED, now, entry, previous[key]))
        self._gone = [{key for key in self._seen if key not in seen}, self._gone[0]]
        self._seen, self._aspects = seen, aspects
        self.scans += 1
        return events

    def short_lived(self, destroyed: Sequence[Socket], now: float) -> list[WatchEvent]:
        """Sockets the kernel says it destroyed that no scan saw: each appeared and vanished between two
        scans. Those a scan saw are left to the scans (a notification may arrive after the scan that
        already missed the socket)."""
        events: list[WatchEvent] = []
        for sock in destroyed:
            key = socket_identity(sock)
            if key in self._seen or key in self._gone[0] or key in self._gone[1]:
                continue
            entry = Seen(as_destroyed(sock))
            events.append(WatchEvent(Change.APPEARED, now, entry, origin=Origin.DESTROY))
            events.append(WatchEvent(Change.VANISHED, now, entry, origin=Origin.DESTROY))
        return events


# ---------------------------------------------------------------------------------------------------
# Destroyed sockets: what they were, and whether the watch asked for them


def as_destroyed(sock: Socket) -> Socket:
    """A destroy notification's socket as reported: queues and timers mean nothing once it is freed, and
    the kernel leaves the uid and inode of the message at zero (placeholders: null here).

    The kernel gives a TCP socket's state as CLOSE then (a listener, or a connection on its way to
    TIME-WAIT, has already left its state), so it is reported as ``close``.
    """
    state = State.CLOSE if sock.proto is Proto.TCP else sock.state
    return replace(sock, state=state, recv_q=None, send_q=None, uid=None, inode=None, timer=None, timer_ms=None)


def _possible_states(sock: Socket) -> frozenset[State]:
    """The states a destroyed socket may have been in before it closed, from what is left of it."""
    if sock.proto is Proto.UDP:
        return frozenset({sock.state})
    if sock.remote_port is None:
        return frozenset({State.LISTEN, State.BOUND})  # no peer: it listened, or was only bound
    return STATE_GROUPS["connected"]


def destroyed_matches(query: Query, sock: Socket, expression: Matcher | None = None) -> bool:
    """Could this destroyed socket have been one the query lists? Its holder and owner are unknown (gone,
    and not in the notification), so a query about processes or users never matches. ``expression``:
    the query's filter expression made by :func:`gone_matcher`."""
    if sock.proto not in query.protocols or sock.family not in query.families:
        return False
    if query.pids or query.process_names or query.uids is not None:
        return False
    possible = _possible_states(sock)
    if query.states is not None and not (possible & query.states):
        return False
    if not all(predicate(sock) for predicate in _socket_predicates(query)):
        return False
    # the expression, in each state the socket may have been in: any that could match
    return expression is None or any(expression(replace(sock, state=state)) is not False for state in possible)


class _GoneFacts(RecordFacts):
    """What an expression's terms can know of a socket seen only in its destroy notification: no holder
    (gone, and the notification names none), no answer from the kernel (a freed socket cannot be asked
    about: "could" is kept), namespace and container names from ``places``."""

    def holders(self, sock: Socket) -> tuple[Holder, ...]:
        return ()

    def kernel_says(self, leaf, sock: Socket) -> bool | None:
        return None


def gone_matcher(query: Query, places: Places | None = None) -> Matcher | None:
    """The query's filter expression as it applies to destroyed sockets (None without one)."""
    if query.filter is None:
        return None
    return matcher(query.filter.tree, _GoneFacts(places=places))


# ---------------------------------------------------------------------------------------------------
# The watch loop


def watch_query(options: LsOptions) -> Query:
    """``ls`` options as ``watch`` reads them: listeners unless -a, -l or --state says otherwise."""
    if not (options.all_states or options.listening or options.states):
        options = replace(options, listening=True)
    return build_query(options)


def check_interval(value: float, option: str = "interval") -> float:
    if not (math.isfinite(value) and value >= MIN_INTERVAL):
        raise UsageError(f"the {option} must be a number of seconds, at least {MIN_INTERVAL} (got {value})")
    return value


class Watcher:
    """Scans at an interval and reports what changed.

    With ``short_lived`` (the default) it also joins the kernel's destroy notifications where it may,
    in the watched namespace or, with ``--netns all``, in every namespace: those that exist when the
    watch starts and those each scan finds later (a namespace gone is left again: the subscription
    would keep it allocated); ``short_lived_note`` says why not otherwise. Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self, query: Query, *, short_lived: bool = True, report_first: bool = True, proc_root: str = "/proc"
    ) -> None:
        self.query = query
        self.proc_root = proc_root
        self.diff = SocketDiff()
        self.report_first = report_first
        self.short_lived_note: str | None = None
        self._feeds: list = []
        self._selector = selectors.DefaultSelector()
        self._netlink_tables: frozenset[tuple[Proto, Family]] | None = None  # where scans give cookies
        self._gone_matcher: Matcher | None = None  # the filter expression for destroyed sockets
        self._refused: set[int | None] = set()  # namespaces whose destroy groups could not be joined
        self._following = short_lived and self.query.every_namespace and self.query.backend is not Backend.PROC
        if short_lived:
            self._subscribe()

    def _tables(self) -> list[tuple[Proto, Family]]:
        return [
            (proto, family)
            for proto in Proto
            if proto in self.query.protocols and self.query.kernel_states(proto)
            for family in Family
            if family in self.query.families
        ]

    def _subscribe(self) -> None:
        from portscope.sources import netns

        if self.query.backend is Backend.PROC:
            self.short_lived_note = "sockets that live between two scans are not seen with --backend proc"
            return
        tables = self._tables()
        if not tables:
            return
        if self.query.every_namespace:
            from portscope.sources.namespaces import discover

            targets = [(netns.NetnsTarget(ref.path, ref.pid), ref.inode) for ref in discover(self.proc_root).namespaces]
        else:
            targets = [(netns.resolve(self.query.netns) if self.query.netns else None, None)]
        refused = [why for target, inode in targets if (why := self._join(tables, target, inode)) is not None]
        if refused:
            where = "" if len(targets) == 1 else f" in {len(refused)} namespace(s)"
            self.short_lived_note = f"sockets that live between two scans are not seen{where}: {refused[0]}"

    def _join(self, tables: list[tuple[Proto, Family]], target, inode: int | None = None) -> str | None:
        """Join the destroy groups in one namespace (``inode``: the one expected there); why not, if refused."""
        from portscope.sources import netlink
        from portscope.sources.destroyfeed import DestroyFeed

        # watching listeners only: the kernel drops the announcements of connections for us
        with_peer = STATE_GROUPS["connected"] | {State.ESTABLISHED}
        without_peer_only = self.query.states is not None and not (self.query.states & with_peer)
        try:
            feed = DestroyFeed(tables, target, without_peer_only=without_peer_only)
        except UsageError:  # --netns all: a namespace gone since it was found
            if not self.query.every_namespace:
                raise
            return None
        except (netlink.NetlinkUnavailable, SourceError) as exc:  # refused
            self._refused.add(inode)
            return str(exc)
        if inode is not None and feed.netns != inode:  # its path names another namespace by now
            feed.close()
            return None
        self._feeds.append(feed)
        self._selector.register(feed, selectors.EVENT_READ, feed)
        return None

    def _follow_namespaces(self, namespaces: Sequence[NetnsInfo]) -> None:
        """``--netns all``: join the namespaces a scan found that the watch does not follow yet, and leave
        those no longer found (their notifications were read before the scan)."""
        from portscope.sources import netns

        found = {info.inode: info for info in namespaces if info.error is None and info.path}
        for feed in [feed for feed in self._feeds if feed.netns not in found]:
            self._selector.unregister(feed)
            feed.close()
            self._feeds.remove(feed)
        followed = {feed.netns for feed in self._feeds} | self._refused
        tables = self._tables()
        for inode, info in found.items():
            if inode not in followed:
                self._join(tables, netns.NetnsTarget(info.path, info.pid), inode)

    @property
    def short_lived(self) -> bool:
        """Are destroy notifications being read (in at least one namespace)?"""
        return bool(self._feeds)

    def scan(self) -> WatchUpdate:
        """One scan now, compared with the last; notifications waiting are read first."""
        pending, lost = self._read_feeds()
        places = None
        if self.query.filter is not None and self.query.filter.needs_places:
            from portscope.commands.places import Places

            places = Places(self.proc_root)  # each scan its own: containers and namespaces come and go
        snap = snapshot(self.query, proc_root=self.proc_root, places=places)
        self._gone_matcher = gone_matcher(self.query, places)
        now = time.time()
        self._netlink_tables = frozenset((s.proto, s.family) for s in snap.sources if s.backend is Backend.NETLINK)
        if self._following and self._tables():
            self._follow_namespaces(snap.namespaces)
        events = self._short_lived_events(pending, now)
        events += self.diff.update(snap, now, report=self.report_first or self.diff.scans > 0)
        return WatchUpdate(now, tuple(events), snap, self.diff.scans, self.diff.current, lost=lost)

    def _read_feeds(self, feeds: Sequence | None = None) -> tuple[list[Socket], int]:
        sockets: list[Socket] = []
        lost = 0
        for feed in self._feeds if feeds is None else feeds:
            destroyed = feed.read()
            sockets += destroyed.sockets
            lost += destroyed.lost
        return sockets, lost

    def _short_lived_events(self, destroyed: Sequence[Socket], now: float) -> list[WatchEvent]:
        if self._netlink_tables is None:  # before the first scan nothing has been missed yet
            return []
        wanted = [
            sock
            for sock in destroyed
            if (sock.proto, sock.family) in self._netlink_tables
            and destroyed_matches(self.query, sock, self._gone_matcher)
        ]
        return self.diff.short_lived(wanted, now)

    def updates(self, interval: float, wake: Sequence[int] = ()) -> Iterator[WatchUpdate]:
        """Scan now and every ``interval`` seconds, forever; between scans, yield what destroy notifications
        bring as it arrives, and an update naming each of the ``wake`` file descriptors that becomes
        readable (the caller reads it, or it is reported again)."""
        check_interval(interval)
        keys = [self._selector.register(fd, selectors.EVENT_READ, None) for fd in wake]
        try:
            next_scan = time.monotonic()
            while True:
                now = time.monotonic()
                if now >= next_scan:
                    yield self.scan()
                    next_scan += interval
                    now = time.monotonic()
                    if next_scan <= now:  # a scan slower than the interval: rest one interval after it
                        next_scan = now + interval
                ready = self._selector.select(max(0.0, next_scan - now))
                feeds = [key.data for key, _ in ready if key.data is not None]
                woken = tuple(key.fd for key, _ in ready if key.data is None)
                if feeds:
                    destroyed, lost = self._read_feeds(feeds)
                    events = self._short_lived_events(destroyed, time.time())
                    if events or lost:
                        yield WatchUpdate(time.time(), tuple(events), None, self.diff.scans, lost=lost)
                if woken:
                    yield WatchUpdate(time.time(), (), None, self.diff.scans, woken=woken)
        finally:
            for key in keys:
                self._selector.unregister(key.fileobj)

    def close(self) -> None:
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()
        self._selector.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------
# wait


@dataclass_lite(frozen=True)
class WaitResult:
    target: WhoTarget
    free: bool  # waited for the port to be free (else: for a listener)
    holds: bool  # the condition held before the timeout
    elapsed: float  # seconds
    checks: int  # kernel dumps made
    snapshot: Snapshot | None  # listening: the listeners found, with their holders (empty on a timeout)
    report: BindReport | None  # free: the last can-bind answer
    timeout: float | None


NAMESPACE_RECHECK = 1.0  # seconds: a refusal that no socket explains (an address, a sysctl) is asked again this often


def _free_request(target: WhoTarget, template: BindRequest, udp: bool) -> BindRequest:
    """The can-bind request for ``wait --free``: the target's one port, address and protocol."""
    ports = target.ports[0]
    if len(target.ports) != 1 or ports.low != ports.high:
        raise UsageError(f"--free waits for one port, not a range: '{target.text}'")
    if udp and target.protocols == frozenset({Proto.TCP}):
        raise UsageError(f"'{target.text}' names TCP, but --udp was given")
    udp = udp or target.protocols == frozenset({Proto.UDP})
    where = "" if target.address is None else format_host(str(target.address))
    return replace(template, target=f"{where}:{ports.low}", udp=udp)


def _listening_query(target: WhoTarget, udp: bool, netns: str | None) -> Query:
    protocols = target.protocols
    if udp:
        if Proto.UDP not in protocols:
            raise UsageError(f"'{target.text}' names TCP, but --udp was given")
        protocols = frozenset({Proto.UDP})
    families = frozenset(Family)
    if target.address is not None and target.address.version == 6:
        families = frozenset({Family.IPV6})  # IPv4 addresses also show up v4-mapped on IPv6 sockets
    return Query(
        protocols=protocols,
        families=families,
        states=LISTENING,
        local_ports=target.ports,
        join_processes=False,
        netns=netns,
    )


def wait_for_port(
    port: str,
    *,
    free: bool = False,
    timeout: float | None = None,
    interval: float = 0.1,
    netns: str | None = None,
    udp: bool = False,
    family: Family | None = None,
    bind: BindRequest | None = None,
) -> WaitResult:
    """Wait until something listens on ``port`` (``who``'s forms: ``8080``, ``53/udp``, ``127.0.0.1:8080``,
    ``http``, ``8000-8100``), or with ``free`` until :func:`check_bind` answers yes for it.

    Each tick is one kernel dump filtered to the port; holders are looked up (the ``/proc`` walk) only
    for the answer. ``udp``: UDP only (with ``free``: a UDP socket); ``family``: a listener must take
    that family's traffic (with ``free``: what ``:PORT`` means, as can-bind's -4/-6). ``bind``: the new
    socket's options for ``free`` (its ``target``, ``udp`` and ``netns`` are filled in here).
    """
    check_interval(interval)
    if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
        raise UsageError(f"the timeout must be a number of seconds, 0 or more (got {timeout})")
    target = parse_target(port)
    if netns == ALL_NAMESPACES:
        raise UsageError("wait watches one network namespace: give its name, a pid or a path")
    if netns:
        from portscope.sources import netns as netns_module

        netns = netns_module.resolve(netns).path  # once: a container's name is not looked up at every tick
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    if free:
        request = _free_request(target, replace(bind or BindRequest(target=""), family=family), udp)
        request = replace(request, netns=netns)
        return _wait_free(target, request, started, deadline, interval, timeout)
    query = _listening_query(target, udp, netns)
    checks = 0
    while True:
        checks += 1
        snap = snapshot(query)
        if any(_listens(sock, target, family) for sock in snap.sockets):
            snap = snapshot(replace(query, join_processes=True))  # the holders, for the answer only
            found = tuple(sock for sock in snap.sockets if _listens(sock, target, family))
            if found:
                elapsed = time.monotonic() - started
                return WaitResult(target, False, True, elapsed, checks, replace(snap, sockets=found), None, timeout)
        if _timed_out(deadline, interval):
            empty = replace(snap, sockets=())
            return WaitResult(target, False, False, time.monotonic() - started, checks, empty, None, timeout)


def _listens(sock: Socket, target: WhoTarget, family: Family | None) -> bool:
    if not socket_matches(sock, target):
        return False
    return family is None or family in covered_families(sock)[0]


def _timed_out(deadline: float | None, interval: float) -> bool:
    """Sleep until the next tick; True when the deadline has passed instead."""
    now = time.monotonic()
    if deadline is not None and now >= deadline:
        return True
    time.sleep(interval if deadline is None else min(interval, deadline - now))
    return False


def _wait_free(
    target: WhoTarget,
    request: BindRequest,
    started: float,
    deadline: float | None,
    interval: float,
    timeout: float | None,
) -> WaitResult:
    """Ask can-bind when the sockets on the port change (a kernel dump per tick tells), and at most every
    :data:`NAMESPACE_RECHECK` seconds when nothing on the port explains the refusal."""
    proto = Proto.UDP if request.udp else Proto.TCP
    port = target.ports[0].low
    query = Query(
        protocols=frozenset({proto}),
        states=None,  # every state: TIME-WAIT and bound-only sockets hold a port too
        local_ports=(PortRange(port, port),),
        join_processes=False,
        netns=request.netns,
    )
    checks = 0
    fingerprint: frozenset | None = None
    report: BindReport | None = None
    asked_at = 0.0
    while True:
        checks += 1
        snap = snapshot(query)
        now_print = frozenset((socket_identity(s), s.state) for s in snap.sockets)
        unexplained = report is not None and not report.blockers
        if now_print != fingerprint or (unexplained and time.monotonic() - asked_at >= NAMESPACE_RECHECK):
            fingerprint = now_print
            report = check_bind(request)
            asked_at = time.monotonic()
            if report.verdict.value == "yes":
                return WaitResult(target, True, True, time.monotonic() - started, checks, None, report, timeout)
        if _timed_out(deadline, interval):
            return WaitResult(target, True, False, time.monotonic() - started, checks, None, report, timeout)
