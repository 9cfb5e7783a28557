"""Rendering of ``portscope ls``: JSON, a plain column writer, or a rich table."""

from __future__ import annotations

from collections.abc import Sequence

from portscope.commands.names import Names
from portscope.model.records import Snapshot, Socket
from portscope.render.environment import Environment
from portscope.render.notes import hidden_owner_advice, refused_processes
from portscope.render.text import safe_text


def footer_lines(snap: Snapshot, names: Names) -> list[str]:
    lines = []
    join = snap.join
    if join.hidden_sockets:
        lines.append(
            f"owners of {join.hidden_sockets} socket(s) are hidden: {join.processes_denied} process(es)"
            f"{refused_processes(join)} could not be inspected; "
            f"{hidden_owner_advice(names.caller_is_root, join.denied_reason)}"
        )
    lines.extend(map(safe_text, snap.warnings))  # they may quote names and paths
    return lines


class TablePrep:
    """What a table of sockets needs before their holders are known: the order (``table_order``) and, for the
    plain writer, the Local and Peer widths. ``ls`` hands it to ``snapshot(meanwhile=...)``, which calls it
    while a forked walker still reads /proc, where this process would otherwise share the walk and then do
    this work alone.

    The snapshot's sockets are those given here or fewer (filters that need the holders), in the same order:
    the same count means the same sockets."""

    def __init__(self, names: Names, *, widths: bool) -> None:
        self._names = names
        self._widths = widths  # the plain writer will measure the endpoints
        self.order: list[Socket] | None = None
        self.endpoints: tuple[int, int] | None = None

    def __call__(self, sockets: Sequence[Socket]) -> None:
        from portscope.render.table import endpoint_widths, service_suffixes, table_order

        self.order = table_order(sockets)
        if self._widths:  # in the order collected, as the records lie in memory (see write_plain)
            self.endpoints = endpoint_widths(sockets, *service_suffixes(self._names), {})

    def order_of(self, sockets: Sequence[Socket]) -> list[Socket]:
        """``table_order(sockets)``, made before when these are the sockets that were prepared."""
        if self.order is not None and len(self.order) == len(sockets):
            return self.order
        self.order = self.endpoints = None  # fewer sockets: what was measured is not theirs
        from portscope.render.table import table_order

        return table_order(sockets)


def render_listing(
    snap: Snapshot,
    env: Environment,
    names: Names,
    *,
    as_json: bool,
    header: bool = True,
    prepared: TablePrep | None = None,
) -> None:
    """``prepared``: the table's order and widths, made while the holders were read (:class:`TablePrep`)."""
    out = env.stdout
    if as_json:
        from portscope.render import jsonout  # json only when asked for

        jsonout.write_sockets(out, snap, names.services, names.places)
        for line in footer_lines(snap, names):
            env.note(line)
        return
    from portscope.render.table import (  # not needed on the JSON path: keep its start-up short
        RICH_ROW_LIMIT,
        RowCells,
        columns_for_width,
        print_rich,
        table_order,
        unix_rows,
        with_namespace_column,
        write_fitted,
        write_plain,
    )

    sockets = prepared.order_of(snap.sockets) if prepared is not None else table_order(snap.sockets)
    columns = with_namespace_column(columns_for_width(env.width), [*snap.sockets, *snap.unix_sockets])
    # a pipe without a width gets whole cells: every holder's pid
    cells = RowCells(snap, names, namespaces=columns[0].key == "netns", full_holders=env.width is None)
    extra = unix_rows(snap, names, cells) if snap.unix_sockets else []
    count = len(sockets) + len(extra)
    if snap.details_asked:
        from portscope.render.details import WRAPPED_KEYS, DetailedRowCells, detail_columns, write_detail_lines

        detail = detail_columns(snap.details_asked)
        cells = DetailedRowCells(cells, snap, detail)  # type: ignore[assignment]
        extra = [(state, row + ("-",) * len(detail)) for state, row in extra]  # UNIX sockets have none
        if env.is_tty:
            # details on a terminal are read as ss prints them: whole lines, never cut to the width, and
            # -m and -i on an indented line under each socket's row
            narrow = columns + tuple(c for c in detail if c.key not in WRAPPED_KEYS)
            write_detail_lines(out, cells, sockets, narrow, extra)
            for line in [f"{count} socket(s); {snap.backend_summary()}", *footer_lines(snap, names)]:
                env.note(line)
            return
        columns += detail
    if env.is_tty and count <= RICH_ROW_LIMIT:
        console = env.console()
        print_rich(console, cells, sockets, columns, env.width, extra, header=header)
        summary = f"{count} socket(s); {snap.backend_summary()}"
        console.print(summary, style="dim")
        for line in footer_lines(snap, names):
            console.print(line, style="yellow")
        return
    if env.width is None and not env.colour:
        endpoints = prepared.endpoints if prepared is not None else None
        write_plain(out, cells, sockets, columns, extra, header=header, endpoints=endpoints, as_collected=snap.sockets)
    else:  # fitted to COLUMNS (watch), or coloured for less -R and watch -c
        paint = env.paint if env.colour else None
        write_fitted(
            out, cells, sockets, columns, env.width, header=header, paint=paint, unicode=env.unicode, extra=extra
        )
    notes = footer_lines(snap, names)
    if env.is_tty:
        notes.insert(0, f"{count} socket(s); {snap.backend_summary()}")
    for line in notes:
        env.note(line)


def render_pids(snap: Snapshot, env: Environment) -> None:
    """The holders' pids, each once, ascending, one per line (``lsof -t``): for ``kill $(...)``."""
    inodes = [sock.inode for sock in snap.sockets] + [usock.inode for usock in snap.unix_sockets]
    pids = sorted(
        {holder.process.pid for inode in inodes if inode is not None for holder in snap.holders.get(inode, ())}
    )
    env.stdout.write("".join(f"{pid}\n" for pid in pids))
