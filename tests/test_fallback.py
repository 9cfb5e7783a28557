"""Backend choice per protocol: netlink refused or missing a diag module -> /proc, said in the result."""

from __future__ import annotations

import socket

import pytest

from netns_util import new_netns
from portscope.engine.parallel import Parallelism
from portscope.engine.snapshot import snapshot
from portscope.errors import ExitStatus, SourceError
from portscope.model.query import Query
from portscope.model.records import Backend, Family, Proto, State
from portscope.sources import netlink

ALL = frozenset(State)
UNSERVED_PROTOCOL = 253  # RFC 3692 experimentation: no kernel module serves it


@pytest.fixture()
def small_ns():
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 6000))
        listener.listen()
        udp = ns.socket(kind=socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 6001))
        yield ns


def test_netlink_socket_refused_falls_back_for_every_protocol(small_ns, monkeypatch):
    def refuse():
        raise netlink.NetlinkUnavailable("cannot open a sock_diag netlink socket: Operation not permitted")

    monkeypatch.setattr(netlink, "open_socket", refuse)
    snap = snapshot(Query(states=ALL, netns=small_ns.name))
    assert {s.backend for s in snap.sources} == {Backend.PROC}
    assert all("Operation not permitted" in s.note for s in snap.sources)
    assert {(s.proto, s.local_port) for s in snap.sockets} == {(Proto.TCP, 6000), (Proto.UDP, 6001)}
    assert snap.bound_visible is False
    with pytest.raises(SourceError, match="netlink"):
        snapshot(Query(states=ALL, netns=small_ns.name, backend=Backend.NETLINK))


@pytest.fixture(params=["in-line", "prefetched"])
def dump_mode(request) -> Parallelism:
    """Both ways the dumps are received: here, or by a forked child (large listings)."""
    return Parallelism(prefetch_min_sockets=10**9 if request.param == "in-line" else 0)


def test_kernel_refusing_udp_falls_back_for_udp_only(small_ns, monkeypatch, dump_mode):
    # Ask about an IP protocol no sock_diag handler serves: the kernel itself answers ENOENT, as it
    # does for UDP when udp_diag is missing.
    monkeypatch.setitem(netlink.IPPROTO, Proto.UDP, UNSERVED_PROTOCOL)
    # without processes: no /proc walk ahead, which would keep the dumps in this process
    snap = snapshot(Query(states=ALL, join_processes=False, netns=small_ns.name), parallelism=dump_mode)
    backends = {(s.proto, s.backend) for s in snap.sources}
    assert backends == {(Proto.TCP, Backend.NETLINK), (Proto.UDP, Backend.PROC)}
    assert all("no sock_diag support" in s.note for s in snap.sources if s.backend is Backend.PROC)
    assert {(s.proto, s.local_port) for s in snap.sockets} == {(Proto.TCP, 6000), (Proto.UDP, 6001)}
    assert snap.backend_summary() == "netlink: tcp,tcp6; proc: udp,udp6"


def test_forced_netlink_failure_is_a_one_line_error(small_ns, monkeypatch, capsys):
    from portscope.cli import main

    def refuse():
        raise netlink.NetlinkUnavailable("cannot open a sock_diag netlink socket: Permission denied")

    monkeypatch.setattr(netlink, "open_socket", refuse)
    with pytest.raises(SystemExit) as exit_info:
        main(["ls", "--backend", "netlink", "--netns", small_ns.name])
    assert exit_info.value.code == ExitStatus.UNREADABLE == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and err.startswith("portscope: error:")


def test_kernel_refusing_the_one_walk_request_dumps_tcp_per_family(small_ns, monkeypatch, dump_mode):
    """TCP of both families is asked for in one request (TCPDIAG_GETSOCK); a kernel that refuses it (here: a
    request type it does not know, answered EINVAL) gets one request per family, still from netlink."""
    v6 = small_ns.socket(socket.AF_INET6)
    v6.bind(("::1", 6002))
    v6.listen()
    requests = []
    real_init = netlink.TableDumps.__init__

    def spy(self, wanted, **kwargs):
        requests.extend(wanted)
        real_init(self, wanted, **kwargs)

    monkeypatch.setattr(netlink.TableDumps, "__init__", spy)
    query = Query(states=ALL, join_processes=False, netns=small_ns.name)
    one_walk = snapshot(query, parallelism=dump_mode)
    assert [(r.proto, r.family) for r in requests] == [
        (Proto.TCP, None),
        (Proto.UDP, Family.IPV4),
        (Proto.UDP, Family.IPV6),
    ]
    split = []
    real_per_family = netlink.DumpRequest.per_family

    def per_family_spy(self):
        split.append(self)
        return real_per_family(self)

    monkeypatch.setattr(netlink.DumpRequest, "per_family", per_family_spy)
    assert not split
    monkeypatch.setattr(netlink, "TCPDIAG_GETSOCK", 23)  # below INET_DIAG_GETSOCK_MAX, and no handler's
    per_family = snapshot(query, parallelism=dump_mode)
    assert [(r.proto, r.family) for r in split] == [(Proto.TCP, None)]  # refused, then asked per family
    for snap in (one_walk, per_family):
        assert {s.backend for s in snap.sources} == {Backend.NETLINK}
        assert snap.backend_summary() == "netlink: tcp,tcp6,udp,udp6"
    assert per_family.sockets == one_walk.sockets
    assert {(s.proto, s.family, s.local_port) for s in one_walk.sockets} >= {
        (Proto.TCP, Family.IPV4, 6000),
        (Proto.TCP, Family.IPV6, 6002),
        (Proto.UDP, Family.IPV4, 6001),
    }
    requests.clear()
    snapshot(Query(states=ALL, join_processes=False, netns=small_ns.name, families=frozenset({Family.IPV6})))
    assert [(r.proto, r.family) for r in requests] == [(Proto.TCP, Family.IPV6), (Proto.UDP, Family.IPV6)]
