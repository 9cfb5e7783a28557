"""What the model needs to know, read from the running system (in the target network namespace).

* The owners of the port: every socket of the protocol on that port, all states (bound-only too),
  from :func:`portscope.engine.snapshot.snapshot`, with their holders.
* Their SO_REUSEADDR / SO_REUSEPORT / IPV6_V6ONLY, which no socket dump shows: read from a holder
  with pidfd_open + pidfd_getfd + getsockopt in a throw-away helper process (see below). Where that
  is not permitted (needs CAP_SYS_PTRACE, or the same user and a dumpable target), the fd is no
  longer that socket, or there is no holder (TIME-WAIT, orphans), the flag stays ``None`` and the
  model reasons over both values.
* The namespace's sysctls, its local routing table and IPv6 addresses with their DAD flags.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from portscope.engine.parallel import single_threaded
from portscope.engine.snapshot import snapshot
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import PortRange, Query
from portscope.model.records import Family, Holder, Proto, Snapshot, Socket, State
from portscope.rules.bind import DEFAULT_PORT_RANGE, Ipv6Address, LocalRoute, Namespace, Owner
from portscope.sources import netns
from portscope.sources.addresses import read_local_addresses
from portscope.sources.linux import end_child, write_all

if TYPE_CHECKING:
    from portscope.sources.tcpbind import KernelSocket

CAP_NET_BIND_SERVICE = 10


@dataclass_lite(frozen=True)
class NamespaceFacts:
    namespace: Namespace
    interfaces: dict[str, int]  # name -> ifindex
    ipv6_enabled: bool
    inode: int | None


@dataclass_lite(frozen=True)
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
        # negative: the namespace uses the initial namespace's table (net.ipv4.udp_child_hash_entries=0)
        udp_entries = _int_sysctl("net.ipv4.udp_hash_entries", 0)
        namespace = Namespace(
            unprivileged_port_start=_int_sysctl("net.ipv4.ip_unprivileged_port_start", 1024),
            ipv4_nonlocal_bind=_int_sysctl("net.ipv4.ip_nonlocal_bind", 0) == 1,
            ipv6_nonlocal_bind=_int_sysctl("net.ipv6.ip_nonlocal_bind", 0) == 1,
            bindv6only=_int_sysctl("net.ipv6.bindv6only", 0) == 1,
            local_routes=routes,
            ipv6_addresses=addresses,
            interfaces=tuple(sorted((index, name) for name, index in interfaces.items())),
            udp_table_size=abs(udp_entries) or 16384,
            udp_table_shared=udp_entries <= 0 or _initial_namespace(inode),
            local_port_range=_port_range(_read_sysctl("net.ipv4.ip_local_port_range")),
            reserved_ports=parse_reserved_ports(_read_sysctl("net.ipv4.ip_local_reserved_ports") or ""),
            autobind_reuse=_int_sysctl("net.ipv4.ip_autobind_reuse", 0) == 1,
        )
    return NamespaceFacts(namespace, interfaces, ipv6_enabled, inode)


def _port_range(text: str | None) -> tuple[int, int]:
    """net.ipv4.ip_local_port_range: "32768\t60999"; the kernel's default if unreadable."""
    try:
        low, high = (int(word) for word in (text or "").split())
    except ValueError:
        return DEFAULT_PORT_RANGE
    return low, high


def parse_reserved_ports(text: str) -> frozenset[int]:
    """net.ipv4.ip_local_reserved_ports: "8080,9000-9010" (empty: none)."""
    ports: set[int] = set()
    for part in text.replace("\n", ",").split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            ports.update(range(int(low), int(high or low) + 1))
    return frozenset(p for p in ports if p < 65536)


def ports_in_use(proto: Proto, low: int, high: int, netns_spec: str | None) -> set[int]:
    """The local ports of ``proto`` sockets in [low, high] (any state), without holders: one filtered dump."""
    query = Query(
        protocols=frozenset({proto}),
        states=frozenset(State),
        local_ports=(PortRange(low, high),),
        join_processes=False,
        netns=netns_spec,
    )
    return {sock.local_port for sock in snapshot(query).sockets if sock.state is not State.SYN_RECV}


