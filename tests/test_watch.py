"""watch and wait without a live system: the diff engine, what destroy notifications may stand for, the
live view's board, JSON lines, the command line's options and its process-wide settings, long runs."""

from __future__ import annotations

import gc
import io
import json
import re
import signal
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from portscope.cli import cli, main
from portscope.cli.options import BIND_OPTION_NAMES
from portscope.cli.watch import LS_OUTPUT_OPTIONS
from portscope.commands.ls import LsOptions
from portscope.commands.names import Names
from portscope.commands.watch import (
    Change,
    Origin,
    Seen,
    SocketDiff,
    WatchEvent,
    WatchUpdate,
    as_destroyed,
    destroyed_matches,
    socket_identity,
    watch_query,
)
from portscope.model.query import PortRange, Query
from portscope.model.records import Family, Holder, JoinReport, Process, Proto, Snapshot, Socket, State
from portscope.render import jsonout
from portscope.render.environment import Environment
from portscope.render.watch import Board, JsonLines, LiveView, Mark, event_object, iso_time
from portscope.sources.services import parse_services

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def sock(
    port: int,
    cookie: int | None,
    state: State = State.LISTEN,
    proto: Proto = Proto.TCP,
    *,
    inode: int | None = None,
    remote: tuple[str, int] | None = None,
    uid: int = 0,
    recv_q: int = 0,
) -> Socket:
    return Socket(
        proto=proto,
        family=Family.IPV4,
        state=state,
        local_address="127.0.0.1",
        local_port=port,
        remote_address=remote[0] if remote else None,
        remote_port=remote[1] if remote else None,
        recv_q=recv_q,
        send_q=0,
        uid=uid,
        inode=inode if inode is not None else 1000 + port,
        ifindex=0,
        interface=None,
        v6only=None,
        timer=None,
        timer_ms=None,
        netns=4026531840,
        cookie=cookie,
    )


def process(pid: int, name: str = "server") -> Process:
    return Process(pid=pid, ppid=1, name=name, uid=0, user="root", cmdline=(name, "--port"), start_time=1000.0 + pid)


def snap(*sockets: Socket, holders: dict[int, tuple[Holder, ...]] | None = None) -> Snapshot:
    return Snapshot(
        sockets=tuple(sockets),
        holders=holders or {},
        sources=(),
        join=JoinReport(joined=True),
        netns=None,
        bound_visible=None,
    )


def kinds(events: list[WatchEvent]) -> list[tuple[str, int]]:
    return [(e.change.value, e.seen.socket.local_port) for e in events]


# ---------------------------------------------------------------------------------------------------
# The diff engine


def test_first_scan_appears_then_diffs() -> None:
    diff = SocketDiff()
    a, b = sock(80, 1), sock(443, 2)
    assert kinds(diff.update(snap(a, b), 1.0)) == [("appeared", 80), ("appeared", 443)]
    assert diff.update(snap(a, b), 2.0) == []
    c = sock(8080, 3)
    events = diff.update(snap(b, c), 3.0)
    assert kinds(events) == [("vanished", 80), ("appeared", 8080)]
    assert all(e.time == 3.0 and e.origin is Origin.POLL and e.before is None for e in events)
    assert events[0].seen.socket is a  # as last seen


def test_first_scan_can_be_silent() -> None:
    diff = SocketDiff()
    assert diff.update(snap(sock(80, 1)), 1.0, report=False) == []
    assert kinds(diff.update(snap(sock(81, 2)), 2.0)) == [("vanished", 80), ("appeared", 81)]


