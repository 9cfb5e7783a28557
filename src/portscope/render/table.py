"""Socket tables for people: a rich table on a terminal, a plain column writer everywhere else.

Both show the same columns, with the same cells (:class:`RowCells`). rich is slow per row, so it is used
only for a terminal and a moderate number of rows; pipes and large listings go through
:func:`write_plain`, which sizes the columns in one pass over pre-formatted strings.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter

from portscope.commands.names import Names
from portscope.engine.parallel import DEFAULT, Parallelism
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.notation import STATE_LABELS, STATE_LABELS_BY_VALUE, format_host, proto_label
from portscope.model.records import Family, Holder, Proto, Snapshot, Socket, State, UnixType
from portscope.render.text import safe_text

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import IO

    from portscope.render.splitwriter import Write

    RowWriter = Callable[[Write, Sequence[Socket], int, int], None]  # write rows [start, stop) of the sockets

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


@dataclass_lite(frozen=True)
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


NAMESPACE_COLUMN = Column("Netns", "netns")  # first, when the rows come from more than one network namespace


def columns_for_width(width: int | None) -> tuple[Column, ...]:
    """The columns a table may show: into a pipe without a width, all but the command line (whole lines,
    ss's columns); for a width, every column, :func:`plan_columns` then picks those that fit."""
    if width is None:
        return tuple(c for c in BASE_COLUMNS if c.key != "command")
    return BASE_COLUMNS


def with_namespace_column(columns: Sequence[Column], sockets: Sequence[Socket]) -> tuple[Column, ...]:
    """The namespace column in front when the sockets live in more than one network namespace."""
    first = sockets[0].netns if sockets else None
    if any(sock.netns != first for sock in sockets):
        return (NAMESPACE_COLUMN, *columns)
    return tuple(columns)


def compact_holders(holders: Sequence[Holder], shown_pids: int | None = 2) -> str:
    """``nginx[812,813,+2]``: every holder process counted, grouped by name; ``shown_pids`` None: every pid."""
    by_name: dict[str, list[int]] = {}
    for holder in holders:
        by_name.setdefault(holder.process.name, []).append(holder.process.pid)
    parts = []
    for name, pids in by_name.items():
        limit = len(pids) if shown_pids is None else shown_pids
        shown = ",".join(str(p) for p in pids[:limit])
        more = f",+{len(pids) - limit}" if len(pids) > limit else ""
        parts.append(f"{safe_text(name)}[{shown}{more}]")
    return " ".join(parts)


# Interpreters whose command line names what runs after them: the Command column starts at the script
# (``python3 -m http.server 8080``, ``node server.js``, ``java -jar app.jar``), the interpreter's own
# options left out. Per interpreter: its options that take the next word as their value.
_INTERPRETER_VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "python": frozenset({"-W", "-X", "--check-hash-based-pycs"}),
    "node": frozenset({"-r", "--require", "--import", "--loader", "--experimental-loader", "--env-file"}),
    "java": frozenset(
        {
            "-cp",
            "-classpath",
            "--class-path",
            "-p",
            "--module-path",
            "--add-modules",
            "--add-opens",
            "--add-exports",
            "--add-reads",
            "--upgrade-module-path",
            "--limit-modules",
            "--patch-module",
        }
    ),
    "ruby": frozenset({"-I", "-r", "-C", "-E", "--encoding"}),
    "perl": frozenset({"-I", "-M", "-m"}),
    "php": frozenset({"-c", "-d", "-z"}),
    "shell": frozenset({"-o", "-O", "+o", "+O"}),
    "other": frozenset(),
}
# Per interpreter: options after which the rest is what runs (``-m module``, ``-jar app.jar``, ``-e code``).
_RUNS_NEXT: dict[str, frozenset[str]] = {
    "python": frozenset({"-m", "-c"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
    "java": frozenset({"-jar", "-m", "--module"}),
    "ruby": frozenset({"-e"}),
    "perl": frozenset({"-e", "-E"}),
    "php": frozenset({"-r", "-f"}),
    "shell": frozenset({"-c"}),
    "other": frozenset({"-e"}),
}
_INTERPRETERS = {
    "python": "python",
    "pypy": "python",
    "node": "node",
    "nodejs": "node",
    "deno": "other",
    "bun": "other",
    "java": "java",
    "ruby": "ruby",
    "perl": "perl",
    "php": "php",
    "sh": "shell",
    "bash": "shell",
    "dash": "shell",
    "zsh": "shell",
    "ksh": "shell",
    "lua": "other",
    "tclsh": "other",
    "Rscript": "other",
}


def _interpreter_kind(program: str) -> str | None:
    base = program.rstrip("0123456789.")  # python3.12, pypy3, lua5.4
    return _INTERPRETERS.get(base)


def command_text(argv: Sequence[str], name: str) -> str:
    """The Command cell: the program's file name and its arguments; after an interpreter, from the script
    on (``/usr/bin/python3 -u -m http.server 8080`` is ``python3 -m http.server 8080``)."""
    if not argv:
        return safe_text(name)
    first = argv[0]
    # a path is shortened to its file name; a rewritten title ("nginx: worker process") is kept
    program = first.rsplit("/", 1)[-1] if "/" in first and " " not in first else first
    kind = _interpreter_kind(program)
    rest = list(argv[1:])
    if kind is not None:
        kept: list[str] = []
        takes_value, runs_next = _INTERPRETER_VALUE_OPTIONS[kind], _RUNS_NEXT[kind]
        index = 0
        while index < len(rest):
            word = rest[index]
            if word in runs_next:
                kept = rest[index:]
                break
            if word == "--" or not word.startswith(("-", "+")) or word == "-":
                kept = rest[index + (word == "--") :]
                break
            index += 2 if word in takes_value else 1
        rest = kept
    return safe_text(" ".join([program, *rest]))


_LISTENING_STATES = (State.LISTEN, State.UNCONN, State.BOUND)


_LISTENING = frozenset(_LISTENING_STATES)
_BY_ADDRESS = attrgetter("local_address")


def table_order(sockets: Sequence[Socket]) -> list[Socket]:
    """Listeners first, then TCP before UDP, by local port, IPv4 before IPv6, by address.

    One sort keyed by an int made from the record's fields (addresses ranked among the few distinct ones, str
    enums by their values "ipv4" < "ipv6" and "tcp" < "udp"), the keys made in the order of ``sockets``: the
    order they were collected, in which the records lie in memory. Stable sorts by each field in turn read
    each record again in an order memory does not follow: at 40k sockets, about twice the time. The key ints
    (1.4 MB at 40k sockets) are gone before the holders are made when ``ls`` orders while the /proc walker runs
    (``render.ls.TablePrep``)."""
    addresses = sorted(set(map(_BY_ADDRESS, sockets)))
    address_rank = {address: rank for rank, address in enumerate(addresses)}
    port_shift = len(addresses).bit_length() + 1  # and a bit for the family
    ipv6 = 1 << (port_shift - 1)
    family_rank = {family: ipv6 if family.value > Family.IPV4.value else 0 for family in Family}
    proto_shift = port_shift + 16
    protos = sorted(Proto, key=attrgetter("value"))
    proto_rank = {proto: rank << proto_shift for rank, proto in enumerate(protos)}
    later = 1 << (proto_shift + len(protos).bit_length())  # not listening
    state_rank = {state: 0 if state in _LISTENING else later for state in State}

    def rank(sock: Socket) -> int:
        return (
            state_rank[sock.state]
            | proto_rank[sock.proto]
            | sock.local_port << port_shift
            | family_rank[sock.family]
            | address_rank[sock.local_address]
        )

    return sorted(sockets, key=rank)


# By port number (0-65535): the length of ":" and its digits (64 KB, made at import in microseconds)
_DIGITS_BY_PORT = b"".join(
    bytes([len(str(low)) + 1]) * (high - low)
    for low, high in ((0, 10), (10, 100), (100, 1000), (1000, 10000), (10000, 65536))
)


def _port_widths(named: dict[int, str]) -> list[int] | bytes:
    """By port number (0-65535): the length of ":", the port's digits and its service suffix (``named``)."""
    if not named:
        return _DIGITS_BY_PORT
    table = bytearray(_DIGITS_BY_PORT)
    if any(len(text) > 200 for text in named.values()):
        table = list(table)  # type: ignore[assignment]  # a service name too long for a byte
    for port, text in named.items():
        table[port] += len(text)
    return table


def service_suffixes(names: Names) -> tuple[dict[int, str], dict[int, str]]:
    """TCP and UDP: port -> " (service)", only for ports with a name (tens of thousands of ephemeral ports
    cost nothing)."""
    tcp_suffixes: dict[int, str] = {}
    udp_suffixes: dict[int, str] = {}
    by_port = names.services.by_port if names.services is not None else {}
    for (port, proto_name), service in by_port.items():
        if service and proto_name in ("tcp", "udp"):
            (tcp_suffixes if proto_name == "tcp" else udp_suffixes)[port] = f" ({safe_text(service)})"
    return tcp_suffixes, udp_suffixes


def endpoint_widths(
    sockets: Sequence[Socket], tcp_suffixes: dict[int, str], udp_suffixes: dict[int, str], interfaces: dict[str, str]
) -> tuple[int, int]:
    """The widths of the Local and Peer cells. An endpoint is its host (IPv6 in brackets), maybe "%device",
    ":port", then " (service)" when the port has a name (``*_suffixes``): lengths added from those parts, no
    text made; ":port" and the name's length from one table by port number per protocol. ``interfaces``:
    device name -> as shown, filled here."""
    tcp_w, udp_w = _port_widths(tcp_suffixes), _port_widths(udp_suffixes)
    digits_w = _DIGITS_BY_PORT
    tcp = Proto.TCP
    v6_family = Family.IPV6
    local_w = peer_w = 0
    for sock in sockets:
        port_w = tcp_w if sock.proto is tcp else udp_w
        brackets_w = 2 if sock.family is v6_family else 0
        address = sock.local_address
        port = sock.local_port
        if address is None or port is None:
            width = 1 + (port_w[port] - digits_w[port] if port is not None else 0)  # "*" and the name
        else:
            width = len(address) + brackets_w + port_w[port]
            interface = sock.interface
            if interface:
                shown = interfaces.get(interface)
                if shown is None:
                    shown = interfaces[interface] = safe_text(interface)
                width += 1 + len(shown)
        if width > local_w:
            local_w = width
        address = sock.remote_address
        port = sock.remote_port
        if address is None or port is None:
            width = 1 + (port_w[port] - digits_w[port] if port is not None else 0)
        else:
            width = len(address) + brackets_w + port_w[port]
        if width > peer_w:
            peer_w = width
    return local_w, peer_w


PLAIN_CHUNK = 1024  # lines per write(): about 100 KB, under malloc's mmap threshold (no fresh pages per chunk)


def write_plain(
    out: IO[str],
    rows: RowCells,
    sockets: Sequence[Socket],
    columns: Sequence[Column],
    extra: Sequence[tuple[State, tuple[str, ...]]] = (),
    *,
    header: bool = True,
    endpoints: tuple[int, int] | None = None,
    as_collected: Sequence[Socket] | None = None,
    parallelism: Parallelism = DEFAULT,
) -> None:
    """Aligned columns without colour: the cells of :class:`RowCells`, laid out like ``ljust`` /
    ``rjust`` with two spaces between columns.

    Two passes: the first measures the cells (lengths only, no text), the second formats them and
    writes in chunks. Rows are not kept: 100k rows of strings cost far more memory than building
    each row once more costs time (hosts, services, users and process texts come from caches).
    The second pass is ``RowCells.row_writer``'s where the layout allows (a pipe's columns), else each
    row's cells formatted with ``%``; ``rows`` without ``row_writer`` (details) always take the latter. A
    long table's second half is made by a forked child where ``parallelism`` allows (the same text: see
    :mod:`portscope.render.splitwriter`).
    ``extra``: rows already made (UNIX sockets: :func:`unix_rows`), written after the sockets' rows.
    ``endpoints``: the widths of the Local and Peer cells, measured before (``render.ls.TablePrep``).
    ``as_collected``: the same sockets in the order they were collected, measured instead: their records lie in
    memory in that order, and a pass over 40k records in the table's order waits on the memory (5 × slower).
    """
    cells_of = rows.cells
    keys = getattr(rows, "keys", ALL_KEYS)  # render.details adds the detail columns' keys
    picked = [keys.index(c.key) for c in columns]
    last = len(columns) - 1
    # the process and command widths cost a pass over the holders: not measured when unused (the last column)
    owners = any(c.key in ("process", "command") for c in columns[:last])
    measured = rows.measure(sockets if as_collected is None else as_collected, owners, endpoints)
    for _, cells in extra:
        measured = [max(width, len(cell)) for width, cell in zip(measured, cells, strict=True)]
    widths = [max(len(c.title), measured[i]) for c, i in zip(columns, picked, strict=True)]
    fmt = "  ".join(
        "%s" if i == last else f"%{'' if c.align == 'right' else '-'}{widths[i]}s" for i, c in enumerate(columns)
    )
    write = out.write
    if header:
        write((fmt % tuple(c.title for c in columns)).rstrip() + "\n")
    row_writer = getattr(rows, "row_writer", None)
    write_rows = row_writer(columns, widths) if row_writer is not None else None
    if write_rows is None:
        write_rows = _formatted_rows(cells_of, fmt, None if picked == list(range(len(keys))) else picked)
    count = len(sockets)
    if parallelism.split_render(count):
        from portscope.render.splitwriter import write_in_two

        write_in_two(out, count // 2, count, lambda write, start, stop: write_rows(write, sockets, start, stop))
    else:
        write_rows(write, sockets, 0, count)
    if extra:
        pick_extra = _picker(picked)
        write("".join((fmt % pick_extra(cells)).rstrip() + "\n" for _, cells in extra))


def _picker(picked: list[int]) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    """The cells at the indexes ``picked``, always as a tuple (``itemgetter`` of one index gives the item)."""
    return itemgetter(*picked) if len(picked) > 1 else lambda cells: (cells[picked[0]],)


def _formatted_rows(cells_of: Callable[[Socket], tuple[str, ...]], fmt: str, picked: list[int] | None) -> RowWriter:
    """Rows of each socket's cells (those at the indexes ``picked``, or all) formatted with ``fmt``."""
    pick = _picker(picked) if picked is not None else None

    def write_rows(write: Write, sockets: Sequence[Socket], start: int, stop: int) -> None:
        for at in range(start, stop, PLAIN_CHUNK):
            part = map(cells_of, sockets[at : min(at + PLAIN_CHUNK, stop)])
            write("".join([(fmt % cells).rstrip() + "\n" for cells in (part if pick is None else map(pick, part))]))

    return write_rows


ALL_KEYS = ("proto", "state", "recv_q", "send_q", "local", "peer", "user", "process", "command", "netns")


class RowCells:
    """The cells of table rows, the one implementation of the table's cell rules (plain and rich tables).

    ``cells(sock)`` gives the cells of every column in :data:`ALL_KEYS` order; ``measure(sockets)``
    gives the length of each column's longest cell without building the cells. The namespace cell (the
    container's name, the ``ip netns`` name, ``host``, or the inode) is filled only with ``namespaces``.
    The repeating parts are cached, keyed by values that cannot change during one listing: addresses, ports, uids, and
    the ids of the snapshot's Process records (alive as long as the snapshot). The parts are written
    as :mod:`portscope.model.notation` writes them, inlined (tests compare with a row built from words).
    """

    def __init__(self, snap: Snapshot, names: Names, *, namespaces: bool = False, full_holders: bool = False) -> None:
        # full_holders: every holder's pid (a pipe: nothing is cut); else nginx[812,813,+2]
        self.shown_pids = None if full_holders else 2
        self.cells, self.measure, self.owner, self.netns, self.row_writer = _cell_functions(
            snap, names, namespaces, self.shown_pids
        )


_HEAD_KEYS = frozenset({"netns", "proto", "state", "recv_q", "send_q"})
_TAIL_KEYS = frozenset({"user", "process", "command"})


def plain_layout(keys: Sequence[str]) -> int | None:
    """Where the endpoints start, for columns laid out as a head of few-valued cells (namespace, protocol,
    state, queues), Local and Peer, then a tail (user, process, command line) of at least one column;
    None for any other layout."""
    if len(set(keys)) != len(keys) or "local" not in keys:
        return None
    split = keys.index("local")
    head, endpoints, tail = keys[:split], keys[split : split + 2], keys[split + 2 :]
    if list(endpoints) != ["local", "peer"] or not tail or not _HEAD_KEYS.issuperset(head):
        return None
    return split if _TAIL_KEYS.issuperset(tail) else None


def _padded(text: str, width: int, align: str) -> str:
    return text.rjust(width) if align == "right" else text.ljust(width)


DUAL_STACK_MARK = "46"  # tcp46: a [::] socket without IPV6_V6ONLY, which takes IPv4 too (as BSD netstat)


def covers_ipv4_too(sock: Socket) -> bool:
    """A ``[::]`` socket without IPV6_V6ONLY: it takes IPv4 connections and datagrams as well."""
    return sock.v6only is False and sock.local_address == "::"


def _cell_functions(
    snap: Snapshot, names: Names, namespaces: bool = False, shown_pids: int | None = 2
) -> tuple[
    Callable[[Socket], tuple[str, ...]],
    Callable[[Sequence[Socket]], list[int]],
    Callable[[int | None], tuple[str, str]],
    Callable[[int | None], str],
    Callable[[Sequence[Column], Sequence[int]], RowWriter | None],
]:
    holders_get = snap.holders.get
    get_state, get_family, get_inode = attrgetter("state"), attrgetter("family"), attrgetter("inode")
    get_recv_q, get_send_q, get_uid, get_netns = (attrgetter(n) for n in ("recv_q", "send_q", "uid", "netns"))
    joined = snap.join.joined
    hidden = snap.join.hidden_inodes
    user_name = names.user
    # keyed by the enum members themselves: a str enum hashes (and compares) as its value, cached in the
    # member, while reading ``member.value`` (or ``_value_``) per socket is an attribute lookup through the MRO
    labels = STATE_LABELS
    v6_family = Family.IPV6
    tcp = Proto.TCP
    v4_protos = {p: proto_label(p, Family.IPV4) for p in Proto}
    v6_protos = {p: proto_label(p, Family.IPV6) for p in Proto}
    dual_protos = {p: p.value + DUAL_STACK_MARK for p in Proto}
    brackets: dict[str, str] = {}
    tcp_suffixes, udp_suffixes = service_suffixes(names)
    queues: dict[int | None, str] = {None: "-"}
    users: dict[int | None, str] = {None: "-"}
    processes: dict[int, tuple[str, str]] = {}  # id(Process) -> (process cell, command cell)
    interfaces: dict[str, str] = {}  # name -> as shown
    netns_texts: dict[int | None, str] = {None: "-"} if namespaces else {}
    places = names.places

    def netns_text(inode: int | None) -> str:
        if not namespaces:
            return ""
        text = netns_texts.get(inode)
        if text is None:
            name = places.netns_name(inode) if places is not None else None
            text = netns_texts[inode] = safe_text(name) if name else str(inode)
        return text

    def interface_text(name: str) -> str:
        text = interfaces[name] = safe_text(name)
        return text

    def bracketed(address: str) -> str:
        text = brackets[address] = format_host(address, v6_family)
        return text

    def process_texts(process) -> tuple[str, str]:
        texts = processes[id(process)] = (
            f"{safe_text(process.name)}[{process.pid}]",
            command_text(process.cmdline, process.name),
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
            return texts if len(holders) == 1 else (compact_holders(holders, shown_pids), texts[1])
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
            (dual_protos if v6 and sock.v6only is False and sock.local_address == "::" else v6_protos)[proto]
            if v6
            else v4_protos[proto],
            labels[sock.state],
            queues.get(recv_q) or queue(recv_q),  # type: ignore[arg-type]
            queues.get(send_q) or queue(send_q),  # type: ignore[arg-type]
            local,
            peer,
            users.get(uid) or user(uid),  # type: ignore[arg-type]
            process,
            command,
            netns_text(sock.netns),
        )

    def row_writer(columns: Sequence[Column], widths: Sequence[int]) -> RowWriter | None:
        # The rows as write_plain lays out cells(): each column padded to its width but the last, two spaces
        # between, trailing blanks cut; in chunks of PLAIN_CHUNK lines. Only for a head of few-valued cells,
        # the endpoints, then a tail (plain_layout): None for any other layout. A row's head (namespace,
        # protocol, state, queues) and tail (user, process, command) are padded once per distinct value and
        # kept; only the endpoints are made per socket.
        split = plain_layout([c.key for c in columns])
        if split is None:
            return None
        head_columns = list(zip(columns[:split], widths[:split], strict=True))
        tail_columns = list(zip(columns[split + 2 :], widths[split + 2 :], strict=True))
        local_w, peer_w = widths[split], widths[split + 1]
        heads: dict[tuple, str] = {}
        tails: dict[tuple, str] = {}

        def head_text(key: tuple) -> str:
            proto_text, state, recv_q, send_q, netns = key
            texts = {
                "proto": proto_text,
                "state": labels[state],
                "recv_q": queues.get(recv_q) or queue(recv_q),
                "send_q": queues.get(send_q) or queue(send_q),
                "netns": netns_text(netns),
            }
            text = heads[key] = "".join(_padded(texts[c.key], w, c.align) + "  " for c, w in head_columns)
            return text

        def tail_text(key: tuple) -> str:
            uid, process, command = key
            texts = {"user": users.get(uid) or user(uid), "process": process, "command": command}
            last = len(tail_columns) - 1
            # kept without its trailing blanks, as the line's end
            text = tails[key] = "  ".join(
                texts[c.key] if i == last else _padded(texts[c.key], w, c.align)
                for i, (c, w) in enumerate(tail_columns)
            ).rstrip()
            return text

        heads_get, tails_get = heads.get, tails.get

        def write_rows(write: Write, sockets: Sequence[Socket], start: int, stop: int) -> None:
            for at in range(start, stop, PLAIN_CHUNK):
                write(rows_text(sockets[at : min(at + PLAIN_CHUNK, stop)]))

        def rows_text(sockets: Sequence[Socket]) -> str:
            chunk: list[str] = []
            append = chunk.append
            for sock in sockets:
                proto = sock.proto
                named = tcp_suffixes if proto is tcp else udp_suffixes
                v6 = sock.family is v6_family
                address = sock.local_address
                port = sock.local_port
                if v6:
                    proto_text = (dual_protos if sock.v6only is False and address == "::" else v6_protos)[proto]
                else:
                    proto_text = v4_protos[proto]
                key = (proto_text, sock.state, sock.recv_q, sock.send_q, sock.netns)
                head = heads_get(key) or head_text(key)
                if address is None or port is None:
                    local = "*" if port is None else "*" + named.get(port, "")
                else:
                    host = (brackets.get(address) or bracketed(address)) if v6 else address
                    interface = sock.interface
                    if interface:
                        host = f"{host}%{interfaces.get(interface) or interface_text(interface)}"
                    local = f"{host}:{port}{named[port]}" if port in named else f"{host}:{port}"
                address = sock.remote_address
                port = sock.remote_port
                if address is None or port is None:
                    peer = "*" if port is None else "*" + named.get(port, "")
                else:
                    host = (brackets.get(address) or bracketed(address)) if v6 else address
                    peer = f"{host}:{port}{named[port]}" if port in named else f"{host}:{port}"
                inode = sock.inode
                held = holders_get(inode) if inode is not None else None
                if held:
                    first = held[0].process
                    process, command = processes.get(id(first)) or process_texts(first)
                    if len(held) > 1:
                        process = compact_holders(held, shown_pids)
                elif inode is None or not joined:
                    process = command = ""
                else:
                    process, command = ("(hidden)" if inode in hidden else "-"), ""
                key = (sock.uid, process, command)
                tail = tails_get(key) or tail_text(key)
                if tail:
                    append(f"{head}{local.ljust(local_w)}  {peer.ljust(peer_w)}  {tail}")
                else:  # nothing in the tail (pathological cells): the peer's padding goes too
                    append(f"{head}{local.ljust(local_w)}  {peer}".rstrip())
            append("")
            return "\n".join(chunk)

        return write_rows

    def owner_widths(sockets: Sequence[Socket]) -> tuple[int, int]:
        # the longest process and command cells: once per holders tuple, without the cells' other parts
        process_w = command_w = 0
        for held in map(holders_get, map(get_inode, sockets)):
            if held:
                first = held[0].process
                process, command = processes.get(id(first)) or process_texts(first)
                if len(held) > 1:
                    process = compact_holders(held, shown_pids)
                if len(process) > process_w:
                    process_w = len(process)
                if len(command) > command_w:
                    command_w = len(command)
        if joined and process_w < 8:  # sockets with a file and no holder seen: "-", or "(hidden)"
            for inode in map(get_inode, sockets):
                if inode is not None and not holders_get(inode):
                    process_w = max(process_w, 8 if inode in hidden else 1)
                    if process_w == 8:
                        break
        return process_w, command_w

    def measure(sockets: Sequence[Socket], owners: bool = True, endpoints: tuple[int, int] | None = None) -> list[int]:
        # The lengths cells() would give, from the same parts: the columns of few distinct values (states,
        # queue lengths, uids, namespaces) once per value, from sets made in C. ``owners`` False: the process
        # and command columns are not measured (0), as for a table whose last column is the process.
        # ``endpoints``: the Local and Peer widths of these sockets, measured before (TablePrep).
        states = set(map(get_state, sockets))
        families = set(map(get_family, sockets))
        any_dual = v6_family in families and any(
            sock.v6only is False and sock.local_address == "::" for sock in sockets if sock.family is v6_family
        )
        local_w, peer_w = endpoints or endpoint_widths(sockets, tcp_suffixes, udp_suffixes, interfaces)
        process_w, command_w = owner_widths(sockets) if owners else (0, 0)
        return [
            max(map(len, (dual_protos if any_dual else v6_protos if v6_family in families else v4_protos).values()))
            if sockets
            else 0,  # "tcp46" > "tcp6" > "tcp"
            max((len(labels[value]) for value in states), default=0),
            max((len(queues.get(q) or queue(q)) for q in set(map(get_recv_q, sockets))), default=0),  # type: ignore[arg-type]
            max((len(queues.get(q) or queue(q)) for q in set(map(get_send_q, sockets))), default=0),  # type: ignore[arg-type]
            local_w,
            peer_w,
            max((len(users.get(uid) or user(uid)) for uid in set(map(get_uid, sockets))), default=0),  # type: ignore[arg-type]
            process_w,
            command_w,
            max((len(netns_text(inode)) for inode in set(map(get_netns, sockets))), default=0),
        ]

    return cells, measure, owner, netns_text, row_writer


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
            parts.append(
                compact_holders(peer_holders, row_cells.shown_pids) if peer_holders else f"inode {usock.peer_inode}"
            )
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
                    row_cells.netns(usock.netns),
                ),
            )
        )
    return rows


