"""The hot paths (plain table writer, process join, JSON writer) give exactly what the simple code gives.

The simple reference of each lives here or beside it: :func:`reference_row` (a table row built from the
formatting functions of :mod:`portscope.model.notation`), :func:`socket_object` (used by who and can-bind),
and a direct readlink walk of /proc.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Sequence

import pytest

from netns_util import new_netns
from portscope.commands.names import Names
from portscope.engine.parallel import IN_PROCESS, Parallelism
from portscope.engine.snapshot import snapshot
from portscope.model.notation import STATE_LABELS, format_endpoint, proto_label
from portscope.model.query import PortRange, Query
from portscope.model.records import (
    Family,
    Holder,
    JoinReport,
    Process,
    Proto,
    Snapshot,
    Socket,
    State,
    UnixSocket,
    UnixType,
)
from portscope.render import jsonout, splitwriter
from portscope.render.table import (
    ALL_KEYS,
    BASE_COLUMNS,
    PLAIN_CHUNK,
    Column,
    RowCells,
    columns_for_width,
    command_text,
    compact_holders,
    plain_layout,
    table_order,
    with_namespace_column,
    write_plain,
)
from portscope.sources import fdscan
from portscope.sources.fdscan import BackgroundWalk, FdScan, walk_socket_fds
from portscope.sources.services import load_services, parse_services
from socket_mix import build_mix

pytestmark = pytest.mark.live

SERVICES = parse_services("http 80/tcp\ndomain 53/udp\nx11 6000/tcp\nkvp 7001/tcp\n", "test")


def names_with(services) -> Names:
    from portscope.sources.procinfo import user_name

    return Names(services=services, caller_is_root=True, lookup_user=user_name)


def reference_row(snap: Snapshot, names: Names, sock: Socket) -> dict[str, str]:
    """A table row the obvious way: each cell from the formatting functions, one socket at a time."""

    def endpoint(address: str | None, port: int | None, local: bool) -> str:
        text = format_endpoint(address, port, sock.family, sock.interface if local else None)
        service = names.services.name_of(port, sock.proto) if names.services is not None and port is not None else None
        return f"{text} ({service})" if service else text

    holders = snap.holders_of(sock)
    if holders:
        process = compact_holders(holders)
        command = command_text(holders[0].process.cmdline, holders[0].process.name)
    elif sock.inode is not None and snap.join.joined:
        process = "(hidden)" if sock.inode in snap.join.hidden_inodes else "-"
        command = ""
    else:
        process = command = ""
    return {
        # a [::] socket without IPV6_V6ONLY takes IPv4 too: tcp46, udp46
        "proto": proto_label(sock.proto, sock.family)
        if not (sock.v6only is False and sock.local_address == "::")
        else sock.proto.value + "46",
        "state": STATE_LABELS[sock.state],
        "recv_q": "-" if sock.recv_q is None else str(sock.recv_q),
        "send_q": "-" if sock.send_q is None else str(sock.send_q),
        "local": endpoint(sock.local_address, sock.local_port, True),
        "peer": endpoint(sock.remote_address, sock.remote_port, False),
        "user": names.user(sock.uid) if sock.uid is not None else "-",
        "process": process,
        "command": command,
        "netns": "",  # filled only when several namespaces are shown (test_netns_all)
    }


def sort_key(sock: Socket):
    """The table order the obvious way: listeners first, then TCP before UDP, by local port, IPv4 first, by address."""
    listening = (State.LISTEN, State.UNCONN, State.BOUND)
    return (sock.state not in listening, sock.proto.value, sock.local_port, sock.family.value, sock.local_address)


def reference_plain(snap: Snapshot, names: Names, sockets: Sequence[Socket], columns: Sequence[Column]) -> str:
    """The obvious layout: every row from reference_row, ljust/rjust, two spaces, trailing blanks cut."""
    rows = [[reference_row(snap, names, s)[c.key] for c in columns] for s in sockets]
    widths = [max([len(c.title)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells):
        last = len(columns) - 1
        parts = [
            cell if i == last else cell.rjust(widths[i]) if columns[i].align == "right" else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "".join(line(cells) + "\n" for cells in [[c.title for c in columns], *rows])


def plain(snap: Snapshot, services, width: int | None) -> tuple[str, str]:
    sockets = sorted(snap.sockets, key=sort_key)
    columns = columns_for_width(width)
    out = io.StringIO()
    write_plain(out, RowCells(snap, names_with(services)), sockets, columns)
    return out.getvalue(), reference_plain(snap, names_with(services), sockets, columns)


def test_rich_table_cells_are_the_reference_rows(shared_mix):
    snap = snapshot(Query(states=frozenset(State), netns=shared_mix.ns.name))
    names = names_with(load_services())
    cells = RowCells(snap, names).cells
    for sock in snap.sockets:
        assert dict(zip(ALL_KEYS, cells(sock), strict=True)) == reference_row(snap, names, sock)


def proc_walk_holders(inodes: set[int]) -> dict[int, list[tuple[int, tuple[int, ...]]]]:
    """inode -> [(pid, fds)] by reading every /proc/<pid>/fd link one at a time."""
    found: dict[int, dict[int, list[int]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                found.setdefault(int(target[8:-1]), {}).setdefault(int(name), []).append(int(fd))
    return {inode: sorted((pid, tuple(sorted(fds))) for pid, fds in by_pid.items()) for inode, by_pid in found.items()}


@pytest.fixture(scope="module")
def shared_mix():
    """The mixed sockets, each held twice: by this process and by a forked child (plus a dup'ed fd)."""
    with new_netns("psfast") as ns:
        mix = build_mix(ns, base=7000)
        extra = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        extra.bind(("127.0.0.1", 7020))
        extra.listen(4)
        dup = os.dup(extra.fileno())  # the same socket at two fds of one process
        try:
            ns.fork_holder()
            yield mix
        finally:
            os.close(dup)


def test_join_finds_every_holder_and_fd(shared_mix):
    snap = snapshot(Query(states=frozenset(State), netns=shared_mix.ns.name))
    inodes = {s.inode for s in snap.sockets if s.inode is not None}
    expected = proc_walk_holders(inodes)
    got = {inode: [(h.process.pid, h.fds) for h in holders] for inode, holders in snap.holders.items()}
    assert got == expected
    assert any(len(holders) >= 2 for holders in snap.holders.values())
    assert any(len(h.fds) >= 2 for holders in snap.holders.values() for h in holders)
    # one Process record per pid
    by_pid = {h.process.pid: h.process for hs in snap.holders.values() for h in hs}
    assert all(h.process is by_pid[h.process.pid] for hs in snap.holders.values() for h in hs)


@pytest.mark.parametrize("width", [None, 80, 120, 200])
@pytest.mark.parametrize("named", [False, True])
def test_plain_writer_equals_the_row_layout(shared_mix, width, named):
    snap = snapshot(Query(states=frozenset(State), netns=shared_mix.ns.name))
    services = load_services() if named else None
    fast, reference = plain(snap, services, width)
    assert fast == reference
    assert len(fast.splitlines()) == len(snap.sockets) + 1


def make_socket(**fields) -> Socket:
    base = dict(
        proto=Proto.TCP, family=Family.IPV4, state=State.LISTEN, local_address="0.0.0.0", local_port=80,
        remote_address=None, remote_port=None, recv_q=0, send_q=0, uid=0, inode=None, ifindex=0, interface=None,
        v6only=None, timer=None, timer_ms=None, netns=1,
    )  # fmt: skip
    return Socket(**(base | fields))


def test_plain_writer_without_join_and_with_hidden_owners():
    sockets = (
        make_socket(proto=Proto.UDP, family=Family.IPV6, state=State.UNCONN, local_address="fe80::1", local_port=53,
                    recv_q=None, send_q=None, inode=11, ifindex=2, interface="eth0", v6only=True),
        make_socket(state=State.TIME_WAIT, local_address="10.0.0.1", local_port=6000, remote_address="10.0.0.2",
                    remote_port=80, uid=None, timer="timewait", timer_ms=500),
        make_socket(send_q=4096, inode=12),
        make_socket(state=State.ESTABLISHED, local_port=6001, remote_address="10.0.0.9", remote_port=80, recv_q=4096,
                    send_q=0, inode=14),  # a queue length seen before, in the other column
        make_socket(family=Family.IPV6, state=State.ESTABLISHED, local_address="::ffff:10.0.0.1", local_port=7001,
                    remote_address="::1", remote_port=6000, recv_q=12345, send_q=9, uid=4242, inode=13),
    )  # fmt: skip
    worker = Process(20, 1, "work\ter", 0, "root", ("srv", "-x\x1b"), None)
    others = [Process(pid, 1, "srv", 0, "root", ("srv",), None) for pid in (21, 22, 23)]
    holders = {12: tuple(Holder(p, (3 + i,)) for i, p in enumerate([worker, *others]))}
    for joined in (True, False):
        report = JoinReport(joined=joined, hidden_inodes=frozenset({13}))
        snap = Snapshot(sockets, holders if joined else {}, (), report, 1, None)
        for width in (None, 80, 200):
            fast, reference = plain(snap, SERVICES, width)
            assert fast == reference
            assert "\x1b" not in fast and "\t" not in fast
            assert ("(hidden)" in fast) is joined


class CellsOnly:
    """A RowCells without write_rows: write_plain formats each row's cells with "%" (the simple twin)."""

    def __init__(self, row_cells: RowCells) -> None:
        self.cells, self.measure = row_cells.cells, row_cells.measure


def row_cases() -> tuple[tuple[Socket, ...], dict[int, tuple[Holder, ...]]]:
    """Every case of a row's parts: families, dual-stack, devices, missing ends, named ports of both
    protocols, queues, users, several holders, hidden and unowned sockets, two namespaces."""
    sockets = (
        make_socket(family=Family.IPV6, local_address="::", local_port=80, v6only=False, inode=21),  # tcp46
        make_socket(family=Family.IPV6, local_address="::", local_port=6000, v6only=True, inode=22, netns=2),
        make_socket(proto=Proto.UDP, family=Family.IPV6, state=State.UNCONN, local_address="fe80::1", local_port=53,
                    recv_q=None, send_q=None, inode=23, interface="eth\x1b0", v6only=True),
        make_socket(proto=Proto.UDP, state=State.ESTABLISHED, local_port=53, remote_address="10.0.0.5",
                    remote_port=53, inode=24, uid=4242),
        make_socket(state=State.ESTABLISHED, local_address="10.0.0.1", local_port=44000, remote_address="10.0.0.2",
                    remote_port=80, recv_q=123456, send_q=7, inode=25, interface="lo"),
        make_socket(family=Family.IPV6, state=State.ESTABLISHED, local_address="::ffff:10.0.0.1",
                    local_port=7001, remote_address="::1", remote_port=6000, inode=26, netns=2),
        make_socket(state=State.TIME_WAIT, local_address="10.0.0.1", local_port=5, remote_address="10.0.0.9",
                    remote_port=0, uid=None),
        make_socket(state=State.SYN_SENT, local_port=9, remote_address=None, remote_port=80, inode=27),
        make_socket(state=State.BOUND, local_address=None, local_port=None, inode=28),
        make_socket(proto=Proto.UDP, state=State.UNCONN, local_port=53, inode=29),  # no holder seen: "-"
    )  # fmt: skip
    worker = Process(20, 1, "work\ter", 0, "root", ("/usr/bin/python3", "-u", "-m", "http.server"), None)
    others = [Process(pid, 1, "srv", 0, "root", ("srv", "-x\x1b"), None) for pid in (21, 22, 23)]
    holders = {
        21: (Holder(worker, (3,)),),
        22: tuple(Holder(p, (4 + i,)) for i, p in enumerate([worker, *others])),
        23: (Holder(others[0], (5,)),),
        24: (Holder(others[1], (6, 7)),),
        25: (Holder(worker, (8,)), Holder(others[2], (9,))),
        26: (Holder(others[2], (10,)),),
        27: (Holder(worker, (11,)),),
    }
    return sockets, holders


@pytest.mark.parametrize("full_holders", [False, True])
def test_row_writer_equals_the_cells_formatted_one_by_one(full_holders):
    sockets, holders = row_cases()
    names = names_with(SERVICES)
    layouts = [
        columns_for_width(None),
        BASE_COLUMNS,
        with_namespace_column(columns_for_width(None), sockets),
        (BASE_COLUMNS[4], BASE_COLUMNS[5], BASE_COLUMNS[7]),  # endpoints first, then only the process
        (BASE_COLUMNS[1], BASE_COLUMNS[0], BASE_COLUMNS[4], BASE_COLUMNS[5], BASE_COLUMNS[8], BASE_COLUMNS[6]),
        (BASE_COLUMNS[0], BASE_COLUMNS[5], BASE_COLUMNS[4], BASE_COLUMNS[6]),  # not the row writer's layout
        (BASE_COLUMNS[0], BASE_COLUMNS[4], BASE_COLUMNS[5]),  # nothing after the endpoints: neither
    ]
    for joined in (True, False):
        report = JoinReport(joined=joined, hidden_inodes=frozenset({28}))
        snap = Snapshot(sockets, holders if joined else {}, (), report, 1, None)
        written = []
        for columns in layouts:
            namespaces = columns[0].key == "netns"
            cells = RowCells(snap, names, namespaces=namespaces, full_holders=full_holders)
            fast, simple = io.StringIO(), io.StringIO()
            write_plain(fast, cells, sockets, columns)
            twin = RowCells(snap, names, namespaces=namespaces, full_holders=full_holders)
            write_plain(simple, CellsOnly(twin), sockets, columns)  # type: ignore[arg-type]
            assert fast.getvalue() == simple.getvalue()
            assert len(fast.getvalue().splitlines()) == len(sockets) + 1
            written.append(fast.getvalue())
        assert ("(hidden)" in written[0]) is joined and "tcp46" in written[0] and "%eth\\x1b0" in written[0]
    assert plain_layout([c.key for c in columns_for_width(None)]) == 4
    assert plain_layout([c.key for c in layouts[5]]) is None and plain_layout([c.key for c in layouts[6]]) is None


def test_row_writer_in_chunks_with_every_row():
    """More rows than a chunk: every line written once, in order."""
    sockets = tuple(
        make_socket(state=State.ESTABLISHED, local_address=f"10.0.{n // 250}.{n % 250}", local_port=1024 + n,
                    remote_address="10.1.0.1", remote_port=443, recv_q=n % 3, inode=1000 + n)
        for n in range(2 * PLAIN_CHUNK + 17)
    )  # fmt: skip
    snap = Snapshot(sockets, {}, (), JoinReport(joined=True), 1, None)
    fast, simple = io.StringIO(), io.StringIO()
    names = names_with(load_services())
    write_plain(fast, RowCells(snap, names), table_order(sockets), columns_for_width(None))
    write_plain(simple, CellsOnly(RowCells(snap, names)), table_order(sockets), columns_for_width(None))  # type: ignore[arg-type]
    assert fast.getvalue() == simple.getvalue()
    assert fast.getvalue().count("\n") == len(sockets) + 1 and "(https)" in fast.getvalue()


def test_missing_addresses_with_named_ports_set_the_widths():
    """ "*" and a service name as the widest endpoint of its column (the measure's rare branch)."""
    sockets = (
        make_socket(state=State.SYN_SENT, local_address=None, local_port=80, remote_address=None, remote_port=6000),
        make_socket(state=State.SYN_SENT, local_address="1.2.3.4", local_port=9, remote_port=80),
    )
    snap = Snapshot(sockets, {}, (), JoinReport(joined=False), 1, None)
    fast, reference = io.StringIO(), reference_plain(snap, names_with(SERVICES), sockets, columns_for_width(None))
    write_plain(fast, RowCells(snap, names_with(SERVICES)), sockets, columns_for_width(None))
    assert fast.getvalue() == reference
    assert "  * (http)   * (x11)   root\n" in fast.getvalue()  # both columns as wide as their "* (http)"


def test_table_order_of_varied_sockets():
    sockets, _ = row_cases()
    mixed = [s for s in sockets if s.local_port is not None]
    mixed += [make_socket(proto=Proto.UDP, local_port=1), make_socket(local_port=80, local_address="0.0.0.0")]
    mixed += [make_socket(state=State.CLOSE_WAIT, local_port=80, local_address=a) for a in ("10.0.0.3", "10.0.0.20")]
    assert table_order(mixed) == sorted(mixed, key=sort_key)
    assert table_order(list(reversed(mixed))) == sorted(reversed(mixed), key=sort_key)


def test_json_writer_equals_socket_objects(shared_mix):
    snap = snapshot(Query(states=frozenset(State), netns=shared_mix.ns.name))
    for services in (None, load_services(), SERVICES):
        out = io.StringIO()
        jsonout.write_sockets(out, snap, services)
        expected = [jsonout.socket_object(s, snap.holders_of(s), services) for s in snap.sockets]
        assert json.loads(out.getvalue()) == expected


def as_lists(found: fdscan.Found) -> list[tuple[int, list[int], list[int]]]:
    """A walk's result with its fds as a list (a shared walk keeps them as C ints: ``array("i")``)."""
    return [(pid, inodes, list(fds)) for pid, inodes, fds in found]


def test_walk_in_two_processes_equals_the_walk_in_one(shared_mix):
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    wanted = {s.inode: s.inode for s in snap.sockets if s.inode is not None}
    serial = walk_socket_fds(wanted, "/proc", FdScan())
    parallel = walk_socket_fds(wanted, "/proc", FdScan(), split=lambda fd_count: True)
    assert as_lists(parallel) == as_lists(serial) and len(serial) >= 2  # this process and the forked holder
    assert all(i is wanted[i] for _, inodes, _ in parallel for i in inodes)  # the caller's own inode objects


def test_walk_for_a_few_sockets_equals_the_general_walk(shared_mix):
    """who's walk matches whole link texts for a few wanted sockets; its twin parses every link."""
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    inodes = [s.inode for s in snap.sockets if s.inode is not None]
    listed = fdscan._list_fds("/proc", FdScan())
    everything, _ = fdscan._read_links(listed, None, "/proc")
    holders_found = 0
    for chosen in (inodes[:1], inodes[:3], inodes[-2:], [1]):  # 1: an inode no socket has
        wanted = {i: i for i in chosen}
        assert fdscan._by_link(wanted) is not None
        few, _ = fdscan._read_links(listed, wanted, "/proc")
        expected = []
        for pid, held, fds in everything:
            kept = [(i, fd) for i, fd in zip(held, fds, strict=True) if i in wanted]
            if kept:
                expected.append((pid, [i for i, _ in kept], [fd for _, fd in kept]))
        assert few == expected
        assert all(i is wanted[i] for _, held, _ in few for i in held)
        holders_found += len(few)
    assert holders_found > 0  # the comparison saw some holders
    assert fdscan._by_link({i: i for i in range(fdscan.FEW_WANTED + 1)}) is None  # many: the general loop


def test_units_cut_the_fds_in_order(monkeypatch):
    monkeypatch.setattr(fdscan, "UNIT_FDS", 4)
    listed = [("1", ["0", "1"]), ("7", [str(n) for n in range(10)]), ("9", ["3"])]
    units = fdscan._units(listed)
    assert [len(names) for _, names in units] == [2, 4, 4, 2, 1]
    assert [pid for pid, _ in units] == ["1", "7", "7", "7", "9"]  # the big process is shared among units
    flat = [(p, n) for p, names in units for n in names]
    assert flat == [(p, n) for p, names in listed for n in names]


def test_kept_sockets_equals_picking_them_one_by_one():
    """The child's tables as the caller's ints: a table wanted whole is kept as it is (the fast path), others
    are picked socket by socket, and a table holding none of them is dropped."""
    wanted = {inode: inode for inode in (int(f"{n}00001") for n in range(1, 9))}
    theirs = [int(f"{n}00001") for n in range(1, 9)]  # equal ints, other objects: as marshal gives them
    found = [
        (10, theirs[:3], [4, 5, 6]),  # every socket wanted
        (11, [theirs[3], 999, theirs[4]], [3, 4, 5]),  # one not wanted
        (12, [998, 997], [3, 4]),  # none wanted
        (13, [], []),  # nothing
        (14, [theirs[5], theirs[5]], [7, 9]),  # one socket, two fds
    ]

    def one_by_one(pid, inodes, fds):
        pairs = [(wanted[i], fd) for i, fd in zip(inodes, fds, strict=True) if i in wanted]
        return (pid, [i for i, _ in pairs], [fd for _, fd in pairs]) if pairs else None

    expected = [kept for table in found if (kept := one_by_one(*table)) is not None]
    kept = fdscan.kept_sockets(found, wanted)
    assert kept == expected
    assert all(inode is wanted[inode] for _, inodes, _ in kept for inode in inodes)  # the caller's own objects
    assert fdscan.kept_sockets(found, None) is found


def test_background_walk_equals_the_walk_in_line(shared_mix):
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    wanted = {s.inode: s.inode for s in snap.sockets if s.inode is not None}
    walk = BackgroundWalk.start()
    assert walk is not None
    try:
        counts = FdScan()
        found = walk.found(wanted, counts)
    finally:
        walk.close()
    assert as_lists(found) == as_lists(walk_socket_fds(wanted, "/proc", FdScan()))
    assert all(i is wanted[i] for _, inodes, _ in found for i in inodes)
    assert counts.scanned > 0


def slow_child_walk(monkeypatch) -> list:
    """Units of two fds, and a walker child slowed down: the parent must take over part of the walk. Returns
    the list the fds the parent read are added to."""
    parent = os.getpid()
    real_read_links = fdscan._read_links
    read_by_parent: list = []

    def read_links(listed, wanted, proc_root, **options):
        if os.getpid() == parent:
            read_by_parent.extend(listed)
        else:
            time.sleep(0.002)
        return real_read_links(listed, wanted, proc_root, **options)

    monkeypatch.setattr(fdscan, "UNIT_FDS", 2)
    monkeypatch.setattr(fdscan, "_read_links", read_links)
    return read_by_parent


def test_background_walk_shared_with_the_parent(shared_mix, monkeypatch):
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    wanted = {s.inode: s.inode for s in snap.sockets if s.inode is not None}
    read_by_parent = slow_child_walk(monkeypatch)
    walk = BackgroundWalk.start()
    assert walk is not None
    try:
        deadline = time.monotonic() + 10
        while not walk._board.published() and time.monotonic() < deadline:
            time.sleep(0.001)
        counts = FdScan()
        found = walk.found(wanted, counts)
    finally:
        walk.close()
    assert read_by_parent, "the parent took no part of the walk"
    assert as_lists(found) == as_lists(walk_socket_fds(wanted, "/proc", FdScan()))
    assert all(i is wanted[i] for _, inodes, _ in found for i in inodes)
    assert len({pid for pid, _, _ in found}) == len(found)  # a process cut into units comes back whole


def child_lists_after(monkeypatch, signal_method: tuple[type, str]) -> tuple[int, int]:
    """The walker child lists the fds only once the parent has called ``signal_method`` (or after 10 s):
    an order fixed by a pipe, not by a sleep on a loaded machine. The pipe's fds are for the caller to close."""
    ready_read, ready_write = os.pipe()
    owner, name = signal_method
    real_method, real_list_fds = getattr(owner, name), fdscan._list_fds

    def method(self, *args, **kwargs):
        with contextlib.suppress(OSError):
            os.write(ready_write, b"go")
        return real_method(self, *args, **kwargs)

    def list_fds(proc_root, counts, skip=None):
        select.select([ready_read], [], [], 10)
        return real_list_fds(proc_root, counts, skip)

    monkeypatch.setattr(owner, name, method)
    monkeypatch.setattr(fdscan, "_list_fds", list_fds)
    return ready_read, ready_write


def test_background_walk_shared_while_the_child_still_lists(shared_mix, monkeypatch):
    """A parent done before the child has listed the fds waits for the list, then reads its share."""
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    wanted = {s.inode: s.inode for s in snap.sockets if s.inode is not None}
    pipe = child_lists_after(monkeypatch, (BackgroundWalk, "_share"))  # the parent asks for the walk first
    read_by_parent = slow_child_walk(monkeypatch)
    walk = BackgroundWalk.start()
    assert walk is not None
    try:
        assert not walk._board.published()
        found = walk.found(wanted, FdScan())
    finally:
        walk.close()
        for fd in pipe:
            os.close(fd)
    monkeypatch.undo()
    assert read_by_parent, "the parent waited for the whole walk"
    assert as_lists(found) == as_lists(walk_socket_fds(wanted, "/proc", FdScan()))


def test_background_walk_told_a_few_wanted_sockets_reports_only_those(shared_mix, monkeypatch):
    """Walking ahead of the dump, the child learns the few wanted inodes from the parent when it knows them."""
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    inodes = [s.inode for s in snap.sockets if s.inode is not None]
    wanted = {inode: inode for inode in inodes[:3]}
    real_kept = fdscan.kept_sockets
    reported = []

    def kept_sockets(found, wanted):
        reported.extend(inode for _, held, _ in found for inode in held)
        return real_kept(found, wanted)

    pipe = child_lists_after(monkeypatch, (fdscan._Board, "tell_wanted"))  # told before the child reads a unit
    monkeypatch.setattr(fdscan, "kept_sockets", kept_sockets)
    monkeypatch.setattr(fdscan._Board, "take_back", lambda self: None)  # the child reads every unit
    walk = BackgroundWalk.start()
    assert walk is not None
    try:
        found = walk.found(wanted, FdScan())
    finally:
        walk.close()
        for fd in pipe:
            os.close(fd)
    monkeypatch.undo()
    assert as_lists(found) == as_lists(walk_socket_fds(wanted, "/proc", FdScan())) and found
    assert all(i is wanted[i] for _, held, _ in found for i in held)
    assert set(reported) == set(wanted)  # the child matched the told inodes only, not every socket


def test_port_query_walks_ahead_and_finds_the_same_holders(shared_mix, monkeypatch):
    """who PORT on a host with many fds: the walk is forked before the dump and matches the in-line walk."""
    started = []
    real_start = BackgroundWalk.start.__func__

    def start(cls, *args, **kwargs):
        started.append(kwargs)
        return real_start(cls, *args, **kwargs)

    monkeypatch.setattr(BackgroundWalk, "start", classmethod(start))
    eager = Parallelism(prefetch_min_sockets=0, split_walk_min_fds=0)
    for port in (7001, 7020, 7006, 7010):  # a listener and its connections, two fds of one socket, v4-mapped, udp
        query = Query(states=frozenset(State), local_ports=(PortRange(port, port),), netns=shared_mix.ns.name)
        started.clear()
        prepared: list[tuple] = []  # who loads psutil there, ls orders its table, while the walker reads /proc
        ahead = snapshot(query, parallelism=eager, meanwhile=lambda sockets, kept=prepared: kept.append(tuple(sockets)))
        assert started and "listed" not in started[0]  # forked ahead: the child lists the fds itself
        assert prepared == [ahead.sockets]  # once, with the walker running, given the sockets to be joined
        alone = snapshot(query, parallelism=IN_PROCESS, meanwhile=lambda sockets, kept=prepared: kept.append(()))
        assert prepared == [ahead.sockets]  # no walker to wait for: the caller's preparation is not run
        assert ahead.holders == alone.holders  # the process counts move with the host's other work
        assert ahead.join.hidden_inodes == alone.join.hidden_inodes == frozenset()
        assert len(ahead.holders) >= 1 and all(len(held) >= 2 for held in ahead.holders.values())  # parent, child


def test_table_order_is_the_readable_order(shared_mix):
    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=shared_mix.ns.name))
    mixed = [*snap.sockets, make_socket(local_port=65535), make_socket(proto=Proto.UDP, local_port=1)]
    assert table_order(mixed) == sorted(mixed, key=sort_key)


