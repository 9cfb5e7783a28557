"""UNIX sockets: a NETLINK_SOCK_DIAG dump of AF_UNIX (``unix_diag``), with ``/proc/net/unix`` as the fallback.

The request, the receive loop and the end-of-dump handling are :mod:`portscope.sources.netlink`'s; only
the request body (``struct unix_diag_req``) and the message decoding (``struct unix_diag_msg`` and its
attributes) are particular to UNIX sockets. Both sources give :class:`UnixSocket` records; what
``/proc/net/unix`` cannot know (the peer, the queues, the owner, the socket file) is ``None``, and it
cannot tell a NUL byte from ``@`` in an abstract name, nor a newline in a path from the end of a line.
"""

from __future__ import annotations

import os
import re
import socket
import struct

from portscope.errors import SourceError
from portscope.model.recordmaker import positional_maker
from portscope.model.records import UNIX_STATE_BY_NUMBER, UNIX_TYPE_BY_NUMBER, State, UnixSocket
from portscope.sources import netlink

# struct unix_diag_req (sdiag_family, sdiag_protocol, pad, udiag_states, udiag_ino, udiag_show, udiag_cookie[2])
UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
# struct unix_diag_msg (udiag_family, udiag_type, udiag_state, pad, udiag_ino, udiag_cookie[2]), after nlmsghdr
_HEADER_AND_MSG = struct.Struct("=IHHIIBBBxIQ")
HEADER_AND_MSG = _HEADER_AND_MSG.size
_U32 = struct.Struct("=I")
_U32_PAIR = struct.Struct("=II")

UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_VFS = 0x02
UDIAG_SHOW_PEER = 0x04
UDIAG_SHOW_RQLEN = 0x10
UDIAG_SHOW_UID = 0x40  # Linux 5.3+; older kernels ignore the bit and send no UNIX_DIAG_UID
SHOW = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID

UNIX_DIAG_NAME = 0
UNIX_DIAG_VFS = 1
UNIX_DIAG_PEER = 2
UNIX_DIAG_RQLEN = 4
UNIX_DIAG_UID = 7

_make_unix_socket = positional_maker(UnixSocket)
_STATE_TABLE: list[State | None] = [UNIX_STATE_BY_NUMBER.get(number) for number in range(256)]
_TYPE_TABLE = [UNIX_TYPE_BY_NUMBER.get(number) for number in range(256)]


def state_mask(states: frozenset[State] | None) -> int:
    """udiag_states: one bit per kernel state number wanted."""
    mask = 0
    for number, state in UNIX_STATE_BY_NUMBER.items():
        if states is None or state in states:
            mask |= 1 << number
    return mask


def kernel_dev(raw: int) -> int:
    """A kernel ``dev_t`` (``s_dev``: major << 20 | minor, as unix_diag_vfs sends it) as ``st_dev`` encodes it."""
    return os.makedev(raw >> 20, raw & 0xFFFFF)


def name_text(raw: bytes) -> tuple[str | None, bool]:
    """``(path, abstract)`` of a bound name (``sun_path`` bytes as the kernel reports them).

    A path ends at its first NUL (the kernel counts the terminator); an abstract name is every byte after
    the leading NUL, NULs included, shown after an ``@``. Bytes that are not UTF-8 become
    ``surrogateescape`` characters, escaped by the renderers.
    """
    if not raw:
        return None, False
    if raw[0] == 0:
        return "@" + raw[1:].decode("utf-8", "surrogateescape"), True
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"), False


class UnixDumpRequest:
    """The AF_UNIX dump: every socket in the wanted states, with name, file, peer, queues and owner."""

    source = "netlink sock_diag unix"

    def __init__(self, states: frozenset[State] | None, seq: int = 1) -> None:
        self.states_mask = state_mask(states)
        self.seq = seq

    def encode(self) -> bytes:
        body = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, self.states_mask, 0, SHOW, 0xFFFFFFFF, 0xFFFFFFFF)
        header = netlink.NLMSGHDR.pack(
            netlink.NLMSGHDR.size + len(body),
            netlink.SOCK_DIAG_BY_FAMILY,
            netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP,
            self.seq,
            0,
        )
        return header + body


