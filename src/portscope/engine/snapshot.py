"""The one library entry point: :func:`snapshot` answers "which sockets exist here, and who holds them".

Every command calls it. Filters run as early as they can: states and ports in the kernel (netlink),
addresses and uids while decoding results, processes after the single /proc walk.
"""

from __future__ import annotations

import _socket as socket_module  # (not socket.py: see sources/netlink.py)
import os
from collections.abc import Callable, Sequence
from dataclasses import field, replace

from portscope.engine.parallel import DEFAULT, Parallelism
from portscope.errors import SourceError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import PortRange, Query, port_in_ranges
from portscope.model.records import (
    Backend,
    Detail,
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
from portscope.sources.fdscan import BackgroundWalk, FdScan, Found, open_files, walk_socket_fds
from portscope.sources.join import join_processes

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from portscope.model.details import SocketDetails
    from portscope.model.filter import PlaceLookup
    from portscope.sources.namespaces import NamespaceRef

Predicate = Callable[[Socket], bool]


def snapshot(
    query: Query,
    *,
    proc_root: str = "/proc",
    parallelism: Parallelism = DEFAULT,
    namespaces: Sequence[NamespaceRef] | None = None,
    places: PlaceLookup | None = None,
    meanwhile: Callable[[Sequence[Socket]], object] | None = None,
) -> Snapshot:
    """The sockets ``query`` asks for, with their holders. Safe to call from several threads at once.

    ``parallelism``: when forked helpers may use a second CPU (:mod:`portscope.engine.parallel`);
    ``parallel.IN_PROCESS`` keeps all the work in this process. ``namespaces``: read these network
    namespaces instead of ``query.netns``, each once and with one /proc walk, as ``--netns all`` reads
    every one (a namespace that cannot be read is kept in ``Snapshot.namespaces`` with its error).
    ``places``: namespace names and containers, for the ``container`` and ``netns NAME`` terms of
    ``query.filter`` (:class:`portscope.commands.places.Places`; :func:`portscope.list_sockets` passes one).
    ``meanwhile``: the caller's own preparation, run while a forked walker still reads /proc (where it would
    wait for it), given the sockets about to be joined: the snapshot's sockets are those or fewer (filters
    on the holders), in the same order. Not run when there is no such walker.
    """
    if query.filter is not None and query.filter.needs_places and places is None:
        raise UsageError("the container and netns NAME filter terms need place lookups (use portscope.list_sockets)")
    if namespaces is not None:
        query = replace(query, netns=None)
    target = netns.resolve(query.netns) if query.netns and not query.every_namespace else None
    port_filtered = bool(query.local_ports or query.remote_ports or query.any_ports)
    walk = None
    if parallelism.walk_ahead(
        needs_processes=query.needs_processes, port_filtered=port_filtered, open_files=lambda: open_files(proc_root)
    ):
        # with --netns all the walk also finds the namespaces kept alive only by an open fd
        walk = BackgroundWalk.start(proc_root, namespaces=query.every_namespace and namespaces is None)
    try:
        return _snapshot(query, target, proc_root, walk, parallelism, namespaces, places, meanwhile)
    finally:
        if walk is not None:
            walk.close()


def _snapshot(
    query: Query,
    target,
    proc_root: str,
    walk: BackgroundWalk | None,
    parallelism: Parallelism,
    namespaces: Sequence[NamespaceRef] | None,
    places,
    meanwhile: Callable[[Sequence[Socket]], object] | None,
) -> Snapshot:
    if namespaces is not None:
        from portscope.sources.namespaces import host_netns_inode

        collection = _collect_namespaces(
            query, namespaces, host_netns_inode(proc_root), parallelism, walking_ahead=walk is not None
        )
    elif query.every_namespace:
        collection = _collect_every_namespace(query, proc_root, parallelism, walking_ahead=walk is not None)
    else:
        collection = _collect(query, target, parallelism, walking_ahead=walk is not None)
    walked = None
    if query.every_namespace and namespaces is None and query.needs_processes:
        walked, collection = _walk_every_namespace(query, collection, walk, proc_root, parallelism)
    if collection.namespaces:
        collection = _with_unread_warning(collection)
    sockets: Sequence[Socket] = collection.sockets

    unix_sockets: Sequence[UnixSocket] = collection.unix_sockets

    predicates = _socket_predicates(query)
    if predicates:
        sockets = [s for s in sockets if all(p(s) for p in predicates)]
    expression = None
    if query.filter is not None:
        expression = _ExpressionFilter(query, collection, places, proc_root)
        sockets = expression.before_join(sockets)

    holders: dict[int, tuple[Holder, ...]] = {}
    report = JoinReport(joined=False)
    if query.needs_processes:
        if walk is not None and meanwhile is not None:
            meanwhile(sockets)  # before the join waits for the walker
        # UNIX sockets and their peers join through the same single walk: their inodes are wanted too
        joined = [*sockets, *unix_sockets] if unix_sockets else sockets
        peers = [u.peer_inode for u in unix_sockets if u.peer_inode is not None]
        holders, report = join_processes(
            joined,
            proc_root,
            prefetched=walk if walked is None else None,
            split_walk=parallelism.split_walk,
            walked=walked,
            also_wanted=peers,
        )
        process_filter = _process_predicate(query, holders)
        if process_filter is not None:
            sockets = [s for s in sockets if process_filter(s)]
            unix_sockets = [u for u in unix_sockets if process_filter(u)]
    elif query.uids is not None:
        sockets = [s for s in sockets if s.uid in query.uids]
        unix_sockets = [u for u in unix_sockets if u.uid in query.uids]
    if expression is not None:
        sockets = expression.after_join(sockets, holders if query.needs_processes else None)

    return Snapshot(
        sockets=tuple(sockets),
        holders=holders,
        sources=collection.sources,
        join=report,
        netns=collection.netns_inode,
        bound_visible=collection.bound_visible,
        warnings=collection.warnings
        + (expression.warnings() if expression is not None else ())
        + _details_warnings(query, collection),
        namespaces=collection.namespaces,
        unix_sockets=tuple(unix_sockets),
        unix_source=collection.unix_source,
        details=collection.details,
        details_asked=query.details,
    )


def _details_warnings(query: Query, collection: Collection) -> tuple[str, ...]:
    if not query.details - {Detail.EXTENDED} or not any(s.backend is Backend.PROC for s in collection.sources):
        return ()
    return ("socket details (-o retransmissions, -m, -i) come from netlink only: none for the sockets read from /proc",)


# ---------------------------------------------------------------------------------------------------
# Collection


@dataclass_lite(frozen=True, slots=True)
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
    details: dict[int, SocketDetails] = field(default_factory=dict)  # cookie -> details (Query.details)
    kernel_says: dict = field(default_factory=dict)  # autobound/fwmark term -> cookies the kernel accepts
    port_ranges: dict[int | None, tuple[int, int]] = field(default_factory=dict)  # netns -> ip_local_port_range


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

    # with processes to join, the one /proc walk finds the namespaces held only by an fd (_walk_every_namespace)
    discovery = namespaces.discover(proc_root, scan_fds=not query.needs_processes)
    collection = _collect_namespaces(query, discovery.namespaces, discovery.host_inode, parallelism, walking_ahead)
    if discovery.processes_refused:
        collection = replace(collection, warnings=(*collection.warnings, _refused_warning(discovery)))
    return collection


def _collect_namespaces(
    query: Query,
    refs: Sequence[NamespaceRef],
    host_inode: int | None,
    parallelism: Parallelism,
    walking_ahead: bool,
    *,
    required: bool = True,
) -> Collection:
    """Each of ``refs`` dumped once; an error only when none of them could be read (and ``required``)."""
    sockets: list[Socket] = []
    unix_sockets: list[UnixSocket] = []
    unix_sources: set[Backend] = set()
    sources: dict[ProtoSource, None] = {}
    warnings: dict[str, None] = {}
    infos: list[NetnsInfo] = []
    bound_visible: bool | None = None
    details: dict[int, SocketDetails] = {}
    kernel_says: dict = {}
    port_ranges: dict[int | None, tuple[int, int]] = {}
    for ref in refs:
        info = NetnsInfo(ref.inode, ref.inode == host_inode, ref.names, ref.pid, ref.path)
        try:
            collection = _collect_namespace(query, ref, parallelism, walking_ahead)
        except (SourceError, UsageError) as exc:  # vanished meanwhile, or not ours to enter
            infos.append(replace(info, error=exc.problem if isinstance(exc, SourceError) else str(exc)))
            continue
        infos.append(info)
        sockets += collection.sockets
        unix_sockets += collection.unix_sockets
        if collection.unix_source is not None:
            unix_sources.add(collection.unix_source)
        details.update(collection.details)
        for leaf, cookies in collection.kernel_says.items():
            kernel_says[leaf] = kernel_says.get(leaf, frozenset()) | cookies
        port_ranges.update(collection.port_ranges)
        sources.update(dict.fromkeys(collection.sources))
        warnings.update(dict.fromkeys(collection.warnings))
        if collection.bound_visible is not None:
            bound_visible = collection.bound_visible and bound_visible is not False
    if required and infos and all(info.error for info in infos):
        raise SourceError("--netns all", f"no network namespace could be read ({infos[0].error})")
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
        details=details,
        kernel_says=kernel_says,
        port_ranges=port_ranges,
    )