def test_json_writer_text_with_hostile_names():
    """Byte for byte what jsonout.dumps (json.dumps, escaped) gives for the socket objects, hostile names too.

    A string holding bytes that are not UTF-8 is given whole in the escaped text form (its ESC as \\x1b too)."""
    hostile = Process(30, 1, "\x1b]0;x\x07\u202e", 4242, "us\udcffer", ("a\u2028b", "\x85\x7f", "日本"), None)
    plain = Process(31, 1, "srv", 0, "root", ("srv", "-x"), None)
    sockets = (
        make_socket(inode=21, ifindex=3, interface="e\x1b[2Jth\udcfe"),
        make_socket(local_port=81, inode=22),
        make_socket(local_port=82, inode=23, timer="keepalive", timer_ms=10),
    )
    holders = {21: (Holder(hostile, (5,)),), 22: (Holder(plain, (6,)), Holder(hostile, ()))}
    snap = Snapshot(sockets, holders, (), JoinReport(joined=True), 1, None)
    out = io.StringIO()
    jsonout.write_sockets(out, snap, SERVICES)
    objects = [jsonout.socket_object(s, snap.holders_of(s), SERVICES) for s in sockets]
    assert out.getvalue() == "[\n" + ",\n".join(jsonout.dumps(o) for o in objects) + "\n]\n"
    assert out.getvalue().encode("utf-8") and all(c.isprintable() or c == "\n" for c in out.getvalue())
    parsed = json.loads(out.getvalue())
    assert parsed[0]["interface"] == "e\\x1b[2Jth\\xfe" and parsed[0]["processes"][0]["user"] == "us\\xffer"
    assert parsed[1]["processes"][1]["cmdline"] == ["a\u2028b", "\x85\x7f", "日本"]
    # printable names: exactly json.dumps of the objects, as before
    plain_snap = Snapshot(sockets[1:], {22: (Holder(plain, (6,)),)}, (), JoinReport(joined=True), 1, None)
    out = io.StringIO()
    jsonout.write_sockets(out, plain_snap, SERVICES)
    objects = [jsonout.socket_object(s, plain_snap.holders_of(s), SERVICES) for s in plain_snap.sockets]
    assert out.getvalue() == "[\n" + ",\n".join(json.dumps(o, ensure_ascii=False) for o in objects) + "\n]\n"


