"""A holder that swaps its socket's fd for a file on a FUSE mount that never answers cannot stall can-bind.

The holder (uid 65534) keeps a UDP socket with SO_REUSEADDR at fd N. Right after can-bind's dump (a
hook in the can-bind process waits there), it dup2()s a file of a FUSE mount onto N; that file's
FLUSH never finishes, so a close() of a duplicate of it sleeps uninterruptibly. can-bind must still
answer at once, and the owner's flags are then unknown. The mount is made by root with allow_other
(here /dev/fuse is root's only; a user's own mount acts the same towards the fd).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import portscope
from netns_util import REQUIRE_LIVE, new_netns
from portscope.sources import bindfacts

pytestmark = pytest.mark.live

PORT = 7301
NOBODY = 65534
ANSWER_WITHIN = 5.0  # seconds from the swap to can-bind's exit
ENV = {**os.environ, "PYTHONPATH": str(Path(portscope.__file__).parents[1])}
TRAP_DAEMON = Path(__file__).with_name("fuse_trap.py")
# can-bind, with a pause after the dump: it tells fd DUMPED, then waits for a byte on fd GO
HOOKED_CAN_BIND = """
import os, sys
from portscope.sources import bindfacts
from portscope.cli import main
dumped, go = int(sys.argv[1]), int(sys.argv[2])
real_snapshot = bindfacts.snapshot
def snapshot_then_pause(query):
    snap = real_snapshot(query)
    os.write(dumped, b"d")
    os.read(go, 1)
    return snap
