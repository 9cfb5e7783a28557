"""Pure parsers on recorded data (tests/fixtures/mix, made by tests/fixtures/capture.py) and broken input."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bytecode_model
from portscope.errors import SourceError, UsageError
from portscope.model.endpoint import ScopedNetwork, parse_endpoint, parse_network
from portscope.model.query import PortRange, parse_port_range, parse_states, parse_user
from portscope.model.records import Family, Proto, State
from portscope.shell.values import local_addresses
from portscope.sources import addresses, netlink, procnet
from portscope.sources.netlink import Decoder, NetlinkUnavailable
from portscope.sources.procinfo import parse_cmdline, parse_stat, parse_status_uid
from portscope.sources.services import load_services, parse_services
from socket_mix import proc_comparable

MIX = Path(__file__).parent / "fixtures" / "mix"
TABLES = [(Proto.TCP, Family.IPV4), (Proto.TCP, Family.IPV6), (Proto.UDP, Family.IPV4), (Proto.UDP, Family.IPV6)]
PROC_NAMES = {(Proto.TCP, Family.IPV4): "tcp", (Proto.TCP, Family.IPV6): "tcp6", (Proto.UDP, Family.IPV4): "udp"}
PROC_NAMES[(Proto.UDP, Family.IPV6)] = "udp6"


def recorded_proc(proto, family):
    name = PROC_NAMES[(proto, family)]
    return procnet.parse_proc_net((MIX / f"proc_net_{name}").read_text(), proto, family, source=name)


def recorded_netlink(proto, family):
    data = (MIX / f"netlink_{proto.value}_{family.value}.bin").read_bytes()
    decoder = Decoder(proto, family, None, ifname=lambda index: {1: "lo"}.get(index))
    sockets, done = decoder.decode(data, "recording")
    assert done
    return sockets


def test_proc_tcp_recording():
    sockets = {(s.local_address, s.local_port, s.state): s for s in recorded_proc(Proto.TCP, Family.IPV4)}
    listener = sockets[("127.0.0.1", 7001, State.LISTEN)]
    assert listener.recv_q == 2 and listener.send_q is None  # /proc has no backlog for listeners
    assert listener.remote_address is None and listener.remote_port is None
    assert listener.interface is None and listener.v6only is None  # /proc cannot know these
    assert sockets[("127.0.0.1", 7008, State.LISTEN)].uid == 4242
    assert sockets[("0.0.0.0", 7009, State.LISTEN)].local_address == "0.0.0.0"
    tw = [s for s in sockets.values() if s.state is State.TIME_WAIT]
    assert tw and all(s.uid is None and s.inode is None and s.timer == "timewait" for s in tw)
    assert any(s.state is State.CLOSE_WAIT for s in sockets.values())
    assert not any(s.state is State.BOUND for s in sockets.values())


def test_proc_tcp6_recording_decodes_mapped_and_loopback():
    sockets = recorded_proc(Proto.TCP, Family.IPV6)
    addresses = {s.local_address for s in sockets}
    assert {"::1", "::", "::ffff:127.0.0.1"} <= addresses


def test_proc_udp_recording():
    u4 = recorded_proc(Proto.UDP, Family.IPV4)
    states = Counter(s.state for s in u4)
    assert states == Counter({State.UNCONN: 1, State.ESTABLISHED: 1})
    unconn = next(s for s in u4 if s.state is State.UNCONN)
    assert unconn.recv_q > 0  # the datagram sent to it is queued


@pytest.mark.parametrize(("proto", "family"), TABLES)
def test_netlink_and_proc_recordings_agree(proto, family):
    nl = [s for s in recorded_netlink(proto, family) if s.state is not State.BOUND]
    assert Counter(map(proc_comparable, nl)) == Counter(map(proc_comparable, recorded_proc(proto, family)))


def test_netlink_recording_has_what_proc_lacks():
    tcp4 = recorded_netlink(Proto.TCP, Family.IPV4)
    tcp6 = recorded_netlink(Proto.TCP, Family.IPV6)
    assert {(s.local_address, s.local_port) for s in tcp4 + tcp6 if s.state is State.BOUND} == {
        ("127.0.0.1", 7003),
        ("::1", 7004),
    }
    pinned = next(s for s in tcp4 if s.local_port == 7009)
    assert (pinned.ifindex, pinned.interface) == (1, "lo")
    listeners6 = {s.local_port: s.v6only for s in tcp6 if s.state is State.LISTEN}
    assert listeners6 == {7005: True, 7006: False, 7007: True}
    assert next(s for s in tcp4 if s.local_port == 7001 and s.state is State.LISTEN).send_q == 8
    assert all(s.cookie for s in tcp4)


def test_truncated_netlink_dump_names_the_source():
    data = (MIX / "netlink_tcp_ipv4.bin").read_bytes()
    decoder = Decoder(Proto.TCP, Family.IPV4, None)
    for cut in (10, 40, len(data) // 2 + 3):
        with pytest.raises(SourceError, match="recorded dump"):
            decoder.decode(data[:cut], "recorded dump")


def test_bad_message_length_is_an_error():
    data = bytearray((MIX / "netlink_udp_ipv4.bin").read_bytes())
    struct.pack_into("=I", data, 0, 4)  # shorter than a header
    with pytest.raises(SourceError, match="bad netlink message length"):
        Decoder(Proto.UDP, Family.IPV4, None).decode(bytes(data), "udp dump")


def _error_message(code: int) -> bytes:
    return netlink.NLMSGHDR.pack(36, netlink.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -code) + bytes(16)


def test_kernel_without_diag_module_is_detected():
    with pytest.raises(NetlinkUnavailable, match="no sock_diag support"):
        Decoder(Proto.UDP, Family.IPV4, None).decode(_error_message(errno.ENOENT), "udp")
    with pytest.raises(NetlinkUnavailable, match="refused"):
        Decoder(Proto.TCP, Family.IPV4, None).decode(_error_message(errno.EPERM), "tcp")
    with pytest.raises(SourceError):
        Decoder(Proto.TCP, Family.IPV4, None).decode(_error_message(errno.ENOBUFS), "tcp")


def _done_message(status: int) -> bytes:
    return netlink.NLMSGHDR.pack(20, netlink.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", status)


def test_dump_that_could_not_start_ends_in_a_failing_done():
    # recent kernels answer a dump for a protocol without a diag module with DONE carrying -ENOENT
    with pytest.raises(NetlinkUnavailable, match="no sock_diag support"):
        Decoder(Proto.UDP, Family.IPV4, None).decode(_done_message(-errno.ENOENT), "udp")
    assert Decoder(Proto.UDP, Family.IPV4, None).decode(_done_message(0), "udp") == ([], True)


def test_end_of_dump_is_seen_where_the_decoder_sees_it():
    data = (MIX / "netlink_tcp_ipv4.bin").read_bytes()
    first_message = netlink.NLMSGHDR.unpack_from(data, 0)[0]
    assert netlink.ends_dump(data)
    assert not netlink.ends_dump(data[: (first_message + 3) & ~3])
    assert netlink.ends_dump(_done_message(-errno.ENOENT))
    assert netlink.ends_dump(_error_message(errno.EPERM))
    assert not netlink.ends_dump(_error_message(0))  # an ACK
    boundaries = [0]
    while boundaries[-1] < len(data):
        boundaries.append(boundaries[-1] + ((netlink.NLMSGHDR.unpack_from(data, boundaries[-1])[0] + 3) & ~3))
    assert len(boundaries) > 3
    for cut in boundaries[1:]:  # the decoder stops exactly where ends_dump says the dump ends
        chunk = data[:cut]
        _, done = Decoder(Proto.TCP, Family.IPV4, None).decode(chunk, "tcp")
        assert done == netlink.ends_dump(chunk) == (cut == len(data))


def test_unknown_state_in_dump():
    data = bytearray((MIX / "netlink_tcp_ipv4.bin").read_bytes())
    data[netlink.NLMSGHDR.size + 1] = 99
    with pytest.raises(SourceError, match="unknown tcp state 99"):
        Decoder(Proto.TCP, Family.IPV4, None).decode(bytes(data), "tcp")


def test_unknown_family_and_short_socket_message_in_dump():
    data = bytearray((MIX / "netlink_tcp_ipv4.bin").read_bytes())
    data[netlink.NLMSGHDR.size] = 7  # idiag_family
    with pytest.raises(SourceError, match="unknown address family 7 at byte 0"):
        Decoder(Proto.TCP, Family.IPV4, None).decode(bytes(data), "tcp")
    data = bytearray((MIX / "netlink_tcp_ipv4.bin").read_bytes())
    struct.pack_into("=I", data, 0, 40)  # a socket message cut short, but still a whole header
    with pytest.raises(SourceError, match=r"inet_diag_msg too short \(40 bytes\) at byte 0"):
        Decoder(Proto.TCP, Family.IPV4, None).decode(bytes(data), "tcp")


def test_decoder_lets_errors_of_its_lookups_through():
    # the decoder learns addresses it has not seen by catching KeyError; one raised by the interface
    # lookup it is given is not such a miss and must reach the caller, not loop or vanish
    data = bytearray((MIX / "netlink_tcp_ipv4.bin").read_bytes())
    struct.pack_into("=I", data, netlink.NLMSGHDR.size + 40, 5)  # idiag_if of the first socket

    def no_interfaces(index: int) -> str:
        raise KeyError(index)

    with pytest.raises(KeyError):
        Decoder(Proto.TCP, Family.IPV4, None, ifname=no_interfaces).decode(bytes(data), "tcp")
    sockets, _ = Decoder(Proto.TCP, Family.IPV4, None, ifname=lambda index: f"if{index}").decode(bytes(data), "tcp")
    assert sockets[0].ifindex == 5 and sockets[0].interface == "if5"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "missing header"),
        ("garbage\n", "missing header"),
        ((MIX / "proc_net_tcp").read_text().splitlines()[0] + "\n   0: 0100007F:1B59\n", "line 2"),
        ((MIX / "proc_net_tcp").read_text().splitlines()[0] + "\n 0: 0100:1 0:0 0A 0:0 0:0 0 0 0 1\n", "wrong length"),
        ((MIX / "proc_net_tcp").read_text().replace(" 0A ", " 7F ", 1), "unknown tcp state"),
    ],
)
def test_malformed_proc_input(text, problem):
    with pytest.raises(SourceError, match=problem) as info:
        procnet.parse_proc_net(text, Proto.TCP, Family.IPV4, source="/proc/net/tcp")
    assert str(info.value).startswith("/proc/net/tcp:")


def test_lines_the_kernel_repeats_are_kept_once():
    """Under churn one read of /proc/net/tcp repeats lines (page boundaries): one socket each, whatever its sl."""
    header, *lines = (MIX / "proc_net_tcp").read_text().splitlines()
    once = procnet.parse_proc_net("\n".join([header, *lines]), Proto.TCP, Family.IPV4, source="tcp")
    renumbered = [f"  99:{line.split(':', 1)[1]}" for line in lines]  # the repeat has another slot number
    twice = procnet.parse_proc_net("\n".join([header, *lines, *renumbered]), Proto.TCP, Family.IPV4, source="tcp")
    assert twice == once
    assert any(s.inode is None for s in once)  # TIME-WAIT & co: kept once by state and endpoints
    # distinct sockets that share endpoints and state (SO_REUSEPORT listeners) stay distinct by inode
    listener = next(line for line in lines if " 0A " in line)
    fields = listener.split()
    other = " ".join([*fields[:9], "999999", *fields[10:]])
    both = procnet.parse_proc_net("\n".join([header, listener, other]), Proto.TCP, Family.IPV4, source="tcp")
    assert [s.inode for s in both] == [int(listener.split()[9]), 999999]


def test_truncated_proc_file_keeps_complete_lines_or_errors():
    text = (MIX / "proc_net_tcp").read_text()
    for cut in range(len(text) // 3, len(text), 97):
        try:
            sockets = procnet.parse_proc_net(text[:cut], Proto.TCP, Family.IPV4, source="tcp")
        except SourceError as exc:
            assert "tcp: line" in str(exc)
        else:
            assert len(sockets) <= text.count("\n")


def test_missing_proc_file(tmp_path):
    assert procnet.read_proc_net(Proto.TCP, Family.IPV6, net_dir=str(tmp_path)) == []  # IPv6 disabled
    with pytest.raises(SourceError, match="not found"):
        procnet.read_proc_net(Proto.TCP, Family.IPV4, net_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# Filter bytecode: a model of the kernel's interpreter and audit (net/ipv4/inet_diag.c)


def run_bytecode(code: bytes, sport: int, dport: int) -> bool:
    return bytecode_model.run(code, bytecode_model.Entry(socket.AF_INET, 0, 0, sport, dport))


audit_bytecode = bytecode_model.audit


port_ranges = st.lists(
    st.tuples(st.integers(1, 65535), st.integers(0, 200)).map(lambda t: PortRange(t[0], min(65535, t[0] + t[1]))),
    min_size=1,
    max_size=4,
)


@given(
    local=st.none() | port_ranges,
    remote=st.none() | port_ranges,
    either=st.none() | port_ranges,
    sport=st.integers(1, 65535),
    dport=st.integers(0, 65535),
)
def test_bytecode_semantics_and_audit(local, remote, either, sport, dport):
    code = netlink.port_filter_bytecode(local, remote, either)
    if not (local or remote or either):
        assert code is None
        return
    audit_bytecode(code)

    def within(port, ranges):
        return any(r.low <= port <= r.high for r in ranges)

    expected = (
        (not local or within(sport, local))
        and (not remote or within(dport, remote))
        and (not either or within(sport, either) or within(dport, either))
    )
    assert run_bytecode(code, sport, dport) == expected


# ---------------------------------------------------------------------------------------------------
# Services, query input, process files

SERVICES_TEXT = """\
# comment line
ssh		22/tcp				# SSH Remote Login Protocol
http		80/tcp		www		# WorldWideWeb HTTP
domain		53/tcp
domain		53/udp
syslog		514/udp
bogus		x/tcp
"""


def test_services_both_ways():
    services = parse_services(SERVICES_TEXT, "test-services")
    assert services.name_of(22, Proto.TCP) == "ssh"
    assert services.name_of(22, Proto.UDP) is None
    assert services.port_of("ssh") == 22
    assert services.port_of("www") == 80
    assert services.port_of("HTTP/tcp") == 80
    assert services.port_of("syslog") == 514
    assert services.port_of("domain/udp") == 53
    with pytest.raises(UsageError, match="unknown service 'syslog/tcp'"):
        services.port_of("syslog/tcp")
    with pytest.raises(UsageError, match="unknown protocol"):
        services.port_of("ssh/sctp")


def test_missing_services_file_is_graceful(tmp_path):
    services = load_services(str(tmp_path / "nope"))
    assert not services.available
    assert services.name_of(22, Proto.TCP) is None
    with pytest.raises(UsageError, match="not readable"):
        services.port_of("ssh")


def test_state_parsing():
    assert parse_states(["listen", "ESTAB"]) == {State.LISTEN, State.ESTABLISHED}
    assert State.SYN_SENT not in parse_states(["synchronized"])
    assert State.TIME_WAIT in parse_states(["connected"])
    assert parse_states(["bound-inactive"]) == {State.BOUND}
    with pytest.raises(UsageError, match="unknown state 'nope'"):
        parse_states(["nope"])


def test_port_and_network_parsing():
    services = parse_services(SERVICES_TEXT)
    assert parse_port_range("8000-8100") == PortRange(8000, 8100)
    assert parse_port_range("http", services=services) == PortRange(80, 80)
    for bad, message in (("0", "out of range"), ("70000", "out of range"), ("9-3", "backwards"), ("x1", "not a port")):
        with pytest.raises(UsageError, match=message):
            parse_port_range(bad)
    assert str(parse_network("[::1]")) == "::1/128"
    assert str(parse_network("::1")) == "::1/128"
    assert str(parse_network("[2001:db8::]/32")) == "2001:db8::/32"
    assert str(parse_network("10.0.0.0/8")) == "10.0.0.0/8"
    with pytest.raises(UsageError):
        parse_network("10.0.0.0/33")


@pytest.mark.parametrize(
    ("text", "network", "zone"),
    [
        ("[fe80::1%eth0]", "fe80::1/128", "eth0"),
        ("fe80::1%eth0", "fe80::1/128", "eth0"),
        ("fe80::%eth0/64", "fe80::/64", "eth0"),
        ("[fe80::%3]/64", "fe80::/64", "3"),
        ("[ff02::1%v0]", "ff02::1/128", "v0"),
    ],
)
def test_scoped_networks_take_the_zone_grammar_of_endpoints(text, network, zone):
    assert parse_network(text) == ScopedNetwork(ipaddress.IPv6Network(network), zone)
    # the same zone form is what who and can-bind accept
    assert parse_endpoint("[fe80::1%eth0]:80", None, zone_ids=True).zone == "eth0"


@pytest.mark.parametrize(
    "text", ["[fe80::1%]", "[2001:db8::1%eth0]", "10.0.0.1%eth0", "[10.0.0.1]", "[::1]x", "fe80::1%a/b", ""]
)
def test_bad_networks(text):
    with pytest.raises(UsageError):
        parse_network(text)


def test_process_files():
    assert parse_stat(b"42 (we ird) name)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0") == (
        "we ird) name)",
        7,
        12345,
    )
    assert parse_cmdline(b"python3\0-c\0print('\xff')\0") == ("python3", "-c", "print('\udcff')")
    assert parse_cmdline(b"") == ()
    assert parse_status_uid(b"Name:\tx\nUid:\t1000\t1001\t1000\t1000\n") == 1001


# ---------------------------------------------------------------------------------------------------
# Local addresses (/proc/net/fib_trie, /proc/net/if_inet6)

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     |-- 10.9.9.0
        /24 link UNICAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 192.0.2.7
        /32 host LOCAL
        /32 host type 13
     |-- 999.0.0.1
        /32 host LOCAL
"""


