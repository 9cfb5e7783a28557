"""``ls`` as a library call: user-level options -> :class:`Query` -> :class:`Snapshot`."""

from __future__ import annotations

from portscope.engine.snapshot import snapshot
from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import (
    ALL_NAMESPACES,
    DEFAULT_STATES,
    STATE_GROUPS,
    Query,
    parse_decimal,
    parse_port_range,
    parse_states,
    parse_user,
    split_values,
)
from portscope.model.records import Backend, Detail, Family, Proto, Snapshot
from portscope.sources.services import load_services

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from portscope.commands.places import Places
    from portscope.model.filter import Filter
    from portscope.model.records import Socket


@dataclass_lite(frozen=True)
class LsOptions:
    all_states: bool = False
    listening: bool = False
    tcp: bool = False
    udp: bool = False
    unix: bool = False  # UNIX sockets: alone, or beside TCP/UDP when -t/-u are given too (as ss -x)
    ipv4: bool = False
    ipv6: bool = False
    states: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    sport: tuple[str, ...] = ()
    dport: tuple[str, ...] = ()
    src: tuple[str, ...] = ()
    dst: tuple[str, ...] = ()
    pids: tuple[str, ...] = ()
    process_names: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    join_processes: bool = True
    backend: str = "auto"
    netns: str | None = None
    expression: tuple[str, ...] = ()  # an ss filter expression, as words (model/filter.py)
    extended: bool = False  # -e: uid, inode, cookie, v6only, device
    timers: bool = False  # -o: timers with their retransmission counts
    memory: bool = False  # -m: socket memory
    info: bool = False  # -i: TCP internals


class _Lookups:
    """What parsing an expression looks up: /etc/services, the user database, host names."""

    def __init__(self) -> None:
        self._services = None

    def service_port(self, name: str) -> int:
        if self._services is None:
            self._services = load_services()
        return self._services.port_of(name)

    def user_id(self, text: str) -> int:
        return parse_user(text)

    def host_addresses(self, name: str) -> list[str]:
        import socket

        found: list[str] = []
        for family in (socket.AF_INET, socket.AF_INET6):  # as ss: the name's IPv4 and IPv6 addresses
            try:
                infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
            except (OSError, UnicodeError, ValueError):
                continue
            found += [str(info[4][0]).partition("%")[0] for info in infos]
        return list(dict.fromkeys(found))


def parse_expression(words: tuple[str, ...] | list[str]) -> Filter | None:
    """An ss filter expression (``ls`` EXPRESSION): None for no words; UsageError naming the bad word."""
    if not words:
        return None
    from portscope.model.filter import parse_filter  # only for an expression: not on every listing's start-up

    return parse_filter(words, _Lookups())


PID_MAX = 4194304  # PID_MAX_LIMIT: the kernel's ceiling for pid_max


def _port_ranges(values: tuple[str, ...], option: str):
    if not values:
        return None
    services = load_services()
    return tuple(parse_port_range(v, services=services) for v in split_values(values, option))


def _pids(values: tuple[str, ...]) -> frozenset[int] | None:
    if not values:
        return None
    return frozenset(parse_decimal(value, "pid", 1, PID_MAX) for value in split_values(values, "--pid"))


def _networks(values: tuple[str, ...], option: str, netns: str | None):
    if not values:
        return None
    from portscope.model.endpoint import ScopedNetwork, parse_network  # ipaddress: only for --src/--dst

    networks = tuple(parse_network(v) for v in split_values(values, option)) or None
    for network in networks or ():
        if isinstance(network, ScopedNetwork) and netns != ALL_NAMESPACES:
            from portscope.sources.zones import check_zone

            check_zone(network.zone, netns)
    return networks


def build_query(options: LsOptions) -> Query:
    protocols = {p for p, on in ((Proto.TCP, options.tcp), (Proto.UDP, options.udp)) if on}
    if not protocols and not options.unix:
        protocols = set(Proto)
    families = {f for f, on in ((Family.IPV4, options.ipv4), (Family.IPV6, options.ipv6)) if on} or set(Family)
    pickers = (("--state", options.states), ("-l", options.listening), ("-a", options.all_states))
    chosen = [name for name, on in pickers if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} exclude each other (each picks the states to show)")
    expression = parse_expression(options.expression)
    if expression is not None and options.unix:
        raise UsageError("a filter expression selects TCP and UDP sockets; give it without -x/--unix")
    if options.states:
        states = parse_states(split_values(options.states, "--state"))
    elif options.listening:
        states = STATE_GROUPS["listening"]
    elif options.all_states or (expression is not None and expression.mentions_states):
        states = STATE_GROUPS["all"]  # an expression that names states picks them, as in ss
    else:
        states = DEFAULT_STATES
    try:
        backend = Backend(options.backend)
    except ValueError:
        raise UsageError(f"unknown backend '{options.backend}' (auto, netlink, proc)") from None
    return Query(
        protocols=frozenset(protocols),
        families=frozenset(families),
        states=states,
        local_ports=_port_ranges(options.sport, "--sport"),
        remote_ports=_port_ranges(options.dport, "--dport"),
        any_ports=_port_ranges(options.ports, "--port"),
        local_networks=_networks(options.src, "--src", options.netns),
        remote_networks=_networks(options.dst, "--dst", options.netns),
        pids=_pids(options.pids),
        process_names=tuple(split_values(options.process_names, "--process")) or None,
        uids=frozenset(parse_user(u) for u in split_values(options.users, "--user")) or None,
        join_processes=options.join_processes,
        backend=backend,
        netns=options.netns,
        unix=options.unix,
        filter=expression,
        details=frozenset(
            detail
            for detail, on in (
                (Detail.EXTENDED, options.extended),
                (Detail.TIMERS, options.timers),
                (Detail.MEMORY, options.memory),
                (Detail.INFO, options.info),
            )
            if on
        ),
    )


def list_sockets(
    options: LsOptions, *, places: Places | None = None, meanwhile: Callable[[Sequence[Socket]], object] | None = None
) -> Snapshot:
    """``ls``: the sockets ``options`` ask for. ``places`` names namespaces and containers for the filter's
    ``container`` and ``netns`` terms (one is made when needed and not given); ``meanwhile``: as for
    :func:`portscope.engine.snapshot.snapshot`."""
    query = build_query(options)
    if places is None and query.filter is not None and query.filter.needs_places:
        from portscope.commands.places import Places

        places = Places()
    return snapshot(query, places=places, meanwhile=meanwhile)