def test_json_writer_text_equals_json_dumps_of_varied_sockets(monkeypatch):
    """The writer's caches (per-state heads, addresses, queue lengths, uids, the end of a plain socket repeated
    from the one before) against json.dumps of socket_object, byte for byte: families, protocols and namespaces
    interleaved, None in every field that may be None, values seen before in other columns, chunk limits."""
    sockets = varied_sockets(400)
    plain = Process(31, 1, "srv", 0, "root", ("srv", "-x"), None)
    holders = {s.inode: (Holder(plain, (6,)),) for s in sockets[::7] if s.inode is not None}
    monkeypatch.setattr(jsonout, "JSON_CHUNK", 16)
    for services in (None, SERVICES):
        for held in ({}, holders):
            snap = Snapshot(tuple(sockets), held, (), JoinReport(joined=bool(held)), 1, None)
            objects = [jsonout.socket_object(s, snap.holders_of(s), services) for s in sockets]
            out = io.StringIO()
            jsonout.write_sockets(out, snap, services)
            assert out.getvalue() == "[\n" + ",\n".join(json.dumps(o, ensure_ascii=False) for o in objects) + "\n]\n"
            lines = io.StringIO()
            jsonout.write_socket_lines(lines, snap, services)
            assert lines.getvalue() == "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
    empty = io.StringIO()
    jsonout.write_sockets(empty, Snapshot((), {}, (), JoinReport(joined=False), 1, None), None)
    assert empty.getvalue() == "[]\n" == json.dumps([]) + "\n"


