"""Values for shell completion: ports in use, local addresses, users, pids, interfaces, states.

Each ``complete_*`` function is a click ``shell_complete`` callback ``(ctx, param, incomplete)``.
They run on every <TAB>, so they stay cheap and lean: the standard library only (``snapshot`` without
the process join, /proc and /sys text, ``pwd``), never rich or pyroute2. A completion must never
print a traceback into the user's shell: every callback answers nothing rather than fail.

Where a command line already names a network namespace (``--netns``), ports, addresses and
interfaces are read inside it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import click
from click.shell_completion import CompletionItem

from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.notation import format_host
from portscope.model.query import STATE_ALIASES, STATE_GROUPS, state_choices
from portscope.model.records import State

# CompletionItem type telling our shell scripts not to append a space (the user goes on typing).
NOSPACE = "nospace"

Callback = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _never_fail(callback: Callback) -> Callback:
    @functools.wraps(callback)
    def safe(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return _unique(callback(ctx, param, incomplete))
        except Exception:  # completion answers nothing rather than break the user's prompt
            return []

    return safe


def _unique(items: list[CompletionItem]) -> list[CompletionItem]:
    """Each value offered once, in the order first offered."""
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.value not in seen:
            seen.add(item.value)
            unique.append(item)
    return unique


def _split_list(incomplete: str) -> tuple[str, str]:
    """Repeatable options take comma-separated lists: complete the last item, keep the ones before."""
    head, comma, last = incomplete.rpartition(",")
    return head + comma, last


def _given(ctx: click.Context, param: click.Parameter, done: str) -> set[str]:
    """Items already on the command line for this option: earlier in the list being typed
    (``listen,<TAB>``) and in earlier uses of it (``--state listen --state <TAB>``); never offered again."""
    given = {item.strip().lower() for item in done.split(",") if item.strip()}
    earlier = ctx.params.get(param.name) if param.name else None
    if isinstance(earlier, (tuple, list)):
        given |= {item.strip().lower() for value in earlier for item in str(value).split(",") if item.strip()}
    return given


def _netns_of(ctx: click.Context) -> str | None:
    while ctx is not None:
        value = ctx.params.get("netns")
        if value:
            return str(value)
        ctx = ctx.parent
    return None


@contextlib.contextmanager
def _inside_netns(ctx: click.Context) -> Iterator[None]:
    spec = _netns_of(ctx)
    if spec is None:
        yield
        return
    from portscope.sources import netns

    with netns.entered(netns.resolve(spec)):
        yield


# ---------------------------------------------------------------------------------------------------
# States


def state_help(name: str) -> str | None:
    if name in STATE_GROUPS:
        members = sorted(s.value for s in STATE_GROUPS[name])
        return "every state" if name == "all" else ", ".join(members)
    if name in STATE_ALIASES:
        return f"= {STATE_ALIASES[name].value}"
    return None


@_never_fail
def complete_states(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--state``: state names, groups and aliases; after a comma, the next one."""
    done, last = _split_list(incomplete.lower())
    given = _given(ctx, param, done)
    return [
        CompletionItem(done + name, help=state_help(name))
        for name in state_choices()
        if name.startswith(last) and name not in given
    ]


# ---------------------------------------------------------------------------------------------------
# Ports in use (who)


@dataclass_lite(frozen=True, slots=True)
class PortInUse:
    port: int
    protocols: tuple[str, ...]  # "tcp", "udp"
    addresses: tuple[str, ...]  # local addresses holding it
    listening: bool  # a TCP listener or a bound UDP socket holds it
    service: str | None


LISTENING_STATES = frozenset({State.LISTEN, State.UNCONN})


def ports_in_use(*, listening: bool = True) -> list[PortInUse]:
    """Local ports in use in this namespace, by port number, with their /etc/services names.

    ``listening``: only listeners and bound UDP sockets (what people ask about); otherwise the
    local ports of every other socket too (connections, TIME-WAIT).
    """
    from portscope.engine.snapshot import snapshot
    from portscope.model.query import Query
    from portscope.sources.services import load_services

    # Bound-only TCP sockets stay out: asking for them makes the snapshot probe with a trial bind.
    states = LISTENING_STATES if listening else frozenset(State) - {State.BOUND}
    snap = snapshot(Query(states=states, join_processes=False))
    protocols: dict[int, set[str]] = {}
    addresses: dict[int, set[str]] = {}
    for sock in snap.sockets:
        protocols.setdefault(sock.local_port, set()).add(sock.proto.value)
        addresses.setdefault(sock.local_port, set()).add(sock.local_address)
    services = load_services()
    result = []
    for port in sorted(protocols):
        protos = tuple(sorted(protocols[port]))
        name = next((n for n in (services.name_of(port, p) for p in protos) if n), None)
        result.append(PortInUse(port, protos, tuple(sorted(addresses[port])), listening, name))
    return result


def _port_help(use: PortInUse) -> str:
    what = "+".join(use.protocols) + (" listening" if use.listening else " in use")
    return f"{use.service}, {what}" if use.service else what


