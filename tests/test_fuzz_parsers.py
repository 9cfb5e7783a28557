"""Property-based fuzzing of every parser of outside data, seeded with the recorded fixtures.

The property: whatever the input (recorded dumps and /proc files truncated, bit-flipped, spliced;
random bytes; arbitrary text), a parser returns records or raises the project's own error
(:class:`SourceError` for kernel data, :class:`UsageError` for typed input), never IndexError,
ValueError, OverflowError or struct.error; and the valid recordings still decode to the same records.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portscope.errors import SourceError, UsageError
from portscope.model.endpoint import parse_endpoint, parse_network, parse_target
from portscope.model.query import parse_port_range, parse_states, parse_user, split_values
from portscope.model.records import Family, Proto
from portscope.render.text import safe_text
from portscope.sources import addresses, lineage, netlink, procnet
from portscope.sources.containers import container_of_cgroup
from portscope.sources.procinfo import parse_cmdline, parse_stat, parse_status_uid
from portscope.sources.services import parse_services

MIX = Path(__file__).parent / "fixtures" / "mix"
TABLES = [(Proto.TCP, Family.IPV4), (Proto.TCP, Family.IPV6), (Proto.UDP, Family.IPV4), (Proto.UDP, Family.IPV6)]
PROC_NAMES = {(Proto.TCP, Family.IPV4): "tcp", (Proto.TCP, Family.IPV6): "tcp6"}
PROC_NAMES |= {(Proto.UDP, Family.IPV4): "udp", (Proto.UDP, Family.IPV6): "udp6"}
DUMPS = {table: (MIX / f"netlink_{table[0].value}_{table[1].value}.bin").read_bytes() for table in TABLES}
PROC_TEXTS = {table: (MIX / f"proc_net_{PROC_NAMES[table]}").read_text() for table in TABLES}
SERVICES = parse_services("ssh 22/tcp\nhttp 80/tcp www\nhttp 80/udp\ndomain 53/udp\n3com-tsmux 106/tcp\n")

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tables = st.sampled_from(TABLES)


def _decode(table, data: bytes):
    decoder = netlink.Decoder(table[0], table[1], None, ifname=lambda index: {1: "lo"}.get(index))
    return decoder.decode(data, "fuzz")


@st.composite
def mutated_bytes(draw, original: bytes) -> bytes:
    """A recording cut, with bits flipped, bytes overwritten, or a slice spliced elsewhere."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        choice = draw(st.integers(0, 3))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if choice == 0:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif choice == 1:
            data[at] = draw(st.integers(0, 255))
        elif choice == 2:
            del data[draw(st.integers(0, len(data))) :]
        else:
            size = draw(st.integers(1, 32))
            data[at:at] = data[: min(size, len(data))]
    return bytes(data)


