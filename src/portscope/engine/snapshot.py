"""The one library entry point: :func:`snapshot` answers "which sockets exist here, and who holds them".

Every command calls it. Filters run as early as they can: states and ports in the kernel (netlink),
addresses and uids while decoding results, processes after the single /proc walk.
"""

from __future__ import annotations

import _socket as socket_module  # (not socket.py: see sources/netlink.py)
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from portscope.engine.parallel import DEFAULT, Parallelism
from portscope.errors import SourceError, UsageError
from portscope.model.query import PortRange, Query, port_in_ranges
from portscope.model.records import (
    Backend,
    Family,
    Holder,
    JoinReport,
    NetnsInfo,
    Proto,
    ProtoSource,
    Snapshot,
    Socket,
    State,
    UnixSocket,
)
from portscope.sources import netlink, netns, procnet
from portscope.sources.fdscan import BackgroundWalk, open_files
from portscope.sources.join import join_processes

if TYPE_CHECKING:
    from portscope.sources.namespaces import NamespaceRef

Predicate = Callable[[Socket], bool]


def snapshot(query: Query, *, proc_root: str = "/proc", parallelism: Parallelism = DEFAULT) -> Snapshot:
    """The sockets ``query`` asks for, with their holders. Safe to call from several threads at once.

    ``parallelism``: when forked helpers may use a second CPU (:mod:`portscope.engine.parallel`);
    ``parallel.IN_PROCESS`` keeps all the work in this process.
    """
    target = netns.resolve(query.netns) if query.netns and not query.every_namespace else None
    port_filtered = bool(query.local_ports or query.remote_ports or query.any_ports)
    walk = None
    if parallelism.walk_ahead(
        needs_processes=query.needs_processes, port_filtered=port_filtered, open_files=lambda: open_files(proc_root)
    ):
        walk = BackgroundWalk.start(proc_root)
    try:
        return _snapshot(query, target, proc_root, walk, parallelism)
    finally:
        if walk is not None:
            walk.close()


def _snapshot(query: Query, target, proc_root: str, walk: BackgroundWalk | None, parallelism: Parallelism) -> Snapshot:
    if query.every_namespace:
        collection = _collect_every_namespace(query, proc_root, parallelism, walking_ahead=walk is not None)
    else:
        collection = _collect(query, target, parallelism, walking_ahead=walk is not None)
    sockets: Sequence[Socket] = collection.sockets

    unix_sockets: Sequence[UnixSocket] = collection.unix_sockets

    predicates = _socket_predicates(query)
    if predicates:
        sockets = [s for s in sockets if all(p(s) for p in predicates)]

    holders: dict[int, tuple[Holder, ...]] = {}
    report = JoinReport(joined=False)
    if query.needs_processes:
        # UNIX sockets and their peers join through the same single walk: their inodes are wanted too
        joined = [*sockets, *unix_sockets] if unix_sockets else sockets
        peers = [u.peer_inode for u in unix_sockets if u.peer_inode is not None]
        holders, report = join_processes(
            joined, proc_root, prefetched=walk, split_walk=parallelism.split_walk, also_wanted=peers
        )
        process_filter = _process_predicate(query, holders)
        if process_filter is not None:
            sockets = [s for s in sockets if process_filter(s)]
            unix_sockets = [u for u in unix_sockets if process_filter(u)]
    elif query.uids is not None:
        sockets = [s for s in sockets if s.uid in query.uids]
        unix_sockets = [u for u in unix_sockets if u.uid in query.uids]

    return Snapshot(
        sockets=tuple(sockets),
        holders=holders,
        sources=collection.sources,
        join=report,
        netns=collection.netns_inode,
        bound_visible=collection.bound_visible,
        warnings=collection.warnings,
        namespaces=collection.namespaces,
        unix_sockets=tuple(unix_sockets),
        unix_source=collection.unix_source,
    )


# ---------------------------------------------------------------------------------------------------
# Collection


@dataclass(frozen=True, slots=True)
class Collection:
    """The sockets read from the kernel (or /proc), before the filters that run in Python."""

    sockets: tuple[Socket, ...]
    sources: tuple[ProtoSource, ...]
    bound_visible: bool | None  # could bound-only TCP sockets be listed? None: not asked for
    warnings: tuple[str, ...]
    netns_inode: int | None
    namespaces: tuple[NetnsInfo, ...] = ()  # --netns all: each namespace looked at
    unix_sockets: tuple[UnixSocket, ...] = ()
    unix_source: Backend | None = None  # None: UNIX sockets not asked for


