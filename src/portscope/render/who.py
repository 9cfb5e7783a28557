"""Rendering of ``portscope who``: a block per process, then the sockets no visible process holds.

The page is built once as styled segments; a terminal gets it through rich (wrapped to its width,
coloured unless NO_COLOR), a pipe gets plain lines that are never cut, so grep finds whole command
lines. The plain path imports only the standard library.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import field

from portscope.commands.names import Names
from portscope.commands.who import (
    Forwarding,
    ProcessGroup,
    ProcessOnPort,
    Unheld,
    UnheldSocket,
    UnixWhoResult,
    WhoResult,
    WhoTarget,
)
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.notation import STATE_LABELS, format_endpoint, proto_label
from portscope.model.query import port_in_ranges
from portscope.model.records import Family, Proto, Socket, State
from portscope.render.environment import Environment
from portscope.render.notes import hidden_owner_advice, refused_list, refused_processes
from portscope.render.table import STATE_STYLES
from portscope.render.text import dollar_quoted, safe_text
from portscope.sources.lineage import DELETED, EXITED
from portscope.sources.procinfo import HidePid
from portscope.sources.services import Services

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import IO, Any

Segment = tuple[str, str]  # (text, rich style)
UNHELD_SHOWN = 10  # per kind; the rest are counted, ls -a lists them all
LISTENERS_SHOWN = 20
LABEL_WIDTH = 9
INDENT = "    "
PROSE_WIDTH = 100


@dataclass_lite
class Block:
    title: list[Segment]
    rows: list[tuple[str, list[Segment]]] = field(default_factory=list)  # label, value
    lines: list[list[Segment]] = field(default_factory=list)  # pre-aligned lines (socket lists)
    notes: list[str] = field(default_factory=list)  # prose, wrapped to the width
    hints: list[tuple[str, str]] = field(default_factory=list)  # (lead-in, command): never broken


@dataclass_lite
class Page:
    header: list[Segment]
    blocks: list[Block]
    footer: list[str]  # notes (warnings about what could not be seen)


# ---------------------------------------------------------------------------------------------------
# Formatting helpers


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_time_left(milliseconds: int) -> str:
    if milliseconds >= 10_000:
        return f"{milliseconds // 1000}s left"
    return f"{milliseconds / 1000:.1f}s left"


def shell_word(arg: str) -> str:
    """Quote like a person would: bare when safe, else '...' or "...", shlex's escapes only when needed."""
    if not arg.isprintable():
        return dollar_quoted(arg)  # pastes back into bash and zsh, and shows no control character
    quoted = shlex.quote(arg)
    if quoted == arg or "'" not in arg:
        return quoted
    if not any(ch in arg for ch in '"$`\\!'):
        return f'"{arg}"'
    return quoted


def command_line(argv: tuple[str, ...], name: str) -> str:
    """The full command line, quoted so it can be pasted back into a shell."""
    if not argv:
        return f"[{safe_text(name)}]"  # kernel threads and zombies have none
    return " ".join(shell_word(arg) for arg in argv)


def families_label(families: frozenset[Family], certain: bool) -> str:
    if families == frozenset(Family):
        return "IPv4 and IPv6"
    if Family.IPV4 in families:
        return "IPv4"
    return "IPv6" if certain else "IPv6 (IPv4 too unless v6only: cannot tell here)"


def _proto(sock: Socket) -> str:
    return proto_label(sock.proto, sock.family)


def _endpoint(sock: Socket, local: bool) -> str:
    if local:
        interface = safe_text(sock.interface) if sock.interface else None  # a name any local user can pick
        return format_endpoint(sock.local_address, sock.local_port, sock.family, interface)
    return format_endpoint(sock.remote_address, sock.remote_port, sock.family)


def hidepid_note(hidepid: HidePid) -> str:
    hidden = "invisible" if hidepid.invisible else "unreadable"
    return f"/proc is mounted with {hidepid.option}: other users' processes are {hidden}"