UNREAD_NAMED = 5  # namespaces named per reason in the note; the rest are counted


def _refused_warning(discovery) -> str:
    """The processes whose namespace could not even be looked at, counted, with their users named."""
    from portscope.sources.procinfo import user_name

    count = discovery.processes_refused
    if os.geteuid() == 0:  # a security module or a ptrace restriction
        return f"the network namespaces of {count} process(es) could not be looked at (access refused even to root)"
    users = ", ".join(sorted(user_name(uid) for uid in discovery.refused_uids)) or "?"
    return (
        f"the network namespaces of {count} process(es) of other users ({users}) could not be looked at "
        "(access refused; run as root to see them)"
    )


def _namespace_label(info: NetnsInfo) -> str:
    """An unread namespace as a person knows it: its ip netns name, its mount point, else its inode."""
    if info.names:
        return info.names[0]
    if info.path and not info.path.startswith("/proc/"):
        return info.path
    return f"{info.inode}" + (f" (of pid {info.pid})" if info.pid else "")


def _with_unread_warning(collection: Collection) -> Collection:
    """One note per reason, naming the namespaces that could not be read."""
    by_reason: dict[str, list[str]] = {}
    for info in collection.namespaces:
        if info.error:
            by_reason.setdefault(info.error, []).append(_namespace_label(info))
    if not by_reason:
        return collection
    notes = []
    for reason, labels in by_reason.items():
        named = ", ".join(labels[:UNREAD_NAMED]) + (
            f" and {len(labels) - UNREAD_NAMED} more" if len(labels) > UNREAD_NAMED else ""
        )
        notes.append(f"{len(labels)} network namespace(s) could not be read ({reason}): {named}")
    return replace(collection, warnings=(*collection.warnings, *notes))


