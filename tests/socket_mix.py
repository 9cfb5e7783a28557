"""A namespace full of mixed real sockets: every state the collector must see, both families."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field, fields

from netns_util import Netns
from portscope.model.records import Socket, State

OTHER_UID = 4242  # sockets fchown()ed to this uid: sk_uid follows (ss shows it as uid:4242)


_SOCKET_FIELDS = tuple(f.name for f in fields(Socket))
# what /proc cannot know: the device, v6only, a listener's backlog (its send_q), the cookie; and timers
# tick between two listings
PROC_BLIND = ("ifindex", "interface", "v6only", "cookie", "timer_ms")


def socket_fields(sock: Socket, *, omit: Collection[str] = ("timer_ms",)) -> tuple:
    """A socket's fields for comparing two listings of the same sockets, without those in ``omit``."""
    return tuple(getattr(sock, name) for name in _SOCKET_FIELDS if name not in omit)


def proc_comparable(sock: Socket) -> tuple:
    """The fields a /proc listing can give too."""
    send_q = None if sock.state is State.LISTEN else sock.send_q
    return (*socket_fields(sock, omit=(*PROC_BLIND, "send_q")), send_q)


@dataclass
class Mix:
    ns: Netns
    ports: dict[str, int] = field(default_factory=dict)
    bound_only: list[tuple[str, int]] = field(default_factory=list)  # (address, port)


def _wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)


def _state_of(ns: Netns, port: int, state: str) -> bool:
    return state in ns.run("ss", "-tanH", f"sport = :{port} or dport = :{port}").stdout


def build_mix(ns: Netns, base: int = 7000) -> Mix:
    mix = Mix(ns)
    v4, v6 = socket.AF_INET, socket.AF_INET6
    tcp, udp = socket.SOCK_STREAM, socket.SOCK_DGRAM

    # IPv4 listener with an established pair and two pending (not yet accepted) connections
    listener = ns.socket(v4, tcp)
    listener.bind(("127.0.0.1", base + 1))
    listener.listen(8)
    client = ns.socket(v4, tcp)
    client.connect(("127.0.0.1", base + 1))
    accepted, _ = listener.accept()
    ns.sockets.append(accepted)
    for _ in range(2):
        pending = ns.socket(v4, tcp)
        pending.connect(("127.0.0.1", base + 1))
    mix.ports["listen4"] = base + 1

    # close-wait (server side) and fin-wait-2 (client side, still holding its fd)
    half = ns.socket(v4, tcp)
    half.connect(("127.0.0.1", base + 1))
    half_server, _ = listener.accept()
    ns.sockets.append(half_server)
    half.shutdown(socket.SHUT_WR)
    mix.ports["half_client"] = half.getsockname()[1]

    # time-wait: the client closes first, then the server
    tw_listener = ns.socket(v4, tcp)
    tw_listener.bind(("127.0.0.1", base + 2))
    tw_listener.listen(4)
    tw_client = ns.socket(v4, tcp)
    tw_client.connect(("127.0.0.1", base + 2))
    tw_server, _ = tw_listener.accept()
    tw_client.close()
    tw_server.close()
    ns.sockets.remove(tw_client)
    mix.ports["time_wait_server"] = base + 2

    # bound-only TCP sockets (invisible to ss 6.1, netstat, lsof): v4 and v6
    for family, address, port in ((v4, "127.0.0.1", base + 3), (v6, "::1", base + 4)):
        bound = ns.socket(family, tcp)
        bound.bind((address, port))
        mix.bound_only.append((address, port))

    # IPv6: loopback listener, dual-stack [::] listener with a v4-mapped peer, v6only [::] listener
    l6 = ns.socket(v6, tcp)
    l6.bind(("::1", base + 5))
    l6.listen(4)
    c6 = ns.socket(v6, tcp)
    c6.connect(("::1", base + 5))
    a6, _ = l6.accept()
    ns.sockets.append(a6)

    dual = ns.socket(v6, tcp)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", base + 6))
    dual.listen(4)
    mapped_client = ns.socket(v4, tcp)
    mapped_client.connect(("127.0.0.1", base + 6))
    mapped_server, _ = dual.accept()
    ns.sockets.append(mapped_server)

    only6 = ns.socket(v6, tcp)
    only6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    only6.bind(("::", base + 7))
    only6.listen(4)

    # a listener owned by another uid (fchown changes sk_uid) and one pinned to a device
    other = ns.socket(v4, tcp)
    os.fchown(other.fileno(), OTHER_UID, OTHER_UID)
    other.bind(("127.0.0.1", base + 8))
    other.listen(4)
    pinned = ns.socket(v4, tcp)
    pinned.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    pinned.bind(("0.0.0.0", base + 9))
    pinned.listen(4)

    # UDP: unconnected v4, connected v4, dual-stack [::], connected v6, v6only
    u4 = ns.socket(v4, udp)
    u4.bind(("127.0.0.1", base + 10))
    uc4 = ns.socket(v4, udp)
    uc4.connect(("127.0.0.1", base + 10))
    uc4.send(b"queued")  # leaves bytes in u4's receive queue
    u6 = ns.socket(v6, udp)
    u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    u6.bind(("::", base + 11))
    uc6 = ns.socket(v6, udp)
    uc6.connect(("::1", base + 11))
    u6only = ns.socket(v6, udp)
    u6only.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u6only.bind(("::", base + 12))

    _wait_for(lambda: _state_of(ns, base + 2, "TIME-WAIT"))
    _wait_for(lambda: _state_of(ns, mix.ports["half_client"], "FIN-WAIT-2"))
    return mix
