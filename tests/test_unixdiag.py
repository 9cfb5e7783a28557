"""The UNIX socket sources: unix_diag decoded alike by pyroute2 (the oracle) and portscope, live; the
/proc/net/unix parser on odd text; bound names as bytes."""

from __future__ import annotations

import os
import socket
import struct
import tempfile

import pytest
from pyroute2.netlink.diag import unix_diag_msg

from netns_util import new_netns
from portscope.errors import SourceError
from portscope.model.records import State, UnixType
from portscope.sources import netlink, unixdiag

NETNS = 4026531999


def raw_unix_dump() -> bytes:
    """The bytes of one unix_diag dump of the current namespace, as received."""
    sock = netlink.open_socket()
    try:
        sock.send(unixdiag.UnixDumpRequest(None).encode())
        data = b""
        while True:
            chunk = sock.recv(1 << 16)
            data += chunk
            if netlink.ends_dump(chunk):
                return data
    finally:
        sock.close()


def pyroute2_messages(data: bytes) -> list[unix_diag_msg]:
    messages = []
    offset = 0
    while offset + netlink.NLMSGHDR.size <= len(data):
        length, msg_type = netlink.NLMSGHDR.unpack_from(data, offset)[:2]
        if msg_type == netlink.SOCK_DIAG_BY_FAMILY:
            message = unix_diag_msg(data[offset : offset + length])
            message.decode()
            messages.append(message)
        offset += (length + 3) & ~3
    return messages


@pytest.mark.live
def test_live_dump_decodes_like_pyroute2():
    with new_netns("psunixo") as ns, tempfile.TemporaryDirectory(prefix="psunixo-") as directory:
        server = ns.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.path.join(directory, "s"))
        server.listen(3)
        client = ns.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(os.path.join(directory, "s"))
        ns.sockets.append(server.accept()[0])
        client.send(b"12345")
        datagram = ns.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        datagram.bind(b"\0abstract")
        with ns.inside():
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            data = raw_unix_dump()
        ns.sockets.extend(pair)
        messages = pyroute2_messages(data)
        sockets, done = unixdiag.UnixDecoder(NETNS).decode(data, "test")
        assert done and len(sockets) == len(messages) == 6
        states = {1: State.ESTABLISHED, 7: State.UNCONN, 10: State.LISTEN}
        types = {1: UnixType.STREAM, 2: UnixType.DGRAM, 5: UnixType.SEQPACKET}
        for message, sock in zip(messages, sockets, strict=True):
            assert sock.inode == message["udiag_ino"]
            assert sock.cookie == message["udiag_cookie"]
            assert sock.state is states[message["udiag_state"]]
            assert sock.type is types[message["udiag_type"]]
            assert sock.peer_inode == (message.get_attr("UNIX_DIAG_PEER") or None)
            rqlen = message.get_attr("UNIX_DIAG_RQLEN")
            assert (sock.recv_q, sock.send_q) == (rqlen["udiag_rqueue"], rqlen["udiag_wqueue"])
            vfs = message.get_attr("UNIX_DIAG_VFS")
            if vfs is None:
                assert sock.file is None
            else:
                assert sock.file[1] == vfs["udiag_vfs_ino"]
                assert sock.file == (os.stat(os.path.join(directory, "s")).st_dev, vfs["udiag_vfs_ino"])
            name = message.get_attr("UNIX_DIAG_NAME")
            if sock.path is not None and not sock.abstract:
                assert sock.path == name
            assert sock.netns == NETNS
        assert {s.path for s in sockets} == {None, os.path.join(directory, "s"), "@abstract"}


