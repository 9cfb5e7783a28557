"""Socket tables for people: a rich table on a terminal, a plain column writer everywhere else.

Both show the same columns, with the same cells (:class:`RowCells`). rich is slow per row, so it is used
only for a terminal and a moderate number of rows; pipes and large listings go through
:func:`write_plain`, which sizes the columns in one pass over pre-formatted strings.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import IO

from portscope.commands.names import Names
from portscope.model.notation import STATE_LABELS_BY_VALUE, format_host, proto_label
from portscope.model.records import Family, Holder, Proto, Snapshot, Socket, State, UnixType
from portscope.render.text import safe_text

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


def compact_holders(holders: Sequence[Holder], shown_pids: int = 2) -> str:
    """``nginx[812,813,+2]``: every holder process counted, grouped by name."""
    by_name: dict[str, list[int]] = {}
    for holder in holders:
        by_name.setdefault(holder.process.name, []).append(holder.process.pid)
    parts = []
    for name, pids in by_name.items():
        shown = ",".join(str(p) for p in pids[:shown_pids])
        more = f",+{len(pids) - shown_pids}" if len(pids) > shown_pids else ""
        parts.append(f"{safe_text(name)}[{shown}{more}]")
    return " ".join(parts)


_LISTENING_STATES = (State.LISTEN, State.UNCONN, State.BOUND)


def _rank(sock: Socket) -> int:
    # The order of (not listening, proto.value, port, family.value) -- "tcp" < "udp", "ipv4" < "ipv6"
    # -- packed in one int (ports < 2**16), without the enum property lookups.
    return (
        (sock.state not in _LISTENING_STATES) << 19
        | (sock.proto is Proto.UDP) << 18
        | sock.local_port << 1
        | (sock.family is Family.IPV6)
    )


def table_order(sockets: Sequence[Socket]) -> list[Socket]:
    """Listeners first, then TCP before UDP, by local port, IPv4 before IPv6, by address.

    Two stable passes: by address (the sockets' own strings as keys), then by rank. Faster at 100k
    sockets than one sort by a key tuple, and no key tuple per socket."""
    ordered = sorted(sockets, key=attrgetter("local_address"))
    ordered.sort(key=_rank)
    return ordered


PLAIN_CHUNK = 4096  # lines per write()


def write_plain(
    out: IO[str],
    rows: RowCells,
    sockets: Sequence[Socket],
    columns: Sequence[Column],
    extra: Sequence[tuple[State, tuple[str, ...]]] = (),
) -> None:
    """Aligned columns without colour: the cells of :class:`RowCells`, laid out like ``ljust`` /
    ``rjust`` with two spaces between columns.

    Two passes: the first measures the cells (lengths only, no text), the second formats them and
    writes in chunks. Rows are not kept: 100k rows of strings cost far more memory than building
    each row once more costs time (hosts, services, users and process texts come from caches).
    ``extra``: rows already made (UNIX sockets: :func:`unix_rows`), written after the sockets' rows.
    """
    cells_of = rows.cells
    picked = [ALL_KEYS.index(c.key) for c in columns]
    measured = rows.measure(sockets)
    for _, cells in extra:
        measured = [max(width, len(cell)) for width, cell in zip(measured, cells, strict=True)]
    widths = [max(len(c.title), measured[i]) for c, i in zip(columns, picked, strict=True)]
    last = len(columns) - 1
    fmt = "  ".join(
        "%s" if i == last else f"%{'' if c.align == 'right' else '-'}{widths[i]}s" for i, c in enumerate(columns)
    )
    if picked == list(range(len(ALL_KEYS))):
        lines = map(cells_of, sockets)
    else:
        pick = itemgetter(*picked) if len(picked) > 1 else lambda cells: (cells[picked[0]],)
        lines = map(pick, map(cells_of, sockets))
    write = out.write
    write((fmt % tuple(c.title for c in columns)).rstrip() + "\n")
    chunk: list[str] = []
    for cells in lines:
        chunk.append((fmt % cells).rstrip())
        if len(chunk) >= PLAIN_CHUNK:
            chunk.append("")
            write("\n".join(chunk))
            chunk.clear()
    if chunk:
        chunk.append("")
        write("\n".join(chunk))
    if extra:
        pick_extra = itemgetter(*picked) if len(picked) > 1 else lambda cells: (cells[picked[0]],)
        write("".join((fmt % pick_extra(cells)).rstrip() + "\n" for _, cells in extra))


ALL_KEYS = ("proto", "state", "recv_q", "send_q", "local", "peer", "user", "process", "command")


class RowCells:
    """The cells of table rows, the one implementation of the table's cell rules (plain and rich tables).

    ``cells(sock)`` gives the cells of every column in :data:`ALL_KEYS` order; ``measure(sockets)``
    gives the length of each column's longest cell without building the cells. The repeating parts
    are cached, keyed by values that cannot change during one listing: addresses, ports, uids, and
    the ids of the snapshot's Process records (alive as long as the snapshot). The parts are written
    as :mod:`portscope.model.notation` writes them, inlined (tests compare with a row built from words).
    """

    def __init__(self, snap: Snapshot, names: Names) -> None:
        self.cells, self.measure, self.owner = _cell_functions(snap, names)


def _cell_functions(
    snap: Snapshot, names: Names
) -> tuple[
    Callable[[Socket], tuple[str, ...]],
    Callable[[Sequence[Socket]], list[int]],
    Callable[[int | None], tuple[str, str]],
]:
    holders_get = snap.holders.get
    joined = snap.join.joined
    hidden = snap.join.hidden_inodes
    user_name = names.user
    labels = STATE_LABELS_BY_VALUE
    v6_family = Family.IPV6
    tcp = Proto.TCP
    v4_protos = {p.value: proto_label(p, Family.IPV4) for p in Proto}  # keyed by value: str hashes are cached
    v6_protos = {p.value: proto_label(p, Family.IPV6) for p in Proto}
    brackets: dict[str, str] = {}
    # port -> " (service)", only for ports with a name: tens of thousands of ephemeral ports cost nothing
    tcp_suffixes: dict[int, str] = {}
    udp_suffixes: dict[int, str] = {}
    by_port = names.services.by_port if names.services is not None else {}
    for (port, proto_name), service in by_port.items():
        if service and proto_name in ("tcp", "udp"):
            (tcp_suffixes if proto_name == "tcp" else udp_suffixes)[port] = f" ({safe_text(service)})"
    queues: dict[int | None, str] = {None: "-"}
    users: dict[int | None, str] = {None: "-"}
    processes: dict[int, tuple[str, str]] = {}  # id(Process) -> (process cell, command cell)
    interfaces: dict[str, str] = {}  # name -> as shown

    def interface_text(name: str) -> str:
        text = interfaces[name] = safe_text(name)
        return text

    def bracketed(address: str) -> str:
        text = brackets[address] = format_host(address, v6_family)
        return text

    def process_texts(process) -> tuple[str, str]:
        texts = processes[id(process)] = (
            f"{safe_text(process.name)}[{process.pid}]",
            safe_text(" ".join(process.cmdline) or process.name),
        )
        return texts

    def queue(value: int) -> str:
        text = queues[value] = str(value)
        return text

    def user(uid: int) -> str:
        name = users[uid] = safe_text(user_name(uid))
        return name

    def owner(inode: int | None) -> tuple[str, str]:
        holders = holders_get(inode) if inode is not None else None
        if holders:
            first = holders[0].process
            texts = processes.get(id(first)) or process_texts(first)
            return texts if len(holders) == 1 else (compact_holders(holders), texts[1])
        if inode is None or not joined:
            return "", ""
        return ("(hidden)" if inode in hidden else "-"), ""

    def cells(sock: Socket) -> tuple[str, ...]:
        process, command = owner(sock.inode)
        v6 = sock.family is v6_family
        proto = sock.proto
        by_port = tcp_suffixes if proto is tcp else udp_suffixes
        address = sock.local_address
        port = sock.local_port
        if address is None or port is None:
            local = "*"
        else:
            host = (brackets.get(address) or bracketed(address)) if v6 else address
            interface = sock.interface
            if interface:
                local = f"{host}%{interfaces.get(interface) or interface_text(interface)}:{port}"
            else:
                local = f"{host}:{port}"
        if port is not None:
            local += by_port.get(port, "")
        address = sock.remote_address
        port = sock.remote_port
        if address is None or port is None:
            peer = "*"
        else:
            host = (brackets.get(address) or bracketed(address)) if v6 else address
            peer = f"{host}:{port}"
        if port is not None:
            peer += by_port.get(port, "")
        recv_q = sock.recv_q
        send_q = sock.send_q
        uid = sock.uid
        return (
            (v6_protos if v6 else v4_protos)[proto._value_],
            labels[sock.state._value_],
            queues.get(recv_q) or queue(recv_q),  # type: ignore[arg-type]
            queues.get(send_q) or queue(send_q),  # type: ignore[arg-type]
            local,
            peer,
            users.get(uid) or user(uid),  # type: ignore[arg-type]
            process,
            command,
        )

    def measure(sockets: Sequence[Socket]) -> list[int]:
        # The lengths cells() would give, from the same parts: an endpoint is its host, maybe
        # "%device", ":port", then " (service)" when the port has a name.
        any_v6 = False
        states: set[str] = set()
        uids: set[int | None] = set()
        recv_seen: set[int | None] = set()  # few distinct queue lengths: measure each once
        send_seen: set[int | None] = set()
        local_w = peer_w = process_w = command_w = recv_w = send_w = 0
        for sock in sockets:
            v6 = sock.family is v6_family
            any_v6 = any_v6 or v6
            by_port = tcp_suffixes if sock.proto is tcp else udp_suffixes
            address = sock.local_address
            port = sock.local_port
            if address is None or port is None:
                width = 1 + (len(by_port.get(port, "")) if port is not None else 0)
            else:
                width = len(address) + 2 if v6 else len(address)
                width += 1 + len(str(port)) + len(by_port.get(port, ""))
                interface = sock.interface
                if interface:
                    width += 1 + len(interfaces.get(interface) or interface_text(interface))
            if width > local_w:
                local_w = width
            address = sock.remote_address
            port = sock.remote_port
            if address is None or port is None:
                width = 1 + (len(by_port.get(port, "")) if port is not None else 0)
            else:
                width = len(address) + 2 if v6 else len(address)
                width += 1 + len(str(port)) + len(by_port.get(port, ""))
            if width > peer_w:
                peer_w = width
            states.add(sock.state._value_)
            uids.add(sock.uid)
            recv_q = sock.recv_q
            send_q = sock.send_q
            if recv_q not in recv_seen:
                recv_seen.add(recv_q)
                recv_w = max(recv_w, len(queues.get(recv_q) or queue(recv_q)))  # type: ignore[arg-type]
            if send_q not in send_seen:
                send_seen.add(send_q)
                send_w = max(send_w, len(queues.get(send_q) or queue(send_q)))  # type: ignore[arg-type]
            process, command = owner(sock.inode)
            if len(process) > process_w:
                process_w = len(process)
            if len(command) > command_w:
                command_w = len(command)
        return [
            max(map(len, (v6_protos if any_v6 else v4_protos).values())) if sockets else 0,  # "tcp6" > "tcp"
            max((len(labels[value]) for value in states), default=0),
            recv_w,
            send_w,
            local_w,
            peer_w,
            max((len(users.get(uid) or user(uid)) for uid in uids), default=0),  # type: ignore[arg-type]
            process_w,
            command_w,
        ]

    return cells, measure, owner


UNIX_LABELS = {UnixType.STREAM: "u_str", UnixType.DGRAM: "u_dgr", UnixType.SEQPACKET: "u_seq"}  # ss's netids


def unix_rows(snap: Snapshot, names: Names, row_cells: RowCells) -> list[tuple[State, tuple[str, ...]]]:
    """The table rows of the snapshot's UNIX sockets, in :data:`ALL_KEYS` order: listeners first, by path.

    Local is the bound name (``*`` unnamed); Peer is the other end: its name, if it has one, and the
    processes that hold it (``inode N`` when none is visible); ``*`` without a peer.
    """
    by_inode = {u.inode: u for u in snap.unix_sockets}
    ordered = sorted(
        snap.unix_sockets, key=lambda u: (u.state not in _LISTENING_STATES, u.path is None, u.path or "", u.inode)
    )
    owner = row_cells.owner
    rows = []
    for usock in ordered:
        process, command = owner(usock.inode)
        peer = "*"
        if usock.peer_inode is not None:
            other = by_inode.get(usock.peer_inode)
            peer_holders = snap.peer_holders_of(usock)
            parts = [safe_text(other.path)] if other is not None and other.path is not None else []
            parts.append(compact_holders(peer_holders) if peer_holders else f"inode {usock.peer_inode}")
            peer = " ".join(parts)
        rows.append(
            (
                usock.state,
                (
                    UNIX_LABELS[usock.type],
                    STATE_LABELS_BY_VALUE[usock.state.value],
                    "-" if usock.recv_q is None else str(usock.recv_q),
                    "-" if usock.send_q is None else str(usock.send_q),
                    "*" if usock.path is None else safe_text(usock.path),
                    peer,
                    "-" if usock.uid is None else safe_text(names.user(usock.uid)),
                    process,
                    command,
                ),
            )
        )
    return rows


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
    console,
    row_cells: RowCells,
    sockets: Sequence[Socket],
    columns: Sequence[Column],
    width: int | None,
    extra: Sequence[tuple[State, tuple[str, ...]]] = (),
) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    picked = [ALL_KEYS.index(c.key) for c in columns]
    rows = [row_cells.cells(sock) for sock in sockets] + [cells for _, cells in extra]
    row_states = [sock.state for sock in sockets] + [state for state, _ in extra]
    widths = fit_widths(columns, [[len(r[i]) for r in rows] for i in picked], width)
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
    for state, row in zip(row_states, rows, strict=True):
        cells = []
        for column, column_width, index in zip(columns, widths, picked, strict=True):
            if column.key in ("local", "peer"):
                text = fit_endpoint(row[index], column_width)
            else:
                text = _ellipsize(row[index], column_width)
            if column.key == "state":
                cells.append(Text(text, style=STATE_STYLES.get(state, "")))
            elif column.key == "process" and row[index] == "(hidden)":
                cells.append(Text(text, style="dim italic"))
            else:
                cells.append(Text(text))
        table.add_row(*cells)
    console.print(table)