def varied_sockets(count: int) -> list[Socket]:
    import random

    rng = random.Random(18)
    states = {Proto.TCP: [State.LISTEN, State.ESTABLISHED, State.TIME_WAIT, State.BOUND], Proto.UDP: [State.UNCONN]}
    sockets = []
    for inode in range(1, count):
        proto = rng.choice(list(Proto))
        family = rng.choice(list(Family))
        peer = rng.random() < 0.6
        sockets.append(
            make_socket(
                proto=proto,
                family=family,
                state=rng.choice(states[proto]),
                local_address=rng.choice(["127.0.0.1", "10.0.0.1", "::1", "fe80::1", "::"]),
                local_port=rng.choice([80, 0, 7001, 65535, rng.randrange(65536)]),
                remote_address=rng.choice(["10.0.0.2", "::1", "80"]) if peer else None,
                remote_port=rng.choice([80, 0, 443]) if peer else None,
                recv_q=rng.choice([None, 0, 80, 4096]),
                send_q=rng.choice([None, 0, 80, 1]),
                uid=rng.choice([None, 0, 1, 80, 4242]),
                inode=rng.choice([None, inode]),
                interface=rng.choice([None, None, None, "eth0"]),
                v6only=rng.choice([None, None, True, False]),
                timer=rng.choice([None, None, None, "keepalive", "timewait"]),
                timer_ms=rng.choice([None, 0, 10]),
                netns=rng.choice([None, 1, 1, 4026531840]),
            )
        )
    return sockets


