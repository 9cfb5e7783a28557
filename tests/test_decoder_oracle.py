"""pyroute2's inet_diag decoder as an oracle for portscope's struct decoder: the same bytes (recorded
dumps in tests/fixtures and live dumps of a test namespace), every field both decode equal."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pyroute2.netlink.diag import inet_diag_msg

from netns_util import new_netns
from portscope.model.records import Family, Proto, Socket, State
from portscope.sources import netlink
from socket_mix import build_mix

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mix"
TABLES = [(proto, family) for proto in Proto for family in Family]

# include/net/tcp_states.h, as portscope names the states: 7 (CLOSE) is dumped for a TCP socket only
# when it is bound (BOUND_INACTIVE), 12 (NEW_SYN_RECV) is a request socket; UDP uses 1 and 7.
TCP_NAMES = {1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait-1", 5: "fin-wait-2", 6: "time-wait",
             7: "bound", 8: "close-wait", 9: "last-ack", 10: "listen", 11: "closing", 12: "syn-recv"}  # fmt: skip
UDP_NAMES = {1: "established", 7: "unconn"}
TIMER_NAMES = {0: None, 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}  # idiag_timer
PLACEHOLDER_STATES = {3, 6, 12}  # uid and inode of request and TIME-WAIT socks are not the socket's own
NETNS = 4026531999


def pyroute2_messages(data: bytes) -> list[inet_diag_msg]:
    messages = []
    offset = 0
    while offset + netlink.NLMSGHDR.size <= len(data):
        length, msg_type = netlink.NLMSGHDR.unpack_from(data, offset)[:2]
        if msg_type == netlink.SOCK_DIAG_BY_FAMILY:
            message = inet_diag_msg(data[offset : offset + length])
            message.decode()
            messages.append(message)
        offset += (length + 3) & ~3
    return messages


def portscope_sockets(data: bytes, proto: Proto, family: Family) -> list[Socket]:
    decoder = netlink.Decoder(proto, family, NETNS, ifname=lambda index: f"if{index}")
    sockets, done = decoder.decode(data, "test")
    assert done
    return sockets


def assert_same_decoding(data: bytes, proto: Proto, family: Family) -> list[Socket]:
    messages = pyroute2_messages(data)
    sockets = portscope_sockets(data, proto, family)
    assert len(sockets) == len(messages) > 0
    names = TCP_NAMES if proto is Proto.TCP else UDP_NAMES
    for message, sock in zip(messages, sockets, strict=True):
        number = message["idiag_state"]
        assert (sock.proto, sock.family, sock.netns) == (proto, family, NETNS)
        assert message["idiag_family"] == (socket.AF_INET if family is Family.IPV4 else socket.AF_INET6)
        assert sock.state is State(names[number])
        assert (sock.local_address, sock.local_port) == (message["idiag_src"], message["idiag_sport"])
        no_peer = message["idiag_dport"] == 0 and message["idiag_dst"] in ("0.0.0.0", "::")
        expected_remote = (None, None) if no_peer else (message["idiag_dst"], message["idiag_dport"])
        assert (sock.remote_address, sock.remote_port) == expected_remote
        assert (sock.recv_q, sock.send_q) == (message["idiag_rqueue"], message["idiag_wqueue"])
        placeholder = number in PLACEHOLDER_STATES or message["idiag_timer"] == 3
        assert sock.uid == (None if placeholder else message["idiag_uid"])
        assert sock.inode == (message["idiag_inode"] or None)
        assert sock.ifindex == message["idiag_if"]
        assert sock.interface == (f"if{message['idiag_if']}" if message["idiag_if"] else None)
        assert sock.cookie == message["idiag_cookie"]
        timer = TIMER_NAMES[message["idiag_timer"]]
        assert (sock.timer, sock.timer_ms) == (timer, message["idiag_expires"] if timer else None)
        # v6only: reported for IPv6 listeners and unconnected (CLOSE) sockets, from INET_DIAG_SKV6ONLY
        v6only = message.get_attr("INET_DIAG_SKV6ONLY")
        if family is Family.IPV6 and number in (7, 10):
            assert sock.v6only == (None if v6only is None else bool(v6only))
        else:
            assert sock.v6only is None
    return sockets


@pytest.mark.parametrize(("proto", "family"), TABLES, ids=lambda v: v.value)
def test_recorded_dumps_decode_alike(proto, family):
    data = (FIXTURES / f"netlink_{proto.value}_{family.value}.bin").read_bytes()
    assert_same_decoding(data, proto, family)


def raw_dump(proto: Proto, family: Family) -> bytes:
    """One table's dump as the kernel sends it, every state (bound-only TCP sockets too)."""
    request = netlink.DumpRequest(proto, family, netlink.state_mask(proto, frozenset(State)))
    sock = netlink.open_socket()
    try:
        sock.settimeout(10)
        sock.send(request.encode())
        chunks = []
        while not chunks or not netlink.ends_dump(chunks[-1]):
            chunks.append(sock.recv(netlink.RECV_BUFFER))
        return b"".join(chunks)
    finally:
        sock.close()


@pytest.mark.live
def test_live_dumps_decode_alike():
    with new_netns("psoracle") as ns:
        build_mix(ns)
        with ns.inside():
            dumps = {(proto, family): raw_dump(proto, family) for proto, family in TABLES}
    decoded = [s for (proto, family), data in dumps.items() for s in assert_same_decoding(data, proto, family)]
    # the mix covers what the comparison is about: peers, placeholders, devices, both v6only values
    assert {s.state for s in decoded} >= {State.LISTEN, State.ESTABLISHED, State.TIME_WAIT, State.BOUND}
    assert {s.v6only for s in decoded} >= {True, False}
    assert any(s.ifindex for s in decoded) and any(s.uid is None for s in decoded)
    assert any(s.recv_q for s in decoded if s.proto is Proto.UDP)
