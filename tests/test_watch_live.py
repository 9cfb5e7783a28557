"""watch and wait live, in namespaces the tests create: real sockets, the real commands as subprocesses
(``python -m portscope``), the kernel's destroy notifications, can-bind as the oracle of ``wait --free``,
and the terminal view under tmux."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from netns_util import REQUIRE_LIVE, Netns, new_netns

pytestmark = pytest.mark.live

PORTSCOPE = [sys.executable, "-m", "portscope"]


class Lines:
    """A running command whose stdout lines are read as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_event(self, wanted: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The next JSON line ``wanted`` accepts (earlier ones are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = ""
            if line is None or (line == "" and left <= 0):
                raise AssertionError(f"no such event within {timeout} s; stderr: {self.stop()[1]}")
            if line and wanted(event := json.loads(line)):
                return event

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        return self.process.returncode, self.process.stderr.read()


@contextlib.contextmanager
def watching(ns: Netns, *args: str) -> Iterator[Lines]:
    # SIGINT must reach Python's handler: a child started from a shell's background job would ignore it
    watch = Lines([*PORTSCOPE, "watch", "--jsonl", "--netns", ns.name, *args])
    try:
        yield watch
    finally:
        watch.stop(signal.SIGKILL)


def listener(ns: Netns, address: str = "127.0.0.1") -> tuple[socket.socket, int]:
    sock = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(8)
    return sock, sock.getsockname()[1]


def on_port(kind: str, port: int) -> Callable[[dict], bool]:
    return lambda event: event["event"] == kind and event["socket"]["local_port"] == port


def pids(socket_object: dict) -> set[int]:
    return {process["pid"] for process in socket_object["processes"]}


def started(watch: Lines, ns: Netns) -> None:
    """Block until the watch has made its first scan: a marker listener it must report first."""
    _, port = listener(ns)
    watch.next_event(on_port("appeared", port))


def test_watch_reports_appeared_and_vanished_with_ports_and_holder() -> None:
    with new_netns() as ns, watching(ns, "--interval", "0.2") as watch:
        started(watch, ns)
        server, port = listener(ns)
        appeared = watch.next_event(on_port("appeared", port))
        assert appeared["source"] == "poll" and "before" not in appeared
        sock = appeared["socket"]
        assert (sock["proto"], sock["state"], sock["local_address"]) == ("tcp", "listen", "127.0.0.1")
        assert sock["inode"] == os.fstat(server.fileno()).st_ino
        assert pids(sock) == {os.getpid()} and sock["netns_name"] == ns.name
        server.close()
        vanished = watch.next_event(on_port("vanished", port))
        gone = vanished["socket"]  # as last seen, its holder too
        assert (gone["inode"], gone["local_port"], gone["state"], pids(gone)) == (
            sock["inode"],
            port,
            "listen",
            pids(sock),
        )
        assert vanished["source"] == "poll"
        stamps = [appeared["time"], vanished["time"]]
        assert stamps == sorted(stamps) and all(t.endswith("+00:00") for t in stamps)
        status, err = watch.stop(signal.SIGINT)
        assert status == 0, err  # Ctrl-C ends a watch: its answer is 0
        assert "Traceback" not in err


def test_watch_ends_with_status_0_when_its_reader_goes_away() -> None:
    """watch --jsonl | head -1: the watch ends at once, not at the next event it would write."""
    with new_netns() as ns:
        listener(ns)
        watch = subprocess.Popen(
            [*PORTSCOPE, "watch", "--jsonl", "--netns", ns.name, "--interval", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watch.stdout is not None
            assert json.loads(watch.stdout.readline())["event"] == "appeared"
            watch.stdout.close()  # as head does after its line
            status = watch.wait(timeout=20)  # the next scan would be in 30 s
        finally:
            watch.kill()
        assert status == 0
        assert watch.stderr is not None and watch.stderr.read() == ""


HOLDER = """
import os, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
sys.stdin.readline()  # the watch has seen us: fork, and the parent goes
child = os.fork()
if child:
    print(child, flush=True)
    os._exit(0)
time.sleep(60)
"""


def test_watch_reports_a_holder_change_when_the_parent_exits() -> None:
    with new_netns() as ns, watching(ns, "--interval", "0.2") as watch:
        started(watch, ns)
        holder = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        child = None
        try:
            assert holder.stdout is not None and holder.stdin is not None
            port = int(holder.stdout.readline())
            appeared = watch.next_event(on_port("appeared", port))
            assert pids(appeared["socket"]) == {holder.pid}  # ip netns exec runs python in its own pid
            holder.stdin.write("go\n")
            holder.stdin.flush()
            child = int(holder.stdout.readline())
            holder.wait(timeout=10)
            changed = watch.next_event(lambda e: on_port("changed", port)(e) and pids(e["socket"]) == {child})
            assert holder.pid in pids(changed["before"])
            assert changed["socket"]["inode"] == changed["before"]["inode"] == appeared["socket"]["inode"]
            assert changed["socket"]["state"] == "listen"
        finally:
            holder.kill()
            holder.wait()
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)


def test_watch_reports_a_listener_shorter_than_the_interval() -> None:
    """10 ms of listening in a 30 s interval: only the destroy notifications can tell."""
    with new_netns() as ns, watching(ns, "--interval", "30") as watch:
        started(watch, ns)
        brief, port = listener(ns)
        time.sleep(0.01)
        brief.close()
        opened = time.monotonic()
        appeared = watch.next_event(on_port("appeared", port), timeout=10)
        vanished = watch.next_event(on_port("vanished", port), timeout=10)
        assert time.monotonic() - opened < 10  # long before the next scan
        for event in (appeared, vanished):
            assert event["source"] == "destroy"
            sock = event["socket"]
            assert (sock["proto"], sock["family"], sock["local_address"]) == ("tcp", "ipv4", "127.0.0.1")
            assert sock["state"] == "close" and sock["processes"] == [] and sock["inode"] is None
            assert sock["uid"] is None and sock["netns_name"] == ns.name
        status, err = watch.stop()
        assert status == 0 and "not seen" not in err


def run_wait(ns: Netns, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*PORTSCOPE, "wait", "--netns", ns.name, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def free_port(ns: Netns) -> int:
    probe = ns.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_wait_returns_shortly_after_a_listener_appears() -> None:
    with new_netns() as ns:
        port = free_port(ns)
        waiting = run_wait(ns, str(port), "--timeout", "30")
        try:
            time.sleep(0.5)
            assert waiting.poll() is None  # nothing listens yet
            server = ns.socket()
            server.bind(("127.0.0.1", port))
            opened = time.monotonic()
            server.listen()
            out, err = waiting.communicate(timeout=30)
            reacted = time.monotonic() - opened
        finally:
            waiting.kill()
        assert waiting.returncode == 0, err
        assert reacted < 3.0  # 0.1 s ticks; a loaded machine is slow, not that slow
        assert f"127.0.0.1:{port}" in out and f"[{os.getpid()}]" in out  # what it saw, with its holder


def test_wait_times_out_with_status_1() -> None:
    with new_netns() as ns:
        port = free_port(ns)
        began = time.monotonic()
        waiting = run_wait(ns, str(port), "--timeout", "0.5")
        out, err = waiting.communicate(timeout=30)
        took = time.monotonic() - began
        assert waiting.returncode == 1, err
        assert took >= 0.5
        assert f"Nothing listens on {port} (tcp/udp) after 0.5 s." in out
        listing = run_wait(ns, f"{port}/udp", "--timeout", "0", "--json")
        out, _ = listing.communicate(timeout=30)
        assert listing.returncode == 1 and json.loads(out) == []


def can_bind(ns: Netns, port: int) -> tuple[int, dict]:
    done = subprocess.run(
        [*PORTSCOPE, "can-bind", f":{port}", "--netns", ns.name, "--json"], capture_output=True, text=True, timeout=60
    )
    return done.returncode, json.loads(done.stdout)


def test_wait_free_returns_when_nothing_blocks_and_agrees_with_can_bind() -> None:
    with new_netns() as ns:
        server = ns.socket(socket.AF_INET6, socket.SOCK_STREAM)
        server.bind(("::", 0))
        server.listen()
        port = server.getsockname()[1]
        client = ns.socket()
        client.connect(("127.0.0.1", port))
        accepted, _ = server.accept()
        waiting = run_wait(ns, str(port), "--free", "--json", "--timeout", "60")
        try:
            time.sleep(0.5)
            assert waiting.poll() is None
            server.close()  # the listener goes; its accepted connection still holds the port
            time.sleep(0.6)
            assert waiting.poll() is None
            status, verdict = can_bind(ns, port)
            assert (status, verdict["verdict"], verdict["errno"]) == (1, "no", "EADDRINUSE")
            for sock in (accepted, client):  # a reset: no TIME-WAIT left behind
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            out, err = waiting.communicate(timeout=60)
        finally:
            waiting.kill()
        assert waiting.returncode == 0, err
        answer = json.loads(out)
        assert answer["verdict"] == "yes" and answer["request"]["port"] == port
        status, verdict = can_bind(ns, port)
        assert (status, verdict["verdict"]) == (0, "yes")  # can-bind agrees, at that moment
        assert answer["request"] == verdict["request"]


# ---------------------------------------------------------------------------------------------------
# The terminal view, under tmux


def _tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)("tmux is not installed")
    return path


def test_terminal_view_under_tmux() -> None:
    tmux = _tmux()
    server = f"pswatch-{uuid.uuid4().hex[:8]}"

    def screen() -> str:
        return subprocess.run(
            [tmux, "-L", server, "capture-pane", "-p"], capture_output=True, text=True, timeout=10
        ).stdout

    def shows(predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = screen()
            if predicate(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    with new_netns() as ns:
        command = " ".join([*PORTSCOPE, "watch", "--netns", ns.name, "--interval", "0.3"])
        subprocess.run(
            [tmux, "-L", server, "new-session", "-d", "-x", "80", "-y", "24", f"{command}; echo EXIT=$?; sleep 60"],
            check=True,
            timeout=10,
        )
        try:
            text = shows(lambda t: "q quits" in t)
            assert "listeners" in text and "no sockets" in text
            server_socket, port = listener(ns)
            text = shows(lambda t: f"127.0.0.1:{port}" in t)
            [row] = [line for line in text.splitlines() if f"127.0.0.1:{port}" in line]
            assert row.startswith("+") and "LISTEN" in row and f"[{os.getpid()}]" in row
            assert "tcp LISTEN 1 (+1)" in text and f"{port} (+1)" in text
            assert all(len(line) <= 80 for line in text.splitlines())
            server_socket.close()
            text = shows(lambda t: any(line.startswith("-") and str(port) in line for line in t.splitlines()))
            assert any(line.startswith("-") and f"127.0.0.1:{port}" in line for line in text.splitlines()), text
            assert "tcp LISTEN 0 (−1)" in text or "no sockets" in text.split("\n", 2)[1]
            subprocess.run([tmux, "-L", server, "send-keys", "q"], check=True, timeout=10)
            text = shows(lambda t: "EXIT=" in t)
            assert "EXIT=0" in text
            # the terminal is back in its normal mode: typed text is echoed again
            subprocess.run([tmux, "-L", server, "send-keys", "echoed-again"], check=True, timeout=10)
            assert "echoed-again" in shows(lambda t: "echoed-again" in t)
        finally:
            subprocess.run([tmux, "-L", server, "kill-server"], capture_output=True, timeout=10)


# ---------------------------------------------------------------------------------------------------
# The library calls


def test_wait_for_port_walks_proc_only_for_the_answer(monkeypatch) -> None:
    import portscope
    from portscope.engine import snapshot as snapshot_module

    walks: list[int] = []
    real_join = snapshot_module.join_processes

    def counting_join(*args, **kwargs):
        walks.append(1)
        return real_join(*args, **kwargs)

    monkeypatch.setattr(snapshot_module, "join_processes", counting_join)
    with new_netns() as ns:
        port = free_port(ns)
        result = portscope.wait_for_port(str(port), timeout=0.35, interval=0.05, netns=ns.path)
        assert not result.holds and result.checks >= 4 and walks == []  # kernel dumps only, while waiting
        server = ns.socket()
        server.bind(("127.0.0.1", port))
        server.listen()
        result = portscope.wait_for_port(f"127.0.0.1:{port}/tcp", timeout=5, netns=ns.path)
        assert result.holds and result.checks == 1 and len(walks) == 1
        [found] = result.snapshot.sockets
        assert found.local_port == port
        assert [h.process.pid for h in result.snapshot.holders_of(found)] == [os.getpid()]
        # ::1 is not covered by a 127.0.0.1 listener
        assert not portscope.wait_for_port(f"[::1]:{port}", timeout=0, netns=ns.path).holds


def test_watcher_from_a_thread_leaves_no_file_descriptors() -> None:
    """A library user's thread: no signal handler is touched, and every socket it opens is closed."""
    import portscope

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with new_netns() as ns:
        server, port = listener(ns)
        query = portscope.Query(states=frozenset({portscope.State.LISTEN}), netns=ns.path)
        before = open_fds()
        found: list[portscope.WatchEvent] = []
        errors: list[BaseException] = []

        def watch() -> None:
            try:
                for _ in range(2):
                    with portscope.Watcher(query) as watcher:
                        assert watcher.short_lived  # root: the destroy groups were joined
                        updates = watcher.updates(0.05)
                        found.extend(next(updates).events)
                        next(updates)
                        updates.close()
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)

        thread = threading.Thread(target=watch)
        thread.start()
        thread.join(timeout=60)
        assert not errors, errors
        assert open_fds() == before
        assert {(e.change, e.seen.socket.local_port) for e in found} == {(portscope.Change.APPEARED, port)}
        server.close()


@pytest.mark.parametrize("without_peer_only", [False, True])
def test_destroy_feed_filter_in_the_kernel(without_peer_only: bool) -> None:
    """The feed's BPF filter: never-bound sockets are dropped, and connections too for a watch of listeners."""
    from portscope.sources.destroyfeed import DESTROY_GROUPS, DestroyFeed

    with new_netns() as ns:
        target = netns_target(ns)
        with DestroyFeed(DESTROY_GROUPS, target, without_peer_only=without_peer_only) as feed:
            server, port = listener(ns)
            client = ns.socket()
            client.connect(("127.0.0.1", port))
            accepted, _ = server.accept()
            client_port = client.getsockname()[1]
            udp = ns.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            udp.bind(("::1", 0))
            udp_port = udp.getsockname()[1]
            unbound = ns.socket()
            for sock in (client, accepted):  # reset: no TIME-WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            for sock in (client, accepted, server, udp, unbound):
                sock.close()
            found = []
            deadline = time.monotonic() + 1.0  # announcements go through a kernel work queue
            while time.monotonic() < deadline:
                found += feed.read().sockets
                time.sleep(0.05)
        assert all(sock.local_port for sock in found)  # the unbound socket never comes
        assert all(sock.netns == os.stat(ns.path).st_ino for sock in found)
        ends = {(sock.proto.value, sock.local_port, sock.remote_port) for sock in found}
        assert ("tcp", port, None) in ends and ("udp", udp_port, None) in ends
        connected = {end for end in ends if end[2]}
        if without_peer_only:
            assert connected == set()  # dropped in the kernel
        else:
            assert connected == {("tcp", port, client_port)}  # the accepted end (the reset client's peer port is 0)


def netns_target(ns: Netns):
    from portscope.sources import netns as netns_module

    return netns_module.NetnsTarget(ns.path, None)


def test_watch_every_namespace_follows_namespaces_made_after_the_start() -> None:
    """--netns all: a namespace made after the watch started is joined at the next scan, and a listener
    shorter than the interval there is seen by its destroy notification; once the namespace is gone,
    the watch leaves it (its subscription would keep the namespace allocated)."""
    from portscope import Query
    from portscope.commands.watch import Change, Origin, Watcher
    from portscope.model.query import ALL_NAMESPACES
    from portscope.model.records import Proto, State

    query = Query(
        protocols=frozenset({Proto.TCP}), states=frozenset({State.LISTEN}), netns=ALL_NAMESPACES, join_processes=False
    )
    with Watcher(query, report_first=False) as watcher:
        assert watcher.short_lived
        watcher.scan()
        followed = {feed.netns for feed in watcher._feeds}
        with new_netns("pswatchns") as ns:
            inode = os.stat(ns.path).st_ino
            assert inode not in followed
            watcher.scan()
            assert inode in {feed.netns for feed in watcher._feeds}, "a new namespace is joined at the next scan"
            brief, port = listener(ns)
            brief.close()
            time.sleep(0.05)
            update = watcher.scan()  # reads the notifications waiting, then scans
            short = [e for e in update.events if e.seen.socket.local_port == port]
            assert {(e.change, e.origin) for e in short} == {
                (Change.APPEARED, Origin.DESTROY),
                (Change.VANISHED, Origin.DESTROY),
            }
            assert all(e.seen.socket.netns == inode for e in short)
        watcher.scan()
        assert inode not in {feed.netns for feed in watcher._feeds}, "a namespace gone is left"


def test_watch_applies_the_filter_expression_to_short_lived_sockets() -> None:
    """The expression decides for sockets known only from their destroy notification too, in the states
    they may have been in (a listener's notification says "close"); netns NAME terms work in watch."""
    from portscope.commands.ls import LsOptions
    from portscope.commands.watch import Origin, Watcher, watch_query

    def brief(ns: Netns) -> int:
        sock, port = listener(ns)
        sock.close()
        return port

    with new_netns("pswatchf") as chosen, new_netns("pswatchf") as other:
        expression = ("netns", "=", chosen.name, "and", "state", "listening", "and", "not", "sport", "=", ":1")
        query = watch_query(LsOptions(expression=expression, netns="all", join_processes=False))
        with Watcher(query, report_first=False) as watcher:
            watcher.scan()
            wanted, unwanted = brief(chosen), brief(other)
            time.sleep(0.05)
            short = [e for e in watcher.scan().events if e.origin is Origin.DESTROY]
            assert {e.seen.socket.local_port for e in short} == {wanted}, (wanted, unwanted, short)