def _covers(address_text: str, local_address: str) -> bool:
    """Does a socket bound to ``local_address`` hold the port for ``address_text``?"""
    try:
        import ipaddress  # (imported at <TAB> only)

        wanted = ipaddress.ip_address(address_text.strip("[]").partition("%")[0])
        held = ipaddress.ip_address(local_address)
    except ValueError:
        return False
    return held == wanted or (held.is_unspecified and held.version == wanted.version)


def port_candidates(incomplete: str, uses: list[PortInUse]) -> list[CompletionItem]:
    """Candidates for a ``who`` argument: ``80``, ``:80``, ``80/tcp``, ``ADDR:80``, ``[::1]:80``, ``ssh``."""
    if "/" in incomplete:  # 8080/<TAB>: the protocols actually on that port
        port_text, _, proto_part = incomplete.partition("/")
        return [
            CompletionItem(f"{port_text}/{proto}", help=_port_help(use))
            for use in uses
            if port_text.lstrip(":") == str(use.port)
            for proto in use.protocols
            if proto.startswith(proto_part)
        ]
    if incomplete[:1].isalpha() and ":" not in incomplete:  # a service name
        return [
            CompletionItem(use.service, help=f"port {use.port}, {'+'.join(use.protocols)}")
            for use in uses
            if use.service and use.service.startswith(incomplete)
        ]
    address, colon, port_part = incomplete.rpartition(":")
    if colon and address and address != "[":
        uses = [u for u in uses if any(_covers(address, a) for a in u.addresses)]
    return [
        CompletionItem(f"{address}{colon}{use.port}", help=_port_help(use))
        for use in uses
        if str(use.port).startswith(port_part)
    ]