def _initial_namespace(inode: int | None) -> bool:
    """Is this the initial network namespace (whose UDP table child namespaces may share)? True if unsure."""
    if inode is None:
        return True
    try:
        return os.stat("/proc/1/ns/net").st_ino == inode
    except OSError:
        return True


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
#
# A holder decides what its fd number points to: between the /proc walk and pidfd_getfd it can put any
# file there, e.g. one on its own FUSE mount whose daemon never answers. So a duplicate is first checked
# with getsockopt(SO_COOKIE) against the dump's cookie (a non-socket answers ENOTSOCK without its file
# system being asked anything), and a duplicate that is not that socket is never used and never closed
# by hand: close() of a FUSE file sends FLUSH and waits for the daemon, uninterruptibly.
#
# All duplicates live only in a throw-away worker process, a grandchild: its parent exits at once, so
# it is adopted by init and never left as our zombie. It writes each answer as soon as it has it, ends
# itself with a timer (SIGALRM, fatal, ends every killable wait), and is abandoned by the caller at a
# deadline; a worker caught in a FUSE FLUSH while exiting holds nothing of ours. From a multi-threaded
# process fork() is unsafe, so there the worker's parent is a fresh `python -I` started by posix_spawn.

SYS_PIDFD_GETFD = 438  # the same number on every architecture (new syscalls share one table)
SO_COOKIE = 57
FLAGS_TIMEOUT = 2.0  # seconds for every flag read of one call; what is not read by then stays unknown
_SPAWNED_WORKER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from portscope.sources.bindfacts import _spawned_launcher; _spawned_launcher(sys.argv[2:])"
)

_libc = None


def _c_library():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _pidfd_getfd(pidfd: int, target_fd: int) -> int:
    fd = _c_library().syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _socket_cookie(fd: int) -> int | None:
    """The kernel's cookie of the socket at ``fd``; None for anything else (the file is not touched)."""
    value = ctypes.c_uint64(0)
    size = ctypes.c_uint32(ctypes.sizeof(value))
    if _c_library().getsockopt(fd, socket.SOL_SOCKET, SO_COOKIE, ctypes.byref(value), ctypes.byref(size)) != 0:
        return None
    return value.value


@dataclass_lite(frozen=True)
class SocketFlags:
    reuseaddr: bool
    reuseport: bool
    v6only: bool | None
    # Owner maybe changed since socket(): a socket inode's ctime is 0 unless fchown/fchmod set it. A
    # recycled inode may keep the ctime of an earlier socket, so True can be a false alarm; 0 is proof.
    owner_changed: bool = False


@dataclass_lite(frozen=True)
class HeldSocket:
    """A socket of the dump and the (pid, fd) places its holders keep it at, tried in order."""

    cookie: int | None  # from the netlink dump; None (the /proc/net source): matched by inode instead
    inode: int
    places: tuple[tuple[int, int], ...]

    def encode(self) -> str:
        places = ",".join(f"{pid}.{fd}" for pid, fd in self.places)
        return f"{'-' if self.cookie is None else self.cookie}:{self.inode}:{places}"

    @classmethod
    def decode(cls, text: str) -> HeldSocket:
        cookie, inode, places = text.split(":")
        pairs = tuple((int(pid), int(fd)) for pid, fd in (place.split(".") for place in places.split(",") if place))
        return cls(None if cookie == "-" else int(cookie), int(inode), pairs)


def _read_flags_at(pid: int, fd: int, held: HeldSocket) -> SocketFlags | None:
    """Worker only: the flags, if ``pid``'s ``fd`` is still ``held``; a duplicate of anything else stays open."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        dup = _pidfd_getfd(pidfd, fd)
    except OSError:
        return None
    finally:
        os.close(pidfd)
    cookie = _socket_cookie(dup)
    if cookie is None:
        return None  # not a socket: left for the worker's exit to close
    if held.cookie is not None and cookie != held.cookie:
        return None  # another socket: closing it is harmless, but there is no need
    sock = socket.socket(fileno=dup)  # a socket from here on: no file system of anyone's is reached
    try:
        status = os.fstat(dup)
        if held.cookie is None and status.st_ino != held.inode:
            return None
        reuseaddr = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        reuseport = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        v6only = None
        if sock.family == socket.AF_INET6:
            v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) != 0
        return SocketFlags(reuseaddr, reuseport, v6only, status.st_ctime_ns != 0)
    except OSError:
        return None
    finally:
        sock.close()  # at once: holding it would keep the socket alive if its owner closed it


def _encode_flags(index: int, flags: SocketFlags | None) -> bytes:
    if flags is None:
        return f"{index} -\n".encode()
    v6only = "-" if flags.v6only is None else int(flags.v6only)
    return f"{index} {int(flags.reuseaddr)} {int(flags.reuseport)} {v6only} {int(flags.owner_changed)}\n".encode()


def _decode_flags(data: bytes, count: int) -> list[SocketFlags | None]:
    results: list[SocketFlags | None] = [None] * count
    for line in data.decode("ascii", "replace").splitlines():
        fields = line.split()
        if len(fields) != 5 or not fields[0].isdigit() or int(fields[0]) >= count:
            continue  # "N -" (unknown), "end", or a line cut off at the deadline
        reuseaddr, reuseport, v6only, changed = fields[1:]
        results[int(fields[0])] = SocketFlags(
            reuseaddr == "1", reuseport == "1", None if v6only == "-" else v6only == "1", changed == "1"
        )
    return results


def _run_worker(held: Sequence[HeldSocket], out_fd: int, timeout: float) -> None:
    """In the worker: keep only the result pipe, then answer for each socket, the first holder that tells."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, max(timeout, 0.01))  # 0 would disarm it
    out = fcntl.fcntl(out_fd, fcntl.F_DUPFD_CLOEXEC, 3)
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    os.closerange(3, out)
    os.closerange(out + 1, os.sysconf("SC_OPEN_MAX"))
    for index, one in enumerate(held):
        flags = None
        for pid, fd in one.places:
            flags = _read_flags_at(pid, fd, one)
            if flags is not None:
                break
        write_all(out, _encode_flags(index, flags))
    write_all(out, b"end\n")
    os.close(out)


