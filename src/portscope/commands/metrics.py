"""Prometheus metrics as typed records: from one :func:`snapshot`, the families ``serve`` and ``export`` expose.

Everything here is plain data (:class:`MetricFamily` with label names and ``(label values, value)``
samples); ``render/prometheus.py`` turns it into the exposition formats, and is the only importer of
prometheus_client. Label values are the raw names (process, unit, container, namespace names); the
renderer makes them safe.

Cardinality is bounded by design:

- listeners are labelled by holder *names* (process, unit, container), never pids, inodes or command
  lines, so a restart keeps the series;
- connections are counted per local port *that has a listener* and state: client-side ephemeral ports
  never become labels, so 20,000 clients of one server add no series beyond their per-state counts;
- everything per listener and per port is cut at ``max_series`` (counted in
  ``portscope_series_truncated_total``); totals, expectations and portscope's own metrics always stay.

A long-running exporter (:class:`Exporter`) keeps no snapshot: each scrape builds its families and
drops the records, and only the last families are kept (reused for ``interval`` seconds).
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import field
from typing import TYPE_CHECKING

from portscope.commands.places import Places
from portscope.engine.snapshot import snapshot
from portscope.errors import PortscopeError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import Query, parse_port_range
from portscope.model.records import Holder, Proto, Snapshot, Socket, State

if TYPE_CHECKING:
    from portscope.sources.lineage import LineageReader

DEFAULT_MAX_SERIES = 10000
DEFAULT_LISTEN = "127.0.0.1:9717"
EVERY_ADDRESS = "::"  # --listen :PORT (IPv4 too, unless net.ipv6.bindv6only)

# The exposed names: README "Monitoring many hosts" documents each one.
LISTENER_INFO = "portscope_listener_info"
LISTENER_START = "portscope_listener_start_time_seconds"
LISTEN_QUEUE = "portscope_listen_queue"
LISTEN_BACKLOG = "portscope_listen_backlog"
CONNECTIONS = "portscope_connections"
SOCKETS = "portscope_sockets"
BOUND_ONLY = "portscope_bound_only_sockets"
HIDDEN_OWNERS = "portscope_hidden_owner_sockets"
EXPECTED_UP = "portscope_expected_listener_up"
SCRAPE_DURATION = "portscope_scrape_duration_seconds"
SCRAPE_ERRORS = "portscope_scrape_errors_total"
SERIES_TRUNCATED = "portscope_series_truncated_total"

LISTENER_LABELS = ("netns", "proto", "family", "address", "port", "process", "unit", "container")
CONNECTION_LABELS = ("netns", "proto", "port", "state")
SOCKET_LABELS = ("netns", "proto", "state")
EXPECTED_LABELS = ("port", "proto", "expect")

LISTENING = (State.LISTEN, State.UNCONN)  # UDP: bound and unconnected
# The states a socket of each protocol can be in, each given a count (0 included) per namespace.
PROTO_STATES: dict[Proto, tuple[State, ...]] = {
    Proto.TCP: tuple(s for s in State if s not in (State.UNCONN, State.CLOSE)),
    Proto.UDP: (State.UNCONN, State.ESTABLISHED),
}


class MetricType(str, enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"  # its name ends in _total


Labels = tuple[str, ...]


@dataclass_lite(frozen=True, slots=True)
class MetricFamily:
    """One metric: its name as exposed, its type, its label names, and one sample per label-value tuple."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    samples: tuple[tuple[Labels, float], ...]


@dataclass_lite(frozen=True, slots=True)
class Expectation:
    """``PORT/PROTO=MATCH``: the port is expected to be held by a process, unit or container named MATCH."""

    port: int
    proto: Proto
    match: str


