"""portscope who live, in namespaces the tests create: shared listeners, TIME-WAIT, hidden owners,
address coverage and --remote, each checked against a real oracle (ss -p, connect(), bind())."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from netns_util import new_netns, ss_sockets
from portscope.cli import cli
from portscope.commands.who import covered_families, parse_target, socket_matches
from portscope.engine.snapshot import snapshot
from portscope.model.query import PortRange, Query
from portscope.model.records import Family

pytestmark = pytest.mark.live

SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot read /root/.pyenv: the library is copied for it
NOBODY = 65534


def who(ns, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["who", "--netns", ns.name, *args], catch_exceptions=False)
    return result.exit_code, result.stdout


def who_json(ns, *args: str) -> tuple[int, dict]:
    code, out = who(ns, "--json", *args)
    return code, json.loads(out)


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def ss_holders(ns, port: int) -> dict[int, set[int]]:
    """ss -p as the oracle: socket inode -> pids holding it."""
    out = ns.run("ss", "-tuanHep", f"sport = :{port}").stdout
    holders: dict[int, set[int]] = {}
    for line in out.splitlines():
        inode = re.search(r"ino:(\d+)", line)
        if inode:
            holders[int(inode.group(1))] = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
    return holders


def tcp_listener(ns) -> tuple[socket.socket, int]:
    """A listener on 127.0.0.1 in the namespace, held by this test process, on a port the kernel picks."""
    sock = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, sock.getsockname()[1]


def test_shared_listener_lists_every_holder():
    with new_netns() as ns:
        listener, port = tcp_listener(ns)
        children = {ns.fork_holder() for _ in range(3)}

        code, document = who_json(ns, str(port))
        assert code == 0
        (sock,) = document["sockets"]
        assert sock["inode"] == inode_of(listener) and sock["state"] == "listen"
        pids = {p["pid"] for p in document["processes"]}
        assert children | {os.getpid()} == pids
        assert ss_holders(ns, port) == {inode_of(listener): pids}
        assert {p["pid"] for p in sock["processes"]} == pids  # the ls socket object names them all too
        for process in document["processes"]:
            assert process["inodes"] == [inode_of(listener)]
            assert listener.fileno() in process["fds"]
            if process["pid"] in children:
                assert process["ppid"] == os.getpid()
                assert process["parents"][0]["pid"] == os.getpid()  # the forking test is their parent

        code, text = who(ns, f"{port}/tcp")
        assert code == 0
        for pid in pids:
            assert f"pid {pid}" in text
        assert text.count(f"listens    tcp 127.0.0.1:{port}  IPv4") == 4


def test_time_wait_only_port_lists_sockets_without_process():
    with new_netns() as ns:
        server, port = tcp_listener(ns)
        for _ in range(2):
            client = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.connect(("127.0.0.1", port))
            accepted, _ = server.accept()
            accepted.close()  # the side that closes first keeps the TIME-WAIT: here the server's port
            assert client.recv(1) == b""
            client.close()
        server.close()
        assert wait_for(lambda: {s.state for s in ss_sockets(ns, f"sport = :{port}")} == {"time-wait"})

        code, document = who_json(ns, str(port))
        assert code == 0
        assert document["processes"] == []
        oracle = [s for s in ss_sockets(ns, f"sport = :{port}") if s.state == "time-wait"]
        assert len(document["sockets"]) == len(oracle) == 2
        for sock in document["sockets"]:
            assert sock["state"] == "time-wait" and sock["inode"] is None and sock["processes"] == []
            assert 0 < sock["timer_ms"] <= 60_000

        code, text = who(ns, str(port))
        assert code == 0
        assert "Without a process" in text
        assert text.count("TIME-WAIT  127.0.0.1:") == 2
        assert re.search(r"\d+s left", text)
        assert "SO_REUSEADDR" in text and f"portscope can-bind :{port}" in text
        assert "pid " not in text


def test_time_wait_sockets_are_listed_by_time_left():
    with new_netns() as ns:
        server, port = tcp_listener(ns)
        for _ in range(4):
            client = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.connect(("127.0.0.1", port))
            accepted, _ = server.accept()
            accepted.close()  # TIME-WAIT on the server's port, a little later each round
            assert client.recv(1) == b""
            client.close()
            time.sleep(0.3)
        server.close()
        assert wait_for(lambda: len(ss_sockets(ns, f"sport = :{port}")) == 4)
        code, document = who_json(ns, str(port))
        left = [s["timer_ms"] for s in document["sockets"]]
        assert code == 0 and len(left) == 4 and left == sorted(left)
        assert left[-1] - left[0] >= 500  # made 0.3 s apart: the order is the timers', not the dump's


def test_address_forms_match_what_connect_reaches():
    """who ADDR:PORT lists a socket exactly when a connection to ADDR:PORT would reach it."""
    with new_netns() as ns:
        listeners = []
        for family, address, v6only in (
            (socket.AF_INET6, "::", 0),
            (socket.AF_INET6, "::", 1),
            (socket.AF_INET, "127.0.0.1", None),
            (socket.AF_INET, "0.0.0.0", None),
            (socket.AF_INET6, "::1", 1),
        ):
            taken = {s.getsockname()[1] for s in listeners}
            while True:  # a port of its own: listeners that do not conflict may be given the same number
                sock = ns.socket(family, socket.SOCK_STREAM)
                if v6only is not None:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                sock.bind((address, 0))
                if sock.getsockname()[1] not in taken:
                    break
                sock.close()
            sock.listen(8)
            listeners.append(sock)
        ports = [s.getsockname()[1] for s in listeners]
        snap = snapshot(Query(netns=ns.name, join_processes=False, local_ports=tuple(PortRange(p, p) for p in ports)))
        by_port = {s.local_port: s for s in snap.sockets}
        assert set(by_port) == set(ports)

        for port in ports:
            for address in ("127.0.0.1", "127.0.0.2", "::1"):
                target = parse_target(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                with ns.inside(), socket.socket(family, socket.SOCK_STREAM) as probe:
                    reached = probe.connect_ex((address, port)) == 0
                assert socket_matches(by_port[port], target) == reached, (address, port)

        # the families a wildcard listener covers, against bind(): an IPv4 bind on a covered port fails
        for port in ports[:2]:
            covered, certain = covered_families(by_port[port])
            assert certain
            with ns.inside(), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                refused = probe.connect_ex(("127.0.0.1", port)) != 0
            with ns.inside(), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind(("0.0.0.0", port))
                    conflict = False
                except OSError as exc:
                    assert exc.errno == errno.EADDRINUSE
                    conflict = True
            assert (Family.IPV4 in covered) == conflict == (not refused)

        code, text = who(ns, f"127.0.0.1:{ports[0]}")
        assert code == 0 and "IPv4 and IPv6" in text
        assert who(ns, f"127.0.0.1:{ports[1]}")[0] == 1
        code, text = who(ns, f"[::1]:{ports[1]}")
        assert code == 0 and f"[::]:{ports[1]}  IPv6" in text


def test_remote_adds_connections_to_the_port():
    with new_netns() as ns:
        server, port = tcp_listener(ns)
        client = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", port))
        accepted, _ = server.accept()
        ns.sockets.append(accepted)

        _, local = who_json(ns, str(port))
        assert {s["inode"] for s in local["sockets"]} == {inode_of(server), inode_of(accepted)}
        _, both = who_json(ns, "--remote", str(port))
        oracle = {s.inode for s in ss_sockets(ns, f"sport = :{port} or dport = :{port}")}
        assert {s["inode"] for s in both["sockets"]} == oracle == {inode_of(s) for s in (server, accepted, client)}
        (me,) = both["processes"]
        assert me["pid"] == os.getpid() and sorted(me["inodes"]) == sorted(oracle)

        code, text = who(ns, "--remote", str(port))
        assert code == 0
        assert f"127.0.0.1:{port} (1)" in text  # our client's peer, the server
        assert "2 established" in text


def test_bound_only_socket_holds_the_port():
    with new_netns() as ns:
        bound = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        bound.bind(("127.0.0.1", 0))  # neither listening nor connected
        port = bound.getsockname()[1]
        code, document = who_json(ns, f"{port}/tcp")
        if code == 1 and not snapshot(Query(netns=ns.name, join_processes=False)).bound_visible:
            pytest.skip("this kernel does not list bound-only TCP sockets (netlink, Linux 6.8+)")
        assert code == 0
        (sock,) = document["sockets"]
        assert sock["state"] == "bound" and sock["inode"] == inode_of(bound)
        assert [p["pid"] for p in document["processes"]] == [os.getpid()]
        with ns.inside(), socket.socket() as other, pytest.raises(OSError) as refused:
            other.bind(("127.0.0.1", port))  # the oracle: the port is taken
        assert refused.value.errno == errno.EADDRINUSE
        _, text = who(ns, str(port))
        assert f"bound      tcp 127.0.0.1:{port}  IPv4  not listening" in text


# ---------------------------------------------------------------------------------------------------
# As another user: uid 65534 with the system Python and a world-readable copy of the library

SCRIPT = """
import json, socket, sys
from portscope.errors import UsageError
from portscope.render.who import render_who
from portscope.render.environment import Environment
from portscope.commands.names import Names
from portscope.commands.who import who_is_on

