"""Live collector tests: real sockets in a test-made namespace, judged by ss, /proc and /proc/<pid>/fd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from netns_util import new_netns, ss_sockets
from portscope.engine.snapshot import snapshot
from portscope.model.query import PortRange, Query
from portscope.model.records import Backend, Proto, State
from socket_mix import OTHER_UID, build_mix, proc_comparable

ALL = frozenset(State)
WILDCARDS = {"0.0.0.0", "::", "*"}


@pytest.fixture(scope="module")
def mixed():
    with new_netns() as ns:
        mix = build_mix(ns)
        yield mix


def _addr(text):
    return "*" if text in WILDCARDS else text


def _our_key(sock):
    return (
        sock.proto.value,
        sock.state.value,
        _addr(sock.local_address),
        sock.local_port,
        sock.remote_address,
        sock.remote_port,
        sock.recv_q,
        sock.send_q,
        sock.uid or 0,
        sock.inode or 0,
    )


def _ss_key(row):
    return (
        row.proto,
        row.state,
        _addr(row.local_address),
        row.local_port,
        row.remote_address,
        row.remote_port,
        row.recv_q,
        row.send_q,
        row.uid,
        row.inode,
    )


def test_netlink_matches_ss_plus_bound_only(mixed):
    snap = snapshot(Query(states=ALL, backend=Backend.NETLINK, join_processes=False, netns=mixed.ns.name))
    assert {s.backend for s in snap.sources} == {Backend.NETLINK}
    ours = Counter(_our_key(s) for s in snap.sockets if s.state is not State.BOUND)
    theirs = Counter(_ss_key(r) for r in ss_sockets(mixed.ns))
    assert ours == theirs
    # the states the mix was built to contain are all there
    states = {s.state for s in snap.sockets}
    for wanted in (
        State.LISTEN,
        State.ESTABLISHED,
        State.CLOSE_WAIT,
        State.FIN_WAIT_2,
        State.TIME_WAIT,
        State.BOUND,
        State.UNCONN,
    ):
        assert wanted in states
    bound = {(s.local_address, s.local_port) for s in snap.sockets if s.state is State.BOUND}
    assert bound == set(mixed.bound_only)
    assert snap.bound_visible is True


def test_fields_ss_shows_with_extras(mixed):
    snap = snapshot(Query(states=ALL, join_processes=False, netns=mixed.ns.name))
    by_port = {(s.proto, s.local_port, s.state): s for s in snap.sockets}
    assert by_port[(Proto.TCP, 7009, State.LISTEN)].interface == "lo"
    assert by_port[(Proto.TCP, 7006, State.LISTEN)].v6only is False
    assert by_port[(Proto.TCP, 7007, State.LISTEN)].v6only is True
    assert by_port[(Proto.TCP, 7005, State.LISTEN)].v6only is True  # a specific v6 bind forces v6only
    assert by_port[(Proto.UDP, 7012, State.UNCONN)].v6only is True
    assert by_port[(Proto.TCP, 7008, State.LISTEN)].uid == OTHER_UID
    assert by_port[(Proto.TCP, 7001, State.LISTEN)].recv_q == 2  # two connections waiting in the accept queue
    assert by_port[(Proto.TCP, 7001, State.LISTEN)].send_q == 8  # the backlog
    mapped = [s for s in snap.sockets if s.local_port == 7006 and s.state is State.ESTABLISHED]
    assert mapped[0].local_address == "::ffff:127.0.0.1"
    tw = [s for s in snap.sockets if s.state is State.TIME_WAIT]
    assert tw and all(s.inode is None and s.uid is None and s.timer == "timewait" for s in tw)
    assert all(0 < s.timer_ms <= 60_000 for s in tw)
    ss_v6only = mixed.ns.run("ss", "-tlnHe", "sport = :7006 or sport = :7007").stdout
    assert "v6only:0" in ss_v6only and "v6only:1" in ss_v6only


def test_netlink_and_proc_agree(mixed):
    query = Query(states=ALL, join_processes=False, netns=mixed.ns.name)
    via_netlink = snapshot(Query(**{**query.__dict__, "backend": Backend.NETLINK}))
    via_proc = snapshot(Query(**{**query.__dict__, "backend": Backend.PROC}))
    assert {s.backend for s in via_proc.sources} == {Backend.PROC}
    assert via_proc.bound_visible is False and via_proc.warnings
    nl = Counter(proc_comparable(s) for s in via_netlink.sockets if s.state is not State.BOUND)
    pr = Counter(proc_comparable(s) for s in via_proc.sockets)
    assert nl == pr
    # both tell the time left on TIME-WAIT timers, to within a second of each other
    nl_tw = sorted(s.timer_ms for s in via_netlink.sockets if s.state is State.TIME_WAIT)
    pr_tw = sorted(s.timer_ms for s in via_proc.sockets if s.state is State.TIME_WAIT)
    assert len(nl_tw) == len(pr_tw) and all(abs(a - b) < 1500 for a, b in zip(nl_tw, pr_tw, strict=True))


def test_proc_of_a_pid_in_the_namespace(mixed):
    """/proc/<pid>/net shows another namespace without entering it."""
    sleeper = subprocess.Popen(["ip", "netns", "exec", mixed.ns.name, "sleep", "30"])
    try:
        for _ in range(100):
            if os.readlink(f"/proc/{sleeper.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            subprocess.run(["sleep", "0.02"], check=False)
        by_pid = snapshot(Query(states=ALL, backend=Backend.PROC, join_processes=False, netns=str(sleeper.pid)))
        by_name = snapshot(Query(states=ALL, backend=Backend.PROC, join_processes=False, netns=mixed.ns.name))
        assert Counter(map(proc_comparable, by_pid.sockets)) == Counter(map(proc_comparable, by_name.sockets))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kernel_port_filter_matches_python_filter(mixed):
    everything = snapshot(Query(states=ALL, join_processes=False, netns=mixed.ns.name))
    cases = [
        dict(local_ports=(PortRange(7001, 7001),)),
        dict(local_ports=(PortRange(7003, 7006), PortRange(7010, 7010))),
        dict(remote_ports=(PortRange(7001, 7002),)),
        dict(any_ports=(PortRange(7002, 7002), PortRange(7011, 7012))),
        dict(local_ports=(PortRange(7000, 7010),), remote_ports=(PortRange(1024, 65535),)),
        dict(local_ports=(PortRange(1, 65535),), any_ports=(PortRange(7006, 7006),)),
    ]
    for case in cases:
        filtered = snapshot(Query(states=ALL, join_processes=False, netns=mixed.ns.name, **case))

        def wanted(s, case=case):
            def within(port, ranges):
                return port is not None and any(r.low <= port <= r.high for r in ranges)

            return (
                ("local_ports" not in case or within(s.local_port, case["local_ports"]))
                and ("remote_ports" not in case or within(s.remote_port, case["remote_ports"]))
                and (
                    "any_ports" not in case
                    or within(s.local_port, case["any_ports"])
                    or within(s.remote_port, case["any_ports"])
                )
            )

        expected = Counter(map(proc_comparable, filter(wanted, everything.sockets)))
        assert Counter(map(proc_comparable, filtered.sockets)) == expected, case
        assert filtered.sockets, case


def test_state_filter_in_kernel(mixed):
    listeners = snapshot(Query(states=frozenset({State.LISTEN, State.UNCONN}), netns=mixed.ns.name))
    assert listeners.sockets and {s.state for s in listeners.sockets} == {State.LISTEN, State.UNCONN}
    only_tw = snapshot(Query(states=frozenset({State.TIME_WAIT}), netns=mixed.ns.name))
    assert only_tw.sockets and {s.state for s in only_tw.sockets} == {State.TIME_WAIT}
    assert all(s.proto is Proto.TCP for s in only_tw.sockets)


def _fd_oracle(pid: int) -> dict[int, set[tuple[int, int]]]:
    """inode -> {(pid, fd)} by stat()ing each fd (not readlink, as the collector does)."""
    found: dict[int, set[tuple[int, int]]] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o140000:
            found.setdefault(st.st_ino, set()).add((pid, int(name)))
    return found


def test_holders_shared_listener_and_time_wait():
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 8899))
        listener.listen(4)
        children = [ns.fork_holder(), ns.fork_holder()]
        tw_client = ns.socket()
        tw_client.connect(("127.0.0.1", 8899))
        accepted, _ = listener.accept()
        tw_client.close()
        accepted.close()
        ns.sockets.remove(tw_client)
        query = Query(states=ALL, any_ports=(PortRange(8899, 8899),), netns=ns.name)
        for _ in range(100):
            snap = snapshot(query)
            if any(s.state is State.TIME_WAIT for s in snap.sockets):
                break
            time.sleep(0.02)
        listen = [s for s in snap.sockets if s.state is State.LISTEN]
        assert len(listen) == 1
        holders = snap.holders_of(listen[0])
        assert sorted(h.process.pid for h in holders) == sorted([os.getpid(), *children])
        for holder in holders:
            assert holder.fds == (listener.fileno(),)
            assert holder.process.name == Path(f"/proc/{holder.process.pid}/comm").read_text().strip()
        tw = [s for s in snap.sockets if s.state is State.TIME_WAIT]
        assert tw and all(snap.holders_of(s) == () for s in tw)


def test_join_agrees_with_proc_fd(mixed):
    snap = snapshot(Query(states=ALL, netns=mixed.ns.name))
    oracle = _fd_oracle(os.getpid())
    for sock in snap.sockets:
        ours = {(h.process.pid, fd) for h in snap.holders_of(sock) for fd in h.fds}
        if sock.inode is None:
            assert ours == set()
        else:
            assert ours == oracle.get(sock.inode, set()), sock


UNPRIVILEGED_SCRIPT = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])
from portscope.model.query import Query
from portscope.model.records import State
from portscope.engine.snapshot import snapshot
own = socket.socket()
own.bind(("127.0.0.1", 7999))
own.listen(1)
snap = snapshot(Query(states=frozenset(State)))
print(json.dumps({
    "sockets": [[s.local_port, s.state.value, s.inode, [h.process.pid for h in snap.holders_of(s)]]
                for s in snap.sockets],
    "hidden": snap.join.hidden_sockets,
    "denied": snap.join.processes_denied,
    "pid": __import__("os").getpid(),
}))
"""