SPLIT_ALWAYS = Parallelism(split_render_min_sockets=0)
UNIX = tuple(
    UnixSocket(UnixType.STREAM, State.ESTABLISHED, path, path is not None and path.startswith("@"), 900 + i,
               901 + i if i % 2 else None, 0, 0, 0, 1)
    for i, path in enumerate(["/run/a.sock", None, "@abstract", "/tmp/x\x1b"])
)  # fmt: skip


def written(tmp_path, write, snap: Snapshot, services, parallelism: Parallelism) -> str:
    path = tmp_path / "out.json"
    with open(path, "w", encoding="utf-8") as out:
        write(out, snap, services, parallelism=parallelism)
    return path.read_text(encoding="utf-8")


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """The forks made by this process from here on (children's pids); a CPU is taken as to spare (the split
    writer's condition beside the socket count), whatever the machine runs meanwhile."""
    from portscope.engine import parallel

    monkeypatch.setattr(parallel, "cpu_to_spare", lambda: True)
    made: list[int] = []
    real_fork = os.fork

    def counted_fork() -> int:
        pid = real_fork()
        if pid:
            made.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counted_fork)
    return made


def test_json_written_by_two_processes_is_the_text_of_one(tmp_path, monkeypatch, forks):
    """The split writer (a child makes and writes the second half) against the writer alone, byte for byte:
    every size around the split, UNIX sockets after the IP ones, holders, services, JSON and JSON Lines."""
    sockets = varied_sockets(300)
    plain = Process(31, 1, "srv", 0, "root", ("srv", "-x"), None)
    holders = {s.inode: (Holder(plain, (6,)),) for s in sockets[::5] if s.inode is not None}
    holders[901] = (Holder(plain, (7,)),)
    monkeypatch.setattr(jsonout, "JSON_CHUNK", 16)
    for count in (0, 1, 2, 3, 33, len(sockets)):
        for unix in ((), UNIX):
            snap = Snapshot(tuple(sockets[:count]), holders, (), JoinReport(joined=True), 1, None, unix_sockets=unix)
            for write in (jsonout.write_sockets, jsonout.write_socket_lines):
                forked = len(forks)
                for services in (None, SERVICES):
                    alone = written(tmp_path, write, snap, services, IN_PROCESS)
                    assert written(tmp_path, write, snap, services, SPLIT_ALWAYS) == alone
                assert len(forks) == forked + (2 if count >= 2 else 0)  # the child made the second half
                parsed = json.loads(alone if write is jsonout.write_sockets else f"[{','.join(alone.splitlines())}]")
                assert len(parsed) == count + len(unix)
    for pid in forks:  # every child was reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_split_writer_without_its_child(tmp_path, monkeypatch, forks):
    """A child that ends before its half is made leaves it to the parent (the same text); a stream without a
    file descriptor, no CPU to spare, or another thread running, and no child is forked."""
    from portscope.engine import parallel

    snap = Snapshot(tuple(varied_sockets(200)), {}, (), JoinReport(joined=False), 1, None, unix_sockets=UNIX)
    alone = written(tmp_path, jsonout.write_sockets, snap, None, IN_PROCESS)

    def dies(*_args) -> None:
        os._exit(1)

    with monkeypatch.context() as patched:
        patched.setattr(splitwriter, "_child_makes", dies)
        assert written(tmp_path, jsonout.write_sockets, snap, None, SPLIT_ALWAYS) == alone
    assert len(forks) == 1
    out = io.StringIO()
    jsonout.write_sockets(out, snap, None, parallelism=SPLIT_ALWAYS)
    assert out.getvalue() == alone
    with monkeypatch.context() as patched:  # no CPU to spare: the child would only take turns with the parent
        patched.setattr(parallel, "cpu_to_spare", lambda: False)
        assert written(tmp_path, jsonout.write_sockets, snap, None, SPLIT_ALWAYS) == alone
    assert len(forks) == 1
    import threading

    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert written(tmp_path, jsonout.write_sockets, snap, None, SPLIT_ALWAYS) == alone
    finally:
        release.set()
        thread.join()
    assert len(forks) == 1