@st.composite
def mutated_text(draw, original: str) -> str:
    """Recorded text with characters replaced, deleted, inserted, or the file cut."""
    text = list(original)
    alphabet = st.sampled_from([*list("0123456789ABCDEF:-_ x\n\t²٨\x00\uffff"), "0x", "-1", "FFFFFFFFFFFF"])
    for _ in range(draw(st.integers(1, 8))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            text[at] = draw(alphabet)
        elif choice == 1:
            del text[at]
        elif choice == 2:
            text.insert(at, draw(alphabet))
        else:
            del text[at:]
    return "".join(text)


# ---------------------------------------------------------------------------------------------------
# Netlink sock_diag dumps


@pytest.mark.parametrize("table", TABLES)
def test_recorded_dumps_still_decode(table):
    sockets, done = _decode(table, DUMPS[table])
    assert done and sockets
    # decoding in any split that keeps messages whole gives the same records
    again, _ = _decode(table, memoryview(bytearray(DUMPS[table])))
    assert again == sockets


@FAST
@given(data=st.data(), table=tables)
def test_mutated_dumps_decode_or_raise_source_error(data, table):
    blob = data.draw(mutated_bytes(DUMPS[table]))
    with contextlib.suppress(SourceError, netlink.NetlinkUnavailable):
        _decode(table, blob)
    netlink.ends_dump(blob)  # never raises: a malformed buffer is left to the decoder


@FAST
@given(blob=st.binary(max_size=600), table=tables)
def test_random_bytes_decode_or_raise_source_error(blob, table):
    with contextlib.suppress(SourceError, netlink.NetlinkUnavailable):
        _decode(table, blob)
    netlink.ends_dump(blob)


@FAST
@given(attributes=st.binary(max_size=64), extra=st.integers(0, 8))
def test_v6only_attribute_search_never_overruns(attributes, extra):
    # the attribute area may end anywhere, also right after an attribute header at the buffer's end
    assert netlink._find_v6only(attributes, 0, len(attributes)) in (None, True, False)
    assert netlink._find_v6only(attributes, max(0, len(attributes) - extra), len(attributes)) in (None, True, False)


def test_v6only_attribute_header_at_the_buffer_end():
    header = netlink.RTATTR.pack(8, netlink.INET_DIAG_SKV6ONLY)
    assert netlink._find_v6only(header, 0, len(header)) is None  # claims 4 payload bytes that are not there
    assert netlink._find_v6only(header + b"\x01\0\0\0", 0, 8) is True


# ---------------------------------------------------------------------------------------------------
# /proc/net tables


@pytest.mark.parametrize("table", TABLES)
def test_recorded_proc_tables_still_parse(table):
    sockets = procnet.parse_proc_net(PROC_TEXTS[table], *table, source="fixture")
    assert sockets and len(sockets) == PROC_TEXTS[table].count("\n") - 1


@FAST
@given(data=st.data(), table=tables)
def test_mutated_proc_tables_parse_or_raise_source_error(data, table):
    text = data.draw(mutated_text(PROC_TEXTS[table]))
    with contextlib.suppress(SourceError):
        procnet.parse_proc_net(text, *table, source="fuzz")


@FAST
@given(text=st.text(max_size=300), table=tables)
def test_arbitrary_proc_text(text, table):
    header = PROC_TEXTS[table].splitlines()[0]
    for candidate in (text, f"{header}\n{text}"):
        with contextlib.suppress(SourceError):
            procnet.parse_proc_net(candidate, *table, source="fuzz")


def test_negative_hex_address_is_a_source_error():
    header = PROC_TEXTS[TABLES[0]].splitlines()[0]
    line = "   0: -100007F:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1"
    with pytest.raises(SourceError, match="line 2"):
        procnet.parse_proc_net(f"{header}\n{line}\n", Proto.TCP, Family.IPV4, source="fuzz")


@FAST
@given(text=st.text(max_size=200))
def test_sockstat(text):
    assert procnet.parse_sockstat(text) >= 0


# ---------------------------------------------------------------------------------------------------
# Addresses, services, process files, cgroups

FIB_TRIE_SAMPLE = (
    "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n"
    "     |-- 127.255.255.255\n        /32 link BROADCAST\n"
)
IF_INET6_SAMPLE = (
    "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 c0     eth0\n"
)


@FAST
@given(data=st.data())
def test_address_files(data):
    for sample, parse in ((FIB_TRIE_SAMPLE, addresses.parse_fib_trie), (IF_INET6_SAMPLE, addresses.parse_if_inet6)):
        parse(data.draw(mutated_text(sample)))
        parse(data.draw(st.text(max_size=200)))


def test_one_bad_if_inet6_line_hides_nothing_else():
    bad = "zz800000000000000000000000000001 02 40 20 c0     eth0\n"
    assert len(addresses.parse_if_inet6(bad + IF_INET6_SAMPLE)) == 2


SERVICE_LINES = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            "{} {}/{}".format,
            st.text(alphabet="abcxyz-", min_size=1, max_size=6),
            st.one_of(st.integers(-5, 99999).map(str), st.sampled_from(["²", "٨٠", "8_0", "", "0", "65536"])),
            st.sampled_from(["tcp", "udp", "", "sctp"]),
        ),
    ),
    max_size=8,
)