mode, target = sys.argv[1], sys.argv[2]
if mode == "own":  # a listener of our own, which we may see
    own = socket.socket()
    own.bind(("127.0.0.1", 0))
    own.listen(1)
    target = str(own.getsockname()[1])
try:
    result = who_is_on(target)
except UsageError as exc:
    print(f"portscope: error: {exc}", file=sys.stderr)
    sys.exit(2)
render_who(result, Environment.detect(), Names.resolve(), as_json=mode in ("json", "own"))
sys.exit(0 if result.found else 1)
"""


@pytest.fixture(scope="module")
def nobody_library():
    if not os.path.exists(SYSTEM_PYTHON) or shutil.which("setpriv") is None:
        pytest.skip("needs /usr/bin/python3 and setpriv to run as another user")
    top = tempfile.mkdtemp(prefix="portscope-who-")
    try:
        source = Path(__file__).resolve().parents[1] / "src" / "portscope"
        shutil.copytree(source, Path(top) / "portscope", ignore=shutil.ignore_patterns("__pycache__"))
        (Path(top) / "who_as_user.py").write_text(SCRIPT)
        for directory, _, files in os.walk(top):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_as_nobody(ns, top: str, mode: str, target: str):
    return ns.run(
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "env",
        f"PYTHONPATH={top}",
        "PYTHONDONTWRITEBYTECODE=1",
        "NO_COLOR=1",
        SYSTEM_PYTHON,
        f"{top}/who_as_user.py",
        mode,
        target,
        check=False,
    )


def test_hidden_owner_as_another_user(nobody_library):
    with new_netns() as ns:
        listener, port = tcp_listener(ns)  # held by this root process

        shown = run_as_nobody(ns, nobody_library, "text", str(port))
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
        text = shown.stdout
        assert "Owner hidden" in text
        assert f"LISTEN  127.0.0.1:{port}  uid 0 (root)  inode {inode_of(listener)}" in text
        assert "not visible without privileges" in " ".join(text.split())
        # the holder may be among the processes named as refused, never shown as the holder
        assert f"pid {os.getpid()}  user" not in text and "0 processes" in text

        as_json = run_as_nobody(ns, nobody_library, "json", str(port))
        assert as_json.returncode == 0
        document = json.loads(as_json.stdout)
        assert document["processes"] == []
        (sock,) = document["sockets"]
        assert (sock["uid"], sock["inode"], sock["processes"]) == (0, inode_of(listener), [])
        assert "hidden" in as_json.stderr

        # its own sockets it does see, with itself as the holder
        own = run_as_nobody(ns, nobody_library, "own", "")
        assert own.returncode == 0, own.stderr
        (process,) = json.loads(own.stdout)["processes"]
        assert process["user"] == "nobody" and process["cmdline"][1].endswith("who_as_user.py")
        assert "may hold these sockets too" in own.stderr  # root's processes could hold it as well

        nothing = run_as_nobody(ns, nobody_library, "text", str(port + 1 if port < 65535 else port - 1))  # empty
        assert nothing.returncode == 1 and "Nothing is using" in nothing.stdout

        bad = run_as_nobody(ns, nobody_library, "text", "70000")
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr.count("\n") == 1 and "out of range" in bad.stderr
