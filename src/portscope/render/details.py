"""Socket details on request (``ls -e -o -m -i``): extra table columns and the JSON objects ``tcp_info``
and ``memory``.

Kept apart from the table's own cells: a listing that asks for no details never builds or measures
these. Texts follow ss where its users read them every day (``keepalive,119min,0``,
``r0,rb131072,t0,...``, ``rtt:0.05/0.025``), with rates in readable units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from portscope.model.details import MemInfo, SocketDetails, TcpInfo
from portscope.model.records import Detail, Snapshot, Socket
from portscope.render.table import ALL_KEYS, Column
from portscope.render.text import safe_text

EXTENDED_COLUMNS = (
    Column("UID", "uid", "right"),
    Column("Inode", "inode", "right"),
    Column("Cookie", "cookie"),
    Column("V6only", "v6only"),
    Column("Device", "device"),
)
TIMER_COLUMNS = (Column("Timer", "timer"),)
MEMORY_COLUMNS = (Column("Memory", "memory"),)
INFO_COLUMNS = (Column("TCP info", "tcp_info"),)
WRAPPED_KEYS = frozenset({"memory", "tcp_info"})  # long texts: on a line of their own on a terminal


def detail_columns(asked: frozenset[Detail]) -> tuple[Column, ...]:
    columns: tuple[Column, ...] = ()
    for detail, extra in (
        (Detail.EXTENDED, EXTENDED_COLUMNS),
        (Detail.TIMERS, TIMER_COLUMNS),
        (Detail.MEMORY, MEMORY_COLUMNS),
        (Detail.INFO, INFO_COLUMNS),
    ):
        if detail in asked:
            columns += extra
    return columns


class DetailedRowCells:
    """The base table's cells followed by the detail columns' (same interface as render.table.RowCells)."""

    def __init__(self, base, snap: Snapshot, columns: Sequence[Column]) -> None:
        self.keys = (*ALL_KEYS, *(c.key for c in columns))
        extra_keys = [c.key for c in columns]
        details_of = snap.details_of
        base_cells, base_measure = base.cells, base.measure

        def extra(sock: Socket) -> tuple[str, ...]:
            found = details_of(sock)
            return tuple(detail_cell(key, sock, found) for key in extra_keys)

        def cells(sock: Socket) -> tuple[str, ...]:
            return base_cells(sock) + extra(sock)

        def measure(
            sockets: Sequence[Socket], owners: bool = True, endpoints: tuple[int, int] | None = None
        ) -> list[int]:
            widths = [0] * len(extra_keys)
            for sock in sockets:
                for index, text in enumerate(extra(sock)):
                    if len(text) > widths[index]:
                        widths[index] = len(text)
            return base_measure(sockets, owners, endpoints) + widths

        self.cells, self.measure = cells, measure


def write_detail_lines(
    out, cells: DetailedRowCells, sockets: Sequence[Socket], columns: Sequence[Column], extra: Sequence = ()
) -> None:
    """The table without the long detail texts, each socket's Memory and TCP info on an indented line
    under its row (as ss -m -i prints them): a terminal's width then cuts nothing. ``extra``: rows made
    already (UNIX sockets), after the others, without detail lines."""
    import io

    from portscope.render.table import write_plain

    table = io.StringIO()
    write_plain(table, cells, sockets, columns, extra)  # type: ignore[arg-type]
    lines = table.getvalue().splitlines()
    wrapped = [cells.keys.index(key) for key in ("memory", "tcp_info") if key in cells.keys]
    parts = [lines[0]]
    for line, sock in zip(lines[1 : 1 + len(sockets)], sockets, strict=True):
        parts.append(line)
        row = cells.cells(sock)
        texts = [row[index] for index in wrapped if row[index] != "-"]
        if texts:
            parts.append("\t" + "  ".join(texts))
    parts += lines[1 + len(sockets) :]
    out.write("\n".join(parts) + "\n")


def detail_cell(key: str, sock: Socket, found: SocketDetails | None) -> str:
    if key == "uid":
        return "-" if sock.uid is None else str(sock.uid)
    if key == "inode":
        return "-" if sock.inode is None else str(sock.inode)
    if key == "cookie":
        return "-" if sock.cookie is None else f"{sock.cookie:x}"  # hex, as ss's "sk:"
    if key == "v6only":
        return {None: "-", True: "yes", False: "no"}[sock.v6only]
    if key == "device":
        return safe_text(sock.interface) if sock.interface else "-"
    if key == "timer":
        return timer_text(sock, found)
    if key == "memory":
        return memory_text(found.memory) if found is not None and found.memory is not None else "-"
    if key == "tcp_info":
        return tcp_info_text(found.tcp_info) if found is not None and found.tcp_info is not None else "-"
    raise ValueError(key)


def ms_text(milliseconds: int) -> str:
    """A time left as ss writes it: ``119min``, ``1min30sec``, ``4.500ms``... ``200ms``."""
    seconds, msecs = divmod(max(0, milliseconds), 1000)
    minutes, seconds = divmod(seconds, 60)
    text = ""
    if minutes:
        msecs = 0
        text = f"{minutes}min"
        if minutes > 9:
            seconds = 0
    if seconds:
        if seconds > 9:
            msecs = 0
        text += f"{seconds}{'.' if msecs else 'sec'}"
    if msecs:
        text += f"{msecs:03d}ms"
    return text or "0ms"


def timer_text(sock: Socket, found: SocketDetails | None) -> str:
    if sock.timer is None:
        return "-"
    retrans = found.retransmits if found is not None and found.retransmits is not None else "-"
    left = ms_text(sock.timer_ms) if sock.timer_ms is not None else "-"
    return f"{sock.timer},{left},{retrans}"


def memory_text(memory: MemInfo) -> str:
    text = (
        f"r{memory.rmem_alloc},rb{memory.rcvbuf},t{memory.wmem_alloc},tb{memory.sndbuf},"
        f"f{memory.fwd_alloc},w{memory.wmem_queued},o{memory.optmem}"
    )
    if memory.backlog is not None:
        text += f",bl{memory.backlog}"
    if memory.drops is not None:
        text += f",d{memory.drops}"
    return text


def rate_text(bytes_per_second: int) -> str:
    bits = bytes_per_second * 8
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.3g}{unit}"
    return f"{bits}bps"


def _ms(microseconds: int) -> str:
    return f"{microseconds / 1000:g}"


def tcp_info_text(info: TcpInfo) -> str:
    """The values ss -i shows first, with the same labels; zeros left out as ss leaves them (a listener)."""
    parts = [info.congestion] if info.congestion else []
    if info.rtt_us:
        parts.append(f"rtt:{_ms(info.rtt_us)}/{_ms(info.rttvar_us)}")
    if info.rto_us:
        parts.append(f"rto:{_ms(info.rto_us)}")
    if info.mss:
        parts.append(f"mss:{info.mss}")
    parts.append(f"cwnd:{info.cwnd}")
    if info.ssthresh:
        parts.append(f"ssthresh:{info.ssthresh}")
    parts.append(f"retrans:{info.retransmits}/{info.total_retrans}")
    for label, value in (("bytes_acked", info.bytes_acked), ("bytes_received", info.bytes_received)):
        if value:
            parts.append(f"{label}:{value}")
    for label, value in (("pacing_rate", info.pacing_rate), ("delivery_rate", info.delivery_rate)):
        if value:
            parts.append(f"{label} {rate_text(value)}")
    if info.state != 10:  # LISTEN: no data moves
        parts.append(f"lastsnd:{info.last_send_ms} lastrcv:{info.last_receive_ms}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------
# JSON

TCP_INFO_KEYS = (
    "congestion",
    "state",
    "ca_state",
    "retransmits",
    "probes",
    "backoff",
    "options",
    "snd_wscale",
    "rcv_wscale",
    "rto_us",
    "ato_us",
    "mss",
    "rcv_mss",
    "unacked",
    "sacked",
    "lost",
    "retrans",
    "total_retrans",
    "last_send_ms",
    "last_receive_ms",
    "last_ack_receive_ms",
    "pmtu",
    "rcv_ssthresh",
    "rtt_us",
    "rttvar_us",
    "min_rtt_us",
    "ssthresh",
    "cwnd",
    "advmss",
    "reordering",
    "rcv_rtt_us",
    "rcv_space",
    "pacing_rate",
    "max_pacing_rate",
    "delivery_rate",
    "bytes_acked",
    "bytes_received",
    "bytes_sent",
    "bytes_retrans",
    "segs_out",
    "segs_in",
    "data_segs_out",
    "data_segs_in",
    "delivered",
    "delivered_ce",
    "notsent_bytes",
    "busy_us",
    "rwnd_limited_us",
    "sndbuf_limited_us",
    "dsack_dups",
    "reord_seen",
    "rcv_ooopack",
    "snd_wnd",
    "rcv_wnd",
)
MEMORY_KEYS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued", "optmem", "backlog", "drops")


def tcp_info_object(info: TcpInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {key: getattr(info, key) for key in TCP_INFO_KEYS}


def memory_object(memory: MemInfo | None) -> dict[str, Any] | None:
    if memory is None:
        return None
    return {key: getattr(memory, key) for key in MEMORY_KEYS}


def _numbers_template(keys: Sequence[str]) -> tuple[Callable[[object], tuple], str]:
    """(getter of the values, "%s" template) for an object whose values are all numbers or None."""
    return attrgetter(*keys), ", ".join(f'"{key}": %s' for key in keys)


_TCP_NUMBERS = _numbers_template(TCP_INFO_KEYS[1:])  # after "congestion", the only text
_MEMORY_NUMBERS = _numbers_template(MEMORY_KEYS)


def _numbers_text(record: object, numbers: tuple[Callable[[object], tuple], str]) -> str:
    getter, template = numbers
    return (template % getter(record)).replace("None", "null")  # only numbers and None: nothing else says None


def _tcp_info_text(info: TcpInfo | None) -> str:
    if info is None:
        return "null"
    from portscope.render.jsonout import json_string

    congestion = "null" if info.congestion is None else json_string(info.congestion)
    return f'{{"congestion": {congestion}, {_numbers_text(info, _TCP_NUMBERS)}}}'


def _memory_text(memory: MemInfo | None) -> str:
    return "null" if memory is None else f"{{{_numbers_text(memory, _MEMORY_NUMBERS)}}}"


def detail_json(asked: frozenset[Detail], found: SocketDetails | None) -> str:
    """The text of :func:`detail_objects` as json.dumps lays it out, after a leading ", " (for ls --json's
    templates): written directly, the values being numbers, null and the algorithm's name."""
    parts = []
    if Detail.INFO in asked:
        parts.append(f'"tcp_info": {_tcp_info_text(found.tcp_info if found is not None else None)}')
    if Detail.MEMORY in asked:
        parts.append(f'"memory": {_memory_text(found.memory if found is not None else None)}')
    return ", " + ", ".join(parts) if parts else ""


def detail_objects(asked: frozenset[Detail], found: SocketDetails | None) -> dict[str, Any]:
    """The JSON keys a socket object gains when details were asked for: ``tcp_info`` with -i, ``memory``
    with -m (null where the kernel gave none: UDP has no tcp_info, TIME-WAIT neither, /proc nothing)."""
    extra: dict[str, Any] = {}
    if Detail.INFO in asked:
        extra["tcp_info"] = tcp_info_object(found.tcp_info if found is not None else None)
    if Detail.MEMORY in asked:
        extra["memory"] = memory_object(found.memory if found is not None else None)
    return extra