def test_holder_and_state_changes_but_not_queues() -> None:
    diff = SocketDiff()
    listener = sock(80, 7)
    parent, child = Holder(process(100), (3,)), Holder(process(101), (3,))
    diff.update(snap(listener, holders={listener.inode: (parent,)}), 1.0)
    busy = sock(80, 7, recv_q=12)  # an accept queue filling is no event
    assert diff.update(snap(busy, holders={listener.inode: (parent,)}), 2.0) == []
    forked = diff.update(snap(busy, holders={listener.inode: (parent, child)}), 3.0)
    [changed] = forked
    assert changed.change is Change.CHANGED
    assert [h.process.pid for h in changed.seen.holders] == [100, 101]
    assert changed.before is not None and [h.process.pid for h in changed.before.holders] == [100]
    [exited] = diff.update(snap(busy, holders={listener.inode: (child,)}), 4.0)
    assert [h.process.pid for h in exited.seen.holders] == [101]
    # a pid reused by another process is another holder
    reused = Holder(Process(101, 1, "server", 0, "root", (), 5.0), (3,))
    assert kinds(diff.update(snap(busy, holders={listener.inode: (reused,)}), 5.0)) == [("changed", 80)]
    # the same cookie in another state: the same socket, changed
    closing = sock(80, 7, State.CLOSE_WAIT, remote=("10.0.0.1", 5000))
    [state_change] = diff.update(snap(closing), 6.0)
    assert state_change.change is Change.CHANGED and state_change.before.socket.state is State.LISTEN


def test_identity_without_cookie() -> None:
    a = sock(80, None, State.ESTABLISHED, remote=("10.0.0.1", 40000))
    assert socket_identity(a) == socket_identity(sock(80, None, State.ESTABLISHED, remote=("10.0.0.1", 40000)))
    # /proc gives no cookie: another state is another socket
    assert socket_identity(a) != socket_identity(sock(80, None, State.CLOSE_WAIT, remote=("10.0.0.1", 40000)))
    assert socket_identity(sock(80, 5)) == 5
    diff = SocketDiff()
    diff.update(snap(a), 1.0)
    b = sock(80, None, State.CLOSE_WAIT, remote=("10.0.0.1", 40000))
    assert kinds(diff.update(snap(b), 2.0)) == [("vanished", 80), ("appeared", 80)]


def test_short_lived_only_for_sockets_no_scan_saw() -> None:
    diff = SocketDiff()
    seen_now, seen_before = sock(80, 1), sock(81, 2)
    diff.update(snap(seen_now, seen_before), 1.0)
    diff.update(snap(seen_now), 2.0)  # 81 vanished in this scan: its notification may come late
    brief = sock(82, 3, State.BOUND, inode=0)
    events = diff.short_lived([seen_now, seen_before, brief], 2.5)
    assert kinds(events) == [("appeared", 82), ("vanished", 82)]
    assert all(e.origin is Origin.DESTROY for e in events)
    reported = events[0].seen.socket
    assert reported.state is State.CLOSE and reported.inode is None and reported.recv_q is None
    assert reported.uid is None  # the notification leaves it at 0: a placeholder
    assert events[0].seen.holders == ()
    # two scans later a late notification about 81 is still recognised
    diff.update(snap(seen_now), 3.0)
    assert diff.short_lived([seen_before], 3.5) == []
    diff.update(snap(seen_now), 4.0)
    assert kinds(diff.short_lived([seen_before], 4.5)) == [("appeared", 81), ("vanished", 81)]