def _collect(
    query: Query, target: netns.NetnsTarget | None, parallelism: Parallelism, *, walking_ahead: bool
) -> Collection:
    proc_only_dir = None
    if target is not None and target.pid is not None and query.backend is Backend.PROC:
        # /proc/<pid>/net shows that process's namespace without entering it (no CAP_SYS_ADMIN needed)
        proc_only_dir = f"/proc/{target.pid}/net"
    if proc_only_dir is not None:
        ns_inode = os.stat(target.path).st_ino
        return _collect_proc_only(query, proc_only_dir, ns_inode)
    with netns.entered(target) as ns_inode:
        return _collect_here(query, ns_inode, parallelism, walking_ahead)


def _collect_every_namespace(
    query: Query, proc_root: str, parallelism: Parallelism, *, walking_ahead: bool
) -> Collection:
    """Each network namespace of the host dumped once: sock_diag inside it, or its /proc/PID/net when it
    cannot be entered. A namespace that cannot be read is kept with its reason; none readable at all is an
    error (the system could not be read)."""
    from portscope.sources import namespaces  # --netns all only: not on every listing's start-up

    discovery = namespaces.discover(proc_root)
    sockets: list[Socket] = []
    unix_sockets: list[UnixSocket] = []
    unix_sources: set[Backend] = set()
    sources: dict[ProtoSource, None] = {}
    warnings: dict[str, None] = {}
    infos: list[NetnsInfo] = []
    bound_visible: bool | None = None
    for ref in discovery.namespaces:
        info = NetnsInfo(ref.inode, ref.inode == discovery.host_inode, ref.names, ref.pid, ref.path)
        try:
            collection = _collect_namespace(query, ref, parallelism, walking_ahead)
        except (SourceError, UsageError) as exc:  # vanished meanwhile, or not ours to enter
            infos.append(replace(info, error=str(exc)))
            continue
        infos.append(info)
        sockets += collection.sockets
        unix_sockets += collection.unix_sockets
        if collection.unix_source is not None:
            unix_sources.add(collection.unix_source)
        sources.update(dict.fromkeys(collection.sources))
        warnings.update(dict.fromkeys(collection.warnings))
        if collection.bound_visible is not None:
            bound_visible = collection.bound_visible and bound_visible is not False
    if infos and all(info.error for info in infos):
        raise SourceError("--netns all", f"no network namespace could be read ({infos[0].error})")
    if discovery.processes_refused:
        warnings[
            f"the network namespaces of {discovery.processes_refused} process(es) of other users could not be "
            "looked at (access refused)"
        ] = None
    unread = [info for info in infos if info.error]
    if unread:
        warnings[
            f"{len(unread)} network namespace(s) could not be read: "
            + "; ".join(f"{info.inode} ({info.error})" for info in unread[:3])
        ] = None
    unix_source = None
    if unix_sources:  # the one backend that served every namespace; proc if any needed the fallback
        unix_source = Backend.PROC if Backend.PROC in unix_sources else Backend.NETLINK
    return Collection(
        tuple(sockets),
        tuple(sources),
        bound_visible,
        tuple(warnings),
        None,
        tuple(infos),
        tuple(unix_sockets),
        unix_source,
    )


def _collect_namespace(query: Query, ref: NamespaceRef, parallelism: Parallelism, walking_ahead: bool) -> Collection:
    target = netns.NetnsTarget(ref.path, ref.pid)
    try:
        return _collect(query, target, parallelism, walking_ahead=walking_ahead)
    except SourceError:
        if ref.pid is None or query.backend is Backend.NETLINK:
            raise
        # not ours to enter (no CAP_SYS_ADMIN): a process inside it still shows its tables in /proc
        return _collect_proc_only(query, f"/proc/{ref.pid}/net", ref.inode)


