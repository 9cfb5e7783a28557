"""Sockets as the kernel destroys them: the sock_diag destroy multicast groups (what ``ss -E`` reads).

Each TCP or UDP socket freed in a network namespace is announced on NETLINK_SOCK_DIAG to the members of
that namespace's group for its protocol and family, as one ``inet_diag_msg`` (the message a dump
gives), decoded here by :class:`portscope.sources.netlink.Decoder`. This is how a socket that lived
for less than one polling interval is still seen. What the kernel says at that moment: the addresses,
ports, bound device and socket cookie; the state is CLOSE (a listener is no longer listening), and the
uid and inode fields are left at zero (placeholders: the socket has no file any more, no process holds it).

Linux lets any user join these groups (the sock_diag netlink family allows non-root receivers); a
refusal (a sandbox, a security module) is :class:`portscope.sources.netlink.NetlinkUnavailable`. A burst
larger than the receive buffer loses announcements: they are counted, not guessed.

The kernel announces every socket of the namespace, connections and never-bound sockets included. A
socket filter (classic BPF) drops in the kernel those that cannot matter: sockets without a port, and
for a watch of listeners, every socket with a peer; a busy server's connections cost nothing then.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Iterable

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Family, Proto, Socket
from portscope.sources import netlink, netns

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
# enum sknetlink_groups (include/uapi/linux/sock_diag.h)
SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET_UDP_DESTROY = 2
SKNLGRP_INET6_TCP_DESTROY = 3
SKNLGRP_INET6_UDP_DESTROY = 4
DESTROY_GROUPS: dict[tuple[Proto, Family], int] = {
    (Proto.TCP, Family.IPV4): SKNLGRP_INET_TCP_DESTROY,
    (Proto.UDP, Family.IPV4): SKNLGRP_INET_UDP_DESTROY,
    (Proto.TCP, Family.IPV6): SKNLGRP_INET6_TCP_DESTROY,
    (Proto.UDP, Family.IPV6): SKNLGRP_INET6_UDP_DESTROY,
}
RECEIVE_BUFFER = 4 << 20  # announcements queue here between reads; capped by net.core.rmem_max

# Classic BPF over each announcement: the netlink header, then inet_diag_msg (family, state, timer,
# retrans, then the ports in network byte order; a port is 0 in either byte order).
SO_ATTACH_FILTER = 26
SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
BPF_LDH_ABS = 0x28  # BPF_LD | BPF_H | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
SPORT_OFFSET = netlink.NLMSGHDR.size + 4
DPORT_OFFSET = SPORT_OFFSET + 2
ACCEPT = 0xFFFFFFFF
DROP = 0


def filter_program(without_peer_only: bool) -> list[tuple[int, int, int, int]]:
    """The filter: drop sockets without a local port; with ``without_peer_only`` also those with a peer."""
    if not without_peer_only:
        return [
            (BPF_LDH_ABS, 0, 0, SPORT_OFFSET),
            (BPF_JEQ_K, 0, 1, 0),  # no port: drop
            (BPF_RET_K, 0, 0, DROP),
            (BPF_RET_K, 0, 0, ACCEPT),
        ]
    return [
        (BPF_LDH_ABS, 0, 0, SPORT_OFFSET),
        (BPF_JEQ_K, 2, 0, 0),  # no port: drop
        (BPF_LDH_ABS, 0, 0, DPORT_OFFSET),
        (BPF_JEQ_K, 1, 0, 0),  # no peer port: keep, else drop
        (BPF_RET_K, 0, 0, DROP),
        (BPF_RET_K, 0, 0, ACCEPT),
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    import ctypes  # only here: struct sock_fprog holds a pointer to the instructions

    code = ctypes.create_string_buffer(b"".join(SOCK_FILTER.pack(*op) for op in program))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(code))  # the kernel copies it at once
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@dataclass_lite(frozen=True)
class Destroyed:
    """What one read of the feed found."""

    sockets: tuple[Socket, ...]
    lost: int  # announcements the kernel dropped (a full receive buffer) or that could not be decoded


class DestroyFeed:
    """A subscription to the destroy groups of ``tables`` in one network namespace (``target``; None: ours),
    of sockets with a port, and with ``without_peer_only`` of those without a peer (listening or bound).

    The netlink socket belongs to the namespace it was opened in, so it is opened inside the target and
    read from anywhere. Not thread-safe: one reader. Close it (or use ``with``).
    """

    def __init__(
        self,
        tables: Iterable[tuple[Proto, Family]],
        target: netns.NetnsTarget | None = None,
        *,
        without_peer_only: bool = False,
    ) -> None:
        self.tables = tuple(dict.fromkeys(tables))
        self._target = target
        with netns.entered(target) as inode:
            self.netns = inode
            self._sock = netlink.open_socket()
        try:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            _attach_filter(self._sock, filter_program(without_peer_only))  # before anything can arrive
            self._sock.bind((0, 0))
            for table in self.tables:
                self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, DESTROY_GROUPS[table])
            self._sock.setblocking(False)
        except OSError as exc:
            self._sock.close()
            raise netlink.NetlinkUnavailable(f"cannot join the sock_diag destroy groups: {exc.strerror}") from None
        # the group a message came to names its protocol and family: recvfrom gives it as a bit
        self._decoders = {
            1 << (DESTROY_GROUPS[table] - 1): netlink.Decoder(*table, self.netns, ifname=self._interface_name)
            for table in self.tables
        }
        self._buffer = bytearray(netlink.RECV_BUFFER)

    def _interface_name(self, index: int) -> str | None:
        # a bound device is named in the socket's own namespace (each decoder caches the answer)
        try:
            with netns.entered(self._target):
                return socket.if_indextoname(index)
        except (OSError, SourceError):
            return None

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> Destroyed:
        """Every announcement waiting now, decoded; never blocks."""
        found: list[Socket] = []
        lost = 0
        view = memoryview(self._buffer)
        while True:
            try:
                size, (_, groups) = self._sock.recvfrom_into(self._buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the buffer overflowed: some were dropped (how many is unknown)
                    lost += 1
                    continue
                raise SourceError("netlink sock_diag destroy notifications", exc.strerror or str(exc)) from None
            decoder = self._decoders.get(groups)
            if decoder is None or size == 0:
                continue
            try:
                sockets, _ = decoder.decode(view[:size], "netlink sock_diag destroy notification")
            except (SourceError, netlink.NetlinkUnavailable):
                lost += 1
                continue
            found += (sock for sock in sockets if sock.local_port)  # never bound: no port to report
        return Destroyed(tuple(found), lost)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DestroyFeed:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
