"""What the model needs to know, read from the running system (in the target network namespace).

* The owners of the port: every socket of the protocol on that port, all states (bound-only too),
  from :func:`portscope.engine.snapshot.snapshot`, with their holders.
* Their SO_REUSEADDR / SO_REUSEPORT / IPV6_V6ONLY, which no socket dump shows: read from a holder
  with pidfd_open + pidfd_getfd + getsockopt, closing the duplicate at once. Where that is not
  permitted (needs CAP_SYS_PTRACE, or the same user and a dumpable target) or there is no holder
  (TIME-WAIT, orphans), the flag stays ``None`` and the model reasons over both values.
* The namespace's sysctls, its local routing table and IPv6 addresses with their DAD flags.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import socket
from dataclasses import dataclass

from portscope.engine.snapshot import snapshot
from portscope.model.query import PortRange, Query
from portscope.model.records import Family, Proto, Snapshot, Socket, State
from portscope.rules.bind import Ipv6Address, LocalRoute, Namespace, Owner
from portscope.sources import netns
from portscope.sources.addresses import read_local_addresses

SYS_PIDFD_GETFD = 438  # the same number on every architecture (new syscalls share one table)
CAP_NET_BIND_SERVICE = 10


@dataclass(frozen=True)
class NamespaceFacts:
    namespace: Namespace
    interfaces: dict[str, int]  # name -> ifindex
    ipv6_enabled: bool
    inode: int | None


@dataclass(frozen=True)
class OwnerFacts:
    owners: dict[int, tuple[Owner, ...]]  # port -> owners, in the kernel's dump order per family
    snapshot: Snapshot
    slot_sockets: dict[int, int]  # UDP: port -> sockets in its primary hash slot (this netns)


# ---------------------------------------------------------------------------------------------------
# The namespace


def _read_sysctl(name: str, default: str | None = None) -> str | None:
    try:
        with open(f"/proc/sys/{name.replace('.', '/')}", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return default


def _int_sysctl(name: str, default: int) -> int:
    value = _read_sysctl(name)
    try:
        return int(value.split()[0]) if value else default
    except ValueError:
        return default


def _routes_and_addresses() -> tuple[tuple[LocalRoute, ...], tuple[Ipv6Address, ...]]:
    local = read_local_addresses()  # this thread's namespace: /proc/thread-self/net
    routes = tuple(LocalRoute(route.network, route.kind) for route in local.ipv4_routes)
    v6 = tuple(Ipv6Address(a.address, a.ifindex, a.scope, a.tentative, a.dadfailed, a.optimistic) for a in local.ipv6)
    return routes, v6


def read_namespace(target: netns.NetnsTarget | None) -> NamespaceFacts:
    """Sysctls, interfaces, local routes and IPv6 addresses, read inside the target namespace."""
    with netns.entered(target) as inode:
        # /proc/sys/net follows the reading thread's network namespace
        interfaces = {name: index for index, name in socket.if_nameindex()}
        routes, addresses = _routes_and_addresses()
        ipv6_enabled = os.path.exists("/proc/sys/net/ipv6") and _read_sysctl("net.ipv6.conf.all.disable_ipv6") != "1"
        namespace = Namespace(
            unprivileged_port_start=_int_sysctl("net.ipv4.ip_unprivileged_port_start", 1024),
            ipv4_nonlocal_bind=_int_sysctl("net.ipv4.ip_nonlocal_bind", 0) == 1,
            ipv6_nonlocal_bind=_int_sysctl("net.ipv6.ip_nonlocal_bind", 0) == 1,
            bindv6only=_int_sysctl("net.ipv6.bindv6only", 0) == 1,
            local_routes=routes,
            ipv6_addresses=addresses,
            interfaces=tuple(sorted((index, name) for name, index in interfaces.items())),
            udp_table_size=abs(_int_sysctl("net.ipv4.udp_hash_entries", 16384)) or 16384,
        )
    return NamespaceFacts(namespace, interfaces, ipv6_enabled, inode)


# ---------------------------------------------------------------------------------------------------
# The caller


def has_capability(cap: int, status_path: str = "/proc/self/status") -> bool:
    try:
        with open(status_path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


# ---------------------------------------------------------------------------------------------------
# Socket options of sockets held by other processes

_libc = None


def _pidfd_getfd(pidfd: int, target_fd: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


@dataclass(frozen=True)
class SocketFlags:
    reuseaddr: bool
    reuseport: bool
    v6only: bool | None


def read_socket_flags(pid: int, fd: int, inode: int) -> SocketFlags | None:
    """SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY of another process's socket, or None if not permitted.

    The duplicate shares the open file description, so it reads the real socket; it is closed at once
    (holding it would keep the socket alive if its owner closed it meanwhile).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        try:
            dup = _pidfd_getfd(pidfd, fd)
        except OSError:
            return None
        sock = None
        try:
            if os.fstat(dup).st_ino != inode:
                return None  # the fd number was reused since the /proc walk
            sock = socket.socket(fileno=dup)
            reuseaddr = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
            reuseport = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
            v6only = None
            if sock.family == socket.AF_INET6:
                v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) != 0
            return SocketFlags(reuseaddr, reuseport, v6only)
        except OSError as exc:
            if exc.errno in (errno_mod.ENOTSOCK, errno_mod.EBADF, errno_mod.ENOPROTOOPT):
                return None
            raise
        finally:
            if sock is not None:
                sock.close()
            else:
                os.close(dup)
    finally:
        os.close(pidfd)