def _launch_worker(held: Sequence[HeldSocket], out_fd: int, timeout: float) -> None:
    """In a single-threaded child that exits right after: fork the worker, which init then adopts."""
    if os.fork() == 0:  # pragma: no cover - the worker
        try:
            _run_worker(held, out_fd, timeout)
        finally:
            os._exit(0)


def _spawned_launcher(args: list[str]) -> None:  # pragma: no cover - runs in the spawned python
    try:
        _launch_worker([HeldSocket.decode(arg) for arg in args[2:]], int(args[0]), float(args[1]))
    finally:
        os._exit(0)


def _start_forked(held: Sequence[HeldSocket], read_end: int, write_end: int, timeout: float) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the launcher
        try:
            os.close(read_end)
            _launch_worker(held, write_end, timeout)
        finally:
            os._exit(0)
    return pid


def _start_spawned(held: Sequence[HeldSocket], write_end: int, timeout: float) -> int:
    """posix_spawn is safe beside other threads; -I keeps the working directory and PYTHON* out of imports."""
    source_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = 1 if write_end != 1 else 2  # dup2 onto itself would keep close-on-exec set
    actions = [(os.POSIX_SPAWN_DUP2, write_end, out)]
    actions += [(os.POSIX_SPAWN_OPEN, std, os.devnull, os.O_RDWR, 0) for std in (0, 1, 2) if std != out]
    argv = [sys.executable, "-I", "-c", _SPAWNED_WORKER, source_root, str(out), str(timeout)]
    argv += [one.encode() for one in held]
    return os.posix_spawn(
        sys.executable, argv, dict(os.environ), file_actions=actions, setsigmask=(), setsigdef=(signal.SIGALRM,)
    )


def _read_until(fd: int, deadline: float) -> bytes:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while not data.endswith(b"end\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _reap(pid: int, deadline: float) -> None:
    """The launcher only forks (or starts python and forks), so it ends quickly; past the deadline it is ended."""
    with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: already reaped
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() >= deadline:
                end_child(pid)
                return
            time.sleep(0.002)


def read_held_flags(held: Sequence[HeldSocket], timeout: float = FLAGS_TIMEOUT) -> list[SocketFlags | None]:
    """SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY of sockets other processes hold, one entry per ``held``.

    None where a flag cannot be read: not permitted (needs CAP_SYS_PTRACE, or the same user and a
    dumpable target), the fd no longer that socket, the helper not startable, or the deadline passed.
    One helper serves the whole batch. Never blocks past ``timeout``, whatever the holders do.
    """
    if not held:
        return []
    read_end, write_end = os.pipe()
    try:
        try:
            if single_threaded():
                launcher = _start_forked(held, read_end, write_end, timeout)
            else:
                launcher = _start_spawned(held, write_end, timeout)
        except OSError:  # no memory or no process left for a helper
            return [None] * len(held)
        finally:
            os.close(write_end)
        deadline = time.monotonic() + timeout
        data = _read_until(read_end, deadline)
        _reap(launcher, deadline)
    finally:
        os.close(read_end)
    return _decode_flags(data, len(held))


def _owner(sock: Socket, holders: tuple[Holder, ...], flags: SocketFlags | None) -> Owner:
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
        owner_changed=flags.owner_changed if flags else None,
        timer_ms=sock.timer_ms,
        holders=holders,
        socket=sock,
    )


TIMEWAIT_SECONDS = 60.0  # TCP_TIMEWAIT_LEN: the longest a TIME-WAIT (or FIN-WAIT-2 timewait) socket lives