GAP = 2
# Least valuable first: what goes when the columns do not fit (the command line, the queues, then the user);
# State, Local and Process stay, shortened if they must.
DROP_ORDER = ("command", "send_q", "recv_q", "user", "peer", "proto")
OPTIONAL = frozenset({"command", "send_q", "recv_q"})  # shown only where they fit whole (command: 16+)
COMMAND_MIN = 16
# How much cutting one cell of a column costs (the column with the cheapest cut is narrowed first).
TRUNCATION_COST = {"command": 0.1, "user": 0.5, "state": 50.0, "proto": 50.0}
PORT_FLOOR = len("…:65535")
COMFORT = {"local": 14, "peer": 14, "process": 14, "user": 4}


@dataclass_lite(frozen=True)
class Layout:
    """The columns shown and their widths, chosen from the cells that will be shown."""

    columns: tuple[Column, ...]
    widths: tuple[int, ...]
    bare_endpoints: bool  # local and peer without their service names


def _bare(endpoint: str) -> str:
    return endpoint.split(" (", 1)[0]


def _width(widths: Sequence[int]) -> int:
    return sum(widths) + GAP * (len(widths) - 1)


def plan_layout(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> Layout:
    """Which columns to show and how wide, for ``rows`` (cells in ``columns`` order) at ``width``.

    Unlimited (``None``): every column at its natural width. Else, while the table is too wide: the
    queues and the command line are left out (they come back wherever they fit whole), a peer column of
    nothing but ``*`` goes, service names are dropped from endpoints, then the user; then columns are
    narrowed where the fewest cells are cut, never below what keeps a port number whole.
    """
    keys = [c.key for c in columns]
    cells_by_column = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    lengths = [list(map(len, cells)) for cells in cells_by_column]
    natural = [max(len(c.title), max(lens, default=0)) for c, lens in zip(columns, lengths, strict=True)]
    if width is None:
        return Layout(tuple(columns), tuple(natural), False)
    index = {key: i for i, key in enumerate(keys)}
    shown = [k for k in keys if k not in OPTIONAL]
    sizes = dict(zip(keys, natural, strict=True))
    bare_endpoints = False

    def total() -> int:
        return _width([sizes[k] for k in shown])

    if "peer" in index and total() > width and all(cell == "*" for cell in cells_by_column[index["peer"]]):
        shown.remove("peer")  # nothing to say (listeners only)
    if total() > width:  # service names are the cheapest part of an endpoint
        for key in ("local", "peer"):
            if key in index:
                i = index[key]
                lengths[i] = [len(_bare(cell)) for cell in cells_by_column[i]]
                bare_width = max(len(columns[i].title), max(lengths[i], default=0))
                bare_endpoints = bare_endpoints or bare_width < sizes[key]
                sizes[key] = bare_width
    # widths below which a column says too little: the user goes when the rest does not fit whole, then
    # the peer and the protocol when the others would have to go below these
    comfort = {k: min(sizes[k], COMFORT.get(k, sizes[k])) for k in keys}
    for key in DROP_ORDER:
        if key not in shown or key in OPTIONAL:
            continue
        if (key == "user" and total() > width) or _width([comfort[k] for k in shown]) > width:
            shown.remove(key)
    # the optional columns come back where they fit whole
    if "recv_q" in index and "send_q" in index and total() + 2 * GAP + sizes["recv_q"] + sizes["send_q"] <= width:
        at = shown.index("state") + 1 if "state" in shown else 0
        shown[at:at] = ["recv_q", "send_q"]
    if "command" in index and total() + GAP + min(sizes["command"], COMMAND_MIN) <= width:
        sizes["command"] = min(sizes["command"], width - total() - GAP)
        shown.append("command")
    picked = [c for c in columns if c.key in shown]
    widths = [sizes[c.key] for c in picked]
    if _width(widths) > width:
        i_picked = [index[c.key] for c in picked]
        widths = _narrow(picked, widths, [lengths[i] for i in i_picked], [cells_by_column[i] for i in i_picked], width)
    return Layout(tuple(picked), tuple(widths), bare_endpoints)


def _floor(column: Column, cells: Sequence[str], lengths: Sequence[int]) -> int:
    if column.key in ("local", "peer"):
        ports = max((len(c.rpartition(":")[2].split(" ", 1)[0]) + 2 for c in cells if c != "*"), default=1)
        return max(len(column.title), min(ports, PORT_FLOOR))
    if column.key == "process":
        return max(len(column.title), min(8, max(lengths, default=0)))
    return max(len(column.title), min(4, max(lengths, default=0)))


def _narrow(
    columns: Sequence[Column],
    widths: list[int],
    lengths: Sequence[Sequence[int]],
    cells: Sequence[Sequence[str]],
    width: int,
) -> list[int]:
    """Narrow the columns to ``width``, each step where one character less cuts the fewest cells."""
    widths = list(widths)
    budget = width - GAP * (len(columns) - 1)
    ordered = [sorted(column_lengths) for column_lengths in lengths]
    floors = [_floor(c, column_cells, lens) for c, column_cells, lens in zip(columns, cells, lengths, strict=True)]
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


def ellipsize(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def fit_endpoint(text: str, width: int) -> str:
    """Shorten ``host:port (service)`` keeping the port whole: drop the service, then cut the host's
    start (``…0.0.1:8443``: an address differs at its end)."""
    if len(text) <= width:
        return text
    endpoint = _bare(text)
    if len(endpoint) <= width:
        return endpoint
    host, _, port = endpoint.rpartition(":")
    keep = width - len(port) - 2  # room for "…" and ":"
    if not host or keep < 0:
        return endpoint  # the port itself does not fit: shown whole, the line runs over
    return f"…{host[len(host) - keep :] if keep else ''}:{port}"


def fit_process(text: str, width: int) -> str:
    """``name[pid,...]``: fewer pids first (``python3[9947,+3]``), then a shorter name (``postgr…[812]``)."""
    if len(text) <= width:
        return text
    name, bracket, inside = text.partition("[")
    if not bracket or " " in text or not inside.endswith("]"):
        return ellipsize(text, width)
    items = inside[:-1].split(",")
    more = int(items.pop()[1:]) if items and items[-1].startswith("+") and items[-1][1:].isdigit() else 0
    candidate = text
    for kept in range(len(items), 0, -1):
        rest = more + len(items) - kept
        pids = ",".join(items[:kept]) + (f",+{rest}" if rest else "")
        candidate = f"{name}[{pids}]"
        if len(candidate) <= width:
            return candidate
        if len(pids) + 3 <= width and kept == 1:
            return f"{name[: width - len(pids) - 3]}…[{pids}]"
    return ellipsize(candidate, width)


def fit_middle(text: str, width: int) -> str:
    """A command line shortened in the middle: the program and the end stay (``python3 …/app/server.py 80``)."""
    if len(text) <= width:
        return text
    program, space, _ = text.partition(" ")
    if space and len(program) + 3 <= width:
        return f"{program} …{text[len(text) - (width - len(program) - 2) :]}"
    return f"…{text[len(text) - width + 1 :]}" if width > 1 else "…"


FITTERS: dict[str, Callable[[str, int], str]] = {
    "local": fit_endpoint,
    "peer": fit_endpoint,
    "process": fit_process,
    "command": fit_middle,
}


def fitted_row(row: Sequence[str], layout: Layout, picked: Sequence[int]) -> list[str]:
    """The cells of one row as shown under ``layout``."""
    cells = []
    for column, column_width, index in zip(layout.columns, layout.widths, picked, strict=True):
        text = row[index]
        if row[0].startswith("u_") and column.key in ("local", "peer"):  # a UNIX name: no port to keep
            cells.append(text if len(text) <= column_width else "…" + text[len(text) - column_width + 1 :])
            continue
        if layout.bare_endpoints and column.key in ("local", "peer"):
            text = _bare(text)
        cells.append(FITTERS.get(column.key, ellipsize)(text, column_width))
    return cells


def _row_style(column: Column, state: State, text: str) -> str:
    if column.key == "state":
        return STATE_STYLES.get(state, "")
    if column.key == "process" and text == "(hidden)":
        return "dim italic"
    return ""


def write_fitted(
    out: IO[str],
    row_cells: RowCells,
    sockets: Sequence[Socket],
    columns: Sequence[Column],
    width: int | None,
    *,
    header: bool = True,
    paint: Callable[[str, str | None], str] | None = None,
    unicode: bool = True,
    extra: Sequence[tuple[State, tuple[str, ...]]] = (),
) -> None:
    """Plain aligned text fitted to ``width`` (``COLUMNS`` in a pipe, as under ``watch``), coloured by
    ``paint`` when given: the cells and layout of the rich table, without rich. Without ``unicode`` (an
    ASCII stdout), a shortened cell is marked with ``~`` instead of ``…``. ``extra``: rows already made
    (UNIX sockets), after the sockets' rows."""
    rows = [row_cells.cells(sock) for sock in sockets] + [cells for _, cells in extra]
    row_states = [sock.state for sock in sockets] + [state for state, _ in extra]
    picked_all = [ALL_KEYS.index(c.key) for c in columns]
    layout = plan_layout(columns, [[r[i] for i in picked_all] for r in rows], width)
    picked = [ALL_KEYS.index(c.key) for c in layout.columns]
    last = len(layout.columns) - 1

    def line(cells: Sequence[str], styles: Sequence[str]) -> str:
        parts = []
        for i, (column, cell) in enumerate(zip(layout.columns, cells, strict=True)):
            pad = layout.widths[i] - len(cell)
            text = cell if i == last else (" " * pad + cell if column.align == "right" else cell + " " * pad)
            parts.append(paint(text, styles[i]) if paint is not None and styles[i] else text)
        text = "  ".join(parts).rstrip()
        return text if unicode else text.replace("…", "~")

    if header:
        titles = [c.title for c in layout.columns]
        out.write(line(titles, ["bold"] * len(titles)) + "\n")
    chunk: list[str] = []
    for state, row in zip(row_states, rows, strict=True):
        cells = fitted_row(row, layout, picked)
        styles = [_row_style(c, state, cell) for c, cell in zip(layout.columns, cells, strict=True)]
        chunk.append(line(cells, styles))
        if len(chunk) >= PLAIN_CHUNK:
            out.write("\n".join(chunk) + "\n")
            chunk.clear()
    if chunk:
        out.write("\n".join(chunk) + "\n")


def print_rich(
    console,
    row_cells: RowCells,
    sockets: Sequence[Socket],
    columns: Sequence[Column],
    width: int | None,
    extra: Sequence[tuple[State, tuple[str, ...]]] = (),
    *,
    header: bool = True,
) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = [row_cells.cells(sock) for sock in sockets] + [cells for _, cells in extra]
    row_states = [sock.state for sock in sockets] + [state for state, _ in extra]
    picked_all = [ALL_KEYS.index(c.key) for c in columns]
    layout = plan_layout(columns, [[r[i] for i in picked_all] for r in rows], width)
    picked = [ALL_KEYS.index(c.key) for c in layout.columns]
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        show_header=header,
        expand=False,
        header_style="bold",
        padding=(0, GAP // 2),
        collapse_padding=True,
    )
    for column, column_width in zip(layout.columns, layout.widths, strict=True):
        table.add_column(column.title, justify=column.align, no_wrap=True, width=column_width)  # type: ignore[arg-type]
    for state, row in zip(row_states, rows, strict=True):
        cells = fitted_row(row, layout, picked)
        table.add_row(
            *(Text(text, style=_row_style(c, state, text)) for c, text in zip(layout.columns, cells, strict=True))
        )
    console.print(table, crop=False)