def _walk_every_namespace(
    query: Query, collection: Collection, walk: BackgroundWalk | None, proc_root: str, parallelism: Parallelism
) -> tuple[tuple[Found, FdScan], Collection]:
    """The one /proc walk of ``--netns all``, made for every socket: it joins the processes and finds the
    namespaces kept alive only by an open fd, which are then dumped too."""
    from portscope.sources import namespaces

    counts = FdScan(netns_links=[])
    found = walk.found(None, counts) if walk is not None else None
    if found is None:
        counts = FdScan(netns_links=[])
        found = walk_socket_fds(None, proc_root, counts, split=parallelism.split_walk)
    known = {info.inode for info in collection.namespaces}
    held = namespaces.held_namespaces(counts.netns_links or [], known, proc_root)
    if held:
        host = next((info.inode for info in collection.namespaces if info.host), None)
        extra = _collect_namespaces(query, held, host, parallelism, False, required=False)
        bound_visible = collection.bound_visible
        if extra.bound_visible is not None:
            bound_visible = extra.bound_visible and bound_visible is not False
        collection = Collection(
            (*collection.sockets, *extra.sockets),
            tuple(dict.fromkeys((*collection.sources, *extra.sources))),
            bound_visible,
            tuple(dict.fromkeys((*collection.warnings, *extra.warnings))),
            None,
            (*collection.namespaces, *extra.namespaces),
            details={**collection.details, **extra.details},
            kernel_says={
                leaf: collection.kernel_says.get(leaf, frozenset()) | extra.kernel_says.get(leaf, frozenset())
                for leaf in {*collection.kernel_says, *extra.kernel_says}
            },
            port_ranges={**collection.port_ranges, **extra.port_ranges},
        )
    return (found, counts), collection


