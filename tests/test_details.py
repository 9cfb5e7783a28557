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


def _snapshot_with_details(asked):
    from portscope.model.details import SocketDetails
    from portscope.model.records import Backend, Family, JoinReport, Proto, ProtoSource, Snapshot, Socket, State

    sock = Socket(
        Proto.TCP, Family.IPV4, State.ESTABLISHED, "127.0.0.1", 5000, "127.0.0.1", 6000,
        0, 0, 1000, 77, 0, None, None, "keepalive", 7140000, None, 0xC0FFEE,
    )  # fmt: skip
    info = netlink.parse_tcp_info(tcp_info_payload(), "cubic")
    memory = netlink.parse_meminfo(struct.pack("=9I", 0, 131072, 0, 16384, 0, 0, 0, 0, 0))
    return Snapshot(
        sockets=(sock,),
        holders={},
        sources=(ProtoSource(Proto.TCP, Family.IPV4, Backend.NETLINK),),
        join=JoinReport(joined=False),
        netns=None,
        bound_visible=None,
        details={sock.cookie: SocketDetails(3, memory, info)},
        details_asked=frozenset(asked),
    )


def _render(snap, *, tty: bool, as_json: bool = False) -> str:
    import io
    from dataclasses import replace

    from portscope.commands.names import Names
    from portscope.render.environment import Environment
    from portscope.render.ls import render_listing

    out = io.StringIO()
    env = replace(Environment.detect(out, io.StringIO()), is_tty=tty, width=100 if tty else None)
    render_listing(snap, env, Names(services=None, caller_is_root=True, lookup_user=str), as_json=as_json)
    return out.getvalue()


def test_text_columns_in_a_pipe_and_detail_lines_on_a_terminal():
    snap = _snapshot_with_details({Detail.EXTENDED, Detail.TIMERS, Detail.MEMORY, Detail.INFO})
    piped = _render(snap, tty=False).splitlines()
    assert piped[0].split()[-7:] == ["Cookie", "V6only", "Device", "Timer", "Memory", "TCP", "info"]
    assert len(piped) == 2 and "c0ffee" in piped[1] and "keepalive,119min,3" in piped[1]
    assert piped[1].endswith("lastsnd:10 lastrcv:20") and "r0,rb131072,t0,tb16384" in piped[1]
    terminal = _render(snap, tty=True).splitlines()
    assert len(terminal) == 3 and "Memory" not in terminal[0] and "keepalive,119min,3" in terminal[1]
    assert terminal[2].startswith("\tr0,rb131072,t0,tb16384,f0,w0,o0,bl0,d0  cubic rtt:0.12/0.06")


def test_json_keys_only_when_asked():
    plain = json.loads(_render(_snapshot_with_details(set()), tty=False, as_json=True))
    assert "tcp_info" not in plain[0] and "memory" not in plain[0]
    both = json.loads(_render(_snapshot_with_details({Detail.INFO, Detail.MEMORY}), tty=False, as_json=True))
    assert both[0]["tcp_info"]["cwnd"] == 10 and both[0]["memory"]["rcvbuf"] == 131072
    only_memory = json.loads(_render(_snapshot_with_details({Detail.MEMORY}), tty=False, as_json=True))
    assert "tcp_info" not in only_memory[0] and only_memory[0]["memory"]["sndbuf"] == 16384
