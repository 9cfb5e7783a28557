"""How sockets are written for people: endpoints, protocol labels, state labels, once for every output.

Tables, ``who``, ``can-bind`` and completion all write an endpoint as ``ADDR:PORT`` with IPv6 in brackets
(``[::1]:8080``), a bound device after the host (``[fe80::1]%eth0:53``, as ss writes it), a protocol as
``tcp`` / ``tcp6``, and a state by its ss-style label (``ESTAB``, ``TIME-WAIT``). Pure text over
the records, for every layer (the library's own descriptions too); completion imports it without rich.
"""

from __future__ import annotations

from portscope.model.records import Family, Proto, State

STATE_LABELS: dict[State, str] = {
    State.LISTEN: "LISTEN",
    State.ESTABLISHED: "ESTAB",
    State.SYN_SENT: "SYN-SENT",
    State.SYN_RECV: "SYN-RECV",
    State.FIN_WAIT_1: "FIN-WAIT-1",
    State.FIN_WAIT_2: "FIN-WAIT-2",
    State.TIME_WAIT: "TIME-WAIT",
    State.CLOSE_WAIT: "CLOSE-WAIT",
    State.LAST_ACK: "LAST-ACK",
    State.CLOSING: "CLOSING",
    State.CLOSE: "CLOSE",
    State.BOUND: "BOUND",
    State.UNCONN: "UNCONN",
}
STATE_LABELS_BY_VALUE: dict[str, str] = {state.value: label for state, label in STATE_LABELS.items()}


def is_ipv6_text(address: str) -> bool:
    """An address given as text, without its family: only IPv6 text has a colon."""
    return ":" in address


def format_host(address: str, family: Family | None = None) -> str:
    """The host part of an endpoint: IPv6 in brackets. ``family`` None: read it from the text."""
    ipv6 = family is Family.IPV6 if family is not None else is_ipv6_text(address)
    return f"[{address}]" if ipv6 else address


def format_endpoint(
    address: str | None, port: int | None, family: Family | None = None, interface: str | None = None
) -> str:
    """``127.0.0.1:80``, ``[::1]:80``, ``[fe80::1]%eth0:53``; ``*`` when there is no address or port."""
    if address is None or port is None:
        return "*"
    host = format_host(address, family)
    if interface:
        host = f"{host}%{interface}"
    return f"{host}:{port}"


def proto_label(proto: Proto, family: Family) -> str:
    """``tcp``, ``tcp6``, ``udp``, ``udp6``."""
    return proto.value + ("6" if family is Family.IPV6 else "")