def _collect_namespace(query: Query, ref: NamespaceRef, parallelism: Parallelism, walking_ahead: bool) -> Collection:
    """One discovered namespace, pinned: its file is opened once and checked to still be that namespace
    (a process may have moved, or an fd been reused, since discovery), then entered through that fd."""
    try:
        fd = netns.open_namespace(netns.NetnsTarget(ref.path, ref.pid))
    except SourceError:
        if ref.pid is None or query.backend is Backend.NETLINK:
            raise
        return _collect_proc_of(query, ref)
    try:
        if os.fstat(fd).st_ino != ref.inode:
            raise SourceError(ref.path, "it leads to another network namespace now (its process moved or exited)")
        pinned = netns.NetnsTarget(f"/proc/self/fd/{fd}", ref.pid)
        try:
            return _collect(query, pinned, parallelism, walking_ahead=walking_ahead)
        except SourceError as exc:
            if ref.pid is None or query.backend is Backend.NETLINK:
                raise SourceError(ref.path, exc.problem) from None
    finally:
        os.close(fd)
    # not ours to enter (no CAP_SYS_ADMIN): a process inside it still shows its tables in /proc
    return _collect_proc_of(query, ref)


def _collect_proc_of(query: Query, ref: NamespaceRef) -> Collection:
    """A namespace's tables from ``/proc/PID/net`` of a process inside it, kept only if that process was in
    it before and after the read."""

    def inside() -> bool:
        try:
            return os.stat(f"/proc/{ref.pid}/ns/net").st_ino == ref.inode
        except OSError:
            return False

    if not inside():
        raise SourceError(f"/proc/{ref.pid}/net", "its process left the namespace or exited")
    collection = _collect_proc_only(query, f"/proc/{ref.pid}/net", ref.inode)
    if not inside():
        raise SourceError(f"/proc/{ref.pid}/net", "its process left the namespace or exited")
    return collection


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


def _dumped_tables(tables: list[tuple[Proto, Family]]) -> list[tuple[Proto, Family | None]]:
    """The dumps for these tables: TCP of both families in one (None: one walk of the kernel's shared table)."""
    if (Proto.TCP, Family.IPV4) in tables and (Proto.TCP, Family.IPV6) in tables:
        return [(Proto.TCP, None), *((proto, family) for proto, family in tables if proto is not Proto.TCP)]
    return list(tables)


def _collect_here(query: Query, ns_inode: int | None, parallelism: Parallelism, walking_ahead: bool) -> Collection:
    sockets: list[Socket] = []
    sources: list[ProtoSource] = []
    tables = _wanted_tables(query)
    kernel_tree = query.filter.kernel_tree() if query.filter is not None else None
    try:
        bytecode = netlink.filter_bytecode(query.local_ports, query.remote_ports, query.any_ports, kernel_tree)
    except netlink.NothingMatches:
        if not query.every_namespace:  # with --netns all a device missing from one namespace is normal
            _refuse_unknown_devices(query)
        bytecode, tables = None, []  # a device this namespace does not have: none of its sockets match
    extensions = netlink.extension_bits(query.details)
    requests = [
        netlink.DumpRequest(
            proto, family, netlink.state_mask(proto, query.kernel_states(proto)), bytecode, seq, extensions
        )
        for seq, (proto, family) in enumerate(_dumped_tables(tables), start=1)
    ]
    details: dict[int, SocketDetails] = {}
    detailed = bool(query.details - {Detail.EXTENDED})
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
            proto = request.proto
            note = nl_refused
            if dumps is not None:
                try:
                    if detailed:
                        decoder = netlink.DetailsDecoder(proto, request.family, ns_inode)
                        sockets += dumps.next(decoder)
                        details.update(decoder.details)
                    else:
                        sockets += dumps.next(netlink.Decoder(proto, request.family, ns_inode))
                    sources += [ProtoSource(proto, family, Backend.NETLINK) for family in request.families]
                    continue
                except netlink.NetlinkUnavailable as exc:
                    if query.backend is Backend.NETLINK:
                        raise SourceError("netlink", str(exc)) from None
                    note = str(exc)
            for family in request.families:
                sockets += procnet.read_proc_net(proto, family, netns=ns_inode, states=query.kernel_states(proto))
                sources.append(ProtoSource(proto, family, Backend.PROC, note))
    finally:
        if dumps is not None:
            dumps.close()
    bound_visible = _bound_visibility(query, sources, sockets)
    warnings = ()
    if bound_visible is False:
        warnings = ("bound-only TCP sockets cannot be listed here (needs netlink on Linux 6.8+)",)
    kernel_says = _kernel_answers(query, requests, sources)
    port_ranges = {ns_inode: _local_port_range()} if query.filter is not None and query.filter.uses_autobound else {}
    unix_sockets, unix_source = _collect_unix(query, ns_inode)
    return Collection(
        tuple(sockets),
        tuple(sources),
        bound_visible,
        warnings,
        ns_inode,
        (),
        unix_sockets,
        unix_source,
        details=details,
        kernel_says=kernel_says,
        port_ranges=port_ranges,
    )


