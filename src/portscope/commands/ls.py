"""``ls`` as a library call: user-level options -> :class:`Query` -> :class:`Snapshot`."""

from __future__ import annotations

from dataclasses import dataclass

from portscope.engine.snapshot import snapshot
from portscope.errors import UsageError
from portscope.model.query import (
    DEFAULT_STATES,
    STATE_GROUPS,
    Query,
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


def _port_ranges(values: tuple[str, ...]):
    if not values:
        return None
    services = load_services()
    return tuple(parse_port_range(v, services=services) for v in split_values(values))


def _pids(values: tuple[str, ...]) -> frozenset[int] | None:
    if not values:
        return None
    pids = set()
    for value in split_values(values):
        if not value.strip().isdigit() or int(value) <= 0:
            raise UsageError(f"not a pid: {value!r}")
        pids.add(int(value))
    return frozenset(pids)


def build_query(options: LsOptions) -> Query:
    protocols = {p for p, on in ((Proto.TCP, options.tcp), (Proto.UDP, options.udp)) if on} or set(Proto)
    families = {f for f, on in ((Family.IPV4, options.ipv4), (Family.IPV6, options.ipv6)) if on} or set(Family)
    if options.states:
        states = parse_states(split_values(options.states))
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
        local_ports=_port_ranges(options.sport),
        remote_ports=_port_ranges(options.dport),
        any_ports=_port_ranges(options.ports),
        local_networks=tuple(parse_network(v) for v in split_values(options.src)) or None,
        remote_networks=tuple(parse_network(v) for v in split_values(options.dst)) or None,
        pids=_pids(options.pids),
        process_names=tuple(split_values(options.process_names)) or None,
        uids=frozenset(parse_user(u) for u in split_values(options.users)) or None,
        join_processes=options.join_processes,
        backend=backend,
        netns=options.netns,
    )


def list_sockets(options: LsOptions) -> Snapshot:
    return snapshot(build_query(options))
