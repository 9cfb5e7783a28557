"""Socket details without the system: tcp_info and skmeminfo payloads of several kernel versions, and
their JSON text equal to json.dumps of the same objects."""

from __future__ import annotations

import json
import struct

from portscope.model.records import Detail
from portscope.render import details
from portscope.sources import netlink


def tcp_info_payload(length: int | None = None) -> bytes:
    head = struct.pack("=8B", 1, 0, 2, 0, 1, 7, 0x97, 0) + struct.pack(
        "=24I",
        *[
            204000,
            40000,
            1448,
            536,
            3,
            1,
            0,
            1,
            0,
            10,
            0,
            20,
            5,
            1500,
            64000,
            120,
            60,
            0x7FFFFFFF,
            10,
            1460,
            3,
            0,
            65000,
            4,
        ],
    )
    unlimited = (1 << 64) - 1
    tail = struct.pack(
        "=QQQQIIIIIIQQQQIIQQIIIII",
        *[
            unlimited,
            unlimited,
            5000,
            7000,
            11,
            12,
            0,
            90,
            5,
            6,
            125000,
            1,
            2,
            3,
            9,
            0,
            6000,
            100,
            1,
            0,
            0,
            65536,
            64000,
        ],
    )
    payload = head + tail + bytes(12)  # a newer kernel sends more than portscope reads
    return payload if length is None else payload[:length]


def test_tcp_info_fields_and_units():
    info = netlink.parse_tcp_info(tcp_info_payload(), "cubic")
    assert info is not None
    assert (info.state, info.retransmits, info.options, info.snd_wscale, info.rcv_wscale) == (1, 2, 7, 7, 9)
    assert (info.rto_us, info.ato_us, info.mss, info.rcv_mss) == (204000, 40000, 1448, 536)
    assert (info.rtt_us, info.rttvar_us, info.cwnd, info.advmss, info.total_retrans) == (120, 60, 10, 1460, 4)
    assert info.ssthresh is None  # "infinite"
    assert info.pacing_rate is None and info.max_pacing_rate is None  # ~0: unlimited
    assert (info.bytes_acked, info.bytes_received, info.min_rtt_us, info.delivery_rate) == (5000, 7000, 90, 125000)
    assert (info.bytes_sent, info.bytes_retrans, info.snd_wnd, info.rcv_wnd) == (6000, 100, 65536, 64000)
    assert info.congestion == "cubic"


def test_older_kernels_give_what_they_have():
    info = netlink.parse_tcp_info(tcp_info_payload(104 + 32), None)  # up to bytes_received (Linux 4.1)
    assert info is not None and info.bytes_received == 7000 and info.segs_out is None and info.snd_wnd is None
    assert netlink.parse_tcp_info(tcp_info_payload(100)) is None
    memory = netlink.parse_meminfo(struct.pack("=7I", 1, 2, 3, 4, 5, 6, 7))
    assert memory is not None and memory.optmem == 7 and memory.backlog is None and memory.drops is None
    assert netlink.parse_meminfo(struct.pack("=6I", 1, 2, 3, 4, 5, 6)) is None


def test_detail_json_is_json_dumps_of_the_objects():
    from portscope.model.details import SocketDetails

    info = netlink.parse_tcp_info(tcp_info_payload(), "bbr")
    memory = netlink.parse_meminfo(struct.pack("=9I", *range(9)))
    asked = frozenset({Detail.INFO, Detail.MEMORY})
    for found in (SocketDetails(0, memory, info), SocketDetails(0, memory, None), None):
        objects = details.detail_objects(asked, found)
        expected = json.dumps(objects)[1:-1]
        assert details.detail_json(asked, found) == ", " + expected
    assert details.detail_json(frozenset({Detail.TIMERS}), None) == ""


def test_texts_as_ss_writes_them():
    assert [details.ms_text(ms) for ms in (200, 4500, 61000, 7140000, 0)] == [
        "200ms",
        "4.500ms",
        "1min1sec",
        "119min",
        "0ms",
    ]
    memory = netlink.parse_meminfo(struct.pack("=9I", 0, 131072, 0, 16384, 0, 0, 0, 0, 0))
    assert details.memory_text(memory) == "r0,rb131072,t0,tb16384,f0,w0,o0,bl0,d0"
    info = netlink.parse_tcp_info(tcp_info_payload(), "cubic")
    text = details.tcp_info_text(info)
    assert text.startswith("cubic rtt:0.12/0.06 rto:204 mss:1448 cwnd:10 retrans:2/4 bytes_acked:5000")
    assert "delivery_rate 1Mbps" in text and "ssthresh" not in text