def _collect_proc_only(query: Query, net_dir: str, ns_inode: int | None) -> Collection:
    sockets: list[Socket] = []
    sources: list[ProtoSource] = []
    for proto, family in _wanted_tables(query):
        states = query.kernel_states(proto)
        sockets += procnet.read_proc_net(proto, family, net_dir=net_dir, netns=ns_inode, states=states)
        sources.append(ProtoSource(proto, family, Backend.PROC))
    warnings = ()
    if Proto.TCP in query.protocols and State.BOUND in query.kernel_states(Proto.TCP):
        warnings = ("bound-only TCP sockets are invisible in /proc",)
    unix_states = query.unix_states
    unix_sockets: tuple[UnixSocket, ...] = ()
    if unix_states is not None:
        from portscope.sources import unixdiag

        unix_sockets = tuple(unixdiag.read_proc_net_unix(net_dir, netns=ns_inode, states=unix_states))
    unix_source = Backend.PROC if query.unix else None
    return Collection(tuple(sockets), tuple(sources), None, warnings, ns_inode, (), unix_sockets, unix_source)


def _wanted_tables(query: Query) -> list[tuple[Proto, Family]]:
    return [
        (proto, family)
        for proto in (Proto.TCP, Proto.UDP)
        if proto in query.protocols and query.kernel_states(proto)
        for family in (Family.IPV4, Family.IPV6)
        if family in query.families
    ]


def _collect_here(query: Query, ns_inode: int | None, parallelism: Parallelism, walking_ahead: bool) -> Collection:
    sockets: list[Socket] = []
    sources: list[ProtoSource] = []
    tables = _wanted_tables(query)
    bytecode = netlink.port_filter_bytecode(query.local_ports, query.remote_ports, query.any_ports)
    requests = [
        netlink.DumpRequest(proto, family, netlink.state_mask(proto, query.kernel_states(proto)), bytecode, seq)
        for seq, (proto, family) in enumerate(tables, start=1)
    ]
    dumps = None
    nl_refused: str | None = None
    if query.backend is not Backend.PROC and tables:
        prefetch = parallelism.prefetch_dumps(
            kernel_filtered=bytecode is not None, walking_ahead=walking_ahead, socket_count=procnet.socket_count
        )
        try:
            dumps = netlink.TableDumps(requests, prefetch=prefetch)
        except netlink.NetlinkUnavailable as exc:
            if query.backend is Backend.NETLINK:
                raise SourceError("netlink", str(exc)) from None
            nl_refused = str(exc)
    try:
        for request in requests:
            proto, family = request.proto, request.family
            note = nl_refused
            if dumps is not None:
                try:
                    sockets += dumps.next(netlink.Decoder(proto, family, ns_inode))
                    sources.append(ProtoSource(proto, family, Backend.NETLINK))
                    continue
                except netlink.NetlinkUnavailable as exc:
                    if query.backend is Backend.NETLINK:
                        raise SourceError("netlink", str(exc)) from None
                    note = str(exc)
            sockets += procnet.read_proc_net(proto, family, netns=ns_inode, states=query.kernel_states(proto))
            sources.append(ProtoSource(proto, family, Backend.PROC, note))
    finally:
        if dumps is not None:
            dumps.close()
    bound_visible = _bound_visibility(query, sources, sockets)
    warnings = ()
    if bound_visible is False:
        warnings = ("bound-only TCP sockets cannot be listed here (needs netlink on Linux 6.8+)",)
    unix_sockets, unix_source = _collect_unix(query, ns_inode)
    return Collection(tuple(sockets), tuple(sources), bound_visible, warnings, ns_inode, (), unix_sockets, unix_source)


def _collect_unix(query: Query, ns_inode: int | None) -> tuple[tuple[UnixSocket, ...], Backend | None]:
    """The UNIX sockets of the current namespace (unix_diag, else /proc/net/unix), if the query wants them."""
    if not query.unix:
        return (), None
    states = query.unix_states
    if states is None:
        return (), Backend.NETLINK if query.backend is not Backend.PROC else Backend.PROC
    from portscope.sources import unixdiag  # only when UNIX sockets are asked for

    if query.backend is not Backend.PROC:
        try:
            return tuple(unixdiag.dump_unix(states, ns_inode)), Backend.NETLINK
        except netlink.NetlinkUnavailable as exc:
            if query.backend is Backend.NETLINK:
                raise SourceError("netlink", str(exc)) from None
    return tuple(unixdiag.read_proc_net_unix(netns=ns_inode, states=states)), Backend.PROC