def partial_view_note(result: WhoResult, caller_is_root: bool) -> str | None:
    """Without privileges the holders we see may not be all of them: say so when nothing else does."""
    if result.hidepid is not None and result.processes and not result.hidden:
        return f"{hidepid_note(result.hidepid)} and may hold these sockets too"
    join = result.snapshot.join
    denied = join.processes_denied
    if not denied or result.hidden or not result.processes:
        return None
    whose = " of other users" if not caller_is_root else ""
    return (
        f"{denied} process{'es' if denied != 1 else ''}{whose}{refused_processes(join)} could not be inspected "
        f"and may hold these sockets too; {hidden_owner_advice(caller_is_root, join.denied_reason)}"
    )


STATUS_WORDS = {
    "zombie": "zombie: it exited and its parent has not reaped it",
    EXITED: "exited while it was being read",
    "stopped": "stopped (SIGSTOP or a job-control stop): it does not answer",
    "tracing-stop": "stopped by a debugger",
    "disk-sleep": "waiting on I/O (uninterruptible)",
}
CHILDREN_SHOWN = 8


def details_rows(entry: ProcessOnPort, holder_pids: frozenset[int]) -> list[tuple[str, list[Segment]]]:
    """exe when the command line does not name it (or it was replaced on disk), cwd, an unusual status,
    and the child processes (workers of a pre-forking server)."""
    details = entry.details
    if details is None:
        return []
    rows: list[tuple[str, list[Segment]]] = []
    argv0 = entry.process.cmdline[0] if entry.process.cmdline else ""
    replaced = bool(details.exe) and details.exe.endswith(DELETED)  # upgraded on disk, old code running
    if details.exe and (replaced or os.path.basename(details.exe) != os.path.basename(argv0)):
        rows.append(("exe", [(safe_text(details.exe), "yellow" if replaced else "")]))
    if details.cwd:
        rows.append(("cwd", [(safe_text(details.cwd), "")]))
    if details.status in STATUS_WORDS:
        rows.append(("status", [(STATUS_WORDS[details.status], "yellow")]))
    if details.children:
        on_port = holder_pids.intersection(details.children)
        shown = ", ".join(str(pid) for pid in details.children[:CHILDREN_SHOWN])
        value: list[Segment] = [(f"{len(details.children)}: {shown}", "")]
        if len(details.children) > CHILDREN_SHOWN:
            value.append((f", +{len(details.children) - CHILDREN_SHOWN} more", "dim"))
        if on_port:
            value.append((f"  ({len(on_port)} on this port)", "dim"))
        rows.append(("children", value))
    return rows


# ---------------------------------------------------------------------------------------------------
# Building the page


