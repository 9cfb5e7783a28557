"""snapshot() from several threads at once returns what one call returns, forks no helper from a
threaded process, and leaves the garbage collector as it found it."""

from __future__ import annotations

import gc
import socket
import threading
from collections import Counter

import pytest

from netns_util import new_netns
from portscope.engine.parallel import Parallelism
from portscope.engine.snapshot import snapshot
from portscope.model.query import Query
from portscope.model.records import Snapshot, State
from portscope.sources import fdscan, netlink
from socket_mix import socket_fields

pytestmark = pytest.mark.live

PAIRS = 1500  # established connections, both ends held here: 3000 sockets and their fds
THREADS = 4
# thresholds at zero: the one call in a single thread forks every helper it can
EAGER = Parallelism(prefetch_min_sockets=0, split_walk_min_fds=0)


@pytest.fixture(scope="module")
def crowded():
    with new_netns("psthreads") as ns, ns.inside():
        listener = socket.socket()
        ns.sockets.append(listener)
        listener.bind(("127.0.0.1", 7400))
        listener.listen(PAIRS)
        for _ in range(PAIRS):
            client = socket.socket()
            ns.sockets.append(client)
            client.connect(("127.0.0.1", 7400))
            ns.sockets.append(listener.accept()[0])
        udp = socket.socket(type=socket.SOCK_DGRAM)
        ns.sockets.append(udp)
        udp.bind(("127.0.0.1", 7401))
        yield ns


def queries(ns_name: str) -> list[Query]:
    every = frozenset(State)
    return [
        Query(states=every, netns=ns_name),  # processes: the /proc walk runs ahead in a child
        Query(states=every, join_processes=False, netns=ns_name),  # no processes: the dump prefetch
    ]


def comparable(snap: Snapshot):
    sockets = Counter(socket_fields(s) for s in snap.sockets)
    holders = {inode: [(h.process, h.fds) for h in held] for inode, held in snap.holders.items()}
    return sockets, holders, snap.sources, snap.bound_visible, snap.warnings, snap.netns


def spy_on_forks(monkeypatch) -> list[tuple[str, str]]:
    """(helper, name of the thread that started it) for every helper started."""
    started: list[tuple[str, str]] = []
    for owner, name in ((fdscan.BackgroundWalk, "walk"), (netlink._PrefetchChild, "prefetch")):
        real = owner.start.__func__

        def start(cls, *args, _real=real, _name=name, **kwargs):
            started.append((_name, threading.current_thread().name))
            return _real(cls, *args, **kwargs)

        monkeypatch.setattr(owner, "start", classmethod(start))
    return started


def test_four_threads_get_the_records_of_one_call(crowded, monkeypatch):
    started = spy_on_forks(monkeypatch)
    gc_was_enabled = gc.isenabled()
    alone = [comparable(snapshot(q, parallelism=EAGER)) for q in queries(crowded.name)]
    assert {helper for helper, _ in started} == {"walk", "prefetch"}  # the thresholds were passed
    assert len(alone[0][0]) >= 2 * PAIRS and len(alone[0][1]) >= 2 * PAIRS

    started.clear()
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = [comparable(snapshot(q, parallelism=EAGER)) for q in queries(crowded.name)]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"snap-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert started == []  # nothing forked beside other threads
    for index in range(THREADS):
        assert results[index] == alone
    assert gc.isenabled() == gc_was_enabled
