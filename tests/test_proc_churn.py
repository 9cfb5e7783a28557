"""The /proc fallback under churn, live: the kernel repeats lines of /proc/net/tcp while sockets come
and go between the pages of one read; portscope lists each socket once.

Three forked churners connect, accept and reset (SO_LINGER 0: no TIME-WAIT pile) thousands of
connections a second in a fresh namespace beside 3,000 held sockets, while the test reads the table:
raw reads must show repeated lines (else the test proves nothing), and neither the parser on those
very texts nor a whole `--backend proc` snapshot may list a socket twice.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections import Counter

import pytest

from netns_util import new_netns
from portscope.engine.snapshot import snapshot
from portscope.model.query import Query
from portscope.model.records import Backend, Family, Proto, State
from portscope.sources.procnet import parse_proc_net

pytestmark = pytest.mark.live

LINGER_RESET = struct.pack("ii", 1, 0)
HELD_PAIRS = 1500
CHURNERS = 3
READ_SECONDS = 3.0
MAX_SECONDS = 10.0  # reading goes on until repeats were seen, at most this long


def raw_key(line: str) -> tuple[str, ...]:
    fields = line.split()
    return (fields[1], fields[2], fields[3], fields[9])  # local, remote, state, inode


def socket_key(sock) -> tuple:
    if sock.inode:
        return (sock.inode,)
    return (sock.state, sock.local_address, sock.local_port, sock.remote_address, sock.remote_port)


def churn(ns, port: int, count_fd: int) -> None:  # pragma: no cover - in the forked churner
    made = 0
    try:
        with ns.inside():
            listener = socket.socket()
            listener.bind(("127.0.0.1", port))
            listener.listen(1024)
            while True:
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                client.connect(("127.0.0.1", port))
                child, _ = listener.accept()
                child.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                client.close()
                child.close()
                made += 1
                if made % 256 == 0:
                    os.pwrite(count_fd, made.to_bytes(8, "little"), 0)
    finally:
        os._exit(0)


def test_proc_backend_lists_each_socket_once_under_churn(tmp_path):
    with new_netns("pschurn") as ns:
        base = ns.socket()
        base.bind(("127.0.0.1", 30000))
        base.listen(HELD_PAIRS)
        for _ in range(HELD_PAIRS):
            client = ns.socket()
            client.connect(("127.0.0.1", 30000))
            ns.sockets.append(base.accept()[0])
        counters = []
        for index in range(CHURNERS):
            counter = os.open(tmp_path / f"count{index}", os.O_RDWR | os.O_CREAT, 0o600)
            os.pwrite(counter, bytes(8), 0)
            counters.append(counter)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the churner
                churn(ns, 31000 + index, counter)
            ns.children.append(pid)

        def made() -> int:
            return sum(int.from_bytes(os.pread(fd, 8, 0), "little") for fd in counters)

        try:
            time.sleep(0.3)  # the churners are running
            started, made_before = time.monotonic(), made()
            raw_repeats = reads = 0
            with ns.inside():
                while True:
                    with open("/proc/thread-self/net/tcp", encoding="ascii") as handle:
                        text = handle.read()
                    reads += 1
                    lines = text.splitlines()[1:]
                    raw_repeats += len(lines) - len(set(map(raw_key, lines)))
                    parsed = parse_proc_net(text, Proto.TCP, Family.IPV4, source="/proc/net/tcp")
                    twice = [key for key, n in Counter(map(socket_key, parsed)).items() if n > 1]
                    assert not twice, f"the parser kept repeated lines: {twice[:3]}"
                    elapsed = time.monotonic() - started
                    if elapsed > MAX_SECONDS or (elapsed > READ_SECONDS and raw_repeats):
                        break
            rate = (made() - made_before) / elapsed
            for _ in range(3):
                snap = snapshot(
                    Query(
                        protocols=frozenset({Proto.TCP}),
                        states=frozenset(State),
                        backend=Backend.PROC,
                        netns=ns.name,
                        join_processes=False,
                    )
                )
                twice = [key for key, n in Counter(map(socket_key, snap.sockets)).items() if n > 1]
                assert not twice, f"--backend proc listed sockets twice: {twice[:3]}"
                assert sum(s.local_port == 30000 or s.remote_port == 30000 for s in snap.sockets) >= 2 * HELD_PAIRS
        finally:
            for pid in ns.children:
                os.kill(pid, signal.SIGKILL)
            for fd in counters:
                os.close(fd)
        assert raw_repeats, f"no repeated line in {reads} reads at {rate:.0f} connections/s: churn too slow to test"
        assert rate > 1000, f"only {rate:.0f} connections/s (3,000+ expected on an idle machine)"
