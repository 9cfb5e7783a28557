"""What a caller asks for: the query every command hands to :func:`portscope.engine.snapshot.snapshot`.

Parsing helpers for user input (states, ports, ranges, CIDRs) live here too, so that the CLI stays
thin and every command rejects bad input the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from portscope.errors import UsageError
from portscope.model.records import UDP_STATES, Backend, Family, Proto, State

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
        if name in STATE_GROUPS:
            states |= STATE_GROUPS[name]
        elif name in STATE_ALIASES:
            states.add(STATE_ALIASES[name])
        else:
            try:
                states.add(State(name))
            except ValueError:
                raise UsageError(f"unknown state {raw!r} (known: {', '.join(state_choices())})") from None
    return frozenset(states)


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def port_in_ranges(port: int | None, ranges: Iterable[PortRange]) -> bool:
    return port is not None and any(r.low <= port <= r.high for r in ranges)


def parse_port_number(text: str, *, allow_zero: bool = False) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise UsageError(f"not a port number: {text!r}") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise UsageError(f"port {port} is out of range ({low}-65535)")
    return port


def parse_port_range(text: str, *, services=None, proto: Proto | None = None) -> PortRange:
    """Parse ``80``, ``8000-8100`` or (with a services table) ``http``/``http/tcp``."""
    text = text.strip()
    if not text:
        raise UsageError("empty port")
    if text[0].isdigit():
        if "-" in text:
            low_text, _, high_text = text.partition("-")
            low, high = parse_port_number(low_text), parse_port_number(high_text)
            if low > high:
                raise UsageError(f"port range {text!r} runs backwards")
            return PortRange(low, high)
        port = parse_port_number(text)
        return PortRange(port, port)
    if services is None:
        raise UsageError(f"not a port number: {text!r}")
    port = services.port_of(text, proto)
    return PortRange(port, port)


def parse_network(text: str) -> IPNetwork:
    """An address or CIDR; brackets around IPv6 are accepted."""
    cleaned = text.strip()
    if cleaned.startswith("[") and "]" in cleaned:
        inner, _, rest = cleaned[1:].partition("]")
        cleaned = inner + rest
    try:
        return ipaddress.ip_network(cleaned, strict=False)
    except ValueError:
        raise UsageError(f"not an address or CIDR: {text!r}") from None


@dataclass(frozen=True)
class Query:
    """Which sockets to list. ``None`` means "no restriction" for every filter."""

    protocols: frozenset[Proto] = frozenset(Proto)
    families: frozenset[Family] = frozenset(Family)
    states: frozenset[State] | None = None
    local_ports: tuple[PortRange, ...] | None = None
    remote_ports: tuple[PortRange, ...] | None = None
    any_ports: tuple[PortRange, ...] | None = None  # local or remote
    local_networks: tuple[IPNetwork, ...] | None = None
    remote_networks: tuple[IPNetwork, ...] | None = None
    pids: frozenset[int] | None = None
    process_names: tuple[str, ...] | None = None  # substrings of the process name
    uids: frozenset[int] | None = None
    join_processes: bool = True
    backend: Backend = Backend.AUTO
    netns: str | None = None  # a name under /run/netns, a path, or a pid

    @property
    def needs_processes(self) -> bool:
        return self.join_processes or bool(self.pids or self.process_names)

    def kernel_states(self, proto: Proto) -> frozenset[State]:
        """The states worth asking the kernel for, for one protocol."""
        wanted = frozenset(State) if self.states is None else self.states
        if proto is Proto.UDP:
            return wanted & UDP_STATES
        return wanted - {State.UNCONN, State.CLOSE}


def parse_user(text: str) -> int:
    """A user name or a numeric uid."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise UsageError(f"unknown user {text!r}") from None


def split_values(values: Iterable[str]) -> list[str]:
    """Repeatable options also take comma-separated lists: ``--port 80,443``."""
    return [part for value in values for part in value.split(",") if part.strip()]
