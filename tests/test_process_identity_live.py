"""Holder details belong to the process the fd walk saw: a reused pid, a zombie, a holder that exits,
hidepid, running out of fds. Real processes forked by the tests, a real proc mount, real rlimits."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from netns_util import new_netns
from portscope.commands.names import Names
from portscope.commands.who import who_is_on
from portscope.errors import SourceError
from portscope.render.environment import Environment
from portscope.render.who import render_who
from portscope.sources.fdscan import FdScan, walk_socket_fds
from portscope.sources.lineage import EXITED, DetailsReader, LineageReader
from portscope.sources.procinfo import parse_hidepid, read_process

pytestmark = pytest.mark.live

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def fork_sleeper(close: int | None = None) -> int:
    """A child that sleeps until killed; ``close``: an fd it closes first (so it does not hold that socket)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if close is not None:
                os.close(close)
            time.sleep(60)
        finally:
            os._exit(0)
    return pid


def end(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def fork_with_pid(wanted: int, close: int) -> int | None:
    """A sleeper forked with pid ``wanted`` (set through ns_last_pid), or None if another fork took it."""
    for _ in range(50):
        with open(NS_LAST_PID, "w") as handle:
            handle.write(str(wanted - 1))
        pid = fork_sleeper(close)
        if pid == wanted:
            link = f"/proc/{pid}/fd/{close}"
            assert wait_for(lambda link=link: not os.path.lexists(link))  # it has closed it
            return pid
        end(pid)
    return None


def walk_holders(sock: socket.socket) -> dict[int, list[int]]:
    """pid -> fds holding ``sock``, by the same walk the join makes."""
    inode = inode_of(sock)
    found = walk_socket_fds({inode: inode}, "/proc", FdScan())
    return {pid: fds for pid, _, fds in found}


def test_details_are_not_taken_from_a_process_that_reused_the_pid():
    if not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip("needs a writable ns_last_pid (root) to reuse a pid on purpose")
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        inode, fd = inode_of(listener), listener.fileno()
        holder = fork_sleeper()
        impostor = None
        try:
            seen = walk_holders(listener)
            assert seen[holder] == [fd]
            first = read_process(holder, seen=([inode], [fd]))
            assert first is not None and first.pid == holder  # the walk's holder itself is accepted
            started = first.start_time

            end(holder)  # the holder exits after the walk ...
            time.sleep(0.02)  # ... and a process started later takes its pid (start times are in ticks)
            impostor = fork_with_pid(holder, close=fd)
            if impostor is None:
                pytest.skip("another process kept taking the pid")

            unanchored = read_process(holder)
            assert unanchored is not None and unanchored.start_time != started  # what a by-path read would show
            assert read_process(holder, seen=([inode], [fd])) is None  # anchored: it holds no such fd
            assert LineageReader().lineage(holder, started) is None
            assert LineageReader().lineage(holder) is not None  # the pid itself exists
            details = DetailsReader().details(holder, started)
            assert details is not None and details.status == EXITED and details.exe is None
        finally:
            end(holder)
            if impostor is not None:
                end(impostor)


def test_zombie_and_exited_holders_are_reported_as_such():
    with tempfile.TemporaryDirectory() as workdir:
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, cwd=workdir
        )
        try:
            started = read_process(child.pid).start_time
            reader = DetailsReader()
            alive = reader.details(child.pid, started)
            assert alive.status in ("sleeping", "running") and not alive.gone
            assert alive.cwd == os.path.realpath(workdir)
            assert alive.exe == os.path.realpath(sys.executable)

            child.stdin.close()  # it exits; not reaped yet, it stays a zombie
            assert wait_for(lambda: read_state(child.pid) == "Z")
            zombie = DetailsReader().details(child.pid, started)
            assert (zombie.status, zombie.exe, zombie.cwd) == ("zombie", None, None) and zombie.gone
            assert LineageReader().lineage(child.pid, started) is not None  # a zombie still has its stat
        finally:
            child.kill()
            child.wait(10)
        gone = DetailsReader().details(child.pid, started)
        assert gone.status == EXITED and gone.gone


