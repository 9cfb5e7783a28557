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
from socket_mix import build_mix, socket_fields

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
        if msg_type in (netlink.SOCK_DIAG_BY_FAMILY, netlink.TCPDIAG_GETSOCK):
            message = inet_diag_msg(data[offset : offset + length])
            message.decode()
            messages.append(message)
        offset += (length + 3) & ~3
    return messages


def portscope_sockets(data: bytes, proto: Proto, family: Family | None) -> list[Socket]:
    decoder = netlink.Decoder(proto, family, NETNS, ifname=lambda index: f"if{index}")
    sockets, done = decoder.decode(data, "test")
    assert done
    return sockets


FAMILY_OF = {socket.AF_INET: Family.IPV4, socket.AF_INET6: Family.IPV6}


def assert_same_decoding(data: bytes, proto: Proto, family: Family | None) -> list[Socket]:
    """``family`` None: a dump of both families (TCPDIAG_GETSOCK), whose records come IPv4 first."""
    messages = pyroute2_messages(data)
    if family is None:  # the order of two dumps: each family's messages in the kernel's order
        messages = sorted(messages, key=lambda message: message["idiag_family"] != socket.AF_INET)
    sockets = portscope_sockets(data, proto, family)
    assert len(sockets) == len(messages) > 0
    names = TCP_NAMES if proto is Proto.TCP else UDP_NAMES
    for message, sock in zip(messages, sockets, strict=True):
        number = message["idiag_state"]
        assert (sock.proto, sock.family, sock.netns) == (proto, FAMILY_OF[message["idiag_family"]], NETNS)
        assert family in (None, sock.family)
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
        if sock.family is Family.IPV6 and number in (7, 10):
            assert sock.v6only == (None if v6only is None else bool(v6only))
        else:
            assert sock.v6only is None
    return sockets


@pytest.mark.parametrize(("proto", "family"), TABLES, ids=lambda v: v.value)
def test_recorded_dumps_decode_alike(proto, family):
    data = (FIXTURES / f"netlink_{proto.value}_{family.value}.bin").read_bytes()
    assert_same_decoding(data, proto, family)


def raw_dump(proto: Proto, family: Family | None) -> bytes:
    """One table's dump as the kernel sends it, every state (bound-only TCP sockets too); ``family`` None:
    TCP of both families in one walk (TCPDIAG_GETSOCK)."""
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


@pytest.mark.live
def test_one_walk_for_both_families_decodes_alike():
    """TCPDIAG_GETSOCK: both families in one dump, each message with its own family and the request's type;
    the records are those of the two per-family dumps, in their order."""
    with new_netns("psonewalk") as ns:
        build_mix(ns)
        with ns.inside():
            both = raw_dump(Proto.TCP, None)
            apart = [raw_dump(Proto.TCP, family) for family in Family]
    types = {netlink.NLMSGHDR.unpack_from(message)[1] for message in split_messages(both)}
    assert types == {netlink.TCPDIAG_GETSOCK, netlink.NLMSG_DONE}
    decoded = assert_same_decoding(both, Proto.TCP, None)
    assert {s.family for s in decoded} == set(Family)
    separately = [
        s for data, family in zip(apart, Family, strict=True) for s in portscope_sockets(data, Proto.TCP, family)
    ]
    assert [socket_fields(s) for s in decoded] == [socket_fields(s) for s in separately]
    assert {s.state for s in decoded} >= {State.LISTEN, State.ESTABLISHED, State.TIME_WAIT, State.BOUND}


def split_messages(data: bytes) -> list[bytes]:
    messages, offset = [], 0
    while offset < len(data):
        length = netlink.NLMSGHDR.unpack_from(data, offset)[0]
        messages.append(data[offset : offset + ((length + 3) & ~3)])
        offset += (length + 3) & ~3
    return messages


def test_one_decoder_takes_dumps_of_either_family():
    """A decoder made for one table decodes by each message's family (the per-family fallback reuses it);
    IPv6 records wait for the end of the dump, then follow the IPv4 ones."""
    data = {family: (FIXTURES / f"netlink_tcp_{family.value}.bin").read_bytes() for family in Family}
    for family in Family:
        assert portscope_sockets(data[family], Proto.TCP, None) == portscope_sockets(data[family], Proto.TCP, family)
    v4 = portscope_sockets(data[Family.IPV4], Proto.TCP, Family.IPV4)
    v6 = portscope_sockets(data[Family.IPV6], Proto.TCP, Family.IPV6)
    v6_messages = b"".join(split_messages(data[Family.IPV6])[:-1])  # without its NLMSG_DONE
    decoder = netlink.Decoder(Proto.TCP, None, NETNS, ifname=lambda index: f"if{index}")
    assert decoder.decode(v6_messages, "test") == ([], False)
    assert decoder.decode(data[Family.IPV4], "test") == (v4 + v6, True)
    assert decoder.decode(v6_messages, "test") == ([], False)
    decoder.restart()  # that dump broke off: dumped again from its start
    assert decoder.decode(data[Family.IPV4], "test") == (v4, True)
    # a decoder of one family holds nothing back: each buffer's records at once (the destroy feed's
    # notifications end no dump)
    single = netlink.Decoder(Proto.TCP, Family.IPV6, NETNS, ifname=lambda index: f"if{index}")
    assert single.decode(v6_messages, "test") == (v6, False)