def test_table_written_by_two_processes_is_the_text_of_one(tmp_path, monkeypatch, forks):
    """The plain table with its second half made by a child, against one process, byte for byte: the row
    writer and the cells formatted with "%", every size around the split, rows in several chunks, the header,
    UNIX rows after; a child that ends early leaves its half to the parent (the same text)."""
    from portscope.render import table

    sockets, holders = row_cases()
    sockets = tuple(dataclasses.replace(sock, local_port=port) for port in range(1, 12) for sock in sockets)
    names = names_with(SERVICES)
    monkeypatch.setattr(table, "PLAIN_CHUNK", 4)
    extra = [(State.ESTABLISHED, ("u_str", "ESTAB", "0", "0", "/run/a.sock", "*", "root", "-", "", ""))]

    def table_text(rows, count: int, parallelism: Parallelism) -> str:
        path = tmp_path / "table.txt"
        with open(path, "w", encoding="utf-8") as out:
            write_plain(out, rows, sockets[:count], columns_for_width(None), extra, parallelism=parallelism)
        return path.read_text(encoding="utf-8")

    snap = Snapshot(sockets, holders, (), JoinReport(joined=True, hidden_inodes=frozenset({28})), 1, None)
    for count in (0, 1, 2, 3, 9, len(sockets)):
        for rows in (RowCells(snap, names), CellsOnly(RowCells(snap, names))):
            forked = len(forks)
            alone = table_text(rows, count, IN_PROCESS)
            assert table_text(rows, count, SPLIT_ALWAYS) == alone
            assert len(forks) == forked + (1 if count >= 2 else 0)
            assert len(alone.splitlines()) == count + 2
    with monkeypatch.context() as patched:
        patched.setattr(splitwriter, "_child_makes", lambda *_args: os._exit(1))
        assert table_text(RowCells(snap, names), len(sockets), SPLIT_ALWAYS) == alone
    for pid in forks:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_split_writer_leaves_to_the_parent_what_the_child_could_not_encode(tmp_path, forks):
    """A stream that cannot encode a name of the child's half (an ASCII file): the child gives up, and the
    parent, making that half itself, raises the error one process meets; the child is reaped."""
    sockets = varied_sockets(40)
    named = Process(32, 1, "日本", 0, "root", ("日本",), None)
    holders = {s.inode: (Holder(named, (3,)),) for s in sockets[30:] if s.inode is not None}
    snap = Snapshot(tuple(sockets), holders, (), JoinReport(joined=True), 1, None)
    with open(tmp_path / "out.json", "w", encoding="ascii") as out, pytest.raises(UnicodeEncodeError):
        jsonout.write_sockets(out, snap, None, parallelism=SPLIT_ALWAYS)
    assert len(forks) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)