def _covers(listener: Owner, b: Owner) -> bool:
    """Could ``listener`` have accepted the connection ``b`` is left of (same port, its address covered)?

    An accepted socket has its listener's family: an AF_INET6 listener's IPv4 connections are AF_INET6
    sockets at v4-mapped addresses, which a v6-only listener never accepts."""
    if listener.family is not b.family:
        return False
    if listener.address == b.address:
        return True
    if listener.family is Family.IPV4:
        return listener.address == "0.0.0.0"
    if ipaddress.IPv6Address(b.address).ipv4_mapped is not None:
        return listener.address in ("::", "::ffff:0.0.0.0") and listener.v6only is False
    return listener.address == "::"


def _inherited(b: Owner, owners: Sequence[Owner], now: float) -> Owner:
    """A TIME-WAIT socket of a server keeps the SO_REUSEADDR / SO_REUSEPORT / IPV6_V6ONLY its accepted
    child copied from the listener. When every listener that could have accepted it still exists with
    readable, equal options, and each was held by a process older than the connection's end (so the
    socket is not left over from an earlier server with other options), those are its options."""
    if not b.timewait or (b.reuseaddr is not None and b.reuseport is not None):
        return b
    listeners = [o for o in owners if o.listening and _covers(o, b)]
    if not listeners or any(o.reuseaddr is None or o.reuseport is None or not o.holders for o in listeners):
        return b
    if len({(o.reuseaddr, o.reuseport, o.v6only if o.family is b.family else None) for o in listeners}) != 1:
        return b
    ended = now - (TIMEWAIT_SECONDS - (b.timer_ms or 0) / 1000)  # the earliest its connection can have ended
    for listener in listeners:
        starts = [h.process.start_time for h in listener.holders]
        if any(start is None for start in starts) or min(starts) >= ended:  # type: ignore[type-var]
            return b
    lead = listeners[0]
    v6only = lead.v6only if b.family is Family.IPV6 and lead.family is Family.IPV6 else b.v6only
    return replace(b, reuseaddr=lead.reuseaddr, reuseport=lead.reuseport, v6only=v6only)


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
    owning = [sock for sock in snap.sockets if sock.local_port in owners and sock.state is not State.SYN_RECV]
    holders = [snap.holders_of(sock) for sock in owning]
    asked = [i for i, sock in enumerate(owning) if sock.inode is not None and holders[i]]
    places = [tuple((h.process.pid, fd) for h in holders[i] for fd in h.fds) for i in asked]
    held = [HeldSocket(owning[i].cookie, owning[i].inode or 0, p) for i, p in zip(asked, places, strict=True)]
    flags = dict(zip(asked, read_held_flags(held), strict=True))  # one helper for every holder
    for i, sock in enumerate(owning):
        owners[sock.local_port].append(_owner(sock, holders[i], flags.get(i)))
    now = time.time()
    for port, found in owners.items():
        owners[port] = [_inherited(b, found, now) for b in found]
    for sock in snap.sockets:
        if proto is Proto.UDP:
            for port in ports:
                if port and sock.local_port % size == port % size:
                    slots[port] += 1
    return OwnerFacts({port: tuple(found) for port, found in owners.items()}, snap, slots)


def with_kernel_flags(owners: Sequence[Owner], kernel: dict[int, KernelSocket]) -> tuple[Owner, ...]:
    """Owners with the SO_REUSEADDR / SO_REUSEPORT / IPV6_V6ONLY / device the kernel keeps in their
    ``sock_common`` (matched by socket cookie): TIME-WAIT and orphaned sockets keep theirs there
    (``tw_reuse``, ``tw_reuseport``, ``tw_ipv6only``) whatever process or listener is gone. For TIME-WAIT
    sockets they replace what was inferred from a listener (the socket may be a client's); elsewhere they
    fill in only what no holder showed."""
    settled = []
    for b in owners:
        cookie = b.socket.cookie if b.socket is not None else None
        found = kernel.get(cookie) if cookie else None
        if found is None or found.port != b.port:
            settled.append(b)
            continue
        if b.timewait:
            b = replace(b, reuseaddr=None, reuseport=None, v6only=None if b.family is Family.IPV6 else False)
        settled.append(
            replace(
                b,
                reuseaddr=b.reuseaddr if b.reuseaddr is not None else found.reuse != 0,
                reuseport=b.reuseport if b.reuseport is not None else found.reuseport,
                v6only=b.v6only if b.v6only is not None else found.v6only,
                device=b.device if b.device is not None else found.device,
            )
        )
    return tuple(settled)