@FAST
@given(lines=SERVICE_LINES)
def test_services_file_never_crashes_and_keeps_real_ports(lines):
    services = parse_services("\n".join(lines))
    assert all(1 <= port <= 65535 for port in services.by_name.values())
    assert all(1 <= port <= 65535 for port, _ in services.by_port)


def test_services_lines_that_do_not_parse_are_skipped():
    services = parse_services("sup ²/tcp\nbig 99999/tcp\nnull 0/tcp\narabic ٨٠/tcp\nok 8080/tcp\n")
    assert services.by_name == {("ok", "tcp"): 8080}


@FAST
@given(data=st.binary(max_size=300))
def test_process_files(data):
    for parse in (parse_stat, parse_status_uid):
        with contextlib.suppress(SourceError):
            parse(data)
    parse_cmdline(data)


@FAST
@given(data=st.data())
def test_stat_and_status_mutated(data):
    stat = b"42 (we ird) name)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0"
    status = b"Name:\tx\nUid:\t1000\t1001\t1000\t1000\n"
    for sample, parse in ((stat, parse_stat), (status, parse_status_uid)):
        blob = data.draw(mutated_bytes(sample))
        with contextlib.suppress(SourceError):
            parse(blob)


def test_bad_uid_line_is_a_source_error():
    with pytest.raises(SourceError):
        parse_status_uid(b"Uid:\t1000\t\xd9\xa8\n")
    with pytest.raises(SourceError):
        parse_stat(b"1 (x) S -1")


CGROUP_SAMPLE = (
    "12:pids:/system.slice/docker-" + "a" * 64 + ".scope\n"
    "1:name=systemd:/kubepods/burstable/pod12345678-1234-1234-1234-123456789abc/" + "b" * 64 + "\n"
    "0::/machine.slice/machine-test\\x2dvm.scope/lxc.payload.c1\n"
)


@FAST
@given(data=st.data())
def test_cgroup_and_unit_parsing(data):
    for text in (data.draw(mutated_text(CGROUP_SAMPLE)), data.draw(st.text(max_size=200))):
        path = lineage.pick_cgroup_path(text)
        if path is not None:
            container_of_cgroup(path)
            lineage.unit_of(path)
        container_of_cgroup(text)
        lineage.unit_of(text)


# ---------------------------------------------------------------------------------------------------
# Typed input: only UsageError


def _usage_only(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except UsageError as exc:
        # messages quote the value as given; the line is escaped once where it is printed (cli.runtime.say)
        assert "\n" not in safe_text(str(exc))
        return None


TYPED = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["[fe80::1%eth0]:80", "[::1]:²", ":٨٠", "8_0", "-5", "80-", "-", "[", "]:", "%", "1/2/3", "*:*", "[::]:0"]
)


@FAST
@given(text=TYPED)
def test_endpoints(text):
    for options in ({}, {"ranges": True}, {"hostnames": True, "allow_zero": True, "zone_ids": True}):
        endpoint = _usage_only(parse_endpoint, text, SERVICES, **options)
        if endpoint is not None:
            assert 0 <= endpoint.ports.low <= endpoint.ports.high <= 65535
    _usage_only(parse_target, text, Proto.TCP, SERVICES)


@FAST
@given(text=TYPED)
def test_query_input(text):
    _usage_only(parse_port_range, text, services=SERVICES)
    _usage_only(parse_network, text)
    _usage_only(parse_states, [text])
    _usage_only(split_values, [text], "--x")
    uid = _usage_only(parse_user, text)
    assert uid is None or 0 <= uid <= 4294967294


@pytest.mark.parametrize("text", ["٨٠", "²", "8_0", " 8 0", "+80", "0x50", "80.0", "१२"])
def test_ports_are_ascii_digits_only(text):
    with pytest.raises(UsageError):
        parse_port_range(text, services=SERVICES)
    with pytest.raises(UsageError):
        parse_target(f":{text}", Proto.TCP, SERVICES)
