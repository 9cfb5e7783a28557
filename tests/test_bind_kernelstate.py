"""The kernel's TCP bind table read with a BPF iterator (sources/tcpbind.py), and what it settles, judged live.

The facts no socket dump shows: SO_REUSEADDR / SO_REUSEPORT / IPV6_V6ONLY of TIME-WAIT and orphaned
sockets (which no process holds), and each port's SO_REUSEPORT fast-path cache. First the reading itself
against sockets whose options we set; then, for every class it settles (TIME-WAIT of either side with its
listener gone, orphaned FIN-WAIT-2, never-accepted children, ports connect() picked, an owner changed
after listen(), a cache left by a closed socket), the model's verdict must be decisive and equal to a real
bind()+listen() of the same socket; and where the table cannot be read the answers stay "uncertain".
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

from bind_scenarios import (
    OTHER_UID,
    NewSpec,
    OwnerSpec,
    Scenario,
    build,
    build_owner,
    judge,
    kernel_bind_table_readable,
    kernel_oracle,
    open_group,
    request_for,
)
from netns_util import new_netns, require_live
from portscope.commands.can_bind import check_binds
from portscope.engine.snapshot import snapshot
from portscope.model.query import Query
from portscope.model.records import Proto, State
from portscope.sources import netns
from portscope.sources.tcpbind import read_tcp_bind_state

pytestmark = pytest.mark.live

Own, N, S = OwnerSpec, NewSpec, Scenario
FLAGS = {"-": (False, False), "RA": (True, False), "RP": (False, True), "RA+RP": (True, True)}


@pytest.fixture(scope="module")
def readable():
    require_live()
    if not kernel_bind_table_readable():
        pytest.skip("the kernel's bind table cannot be read here (needs CAP_BPF+CAP_PERFMON, BTF, BPF iterators)")


def test_the_read_shows_what_the_sockets_were_given(readable):
    """Flags of listeners, TIME-WAIT, orphans and queued children, and the buckets' caches, as set."""
    owners = {
        20001: Own("listen", "0.0.0.0", reuseport=True, uid=OTHER_UID),
        20002: Own("tw-server", "::", reuseaddr=True, v6only=False),  # a TIME-WAIT of [::1], listener gone
        20003: Own("orphan-client", "127.0.0.1", reuseaddr=True, reuseport=True),  # FIN-WAIT-2, no process
        20004: Own("autobound", "127.0.0.1", reuseport=True),  # connect() picked the port
        20005: Own("unaccepted", "::1", reuseport=True),  # a child in the accept queue
        20006: Own("bound", "127.0.0.1", reuseaddr=True),  # bound-only: not in the tables iterated
        20007: Own("listen", "::", reuseaddr=True, v6only=True, device="lo"),
        20008: Own("tw-client", "::1", reuseport=True),
    }
    with new_netns("pstcpbind") as ns:
        group = open_group(ns)
        try:
            for port, spec in owners.items():
                assert build_owner(group, spec, port), spec
            time.sleep(0.05)
            query = Query(protocols=frozenset({Proto.TCP}), states=frozenset(State), netns=ns.name)
            dumped = [s for s in snapshot(query).sockets if s.local_port in owners]
            target = netns.resolve(ns.name)
            state = read_tcp_bind_state(target, set(owners))
            bound = frozenset(s.cookie for s in dumped if s.state is State.BOUND)
            held = read_tcp_bind_state(target, {20006}, bound, frozenset({os.getpid()}))
            elsewhere = read_tcp_bind_state(target, {20006}, bound, frozenset({1}))
            everywhere = read_tcp_bind_state(target, {20006}, bound)
        finally:
            group.close()
    assert state is not None
    seen = {}
    for sock in dumped:
        found = state.sockets.get(sock.cookie)
        if sock.state is State.BOUND:
            assert found is None  # bound-only sockets are in the bind hash only
            continue
        assert found is not None, sock
        assert found.port == sock.local_port and found.device == (sock.ifindex or 0)
        assert (found.state == 6) == (sock.state is State.TIME_WAIT or sock.timer == "timewait"), sock
        seen.setdefault(sock.local_port, []).append(found)
    assert set(seen) == set(owners) - {20006}
    for port, found in seen.items():
        spec = owners[port]
        for one in found:  # a queued child and TIME-WAIT keep the flags of the socket they came from
            assert (bool(one.reuse), one.reuseport) == (spec.reuseaddr, spec.reuseport), (port, one)
    assert seen[20002][0].v6only is False  # the dual-stack listener's, which no dump shows for TIME-WAIT
    assert seen[20007][0].v6only is True and seen[20007][0].device == 1
    assert all(one.v6only for one in seen[20005] + seen[20008])  # bind() of ::1 forces IPV6_V6ONLY
    # the caches: set by a SO_REUSEPORT socket's bind(), reset by one without, never by connect()
    assert (state.buckets[20001].fastreuseport, state.buckets[20001].fastuid) == (2, OTHER_UID)
    assert state.buckets[20001].address4 == "0.0.0.0"
    assert state.buckets[20003].fastreuseport > 0 and state.buckets[20003].address4 == "127.0.0.1"
    assert state.buckets[20004].fastreuseport <= 0
    assert state.buckets[20005].fastreuseport > 0 and state.buckets[20005].address6 == "::1"
    assert state.buckets[20007].fastreuseport == 0
    # a bound-only socket is in the bind hash only: reached through the files of its holder (or of everyone)
    assert 20006 not in state.buckets
    for found in (held, everywhere):
        (one,) = [k for cookie, k in found.sockets.items() if cookie in bound]
        assert (one.port, one.state, one.reuse, one.reuseport) == (20006, 7, 1, False)
        assert found.buckets[20006].fastreuseport == 0
    assert 20006 not in elsewhere.buckets and not set(elsewhere.sockets) & bound