def test_split_writer_appends_where_sendfile_cannot(tmp_path, forks):
    """A stream opened to append (sendfile() refuses it): the child's half is copied by read and write, the
    text unchanged after what the file held."""
    snap = Snapshot(tuple(varied_sockets(300)), {}, (), JoinReport(joined=False), 1, None, unix_sockets=UNIX)
    alone = written(tmp_path, jsonout.write_sockets, snap, None, IN_PROCESS)
    path = tmp_path / "appended.json"
    path.write_text("before\n")
    with open(path, "a", encoding="utf-8") as out:
        jsonout.write_sockets(out, snap, None, parallelism=SPLIT_ALWAYS)
    assert len(forks) == 1
    assert path.read_text(encoding="utf-8") == "before\n" + alone


def test_cpu_to_spare_from_the_run_queue_and_the_pressure(tmp_path, monkeypatch):
    """A CPU is to spare when at most as many tasks run as there are CPUs (this process among them); with more,
    when the CPU pressure of the last 10 s is calm; never on one CPU. Unreadable files: the run queue alone, or
    spare when it is unknown."""
    from portscope.engine.parallel import PRESSURE_CALM, cpu_to_spare

    cpus = 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    loadavg, pressure = tmp_path / "loadavg", tmp_path / "cpu"

    def spare(running: int, avg10: float | None) -> bool:
        loadavg.write_text(f"0.52 0.58 0.59 {running}/467 1234\n")
        if avg10 is None:
            pressure.unlink(missing_ok=True)
        else:
            pressure.write_text(
                f"some avg10={avg10:.2f} avg60=6.62 avg300=16.33 total=22377142700\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            )
        return cpu_to_spare(str(loadavg), str(pressure))

    calm, busy = PRESSURE_CALM / 2, PRESSURE_CALM * 2
    assert spare(cpus - 1, busy) is True  # a CPU free right now: whatever the pressure said
    assert spare(cpus, busy) is True  # others on all CPUs but this one's: the helper shares one with them
    assert spare(cpus, None) is True
    assert spare(cpus + 1, calm) is True  # more at this instant, passing
    assert spare(cpus + 1, busy) is False
    assert spare(cpus + 1, None) is False
    loadavg.write_text("garbage\n")
    assert cpu_to_spare(str(loadavg), str(pressure)) is True
    assert cpu_to_spare(str(tmp_path / "missing"), str(pressure)) is True
    cpus = 1  # a helper would only take turns with this process
    assert spare(1, calm) is False
    monkeypatch.undo()
    assert isinstance(cpu_to_spare(), bool)  # this system's


def test_split_writer_reports_a_reader_gone_as_a_closed_pipe(forks):
    """The reader goes away while the child's half is passed on: the parent raises BrokenPipeError, as one
    process writing it all would (the CLI's closed-pipe handling), and the child is reaped."""
    snap = Snapshot(tuple(varied_sockets(4000)), {}, (), JoinReport(joined=False), 1, None)
    text = io.StringIO()
    jsonout.write_sockets(text, snap, None, parallelism=IN_PROCESS)
    keep = len(text.getvalue().encode()) * 3 // 4  # past the parent's half: sendfile() meets the closed pipe
    reader = subprocess.Popen(["head", "-c", str(keep)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        out = io.TextIOWrapper(reader.stdin, encoding="utf-8")
        with pytest.raises(BrokenPipeError):
            jsonout.write_sockets(out, snap, None, parallelism=SPLIT_ALWAYS)
        assert len(forks) == 1
        with pytest.raises(ChildProcessError):
            os.waitpid(forks[0], os.WNOHANG)
    finally:
        with contextlib.suppress(OSError):
            reader.stdin.close()
        reader.wait(timeout=10)


@pytest.mark.parametrize("width", [None, 100])
def test_table_prepared_while_the_walker_runs_is_the_table_made_after(shared_mix, width):
    """ls hands a TablePrep to snapshot(meanwhile=...): the order and the endpoint widths made before the join
    give the table made from the finished snapshot, and a snapshot with fewer sockets (a filter on the
    holders) gets its own order and widths."""
    from portscope.render.environment import Environment
    from portscope.render.ls import TablePrep, render_listing

    eager = Parallelism(prefetch_min_sockets=0, split_walk_min_fds=0)
    names = names_with(load_services())

    def table(snap: Snapshot, prepared: TablePrep | None) -> str:
        out = io.StringIO()
        env = Environment(
            stdout=out, stderr=None, is_tty=False, colour=False, width=width, unicode=True, encoding="utf-8"
        )
        render_listing(snap, env, names, as_json=False, prepared=prepared)
        return out.getvalue()

    query = Query(states=frozenset(State), netns=shared_mix.ns.name)
    prepared = TablePrep(names, widths=width is None)
    snap = snapshot(query, parallelism=eager, meanwhile=prepared)
    assert prepared.order is not None and (prepared.endpoints is not None) == (width is None)
    assert table(snap, prepared) == table(snap, None)
    assert len(table(snap, None).splitlines()) == len(snap.sockets) + 1

    # fewer sockets than were prepared: the longest endpoints gone, so the widths must not be kept
    longest = max(snap.sockets, key=lambda s: len(s.local_address) + len(s.remote_address or ""))
    fewer = dataclasses.replace(snap, sockets=tuple(s for s in snap.sockets if s is not longest))
    stale = TablePrep(names, widths=width is None)
    stale(snap.sockets)
    assert table(fewer, stale) == table(fewer, None)
