"""Fast path: NETLINK_SOCK_DIAG dumps of TCP and UDP sockets, decoded with ``struct``.

pyroute2's generic message classes decode every attribute into nested Python objects, many times slower
and larger than a ``struct`` decode of the fixed ``inet_diag_msg`` header (the benchmark's decoder
comparison, benchmarks/README.md). So the dump itself (request, filter bytecode, decoding) is done here
with the standard library; pyroute2 is the tests' oracle for this decoder.

Filters run in the kernel where it can: the state bitmask and the port ranges (filter bytecode).
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py builds four enums at import (~1/3 of python -c pass)
import contextlib
import errno
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from portscope.engine.recordmaker import positional_maker
from portscope.errors import SourceError
from portscope.model.query import PortRange
from portscope.model.records import (
    TCP_STATE_BY_NUMBER,
    TIMER_BY_CODE,
    UDP_STATE_BY_NUMBER,
    Family,
    Proto,
    Socket,
    State,
)
from portscope.sources.linux import end_child

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_SKV6ONLY = 11

TCPF_BOUND_INACTIVE_BIT = 13  # kernel 6.8+: bound-only TCP sockets

# struct nlmsghdr; struct inet_diag_req_v2; struct inet_diag_msg
NLMSGHDR = struct.Struct("=IHHII")
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI48s")
INET_DIAG_MSG = struct.Struct("=BBBBHH16s16sIQIIIII")
RTATTR = struct.Struct("=HH")
NLMSGERR_ERRNO = struct.Struct("=i")
HEADER_AND_MSG = NLMSGHDR.size + INET_DIAG_MSG.size
_HEADER_AND_MSG = struct.Struct("=IHHII" + INET_DIAG_MSG.format[1:])  # both in one unpack
assert _HEADER_AND_MSG.size == HEADER_AND_MSG

# inet_diag_bc_op codes
BC_JMP = 1
BC_S_GE = 2
BC_S_LE = 3
BC_D_GE = 4
BC_D_LE = 5
BC_OP = struct.Struct("=BBH")

IPPROTO = {Proto.TCP: socket.IPPROTO_TCP, Proto.UDP: socket.IPPROTO_UDP}
AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}

# Ports arrive in network byte order: raw value -> port, filled as ports are seen. Sockets then share
# one int object per port number (memory at 100k+ sockets) without building a 65536-entry table at
# start-up (time and 2 MB for small listings).
_PORTS: dict[int, int] = {}
_ZERO4 = bytes(4)
_ZERO16 = bytes(16)
_TW_OR_REQUEST = {6, 3, 12}  # TIME_WAIT, SYN_RECV, NEW_SYN_RECV: uid and inode are placeholders
_V6ONLY_STATES = {7, 10}  # the kernel sends INET_DIAG_SKV6ONLY only for CLOSE and LISTEN
_TIMER_TABLE = [TIMER_BY_CODE.get(code) for code in range(256)]  # idiag_timer is a u8
_make_socket = positional_maker(Socket)


class NetlinkUnavailable(Exception):
    """The kernel or the sandbox refused the dump; the caller falls back to /proc."""


# ---------------------------------------------------------------------------------------------------
# Kernel state masks and filter bytecode


def state_mask(proto: Proto, states: frozenset[State]) -> int:
    numbers = TCP_STATE_BY_NUMBER if proto is Proto.TCP else UDP_STATE_BY_NUMBER
    mask = 0
    for number, state in numbers.items():
        if state in states:
            mask |= 1 << number
    if proto is Proto.TCP and State.BOUND in states:
        mask = (mask & ~(1 << 7)) | (1 << TCPF_BOUND_INACTIVE_BIT)
    return mask


# A compiled block falls through to its end on success and jumps to end + 4 on failure
# (the convention the kernel's inet_diag_bc_audit accepts). Ops are kept symbolic until encoding:
# (code, yes_target, no_target, port) with targets as offsets in the block, FAIL for "reject".
_FAIL = -1


@dataclass(frozen=True)
class _Block:
    ops: tuple[tuple[int, int, int, int | None], ...]

    @property
    def length(self) -> int:
        return sum(8 if port is not None else 4 for _, _, _, port in self.ops)

    def shifted(self, delta: int, fail_to: int) -> list[tuple[int, int, int, int | None]]:
        return [(code, yes + delta, fail_to if no == _FAIL else no + delta, port) for code, yes, no, port in self.ops]


def _leaf_range(ge: int, le: int, ports: PortRange) -> _Block:
    return _Block(((ge, 8, _FAIL, ports.low), (le, 16, _FAIL, ports.high)))


def _and(a: _Block, b: _Block) -> _Block:
    return _Block(tuple(a.shifted(0, _FAIL) + b.shifted(a.length, _FAIL)))


def _or(a: _Block, b: _Block) -> _Block:
    jmp_at = a.length
    b_at = jmp_at + 4
    end = b_at + b.length
    jump = (BC_JMP, b_at, end, None)
    return _Block(tuple([*a.shifted(0, b_at), jump, *b.shifted(b_at, _FAIL)]))


def _any_of(blocks: Sequence[_Block]) -> _Block:
    result = blocks[0]
    for block in blocks[1:]:
        result = _or(result, block)
    return result


def port_filter_bytecode(
    local: Sequence[PortRange] | None,
    remote: Sequence[PortRange] | None,
    either: Sequence[PortRange] | None,
) -> bytes | None:
    """Bytecode accepting sockets whose ports match every given set (each set: any of its ranges)."""
    clauses: list[_Block] = []
    if local:
        clauses.append(_any_of([_leaf_range(BC_S_GE, BC_S_LE, r) for r in local]))
    if remote:
        clauses.append(_any_of([_leaf_range(BC_D_GE, BC_D_LE, r) for r in remote]))
    if either:
        clauses.append(
            _any_of(
                [_leaf_range(BC_S_GE, BC_S_LE, r) for r in either] + [_leaf_range(BC_D_GE, BC_D_LE, r) for r in either]
            )
        )
    if not clauses:
        return None
    program = clauses[0]
    for clause in clauses[1:]:
        program = _and(program, clause)
    return _encode(program)


def _encode(block: _Block) -> bytes:
    total = block.length
    out = bytearray()
    offset = 0
    for code, yes, no, port in block.ops:
        yes_target = total + 4 if yes == _FAIL else yes
        no_target = total + 4 if no == _FAIL else no
        out += BC_OP.pack(code, yes_target - offset, no_target - offset)
        if port is not None:
            out += BC_OP.pack(0, 0, port)
            offset += 8
        else:
            offset += 4
    return bytes(out)


# ---------------------------------------------------------------------------------------------------
# Requests and decoding


def build_request(proto: Proto, family: Family, states_mask: int, bytecode: bytes | None, seq: int) -> bytes:
    body = INET_DIAG_REQ_V2.pack(AF[family], IPPROTO[proto], 0, states_mask, bytes(48))
    if bytecode:
        attr_len = RTATTR.size + len(bytecode)
        body += RTATTR.pack(attr_len, INET_DIAG_REQ_BYTECODE) + bytecode
        body += bytes((-attr_len) % 4)
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


class Decoder:
    """Turns dump payloads into :class:`Socket` records; caches address text and device names."""

    def __init__(self, proto: Proto, family: Family, netns: int | None, ifname=None) -> None:
        self.proto = proto
        self.family = family
        self.netns = netns
        self.states = TCP_STATE_BY_NUMBER if proto is Proto.TCP else UDP_STATE_BY_NUMBER
        self._state_table: list[State | None] = [self.states.get(number) for number in range(256)]  # a u8
        self.ifname = ifname or _ifindex_name
        self._addr_cache: dict[bytes, str] = {}
        self._if_cache: dict[int, str | None] = {0: None}

    def address(self, raw: bytes) -> str:
        text = self._addr_cache.get(raw)
        if text is None:
            if self.family is Family.IPV4:
                text = socket.inet_ntop(socket.AF_INET, raw[:4])
            else:
                text = socket.inet_ntop(socket.AF_INET6, raw)
            self._addr_cache[raw] = text
        return text

    def interface(self, index: int) -> str | None:
        if index not in self._if_cache:
            self._if_cache[index] = self.ifname(index)
        return self._if_cache[index]

    def decode(self, data: bytes | bytearray | memoryview, source: str) -> tuple[list[Socket], bool]:
        """Decode one buffer of netlink messages; returns (sockets, done)."""
        # The hot loop of every listing (tens of thousands of iterations): one unpack of header and
        # inet_diag_msg together, table lookups instead of calls, and the fast Socket constructor.
        sockets: list[Socket] = []
        append = sockets.append
        unpack_header = NLMSGHDR.unpack_from
        unpack_all = _HEADER_AND_MSG.unpack_from
        make = _make_socket
        ports = _PORTS
        port_of = ports.get
        states = self._state_table
        timers = _TIMER_TABLE
        proto, fam, netns = self.proto, self.family, self.netns
        is_v4 = fam is Family.IPV4
        zero = _ZERO4 if is_v4 else _ZERO16
        zero_len = len(zero)
        addr_cache = self._addr_cache
        address = self.address
        interface = self.interface
        placeholder_states = _TW_OR_REQUEST
        size = len(data)
        offset = 0
        done = False
        while offset < size:
            if size - offset >= HEADER_AND_MSG:
                (
                    length,
                    msg_type,
                    _flags,
                    _seq,
                    _pid,
                    _family,
                    state_no,
                    timer,
                    _retrans,
                    sport,
                    dport,
                    src,
                    dst,
                    ifindex,
                    cookie,
                    expires,
                    rqueue,
                    wqueue,
                    uid,
                    inode,
                ) = unpack_all(data, offset)
            elif size - offset >= NLMSGHDR.size:
                length, msg_type, _flags, _seq, _pid = unpack_header(data, offset)
            else:
                raise SourceError(source, f"truncated netlink header at byte {offset}")
            if length < NLMSGHDR.size or offset + length > size:
                raise SourceError(source, f"bad netlink message length {length} at byte {offset}")
            if msg_type != SOCK_DIAG_BY_FAMILY:
                if control_message(data, offset, msg_type, source):
                    done = True
                    break
                offset += (length + 3) & ~3
                continue
            if length < HEADER_AND_MSG:
                raise SourceError(source, f"inet_diag_msg too short ({length} bytes) at byte {offset}")
            state = states[state_no]
            if state is None:
                raise SourceError(source, f"unknown {proto.value} state {state_no} at byte {offset}")
            local = addr_cache.get(src) or address(src)
            port = port_of(sport)
            sport = _port(sport) if port is None else port
            port = port_of(dport)
            dport = _port(dport) if port is None else port
            if dport == 0 and dst[:zero_len] == zero:
                remote = None
                remote_port = None
            else:
                remote = addr_cache.get(dst) or address(dst)
                remote_port = dport
            v6only = None
            if not is_v4 and state_no in _V6ONLY_STATES:
                v6only = _find_v6only(data, offset + HEADER_AND_MSG, offset + length)
            timer_name = timers[timer]
            append(
                make(
                    proto,
                    fam,
                    state,
                    local,
                    sport,
                    remote,
                    remote_port,
                    rqueue,
                    wqueue,  # for a listener: its backlog
                    # 3: a timewait sock (also FIN-WAIT-2): uid and inode are placeholders, as for requests
                    None if state_no in placeholder_states or timer == 3 else uid,
                    inode or None,
                    ifindex,
                    interface(ifindex) if ifindex else None,
                    v6only,
                    timer_name,
                    expires if timer_name else None,
                    netns,
                    cookie,
                )
            )
            offset += (length + 3) & ~3
        return sockets, done


def control_message(data, offset: int, msg_type: int, source: str) -> bool:
    """A message of a dump that is not a socket: True when it ends the dump; raises for an error.

    NLMSG_DONE's payload is the dump's status: a dump the kernel could not start (no *_diag module for
    the family or protocol) ends in a DONE carrying -ENOENT. An NLMSG_ERROR with code 0 is an ACK.
    Shared by every sock_diag decoder (IP sockets here, UNIX sockets in :mod:`portscope.sources.unixdiag`).
    """
    if msg_type == NLMSG_DONE:
        code = _error_code(data, offset + NLMSGHDR.size)
        if code:
            raise _dump_error(-code, source)
        return True
    if msg_type == NLMSG_ERROR:
        code = _error_code(data, offset + NLMSGHDR.size)
        if code is None:
            raise SourceError(source, f"truncated netlink error at byte {offset}")
        if code != 0:
            raise _dump_error(-code, source)
    return False


def _port(raw: int) -> int:
    port = _PORTS[raw] = ((raw & 0xFF) << 8) | (raw >> 8)
    return port


def _find_v6only(data, offset: int, end: int) -> bool | None:
    """INET_DIAG_SKV6ONLY among the attributes in ``data[offset:end]``; None when absent or malformed."""
    while offset + RTATTR.size <= end:
        attr_len, attr_type = RTATTR.unpack_from(data, offset)
        if attr_len < RTATTR.size or offset + attr_len > end:
            return None  # a malformed attribute: the flag stays unknown
        if attr_type == INET_DIAG_SKV6ONLY and attr_len > RTATTR.size:
            return bool(data[offset + RTATTR.size])
        offset += (attr_len + 3) & ~3
    return None


def _ifindex_name(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def _dump_error(code: int, source: str) -> Exception:
    if code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EINVAL):
        # ENOENT: no *_diag module for this protocol (the kernel could not load one)
        return NetlinkUnavailable(f"{source}: kernel has no sock_diag support ({os.strerror(code)})")
    if code in (errno.EPERM, errno.EACCES):
        return NetlinkUnavailable(f"{source}: refused ({os.strerror(code)})")
    return SourceError(source, f"netlink error: {os.strerror(code)}")


# ---------------------------------------------------------------------------------------------------
# The dumps themselves

RECV_BUFFER = 1 << 16


@dataclass(frozen=True)
class DumpRequest:
    proto: Proto
    family: Family
    states_mask: int
    bytecode: bytes | None = None
    seq: int = 1

    @property
    def source(self) -> str:
        return f"netlink sock_diag {self.proto.value}/{self.family.value}"

    def encode(self) -> bytes:
        return build_request(self.proto, self.family, self.states_mask, self.bytecode, self.seq)


def open_socket() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise NetlinkUnavailable(f"cannot open a sock_diag netlink socket: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def dump(sock: socket.socket, request: DumpRequest, decoder: Decoder) -> list[Socket]:
    """Send one dump request and decode every socket of the answer.

    Any request with ``encode()`` and ``source`` and any decoder with ``decode(data, source)`` will do
    (the UNIX socket dump of :mod:`portscope.sources.unixdiag` uses it too)."""
    try:
        sock.send(request.encode())
    except OSError as exc:
        raise NetlinkUnavailable(f"{request.source}: send failed ({exc.strerror})") from None
    return receive(sock.recv_into, decoder, request.source)


def receive(recv_into, decoder: Decoder, source: str) -> list[Socket]:
    """Decode buffers from ``recv_into`` (one netlink datagram each) up to the end of one dump."""
    result: list[Socket] = []
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    while True:
        try:
            received = recv_into(buffer)
        except OSError as exc:
            raise NetlinkUnavailable(f"{source}: receive failed ({exc.strerror})") from None
        if received == 0:
            raise SourceError(source, "netlink socket closed mid-dump")
        batch, done = decoder.decode(view[:received], source)
        result.extend(batch)
        if done:
            return result


class TableDumps:
    """Dumps of several tables, answered in request order by :meth:`next`.

    With ``prefetch``, a forked child receives them all from the kernel and passes the buffers on
    through a socket pair while this process decodes: the kernel's half of the work runs on a second
    CPU. It forks: the caller decides when that is allowed and
    pays (:meth:`portscope.engine.parallel.Parallelism.prefetch_dumps`). Anything odd in the child's
    stream, and this table and the rest are dumped here instead, on a fresh socket. A refused table raises
    :class:`NetlinkUnavailable` and the next one is tried on a fresh socket (the caller falls back).
    """

    def __init__(self, requests: Sequence[DumpRequest], *, prefetch: bool = False) -> None:
        self._pending = list(requests)
        self._sock: socket.socket | None = open_socket()
        self._child: _PrefetchChild | None = None
        if prefetch and len(self._pending) > 0:
            self._child = _PrefetchChild.start(self._sock, self._pending)
            if self._child is not None:
                self._sock.close()  # the child's now; a fallback opens a fresh one
                self._sock = None

    def next(self, decoder: Decoder) -> list[Socket]:
        request = self._pending.pop(0)
        if self._child is not None:
            try:
                return receive(self._child.channel.recv_into, decoder, request.source)
            except (NetlinkUnavailable, SourceError):
                self._child.stop()
                self._child = None
        if self._sock is None:
            self._sock = open_socket()
        try:
            return dump(self._sock, request, decoder)
        except NetlinkUnavailable:
            # a refused dump may leave the socket mid-stream: start afresh for the next table
            self._sock.close()
            self._sock = None
            raise

    def close(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> TableDumps:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _PrefetchChild:
    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self.channel = channel

    @classmethod
    def start(cls, sock: socket.socket, requests: Sequence[DumpRequest]) -> _PrefetchChild | None:
        """None when the child could not be started (the caller dumps in-line)."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        except OSError:
            return None
        with contextlib.suppress(OSError):
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # capped by net.core.wmem_max
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:  # pragma: no cover - runs in the child, which ends with _exit
            ours.close()
            _child_relays(sock, [request.encode() for request in requests], theirs)
        theirs.close()
        return cls(pid, ours)

    def stop(self) -> None:
        self.channel.close()  # a child still sending gets EPIPE and ends
        end_child(self.pid)