def settled_scenarios() -> list[Scenario]:
    scenarios = []
    # TIME-WAIT of a server whose listener is gone, and of a client; orphaned FIN-WAIT-2 of either side
    for kind, (oname, (ora, orp)), (nname, (nra, nrp)) in itertools.product(
        ("tw-server", "tw-client", "orphan-server", "orphan-client"), FLAGS.items(), list(FLAGS.items())[1:]
    ):
        owner = Own(kind, reuseaddr=ora, reuseport=orp)
        scenarios.append(S(f"{kind}[{oname}] new[{nname}]", (owner,), N(reuseaddr=nra, reuseport=nrp, listen=False)))
    # IPV6_V6ONLY of a TIME-WAIT [::1] left by a [::] listener decides an IPv4 wildcard bind (V18, V19)
    for v6only in (False, True):
        owner = Own("tw-server", "::", v6only=v6only)
        scenarios.append(S(f"tw-server [::] v6only={v6only}, new 0.0.0.0", (owner,), N("0.0.0.0")))
    # children nobody accepted, and ports connect() picked
    for (oname, (ora, orp)), (nname, (nra, nrp)) in itertools.product(FLAGS.items(), list(FLAGS.items())[1:]):
        queued = (Own("unaccepted", reuseaddr=ora, reuseport=orp),)
        scenarios.append(S(f"unaccepted[{oname}] new[{nname}]", queued, N(reuseaddr=nra, reuseport=nrp)))
        picked = (Own("autobound", reuseaddr=ora, reuseport=orp),)
        scenarios.append(S(f"autobound[{oname}] new[{nname}]", picked, N(reuseaddr=nra, reuseport=nrp, listen=False)))
        closed = (Own("autobound-tw", reuseaddr=ora, reuseport=orp),)
        scenarios.append(S(f"autobound-tw[{oname}] new[{nname}]", closed, N(reuseaddr=nra, reuseport=nrp)))
    # a client's TIME-WAIT at a v4-mapped address beside a v6-only [::] listener, which cannot have accepted it
    # (seed 190 of the orphan mix: its options were once taken from that listener)
    client_beside_listener = (Own("autobound-tw", "::ffff:127.0.0.1", reuseport=True), Own("listen", "::", v6only=True))
    scenarios.append(S("client TIME-WAIT beside a v6-only listener", client_beside_listener, N("::ffff:127.0.0.1")))
    # the fast path: an owner changed after listen(), and a cache a closed socket left next to a TIME-WAIT
    scenarios += [
        S(
            "fchown after listen, root binds",
            (Own("listen", reuseport=True, chown_after=OTHER_UID),),
            N(reuseport=True),
        ),
        S(
            "fchown to root after listen, old owner binds",
            (Own("listen", reuseport=True, uid=OTHER_UID, chown_after=0),),
            N(reuseport=True, uid=OTHER_UID),
        ),
        S(
            "ghost RA+RP beside a TIME-WAIT RA",
            (Own("tw-client", reuseaddr=True), Own("ghost", reuseaddr=True, reuseport=True)),
            N(reuseport=True),
        ),
        S("TIME-WAIT RA without a ghost", (Own("tw-client", reuseaddr=True),), N(reuseport=True)),
        # F02 and its control F01: a port held only by a bound-only socket (its bucket: through its holder)
        S(
            "F02 ghost RA+RP beside a bound RA",
            (Own("bound", reuseaddr=True), Own("ghost", reuseaddr=True, reuseport=True)),
            N(reuseport=True),
        ),
        S("F01 bound RA without a ghost", (Own("bound", reuseaddr=True),), N(reuseport=True)),
        S(
            "bound RP fchowned after bind",
            (Own("bound", reuseport=True, chown_after=OTHER_UID),),
            N(reuseport=True, listen=False),
        ),
        S(
            "ghost of another uid beside a TIME-WAIT RA",
            (Own("tw-client", reuseaddr=True), Own("ghost", reuseaddr=True, reuseport=True, uid=OTHER_UID)),
            N(reuseport=True),
        ),
    ]
    return scenarios