def read_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0].decode()
    except OSError:
        return None


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


PREFORK_SERVER = """
import os, socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(8)
workers = [os.fork() or time.sleep(60) or os._exit(0) for _ in range(2)]
print(sock.getsockname()[1], *workers, flush=True)
time.sleep(60)
"""


def test_who_shows_exe_cwd_and_workers_of_a_preforking_server():
    with new_netns() as ns, tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", PREFORK_SERVER],
            stdout=subprocess.PIPE,
            text=True,
            cwd=workdir,
        )
        try:
            port, *workers = map(int, server.stdout.readline().split())
            result = who_is_on(str(port), netns=ns.name)
            by_pid = {p.process.pid: p for p in result.processes}
            (master,) = [p for p in result.processes if set(workers) <= set(p.details.children)]
            assert set(by_pid) == {master.process.pid, *workers}
            for entry in result.processes:
                assert entry.details.cwd == os.path.realpath(workdir)
                assert entry.details.exe == os.path.realpath(sys.executable)
                assert entry.details.status == "sleeping"

            text = render_text(result)
            assert f"cwd        {os.path.realpath(workdir)}" in text
            assert f"children   2: {workers[0]}, {workers[1]}  (2 on this port)" in text

            document = render_json(result)
            (shown,) = [p for p in document["processes"] if p["pid"] == master.process.pid]
            assert shown["children"] == sorted(workers)
            assert (shown["cwd"], shown["status"]) == (os.path.realpath(workdir), "sleeping")
            assert shown["exe"] == os.path.realpath(sys.executable)
        finally:
            for pid in workers if "workers" in locals() else ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.kill()
            server.wait(10)


def render_text(result) -> str:
    import io

    out = io.StringIO()
    render_who(result, Environment.detect(out, io.StringIO()), Names.resolve(), as_json=False)
    return out.getvalue()


def render_json(result) -> dict:
    import io

    out = io.StringIO()
    render_who(result, Environment.detect(out, io.StringIO()), Names.resolve(), as_json=True)
    return json.loads(out.getvalue())


# ---------------------------------------------------------------------------------------------------
# hidepid


MOUNTINFO = (
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "82 22 0:41 / /proc rw,relatime - proc proc rw,hidepid=invisible,gid=27\n"
    "90 27 0:50 / /mnt/my\\040proc rw - proc proc rw,hidepid=2\n"
    "91 27 0:51 / /srv/p rw - proc proc rw,hidepid=off\n"
)


def test_parse_hidepid_takes_the_top_mount():
    top = parse_hidepid(MOUNTINFO, "/proc")
    assert (top.value, top.gid, top.invisible) == ("invisible", 27, True)
    assert top.option == "hidepid=invisible (hidepid=2)"
    assert parse_hidepid(MOUNTINFO, "/mnt/my proc").option == "hidepid=2 (hidepid=invisible)"
    assert parse_hidepid(MOUNTINFO, "/srv/p") is None
    assert parse_hidepid(MOUNTINFO, "/sys") is None
    assert parse_hidepid(MOUNTINFO + "95 22 0:60 / /proc rw - tmpfs tmpfs rw\n", "/proc") is None


AS_USER = """
import sys
from portscope.commands.who import who_is_on
from portscope.errors import PortscopeError
from portscope.commands.names import Names
from portscope.render.environment import Environment
from portscope.render.who import render_who
try:
    result = who_is_on(sys.argv[1], netns=sys.argv[3] if len(sys.argv) > 3 else None)
except PortscopeError as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
render_who(result, Environment.detect(), Names.resolve(), as_json=sys.argv[2] == "json")
"""