def _refuse_unknown_devices(query: Query) -> None:
    """A ``dev`` naming no device of the namespace read is bad input (as in ss), not an empty answer."""
    from portscope.model.filter import Device, leaves

    for leaf in leaves(query.filter.tree):  # type: ignore[union-attr]
        if isinstance(leaf, Device) and netlink.device_index(leaf.text) is None:
            raise UsageError(f"unknown device '{leaf.text}' in the filter expression (a name or index of an interface)")


def _kernel_answers(query: Query, requests, sources) -> dict:
    """For each ``autobound`` and ``fwmark`` term Python must decide (:meth:`Filter.kernel_questions`), the
    cookies of the sockets the kernel accepts: a second dump filtered on that term alone."""
    if query.filter is None:
        return {}
    terms = query.filter.kernel_questions()
    served = {(s.proto, s.family) for s in sources if s.backend is Backend.NETLINK}
    answers: dict = {}
    for term in terms:
        code = netlink.filter_bytecode(None, None, None, term)
        wanted = [
            replace(r, bytecode=code, extensions=0)
            for r in requests
            if all((r.proto, family) in served for family in r.families)
        ]
        found: set[int] = set()
        try:
            with netlink.TableDumps(wanted) as dumps:
                for request in wanted:
                    found.update(s.cookie for s in dumps.next(netlink.Decoder(request.proto, request.family, None)))
        except (netlink.NetlinkUnavailable, SourceError) as exc:
            raise SourceError("netlink", f"cannot ask the kernel which sockets match {term}: {exc}") from None
        answers[term] = frozenset(c for c in found if c is not None)
    return answers


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


class _ExpressionFilter:
    """The filter expression's part the kernel could not decide: sockets that cannot match are dropped
    before the process join, the rest decided after it. Netlink sockets (they have a cookie) went through
    the kernel's bytecode and state mask, so only the expression's residue is left for them; sockets read
    from /proc are judged on the whole expression."""

    def __init__(self, query: Query, collection: Collection, places, proc_root: str) -> None:
        from portscope.model.filter import TRUE, both, matcher

        flt = query.filter
        assert flt is not None
        self.filter = flt
        self.from_proc = any(source.backend is Backend.PROC for source in collection.sources)
        self.facts = _Facts(collection.kernel_says, collection.port_ranges, places, proc_root)
        residue = flt.residue()
        # ss shows what passes the kernel's reading and its own (they differ for addresses and autobound)
        two_readings = flt.two_readings
        self.exact = residue == TRUE and not two_readings and not self.from_proc
        kernel_residue = matcher(residue, self.facts)
        kernel_whole = matcher(flt.tree, self.facts)
        if two_readings:
            ss_whole = matcher(flt.tree, self.facts, ss_rules=True)
            kernel_residue = both(kernel_residue, ss_whole)
            kernel_whole = both(kernel_whole, ss_whole)
        self.residue, self.whole = kernel_residue, kernel_whole

    def _verdict(self, sock: Socket) -> bool | None:
        return (self.whole if sock.cookie is None else self.residue)(sock)

    def before_join(self, sockets: Sequence[Socket]) -> Sequence[Socket]:
        if self.exact:
            return sockets
        return [s for s in sockets if self._verdict(s) is not False]

    def after_join(self, sockets: Sequence[Socket], holders: dict[int, tuple[Holder, ...]] | None) -> Sequence[Socket]:
        if self.exact:
            return sockets
        self.facts.joined = holders if holders is not None else {}
        return [s for s in sockets if self._verdict(s) is True]

    def warnings(self) -> tuple[str, ...]:
        if not self.from_proc:
            return ()
        notes = []
        if self.filter.uses_devices:
            notes.append(
                "/proc does not show the device a socket is bound to: 'dev' matched none of the sockets read there"
            )
        if self.filter.uses_marks:
            notes.append("/proc does not show socket marks: 'fwmark' matched none of the sockets read there")
        if self.filter.uses_autobound:
            notes.append(
                "/proc does not show whether a port was picked by the kernel: 'autobound' was judged there by "
                "the local port range, as ss does"
            )
        return tuple(notes)


