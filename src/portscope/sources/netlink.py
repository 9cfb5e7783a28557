"""Fast path: NETLINK_SOCK_DIAG dumps of TCP and UDP sockets, decoded with ``struct``.

pyroute2's generic message classes decode every attribute into nested Python objects, many times slower
and larger than a ``struct`` decode of the fixed ``inet_diag_msg`` header (the benchmark's decoder
comparison, benchmarks/README.md). So the dump itself (request, filter bytecode, decoding) is done here
with the standard library; pyroute2 is the tests' oracle for this decoder.

Filters run in the kernel where it can: the state bitmask and the port ranges (filter bytecode).

TCP is dumped for both families in one walk of the kernel's tables when it can be: the older request
``TCPDIAG_GETSOCK`` (``struct inet_diag_req``) is answered by ``inet_diag_dump_compat``, which asks the TCP
handler for ``AF_UNSPEC`` whatever family the request names, so one walk of the established hash (shared by
every network namespace unless ``tcp_child_ehash_entries`` was set) yields IPv4 and IPv6 sockets together,
each message saying its own family. The state mask, ``idiag_ext`` and filter bytecode are read as for
``SOCK_DIAG_BY_FAMILY``; the replies carry the request's type. A kernel or sandbox refusing it gets the
per-family requests instead (:meth:`TableDumps.next`).
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py builds four enums at import (~1/3 of python -c pass)
import contextlib
import errno
import os
import struct
from collections.abc import Callable, Sequence

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import PortRange
from portscope.model.recordmaker import positional_maker, record_twin
from portscope.model.records import (
    TCP_STATE_BY_NUMBER,
    TIMER_BY_CODE,
    UDP_STATE_BY_NUMBER,
    Detail,
    Family,
    Proto,
    Socket,
    State,
)
from portscope.sources.linux import end_child

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from portscope.model.details import MemInfo, SocketDetails, TcpInfo
    from portscope.model.filter import Node

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18  # the older TCP request: both families in one walk (module docstring)
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_INFO = 2
INET_DIAG_CONG = 4
INET_DIAG_SKMEMINFO = 7
INET_DIAG_SKV6ONLY = 11

TCPF_BOUND_INACTIVE_BIT = 13  # kernel 6.8+: bound-only TCP sockets

# struct nlmsghdr; struct inet_diag_req_v2; struct inet_diag_req (TCPDIAG_GETSOCK); struct inet_diag_msg
NLMSGHDR = struct.Struct("=IHHII")
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI48s")
INET_DIAG_REQ = struct.Struct("=BBBB48sII")  # family, src_len, dst_len, ext, id, states, dbs
INET_DIAG_MSG = struct.Struct("=BBBBHH16s16sIQIIIII")
RTATTR = struct.Struct("=HH")
NLMSGERR_ERRNO = struct.Struct("=i")
HEADER_AND_MSG = NLMSGHDR.size + INET_DIAG_MSG.size
_HEADER_AND_MSG = struct.Struct("=IHHII" + INET_DIAG_MSG.format[1:])  # both in one unpack
assert _HEADER_AND_MSG.size == HEADER_AND_MSG
# the decoder's view of the same bytes: what a record needs, the rest skipped as padding (no int objects made
# for nlmsg_flags, nlmsg_seq, nlmsg_pid and idiag_retrans)
_MESSAGE = struct.Struct("=IH10xBBBxHH16s16sIQIIIII")
assert _MESSAGE.size == HEADER_AND_MSG

# inet_diag_bc_op codes (include/uapi/linux/inet_diag.h)
BC_NOP = 0
BC_JMP = 1
BC_S_GE = 2
BC_S_LE = 3
BC_D_GE = 4
BC_D_LE = 5
BC_AUTO = 6
BC_S_COND = 7
BC_D_COND = 8
BC_DEV_COND = 9
BC_MARK_COND = 10
BC_S_EQ = 11
BC_D_EQ = 12
BC_OP = struct.Struct("=BBH")

IPPROTO = {Proto.TCP: socket.IPPROTO_TCP, Proto.UDP: socket.IPPROTO_UDP}
AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}

# Ports arrive in network byte order: raw value -> port, filled as ports are seen. Sockets then share
# one int object per port number (memory at 100k+ sockets) without building a 65536-entry table at
# start-up (time and 2 MB for small listings).
_PORTS: dict[int, int] = {}
_ZERO4 = bytes(4)
_ZERO16 = bytes(16)
# by state number (a u8): TIME_WAIT, SYN_RECV, NEW_SYN_RECV report uid and inode as placeholders; the kernel
# sends INET_DIAG_SKV6ONLY only for CLOSE and LISTEN
_PLACEHOLDER_UID = [number in (3, 6, 12) for number in range(256)]
_V6ONLY_STATES = [number in (7, 10) for number in range(256)]
_TIMER_TABLE = [TIMER_BY_CODE.get(code) for code in range(256)]  # idiag_timer is a u8
# the decoder fills a plain twin of Socket attribute by attribute, then switches its class (recordmaker)
_SOCKET_TWIN, _REBUILD_SOCKET = record_twin(Socket)


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


# A compiled block falls through to its end on success and jumps to end + 4 on failure (the convention
# the kernel's inet_diag_bc_audit accepts: every "yes" is the next op, "no" jumps forward). Ops are kept
# symbolic until encoding: (code, yes_target, no_target, payload) with targets as offsets in the block,
# _FAIL for "reject".
_FAIL = -1


@dataclass_lite(frozen=True)
class _Block:
    ops: tuple[tuple[int, int, int, bytes], ...]

    @property
    def length(self) -> int:
        return sum(4 + len(payload) for _, _, _, payload in self.ops)

    def shifted(self, delta: int, fail_to: int) -> list[tuple[int, int, int, bytes]]:
        return [
            (code, yes + delta, fail_to if no == _FAIL else no + delta, payload) for code, yes, no, payload in self.ops
        ]


def _test(code: int, payload: bytes) -> _Block:
    """One test: on to the next op when it holds, reject otherwise."""
    return _Block(((code, 4 + len(payload), _FAIL, payload),))


def _port_test(code: int, port: int) -> _Block:
    return _test(code, BC_OP.pack(0, 0, port))  # the port travels in the "no" field of a second op


def _leaf_range(ge: int, le: int, ports: PortRange) -> _Block:
    if ports.low == ports.high:
        return _port_test(BC_S_EQ if ge == BC_S_GE else BC_D_EQ, ports.low)
    return _and(_port_test(ge, ports.low), _port_test(le, ports.high))


def _and(a: _Block, b: _Block) -> _Block:
    return _Block(tuple(a.shifted(0, _FAIL) + b.shifted(a.length, _FAIL)))


def _or(a: _Block, b: _Block) -> _Block:
    jmp_at = a.length
    b_at = jmp_at + 4
    end = b_at + b.length
    jump = (BC_JMP, b_at, end, b"")
    return _Block(tuple([*a.shifted(0, b_at), jump, *b.shifted(b_at, _FAIL)]))


def _not(a: _Block) -> _Block:
    # a's failures land after the jump (success); a's success reaches the jump, which always rejects
    end = a.length + 4
    return _Block(tuple([*a.shifted(0, end), (BC_JMP, end, _FAIL, b"")]))


def _any_of(blocks: Sequence[_Block]) -> _Block:
    result = blocks[0]
    for block in blocks[1:]:
        result = _or(result, block)
    return result


def _port_clauses(
    local: Sequence[PortRange] | None, remote: Sequence[PortRange] | None, either: Sequence[PortRange] | None
) -> list[_Block]:
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
    return clauses


def port_filter_bytecode(
    local: Sequence[PortRange] | None,
    remote: Sequence[PortRange] | None,
    either: Sequence[PortRange] | None,
) -> bytes | None:
    """Bytecode accepting sockets whose ports match every given set (each set: any of its ranges)."""
    return filter_bytecode(local, remote, either, None)


class NothingMatches(Exception):
    """The filter rejects every socket of this namespace (a device it names does not exist here)."""


def filter_bytecode(
    local: Sequence[PortRange] | None,
    remote: Sequence[PortRange] | None,
    either: Sequence[PortRange] | None,
    tree: Node | None,
    resolve_device: Callable[[str], int | None] | None = None,
) -> bytes | None:
    """Bytecode for the port sets (as :func:`port_filter_bytecode`) and a filter tree made of kernel
    tests (:meth:`portscope.model.filter.Filter.kernel_tree`), all of which must hold. Device names are
    resolved with ``resolve_device`` in the namespace being dumped. None: no filter; raises
    :class:`NothingMatches` when the filter can match nothing here."""
    clauses = _port_clauses(local, remote, either)
    if tree is not None:
        from portscope.model.filter import FALSE, TRUE  # only for an expression: not on every listing's start-up

        tree = _resolve_devices(tree, resolve_device or device_index)
        if tree == FALSE:
            raise NothingMatches
        if tree != TRUE:
            clauses.append(_compile(tree))
    if not clauses:
        return None
    program = clauses[0]
    for clause in clauses[1:]:
        program = _and(program, clause)
    return _encode(program)


def _resolve_devices(tree: Node, resolve_device: Callable[[str], int | None]) -> Node:
    from portscope.model.filter import FALSE, Device, substitute

    def resolve(leaf: Node) -> Node | None:
        if not isinstance(leaf, Device):
            return None
        index = resolve_device(leaf.text)
        return FALSE if index is None else Device(str(index))

    return substitute(tree, resolve)


def device_index(text: str) -> int | None:
    """As ss resolves ``dev``: a device name of this namespace, else a number (an index)."""
    try:
        return socket.if_nametoindex(text)
    except (OSError, ValueError):
        pass
    if text.isascii() and text.isdigit() and int(text) <= 0xFFFFFFFF:
        return int(text)
    return None


_FAMILY_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}
HOSTCOND = struct.Struct("=BBxxi")  # struct inet_diag_hostcond: family, prefix_len, port (-1: any)


def _compile(node: Node) -> _Block:
    from portscope.model.filter import And, Autobound, Device, HostCond, Mark, Not, Or, PortCompare

    if isinstance(node, And):
        return _and(_compile(node.left), _compile(node.right))
    if isinstance(node, Or):
        return _or(_compile(node.left), _compile(node.right))
    if isinstance(node, Not):
        return _not(_compile(node.operand))
    if isinstance(node, PortCompare):
        codes = {
            (False, "eq"): BC_S_EQ,
            (False, "ge"): BC_S_GE,
            (False, "le"): BC_S_LE,
            (True, "eq"): BC_D_EQ,
            (True, "ge"): BC_D_GE,
            (True, "le"): BC_D_LE,
        }
        return _port_test(codes[(node.remote, node.op)], node.port)
    if isinstance(node, HostCond):
        code = BC_D_COND if node.remote else BC_S_COND
        port = -1 if node.port is None else node.port
        if not node.prefixes:
            return _test(code, HOSTCOND.pack(socket.AF_UNSPEC, 0, port))
        tests = []
        for prefix in node.prefixes:
            raw = prefix.address.to_bytes(prefix.bits // 8, "big")
            tests.append(_test(code, HOSTCOND.pack(_FAMILY_AF[prefix.family], prefix.length, port) + raw))
        return _any_of(tests)
    if isinstance(node, Device):
        return _test(BC_DEV_COND, struct.pack("=I", int(node.text)))
    if isinstance(node, Autobound):
        return _test(BC_AUTO, b"")
    if isinstance(node, Mark):
        return _test(BC_MARK_COND, struct.pack("=II", node.mark, node.mask))  # struct inet_diag_markcond
    raise ValueError(f"not a kernel test: {node!r}")


def _encode(block: _Block) -> bytes:
    total = block.length
    out = bytearray()
    offset = 0
    for code, yes, no, payload in block.ops:
        yes_target = total + 4 if yes == _FAIL else yes
        no_target = total + 4 if no == _FAIL else no
        out += BC_OP.pack(code, yes_target - offset, no_target - offset)
        out += payload
        offset += 4 + len(payload)
    return bytes(out)


# ---------------------------------------------------------------------------------------------------
# Requests and decoding


def build_request(
    proto: Proto, family: Family | None, states_mask: int, bytecode: bytes | None, seq: int, extensions: int = 0
) -> bytes:
    """A dump request; ``family`` None: TCP of both families in one walk (TCPDIAG_GETSOCK)."""
    if family is None:
        if proto is not Proto.TCP:
            raise ValueError("only TCP is dumped for both families at once")
        body = INET_DIAG_REQ.pack(socket.AF_UNSPEC, 0, 0, extensions, bytes(48), states_mask, 0)
        msg_type = TCPDIAG_GETSOCK
    else:
        body = INET_DIAG_REQ_V2.pack(AF[family], IPPROTO[proto], extensions, states_mask, bytes(48))
        msg_type = SOCK_DIAG_BY_FAMILY
    if bytecode:
        attr_len = RTATTR.size + len(bytecode)
        body += RTATTR.pack(attr_len, INET_DIAG_REQ_BYTECODE) + bytecode
        body += bytes((-attr_len) % 4)
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


class Decoder:
    """Turns dump payloads into :class:`Socket` records; caches address text and device names.

    Each message says its family (``idiag_family``), so one decoder reads a dump of either family or of both
    at once (TCPDIAG_GETSOCK). ``family`` is the table asked for; None: both, and then IPv6 records are held
    back until the dump ends, so that they come in the order two dumps, IPv4 then IPv6, give them. A decoder
    for one family returns each buffer's records at once (the destroy feed's messages end no dump).
    """

    def __init__(self, proto: Proto, family: Family | None = None, netns: int | None = None, ifname=None) -> None:
        self.proto = proto
        self.family = family
        self.netns = netns
        self.states = TCP_STATE_BY_NUMBER if proto is Proto.TCP else UDP_STATE_BY_NUMBER
        self._state_by_number = dict(self.states)  # the decoder's own copy (a plain dict subscript)
        self.ifname = ifname or _ifindex_name
        # raw idiag_src/idiag_dst -> text, one cache per family (an IPv4 address is the first 4 of 16 bytes)
        self._text4: dict[bytes, str] = {}
        self._text6: dict[bytes, str] = {}
        self._if_cache: dict[int, str | None] = {0: None}
        self._held: list[Socket] = []  # this dump's IPv6 records, until it ends

    def restart(self) -> None:
        """Forget a dump that broke off (the table is dumped again from its start)."""
        self._held = []

    def interface(self, index: int) -> str | None:
        if index not in self._if_cache:
            self._if_cache[index] = self.ifname(index)
        return self._if_cache[index]

    def decode(self, data: bytes | bytearray | memoryview, source: str) -> tuple[list[Socket], bool]:
        """Decode one buffer of netlink messages; returns (sockets, done)."""
        # The hot loop of every listing (tens of thousands of iterations): one unpack of header and
        # inet_diag_msg together, and each record filled in place (a plain twin of Socket, attribute by
        # attribute, then given its class: no call per socket). States and address texts are plain subscripts
        # of tables of the values seen (a method call less each): a value not seen yet raises KeyError, is
        # learned (:meth:`_learn`, which also refuses an unknown state) and the message is decoded again.
        # Ports are looked up with get(): nearly unique on a busy host, half of them would raise. Anything
        # but a whole socket message (the dump's end, an error, a malformed length) takes :meth:`_other_message`.
        sockets: list[Socket] = []
        append4 = sockets.append
        append6 = self._held.append if self.family is None else append4
        unpack = _MESSAGE.unpack_from
        new, twin, socket_class, rebuild = object.__new__, _SOCKET_TWIN, Socket, _REBUILD_SOCKET
        port_of, new_port = _PORTS.get, _port
        states = self._state_by_number
        timers = _TIMER_TABLE
        placeholder_uid = _PLACEHOLDER_UID
        v6only_states = _V6ONLY_STATES
        find_v6only = _find_v6only
        proto, netns = self.proto, self.netns
        ipv4, ipv6 = Family.IPV4, Family.IPV6
        text4, text6 = self._text4, self._text6
        interface = self.interface
        by_family, by_tcp_request = SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK
        af_inet, af_inet6 = socket.AF_INET, socket.AF_INET6
        zero4, zero16 = _ZERO4, _ZERO16
        full = HEADER_AND_MSG
        size = len(data)
        offset = 0
        while offset < size:
            try:
                (
                    length,
                    msg_type,
                    family_no,
                    state_no,
                    timer,
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
                ) = unpack(data, offset)
            except struct.error:  # shorter than a socket message: the end of the dump, or truncated
                length = msg_type = 0
            if (msg_type != by_tcp_request and msg_type != by_family) or length < full or length > size - offset:
                offset = self._other_message(data, offset, source)
                if offset < 0:
                    break
                continue
            try:
                sock = new(twin)
                sock.proto = proto
                sock.state = states[state_no]
                sock.local_port = port_of(sport) or new_port(sport)
                sock.recv_q = rqueue
                sock.send_q = wqueue  # for a listener: its backlog
                # 3: a timewait sock (also FIN-WAIT-2): uid and inode are placeholders, as for requests
                sock.uid = None if placeholder_uid[state_no] or timer == 3 else uid
                sock.inode = inode or None
                sock.ifindex = ifindex
                sock.interface = interface(ifindex) if ifindex else None
                sock.timer = timer_name = timers[timer]
                sock.timer_ms = expires if timer_name else None
                sock.netns = netns
                sock.cookie = cookie
                if family_no == af_inet:
                    sock.family = ipv4
                    sock.local_address = text4[src]
                    if dport:
                        sock.remote_address = text4[dst]
                        sock.remote_port = port_of(dport) or new_port(dport)
                    elif dst[:4] == zero4:
                        sock.remote_address = sock.remote_port = None
                    else:
                        sock.remote_address = text4[dst]
                        sock.remote_port = 0
                    sock.v6only = None
                    append = append4
                elif family_no == af_inet6:
                    sock.family = ipv6
                    sock.local_address = text6[src]
                    if dport:
                        sock.remote_address = text6[dst]
                        sock.remote_port = port_of(dport) or new_port(dport)
                    elif dst == zero16:
                        sock.remote_address = sock.remote_port = None
                    else:
                        sock.remote_address = text6[dst]
                        sock.remote_port = 0
                    sock.v6only = find_v6only(data, offset + full, offset + length) if v6only_states[state_no] else None
                    append = append6
                else:
                    raise SourceError(source, f"unknown address family {family_no} at byte {offset}")
            except KeyError:
                if not self._learn(state_no, family_no, src, dst, source, offset):
                    raise
                continue  # the same message again, with what it showed learned
            if rebuild is None:
                sock.__class__ = socket_class
                append(sock)
            else:  # this Python refuses the switch (recordmaker): the class constructor
                append(rebuild(sock))
            offset += (length + 3) & ~3
        else:
            return sockets, False
        if self._held:
            sockets += self._held
            self._held = []
        return sockets, True

    def _learn(self, state_no: int, family_no: int, src: bytes, dst: bytes, source: str, at: int) -> bool:
        """Tables of :meth:`decode` missed a value of this message: add it (an unknown state is an error).
        False when nothing was missing (the KeyError came from elsewhere)."""
        if state_no not in self._state_by_number:
            raise SourceError(source, f"unknown {self.proto.value} state {state_no} at byte {at}")
        learned = False
        if family_no in (socket.AF_INET, socket.AF_INET6):
            texts, length = (self._text4, 4) if family_no == socket.AF_INET else (self._text6, 16)
            for raw in (src, dst):
                if raw not in texts:
                    texts[raw] = socket.inet_ntop(family_no, raw[:length])
                    learned = True
        return learned

    def _other_message(self, data, offset: int, source: str) -> int:
        """A message that is not a whole socket message: the offset of the next one, or -1 when it ends the
        dump; raises for an error reply and for a malformed or truncated message."""
        size = len(data)
        if size - offset < NLMSGHDR.size:
            raise SourceError(source, f"truncated netlink header at byte {offset}")
        length, msg_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > size:
            raise SourceError(source, f"bad netlink message length {length} at byte {offset}")
        if msg_type in (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK):
            raise SourceError(source, f"inet_diag_msg too short ({length} bytes) at byte {offset}")
        if control_message(data, offset, msg_type, source):
            return -1
        return offset + ((length + 3) & ~3)


def extension_bits(details: frozenset[Detail]) -> int:
    """idiag_ext for the details asked for: bit (attribute - 1) asks for that attribute."""
    bits = 0
    if Detail.MEMORY in details:
        bits |= 1 << (INET_DIAG_SKMEMINFO - 1)
    if Detail.INFO in details:
        bits |= 1 << (INET_DIAG_INFO - 1) | 1 << (INET_DIAG_CONG - 1)
    return bits


# struct tcp_info (include/uapi/linux/tcp.h), field by field: a kernel sends the prefix it knows, so each
# field is read only when the attribute is long enough for it
_TCP_INFO_HEAD = struct.Struct("=8B24I")
_TCP_INFO_TAIL = (  # after the head: (field, format), in order
    ("pacing_rate", "Q"),
    ("max_pacing_rate", "Q"),
    ("bytes_acked", "Q"),
    ("bytes_received", "Q"),
    ("segs_out", "I"),
    ("segs_in", "I"),
    ("notsent_bytes", "I"),
    ("min_rtt_us", "I"),
    ("data_segs_in", "I"),
    ("data_segs_out", "I"),
    ("delivery_rate", "Q"),
    ("busy_us", "Q"),
    ("rwnd_limited_us", "Q"),
    ("sndbuf_limited_us", "Q"),
    ("delivered", "I"),
    ("delivered_ce", "I"),
    ("bytes_sent", "Q"),
    ("bytes_retrans", "Q"),
    ("dsack_dups", "I"),
    ("reord_seen", "I"),
    ("rcv_ooopack", "I"),
    ("snd_wnd", "I"),
    ("rcv_wnd", "I"),
)
_INFINITE_SSTHRESH = 0x7FFFFFFF
_UNLIMITED_RATE = (1 << 64) - 1  # ~0UL: no pacing limit
_MEMINFO = struct.Struct("=9I")


_TCP_INFO_FULL = struct.Struct(_TCP_INFO_HEAD.format + "".join(fmt for _, fmt in _TCP_INFO_TAIL))
_TCP_INFO_TAIL_NAMES = tuple(name for name, _ in _TCP_INFO_TAIL)


_make_tcp_info = None


def parse_tcp_info(data, congestion: str | None = None) -> TcpInfo | None:
    """A struct tcp_info attribute's payload; None when shorter than the oldest layout portscope reads."""
    global _make_tcp_info
    if len(data) < _TCP_INFO_HEAD.size:
        return None
    if _make_tcp_info is None:  # the first -i of this process: the records' module and their fast constructor
        from portscope.model.details import TcpInfo

        _make_tcp_info = positional_maker(TcpInfo)
    if len(data) >= _TCP_INFO_FULL.size:  # this kernel's or a newer one: one unpack
        values = _TCP_INFO_FULL.unpack_from(data, 0)
        head, tail = values[:32], list(values[32:])
    else:  # an older kernel: the fields it has
        head = _TCP_INFO_HEAD.unpack_from(data, 0)
        tail = []
        offset = _TCP_INFO_HEAD.size
        for _name, fmt in _TCP_INFO_TAIL:
            size = 8 if fmt == "Q" else 4
            tail.append(struct.unpack_from("=" + fmt, data, offset)[0] if offset + size <= len(data) else None)
            offset += size
    if tail[0] == _UNLIMITED_RATE:  # pacing_rate ~0: no limit
        tail[0] = None
    if tail[1] == _UNLIMITED_RATE:
        tail[1] = None
    wscale = head[6]
    ssthresh = head[25]
    # TcpInfo's fields in order: the head without tcpi_fackets (16) and the flags byte (7), the window
    # scales split, ssthresh "infinite" as None, then the tail and the algorithm
    return _make_tcp_info(
        *head[:6],
        wscale & 0xF,
        wscale >> 4,
        *head[8:16],
        *head[17:25],
        None if ssthresh >= _INFINITE_SSTHRESH else ssthresh,
        *head[26:32],
        *tail,
        congestion,
    )