def _bound_visibility(query: Query, sources, sockets) -> bool | None:
    """None when bound-only sockets were not asked for; else whether they could be listed."""
    if Proto.TCP not in query.protocols or State.BOUND not in query.kernel_states(Proto.TCP):
        return None
    if any(s.backend is Backend.PROC for s in sources if s.proto is Proto.TCP):
        return False
    if _kernel_release() >= (6, 8) or any(s.state is State.BOUND for s in sockets):
        return True
    return _kernel_lists_bound()  # older, or a vendor kernel that may have backported it


def _kernel_release() -> tuple[int, int]:
    major, _, rest = os.uname().release.partition(".")
    minor = rest.split(".", 1)[0].split("-", 1)[0]
    try:
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def _kernel_lists_bound() -> bool:
    """Does this kernel dump BOUND_INACTIVE sockets? Bind a throw-away socket and look for it."""
    probe = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_STREAM)
    try:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
        bytecode = netlink.port_filter_bytecode([PortRange(port, port)], None, None)
        decoder = netlink.Decoder(Proto.TCP, Family.IPV4, None, ifname=lambda index: None)
        request = netlink.DumpRequest(Proto.TCP, Family.IPV4, 1 << netlink.TCPF_BOUND_INACTIVE_BIT, bytecode)
        with netlink.TableDumps([request]) as dumps:
            return any(s.local_port == port for s in dumps.next(decoder))
    except (OSError, netlink.NetlinkUnavailable, SourceError):
        return False
    finally:
        probe.close()


# ---------------------------------------------------------------------------------------------------
# Filters applied in Python


def _address_matcher(networks: Sequence) -> Callable[[str | None], bool]:
    import ipaddress  # only with an address filter

    cache: dict[str, bool] = {}

    def matches(text: str | None) -> bool:
        if text is None:
            return False
        hit = cache.get(text)
        if hit is None:
            address = ipaddress.ip_address(text)
            mapped = getattr(address, "ipv4_mapped", None)
            hit = any(address in net or (mapped is not None and mapped in net) for net in networks)
            cache[text] = hit
        return hit

    return matches


def _socket_predicates(query: Query) -> list[Predicate]:
    # Port checks repeat the kernel's filter for netlink results (cheap: the kernel already cut the
    # list down) and do the work for /proc results.
    predicates: list[Predicate] = []
    if query.local_ports:
        lp = query.local_ports
        predicates.append(lambda s: port_in_ranges(s.local_port, lp))
    if query.remote_ports:
        rp = query.remote_ports
        predicates.append(lambda s: port_in_ranges(s.remote_port, rp))
    if query.any_ports:
        ap = query.any_ports
        predicates.append(lambda s: port_in_ranges(s.local_port, ap) or port_in_ranges(s.remote_port, ap))
    if query.local_networks:
        local_match = _address_matcher(query.local_networks)
        predicates.append(lambda s: local_match(s.local_address))
    if query.remote_networks:
        remote_match = _address_matcher(query.remote_networks)
        predicates.append(lambda s: remote_match(s.remote_address))
    return predicates


def _process_predicate(query: Query, holders: dict[int, tuple[Holder, ...]]) -> Predicate | None:
    if not (query.pids or query.process_names or query.uids is not None):
        return None
    pids = query.pids
    names = tuple(n.lower() for n in query.process_names or ())
    uids = query.uids
    named: dict[int, bool] = {}  # pid -> does it match --process

    def named_like(process) -> bool:
        # the name, or anywhere in the command line: `python3 -m http.server` is found by "http"
        hit = named.get(process.pid)
        if hit is None:
            texts = (process.name.lower(), " ".join(process.cmdline).lower())
            hit = named[process.pid] = any(n in text for text in texts for n in names)
        return hit

    def matches(sock: Socket) -> bool:
        owners = holders.get(sock.inode, ()) if sock.inode is not None else ()
        if pids and not any(h.process.pid in pids for h in owners):
            return False
        if names and not any(named_like(h.process) for h in owners):
            return False
        return not (uids is not None and sock.uid not in uids and not any(h.process.uid in uids for h in owners))

    return matches