def test_unprivileged_lists_sockets_and_reports_hidden_owners(mixed):
    python = "/usr/bin/python3"
    if not (os.path.exists(python) and shutil.which("setpriv")):
        pytest.skip("needs /usr/bin/python3 and setpriv to run as an unprivileged user")
    src = Path(__file__).resolve().parents[1] / "src" / "portscope"
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(src, Path(tmp) / "portscope", ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
        os.chmod(tmp, 0o755)
        result = mixed.ns.run(
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", UNPRIVILEGED_SCRIPT, tmp
        )
    data = json.loads(result.stdout)
    root_view = snapshot(Query(states=ALL, join_processes=False, netns=mixed.ns.name))
    assert len(data["sockets"]) == len(root_view.sockets) + 1  # everything, plus its own listener
    own = [row for row in data["sockets"] if row[0] == 7999]
    assert own and own[0][3] == [data["pid"]]
    others_with_inode = [row for row in data["sockets"] if row[0] != 7999 and row[2] is not None]
    assert all(row[3] == [] for row in others_with_inode)
    assert data["hidden"] == len(others_with_inode) > 0
    assert data["denied"] > 0


def test_cli_json_equals_ss_view(mixed):
    """The acceptance check: ls -a --json per backend lists ss's sockets (plus bound-only), holders included."""
    theirs = Counter(_ss_key(r)[:6] for r in ss_sockets(mixed.ns))
    for backend in ("netlink", "proc"):
        out = subprocess.run(
            [sys.executable, "-m", "portscope", "ls", "-a", "--json", "--backend", backend, "--netns", mixed.ns.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = json.loads(out)
        ours = Counter(
            (r["proto"], r["state"], _addr(r["local_address"]), r["local_port"], r["remote_address"], r["remote_port"])
            for r in rows
            if r["state"] != "bound"
        )
        assert ours == theirs, backend
        bound = {(r["local_address"], r["local_port"]) for r in rows if r["state"] == "bound"}
        assert bound == (set(mixed.bound_only) if backend == "netlink" else set())
        held = [r for r in rows if r["inode"] is not None]
        assert held and all(p["pid"] == os.getpid() for r in held for p in r["processes"])
        assert all(r["processes"] for r in held)


def test_socket_in_namespace_is_invisible_outside(mixed):
    here = snapshot(Query(states=ALL, local_ports=(PortRange(7001, 7001),), join_processes=False))
    inode_there = {
        s.inode
        for s in snapshot(
            Query(states=ALL, local_ports=(PortRange(7001, 7001),), join_processes=False, netns=mixed.ns.name)
        ).sockets
    }
    assert not ({s.inode for s in here.sockets} & inode_there - {None})


def test_bound_inactive_probe_for_older_or_vendor_kernels(mixed):
    """The probe used below 6.8 must recognise a kernel that lists bound-only sockets (this one does)."""
    from portscope.engine.snapshot import _kernel_lists_bound

    with mixed.ns.inside():  # the probe binds its throw-away socket in the namespace being dumped
        assert _kernel_lists_bound() is True
