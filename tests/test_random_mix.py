"""Random socket mixes in fresh namespaces: the collector must agree with ss, /proc and /proc/<pid>/fd."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import time
from collections import Counter

import pytest

from netns_util import Netns, new_netns, ss_sockets
from portscope.engine.snapshot import snapshot
from portscope.model.query import Query
from portscope.model.records import Backend, State

ALL = frozenset(State)
V4_ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.1.2.3", "0.0.0.0"]
V6_ADDRESSES = ["::1", "::", "::ffff:127.0.0.1", "::ffff:127.0.0.2"]


def _add_unreachable_link(ns: Netns) -> None:
    """A veth pair with an address whose neighbours never answer: connect() there stays in SYN-SENT.

    The peer 10.99.0.2 gets a permanent neighbour entry: SYNs leave and go unanswered for minutes, where
    a failed address resolution would end the SYN-SENT sockets with "host unreachable" after about 3 s,
    in the middle of a comparison on a loaded machine."""
    for argv in (
        ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        ["addr", "add", "10.99.0.1/24", "dev", "v0"],
        ["link", "set", "v0", "up"],
        ["link", "set", "v1", "up"],
        ["neigh", "add", "10.99.0.2", "lladdr", "02:00:00:00:00:02", "dev", "v0", "nud", "permanent"],
    ):
        subprocess.run(["ip", "-n", ns.name, *argv], check=True, capture_output=True)


def build_random_mix(ns: Netns, rng: random.Random, count: int) -> None:
    listeners: list[tuple[int, tuple]] = []  # (family, connect address)
    port = 20000
    for _ in range(count):
        port += rng.randint(1, 7)
        kind = rng.choice(["listen", "listen", "connect", "bound", "udp", "udp-connected", "syn-sent", "device"])
        family = rng.choice([socket.AF_INET, socket.AF_INET6])
        address = rng.choice(V4_ADDRESSES if family == socket.AF_INET else V6_ADDRESSES)
        try:
            if kind in ("listen", "bound", "device"):
                sock = ns.socket(family, socket.SOCK_STREAM)
                if family == socket.AF_INET6 and rng.random() < 0.5:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, rng.choice([0, 1]))
                if kind == "device":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, rng.choice([b"lo", b"v0"]))
                if rng.random() < 0.2:
                    os.fchown(sock.fileno(), rng.choice([1000, 4242]), -1)
                sock.bind((address, port))
                if kind != "bound":
                    sock.listen(rng.randint(1, 16))
                    target = "::1" if address in ("::", "::1") else address.replace("::ffff:", "")
                    if target == "0.0.0.0":
                        target = "127.0.0.1"
                    listeners.append((socket.AF_INET6 if ":" in target else socket.AF_INET, (target, port)))
            elif kind == "connect" and listeners:
                target_family, target = rng.choice(listeners)
                client = ns.socket(target_family, socket.SOCK_STREAM)
                client.connect(target)
                if rng.random() < 0.3:
                    client.shutdown(socket.SHUT_WR)  # FIN-WAIT-2 here, CLOSE-WAIT on the other side
                elif rng.random() < 0.3:
                    ns.sockets.remove(client)
                    client.close()  # orphan, then TIME-WAIT once the other side closes
            elif kind in ("udp", "udp-connected"):
                sock = ns.socket(family, socket.SOCK_DGRAM)
                if kind == "udp":
                    sock.bind((address, port))
                else:
                    sock.connect(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
            elif kind == "syn-sent":
                sock = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("10.99.0.2", port))
        except OSError:
            continue  # an address clash the random choice made: the kernel said no, fine


def _key(proto, state, local, lport, remote, rport, uid, inode):
    wild = {"0.0.0.0", "::", "*"}
    return (proto, state, "*" if local in wild else local, lport, remote, rport, uid or 0, inode or 0)


def _our_key(s):
    return _key(
        s.proto.value, s.state.value, s.local_address, s.local_port, s.remote_address, s.remote_port, s.uid, s.inode
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_mix_agrees_with_ss_and_proc(seed):
    rng = random.Random(seed)
    with new_netns("psrand") as ns:
        _add_unreachable_link(ns)
        build_random_mix(ns, rng, count=40)
        time.sleep(0.05)
        nl = snapshot(Query(states=ALL, backend=Backend.NETLINK, netns=ns.name))
        ss = ss_sockets(ns)
        proc = snapshot(Query(states=ALL, backend=Backend.PROC, join_processes=False, netns=ns.name))

    ours = Counter(
        _key(
            s.proto.value, s.state.value, s.local_address, s.local_port, s.remote_address, s.remote_port, s.uid, s.inode
        )
        for s in nl.sockets
        if s.state is not State.BOUND
    )
    theirs = Counter(
        _key(r.proto, r.state, r.local_address, r.local_port, r.remote_address, r.remote_port, r.uid, r.inode)
        for r in ss
    )
    assert ours == theirs
    by_proc = Counter(
        _key(
            s.proto.value, s.state.value, s.local_address, s.local_port, s.remote_address, s.remote_port, s.uid, s.inode
        )
        for s in proc.sockets
    )
    assert by_proc == theirs
    devices = {r.inode: r.interface for r in ss if r.inode}
    for sock in nl.sockets:
        if sock.inode in devices:
            assert sock.interface == devices[sock.inode]
        if sock.inode is not None:
            assert [h.process.pid for h in nl.holders_of(sock)] == [os.getpid()]