@dataclass_lite(frozen=True)
class ExporterOptions:
    netns: str | None = None  # as --netns: a name, pid, path, container, or "all"
    expectations: tuple[Expectation, ...] = ()
    max_series: int = DEFAULT_MAX_SERIES  # series per scrape, portscope's own and the totals always kept
    interval: float = 0.0  # serve: at most one snapshot per this many seconds (0: one per scrape)

    def __post_init__(self) -> None:
        if self.max_series < 1:
            raise UsageError(f"--max-series must be at least 1, not {self.max_series}")
        if not self.interval >= 0:  # NaN too
            raise UsageError(f"--interval must be 0 or more seconds, not {self.interval}")


@dataclass_lite(frozen=True)
class Scrape:
    """The families of one scrape. ``error``: why its snapshot failed (only portscope's own metrics then)."""

    families: tuple[MetricFamily, ...]
    error: str | None = None
    truncated: int = 0  # series left out of this scrape (over max_series)

    def family(self, name: str) -> MetricFamily | None:
        return next((f for f in self.families if f.name == name), None)


# ---------------------------------------------------------------------------------------------------
# Arguments


def parse_listen(text: str) -> tuple[str, int]:
    """``--listen``: ``127.0.0.1:9717``, ``[::1]:9717``, ``localhost:9717``, or ``:9717`` for every address.

    A bare port is refused: which addresses an exporter is reachable on is said, never assumed."""
    from portscope.model.endpoint import parse_endpoint

    if ":" not in text:
        raise UsageError(f"--listen '{text}': give ADDR:PORT (127.0.0.1:9717), or :PORT for every address")
    endpoint = parse_endpoint(text, None, hostnames=True, allow_zero=True)
    if endpoint.proto is not None:
        raise UsageError(f"--listen '{text}': no /PROTO here (the exporter speaks HTTP over TCP)")
    host = str(endpoint.address) if endpoint.address is not None else endpoint.hostname or EVERY_ADDRESS
    return host, endpoint.ports.low


# ---------------------------------------------------------------------------------------------------
# Expectations


def parse_expectation(text: str, services=None) -> Expectation:
    """``443/tcp=nginx``, ``https/tcp=nginx.service``, ``53/udp=unbound``: one --expect value."""
    spec, equals, match = text.partition("=")
    spec, match = spec.strip(), match.strip()
    if not equals or not match:
        raise UsageError(f"expectation '{text}': use PORT/PROTO=NAME (e.g. 443/tcp=nginx)")
    port_text, slash, proto_text = spec.rpartition("/")
    if not slash:
        raise UsageError(f"expectation '{text}': name the protocol, as in {spec}/tcp={match}")
    try:
        proto = Proto(proto_text.lower())
    except ValueError:
        raise UsageError(f"expectation '{text}': unknown protocol '{proto_text}' (tcp or udp)") from None
    if services is None and not port_text.isdigit():
        from portscope.sources.services import load_services  # a service name: only then

        services = load_services()
    port = parse_port_range(port_text, services=services, proto=proto, ranges=False).low
    return Expectation(port, proto, match)


