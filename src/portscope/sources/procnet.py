"""Fallback: parse /proc/net/{tcp,tcp6,udp,udp6} into the same records as the netlink path.

What /proc cannot know stays ``None``: the bound device, IPV6_V6ONLY, a listener's backlog, the
socket cookie. Bound-only TCP sockets are not listed in /proc at all.

The kernel prints these tables a page at a time and finds its place again for the next page by
position in the hash chains; sockets that come and go meanwhile shift that position, so under churn
one read() lists some sockets twice (hundreds of lines at 8k connections/s). Each socket is kept
once: by its inode, or, for sockets without a file (TIME-WAIT, request sockets, children not yet
accepted), by its state and endpoints, which the kernel's hash tables keep unique.
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py builds four enums at import (~1/3 of python -c pass)
import os
import re
import sys

from portscope.errors import SourceError
from portscope.model.records import (
    TCP_STATE_BY_NUMBER,
    TIMER_BY_CODE,
    UDP_STATE_BY_NUMBER,
    Family,
    Proto,
    Socket,
    State,
)
from portscope.sources.linux import CLOCK_TICKS

FILE_NAMES = {
    (Proto.TCP, Family.IPV4): "tcp",
    (Proto.TCP, Family.IPV6): "tcp6",
    (Proto.UDP, Family.IPV4): "udp",
    (Proto.UDP, Family.IPV6): "udp6",
}
_PLACEHOLDER_STATES = {3, 6, 12}  # SYN_RECV, TIME_WAIT, NEW_SYN_RECV: uid/inode are placeholders
_LISTEN = 10


_HEX = re.compile(r"[0-9A-Fa-f]+")
_DECIMAL = re.compile(r"[0-9]+")


def _hex(text: str) -> int:
    # int(text, 16) would also take "-1f", "0x1f", "1_f" and non-ASCII digits
    if not _HEX.fullmatch(text):
        raise ValueError(f"not hex: {text[:20]!r}")
    return int(text, 16)


def _decimal(text: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"not a number: {text[:20]!r}")
    return int(text)


def _decode_address(hex_text: str, family: Family, cache: dict[str, str]) -> str:
    text = cache.get(hex_text)
    if text is not None:
        return text
    # The kernel prints each 32-bit word of the address in host byte order.
    raw = b"".join(_hex(hex_text[i : i + 8]).to_bytes(4, sys.byteorder) for i in range(0, len(hex_text), 8))
    text = socket.inet_ntop(socket.AF_INET if family is Family.IPV4 else socket.AF_INET6, raw)
    cache[hex_text] = text
    return text


def parse_proc_net(
    text: str,
    proto: Proto,
    family: Family,
    *,
    source: str,
    netns: int | None = None,
    states: frozenset[State] | None = None,
) -> list[Socket]:
    """Parse the text of one /proc/net table. Raises :class:`SourceError` naming the source."""
    state_by_number = TCP_STATE_BY_NUMBER if proto is Proto.TCP else UDP_STATE_BY_NUMBER
    hex_len = 8 if family is Family.IPV4 else 32
    cache: dict[str, str] = {}
    sockets: list[Socket] = []
    seen: set[int | tuple[str, str, str]] = set()  # inodes, and (local, remote, state) of sockets without one
    lines = text.split("\n")
    if not lines or "local_address" not in lines[0]:
        raise SourceError(source, "missing header line (not a /proc/net socket table?)")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        try:
            local_hex, local_port_hex = fields[1].split(":")
            remote_hex, remote_port_hex = fields[2].split(":")
            state_no = _hex(fields[3])
            tx_hex, rx_hex = fields[4].split(":")
            timer_hex, when_hex = fields[5].split(":")
            uid = _decimal(fields[7])
            inode = _decimal(fields[9])
            if len(local_hex) != hex_len or len(remote_hex) != hex_len:
                raise ValueError("address of the wrong length for this family")
            local_port = _hex(local_port_hex)
            remote_port = _hex(remote_port_hex)
            if local_port > 0xFFFF or remote_port > 0xFFFF:
                raise ValueError("port out of range")
            timer_code = _hex(timer_hex)
            when = _hex(when_hex)
            recv_q = _hex(rx_hex)
            send_q = _hex(tx_hex)
            local = _decode_address(local_hex, family, cache)
            remote = _decode_address(remote_hex, family, cache)
        except (IndexError, ValueError) as exc:
            raise SourceError(source, f"line {number}: cannot parse {line.strip()[:60]!r} ({exc})") from None
        state = state_by_number.get(state_no)
        if state is None:
            raise SourceError(source, f"line {number}: unknown {proto.value} state {state_no:#x}")
        if states is not None and state not in states:
            continue
        key = inode or (fields[1], fields[2], fields[3])
        if key in seen:
            continue  # a line the kernel repeated (see the module docstring)
        seen.add(key)
        placeholder = state_no in _PLACEHOLDER_STATES or timer_code == 3  # a timewait sock
        no_peer = remote_port == 0 and remote_hex.strip("0") == ""
        timer = TIMER_BY_CODE.get(timer_code)
        sockets.append(
            Socket(
                proto,
                family,
                state,
                local,
                local_port,
                None if no_peer else remote,
                None if no_peer else remote_port,
                recv_q,
                None if (proto is Proto.TCP and state_no == _LISTEN) else send_q,
                None if placeholder else uid,
                inode or None,
                None,
                None,
                None,
                timer,
                when * 1000 // CLOCK_TICKS if timer else None,
                netns,
                None,
            )
        )
    return sockets


def read_proc_net(
    proto: Proto,
    family: Family,
    *,
    net_dir: str = "/proc/thread-self/net",
    netns: int | None = None,
    states: frozenset[State] | None = None,
) -> list[Socket]:
    path = os.path.join(net_dir, FILE_NAMES[(proto, family)])
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        if family is Family.IPV6:
            return []  # IPv6 disabled: no sockets of that family exist
        raise SourceError(path, "not found") from None
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from None
    return parse_proc_net(text, proto, family, source=path, netns=netns, states=states)


# The per-namespace counters of /proc/net/sockstat{,6} that count TCP and UDP sockets.
_SOCKSTAT_COUNTERS = {("TCP:", "inuse"), ("TCP:", "tw"), ("UDP:", "inuse"), ("TCP6:", "inuse"), ("UDP6:", "inuse")}


def parse_sockstat(text: str) -> int:
    """TCP and UDP sockets (IPv4 and IPv6, TIME-WAIT too) counted in sockstat text, without listing them."""
    total = 0
    for line in text.splitlines():
        words = line.split()
        for name, value in zip(words[1::2], words[2::2], strict=False):
            if (words[0], name) in _SOCKSTAT_COUNTERS and value.isdigit():
                total += int(value)
    return total


def socket_count(net_dir: str = "/proc/thread-self/net") -> int | None:
    """About how many sockets a full dump will return (None when sockstat is unreadable)."""
    texts = []
    for name in ("sockstat", "sockstat6"):
        try:
            with open(os.path.join(net_dir, name), encoding="ascii", errors="replace") as handle:
                texts.append(handle.read())
        except OSError:
            if name == "sockstat":
                return None
    return parse_sockstat("\n".join(texts))