def run(scenarios: list[Scenario]) -> tuple[list[str], list[str], list[str]]:
    """(disagreements with the kernel, uncertain names, names accepted by the fast path) of one namespace."""
    failures, uncertain, fastpath = [], [], []
    with new_netns("pskstate") as ns:
        group = open_group(ns)
        try:
            built = [(s, build(group, s)) for s in scenarios]
            missing = [s.name for s, port in built if port is None]
            assert not missing, f"owners could not be created: {missing}"
            time.sleep(0.05)  # closing connections reach TIME-WAIT / FIN-WAIT-2
            reports = check_binds([request_for(s, port, ns, probe=False) for s, port in built])
            for (scenario, port), report in zip(built, reports, strict=True):
                problem = judge(report, kernel_oracle(group, scenario.new, port, as_user=True))
                if problem:
                    failures.append(f"{scenario.name} (port {port}): {problem}")
                if report.model.verdict.value == "uncertain":
                    uncertain.append(f"{scenario.name}: {[d.code.value for d in report.model.uncertainty]}")
                if report.model.rule == "R-FASTPATH" and report.model.verdict.value == "yes":
                    fastpath.append(scenario.name)
        finally:
            group.close()
    return failures, uncertain, fastpath


def test_what_the_kernel_holds_settles_them(readable):
    """Every class the bind table settles: decisive, and the kernel's bind() agrees (including the fast path)."""
    scenarios = settled_scenarios()
    failures, uncertain, fastpath = run(scenarios)
    assert not failures, "\n".join(failures)
    assert not uncertain, uncertain
    assert {
        "fchown after listen, root binds",
        "fchown to root after listen, old owner binds",
        "ghost RA+RP beside a TIME-WAIT RA",
        "F02 ghost RA+RP beside a bound RA",
        "bound RP fchowned after bind",
    } <= set(fastpath)
    assert "F01 bound RA without a ghost" not in fastpath
    assert "TIME-WAIT RA without a ghost" not in fastpath
    assert "ghost of another uid beside a TIME-WAIT RA" not in fastpath


def test_without_the_table_they_stay_uncertain(monkeypatch):
    """Where the table cannot be read (no privilege, no BTF) the same cases are uncertain, never guessed."""
    require_live()
    monkeypatch.setattr(
        "portscope.sources.tcpbind.read_tcp_bind_state",
        lambda target, ports, bound=frozenset(), holders=frozenset(): None,
    )
    scenarios = [
        S("tw-server[-] new[RA]", (Own("tw-server"),), N(reuseaddr=True, listen=False)),
        S("orphan-client[RA] new[RA]", (Own("orphan-client", reuseaddr=True),), N(reuseaddr=True, listen=False)),
        S("fchown after listen", (Own("listen", reuseport=True, chown_after=OTHER_UID),), N(reuseport=True)),
        S(
            "client TIME-WAIT beside a v6-only listener",
            (Own("autobound-tw", "::ffff:127.0.0.1", reuseport=True), Own("listen", "::", v6only=True)),
            N("::ffff:127.0.0.1", reuseaddr=True),
        ),
    ]
    failures, uncertain, _ = run(scenarios)
    assert not failures, "\n".join(failures)
    assert len(uncertain) == len(scenarios), uncertain


def test_an_unprivileged_reader_gets_nothing():
    """Without CAP_BPF/CAP_PERFMON the program is refused: None, not an error (the model then reasons without)."""
    require_live()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(OTHER_UID, OTHER_UID, OTHER_UID)
            os.setresuid(OTHER_UID, OTHER_UID, OTHER_UID)
            os.write(write_end, repr(read_tcp_bind_state(None, {22})).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 256)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"None"


@pytest.mark.parametrize(
    ("cap_eff", "may"),
    [("000001ffffffffff", True), ("0000000000200000", True), ("000000c000000000", True), ("0000004000000000", False)],
)
def test_the_capabilities_are_asked_before_any_work(tmp_path, cap_eff, may):
    """CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON; anything less gives up before the BTF is parsed."""
    from portscope.sources.tcpbind import _may_trace

    status = tmp_path / "status"
    status.write_text(f"Name:\tpython\nCapEff:\t{cap_eff}\n")
    assert _may_trace(str(status)) is may
    assert _may_trace(str(tmp_path / "missing")) is True  # unknown: the kernel says