def parse_expectations(text: str, origin: str = "expectations") -> tuple[Expectation, ...]:
    """An expectations file: one ``PORT/PROTO=NAME`` a line; blank lines and ``#`` comments are ignored."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        try:
            found.append(parse_expectation(body))
        except UsageError as exc:
            raise UsageError(f"{origin}, line {number}: {exc}") from None
    return tuple(found)


def read_expectations(path: str) -> tuple[Expectation, ...]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read(1 << 20)
    except OSError as exc:
        raise UsageError(f"cannot read expectations file {path}: {exc.strerror or exc}") from None
    return parse_expectations(text, path)


# ---------------------------------------------------------------------------------------------------
# One snapshot -> families


@dataclass_lite
class _Listener:
    labels: Labels
    start: float | None
    queue: int | None  # TCP accept queue (netlink only)
    backlog: int | None
    names: frozenset[str]  # what an expectation may name: processes, executables, units, containers

    def merge(self, other: _Listener) -> None:
        """Two sockets with the same labels (a SO_REUSEPORT group, several devices): one series, summed."""
        starts = [s for s in (self.start, other.start) if s is not None]
        self.start = min(starts) if starts else None
        self.queue = None if self.queue is None or other.queue is None else self.queue + other.queue
        self.backlog = None if self.backlog is None or other.backlog is None else self.backlog + other.backlog
        self.names |= other.names


@dataclass_lite
class _Budget:
    left: int
    truncated: int = 0

    def take(self, count: int) -> bool:
        if count <= self.left:
            self.left -= count
            return True
        self.left = 0  # in order: once something is cut, everything after it is too
        self.truncated += count
        return False


@dataclass_lite
class _Namer:
    """The names a scrape attaches to sockets, each looked up once: namespaces, units, containers."""

    places: Places
    proc_root: str
    _units: dict[tuple[int, float | None], str | None] = field(default_factory=dict)
    _netns: dict[int | None, str] = field(default_factory=dict)
    _lineages: LineageReader | None = None

    def netns(self, inode: int | None) -> str:
        name = self._netns.get(inode)
        if name is None:
            found = self.places.netns_name(inode) if inode is not None else None
            name = self._netns[inode] = found or (str(inode) if inode is not None else "")
        return name

    def unit(self, holder: Holder) -> str | None:
        process = holder.process
        key = (process.pid, process.start_time)
        if key not in self._units:
            if self._lineages is None:
                from portscope.sources.lineage import LineageReader

                self._lineages = LineageReader(self.proc_root)
            # anchored: a pid reused since the walk gives no unit
            lineage = self._lineages.lineage(process.pid, process.start_time)
            self._units[key] = lineage.unit if lineage is not None else None
        return self._units[key]

    def container(self, sock: Socket, holders: tuple[Holder, ...]) -> tuple[str, frozenset[str]]:
        """The container's name (its short id when it has none) and every name it answers to; for a
        forwarder's listener (docker-proxy, conmon, rootlessport), the container it forwards to."""
        found = self.places.container(sock, holders)
        if found is None:
            found = next((f.container for _, f in self.places.forwards(sock, holders) if f.container), None)
        if found is None:
            return "", frozenset()
        shown = found.name or found.short_id
        return shown, frozenset(n for n in (found.name, found.short_id, found.id) if n)


def _joined(values: Iterable[str | None]) -> str:
    return ",".join(sorted({v for v in values if v}))


def _listener(sock: Socket, holders: tuple[Holder, ...], namer: _Namer) -> _Listener:
    processes = _joined(h.process.name for h in holders)
    units = [namer.unit(h) for h in holders]
    container, container_names = namer.container(sock, holders)
    labels = (
        namer.netns(sock.netns),
        sock.proto.value,
        sock.family.value,
        sock.local_address,
        str(sock.local_port),
        processes,
        _joined(units),
        container,
    )
    starts = [h.process.start_time for h in holders if h.process.start_time is not None]
    names = {h.process.name for h in holders}
    names |= {os.path.basename(h.process.cmdline[0]) for h in holders if h.process.cmdline}
    for unit in filter(None, units):
        names |= {unit, unit.removesuffix(".service")}
    tcp = sock.proto is Proto.TCP
    return _Listener(
        labels=labels,
        start=min(starts) if starts else None,
        queue=sock.recv_q if tcp and sock.send_q is not None else None,
        backlog=sock.send_q if tcp else None,
        names=frozenset(names - {""}) | container_names,
    )


def _listener_order(listener: _Listener) -> tuple:
    netns, proto, family, address, port, *_ = listener.labels
    return (netns != "host", netns, proto, int(port), family, address, listener.labels)