class PageBuilder:
    def __init__(self, result: WhoResult, names: Names, unicode: bool, program: str = "portscope") -> None:
        self.result = result
        self.program = program  # as sudo can run it: the full path of the installed program
        self.names = names
        self.services = names.services
        placed = getattr(result, "places", None)  # who PATH: no placing of its own
        self.places = placed if placed is not None else names.places
        self.left = "←" if unicode else "<-"
        self.holder_pids = frozenset(p.process.pid for p in result.processes)
        self.by_pid = {p.process.pid: p.process for p in result.processes}
        home = result.snapshot.netns
        if home is None and self.places is not None:
            home = self.places.host_inode
        self.home_netns = home  # sockets elsewhere say which namespace they are in

    def build(self) -> Page:
        result = self.result
        blocks = []
        for group in result.groups or (ProcessGroup(None, result.processes),):
            if group.container is not None:
                blocks.append(self.container_block(group))
            blocks.extend(self.process_block(p) for p in group.processes)
        groups = {
            reason: [u for u in result.unheld if u.reason is reason]
            for reason in (Unheld.NO_FILE, Unheld.HIDDEN, Unheld.UNOWNED)
        }
        if groups[Unheld.NO_FILE]:
            blocks.append(self.no_file_block(groups[Unheld.NO_FILE]))
        if groups[Unheld.HIDDEN]:
            blocks.append(self.hidden_block(groups[Unheld.HIDDEN]))
        if groups[Unheld.UNOWNED]:
            blocks.append(self.unowned_block(groups[Unheld.UNOWNED]))
        footer = list(result.snapshot.warnings)
        partial = partial_view_note(result, self.names.caller_is_root)
        if partial:
            footer.insert(0, partial)
        return Page(header=self.header(), blocks=blocks, footer=footer)

    def port_label(self) -> str:
        target = self.result.target
        label = target.describe()
        if self.services is not None and len(target.ports) == 1 and target.ports[0].low == target.ports[0].high:
            port = target.ports[0].low
            names = {self.services.name_of(port, p) for p in Proto if p in target.protocols} - {None}
            if names:
                label += f" [{safe_text(', '.join(sorted(names)))}]"  # type: ignore[arg-type]
        if self.result.netns:
            label += f" in network namespace {safe_text(self.result.netns)}"
        return label

    def header(self) -> list[Segment]:
        result = self.result
        if not result.found:
            return [(f"Nothing is using port {self.port_label()}.", "bold")]
        counts = [f"{len(result.processes)} process{'es' if len(result.processes) != 1 else ''}"]
        counts.append(f"{len(result.sockets)} socket{'s' if len(result.sockets) != 1 else ''}")
        if result.unheld:
            counts.append(f"{len(result.unheld)} without a visible process")
        return [(f"Port {self.port_label()}", "bold"), (": " + ", ".join(counts), "")]

    def process_block(self, entry: ProcessOnPort) -> Block:
        block = self.process_head(entry)
        self.socket_rows(entry, block)
        return block

    def process_head(self, entry) -> Block:
        """A process's title and who it is: command, details, parents, start, unit, container (an entry
        of ``who PORT`` or of ``who PATH``)."""
        process = entry.process
        title: list[Segment] = [
            (safe_text(process.name), "bold"),
            ("  pid ", "dim"),
            (str(process.pid), "bold cyan"),
            ("  user ", "dim"),
            (safe_text(process.user) if process.user else "?", "bold"),
        ]
        block = Block(title)
        block.rows.append(("command", [(command_line(process.cmdline, process.name), "")]))
        block.rows.extend(details_rows(entry, self.holder_pids))
        lineage = entry.lineage
        block.rows.append(("parents", [(self.parent_chain(entry), "")]))
        started = lineage.started if lineage else process.start_time
        if started is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            uptime = lineage.uptime if lineage and lineage.uptime is not None else self.result.read_at - started
            block.rows.append(("started", [(stamp, ""), (f", up {format_duration(uptime)}", "dim")]))
        if lineage and lineage.unit:
            block.rows.append(("unit", [(safe_text(lineage.unit), "")]))
        if lineage and lineage.container:
            container = lineage.container
            known = getattr(entry, "container", None)  # named by who's placing; a UNIX socket's process: look up
            if known is None or known.id != container.id:
                places = self.names.places
                known = places.index.by_id(container.id) if places is not None and container.id else None
            value: list[Segment] = [(f"{safe_text(container.runtime)} ", ""), (safe_text(container.short_id), "bold")]
            if known is not None and known.name:
                value = [
                    (safe_text(known.name), "bold"),
                    (f"  {safe_text(container.runtime)} {safe_text(container.short_id)}", ""),
                ]
            if container.pod:
                value.append((f"  pod {safe_text(container.pod)}", "dim"))
            block.rows.append(("container", value))
        for forwarding in getattr(entry, "reached_through", ()):  # a UNIX socket's process has none
            block.rows.append(("reached", self.reached(forwarding)))
        return block

    def socket_rows(self, entry: ProcessOnPort, block: Block) -> None:
        fds_by_inode = dict(entry.fds)
        previous_verb = None
        for listener in entry.listeners[:LISTENERS_SHOWN]:
            sock = listener.socket
            # a bound UDP socket receives datagrams: it listens as far as a user is concerned (ss -l agrees)
            verb = "bound" if sock.state is State.BOUND else "listens"
            value = [
                (f"{_proto(sock)} ", ""),
                (_endpoint(sock, True), "bold"),
                (f"  {families_label(listener.families, listener.families_certain)}", "green"),
            ]
            if sock.state is State.BOUND:
                value.append(("  not listening", "yellow"))
            fds = fds_by_inode.get(sock.inode or -1, ())
            if fds:
                value.append((f"  fd {','.join(map(str, fds))}", "dim"))
            elsewhere = self.namespace_label(sock)
            if elsewhere:
                value.append((f"  {elsewhere}", "dim"))
            block.rows.append((verb if verb != previous_verb else "", value))
            previous_verb = verb
            for forwarding in entry.forwards:
                if forwarding.listener is sock:
                    block.rows.append(("forwards", self.forwards(forwarding)))
        if len(entry.listeners) > LISTENERS_SHOWN:
            block.rows.append(("", [(f"+{len(entry.listeners) - LISTENERS_SHOWN} more", "dim")]))
        if entry.state_counts:
            value = []
            for index, (state, count) in enumerate(entry.state_counts):
                if index:
                    value.append((", ", ""))
                value.append((f"{count} {state.value}", STATE_STYLES.get(state, "")))
            block.rows.append(("sockets", value))
        if entry.peers:
            text = ", ".join(f"{peer.endpoint} ({peer.count})" for peer in entry.peers)
            more = entry.peer_count - len(entry.peers)
            value = [(text, "")]
            if more > 0:
                value.append((f", +{more} more", "dim"))
            block.rows.append(("peers", value))

    def namespace_label(self, sock: Socket) -> str | None:
        """``in namespace web`` for a socket outside the namespace the answer is about."""
        if sock.netns is None or sock.netns == self.home_netns:
            return None
        name = self.places.netns_name(sock.netns) if self.places is not None else None
        return f"in namespace {safe_text(name)}" if name else f"in namespace {sock.netns}"

    def process_label(self, pid: int, name: str | None = None) -> str:
        process = self.by_pid.get(pid)
        shown = process.name if process is not None else name
        return f"{safe_text(shown)}[{pid}]" if shown else f"pid {pid}"

    def listeners_behind(self, forwarding: Forwarding) -> str:
        """``httpd[5678] listening on 172.17.0.2:8080``: who its traffic reaches."""
        holders = ", ".join(self.process_label(pid) for pid in forwarding.target_pids)
        places = ", ".join(dict.fromkeys(_endpoint(sock, True) for sock in forwarding.targets))
        return f"{holders or 'no visible process'} listening on {places}"

    def forwards(self, forwarding: Forwarding) -> list[Segment]:
        """``to container web (docker 80f128f2e1c3) 172.17.0.2:8080, where httpd[5678] listens  via docker-proxy``."""
        forward = forwarding.forward
        if forward.target_pid is not None:  # socket activation: passed on, not forwarded
            value: list[Segment] = [("passed to ", ""), (self.process_label(forward.target_pid), "bold")]
            if forward.detail:
                value.append((f" (fd name {safe_text(forward.detail)})", ""))
            value.append(("  by socket activation", "dim"))
            return value
        value = [("to ", "")]
        if forward.container is not None:
            name = forward.container.name or forward.container.short_id
            value += [
                (f"container {safe_text(name)}", "bold"),
                (f" ({safe_text(forward.container.runtime)} {safe_text(forward.container.short_id)})", ""),
            ]
        if forward.target_address is not None and forward.target_port is not None:
            value.append((f" {format_endpoint(forward.target_address, forward.target_port)}", ""))
        elif forward.target_port is not None:
            value.append((f" port {forward.target_port}", ""))
        if forwarding.target_pids:
            holders = ", ".join(self.process_label(pid) for pid in forwarding.target_pids)
            value.append((f", where {holders} listen{'s' if len(forwarding.target_pids) == 1 else ''}", ""))
        elif forwarding.unread:
            value.append((f", its namespace could not be read ({safe_text(forwarding.unread)})", "yellow"))
        elif forward.netns_inode is not None and forward.target_port is not None and forwarding.targets == ():
            value.append((", where nothing listens", "yellow"))
        value.append((f"  via {safe_text(forward.kind)}", "dim"))
        return value

    def reached(self, forwarding: Forwarding) -> list[Segment]:
        """``through docker-proxy[1234] on 0.0.0.0:8080``: how traffic on the port gets to this process."""
        listener = forwarding.listener
        forwarder = self.process_label(forwarding.forwarder.pid, forwarding.forwarder.name)
        if forwarding.forward.target_pid is not None:
            value: list[Segment] = [("from ", ""), (forwarder, "bold"), (" by socket activation", "")]
            if forwarding.forward.detail:
                value.append((f" (fd name {safe_text(forwarding.forward.detail)})", ""))
            return value
        return [
            ("through ", ""),
            (forwarder, "bold"),
            (f" on {_proto(listener)} {_endpoint(listener, True)}", ""),
            (f"  {safe_text(forwarding.forward.kind)}", "dim"),
        ]

    def container_block(self, group: ProcessGroup) -> Block:
        """``container web (docker, id 80f128f2e1c3, compose app/web)`` and what reaches whom in it."""
        container = group.container
        assert container is not None
        facts = [safe_text(container.runtime), f"id {safe_text(container.short_id)}"]
        if container.compose_project or container.compose_service:
            project, service = container.compose_project or "?", container.compose_service or "?"
            facts.append(f"compose {safe_text(project)}/{safe_text(service)}")
        if container.pod:
            facts.append(f"pod {safe_text(container.pod)}")
        if container.namespace:
            facts.append(f"namespace {safe_text(container.namespace)}")
        name = safe_text(container.name or container.short_id)
        block = Block([("container ", "bold"), (name, "bold magenta"), (f" ({', '.join(facts)})", "")])
        pids = {p.process.pid for p in group.processes}
        for forwarding in self.result.forwardings:
            if forwarding.forwarder.pid not in pids and not pids.intersection(forwarding.target_pids):
                continue
            listener = forwarding.listener
            through = (
                f"{self.process_label(forwarding.forwarder.pid, forwarding.forwarder.name)} on "
                f"{_endpoint(listener, True)}"
            )
            if forwarding.target_pids:
                line = f"process {self.listeners_behind(forwarding)} in its namespace, reached through {through}"
            elif forwarding.unread:
                unread = safe_text(forwarding.unread)
                line = f"{through} forwards into its namespace, which could not be read ({unread})"
            else:
                forward = forwarding.forward
                where = (
                    format_endpoint(forward.target_address, forward.target_port)
                    if forward.target_address is not None and forward.target_port is not None
                    else f"port {forward.target_port}"
                    if forward.target_port is not None
                    else "it"
                )
                line = f"{through} forwards to {where}"
                if forward.netns_inode is not None and forward.target_port is not None:
                    line += ", where nothing listens"
            block.lines.append([(line, "")])
        return block

    def parent_chain(self, entry: ProcessOnPort) -> str:
        lineage = entry.lineage
        if lineage is None:
            return "unknown (the process exited)"
        if not lineage.ancestors:
            return "none: it is the service manager" if entry.process.pid == 1 else "none: top of its process tree"
        chain = f" {self.left} ".join(f"{safe_text(a.name)}[{a.pid}]" for a in lineage.ancestors)
        if not lineage.complete:
            chain += f" {self.left} ? (an ancestor exited)"
        return chain

    def socket_lines(self, unheld: list[UnheldSocket], extra) -> list[list[Segment]]:
        """Aligned lines: protocol, state, local endpoint, ``extra`` (time left, owner), then the peer.

        The peer comes last: it is the least telling part and the one a narrow terminal may cut.
        """
        shown = unheld[:UNHELD_SHOWN]
        cells = [
            [_proto(u.socket), STATE_LABELS[u.socket.state], _endpoint(u.socket, True), extra(u.socket)] for u in shown
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(4)]
        lines = []
        for u, row in zip(shown, cells, strict=True):
            line = [
                (row[0].ljust(widths[0]) + "  ", ""),
                (row[1].ljust(widths[1]), STATE_STYLES.get(u.socket.state, "")),
                ("  " + row[2].ljust(widths[2]) + "  ", ""),
                (row[3].ljust(widths[3]), "bold"),
            ]
            if u.socket.remote_address is not None:
                line.append((f"  peer {_endpoint(u.socket, False)}", "dim"))
            lines.append(line)
        if len(unheld) > UNHELD_SHOWN:
            ports = ",".join(str(r) for r in self.result.target.ports)
            lines.append(
                [(f"... and {len(unheld) - UNHELD_SHOWN} more (all of them: portscope ls -a --port {ports})", "dim")]
            )
        return lines

    def no_file_block(self, unheld: list[UnheldSocket]) -> Block:
        block = Block([("Without a process", "bold"), (" (held by the kernel alone)", "dim")])

        def timer(sock: Socket) -> str:
            if sock.state is State.TIME_WAIT or sock.timer == "timewait":
                return format_time_left(sock.timer_ms) if sock.timer_ms is not None else "time-wait"
            if sock.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_RECV):
                return "not accepted yet" if sock.state is not State.SYN_RECV else "handshake"
            return "closed by its process"  # an orphan finishing its close

        block.lines = self.socket_lines(unheld, timer)
        target = self.result.target
        waiting = [
            u.socket
            for u in unheld
            if u.socket.state is State.TIME_WAIT and port_in_ranges(u.socket.local_port, target.ports)
        ]
        if waiting:
            port = waiting[0].local_port
            block.notes.append(
                "TIME-WAIT is what is left of a recently closed connection: the kernel keeps it for up to a "
                "minute so that late packets cannot disturb a new connection, and no process owns it. A server "
                f"restarting on port {port} can listen again at once if it sets SO_REUSEADDR (most servers do); "
                'one that does not gets "Address already in use" until these expire.'
            )
            block.hints.append(("To check:", f"portscope can-bind {self.can_bind_target(port)}"))
        return block

    def can_bind_target(self, port: int) -> str:
        target = self.result.target
        if target.address is None:
            return f":{port}"
        if target.zone:  # can-bind reads the zone inside the brackets
            return f"[{target.address_text()}]:{port}"
        return format_endpoint(str(target.address), port)

    def hidden_block(self, unheld: list[UnheldSocket]) -> Block:
        block = Block([("Owner hidden", "bold yellow")])

        def owner(sock: Socket) -> str:
            uid = "?" if sock.uid is None else f"{sock.uid} ({safe_text(self.names.user(sock.uid))})"
            return f"uid {uid}  inode {sock.inode}"

        block.lines = self.socket_lines(unheld, owner)
        join = self.result.snapshot.join
        processes = join.processes_denied
        if self.result.hidepid is not None:
            it = "it" if len(unheld) == 1 else "them"
            block.notes.append(f"The process holding {it} is not visible: {hidepid_note(self.result.hidepid)}.")
            block.hints.append(("Run as root:", f"sudo {self.program} who {shlex.quote(self.result.target.text)}"))
        elif not self.names.caller_is_root:
            block.notes.append(
                f"The process holding {'it' if len(unheld) == 1 else 'them'} is not visible without privileges: "
                f"{processes} process{'es' if processes != 1 else ''} belonging to other users"
                f"{refused_processes(join)} could not be inspected."
            )
            block.hints.append(("Run as root:", f"sudo {self.program} who {shell_word(self.result.target.text)}"))
        else:
            block.notes.append(
                f"The process holding {'it' if len(unheld) == 1 else 'them'} could not be inspected: "
                f"{hidden_owner_advice(True, join.denied_reason)}."
                + (f" Refused: {refused_list(join)}." if join.denied_processes else "")
            )
        return block

    def unowned_block(self, unheld: list[UnheldSocket]) -> Block:
        block = Block([("No process found", "bold")])

        def owner(sock: Socket) -> str:
            return f"uid {sock.uid}  inode {sock.inode}" if sock.uid is not None else f"inode {sock.inode}"

        block.lines = self.socket_lines(unheld, owner)
        these = "this socket" if len(unheld) == 1 else "these sockets"
        block.notes.append(
            f"No process in /proc holds {these}: a socket made by the kernel itself, one held by a process "
            "in another PID namespace, or one whose process exited a moment ago."
        )
        return block