@pytest.fixture
def nobody_library():
    """portscope and psutil where uid 65534 can read them (it cannot read /root/.pyenv)."""
    import shutil

    import psutil

    if not (os.path.exists(SYSTEM_PYTHON) and shutil.which("setpriv") and shutil.which("unshare")):
        pytest.skip("needs /usr/bin/python3, setpriv and unshare")
    top = tempfile.mkdtemp(prefix="portscope-hidepid-")
    try:
        skip_cache = shutil.ignore_patterns("__pycache__")
        source = os.path.join(os.path.dirname(__file__), "..", "src", "portscope")
        shutil.copytree(source, os.path.join(top, "portscope"), ignore=skip_cache)
        shutil.copytree(os.path.dirname(psutil.__file__), os.path.join(top, "psutil"), ignore=skip_cache)
        with open(os.path.join(top, "as_user.py"), "w") as handle:
            handle.write(AS_USER)
        for directory, _, files in os.walk(top):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"


def test_hidepid_hidden_holder_is_named_not_called_a_kernel_socket(nobody_library):
    top = nobody_library
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def run(mode: str, hidepid: str, user: str = NOBODY) -> subprocess.CompletedProcess:
            # a private mount namespace with its own /proc: the host's mounts stay as they are
            script = (
                f"mount -t proc -o hidepid={hidepid} proc /proc && exec {user} "
                f"env PYTHONPATH={top} PYTHONDONTWRITEBYTECODE=1 NO_COLOR=1 "
                f"{SYSTEM_PYTHON} {top}/as_user.py {port} {mode}"
            )
            return ns.run("unshare", "-m", "--propagation", "private", "sh", "-c", script, check=False)

        shown = run("text", "2")
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert "Owner hidden" in text and "No process found" not in text and "kernel itself" not in text
        assert "/proc is mounted with hidepid=invisible (hidepid=2): other users' processes are invisible" in text
        assert f"inode {inode_of(listener)}" in text

        document = json.loads(run("json", "2").stdout)
        assert document["processes"] == [] and document["sockets"][0]["inode"] == inode_of(listener)

        plain = run("text", "0")  # without hidepid the same holder is counted as denied, and no hidepid is named
        assert plain.returncode == 0, plain.stderr
        assert "Owner hidden" in plain.stdout and "hidepid" not in plain.stdout

        as_root = run("json", "2", user="")  # hidepid hides nothing from root
        assert as_root.returncode == 0, as_root.stderr
        assert os.getpid() in {p["pid"] for p in json.loads(as_root.stdout)["processes"]}


# ---------------------------------------------------------------------------------------------------
# EMFILE