def _local_port_range() -> tuple[int, int]:
    """net.ipv4.ip_local_port_range of the namespace this thread is in (/proc/sys/net follows the opener's)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
            low, high = (int(part) for part in handle.read().split())
        return low, high
    except (OSError, ValueError):
        return DEFAULT_PORT_RANGE


DEFAULT_PORT_RANGE = (32768, 60999)  # the kernel's default


class _Facts:
    """What the filter's terms need beyond the records: holders (once joined), the kernel's autobound
    answer, units from /proc/PID/cgroup, namespace names and containers from ``places``."""

    def __init__(self, kernel_says: dict, port_ranges, places, proc_root: str) -> None:
        from portscope.model.filter import RecordFacts

        self.joined: dict[int, tuple[Holder, ...]] | None = None
        self.answers = kernel_says
        self.proc_root = proc_root
        self.units: dict[int, str | None] = {}
        self.by_netns = {netns: RecordFacts(span) for netns, span in port_ranges.items()}
        self.default = RecordFacts(DEFAULT_PORT_RANGE, places)

    def ephemeral(self, sock: Socket) -> bool | None:
        return self.by_netns.get(sock.netns, self.default).ephemeral(sock)

    def holders(self, sock: Socket) -> tuple[Holder, ...] | None:
        if self.joined is None:
            return None
        return self.joined.get(sock.inode, ()) if sock.inode is not None else ()

    def kernel_says(self, leaf, sock: Socket) -> bool | None:
        if sock.cookie is not None:  # from netlink: the kernel's own answer
            return sock.cookie in self.answers.get(leaf, frozenset())
        return self.by_netns.get(sock.netns, self.default).kernel_says(leaf, sock)

    def unit(self, pid: int) -> str | None:
        if pid not in self.units:
            from portscope.sources.lineage import pick_cgroup_path, unit_of

            try:
                with open(f"{self.proc_root}/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as handle:
                    path = pick_cgroup_path(handle.read())
            except OSError:
                path = None
            self.units[pid] = unit_of(path) if path else None
        return self.units[pid]

    def container(self, sock: Socket, holders: tuple[Holder, ...]) -> tuple[str | None, str] | None:
        return self.default.container(sock, holders)

    def netns_name(self, inode: int | None) -> str | None:
        return self.default.netns_name(inode)


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


def _network_predicate(networks: Sequence, local: bool) -> Predicate:
    """--src / --dst: the address in one of the networks; a zone id ([fe80::1%eth0]) also asks for the device.

    A link-local socket and its peer are on the socket's bound device (the scope id becomes it), so the
    zone checks that device; where the source cannot tell it (/proc) the address alone decides.
    """
    from portscope.model.endpoint import ScopedNetwork, on_interface  # ipaddress: only for --src/--dst

    plain = [net for net in networks if not isinstance(net, ScopedNetwork)]
    scoped = [net for net in networks if isinstance(net, ScopedNetwork)]
    plain_match = _address_matcher(plain)
    if not scoped:
        if local:
            return lambda s: plain_match(s.local_address)
        return lambda s: plain_match(s.remote_address)
    by_zone = [(net.zone, _address_matcher([net.network])) for net in scoped]

    def matches(sock: Socket) -> bool:
        text = sock.local_address if local else sock.remote_address
        if plain_match(text):
            return True
        return any(
            match(text) and on_interface(zone, sock.ifindex, sock.interface) is not False for zone, match in by_zone
        )

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
        predicates.append(_network_predicate(query.local_networks, local=True))
    if query.remote_networks:
        predicates.append(_network_predicate(query.remote_networks, local=False))
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