# ---------------------------------------------------------------------------------------------------
# Writers


def write_plain(page: Page, out: IO[str], width: int | None, paint=None) -> None:
    """Lines without rich; rows are never cut (grep-friendly), prose is wrapped. ``paint(text, style)``
    colours the segments when colour was asked for (``--color=always | less -R``)."""
    wrap_at = max(40, min(width or 80, PROSE_WIDTH))

    def text(segments: list[Segment]) -> str:
        if paint is not None:
            return "".join(paint(part, style) for part, style in segments)
        return "".join(part for part, _ in segments)

    lines = [text(page.header)]
    for block in page.blocks:
        lines.append("")
        lines.append(text(block.title))
        for label, value in block.rows:
            lines.append(f"{INDENT}{label:<{LABEL_WIDTH}}  {text(value)}".rstrip())
        for segments in block.lines:
            lines.append(INDENT + text(segments).rstrip())
        if block.notes:
            import textwrap  # (only for notes: 4M instructions of start-up)

        for note in block.notes:
            lines.extend(textwrap.wrap(note, wrap_at, initial_indent=INDENT, subsequent_indent=INDENT))
        for lead, command in block.hints:
            lines.append(f"{INDENT}{lead} {command}")
    out.write("\n".join(lines) + "\n")


def write_rich(page: Page, env: Environment) -> None:
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    console = env.console()

    def styled(segments: list[Segment]) -> Text:
        return Text.assemble(*[(part, style) if style else part for part, style in segments])

    console.print(styled(page.header))
    for block in page.blocks:
        console.print()
        console.print(styled(block.title))
        if block.rows:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="dim", no_wrap=True, min_width=LABEL_WIDTH)
            grid.add_column(overflow="fold")
            for label, value in block.rows:
                grid.add_row(label, styled(value))
            console.print(Padding(grid, (0, 0, 0, len(INDENT))))
        room = console.width - len(INDENT)
        for segments in block.lines:
            if sum(len(part) for part, _ in segments) > room and segments[-1][0].startswith("  peer "):
                segments = segments[:-1]  # the peer is the least telling part: left out, never cut
            line = styled(segments)
            line.rstrip()
            # what still does not fit wraps between words: an address or a port is never cut
            console.print(Padding(line, (0, 0, 0, len(INDENT))))
        for note in block.notes:
            # prose reads badly in 200-column lines: keep it to about 100
            console.print(Padding(Text(note), (0, 0, 0, len(INDENT))), width=min(console.width, PROSE_WIDTH))
        for lead, command in block.hints:
            hint = Text.assemble(INDENT, lead, " ", (command, "bold"), no_wrap=True, overflow="ignore")
            console.print(hint, crop=False)
    for note in page.footer:
        console.print(Text(f"note: {safe_text(note)}", style="yellow"))