def test_fib_trie_local_table():
    routes = {(str(r.network), r.kind) for r in addresses.parse_fib_trie(FIB_TRIE)}
    assert routes == {
        ("127.0.0.0/8", "local"),
        ("127.0.0.1/32", "local"),
        ("127.255.255.255/32", "broadcast"),
        ("192.0.2.7/32", "local"),
        ("192.0.2.7/32", "13"),
    }  # main's unicast routes and the impossible 999.0.0.1 left out
    local = addresses.LocalAddresses(addresses.parse_fib_trie(FIB_TRIE), ())
    assert [str(a) for a in local.ipv4_addresses] == ["127.0.0.1", "192.0.2.7"]


def test_fib_trie_of_the_running_kernel():
    with open("/proc/net/fib_trie", encoding="ascii") as handle:
        local = addresses.LocalAddresses(addresses.parse_fib_trie(handle.read()), ())
    found = {str(a) for a in local.ipv4_addresses}
    assert "127.0.0.1" in found and "127.0.0.0" not in found and "127.255.255.255" not in found


def test_if_inet6_skips_only_the_bad_lines():
    text = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe800000000000000000000000000001 02 40 20 c0     eth0\n"
        "20010db8000000000000000000000009 02 40 00 08     eth0\n"
        "2001XXb8000000000000000000000009 02 40 00 08     eth0\n"  # not hex
        "20010db8000000000000000000000009 02 ff 00 08     eth0\n"  # prefix length 255
        "20010db8000000000000000000000009 02 40 00\n"  # short
    )
    parsed = addresses.parse_if_inet6(text)
    assert [(str(a.address), a.interface, a.scope, a.tentative, a.dadfailed) for a in parsed] == [
        ("::1", "lo", "host", False, False),
        ("fe80::1", "eth0", "link", True, False),
        ("2001:db8::9", "eth0", "global", False, True),
    ]
    assert parsed[1].ifindex == 2 and parsed[1].prefixlen == 64


