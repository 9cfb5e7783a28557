"""Rendering of ``watch`` and ``wait``.

``watch`` writes JSON lines (``--jsonl``, or any output that is not a terminal): one object per event,
flushed as it happens, its socket the very object of ``ls --json`` (:func:`jsonout.socket_object`). On
a terminal it is a live table refreshed in place (rich ``Live``): :class:`Board` keeps what the view
shows from one update to the next (new sockets marked, vanished ones greyed for a few refreshes,
holder changes, counts per state and per listening port and their change since the start), and
:class:`LiveView` draws it fitted to the window.
"""

from __future__ import annotations

import datetime
import enum
import time
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

from portscope.commands.names import Names
from portscope.commands.watch import Change, Origin, Seen, WaitResult, WatchEvent, WatchUpdate, socket_identity
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.notation import STATE_LABELS, proto_label
from portscope.model.records import Family, JoinReport, Proto, Snapshot, State
from portscope.render import jsonout
from portscope.render.environment import Environment
from portscope.render.ls import footer_lines
from portscope.render.notes import hidden_owner_advice
from portscope.render.text import safe_text

LINGER = 3  # refreshes a vanished socket stays greyed, and a new or changed one marked
LISTENING = (State.LISTEN, State.UNCONN)


def iso_time(seconds: float) -> str:
    """ISO 8601 in UTC, to the millisecond: ``2026-12-06T23:10:51.123+00:00``."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def event_object(event: WatchEvent, names: Names) -> dict[str, Any]:
    """One ``watch --jsonl`` line (schema in README): sockets exactly as ``ls --json`` writes them."""
    services, places = names.services, names.places
    document: dict[str, Any] = {
        "event": event.change.value,
        "time": iso_time(event.time),
        "socket": jsonout.socket_object(event.seen.socket, event.seen.holders, services, places),
    }
    if event.before is not None:
        document["before"] = jsonout.socket_object(event.before.socket, event.before.holders, services, places)
    document["source"] = event.origin.value
    return document


class JsonLines:
    """``watch --jsonl``: a line per event, flushed at once; notes on stderr, each said once."""

    def __init__(self, env: Environment, names: Names) -> None:
        self.env = env
        self.names = names
        self._said: set[str] = set()

    def note(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.env.note(safe_text(text))

    def show(self, update: WatchUpdate) -> None:
        out = self.env.stdout
        for event in update.events:
            out.write(jsonout.dumps(event_object(event, self.names)) + "\n")
            out.flush()
        snap = update.snapshot
        if snap is not None:
            if snap.join.hidden_sockets:  # said once: the count changes from scan to scan
                self.note(f"owners of some sockets are hidden; {hidden_owner_advice(self.names.caller_is_root)}")
            for warning in snap.warnings:
                self.note(warning)
        if update.lost:
            self.env.note(f"{update.lost} burst(s) of destroy notifications were lost (the receive buffer was full)")


# ---------------------------------------------------------------------------------------------------
# The terminal view


class Mark(str, enum.Enum):
    NEW = "+"
    GONE = "-"
    CHANGED = "~"
    BRIEF = "±"  # appeared and vanished between two scans (a destroy notification)


@dataclass_lite
class Row:
    seen: Seen
    mark: Mark | None = None
    age: int = 0  # refreshes since it was marked
    before: Seen | None = None  # CHANGED: as it was


class Board:
    """What the live view shows, updated from :class:`WatchUpdate` records (no output here)."""

    def __init__(self, linger: int = LINGER) -> None:
        self.linger = linger
        self.rows: dict[Hashable, Row] = {}
        self.snapshot: Snapshot | None = None
        self.time: float | None = None
        self.scans = 0
        self.states: Counter[tuple[Proto, State]] = Counter()  # (proto, state) -> sockets now
        self.ports: Counter[int] = Counter()  # listening port -> listening sockets now
        self.start_states: Counter[tuple[Proto, State]] | None = None
        self.start_ports: Counter[int] | None = None
        self.short_lived = 0  # sockets seen only by their destroy notification
        self.lost = 0

    def apply(self, update: WatchUpdate) -> None:
        self.time = update.time
        self.lost += update.lost
        if update.snapshot is not None:
            self._scan(update.snapshot, update.events, update.seen)
        else:
            self._notifications(update.events)

    def _age(self) -> None:
        for key, row in list(self.rows.items()):
            if row.mark is None:
                continue
            row.age += 1
            if row.age < self.linger:
                continue
            if row.mark in (Mark.GONE, Mark.BRIEF):
                del self.rows[key]
            else:
                row.mark, row.before = None, None

    def _scan(
        self, snap: Snapshot, events: tuple[WatchEvent, ...], by_identity: Mapping[Hashable, Seen] | None
    ) -> None:
        self._age()
        first = self.scans == 0
        self.scans += 1
        self.snapshot = snap
        if by_identity is None:
            by_identity = {socket_identity(sock): Seen(sock, snap.holders_of(sock)) for sock in snap.sockets}
        current: dict[Hashable, Row] = {}
        rows = self.rows
        for key, seen in by_identity.items():
            row = rows.get(key)
            if row is None or row.mark in (Mark.GONE, Mark.BRIEF):
                current[key] = Row(seen)
            else:
                row.seen = seen
                current[key] = row
        for key, row in self.rows.items():  # greyed rows stay until they have lingered
            if key not in current and row.mark in (Mark.GONE, Mark.BRIEF):
                current[key] = row
        for event in events:
            key = socket_identity(event.seen.socket)
            if event.origin is Origin.DESTROY:
                self._brief(current, event)
            elif event.change is Change.VANISHED:
                current[key] = Row(event.seen, Mark.GONE)
            elif event.change is Change.APPEARED and not first and key in current:
                current[key].mark, current[key].age = Mark.NEW, 0
            elif event.change is Change.CHANGED and key in current:
                row = current[key]
                if row.mark is not Mark.CHANGED:  # changes in a row are shown against the first "before"
                    row.before = event.before
                row.mark, row.age = Mark.CHANGED, 0
        self.rows = current
        self.states = Counter((s.proto, s.state) for s in snap.sockets)
        self.ports = Counter(s.local_port for s in snap.sockets if s.state in LISTENING)
        if first:
            self.start_states, self.start_ports = Counter(self.states), Counter(self.ports)

    def _brief(self, rows: dict[Hashable, Row], event: WatchEvent) -> None:
        if event.change is Change.VANISHED:
            self.short_lived += 1
            rows[("brief", socket_identity(event.seen.socket))] = Row(event.seen, Mark.BRIEF)

    def _notifications(self, events: tuple[WatchEvent, ...]) -> None:
        for event in events:
            self._brief(self.rows, event)

    def state_counts(self) -> list[tuple[str, int, int]]:
        """(label, sockets now, change since the start) per protocol and state, listeners first."""
        start = self.start_states or Counter()
        keys = sorted(set(self.states) | set(start), key=lambda k: (k[1] not in LISTENING, k[0].value, k[1].value))
        return [
            (
                f"{proto.value} {STATE_LABELS[state]}",
                self.states[(proto, state)],
                self.states[(proto, state)] - start[(proto, state)],
            )
            for proto, state in keys
        ]

    def port_counts(self) -> list[tuple[int, int, int]]:
        """(port, listening sockets now, change since the start), by port."""
        start = self.start_ports or Counter()
        return [
            (port, self.ports[port], self.ports[port] - start[port]) for port in sorted(set(self.ports) | set(start))
        ]


def _signed(change: int) -> str:
    return f"+{change}" if change > 0 else f"−{-change}"


MARK_STYLES = {Mark.NEW: "bold green", Mark.GONE: "dim", Mark.CHANGED: "bold yellow", Mark.BRIEF: "dim magenta"}


class LiveView:
    """The live table on a terminal: :class:`Board` drawn in place by rich's ``Live`` after each update."""

    def __init__(self, env: Environment, names: Names, *, title: str, interval: float, notes: tuple[str, ...] = ()):
        self.env = env
        self.names = names
        self.board = Board()
        self.title = title
        self.interval = interval
        self.notes = notes
        self.console = env.console()
        self._live = None

    def __enter__(self) -> LiveView:
        from rich.live import Live

        self._live = Live(
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        self._live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._live is not None:
            self._live.stop()

    def show(self, update: WatchUpdate) -> None:
        self.board.apply(update)
        if update.snapshot is not None or update.events or update.lost:
            assert self._live is not None
            self._live.update(self.renderable(), refresh=True)

    def renderable(self):
        from rich.console import Group
        from rich.text import Text

        width = self.console.size.width
        height = self.console.size.height
        header = self._header(width)
        footer = self._footer()
        room = max(1, height - len(header) - len(footer) - 3)  # the table's heading, its rule, a spare line
        table, more = self._table(width, room)
        parts: list = [*header, table]
        if more:
            hint = Text(f"… {more} more socket(s) below (a larger window, or filters, show them)", style="dim")
            hint.no_wrap, hint.overflow = True, "ellipsis"
            parts.append(hint)
        parts += footer
        return Group(*parts)

    def _header(self, width: int) -> list:
        from rich.text import Text

        board = self.board
        stamp = time.strftime("%H:%M:%S", time.localtime(board.time)) if board.time else "--:--:--"
        title = Text(f"{stamp}  every {self.interval:g} s  ", style="bold")
        title.append("q quits  ", style="dim")
        title.append(self.title)
        states = Text("")
        for label, count, change in board.state_counts():
            if states:
                states.append("  ")
            states.append(f"{label} {count}")
            if change:
                states.append(f" ({_signed(change)})", style="green" if change > 0 else "red")
        if not states:
            states.append("no sockets", style="dim")
        ports = Text("ports ", style="bold")
        counts = board.port_counts()
        for index, (port, count, change) in enumerate(counts):
            piece = str(port) + (f"×{count}" if count > 1 else "")
            style = "dim strike" if count == 0 else ""
            addition = f" ({_signed(change)})" if change else ""
            room = width - (len(f"… +{len(counts) - index} more") if index < len(counts) - 1 else 0)
            if len(ports) + len(piece) + len(addition) > room:  # one line: the rest is counted
                ports.append(f"… +{len(counts) - index} more", style="dim")
                break
            ports.append(piece, style=style)
            if change:
                ports.append(addition, style="green" if change > 0 else "red")
            ports.append("  ")
        lines = [title, states]
        if counts:
            lines.append(ports)
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
        return lines

    def _footer(self) -> list:
        from rich.text import Text

        board = self.board
        lines = []
        if board.short_lived:
            lines.append(Text(f"± {board.short_lived} socket(s) lived between two scans (destroy notifications)"))
        if board.lost:
            lines.append(Text(f"{board.lost} burst(s) of destroy notifications were lost", style="yellow"))
        notes = [safe_text(note) for note in self.notes]
        if board.snapshot is not None:
            notes += footer_lines(board.snapshot, self.names)  # as ls says them: hidden owners, warnings
        for note in notes:
            lines.append(Text(note, style="yellow"))
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
        return lines

    def _table(self, width: int, room: int):
        from rich import box
        from rich.table import Table
        from rich.text import Text

        from portscope.render.table import (
            ALL_KEYS,
            STATE_STYLES,
            RowCells,
            columns_for_width,
            compact_holders,
            fitted_row,
            plan_layout,
            table_order,
        )

        board = self.board
        rows = list(board.rows.values())
        by_socket = {id(row.seen.socket): row for row in rows}
        ordered = [by_socket[id(sock)] for sock in table_order([row.seen.socket for row in rows])]
        more = 0
        if len(ordered) > room:
            more = len(ordered) - (room - 1)
            ordered = ordered[: room - 1]
        columns = columns_for_width(width)
        snap = board.snapshot
        joined = snap.join.joined if snap is not None else False
        current = RowCells(snap, self.names) if snap is not None else None
        # what vanished is drawn with the holders it had: a snapshot of its own for the cell writer
        greyed = Snapshot(
            sockets=(),
            holders={
                r.seen.socket.inode: r.seen.holders for r in ordered if r.mark is not None and r.seen.socket.inode
            },
            sources=(),
            join=JoinReport(joined=joined),
            netns=None,
            bound_visible=None,
        )
        past = RowCells(greyed, self.names)
        picked = [ALL_KEYS.index(c.key) for c in columns]
        cells: list[list[str]] = []
        rows_all: list[list[str]] = []  # every cell, in ALL_KEYS order
        for row in ordered:
            writer = past if row.mark is not None or current is None else current
            values = list(writer.cells(row.seen.socket))
            if row.mark is Mark.CHANGED and row.before is not None:
                was = compact_holders(row.before.holders) or "-"
                if row.before.socket.state is not row.seen.socket.state:
                    was = f"{STATE_LABELS[row.before.socket.state]} {was}"
                values[ALL_KEYS.index("process")] += f" (was {was})"
            rows_all.append(values)
            cells.append([values[i] for i in picked])
        # the columns and widths ls would choose for these cells (ports never cut), the mark column aside
        layout = plan_layout(columns, cells, width - 3)
        keep = [ALL_KEYS.index(c.key) for c in layout.columns]
        table = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            expand=False,
            header_style="bold",
            padding=(0, 1),
            collapse_padding=True,
        )
        table.add_column("", no_wrap=True, width=1)
        for column, column_width in zip(layout.columns, layout.widths, strict=True):
            table.add_column(column.title, justify=column.align, no_wrap=True, width=column_width)  # type: ignore[arg-type]
        for row, values in zip(ordered, rows_all, strict=True):
            mark_style = MARK_STYLES.get(row.mark, "") if row.mark else ""
            dim = row.mark in (Mark.GONE, Mark.BRIEF)
            texts = [Text(row.mark.value if row.mark else " ", style=mark_style)]
            for column, text in zip(layout.columns, fitted_row(values, layout, keep), strict=True):
                if dim:
                    style = "dim"
                elif column.key == "state":
                    style = STATE_STYLES.get(row.seen.socket.state, "")
                elif row.mark is Mark.NEW or (row.mark is Mark.CHANGED and column.key == "process"):
                    style = mark_style.replace("bold ", "")
                else:
                    style = ""
                texts.append(Text(text, style=style))
            table.add_row(*texts)
        return table, more


