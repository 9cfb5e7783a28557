"""What a caller asks for: the query every command hands to :func:`portscope.engine.snapshot.snapshot`.

Parsing helpers for user input (states, ports, ranges) live here too, so that the CLI stays thin and
every command rejects bad input the same way; addresses and CIDRs are read by :mod:`portscope.model.endpoint`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import UDP_STATES, UNIX_STATES, Backend, Detail, Family, Proto, State

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from portscope.model.filter import Filter

if TYPE_CHECKING:
    from portscope.model.endpoint import ScopedNetwork

if TYPE_CHECKING:  # ipaddress is loaded when an address filter is given (--src, --dst)
    import ipaddress

    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Groups in the spirit of ss(8)'s state filter.
STATE_GROUPS: dict[str, frozenset[State]] = {
    "all": frozenset(State),
    "connected": frozenset(
        {
            State.ESTABLISHED,
            State.SYN_SENT,
            State.SYN_RECV,
            State.FIN_WAIT_1,
            State.FIN_WAIT_2,
            State.TIME_WAIT,
            State.CLOSE_WAIT,
            State.LAST_ACK,
            State.CLOSING,
        }
    ),
    "synchronized": frozenset(
        {
            State.ESTABLISHED,
            State.SYN_RECV,
            State.FIN_WAIT_1,
            State.FIN_WAIT_2,
            State.TIME_WAIT,
            State.CLOSE_WAIT,
            State.LAST_ACK,
            State.CLOSING,
        }
    ),
    "bucket": frozenset({State.SYN_RECV, State.TIME_WAIT}),
    "big": frozenset(State) - {State.SYN_RECV, State.TIME_WAIT},
    "listening": frozenset({State.LISTEN, State.UNCONN}),
}
# Without -a, ls hides TIME-WAIT and the bound-only / closed sockets, as ss does.
DEFAULT_STATES: frozenset[State] = frozenset(State) - {State.TIME_WAIT, State.BOUND, State.CLOSE}
STATE_ALIASES: dict[str, State] = {
    "estab": State.ESTABLISHED,
    "syn-received": State.SYN_RECV,
    "bound-inactive": State.BOUND,
    "closed": State.CLOSE,
}


def state_choices() -> list[str]:
    return [s.value for s in State] + sorted(STATE_GROUPS) + sorted(STATE_ALIASES)


def parse_states(names: Iterable[str]) -> frozenset[State]:
    """Turn state names and group names into a set of states."""
    states: set[State] = set()
    for raw in names:
        name = raw.strip().lower().replace("_", "-")
        if not name:
            raise UsageError("empty state name")
        if name in STATE_GROUPS:
            states |= STATE_GROUPS[name]
        elif name in STATE_ALIASES:
            states.add(STATE_ALIASES[name])
        else:
            try:
                states.add(State(name))
            except ValueError:
                import difflib  # only on this error path

                close = difflib.get_close_matches(name, state_choices(), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise UsageError(f"unknown state '{raw}' ({hint}known: {', '.join(state_choices())})") from None
    return frozenset(states)


@dataclass_lite(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def port_in_ranges(port: int | None, ranges: Iterable[PortRange]) -> bool:
    return port is not None and any(r.low <= port <= r.high for r in ranges)


_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() also takes "٨٠", "8_0" and " 80"
_NEGATIVE = re.compile(r"-[0-9]+")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(/[A-Za-z]+)?")
MAX_UID = 4294967294  # (uid_t)-1 means "unchanged" to setresuid() and "no owner" in the kernel


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "..."


def parse_decimal(text: str, what: str, low: int, high: int) -> int:
    """A number typed by a user: ASCII digits only, within ``low..high`` (ports, pids, uids)."""
    if _NEGATIVE.fullmatch(text):
        raise UsageError(f"{what} {_short(text)} is out of range ({low}-{high})")
    if not _DIGITS.fullmatch(text):
        raise UsageError(f"not a {what} number: '{text}'" if what == "port" else f"not a {what}: '{text}'")
    if len(text.lstrip("0")) > len(str(high)):  # also keeps int() clear of its 4300-digit limit
        raise UsageError(f"{what} {_short(text)} is out of range ({low}-{high})")
    number = int(text)
    if not low <= number <= high:
        raise UsageError(f"{what} {number} is out of range ({low}-{high})")
    return number


def parse_port_number(text: str, *, allow_zero: bool = False) -> int:
    return parse_decimal(text, "port", 0 if allow_zero else 1, 65535)


def parse_port_range(
    text: str, *, services=None, proto: Proto | None = None, ranges: bool = True, allow_zero: bool = False
) -> PortRange:
    """Parse ``80``, ``8000-8100`` (``ranges``) or (with a services table) ``http``/``http/tcp``."""
    text = text.strip()
    if not text:
        raise UsageError("empty port")
    if _DIGITS.fullmatch(text) or _NEGATIVE.fullmatch(text):
        port = parse_port_number(text, allow_zero=allow_zero)
        return PortRange(port, port)
    low_text, dash, high_text = text.partition("-")
    if dash and _DIGITS.fullmatch(low_text) and _DIGITS.fullmatch(high_text):
        if not ranges:
            raise UsageError(f"one port, not a range: '{text}'")
        low, high = parse_port_number(low_text, allow_zero=allow_zero), parse_port_number(high_text)
        if low > high:
            raise UsageError(f"port range '{text}' runs backwards")
        return PortRange(low, high)
    if services is None or not _SERVICE_NAME.fullmatch(text):
        kind = "port number" if text[0].isdigit() or services is None else "port number or service name"
        raise UsageError(f"not a {kind}: '{text}'")
    try:
        port = services.port_of(text, proto)
    except UsageError:
        if text[0].isdigit():  # "8x", "8_0": a mistyped number far more often than a service (3com-tsmux)
            raise UsageError(f"not a port number: '{text}'") from None
        raise
    return PortRange(port, port)


ALL_NAMESPACES = "all"  # --netns all: every network namespace on the host


@dataclass_lite(frozen=True)
class Query:
    """Which sockets to list. ``None`` means "no restriction" for every filter."""

    protocols: frozenset[Proto] = frozenset(Proto)
    families: frozenset[Family] = frozenset(Family)
    states: frozenset[State] | None = None
    local_ports: tuple[PortRange, ...] | None = None
    remote_ports: tuple[PortRange, ...] | None = None
    any_ports: tuple[PortRange, ...] | None = None  # local or remote
    # local / remote address filters (model.endpoint.parse_network); a ScopedNetwork also names the device
    local_networks: tuple[IPNetwork | ScopedNetwork, ...] | None = None
    remote_networks: tuple[IPNetwork | ScopedNetwork, ...] | None = None
    pids: frozenset[int] | None = None
    process_names: tuple[str, ...] | None = None  # substrings of the process name or its command line
    uids: frozenset[int] | None = None
    join_processes: bool = True
    backend: Backend = Backend.AUTO
    netns: str | None = None  # a name under /run/netns, a path, a pid, or ALL_NAMESPACES
    # UNIX sockets too (opt-in: a TCP/UDP listing does no work for them). ``protocols`` may then be empty:
    # UNIX sockets only. Port and address filters match no UNIX socket.
    unix: bool = False
    filter: Filter | None = None  # an ss filter expression (model/filter.py), ANDed with the rest
    details: frozenset[Detail] = frozenset()  # what to ask the kernel for beyond the socket list

    @property
    def every_namespace(self) -> bool:
        return self.netns == ALL_NAMESPACES

    @property
    def needs_processes(self) -> bool:
        return (
            self.join_processes or bool(self.pids or self.process_names) or bool(self.filter and self.filter.needs_join)
        )

    def kernel_states(self, proto: Proto) -> frozenset[State]:
        """The states worth asking the kernel for, for one protocol."""
        wanted = frozenset(State) if self.states is None else self.states
        if self.filter is not None:
            wanted = wanted & self.filter.possible_states()
        if proto is Proto.UDP:
            return wanted & UDP_STATES
        return wanted - {State.UNCONN, State.CLOSE}

    @property
    def unix_states(self) -> frozenset[State] | None:
        """The UNIX socket states to ask the kernel for; None when no UNIX socket can match the query."""
        if not self.unix or self.local_ports or self.remote_ports or self.any_ports:
            return None
        if self.local_networks or self.remote_networks:
            return None
        wanted = UNIX_STATES if self.states is None else self.states & UNIX_STATES
        return wanted or None

    def __post_init__(self) -> None:
        if self.netns is not None and not self.netns.strip():
            raise UsageError("empty network namespace (a name under /run/netns, a pid or a path)")


def parse_user(text: str) -> int:
    """A user name or a numeric uid (0-4294967294)."""
    text = text.strip()
    if not text:
        raise UsageError("empty user")
    if _DIGITS.fullmatch(text) or _NEGATIVE.fullmatch(text):
        return parse_decimal(text, "uid", 0, MAX_UID)
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid
    except (KeyError, ValueError):  # ValueError: an embedded NUL
        raise UsageError(f"unknown user '{text}'") from None


def split_values(values: Iterable[str], option: str) -> list[str]:
    """Repeatable options also take comma-separated lists: ``--port 80,443``. Empty items are errors:
    ``--port ''`` silently matching everything would answer a question nobody asked."""
    parts = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                raise UsageError(f"empty value for {option}: '{value}'")
            parts.append(part.strip())
    return parts
