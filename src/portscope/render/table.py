"""Socket tables for people: a rich table on a terminal, a plain column writer everywhere else.

Both show the same columns. rich costs about 0.35 ms a row, so it is used only for a terminal and a
moderate number of rows; pipes and large listings go through :func:`write_plain`, which sizes the
columns in one pass over pre-formatted strings.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from portscope.records import Family, Holder, Snapshot, Socket, State
from portscope.services import Services

STATE_LABELS: dict[State, str] = {
    State.LISTEN: "LISTEN",
    State.ESTABLISHED: "ESTAB",
    State.SYN_SENT: "SYN-SENT",
    State.SYN_RECV: "SYN-RECV",
    State.FIN_WAIT_1: "FIN-WAIT-1",
    State.FIN_WAIT_2: "FIN-WAIT-2",
    State.TIME_WAIT: "TIME-WAIT",
    State.CLOSE_WAIT: "CLOSE-WAIT",
    State.LAST_ACK: "LAST-ACK",
    State.CLOSING: "CLOSING",
    State.CLOSE: "CLOSE",
    State.BOUND: "BOUND",
    State.UNCONN: "UNCONN",
}
STATE_STYLES: dict[State, str] = {
    State.LISTEN: "bold green",
    State.UNCONN: "green",
    State.ESTABLISHED: "cyan",
    State.TIME_WAIT: "dim",
    State.CLOSE_WAIT: "yellow",
    State.FIN_WAIT_1: "yellow",
    State.FIN_WAIT_2: "yellow",
    State.LAST_ACK: "yellow",
    State.CLOSING: "yellow",
    State.SYN_SENT: "magenta",
    State.SYN_RECV: "magenta",
    State.BOUND: "blue",
    State.CLOSE: "dim",
}
RICH_ROW_LIMIT = 3000  # past this, even a terminal gets the plain writer


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    align: str = "left"  # "left" | "right"
    min_width: int = 0  # the width the column is shown from (0: always)


BASE_COLUMNS = (
    Column("Proto", "proto"),
    Column("State", "state"),
    Column("Recv-Q", "recv_q", "right", 100),
    Column("Send-Q", "send_q", "right", 100),
    Column("Local", "local"),
    Column("Peer", "peer"),
    Column("User", "user"),
    Column("Process", "process"),
    Column("Command", "command", min_width=170),
)


def columns_for_width(width: int | None) -> tuple[Column, ...]:
    """Every column when the width is unlimited (a pipe), else those that fit."""
    if width is None:
        return tuple(c for c in BASE_COLUMNS if c.key != "command")
    return tuple(c for c in BASE_COLUMNS if c.min_width <= width)


def format_endpoint(address: str | None, port: int | None, family: Family, interface: str | None = None) -> str:
    if address is None or port is None:
        return "*"
    host = f"[{address}]" if family is Family.IPV6 else address
    if interface:
        host = f"{host}%{interface}"
    return f"{host}:{port}"


def _printable(text: str) -> str:
    # Command lines may hold control characters; never let them reach the terminal raw.
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def compact_holders(holders: Sequence[Holder], shown_pids: int = 2) -> str:
    """``nginx[812,813,+2]``: every holder process counted, grouped by name."""
    by_name: dict[str, list[int]] = {}
    for holder in holders:
        by_name.setdefault(holder.process.name, []).append(holder.process.pid)
    parts = []
    for name, pids in by_name.items():
        shown = ",".join(str(p) for p in pids[:shown_pids])
        more = f",+{len(pids) - shown_pids}" if len(pids) > shown_pids else ""
        parts.append(f"{_printable(name)}[{shown}{more}]")
    return " ".join(parts)


class RowBuilder:
    """Formats sockets into column strings; caches what repeats (services, users, endpoints)."""

    def __init__(self, snap: Snapshot, services: Services | None) -> None:
        self.snap = snap
        self.names = services.by_port if services is not None else None
        self.hidden = snap.join.hidden_inodes
        self._users: dict[int | None, str] = {None: "-"}

    def _user(self, uid: int | None) -> str:
        name = self._users.get(uid)
        if name is None:
            from portscope.joins.procinfo import user_name

            name = self._users[uid] = user_name(uid)  # type: ignore[arg-type]
        return name

    def _endpoint(self, sock: Socket, address: str | None, port: int | None, local: bool) -> str:
        text = format_endpoint(address, port, sock.family, sock.interface if local else None)
        if self.names is not None and port is not None:
            service = self.names.get((port, sock.proto.value))
            if service:
                return f"{text} ({service})"
        return text

    def row(self, sock: Socket) -> dict[str, str]:
        holders = self.snap.holders_of(sock)
        if holders:
            process = compact_holders(holders)
            command = _printable(" ".join(holders[0].process.cmdline) or holders[0].process.name)
        elif sock.inode is None:
            process = command = ""
        elif self.snap.join.joined:
            process = "(hidden)" if sock.inode in self.hidden else "-"
            command = ""
        else:
            process = command = ""
        return {
            "proto": sock.proto.value + ("6" if sock.family is Family.IPV6 else ""),
            "state": STATE_LABELS[sock.state],
            "recv_q": "-" if sock.recv_q is None else str(sock.recv_q),
            "send_q": "-" if sock.send_q is None else str(sock.send_q),
            "local": self._endpoint(sock, sock.local_address, sock.local_port, True),
            "peer": self._endpoint(sock, sock.remote_address, sock.remote_port, False),
            "user": self._user(sock.uid) if sock.uid is not None else "-",
            "process": process,
            "command": command,
        }


def sort_key(sock: Socket):
    listening = sock.state in (State.LISTEN, State.UNCONN, State.BOUND)
    return (not listening, sock.proto.value, sock.local_port, sock.family.value, sock.local_address)


def write_plain(out: IO[str], builder: RowBuilder, sockets: Sequence[Socket], columns: Sequence[Column]) -> None:
    """Aligned columns without colour, widths computed in one pass."""
    keys = [c.key for c in columns]
    rows = [[row[k] for k in keys] for row in map(builder.row, sockets)]
    widths = [len(c.title) for c in columns]
    for cells in rows:
        for i, cell in enumerate(cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(columns) - 1
    right = [c.align == "right" for c in columns]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i == last:
                parts.append(cell)
            elif right[i]:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    out.write(line([c.title for c in columns]) + "\n")
    out.write("\n".join(line(cells) for cells in rows))
    if rows:
        out.write("\n")


SHRINKABLE = {"local": 15, "peer": 15, "process": 12, "command": 12, "user": 4}
# The command column takes what is left: cutting it costs nothing next to cutting an address.
TRUNCATION_COST = {"command": 0.0}
GAP = 2


def fit_widths(columns: Sequence[Column], lengths: Sequence[Sequence[int]], width: int | None) -> list[int]:
    """Column widths that fit ``width`` while truncating as few cells as possible.

    ``lengths`` holds, per column, the lengths of its cells. Each step narrows the column where one
    character less cuts the fewest cells (weighted), never below its floor.
    """
    natural = [max([len(c.title), *cells]) for c, cells in zip(columns, lengths, strict=True)]
    widths = list(natural)
    if width is None:
        return widths
    budget = width - GAP * (len(columns) - 1)
    floors = [min(natural[i], max(len(c.title), SHRINKABLE.get(c.key, natural[i]))) for i, c in enumerate(columns)]
    ordered = [sorted(cells) for cells in lengths]
    while sum(widths) > budget:
        best, best_cost = None, None
        for i, column in enumerate(columns):
            if widths[i] <= floors[i]:
                continue
            cut = len(ordered[i]) - bisect.bisect_left(ordered[i], widths[i])  # cells of this width or more
            cost = cut * TRUNCATION_COST.get(column.key, 1.0)
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        if best is None:
            break
        widths[best] -= 1
    return widths


def _ellipsize(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def fit_endpoint(text: str, width: int) -> str:
    """Shorten ``host:port (service)`` keeping the port: drop the service, then cut the host."""
    if len(text) <= width:
        return text
    endpoint = text.split(" (", 1)[0]
    if len(endpoint) <= width:
        return endpoint
    host, _, port = endpoint.rpartition(":")
    keep = width - len(port) - 2  # room for "…" and ":"
    if not host or keep < 1:
        return _ellipsize(endpoint, width)
    closing = "]" if host.endswith("]") else ""
    return f"{host[: max(1, keep - len(closing))]}…{closing}:{port}"


def print_rich(
    console, builder: RowBuilder, sockets: Sequence[Socket], columns: Sequence[Column], width: int | None
) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = [builder.row(sock) for sock in sockets]
    widths = fit_widths(columns, [[len(r[c.key]) for r in rows] for c in columns], width)
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        expand=False,
        header_style="bold",
        padding=(0, GAP // 2),
        collapse_padding=True,
    )
    for column, column_width in zip(columns, widths, strict=True):
        table.add_column(column.title, justify=column.align, no_wrap=True, width=column_width)  # type: ignore[arg-type]
    for sock, row in zip(sockets, rows, strict=True):
        cells = []
        for column, column_width in zip(columns, widths, strict=True):
            if column.key in ("local", "peer"):
                text = fit_endpoint(row[column.key], column_width)
            else:
                text = _ellipsize(row[column.key], column_width)
            if column.key == "state":
                cells.append(Text(text, style=STATE_STYLES.get(sock.state, "")))
            elif column.key == "process" and row[column.key] == "(hidden)":
                cells.append(Text(text, style="dim italic"))
            else:
                cells.append(Text(text))
        table.add_row(*cells)
    console.print(table)
