"""Rendering of ``portscope ls``: JSON, a plain column writer, or a rich table."""

from __future__ import annotations

import sys
from typing import IO

from portscope.model.records import Snapshot
from portscope.render import environment as term
from portscope.render import jsonout
from portscope.render.text import safe_text
from portscope.sources.services import load_services


def footer_lines(snap: Snapshot) -> list[str]:
    lines = []
    join = snap.join
    if join.hidden_sockets:
        lines.append(
            f"owners of {join.hidden_sockets} socket(s) are hidden: {join.processes_denied} process(es) "
            f"could not be inspected; {term.hidden_owner_advice()}"
        )
    lines.extend(map(safe_text, snap.warnings))  # they may quote names and paths
    return lines


def render_listing(snap: Snapshot, out: IO[str], *, as_json: bool, numeric: bool) -> None:
    services = None if numeric else load_services()
    if as_json:
        jsonout.write_sockets(out, snap, services)
        for line in footer_lines(snap):
            print(f"portscope: note: {line}", file=sys.stderr)
        return
    from portscope.render.table import (  # not needed on the JSON path: keep its start-up short
        RICH_ROW_LIMIT,
        RowBuilder,
        columns_for_width,
        print_rich,
        table_order,
        write_plain,
    )

    sockets = table_order(snap.sockets)
    width = term.terminal_width(out)
    columns = columns_for_width(width)
    builder = RowBuilder(snap, services)
    tty = term.is_terminal(out)
    if tty and len(sockets) <= RICH_ROW_LIMIT:
        console = term.make_console(out, width)
        print_rich(console, builder, sockets, columns, width)
        summary = f"{len(sockets)} socket(s); {snap.backend_summary()}"
        console.print(summary, style="dim")
        for line in footer_lines(snap):
            console.print(line, style="yellow")
        return
    write_plain(out, builder, sockets, columns)
    notes = footer_lines(snap)
    if tty:
        notes.insert(0, f"{len(sockets)} socket(s); {snap.backend_summary()}")
    for line in notes:
        print(f"portscope: note: {line}", file=sys.stderr)