def test_destroyed_sockets_match_the_watch_query() -> None:
    listeners = watch_query(LsOptions())
    assert listeners.states == frozenset({State.LISTEN, State.UNCONN})
    tcp_no_peer = sock(8080, 1, State.BOUND)  # how a closed listener arrives
    assert destroyed_matches(listeners, tcp_no_peer)
    connection = sock(8080, 2, State.BOUND, remote=("10.0.0.1", 443))
    assert not destroyed_matches(listeners, connection)
    assert destroyed_matches(watch_query(LsOptions(states=("connected",))), connection)
    assert destroyed_matches(watch_query(LsOptions(all_states=True)), connection)
    udp = sock(53, 3, State.UNCONN, Proto.UDP)
    assert destroyed_matches(listeners, udp)
    assert not destroyed_matches(watch_query(LsOptions(tcp=True)), udp)
    assert not destroyed_matches(watch_query(LsOptions(sport=("9000-9100",))), tcp_no_peer)
    assert destroyed_matches(watch_query(LsOptions(sport=("8000-9000",))), tcp_no_peer)
    assert not destroyed_matches(watch_query(LsOptions(src=("10.0.0.0/8",))), tcp_no_peer)
    assert not destroyed_matches(watch_query(LsOptions(users=("0",))), tcp_no_peer)  # its uid is unknown
    # its holder is gone: a query about processes cannot match it
    assert not destroyed_matches(watch_query(LsOptions(pids=("1",))), tcp_no_peer)
    assert not destroyed_matches(Query(states=frozenset({State.ESTABLISHED})), tcp_no_peer)
    assert as_destroyed(udp).state is State.UNCONN and as_destroyed(tcp_no_peer).state is State.CLOSE


def test_watch_query_keeps_explicit_states() -> None:
    assert watch_query(LsOptions(all_states=True)).states == frozenset(State)
    assert watch_query(LsOptions(states=("established",))).states == frozenset({State.ESTABLISHED})
    assert watch_query(LsOptions(sport=("80",))).local_ports == (PortRange(80, 80),)


# ---------------------------------------------------------------------------------------------------
# JSON lines


def names() -> Names:
    return Names(services=parse_services("http 80/tcp\n"), caller_is_root=True, lookup_user=str, places=None)


def test_event_lines_hold_ls_socket_objects() -> None:
    listener = sock(80, 1)
    holder = Holder(process(100, "nginx\x1b[31m"), (3, 7))
    seen = Seen(listener, (holder,))
    before = Seen(listener, ())
    event = WatchEvent(Change.CHANGED, 1765062651.25, seen, before)
    document = event_object(event, names())
    assert list(document) == ["event", "time", "socket", "before", "source"]
    assert document["time"] == "2025-12-06T23:10:51.250+00:00" == iso_time(1765062651.25)
    listing = io.StringIO()
    jsonout.write_sockets(listing, snap(listener, holders={listener.inode: (holder,)}), names().services)
    assert document["socket"] == json.loads(listing.getvalue())[0]  # the object ls --json writes
    assert document["before"]["processes"] == [] and document["source"] == "poll"
    assert "before" not in event_object(WatchEvent(Change.APPEARED, 1.0, seen), names())


def test_json_lines_are_written_and_flushed_one_by_one() -> None:
    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushes: list[str] = []

        def flush(self) -> None:
            self.flushes.append(self.getvalue())

    out, err = Recorder(), io.StringIO()
    env = Environment(stdout=out, stderr=err, is_tty=False, colour=False, width=None, unicode=True, encoding="utf-8")
    writer = JsonLines(env, names())
    events = (WatchEvent(Change.APPEARED, 1.0, Seen(sock(80, 1))), WatchEvent(Change.VANISHED, 1.0, Seen(sock(81, 2))))
    update = WatchUpdate(1.0, events, snap(sock(80, 1)), 1)
    writer.show(replace_warnings(update, ("bound-only TCP sockets cannot be listed here",)))
    writer.show(replace_warnings(update, ("bound-only TCP sockets cannot be listed here",)))
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["appeared", "vanished"] * 2
    assert len(out.flushes) == 4 and out.flushes[0].count("\n") == 1  # each line on its own
    assert err.getvalue().count("bound-only") == 1  # a note is said once


def replace_warnings(update: WatchUpdate, warnings: tuple[str, ...]) -> WatchUpdate:
    from dataclasses import replace

    assert update.snapshot is not None
    return replace(update, snapshot=replace(update.snapshot, warnings=warnings))


