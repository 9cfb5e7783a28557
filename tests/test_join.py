"""The process join over a recorded-style /proc tree: shared sockets, vanished processes, odd bytes."""

from __future__ import annotations

import os
from pathlib import Path

from portscope.model.records import Family, Proto, Socket, State
from portscope.sources.fdscan import FdScan, walk_socket_fds
from portscope.sources.join import SHARED_FDS, _fd_tuples, join_processes


def make_process(root: Path, pid: int, comm: str, fds: dict[int, str], cmdline: bytes, uid: int = 0) -> None:
    base = root / str(pid)
    (base / "fd").mkdir(parents=True)
    for fd, target in fds.items():
        os.symlink(target, base / "fd" / str(fd))
    (base / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0")
    (base / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (base / "cmdline").write_bytes(cmdline)


def sock(inode: int | None, state: State = State.LISTEN, uid: int | None = 0) -> Socket:
    return Socket(
        Proto.TCP, Family.IPV4, state, "127.0.0.1", 80, None, None, 0, 0, uid, inode, 0, None, None, None, None, None
    )


def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    make_process(
        root, 100, "nginx", {3: "socket:[555]", 4: "/dev/null", 7: "socket:[556]"}, b"nginx\0-g\0daemon off;\0"
    )
    make_process(root, 101, "nginx", {3: "socket:[555]"}, b"nginx: worker process\0")
    make_process(root, 102, "we(ird) name", {9: "socket:[555]", 10: "socket:[999]"}, b"tool\0\xff\xfe\0")
    (root / "103").mkdir()  # vanished between listdir and open: no fd directory left
    (root / "self").mkdir()
    (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    return root


def test_walk_finds_every_holder(tmp_path):
    counts = FdScan()
    found = walk_socket_fds({555: 555, 556: 556}, str(fake_proc(tmp_path)), counts)
    held = {(pid, inode, fd) for pid, inodes, fds in found for inode, fd in zip(inodes, fds, strict=True)}
    assert held == {(100, 555, 3), (100, 556, 7), (101, 555, 3), (102, 555, 9)}  # 999: not wanted
    assert sorted(pid for pid, _, _ in found) == [100, 101, 102]  # one entry per process
    assert counts.vanished == 1 and counts.scanned == 3


def test_join_builds_processes_once_with_their_fds(tmp_path):
    root = fake_proc(tmp_path)
    sockets = [sock(555), sock(556), sock(None, State.TIME_WAIT), sock(777, uid=0)]
    holders, report = join_processes(sockets, str(root))
    assert [h.process.pid for h in holders[555]] == [100, 101, 102]
    nginx = holders[555][0].process
    assert holders[556][0].process is nginx  # one record per process
    assert holders[555][0].fds == (3,) and holders[556][0].fds == (7,) and holders[555][2].fds == (9,)
    assert nginx.cmdline == ("nginx", "-g", "daemon off;")
    assert nginx.start_time == 1700000000 + 500 / os.sysconf("SC_CLK_TCK")
    odd = holders[555][2].process
    assert odd.name == "we(ird) name" and odd.cmdline == ("tool", "\udcff\udcfe")  # not UTF-8: kept, escaped when shown
    assert 777 not in holders
    assert report.unowned_sockets == 1 and report.hidden_sockets == 0
    assert report.processes_vanished == 1


def test_no_sockets_no_walk(tmp_path):
    holders, report = join_processes([sock(None, State.TIME_WAIT)], str(tmp_path / "missing"))
    assert holders == {} and report.joined and report.processes_scanned == 0


def test_fd_tuples_shared_by_number_and_past_the_shared_range():
    shared: list = []
    first = _fd_tuples([3, 70, 5], shared)
    again = _fd_tuples([5, 3, 900], shared)
    assert first == [(3,), (70,), (5,)] and again == [(5,), (3,), (900,)]
    assert again[0] is first[2] and again[1] is first[0]  # one tuple per fd number
    assert len(shared) == 901
    beyond = _fd_tuples([4, SHARED_FDS + 7], shared)
    assert beyond == [(4,), (SHARED_FDS + 7,)] and len(shared) == 901  # a table that large: tuples of its own
    assert _fd_tuples([], shared) == []


def test_a_process_gone_before_it_is_read_leaves_no_empty_entry(tmp_path, monkeypatch):
    """The holders map is sized for every socket the walk placed; those of a process that exits between the
    walk and the reading of its stat get no entry at all (not a None)."""
    from portscope.sources import join

    real_read = join.read_process
    monkeypatch.setattr(join, "read_process", lambda pid, *a, **k: None if pid == 100 else real_read(pid, *a, **k))
    holders, report = join_processes([sock(555), sock(556)], str(fake_proc(tmp_path)))
    assert set(holders) == {555}  # 556 was held by 100 alone
    assert [h.process.pid for h in holders[555]] == [101, 102]
    assert None not in holders.values() and holders.get(556) is None
    assert report.processes_vanished == 2 and report.unowned_sockets == 1