def parse_meminfo(data) -> MemInfo | None:
    """An INET_DIAG_SKMEMINFO payload (u32 array); None when too short for the first seven values."""
    count = len(data) // 4
    if count < 7:
        return None
    from portscope.model.details import MemInfo

    values = list(struct.unpack_from(f"={min(count, 9)}I", data, 0)) + [None] * max(0, 9 - count)
    return MemInfo(*values)


class DetailsDecoder(Decoder):
    """A :class:`Decoder` that also reads the attributes asked for (-o, -m, -i), into ``details`` keyed by
    socket cookie. The sockets themselves come from the plain decoder, unchanged; the attributes are read
    in a second pass over the same buffer, so a listing that asks for none pays nothing."""

    def __init__(self, proto: Proto, family: Family | None = None, netns: int | None = None, ifname=None) -> None:
        super().__init__(proto, family, netns, ifname)
        self.details: dict[int, SocketDetails] = {}

    def decode(self, data: bytes | bytearray | memoryview, source: str) -> tuple[list[Socket], bool]:
        sockets, done = super().decode(data, source)  # checks every message's framing first
        offset = 0
        size = len(data)
        while offset + HEADER_AND_MSG <= size:
            fields = _HEADER_AND_MSG.unpack_from(data, offset)
            length, msg_type = fields[0], fields[1]
            if msg_type in (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK):
                retrans, cookie = fields[8], fields[14]
                self.details[cookie] = _attributes(data, offset + HEADER_AND_MSG, offset + length, retrans)
            elif msg_type == NLMSG_DONE:
                break
            offset += (length + 3) & ~3
        return sockets, done