def test_readme_documents_the_event_keys() -> None:
    section = README.split("## `portscope watch`", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    document = event_object(WatchEvent(Change.CHANGED, 1.0, Seen(sock(80, 1)), Seen(sock(80, 1))), names())
    assert set(document) == documented
    for word in ("appeared", "vanished", "changed", "poll", "destroy", "--changes-only", "--interval"):
        assert word in section, word
    assert "## `portscope wait" in README


# ---------------------------------------------------------------------------------------------------
# The live view


def board_after(*steps: tuple[Snapshot | None, list[WatchEvent]]) -> Board:
    board = Board(linger=2)
    for scans, (snapshot, events) in enumerate(steps, start=1):
        board.apply(WatchUpdate(float(scans), tuple(events), snapshot, scans))
    return board


def test_board_marks_and_lingers() -> None:
    diff = SocketDiff()
    a, b = sock(80, 1), sock(443, 2)
    first = snap(a)
    second = snap(a, b)
    third = snap(b, holders={b.inode: (Holder(process(7), (3,)),)})
    board = Board(linger=2)
    for number, snapshot in enumerate((first, second), start=1):
        board.apply(WatchUpdate(float(number), tuple(diff.update(snapshot, number)), snapshot, number))
    assert {row.seen.socket.local_port: row.mark for row in board.rows.values()} == {80: None, 443: Mark.NEW}
    board.apply(WatchUpdate(3.0, tuple(diff.update(third, 3.0)), third, 3))
    marks = {row.seen.socket.local_port: row.mark for row in board.rows.values()}
    assert marks == {80: Mark.GONE, 443: Mark.CHANGED}
    brief = diff.short_lived([sock(9000, 99, State.BOUND)], 3.5)
    board.apply(WatchUpdate(3.5, tuple(brief), None, 3))
    assert board.short_lived == 1
    assert Mark.BRIEF in {row.mark for row in board.rows.values()}
    for number in (4, 5):
        board.apply(WatchUpdate(float(number), tuple(diff.update(third, number)), third, number))
    # after lingering: vanished rows are dropped, marks cleared
    assert {row.seen.socket.local_port: row.mark for row in board.rows.values()} == {443: None}
    assert board.state_counts() == [("tcp LISTEN", 1, 0)]
    assert board.port_counts() == [(80, 0, -1), (443, 1, 1)]


def test_live_view_draws_marks_counts_and_fits_80_columns() -> None:
    diff = SocketDiff()
    holder = Holder(process(4242, "python3"), (3,))
    listener = sock(8080, 1)
    start = snap(sock(22, 5))
    later = snap(sock(22, 5), listener, holders={listener.inode: (holder,)})
    out = io.StringIO()
    env = Environment(stdout=out, stderr=None, is_tty=True, colour=False, width=80, unicode=True, encoding="utf-8")
    view = LiveView(env, names(), title="listeners", interval=1.0)
    for number, snapshot in enumerate((start, later), start=1):
        view.board.apply(WatchUpdate(float(number), tuple(diff.update(snapshot, number)), snapshot, number))
    view.console.print(view.renderable())
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "tcp LISTEN 2 (+1)" in text and "8080 (+1)" in text and "q quits" in text
    [row] = [line for line in lines if "8080" in line and "python3" in line]
    assert row.startswith("+") and "python3[4242]" in row


# ---------------------------------------------------------------------------------------------------
# Long runs: memory stays flat


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def test_ten_thousand_refreshes_keep_memory_flat() -> None:
    """10,000 refreshes of the diff engine, the live view's board and the JSON lines over churning sockets:
    what they keep follows the sockets of the moment, not the time watched."""
    base = [sock(1000 + i, i) for i in range(24)]
    churn = [sock(20000 + i, 100000 + i) for i in range(400)]
    holders = {s.inode: (Holder(process(100 + i % 7), (3 + i,)),) for i, s in enumerate(base + churn)}
    diff = SocketDiff()
    board = Board()
    out = io.StringIO()
    env = Environment(stdout=out, stderr=None, is_tty=False, colour=False, width=None, unicode=True, encoding="utf-8")
    writer = JsonLines(env, names())
    was_enabled = gc.isenabled()
    gc.enable()
    try:

        def refresh(tick: int) -> None:
            moving = churn[tick % 397 : tick % 397 + 2]
            snapshot = snap(*base, *moving, holders=holders)
            events = tuple(diff.update(snapshot, float(tick)))
            update = WatchUpdate(float(tick), events, snapshot, tick, diff.current)  # as Watcher.scan gives it
            board.apply(update)
            writer.show(update)
            out.seek(0)
            out.truncate()
            if tick % 50 == 0:
                brief = diff.short_lived([sock(30000 + tick % 1000, 10**7 + tick, State.BOUND)], float(tick))
                board.apply(WatchUpdate(float(tick), tuple(brief), None, tick))

        started = time.monotonic()
        for tick in range(1000):
            refresh(tick)
        gc.collect()
        before = rss_bytes()
        for tick in range(1000, 10000):
            refresh(tick)
        gc.collect()
        grown = rss_bytes() - before
    finally:
        if not was_enabled:
            gc.disable()
    assert diff.scans == 10000
    assert len(board.rows) <= len(base) + 3 * board.linger + 10
    assert grown < 2 * 1024 * 1024, f"RSS grew by {grown / 1024:.0f} KiB over 9,000 refreshes"
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------------------------------------------
# The command line


def test_watch_takes_every_ls_filter_and_wait_can_binds_options() -> None:
    ctx = click.Context(cli)
    ls, watch, wait, can_bind = (cli.get_command(ctx, name) for name in ("ls", "watch", "wait", "can-bind"))
    ls_options = {p.name for p in ls.params} - LS_OUTPUT_OPTIONS
    assert ls_options <= {p.name for p in watch.params}
    shared = {p.name: p for p in can_bind.params if p.name in BIND_OPTION_NAMES}
    assert set(shared) == set(BIND_OPTION_NAMES)
    for param in wait.params:
        if param.name in shared:
            twin = shared[param.name]
            assert (param.opts, param.secondary_opts, param.help) == (twin.opts, twin.secondary_opts, twin.help)


@pytest.mark.parametrize(
    "args",
    [
        ["watch", "--interval", "0"],
        ["watch", "--interval", "nan"],
        ["watch", "-a", "-l"],
        ["watch", "--state", "nonsense"],
        ["wait", "8080", "--timeout", "-1"],
        ["wait", "8080", "--interval", "0.001"],
        ["wait", "8080", "--reuseaddr"],
        ["wait", "8080", "--user", "root"],
        ["wait", "8000-8100", "--free"],
        ["wait", "8080/tcp", "--udp"],
        ["wait", "8080", "--netns", "all"],
        ["wait", "70000"],
        ["wait", "8080", "-4", "-6"],
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as ended:
        main(args)
    out, err = capsys.readouterr()
    assert ended.value.code == 2, (args, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_watch_turns_gc_on_and_restores_signals(monkeypatch) -> None:
    """The console script turns the collector off for short commands; watch turns it back on for its
    duration, ends on SIGTERM like Ctrl-C (status 0), and leaves the handlers as it found them."""
    from portscope.commands import watch as watch_module

    seen: dict[str, object] = {}

    def updates(self, interval, wake=()):
        seen["gc"] = gc.isenabled()
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        snapshot = snap(sock(80, 1))
        yield WatchUpdate(1.0, tuple(self.diff.update(snapshot, 1.0)), snapshot, 1)
        signal.raise_signal(signal.SIGTERM)
        yield WatchUpdate(2.0, (), snapshot, 2)  # never reached

    monkeypatch.setattr(watch_module.Watcher, "updates", updates)
    monkeypatch.setattr(watch_module.Watcher, "_subscribe", lambda self: None)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    gc.disable()
    try:
        result = CliRunner().invoke(cli, ["watch", "--jsonl"], catch_exceptions=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert result.exit_code == 0, result.output
    assert seen["gc"] is True and seen["sigterm"] not in (signal.SIG_DFL, handlers[signal.SIGTERM])
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    [line] = result.stdout.splitlines()
    assert json.loads(line)["socket"]["local_port"] == 80


def test_a_refused_subscription_is_a_note(monkeypatch) -> None:
    from portscope.commands.watch import Watcher
    from portscope.sources import destroyfeed, netlink

    def refuse(tables, target=None, **options):
        raise netlink.NetlinkUnavailable("cannot join the sock_diag destroy groups: Operation not permitted")

    monkeypatch.setattr(destroyfeed, "DestroyFeed", refuse)
    with Watcher(watch_query(LsOptions())) as watcher:
        assert not watcher.short_lived
        assert watcher.short_lived_note == (
            "sockets that live between two scans are not seen: "
            "cannot join the sock_diag destroy groups: Operation not permitted"
        )
    with Watcher(watch_query(LsOptions(backend="proc"))) as watcher:
        assert not watcher.short_lived and "--backend proc" in (watcher.short_lived_note or "")


def test_changes_only_keeps_the_first_scan_quiet(monkeypatch) -> None:
    from portscope.commands import watch as watch_module

    scans = iter([snap(sock(22, 1)), snap(sock(22, 1), sock(80, 2))])
    monkeypatch.setattr(watch_module, "snapshot", lambda query, proc_root="/proc", places=None: next(scans))
    with watch_module.Watcher(watch_query(LsOptions()), short_lived=False, report_first=False) as watcher:
        first = watcher.scan()
        assert first.events == () and first.scans == 1 and set(first.seen or ()) == {1}
        assert kinds(list(watcher.scan().events)) == [("appeared", 80)]


@pytest.mark.parametrize(("width", "height"), [(40, 10), (80, 24), (200, 50)])
def test_live_view_fits_small_and_large_windows(width: int, height: int) -> None:
    from rich.console import Console

    diff = SocketDiff()
    many = [sock(20000 + i, i, inode=5000 + i) for i in range(30)]
    holders = {s.inode: (Holder(process(300 + i, "a-rather-long-process-name"), (3,)),) for i, s in enumerate(many)}
    out = io.StringIO()
    env = Environment(stdout=out, stderr=None, is_tty=True, colour=True, width=width, unicode=True, encoding="utf-8")
    view = LiveView(env, names(), title="every socket, netns x", interval=0.5, notes=("a note",))
    view.console = Console(file=out, width=width, height=height, force_terminal=True, color_system=None)
    for number, snapshot in enumerate((snap(*many[:10]), snap(*many[5:], holders=holders)), start=1):
        view.board.apply(WatchUpdate(float(number), tuple(diff.update(snapshot, number)), snapshot, number))
    view.console.print(view.renderable())
    lines = out.getvalue().splitlines()
    assert all(len(line) <= width for line in lines), width
    assert len(lines) <= height
    if height < 30:
        assert any("more socket(s) below" in line for line in lines)
    assert lines[-1].endswith("a note")


def test_wait_port_completes_like_who() -> None:
    from portscope.shell.values import complete_ports

    wait = cli.get_command(click.Context(cli), "wait")
    [port] = [p for p in wait.params if p.name == "port"]
    assert port._custom_shell_complete is complete_ports


def test_registering_watch_and_wait_imports_no_library() -> None:
    """Start-up: the command line loads the library only inside the command that runs."""
    import ast
    import subprocess
    import sys

    code = (
        "import sys, click, portscope.cli as c; ctx = click.Context(c.cli);"
        " [c.cli.get_command(ctx, n) for n in ('watch', 'wait')];"
        " print(sorted(m for m in sys.modules if m.startswith('portscope.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    modules = ast.literal_eval(loaded.stdout)
    assert "portscope.cli.watch" in modules
    assert not [m for m in modules if m.split(".")[1] in ("commands", "engine", "sources")], modules
    assert "rich" not in loaded.stdout