def test_completion_offers_bindable_addresses_only(tmp_path):
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(
        "fe800000000000000000000000000001 02 40 20 c0     eth0\n20010db8000000000000000000000009 02 40 00 08     eth0\n"
    )
    found = local_addresses(str(tmp_path))
    assert [a.bind_text() for a in found] == ["127.0.0.1:", "192.0.2.7:", "[fe80::1%eth0]:"]  # DAD failed: left out
    assert found[2].tentative


def test_unreadable_fib_trie_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="fib_trie"):
        addresses.read_local_addresses(str(tmp_path))
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    assert addresses.read_local_addresses(str(tmp_path)).ipv6 == ()  # IPv6 off: no if_inet6


# ---------------------------------------------------------------------------------------------------
# One ADDR:PORT parser, read two ways


def test_endpoint_forms_shared_by_who_and_can_bind():
    services = parse_services("ssh 22/tcp\n3com-tsmux 106/tcp\nhttp 80/tcp\nhttp 80/udp\n")
    for text in ("80", ":80", "*:80", "0.0.0.0:80", "[::]:80", "[::1]:http", "127.0.0.1:00080"):
        who = parse_endpoint(text, services, ranges=True)
        bind = parse_endpoint(text, services, hostnames=True, allow_zero=True, zone_ids=True)
        assert who == bind and who.ports == PortRange(80, 80)
    assert parse_endpoint("3com-tsmux", services).service == "3com-tsmux"  # a name may start with a digit
    assert parse_endpoint("http/udp", services).proto is Proto.UDP
    assert parse_endpoint("8000-8100/tcp", services, ranges=True).ports == PortRange(8000, 8100)
    with pytest.raises(UsageError, match="not a range"):
        parse_endpoint(":8000-8100", services)
    with pytest.raises(UsageError, match="is not used here"):
        parse_endpoint("[fe80::1%eth0]:80", services)  # refused where zone ids mean nothing, never ignored
    zoned = parse_endpoint("[ff02::1%eth0]:80", services, zone_ids=True)  # link-local multicast takes one too
    assert zoned.zone == "eth0"
    with pytest.raises(UsageError, match="only to link-local"):
        parse_endpoint("[2001:db8::1%eth0]:80", services, zone_ids=True)
    with pytest.raises(UsageError, match="names are not looked up"):
        parse_endpoint("localhost:80", services)
    assert parse_endpoint("localhost:80", services, hostnames=True).hostname == "localhost"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5", "port -5 is out of range"),
        ("9" * 5000, "out of range"),
        ("٨٠", "not a port number"),
        ("8_0", "not a port"),
    ],
)
def test_port_numbers_are_ascii_and_bounded(text, message):
    with pytest.raises(UsageError, match=message):
        parse_port_range(text, services=parse_services(""))


def test_uids_stop_below_the_unchanged_marker():
    assert parse_user("4294967294") == 4294967294
    for text in ("4294967295", "-1", "²", "", "a\0b"):
        with pytest.raises(UsageError):
            parse_user(text)
