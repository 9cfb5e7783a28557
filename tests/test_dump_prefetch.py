"""Large dumps are received by a forked child while the parent decodes: same records, same fallbacks."""

from __future__ import annotations

import os
import socket
from collections import Counter

import pytest

from netns_util import new_netns
from portscope.engine.parallel import Parallelism
from portscope.engine.snapshot import snapshot
from portscope.model.query import Query
from portscope.model.records import Backend, State
from portscope.sources import netlink, procnet
from socket_mix import build_mix, socket_fields

ALL = frozenset(State)


@pytest.fixture(scope="module")
def mixed():
    with new_netns() as ns:
        yield build_mix(ns)


def _listing(mixed, *, prefetch: bool):
    parallelism = Parallelism(prefetch_min_sockets=0 if prefetch else 10**9)
    return snapshot(Query(states=ALL, join_processes=False, netns=mixed.ns.name), parallelism=parallelism)


def _spy_on_children(monkeypatch) -> list:
    started = []
    real_start = netlink._PrefetchChild.start.__func__

    def start(cls, *args):
        child = real_start(cls, *args)
        started.append(child)
        return child

    monkeypatch.setattr(netlink._PrefetchChild, "start", classmethod(start))
    return started


def test_prefetched_dumps_equal_dumps_received_here(mixed, monkeypatch):
    started = _spy_on_children(monkeypatch)
    prefetched = _listing(mixed, prefetch=True)
    assert len(started) == 1 and started[0] is not None, "no child received the dumps"
    inline = _listing(mixed, prefetch=False)
    assert len(started) == 1
    assert Counter(map(socket_fields, prefetched.sockets)) == Counter(map(socket_fields, inline.sockets))
    assert {s.state for s in prefetched.sockets} >= {State.LISTEN, State.ESTABLISHED, State.TIME_WAIT, State.BOUND}
    assert {s.backend for s in prefetched.sources} == {Backend.NETLINK}
    with pytest.raises(ChildProcessError):  # the child was waited for
        os.waitpid(started[0].pid, os.WNOHANG)


def _relays_half_a_buffer(sock, requests, out):  # pragma: no cover - runs in the forked child
    try:
        sock.send(requests[0])
        data = sock.recv(netlink.RECV_BUFFER)
        out.send(data[: len(data) // 2 + 1])  # cut mid-message, then the stream ends
    finally:
        os._exit(0)


def test_broken_stream_from_the_child_falls_back_to_dumping_here(mixed, monkeypatch):
    inline = _listing(mixed, prefetch=False)
    monkeypatch.setattr(netlink, "_child_relays", _relays_half_a_buffer)
    started = _spy_on_children(monkeypatch)
    recovered = _listing(mixed, prefetch=True)
    assert started and started[0] is not None
    assert Counter(map(socket_fields, recovered.sockets)) == Counter(map(socket_fields, inline.sockets))
    assert {s.backend for s in recovered.sources} == {Backend.NETLINK}


def test_socket_count_from_sockstat_matches_a_dump():
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 6100))
        listener.listen()
        for _ in range(3):
            ns.socket().connect(("127.0.0.1", 6100))
            ns.sockets.append(listener.accept()[0])
        ns.socket(kind=socket.SOCK_DGRAM).bind(("127.0.0.1", 6101))
        listener6 = ns.socket(socket.AF_INET6)
        listener6.bind(("::1", 6102))
        listener6.listen()
        ns.socket(socket.AF_INET6).bind(("::1", 6103))  # bound only: not in sockstat, and skipped below
        with ns.inside():
            counted = procnet.socket_count()
        listed = snapshot(Query(states=ALL, join_processes=False, netns=ns.name)).sockets
        assert counted == len([s for s in listed if s.state is not State.BOUND]) == 9


def test_sockstat_parser():
    text = (
        "sockets: used 41320\n"
        "TCP: inuse 36096 orphan 3 tw 5600 alloc 40121 mem 238\n"
        "UDP: inuse 1200 mem 0\nUDPLITE: inuse 7\nRAW: inuse 2\nFRAG: inuse 0 memory 0\n"
        "TCP6: inuse 4024\nUDP6: inuse 5\nUDPLITE6: inuse 0\nRAW6: inuse 1\n"
    )
    assert procnet.parse_sockstat(text) == 36096 + 5600 + 1200 + 4024 + 5
    assert procnet.parse_sockstat("") == 0
    assert procnet.socket_count("/nonexistent") is None


def test_walk_ahead_only_where_the_walk_outlasts_a_fork():
    from portscope.engine.parallel import single_threaded
    from portscope.sources.fdscan import open_files

    policy = Parallelism()
    forks = single_threaded()

    def ahead(files, **kwargs):
        given = {"needs_processes": True, "port_filtered": False, **kwargs}
        return policy.walk_ahead(**given, open_files=lambda: files)

    assert not ahead(100)  # a small host: walked in-line, no fork
    assert ahead(policy.split_walk_min_fds) == forks and ahead(None) == forks  # unknown: as before
    assert not ahead(10**6, needs_processes=False)
    # a port (who PORT): the walk reads every fd all the same, so it runs beside the dump on a big host;
    # not on a small one, nor where the count is unknown (the port may have nothing to join)
    assert ahead(10**6, port_filtered=True) == forks
    assert not ahead(100, port_filtered=True) and not ahead(None, port_filtered=True)
    with open("/proc/sys/fs/file-nr") as handle:
        assert abs(open_files() - int(handle.read().split()[0])) < 1000  # the host's count, read live
    assert open_files("/nonexistent") is None