def _message(inode: int, attrs: bytes, *, kind: int = 1, state: int = 7) -> bytes:
    body = struct.pack("=BBBxIQ", socket.AF_UNIX, kind, state, inode, 99) + attrs
    return netlink.NLMSGHDR.pack(netlink.NLMSGHDR.size + len(body), netlink.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def _attr(kind: int, payload: bytes) -> bytes:
    data = netlink.RTATTR.pack(netlink.RTATTR.size + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


DONE = netlink.NLMSGHDR.pack(20, netlink.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", 0)


def test_decoder_names_and_end_of_dump():
    data = (
        _message(5, _attr(0, b"/run/x.sock\0") + _attr(2, struct.pack("=I", 6)))
        + _message(6, _attr(0, b"\0ab\0c\xff"), kind=5, state=1)
        + DONE
    )
    sockets, done = unixdiag.UnixDecoder(None).decode(data, "test")
    assert done
    assert (sockets[0].path, sockets[0].abstract, sockets[0].peer_inode) == ("/run/x.sock", False, 6)
    assert (sockets[1].path, sockets[1].abstract, sockets[1].type) == ("@ab\0c\udcff", True, UnixType.SEQPACKET)
    assert sockets[1].state is State.ESTABLISHED and sockets[1].recv_q is None


def test_decoder_refuses_malformed_messages():
    with pytest.raises(SourceError, match="malformed unix_diag attribute"):
        unixdiag.UnixDecoder(None).decode(_message(5, netlink.RTATTR.pack(200, 0)), "test")
    with pytest.raises(SourceError, match="unknown unix socket type"):
        unixdiag.UnixDecoder(None).decode(_message(5, b"", kind=9), "test")
    with pytest.raises(SourceError, match="too short"):
        short = netlink.NLMSGHDR.pack(20, netlink.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(4)
        unixdiag.UnixDecoder(None).decode(short, "test")


def test_missing_unix_diag_is_unavailable():
    failed = netlink.NLMSGHDR.pack(20, netlink.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", -2)  # -ENOENT
    with pytest.raises(netlink.NetlinkUnavailable):
        unixdiag.UnixDecoder(None).decode(failed, "test")


PROC_TEXT = (
    "Num       RefCount Protocol Flags    Type St Inode Path\n"
    "0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/docker.sock\n"
    "0000000000000000: 00000003 00000000 00000000 0001 03 12346 /run/docker.sock\n"
    "0000000000000000: 00000003 00000000 00000000 0001 03 12347\n"
    "0000000000000000: 00000002 00000000 00000000 0002 01    12 @abs@x\n"
    "0000000000000000: 00000002 00000000 00010000 0005 01 12348 /tmp/evil\n"
    "0000000000000000: 00000002 00000000 00000000 0001 02 1 bad\n"
    "0000000000000000: 00000003 00000000 00000000 0001 02     0 /run/docker.sock\n"
)


def test_proc_net_unix_parsing():
    sockets = unixdiag.parse_proc_net_unix(PROC_TEXT, source="test", netns=7)
    assert [(s.inode, s.type.value, s.state.value, s.path) for s in sockets] == [
        (12345, "stream", "listen", "/run/docker.sock"),
        (12346, "stream", "established", "/run/docker.sock"),
        (12347, "stream", "established", None),
        (12, "dgram", "unconn", "@abs@x"),
        (12348, "seqpacket", "listen", "/tmp/evil\n0000000000000000: 00000002 00000000 00000000 0001 02 1 bad"),
    ]  # a newline in a path continues it; a connection waiting to be accepted (inode 0) has no file
    assert sockets[3].abstract and not sockets[0].abstract
    assert all(s.peer_inode is None and s.recv_q is None and s.uid is None and s.netns == 7 for s in sockets)
    listening = unixdiag.parse_proc_net_unix(PROC_TEXT, source="test", states=frozenset({State.LISTEN}))
    assert [s.inode for s in listening] == [12345, 12348]


def test_proc_net_unix_refuses_other_text():
    with pytest.raises(SourceError, match="missing header"):
        unixdiag.parse_proc_net_unix("sl  local_address\n", source="test")
    with pytest.raises(SourceError, match="line 2"):
        unixdiag.parse_proc_net_unix("Num RefCount\ngarbage\n", source="test")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", (None, False)),
        (b"/run/a.sock\0", ("/run/a.sock", False)),
        (b"rel/sock", ("rel/sock", False)),
        (b"\0", ("@", True)),
        (b"\0\0\0", ("@\0\0", True)),
        (b"/tmp/\xff\n", ("/tmp/\udcff\n", False)),
    ],
)
def test_name_text(raw, expected):
    assert unixdiag.name_text(raw) == expected


def test_kernel_dev_encoding():
    assert unixdiag.kernel_dev((8 << 20) | 1) == os.makedev(8, 1)
    assert unixdiag.kernel_dev((259 << 20) | 70000) == os.makedev(259, 70000)


def test_json_template_equals_json_dumps_of_the_objects():
    """ls --json writes UNIX socket objects from a template: the same text as json.dumps of unix_socket_object."""
    import io

    from portscope.model.records import Holder, JoinReport, Process, Snapshot, UnixSocket
    from portscope.render import jsonout

    process = Process(7, 1, "d\x1bmon\udcff", 0, "r\u202eoot", ("/bin/d", "--x=\n", "\udcfe"), 1.0)
    other = Process(8, 1, "client", 1000, None, (), None)
    names = [None, "/run/a.sock", "@ab\0c", "/tmp/\udcff\n\x1b[0m", "@\u2028\U0001f600"]
    connected = [
        UnixSocket(
            UnixType.STREAM, State.ESTABLISHED, name, bool(name and name[0] == "@"), 10 + i, 20 + i, i, None, 0, 5
        )
        for i, name in enumerate(names)
    ]
    unconnected = UnixSocket(UnixType.DGRAM, State.UNCONN, None, False, 99, None, None, None, None, None)
    sockets = (*connected, unconnected)
    holders = {10 + i: (Holder(process, (3, 4)),) for i in range(len(names))}
    holders.update({20 + i: (Holder(other, (5,)), Holder(process, (6,))) for i in range(0, len(names), 2)})
    snap = Snapshot((), holders, (), JoinReport(joined=True), None, None, unix_sockets=sockets)
    out = io.StringIO()
    jsonout.write_sockets(out, snap, None)
    lines = out.getvalue().split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    expected = [
        jsonout.dumps(jsonout.unix_socket_object(u, snap.holders_of(u), snap.peer_holders_of(u))) for u in sockets
    ]
    assert [line.rstrip(",") for line in lines[1:-2]] == expected
    out.getvalue().encode("utf-8")  # valid UTF-8 throughout