def query_object(target: WhoTarget, netns: str | None) -> dict[str, Any]:
    return {
        "target": target.text,
        "ports": [{"low": r.low, "high": r.high} for r in target.ports],
        "protocols": [p.value for p in Proto if p in target.protocols],
        "address": None if target.address is None else str(target.address),
        "interface": target.zone,
        "remote": target.remote,
        "netns": netns,
    }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    import datetime  # (JSON only: 4.5M instructions of start-up)

    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _container_with_name(container) -> dict[str, Any]:
    """The cgroup's container, with its name when the runtime's files know it."""
    return {"runtime": container.runtime, "id": container.id, "name": container.name, "pod": container.pod}


def reached_object(forwarding: Forwarding) -> dict[str, Any]:
    """``{"pid", "name", "kind", "address", "port", "inode"}``: a forwarder and its listener on the port."""
    listener = forwarding.listener
    return {
        "pid": forwarding.forwarder.pid,
        "name": forwarding.forwarder.name,
        "kind": forwarding.forward.kind,
        "address": listener.local_address,
        "port": listener.local_port,
        "inode": listener.inode,
    }


def process_object(entry: ProcessOnPort, places=None) -> dict[str, Any]:
    """A ``who`` process object; ``entry`` may also be a UNIX socket's process (``who PATH``), which who's
    placing did not name: its container is then named through ``places``."""
    process, lineage, details = entry.process, entry.lineage, entry.details
    container = lineage.container if lineage else None
    placed = getattr(entry, "container", None)
    if container is not None and placed is not None and placed.id == container.id:
        container = placed  # named from the runtime's files
    elif container is not None and places is not None and container.id:
        container = places.index.by_id(container.id) or container
    started = lineage.started if lineage else process.start_time
    return {
        "pid": process.pid,
        "ppid": process.ppid,
        "name": process.name,
        "user": process.user,
        "uid": process.uid,
        "cmdline": list(process.cmdline),
        "started": _iso(started),
        "uptime_seconds": round(lineage.uptime, 2) if lineage and lineage.uptime is not None else None,
        "unit": lineage.unit if lineage else None,
        "container": None if container is None else _container_with_name(container),
        "cgroup": lineage.cgroup if lineage else None,
        "parents": [{"pid": a.pid, "name": a.name} for a in lineage.ancestors] if lineage else [],
        "exe": details.exe if details else None,
        "cwd": details.cwd if details else None,
        "status": details.status if details else None,
        "children": list(details.children) if details else [],
        "inodes": list(entry.inodes),
        "fds": sorted({fd for _, fds in entry.fds for fd in fds}),
        "reached_through": [reached_object(f) for f in getattr(entry, "reached_through", ())],
    }