def watch_title(query) -> str:
    """A few words for the header: what is watched."""
    from portscope.model.query import DEFAULT_STATES, STATE_GROUPS

    states = query.states
    if states == STATE_GROUPS["listening"]:
        what = "listeners"
    elif states is None or states == STATE_GROUPS["all"]:
        what = "every socket"
    elif states == DEFAULT_STATES:
        what = "listening and connected"
    else:
        what = ",".join(sorted(STATE_LABELS[s] for s in states))
    if len(query.protocols) < len(Proto) or len(query.families) < len(Family):
        labels = [proto_label(p, f) for p in sorted(query.protocols) for f in sorted(query.families)]
        what += f" ({', '.join(labels)})"
    where = f", netns {safe_text(query.netns)}" if query.netns else ""
    return what + where


# ---------------------------------------------------------------------------------------------------
# wait


def render_wait(result: WaitResult, env: Environment, names: Names, *, as_json: bool) -> None:
    """What ``wait`` saw: the listeners (as ``ls``), or the can-bind answer; on a timeout, what was there."""
    out = env.stdout
    if not result.free:
        if (result.holds or as_json) and result.snapshot is not None:
            from portscope.render.ls import render_listing

            render_listing(result.snapshot, env, names, as_json=as_json)
        else:
            out.write(f"Nothing listens on {safe_text(result.target.describe())} after {result.timeout:g} s.\n")
        return
    from portscope.render.can_bind import render_can_bind

    if result.report is None:  # no answer was ever given (cannot happen after a first check)
        return
    if not result.holds and not as_json:
        out.write(f"Still not free after {result.timeout:g} s:\n")
    render_can_bind(result.report, env, names, as_json=as_json)