def _attributes(data, offset: int, end: int, retrans: int) -> SocketDetails:
    from portscope.model.details import SocketDetails

    info = cong = mem = None
    while offset + RTATTR.size <= end:
        attr_len, attr_type = RTATTR.unpack_from(data, offset)
        if attr_len < RTATTR.size or offset + attr_len > end:
            break  # a malformed attribute: what came before it stands
        payload = data[offset + RTATTR.size : offset + attr_len]
        if attr_type == INET_DIAG_INFO:
            info = payload
        elif attr_type == INET_DIAG_CONG:
            cong = bytes(payload).split(b"\0", 1)[0].decode("ascii", "replace")
        elif attr_type == INET_DIAG_SKMEMINFO:
            mem = parse_meminfo(payload)
        offset += (attr_len + 3) & ~3
    return SocketDetails(
        retransmits=retrans, memory=mem, tcp_info=parse_tcp_info(info, cong) if info is not None else None
    )


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


@dataclass_lite(frozen=True)
class DumpRequest:
    proto: Proto
    family: Family | None  # None: TCP of both families in one walk (TCPDIAG_GETSOCK), per family if refused
    states_mask: int
    bytecode: bytes | None = None
    seq: int = 1
    extensions: int = 0  # idiag_ext: the attributes asked for beyond the defaults (extension_bits)

    @property
    def families(self) -> tuple[Family, ...]:
        return (self.family,) if self.family is not None else (Family.IPV4, Family.IPV6)

    @property
    def source(self) -> str:
        return f"netlink sock_diag {self.proto.value}/{'+'.join(f.value for f in self.families)}"

    def encode(self) -> bytes:
        return build_request(self.proto, self.family, self.states_mask, self.bytecode, self.seq, self.extensions)

    def per_family(self) -> list[DumpRequest]:
        """The same tables asked for one family at a time (SOCK_DIAG_BY_FAMILY)."""
        return [
            DumpRequest(self.proto, family, self.states_mask, self.bytecode, self.seq, self.extensions)
            for family in self.families
        ]


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
    :class:`NetlinkUnavailable` and the next one is tried on a fresh socket (the caller falls back); a refused
    request for both families at once is first asked again family by family.
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
        try:
            return self._next(request, decoder)
        except NetlinkUnavailable:
            if request.family is not None:
                raise
        # TCPDIAG_GETSOCK refused (a kernel or a sandbox without it): one walk per family instead
        decoder.restart()
        return [s for each in request.per_family() for s in self._here(each, decoder)]

    def _next(self, request: DumpRequest, decoder: Decoder) -> list[Socket]:
        if self._child is not None:
            try:
                return receive(self._child.channel.recv_into, decoder, request.source)
            except (NetlinkUnavailable, SourceError):
                self._child.stop()
                self._child = None
                decoder.restart()
        return self._here(request, decoder)

    def _here(self, request: DumpRequest, decoder: Decoder) -> list[Socket]:
        """One dump on this process's own socket."""
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