def who_object(result: WhoResult, services: Services | None, places=None) -> dict[str, Any]:
    from portscope.render import jsonout  # json is loaded for --json only

    places = result.places if result.places is not None else places
    return {
        "query": query_object(result.target, result.netns),
        "sockets": [jsonout.socket_object(s, result.holders_of(s), services, places) for s in result.sockets],
        "processes": [process_object(p) for p in result.processes],
    }


def render_who(result: WhoResult | UnixWhoResult, env: Environment, names: Names, *, as_json: bool) -> None:
    if isinstance(result, UnixWhoResult):
        from portscope.render.who_unix import render_unix_who

        render_unix_who(result, env, names, as_json=as_json)
        return
    partial = partial_view_note(result, names.caller_is_root)
    if as_json:
        from portscope.render import jsonout

        jsonout.dump(who_object(result, names.services, names.places), env.stdout)
        for unheld in result.hidden[:1]:
            env.note(
                f"owners of {len(result.hidden)} socket(s) are hidden; "
                f"{hidden_owner_advice(names.caller_is_root, result.snapshot.join.denied_reason)} "
                f"(first: inode {unheld.socket.inode}, uid {unheld.socket.uid})"
            )
        for note in ([partial] if partial else []) + list(result.snapshot.warnings):
            env.note(safe_text(note))
        return
    page = PageBuilder(result, names, unicode=env.unicode, program=env.program).build()
    if env.is_tty:
        write_rich(page, env)
        return
    footer, page.footer = page.footer, []
    write_plain(page, env.stdout, env.width, env.paint if env.colour else None)
    for note in footer:
        env.note(safe_text(note))