bindfacts.snapshot = snapshot_then_pause
main(sys.argv[3:])
"""


def _missing(reason: str) -> None:
    if REQUIRE_LIVE:
        pytest.fail(f"FUSE test cannot run: {reason}")
    pytest.skip(reason)


def _wait_line(stream, wanted: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([stream], [], [], end - time.monotonic())
        if not ready:
            return False
        line = stream.readline()
        if not line:
            return False
        if line.strip() == wanted:
            return True
    return False


@pytest.fixture
def trap_mount():
    """A mounted fuse_trap.py; yields (path of the trap file, the daemon's Popen)."""
    try:
        import fuse  # noqa: F401  (fusepy: finds libfuse.so.2 at import)
    except (ImportError, OSError) as exc:
        _missing(f"fusepy with libfuse2 is needed: {exc}")
    made_node = False
    if not os.path.exists("/dev/fuse"):
        os.mknod("/dev/fuse", stat.S_IFCHR | 0o666, os.makedev(10, 229))
        made_node = True
    mountpoint = tempfile.mkdtemp(prefix="ps-fuse-")
    daemon = subprocess.Popen(
        [sys.executable, str(TRAP_DAEMON), mountpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        if not _wait_line(daemon.stdout, "mounted", 10):
            daemon.kill()
            _missing(f"the FUSE mount did not come up: {daemon.stderr.read().strip()[:200]}")
        yield os.path.join(mountpoint, "trap"), daemon
    finally:
        daemon.kill()  # aborts the connection first: every FLUSH wait ends
        daemon.wait(timeout=10)
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False, timeout=10)
        os.rmdir(mountpoint)
        if made_node:
            os.unlink("/dev/fuse")


def _fork_swapper(ns, trap_path: str, keep_second_fd: bool) -> tuple[int, int, int]:
    """A uid-65534 holder of a SO_REUSEADDR UDP socket that dup2()s the trap file onto it on a byte.

    Returns (pid, command fd, acknowledgement fd); it acknowledges once holding, and again once swapped.
    """
    command_read, command_write = os.pipe()
    ack_read, ack_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the holder
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            with ns.inside():
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", PORT))
            os.fchown(sock.fileno(), NOBODY, -1)  # sk_uid, as if the user had made it
            trap = os.open(trap_path, os.O_RDONLY)
            if keep_second_fd:
                fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, max(trap, sock.fileno()) + 1)  # tried after fd N
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            os.write(ack_write, b"h")
            os.read(command_read, 1)
            os.dup2(trap, sock.fileno())
            os.write(ack_write, b"s")
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(command_read)
    os.close(ack_write)
    return pid, command_write, ack_read


def _read_byte(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 1) if ready else b""


@pytest.mark.parametrize("keep_second_fd", [False, True], ids=["only-fd-swapped", "second-fd-kept"])
def test_fd_swapped_to_a_hanging_fuse_file_does_not_stall_can_bind(trap_mount, keep_second_fd):
    trap_path, daemon = trap_mount
    with new_netns("pshostile") as ns:
        holder, command, ack = _fork_swapper(ns, trap_path, keep_second_fd)
        ns.children.append(holder)  # killed and reaped by the namespace teardown (after the daemon's end)
        dumped_read, dumped_write = os.pipe()
        go_read, go_write = os.pipe()
        argv = ["can-bind", "--netns", ns.name, "--udp", "--reuseaddr", "--json", f"127.0.0.1:{PORT}"]
        can_bind = None
        try:
            assert _read_byte(ack, 10) == b"h"
            can_bind = subprocess.Popen(
                [sys.executable, "-c", HOOKED_CAN_BIND, str(dumped_write), str(go_read), *argv],
                pass_fds=(dumped_write, go_read),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            )
            assert _read_byte(dumped_read, 60) == b"d", "can-bind never reached its dump"
            os.write(command, b"x")
            assert _read_byte(ack, 10) == b"s"
            started = time.monotonic()
            os.write(go_write, b"g")
            try:
                out, err = can_bind.communicate(timeout=ANSWER_WITHIN)
            except subprocess.TimeoutExpired:
                pytest.fail(f"can-bind still running {ANSWER_WITHIN} s after the swap")
            took = time.monotonic() - started
            assert took < ANSWER_WITHIN
            doc = json.loads(out)
            if keep_second_fd:
                # the swapped fd is passed over, the socket's other fd tells: both SO_REUSEADDR, so yes
                assert (can_bind.returncode, doc["verdict"]) == (0, "yes"), err
            else:
                assert (can_bind.returncode, doc["verdict"]) == (3, "uncertain"), err
                assert any("SO_REUSEADDR" in reason for reason in doc["uncertainty"])
            # the trap was real: the helper's duplicate of the FUSE file, closed on its exit, sent a FLUSH
            assert _wait_line(daemon.stdout, "flush", 5)
        finally:
            if can_bind is not None and can_bind.poll() is None:
                daemon.kill()  # a stuck can-bind can only leave its FLUSH wait once the connection is gone
                can_bind.kill()
                can_bind.wait(timeout=10)
            daemon.kill()  # ends the holder's own FLUSH wait at its exit, so the teardown can reap it
            for fd in (command, ack, dumped_read, dumped_write, go_read, go_write):
                with contextlib.suppress(OSError):
                    os.close(fd)


@pytest.fixture
def threads_running(request):
    """With request.param, a second thread runs during the test (the helper is then spawned, not forked)."""
    if not request.param:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("threads_running", [False, True], ids=["forked", "spawned"], indirect=True)
def test_held_flags_only_from_the_very_socket(threads_running, tmp_path):
    """Flags come from the socket the dump named, matched by cookie or inode; any other fd answers unknown."""
    me = os.getpid()
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with listener, other, open(tmp_path / "file", "w") as plain:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        cookie = bindfacts._socket_cookie(listener.fileno())
        inode = os.fstat(listener.fileno()).st_ino
        assert cookie and bindfacts._socket_cookie(plain.fileno()) is None
        held = [
            bindfacts.HeldSocket(cookie, inode, ((me, listener.fileno()),)),
            bindfacts.HeldSocket(None, inode, ((me, listener.fileno()),)),  # /proc/net source: by inode
            bindfacts.HeldSocket(cookie, inode, ((me, other.fileno()),)),  # the fd now holds another socket
            bindfacts.HeldSocket(cookie, inode, ((me, plain.fileno()),)),  # ... or a file
            bindfacts.HeldSocket(cookie, inode, ((me, plain.fileno()), (1 << 30, 3), (me, listener.fileno()))),
            bindfacts.HeldSocket(cookie, inode, ((me, 1 << 20),)),  # no such fd
        ]
        # owner_changed is what the inode shows: a recycled one may keep an earlier socket's fchown time
        changed = os.fstat(listener.fileno()).st_ctime_ns != 0
        expected = bindfacts.SocketFlags(reuseaddr=False, reuseport=True, v6only=True, owner_changed=changed)
        before = sorted(os.listdir("/proc/self/fd"))
        assert bindfacts.read_held_flags(held) == [expected, expected, None, None, expected, None]
        assert sorted(os.listdir("/proc/self/fd")) == before  # no duplicate came back here


def test_held_flags_unread_by_the_deadline_are_unknown():
    sock = socket.socket()
    with sock:
        held = [bindfacts.HeldSocket(None, os.fstat(sock.fileno()).st_ino, ((os.getpid(), sock.fileno()),))]
        assert bindfacts.read_held_flags(held, timeout=0) == [None]
        assert bindfacts.read_held_flags(held)[0] is not None