class UnixDecoder:
    """Turns unix_diag dump payloads into :class:`UnixSocket` records (the :class:`netlink.Decoder` interface)."""

    def __init__(self, netns: int | None) -> None:
        self.netns = netns

    def decode(self, data: bytes | bytearray | memoryview, source: str) -> tuple[list[UnixSocket], bool]:
        sockets: list[UnixSocket] = []
        size = len(data)
        offset = 0
        while offset < size:
            if size - offset < netlink.NLMSGHDR.size:
                raise SourceError(source, f"truncated netlink header at byte {offset}")
            length, msg_type, _flags, _seq, _pid = netlink.NLMSGHDR.unpack_from(data, offset)
            if length < netlink.NLMSGHDR.size or offset + length > size:
                raise SourceError(source, f"bad netlink message length {length} at byte {offset}")
            if msg_type != netlink.SOCK_DIAG_BY_FAMILY:
                if netlink.control_message(data, offset, msg_type, source):
                    return sockets, True
                offset += (length + 3) & ~3
                continue
            if length < HEADER_AND_MSG:
                raise SourceError(source, f"unix_diag_msg too short ({length} bytes) at byte {offset}")
            sockets.append(self._socket(data, offset, length, source))
            offset += (length + 3) & ~3
        return sockets, False

    def _socket(self, data, offset: int, length: int, source: str) -> UnixSocket:
        fields = _HEADER_AND_MSG.unpack_from(data, offset)
        type_no, state_no, inode, cookie = fields[6], fields[7], fields[8], fields[9]
        kind = _TYPE_TABLE[type_no]
        state = _STATE_TABLE[state_no]
        if kind is None or state is None:
            raise SourceError(source, f"unknown unix socket type {type_no} or state {state_no} at byte {offset}")
        path: str | None = None
        abstract = False
        peer = recv_q = send_q = uid = None
        file = None
        at = offset + HEADER_AND_MSG
        end = offset + length
        while at + netlink.RTATTR.size <= end:
            attr_len, attr_type = netlink.RTATTR.unpack_from(data, at)
            if attr_len < netlink.RTATTR.size or at + attr_len > end:
                raise SourceError(source, f"malformed unix_diag attribute at byte {at}")
            payload = at + netlink.RTATTR.size
            payload_len = attr_len - netlink.RTATTR.size
            if attr_type == UNIX_DIAG_NAME:
                path, abstract = name_text(bytes(data[payload : payload + payload_len]))
            elif attr_type == UNIX_DIAG_PEER and payload_len >= 4:
                peer = _U32.unpack_from(data, payload)[0] or None
            elif attr_type == UNIX_DIAG_RQLEN and payload_len >= 8:
                recv_q, send_q = _U32_PAIR.unpack_from(data, payload)
            elif attr_type == UNIX_DIAG_UID and payload_len >= 4:
                uid = _U32.unpack_from(data, payload)[0]
            elif attr_type == UNIX_DIAG_VFS and payload_len >= 8:
                vfs_ino, vfs_dev = _U32_PAIR.unpack_from(data, payload)
                file = (kernel_dev(vfs_dev), vfs_ino)
            at += (attr_len + 3) & ~3
        return _make_unix_socket(
            kind, state, path, abstract, inode, peer, recv_q, send_q, uid, self.netns, file, cookie
        )


def dump_unix(states: frozenset[State] | None, netns: int | None) -> list[UnixSocket]:
    """Every UNIX socket of the current network namespace in ``states`` (None: all), from unix_diag.

    Raises :class:`netlink.NetlinkUnavailable` when the kernel or the sandbox refuses (no ``unix_diag``).
    """
    sock = netlink.open_socket()
    try:
        return netlink.dump(sock, UnixDumpRequest(states), UnixDecoder(netns))  # type: ignore[arg-type]
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------------
# /proc/net/unix

_ACCEPTCON = 0x10000  # __SO_ACCEPTCON: a listening socket
# "Num: RefCount Protocol Flags Type St Inode [Path]", every number but the inode in hex
_LINE = re.compile(
    r"[0-9a-f]+: [0-9A-F]{8} [0-9A-F]{8} (?P<flags>[0-9A-F]{8}) (?P<type>[0-9A-F]{4}) (?P<st>[0-9A-F]{2})"
    r"(?P<inode> {1,5}[0-9]+)(?: (?P<path>.*))?"  # the inode right-aligned in 5 columns ("%5lu")
)
# socket->state: SS_UNCONNECTED 1, SS_CONNECTING 2, SS_CONNECTED 3, SS_DISCONNECTING 4
_PROC_STATES = {1: State.UNCONN, 2: State.SYN_SENT, 3: State.ESTABLISHED, 4: State.UNCONN}


def parse_proc_net_unix(
    text: str, *, source: str, netns: int | None = None, states: frozenset[State] | None = None
) -> list[UnixSocket]:
    """The records of ``/proc/net/unix`` text (read as bytes decoded with ``surrogateescape``).

    A line that is not a record continues the previous record's path: the kernel prints a path's
    newline as it is. (A path can still hold a newline and a perfect copy of a record line: only
    unix_diag, which sends names as bytes, is unambiguous.)
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's own final newline
    if not lines or not lines[0].startswith("Num"):
        raise SourceError(source, "missing header line (not /proc/net/unix?)")
    records: list[list] = []  # [kind, state, path, inode]
    for number, line in enumerate(lines[1:], start=2):
        match = _LINE.fullmatch(line)
        if match is not None and len(match["inode"]) < 6:
            match = None  # not as the kernel pads it: a path's continuation
        if match is None:
            if records and records[-1][2] is not None:
                records[-1][2] += "\n" + line
                continue
            if not line:
                continue
            raise SourceError(source, f"line {number}: cannot parse {line[:60]!r}")
        kind = UNIX_TYPE_BY_NUMBER.get(int(match["type"], 16))
        if kind is None:
            raise SourceError(source, f"line {number}: unknown unix socket type {match['type']}")
        if int(match["flags"], 16) & _ACCEPTCON:
            state = State.LISTEN
        else:
            state = _PROC_STATES.get(int(match["st"], 16), State.UNCONN)
        records.append([kind, state, match["path"], int(match["inode"])])
    sockets = []
    for kind, state, path, inode in records:
        if inode == 0 or (states is not None and state not in states):
            continue  # inode 0: a connection not yet accepted, without a file (unix_diag does not list it)
        abstract = path is not None and path.startswith("@")  # its NUL bytes were printed as "@" too
        sockets.append(UnixSocket(kind, state, path, abstract, inode, None, None, None, None, netns, None, None))
    return sockets


def read_proc_net_unix(
    net_dir: str = "/proc/thread-self/net", *, netns: int | None = None, states: frozenset[State] | None = None
) -> list[UnixSocket]:
    path = os.path.join(net_dir, "unix")
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return []  # no AF_UNIX in this kernel: no UNIX sockets
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from None
    return parse_proc_net_unix(text, source=path, netns=netns, states=states)
