"""Backend choice per protocol: netlink refused or missing a diag module -> /proc, said in the result."""

from __future__ import annotations

import socket

import pytest

from netns_util import new_netns
from portscope.engine import snapshot as snapshot_module
from portscope.engine.snapshot import snapshot
from portscope.errors import SourceError
from portscope.model.query import Query
from portscope.model.records import Backend, Proto, State
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
def dump_mode(request, monkeypatch):
    """Both ways the dumps are received: here, or by a forked child (large listings)."""
    monkeypatch.setattr(snapshot_module, "PREFETCH_MIN_SOCKETS", 10**9 if request.param == "in-line" else 0)
    return request.param


def test_kernel_refusing_udp_falls_back_for_udp_only(small_ns, monkeypatch, dump_mode):
    # Ask about an IP protocol no sock_diag handler serves: the kernel itself answers ENOENT, as it
    # does for UDP when udp_diag is missing.
    monkeypatch.setitem(netlink.IPPROTO, Proto.UDP, UNSERVED_PROTOCOL)
    snap = snapshot(Query(states=ALL, netns=small_ns.name))
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
    assert exit_info.value.code == 4  # the system could not be read: not bad input
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and err.startswith("portscope: error:")