@contextlib.contextmanager
def no_free_fds():
    """Every fd this process may open is taken (the soft limit lowered to make that cheap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_running_out_of_fds_is_a_resource_error_not_an_empty_answer():
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert walk_holders(listener)  # with fds to spare the walk finds this process
        with no_free_fds():
            with pytest.raises(SourceError, match="too many open files"):
                walk_socket_fds(None, "/proc", FdScan())
            with pytest.raises(SourceError, match="too many open files"):
                read_process(os.getpid())
            with pytest.raises(SourceError, match="too many open files"):
                who_is_on(str(port), netns=ns.name)


def test_a_namespace_refused_for_lack_of_privilege_is_not_a_missing_process(nobody_library):
    with new_netns() as ns:
        holder = ns.fork_holder()  # root's process: its /proc/PID/ns/net is closed to other users
        script = (
            f"env PYTHONPATH={nobody_library} PYTHONDONTWRITEBYTECODE=1 {SYSTEM_PYTHON} {nobody_library}/as_user.py"
        )
        refused = subprocess.run(
            [*NOBODY.split(), "sh", "-c", f"{script} 80 text {holder}"], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1
        assert (
            refused.stderr
            == f"SourceError: /proc/{holder}/ns/net: permission denied: the network namespace of process {holder}"
            " (it belongs to another user: run as root)\n"
        )
        end(holder)
        missing = subprocess.run(
            [*NOBODY.split(), "sh", "-c", f"{script} 80 text {holder}"], capture_output=True, text=True, timeout=60
        )
        assert missing.stderr == f"UsageError: no process {holder} to take a network namespace from\n"


LOADS_PSUTIL = """
import sys
from portscope.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("psutil" in sys.modules, file=sys.stderr)
"""


def test_psutil_is_loaded_by_neither_who_nor_the_listings():
    """who reads its holders' status, exe, cwd and start time from /proc, as the listings join from their own
    /proc walk: none of them loads psutil (kill checks the targets it signals with it)."""
    with new_netns() as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = str(listener.getsockname()[1])

        def loads(*argv: str) -> str:
            env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
            done = subprocess.run(
                [sys.executable, "-c", LOADS_PSUTIL, *argv], capture_output=True, text=True, env=env, timeout=60
            )
            return done.stderr.splitlines()[-1]

        assert loads("who", "--netns", ns.name, port) == "False"
        assert loads("ls", "-a", "--netns", ns.name) == "False"
        assert loads("ls", "-a", "--json", "--netns", ns.name) == "False"
        assert loads("completion", "bash") == "False"


def test_details_read_as_psutil_reads_them():
    """DetailsReader gives psutil's own status(), exe() and cwd() (its zombie made None) on live processes of
    every kind who meets: running, sleeping, stopped, a zombie, a deleted working directory and a deleted
    executable, init and a kernel thread; and the kernel's children lists agree with psutil's children(). Where
    the file is gone the kernel's " (deleted)" is kept (psutil drops it after a stat of the path named)."""
    psutil = pytest.importorskip("psutil")
    children: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as scratch:
        gone_dir = os.path.join(scratch, "gone")
        os.mkdir(gone_dir)
        copied = os.path.join(scratch, "python-copy")
        with open(sys.executable, "rb") as source, open(copied, "wb") as target:
            target.write(source.read())
        os.chmod(copied, 0o755)
        hold = "import sys; sys.stdin.read()"
        try:
            for argv, cwd in (
                ([sys.executable, "-c", hold], scratch),
                ([sys.executable, "-c", hold], gone_dir),
                ([copied, "-c", hold], scratch),
                ([sys.executable, "-c", "pass"], scratch),  # exits: a zombie until waited for
            ):
                children.append(subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=cwd))
            _, in_gone_dir, deleted_exe, zombie = children
            stopped = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE)
            children.append(stopped)
            os.kill(stopped.pid, signal.SIGSTOP)
            os.rmdir(gone_dir)
            assert wait_for(lambda: read_state(zombie.pid) == "Z")
            assert wait_for(lambda: read_state(stopped.pid) == "T")
            assert wait_for(lambda: os.path.exists(f"/proc/{deleted_exe.pid}/exe"))
            os.unlink(copied)
            pids = [os.getpid(), 1, 2, *(child.pid for child in children)]
            reader = DetailsReader()
            for pid in pids:
                started = read_process(pid).start_time
                mine = reader.details(pid, started)
                theirs = psutil.Process(pid)

                def link(read):
                    try:
                        return read() or None  # "" where the link is gone
                    except psutil.AccessDenied:  # (a security module may refuse even root: init here)
                        return None

                try:
                    expected = (theirs.status(), link(theirs.exe), link(theirs.cwd))
                except psutil.ZombieProcess:
                    expected = ("zombie", None, None)
                if pid == in_gone_dir.pid:
                    expected = (expected[0], expected[1], f"{gone_dir} (deleted)")
                if pid == deleted_exe.pid:
                    expected = (expected[0], f"{copied} (deleted)", expected[2])
                assert (mine.status, mine.exe, mine.cwd) == expected, pid
                assert list(mine.children) == sorted(c.pid for c in theirs.children()), pid
            assert reader.details(stopped.pid, None).status == "stopped"
            assert reader.details(in_gone_dir.pid, None).cwd == f"{gone_dir} (deleted)"
            assert reader.details(deleted_exe.pid, None).exe == f"{copied} (deleted)"  # replaced on disk
        finally:
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.wait(10)


def test_details_refused_are_not_read(monkeypatch):
    """A security module that refuses a holder's stat even to root: no details, no traceback."""
    started = read_process(os.getpid()).start_time
    real_open = os.open

    def refusing(path, *args, **kwargs):
        if path == "stat" and kwargs.get("dir_fd") is not None:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    assert DetailsReader().details(os.getpid(), started) is None
