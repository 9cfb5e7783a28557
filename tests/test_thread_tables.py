"""Holders in fd tables other than the thread-group leader's, live: what ss, psutil and lsof miss.

Two real programs hold a listener in a namespace the test creates:
* a thread that called unshare(CLONE_FILES) opens it, so it is only in /proc/PID/task/TID/fd;
* the main thread opens it, starts a thread and ends itself with SYS_exit (as pthread_exit does): the
  leader becomes a zombie with an empty /proc/PID/fd while the thread keeps the fd table.
`who` and `ls --json` must name the process (its pid) and the thread (`tid`), with either backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from netns_util import new_netns
from portscope.cli import cli
from portscope.engine.snapshot import snapshot
from portscope.model.query import PortRange, Query
from portscope.model.records import Backend, Proto, State

pytestmark = pytest.mark.live

SYS_EXIT = {"x86_64": 60, "aarch64": 93, "riscv64": 93, "loongarch64": 93, "ppc64le": 1, "s390x": 1}

PRIVATE_TABLE = """
import ctypes, os, socket, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def worker():
    if libc.unshare(0x400) != 0:  # CLONE_FILES
        print("unshare failed", flush=True)
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    print(os.getpid(), threading.get_native_id(), sock.getsockname()[1], sock.fileno(), flush=True)
    time.sleep(60)
threading.Thread(target=worker, daemon=True).start()
time.sleep(60)
"""

EXITED_LEADER = """
import ctypes, os, socket, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(4)
started = threading.Event()
def worker():
    started.tid = threading.get_native_id()
    started.set()
    time.sleep(60)
threading.Thread(target=worker).start()
started.wait()
print(os.getpid(), started.tid, sock.getsockname()[1], sock.fileno(), flush=True)
libc.syscall(int(sys.argv[1]))  # SYS_exit: this thread only
"""


@contextlib.contextmanager
def holder_program(ns, source: str, *args: str):
    """Run ``source`` in the namespace; yields (pid, tid, port, fd) it prints once its socket is ready."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", source, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 4, f"holder program failed: {line}"
        yield tuple(int(field) for field in line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # ip netns exec execs the program: this pid is the program
        proc.wait(timeout=10)


def exit_number() -> int:
    machine = os.uname().machine
    if machine not in SYS_EXIT:
        pytest.skip(f"SYS_exit number unknown for {machine}")
    return SYS_EXIT[machine]


def check_holder(ns, pid: int, tid: int, port: int, fd: int) -> None:
    for backend in (Backend.NETLINK, Backend.PROC):
        query = Query(
            protocols=frozenset({Proto.TCP}),
            states=frozenset({State.LISTEN}),
            local_ports=(PortRange(port, port),),
            backend=backend,
            netns=ns.name,
        )
        snap = snapshot(query)
        (sock,) = snap.sockets
        holders = snap.holders_of(sock)
        assert [(h.process.pid, h.fds, h.tid) for h in holders] == [(pid, (fd,), tid)], backend
        assert holders[0].process.cmdline, "a leader that exited lends its thread's command line"
        listing = CliRunner().invoke(
            cli, ["ls", "-l", "--port", str(port), "--json", "--backend", backend.value, "--netns", ns.name]
        )
        assert listing.exit_code == 0, listing.output
        (entry,) = json.loads(listing.stdout)
        assert [(p["pid"], p["fds"], p["tid"]) for p in entry["processes"]] == [(pid, [fd], tid)]
    result = CliRunner().invoke(cli, ["who", str(port), "--netns", ns.name])
    assert result.exit_code == 0, result.output
    assert f"pid {pid}" in result.stdout and "No process found" not in result.stdout
    result = CliRunner().invoke(cli, ["who", str(port), "--json", "--netns", ns.name])
    assert [p["pid"] for p in json.loads(result.stdout)["processes"]] == [pid]


def test_listener_in_a_private_fd_table():
    with new_netns("psthr") as ns, holder_program(ns, PRIVATE_TABLE) as (pid, tid, port, fd):
        assert tid != pid
        target = os.readlink(f"/proc/{pid}/task/{tid}/fd/{fd}")
        assert target.startswith("socket:[") and target not in _links(f"/proc/{pid}/fd"), "not in the leader's table"
        check_holder(ns, pid, tid, port, fd)


def test_listener_of_a_group_whose_leader_exited():
    number = exit_number()
    with new_netns("psthr") as ns, holder_program(ns, EXITED_LEADER, str(number)) as (pid, tid, port, fd):
        _wait_zombie(pid)
        assert os.listdir(f"/proc/{pid}/fd") == []
        check_holder(ns, pid, tid, port, fd)
        # The group lives on in its thread: not "zombie", and its exe and cwd are the thread's.
        result = CliRunner().invoke(cli, ["who", str(port), "--json", "--netns", ns.name])
        (process,) = json.loads(result.stdout)["processes"]
        assert process["status"] == "sleeping", process
        assert process["exe"] == os.path.realpath(sys.executable)
        assert process["cwd"] == os.getcwd()
        assert "zombie" not in CliRunner().invoke(cli, ["who", str(port), "--netns", ns.name]).stdout


def _links(fd_dir: str) -> list[str]:
    links = []
    for name in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"{fd_dir}/{name}"))
    return links


def _wait_zombie(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.01)
    pytest.fail("the leader did not exit")