@_never_fail
def complete_ports(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``who PORT``: the ports something listens on; when none matches, any local port in use."""
    with _inside_netns(ctx):
        items = port_candidates(incomplete, ports_in_use(listening=True))
        if not items and incomplete:
            items = port_candidates(incomplete, ports_in_use(listening=False))
    return items


# ---------------------------------------------------------------------------------------------------
# Local addresses (can-bind)


@dataclass_lite(frozen=True, slots=True)
class LocalAddress:
    address: str
    interface: str | None
    link_local: bool = False  # needs its interface as scope: [fe80::1%eth0]
    tentative: bool = False  # IPv6 duplicate address detection still running: bind() fails for now

    @property
    def version(self) -> int:
        return 6 if ":" in self.address else 4

    def bind_text(self) -> str:
        """How can-bind takes it: ``10.0.0.1:`` or ``[fe80::1%eth0]:``."""
        scope = f"%{self.interface}" if self.version == 6 and self.link_local and self.interface else ""
        return format_host(self.address + scope) + ":"  # the scope inside the brackets, as can-bind reads it

    def describe(self) -> str:
        parts = [f"IPv{self.version}", self.interface, "link-local" if self.link_local else None]
        return ", ".join(p for p in [*parts, "tentative" if self.tentative else None] if p)


def local_addresses(net_dir: str | None = None) -> list[LocalAddress]:
    """Addresses a socket may bind in this thread's network namespace (read from /proc, no netlink)."""
    from portscope.errors import SourceError
    from portscope.sources.addresses import DEFAULT_NET_DIR, read_local_addresses

    try:
        local = read_local_addresses(net_dir or DEFAULT_NET_DIR)
    except SourceError:  # completion offers the wildcards then
        return []
    found = [LocalAddress(str(address), None) for address in local.ipv4_addresses]
    found += [
        LocalAddress(str(entry.address), entry.interface, entry.scope == "link", entry.tentative)
        for entry in local.ipv6
        if not entry.dadfailed  # DAD failed: never bindable
    ]
    return found


WILDCARDS = (
    ("0.0.0.0:", "every IPv4 address"),
    ("[::]:", "every IPv6 address (and IPv4 unless v6only)"),
    ("localhost:", "the loopback address"),
)


@_never_fail
def complete_local_addresses(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``can-bind ADDR:PORT``: wildcards and this host's addresses, ending in ``:`` for the port."""
    if "]:" in incomplete or (":" in incomplete and not incomplete.startswith("[")):
        return []  # the address is typed; the port is the user's choice
    with _inside_netns(ctx):
        addresses = local_addresses()
    items = [CompletionItem(text, type=NOSPACE, help=help_text) for text, help_text in WILDCARDS]
    items += [CompletionItem(local.bind_text(), type=NOSPACE, help=local.describe()) for local in addresses]
    return [item for item in items if item.value.startswith(incomplete)]


# ---------------------------------------------------------------------------------------------------
# Users, processes, interfaces, namespaces


@_never_fail
def complete_users(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--user``: user names (uids when a digit is typed)."""
    import pwd

    done, last = _split_list(incomplete)
    given = _given(ctx, param, done)
    entries = [
        e
        for e in sorted(pwd.getpwall(), key=lambda e: e.pw_uid)
        if e.pw_name.lower() not in given and str(e.pw_uid) not in given
    ]
    if last[:1].isdigit():
        return [CompletionItem(f"{done}{e.pw_uid}", help=e.pw_name) for e in entries if str(e.pw_uid).startswith(last)]
    return [CompletionItem(done + e.pw_name, help=f"uid {e.pw_uid}") for e in entries if e.pw_name.startswith(last)]


def running_processes(proc_root: str = "/proc") -> list[tuple[int, str]]:
    """(pid, name) of every process, by pid."""
    result = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "comm"), encoding="utf-8", errors="replace") as handle:
                result.append((int(entry), handle.read().rstrip("\n")))
        except OSError:  # it exited meanwhile
            continue
    return sorted(result)


@_never_fail
def complete_pids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--pid``: running pids with their names; a typed name picks pids by process name."""
    done, last = _split_list(incomplete)
    given = _given(ctx, param, done)
    processes = [(pid, name) for pid, name in running_processes() if str(pid) not in given]
    if last and not last.isdigit():
        return [CompletionItem(f"{done}{pid}", help=name) for pid, name in processes if name.startswith(last)]
    return [CompletionItem(f"{done}{pid}", help=name) for pid, name in processes if str(pid).startswith(last)]


def interface_names() -> list[tuple[int, str]]:
    """(index, name) of the interfaces of this thread's network namespace."""
    try:
        import socket

        return sorted(socket.if_nameindex())
    except OSError:
        return [(0, name) for name in sorted(os.listdir("/sys/class/net"))]


@_never_fail
def complete_interfaces(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--device``: interface names."""
    with _inside_netns(ctx):
        interfaces = interface_names()
    return [
        CompletionItem(name, help=f"index {index}" if index else None)
        for index, name in interfaces
        if name.startswith(incomplete)
    ]


@_never_fail
def complete_netns(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--netns``: the names ``ip netns`` knows (a pid or a path works too)."""
    from portscope.sources.netns import NETNS_RUN_DIR

    names = sorted(os.listdir(NETNS_RUN_DIR)) if os.path.isdir(NETNS_RUN_DIR) else []
    return [CompletionItem(name, help="network namespace") for name in names if name.startswith(incomplete)]


# ---------------------------------------------------------------------------------------------------
# ls EXPRESSION: the words of an ss filter

EXPRESSION_TERMS = {
    "state": "states for the whole expression (first), or a term",
    "exclude": "every state but these",
    "sport": "local port: = != < > <= >= :PORT",
    "dport": "remote port: = != < > <= >= :PORT",
    "src": "local address: ADDR[/LEN][:PORT]",
    "dst": "remote address: ADDR[/LEN][:PORT]",
    "dev": "bound to a device",
    "autobound": "the kernel picked the local port",
    "fwmark": "socket mark: MARK[/MASK]",
    "pid": "held by a process",
    "user": "owned by a user",
    "process": "a holder's name or command line contains",
    "unit": "a holder's systemd unit",
    "container": "in a container",
    "netns": "in a network namespace",
    "and": None,
    "or": None,
    "not": None,
}


@_never_fail
def complete_expression(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``ls`` EXPRESSION: the terms, then what the last one takes (states, devices, pids, users)."""
    words = [w for w in ctx.params.get(param.name or "", ()) or () if w not in ("=", "==", "eq", "!=", "ne")]
    last = words[-1].lower() if words else ""
    if last in ("state", "exclude", "excl"):
        from portscope.model.filter import state_words  # only on this <TAB>

        return [CompletionItem(name) for name in state_words() if name.startswith(incomplete.lower())]
    if last == "dev":
        return complete_interfaces(ctx, param, incomplete)
    if last == "pid":
        return complete_pids(ctx, param, incomplete)
    if last == "user":
        return complete_users(ctx, param, incomplete)
    if last == "netns":
        return complete_netns(ctx, param, incomplete)
    if last in ("sport", "dport", "src", "dst", "fwmark", "process", "unit", "container"):
        return []  # a value of the user's own
    return [CompletionItem(term, help=text) for term, text in EXPRESSION_TERMS.items() if term.startswith(incomplete)]


# Signals (kill)

# the signals people send to stop a server, offered first; then the rest by number
COMMON_SIGNALS = ("TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2")


def signal_choices() -> list[tuple[str, int]]:
    """(name without SIG, number) of every signal that can be sent, the common ones first."""
    import signal

    named = {s.name[3:]: int(s) for s in signal.Signals if not s.name.startswith("SIG_") and int(s) > 0}
    common = [(name, named[name]) for name in COMMON_SIGNALS if name in named]
    rest = sorted((item for item in named.items() if item[0] not in COMMON_SIGNALS), key=lambda item: item[1])
    return common + rest


@_never_fail
def complete_signals(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``--signal``: signal names (``TERM``; ``SIGTERM`` when that is being typed) or numbers."""
    typed = incomplete.upper()
    if typed.isdigit():
        numbers = [(name, number) for name, number in signal_choices() if str(number).startswith(typed)]
        return [CompletionItem(str(number), help=f"SIG{name}") for name, number in numbers]
    prefix = "SIG" if typed.startswith("SIG") else ""
    return [
        CompletionItem(prefix + name, help=f"signal {number}")
        for name, number in signal_choices()
        if (prefix + name).startswith(typed)
    ]