def build_families(
    snap: Snapshot, options: ExporterOptions, *, places: Places | None = None, proc_root: str = "/proc"
) -> Scrape:
    """The families of one snapshot (all states, with processes), within ``options.max_series``; portscope's
    own (duration, errors, truncated) are the exporter's to add."""
    namer = _Namer(places if places is not None else Places(proc_root=proc_root), proc_root)
    listeners: dict[Labels, _Listener] = {}
    listening_ports: set[tuple[int | None, Proto, int]] = set()
    for sock in snap.sockets:
        if sock.state in LISTENING:
            found = _listener(sock, snap.holders_of(sock), namer)
            known = listeners.get(found.labels)
            if known is None:
                listeners[found.labels] = found
            else:
                known.merge(found)
            listening_ports.add((sock.netns, sock.proto, sock.local_port))

    totals: dict[Labels, int] = {}
    connections: dict[Labels, int] = {}
    bound: dict[str, int] = {}
    # every namespace read gets its totals, an empty one too
    namespaces: dict[int | None, None] = dict.fromkeys(i.inode for i in snap.namespaces if i.error is None)
    if snap.netns is not None:
        namespaces[snap.netns] = None
    for sock in snap.sockets:
        namespaces[sock.netns] = None
        netns = namer.netns(sock.netns)
        state = sock.state.value
        key = (netns, sock.proto.value, state)
        totals[key] = totals.get(key, 0) + 1
        if sock.state is State.BOUND:
            bound[netns] = bound.get(netns, 0) + 1
        elif sock.state not in LISTENING and (sock.netns, sock.proto, sock.local_port) in listening_ports:
            ckey = (netns, sock.proto.value, str(sock.local_port), state)
            connections[ckey] = connections.get(ckey, 0) + 1
    for netns, proto, port in listening_ports:  # every listening port has its established count, 0 too
        ckey = (namer.netns(netns), proto.value, str(port), State.ESTABLISHED.value)
        connections.setdefault(ckey, 0)

    bound_known = snap.bound_visible is not False
    socket_samples = []
    netns_labels = [namer.netns(inode) for inode in namespaces]
    for netns in netns_labels:
        for proto, states in PROTO_STATES.items():
            for state in states:
                if state is State.BOUND and not bound_known:
                    continue  # cannot be listed here: no count rather than a wrong 0
                key = (netns, proto.value, state.value)
                socket_samples.append((key, float(totals.get(key, 0))))
    bound_samples = [((netns,), float(bound.get(netns, 0))) for netns in netns_labels] if bound_known else []
    expected = [
        ((str(e.port), e.proto.value, e.match), 1.0 if _expectation_met(e, listeners.values()) else 0.0)
        for e in options.expectations
    ]

    # portscope's own three, the expectations and the totals always stay; per listener and per port may be cut
    budget = _Budget(max(0, options.max_series - 4 - len(expected) - len(socket_samples) - len(bound_samples)))
    info, start, queue, backlog = [], [], [], []
    for listener in sorted(listeners.values(), key=_listener_order):
        series = [(info, 1.0)]
        if listener.start is not None:
            series.append((start, listener.start))
        if listener.queue is not None and listener.backlog is not None:
            series += [(queue, float(listener.queue)), (backlog, float(listener.backlog))]
        if budget.take(len(series)):
            for samples, value in series:
                samples.append((listener.labels, value))
    connection_samples = []
    for key in sorted(connections, key=lambda k: (k[0] != "host", k[0], k[1], int(k[2]), k[3])):
        if budget.take(1):
            connection_samples.append((key, float(connections[key])))

    gauge = MetricType.GAUGE
    families = [
        MetricFamily(LISTENER_INFO, gauge, LISTENER_LABELS, tuple(info)),
        MetricFamily(LISTENER_START, gauge, LISTENER_LABELS, tuple(start)),
        MetricFamily(LISTEN_QUEUE, gauge, LISTENER_LABELS, tuple(queue)),
        MetricFamily(LISTEN_BACKLOG, gauge, LISTENER_LABELS, tuple(backlog)),
        MetricFamily(CONNECTIONS, gauge, CONNECTION_LABELS, tuple(connection_samples)),
        MetricFamily(SOCKETS, gauge, SOCKET_LABELS, tuple(socket_samples)),
        MetricFamily(HIDDEN_OWNERS, gauge, (), (((), float(snap.join.hidden_sockets)),)),
        MetricFamily(EXPECTED_UP, gauge, EXPECTED_LABELS, tuple(expected)),
    ]
    if bound_known:
        families.append(MetricFamily(BOUND_ONLY, gauge, ("netns",), tuple(bound_samples)))
    return Scrape(tuple(families), None, budget.truncated)


