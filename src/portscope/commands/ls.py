"""``ls`` as a library call: user-level options -> :class:`Query` -> :class:`Snapshot`."""

from __future__ import annotations

from dataclasses import dataclass

from portscope.engine.snapshot import snapshot
from portscope.errors import UsageError
from portscope.model.query import (
    DEFAULT_STATES,
    STATE_GROUPS,
    Query,
    parse_decimal,
    parse_network,
    parse_port_range,
    parse_states,
    parse_user,
    split_values,
)
from portscope.model.records import Backend, Family, Proto, Snapshot
from portscope.sources.services import load_services


@dataclass(frozen=True)
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


def _networks(values: tuple[str, ...], option: str):
    return tuple(parse_network(v) for v in split_values(values, option)) or None


def build_query(options: LsOptions) -> Query:
    protocols = {p for p, on in ((Proto.TCP, options.tcp), (Proto.UDP, options.udp)) if on}
    if not protocols and not options.unix:
        protocols = set(Proto)
    families = {f for f, on in ((Family.IPV4, options.ipv4), (Family.IPV6, options.ipv6)) if on} or set(Family)
    pickers = (("--state", options.states), ("-l", options.listening), ("-a", options.all_states))
    chosen = [name for name, on in pickers if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} exclude each other (each picks the states to show)")
    if options.states:
        states = parse_states(split_values(options.states, "--state"))
    elif options.listening:
        states = STATE_GROUPS["listening"]
    elif options.all_states:
        states = STATE_GROUPS["all"]
    else:
        states = DEFAULT_STATES
    try:
        backend = Backend(options.backend)
    except ValueError:
        raise UsageError(f"unknown backend {options.backend!r} (auto, netlink, proc)") from None
    return Query(
        protocols=frozenset(protocols),
        families=frozenset(families),
        states=states,
        local_ports=_port_ranges(options.sport, "--sport"),
        remote_ports=_port_ranges(options.dport, "--dport"),
        any_ports=_port_ranges(options.ports, "--port"),
        local_networks=_networks(options.src, "--src"),
        remote_networks=_networks(options.dst, "--dst"),
        pids=_pids(options.pids),
        process_names=tuple(split_values(options.process_names, "--process")) or None,
        uids=frozenset(parse_user(u) for u in split_values(options.users, "--user")) or None,
        join_processes=options.join_processes,
        backend=backend,
        netns=options.netns,
        unix=options.unix,
    )


def list_sockets(options: LsOptions) -> Snapshot:
    return snapshot(build_query(options))
