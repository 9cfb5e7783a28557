"""``--netns`` opens only network namespace files: anything else is refused at once, never waited on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import portscope
from netns_util import new_netns
from portscope.errors import UsageError
from portscope.sources import netns

ENV = {**os.environ, "PYTHONPATH": str(Path(portscope.__file__).parents[1])}
PROMPTLY = 10.0  # seconds for a whole `python -m portscope` run, start-up included


@pytest.fixture
def not_namespaces(tmp_path):
    """Paths of every kind that is not a network namespace, a FIFO nobody writes to first."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("")
    return {
        "fifo": str(fifo),
        "device": "/dev/null",
        "regular file": str(plain),
        "directory": str(tmp_path),
        "mount namespace": "/proc/self/ns/mnt",
    }


KINDS = ["fifo", "device", "regular file", "directory", "mount namespace"]


@pytest.mark.parametrize("kind", KINDS)
def test_ls_refuses_what_is_not_a_network_namespace(not_namespaces, kind):
    path = not_namespaces[kind]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "portscope", "ls", "--netns", path],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=PROMPTLY,
    )
    assert time.monotonic() - started < PROMPTLY
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"portscope: error: cannot enter {path}: not a network namespace\n"


@pytest.mark.parametrize("kind", KINDS)
def test_library_refuses_at_once(not_namespaces, kind):
    path = not_namespaces[kind]
    started = time.monotonic()
    with pytest.raises(UsageError, match="not a network namespace"):
        netns.resolve(path)
    with pytest.raises(UsageError, match="not a network namespace"), netns.entered(netns.NetnsTarget(path, None)):
        pass
    assert time.monotonic() - started < 1.0
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(UsageError):
        netns.open_namespace(netns.NetnsTarget(path, None))
    assert sorted(os.listdir("/proc/self/fd")) == before  # nothing left open


def test_completion_with_a_fifo_as_netns_returns_at_once(not_namespaces):
    """<TAB> after --netns FIFO: no values, no wait (the FIFO is never opened for reading)."""
    line = f"portscope can-bind --netns {not_namespaces['fifo']} --device "
    env = {**ENV, "_PORTSCOPE_COMPLETE": "bash_complete", "COMP_LINE": line}
    result = subprocess.run(
        [sys.executable, "-m", "portscope"], env=env, capture_output=True, text=True, timeout=PROMPTLY
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert [line for line in result.stdout.splitlines() if line.startswith("plain,")] == []  # not our interfaces


@pytest.mark.live
def test_real_namespaces_by_name_path_and_pid_are_opened():
    with new_netns("psnsopen") as ns:
        named = netns.resolve(ns.name)
        by_path = netns.resolve(ns.path)
        holder = ns.fork_holder()
        fd = netns.open_namespace(named)
        try:
            assert os.fstat(fd).st_ino == os.stat(ns.path).st_ino
        finally:
            os.close(fd)
        assert (named.path, by_path.path) == (ns.path, ns.path)
        own = netns.resolve(str(os.getpid()))
        assert own.pid == os.getpid() and own.path == f"/proc/{os.getpid()}/ns/net"
        with netns.entered(by_path) as inode:
            assert inode == os.stat(ns.path).st_ino == netns.current_inode()
        assert netns.current_inode() == os.stat("/proc/self/ns/net").st_ino
        assert netns.resolve(str(holder)).pid == holder


def test_missing_things_say_what_is_missing():
    with pytest.raises(UsageError, match="unknown network namespace 'no-such-ns-h6'"):
        netns.resolve("no-such-ns-h6")
    with pytest.raises(UsageError, match=r"unknown network namespace '/no/such/path'"):
        netns.resolve("/no/such/path")
    with pytest.raises(UsageError, match="no process 41943049 to take a network namespace from"):
        netns.resolve("41943049")  # above the largest pid_max
    with pytest.raises(UsageError, match="empty network namespace"):
        netns.resolve("")
    with pytest.raises(UsageError, match="unknown network namespace"):
        netns.resolve("²")  # not a pid: a digit only to str.isdigit()
