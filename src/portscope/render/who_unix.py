"""Rendering of ``portscope who PATH`` / ``who @NAME``: the holders of a UNIX socket name, then its peers.

The page is made of the same blocks as ``who PORT`` (:mod:`portscope.render.who`): each process with
its command, parents, unit and container, then what it does with the name (listens, connections,
whom it talks to); then the processes at the other end, then the sockets no visible process holds.
"""

from __future__ import annotations

from typing import Any

from portscope.commands.names import Names
from portscope.commands.who import UnixProcess, UnixWhoResult
from portscope.model.notation import STATE_LABELS
from portscope.model.query import ALL_NAMESPACES
from portscope.model.records import State
from portscope.render import jsonout
from portscope.render.environment import Environment
from portscope.render.table import STATE_STYLES, UNIX_LABELS
from portscope.render.text import safe_text
from portscope.render.who import Block, Page, PageBuilder, Segment, process_object, write_plain, write_rich

PARTNERS_SHOWN = 8


class UnixPageBuilder(PageBuilder):
    def __init__(self, result: UnixWhoResult, names: Names, unicode: bool) -> None:
        super().__init__(result, names, unicode)  # type: ignore[arg-type]
        self.unix = result

    def build(self) -> Page:
        result = self.unix
        blocks = [self.unix_block(entry, peer=False) for entry in result.processes]
        if result.peers:
            blocks.append(Block([("At the other end", "bold"), (" (connected peers)", "dim")]))
            blocks += [self.unix_block(entry, peer=True) for entry in result.peers]
        if result.unheld:
            blocks.append(self.unheld_block())
        footer = list(result.snapshot.warnings)
        note = elsewhere_note(result)
        if note:
            footer.append(note)
        return Page(header=self.header(), blocks=blocks, footer=footer)

    def name_label(self) -> str:
        label = safe_text(self.unix.target.path)
        if self.unix.netns == ALL_NAMESPACES:
            label += " in any network namespace"
        elif self.unix.netns:
            label += f" in network namespace {safe_text(self.unix.netns)}"
        return label

    def header(self) -> list[Segment]:
        result = self.unix
        if not result.found:
            return [(f"No UNIX socket is bound to {self.name_label()}.", "bold")]
        counts = [
            f"{len(result.processes)} process{'es' if len(result.processes) != 1 else ''}",
            f"{len(result.sockets)} socket{'s' if len(result.sockets) != 1 else ''}",
            f"{len(result.peers)} peer process{'es' if len(result.peers) != 1 else ''}",
        ]
        if result.unheld:
            counts.append(f"{len(result.unheld)} without a visible process")
        return [(self.name_label(), "bold"), (": " + ", ".join(counts), "")]

    def unix_block(self, entry: UnixProcess, *, peer: bool) -> Block:
        block = self.process_head(entry)
        fds = sorted({fd for _, group in entry.fds for fd in group})
        listeners = [s for s in entry.sockets if s.state in (State.LISTEN, State.UNCONN)]
        for sock in listeners:
            block.rows.append(
                (
                    "listens" if sock.state is State.LISTEN else "bound",
                    [(f"{UNIX_LABELS[sock.type]} ", ""), (safe_text(sock.path or "*"), "bold")],
                )
            )
        if entry.state_counts:
            value: list[Segment] = []
            for state, count in entry.state_counts:
                if state in (State.LISTEN, State.UNCONN):
                    continue
                value += [(", " if value else "", ""), (f"{count} {STATE_LABELS[state]}", STATE_STYLES.get(state, ""))]
            if value:
                block.rows.append(("sockets", value))
        elif peer:
            # its socket lives in another network namespace: only the inode is known
            block.rows.append(("sockets", [(f"inode {', '.join(map(str, entry.inodes))}", "")]))
        if fds:
            block.rows.append(("fds", [(", ".join(map(str, fds)), "dim")]))
        if entry.partners:
            shown = ", ".join(f"{safe_text(name)}[{pid}]" for pid, name in entry.partners[:PARTNERS_SHOWN])
            more = len(entry.partners) - PARTNERS_SHOWN
            value = [(shown, "")]
            if more > 0:
                value.append((f", +{more} more", "dim"))
            block.rows.append(("serves" if not peer else "talks to", value))
        return block

    def unheld_block(self) -> Block:
        block = Block([("No process found", "bold")])
        for sock in self.unix.unheld:
            block.lines.append(
                [
                    (f"{UNIX_LABELS[sock.type]}  ", ""),
                    (STATE_LABELS[sock.state], STATE_STYLES.get(sock.state, "")),
                    (f"  inode {sock.inode}", "dim"),
                ]
            )
        these = "this socket" if len(self.unix.unheld) == 1 else "these sockets"
        block.notes.append(
            f"No process in /proc holds {these}: a connection not accepted yet, one held by a process in "
            "another PID namespace or hidden from us, or one whose process exited a moment ago."
        )
        return block


def elsewhere_note(result: UnixWhoResult) -> str | None:
    """A socket file exists but no socket of this namespace is bound to it: it lives in another one."""
    if result.found or result.target.file is None or result.netns == ALL_NAMESPACES:
        return None
    return (
        f"{safe_text(result.target.path)} is a socket file, but no socket in this network namespace is bound "
        "to it: its socket may live in another one (--netns all looks in every namespace), or be closed"
    )


def unix_who_object(result: UnixWhoResult, places=None) -> dict[str, Any]:
    snap = result.snapshot
    target = result.target
    return {
        "query": {"target": target.text, "path": target.path, "abstract": target.abstract, "netns": result.netns},
        "sockets": [jsonout.unix_socket_object(s, snap.holders_of(s), snap.peer_holders_of(s)) for s in result.sockets],
        "processes": [process_object(p, places) for p in result.processes],  # type: ignore[arg-type]
        "peers": [process_object(p, places) for p in result.peers],  # type: ignore[arg-type]
    }


def render_unix_who(result: UnixWhoResult, env: Environment, names: Names, *, as_json: bool) -> None:
    if as_json:
        jsonout.dump(unix_who_object(result, names.places), env.stdout)
        note = elsewhere_note(result)
        for line in [*result.snapshot.warnings, *([note] if note else [])]:
            env.note(safe_text(line))
        return
    page = UnixPageBuilder(result, names, unicode=env.unicode).build()
    if env.is_tty:
        write_rich(page, env)
        return
    footer, page.footer = page.footer, []
    write_plain(page, env.stdout, env.width)
    for note in footer:
        env.note(safe_text(note))