def _expectation_met(expectation: Expectation, listeners: Iterable[_Listener]) -> bool:
    port, proto = str(expectation.port), expectation.proto.value
    return any(
        listener.labels[4] == port and listener.labels[1] == proto and expectation.match in listener.names
        for listener in listeners
    )


# ---------------------------------------------------------------------------------------------------
# Scrapes


def metrics_query(options: ExporterOptions) -> Query:
    """Every TCP and UDP socket in every state, with processes: listeners, their connections, the totals."""
    return Query(states=None, join_processes=True, netns=options.netns)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, PortscopeError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Exporter:
    """Scrapes for a long-running exporter: one snapshot per scrape (at most one per ``interval``).

    Safe to call from several HTTP threads at once: one snapshot is taken at a time, and scrapes that
    waited meanwhile share the next one (one that started after they asked) instead of queueing a snapshot
    each: a Prometheus that times out and retries, or several Prometheus servers, never pile snapshots up on
    a slow host. A failed snapshot never raises here: it is counted in ``portscope_scrape_errors_total``
    and said in :attr:`Scrape.error`.
    """

    def __init__(
        self,
        options: ExporterOptions,
        *,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.monotonic,
        take: Callable[[Query], Snapshot] | None = None,
        places: Callable[[], Places] | None = None,
    ) -> None:
        """``take`` and ``places`` stand in for :func:`snapshot` and a fresh :class:`Places` per scrape."""
        self.options = options
        self.proc_root = proc_root
        self._places = places if places is not None else (lambda: Places(proc_root=proc_root))
        self._clock = clock
        self._take = take if take is not None else (lambda query: snapshot(query, proc_root=proc_root))
        self._lock = threading.Lock()
        self._last: Scrape | None = None
        self._last_started = 0.0  # when the snapshot of _last began (the clock's time)
        self._errors = 0
        self._truncated = 0

    def scrape(self) -> Scrape:
        asked = self._clock()
        with self._lock:
            last = self._last
            if last is not None and (self._last_started >= asked or asked - self._last_started < self.options.interval):
                return last  # begun after this scrape asked (it waited for it), or fresh enough for --interval
            self._last_started = self._clock()
            started = time.perf_counter()
            try:
                built = self._build()
                error = None
            except Exception as exc:  # one failed scrape never ends the exporter
                built, error = Scrape(()), _error_text(exc)
                self._errors += 1
            self._truncated += built.truncated
            self._last = Scrape(built.families + self._own(time.perf_counter() - started), error, built.truncated)
            return self._last

    def collect(self) -> Scrape:
        """One snapshot's families, raising what went wrong (``export``: a failed run is an error)."""
        with self._lock:
            started = time.perf_counter()
            built = self._build()
            self._truncated += built.truncated
            return Scrape(built.families + self._own(time.perf_counter() - started), None, built.truncated)

    def _build(self) -> Scrape:
        snap = self._take(metrics_query(self.options))
        return build_families(snap, self.options, places=self._places(), proc_root=self.proc_root)

    def _own(self, duration: float) -> tuple[MetricFamily, ...]:
        return (
            MetricFamily(SCRAPE_DURATION, MetricType.GAUGE, (), (((), duration),)),
            MetricFamily(SCRAPE_ERRORS, MetricType.COUNTER, (), (((), float(self._errors)),)),
            MetricFamily(SERIES_TRUNCATED, MetricType.COUNTER, (), (((), float(self._truncated)),)),
        )


def collect_metrics(options: ExporterOptions, *, proc_root: str = "/proc") -> Scrape:
    """``portscope export``: one snapshot's metric families (errors are raised, not counted)."""
    return Exporter(options, proc_root=proc_root).collect()