def _child_relays(sock: socket.socket, requests: list[bytes], out: socket.socket) -> None:  # pragma: no cover
    status = 1
    try:
        buffer = bytearray(RECV_BUFFER)
        view = memoryview(buffer)
        for request in requests:
            sock.send(request)
            while True:
                received = sock.recv_into(buffer)
                if received == 0:
                    return
                out.send(view[:received])
                if ends_dump(view[:received]):
                    break
        status = 0
    except OSError:
        pass  # the parent sees the stream end early and dumps the rest itself
    finally:
        os._exit(status)


def ends_dump(data: bytes | bytearray | memoryview) -> bool:
    """Does this buffer end a dump? As :meth:`Decoder.decode` decides: NLMSG_DONE, or an error that is not an ACK."""
    offset = 0
    size = len(data)
    while offset + NLMSGHDR.size <= size:
        length, msg_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if msg_type == NLMSG_DONE or length < NLMSGHDR.size:  # a malformed one: the decoder will say so
            return True
        if msg_type == NLMSG_ERROR and _error_code(data, offset + NLMSGHDR.size) != 0:
            return True
        offset += (length + 3) & ~3
    return False


def _error_code(data, offset: int) -> int | None:
    if offset + NLMSGERR_ERRNO.size > len(data):
        return None
    return NLMSGERR_ERRNO.unpack_from(data, offset)[0]