def _owner(sock: Socket, snap: Snapshot) -> Owner:
    holders = snap.holders_of(sock)
    flags = None
    if sock.inode is not None:
        for holder in holders:
            for fd in holder.fds:
                flags = read_socket_flags(holder.process.pid, fd, sock.inode)
                if flags is not None:
                    break
            if flags is not None:
                break
    v6only = sock.v6only
    if flags is not None and flags.v6only is not None:
        v6only = flags.v6only
    return Owner(
        proto=sock.proto,
        family=sock.family,
        address=sock.local_address,
        port=sock.local_port,
        state=sock.state,
        uid=sock.uid,
        device=sock.ifindex,
        reuseaddr=flags.reuseaddr if flags else None,
        reuseport=flags.reuseport if flags else None,
        v6only=v6only if sock.family is Family.IPV6 else False,
        timewait=sock.state is State.TIME_WAIT or sock.timer == "timewait",
        timer_ms=sock.timer_ms,
        holders=holders,
        socket=sock,
    )


def slot_ports(port: int, table_size: int) -> tuple[int, ...]:
    """Ports sharing the UDP primary hash slot with ``port`` in one namespace."""
    size = max(1, table_size)
    return tuple(range(port % size, 65536, size))


def _ranges(ports: set[int]) -> tuple[PortRange, ...]:
    """Consecutive ports merged, so that the kernel filter stays short."""
    ranges: list[PortRange] = []
    for port in sorted(ports):
        if ranges and ranges[-1].high == port - 1:
            ranges[-1] = PortRange(ranges[-1].low, port)
        else:
            ranges.append(PortRange(port, port))
    return tuple(ranges)


def read_owners(proto: Proto, ports: set[int], netns_spec: str | None, table_size: int) -> OwnerFacts:
    """Every socket of ``proto`` on each of ``ports`` in the namespace, with holders and their options.

    One snapshot (one /proc walk) serves every port, which matters on hosts with many open files.
    """
    wanted = set(ports)
    if proto is Proto.UDP:
        wanted = {p for port in ports if port for p in slot_ports(port, table_size)}
    query = Query(
        protocols=frozenset({proto}),
        states=frozenset(State),
        local_ports=_ranges(wanted) or (PortRange(0, 0),),
        netns=netns_spec,
    )
    snap = snapshot(query)
    owners: dict[int, list[Owner]] = {port: [] for port in ports}
    slots: dict[int, int] = dict.fromkeys(ports, 0)
    size = max(1, table_size)
    for sock in snap.sockets:
        if sock.local_port in owners and sock.state is not State.SYN_RECV:
            owners[sock.local_port].append(_owner(sock, snap))
        if proto is Proto.UDP:
            for port in ports:
                if port and sock.local_port % size == port % size:
                    slots[port] += 1
    return OwnerFacts({port: tuple(found) for port, found in owners.items()}, snap, slots)
