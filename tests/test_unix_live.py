"""UNIX sockets, live: ``ls -x`` against ``ss -xap`` in a test-made namespace, /proc/net/unix as the
fallback, hostile names, and ``who PATH`` / ``who @NAME``.

Filesystem names are global, so the socket files live in a private temporary directory; abstract names
and the sockets themselves belong to the namespace, which holds nothing else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

from netns_util import Netns, new_netns
from portscope.cli import cli, exit_status

pytestmark = pytest.mark.live

SS_STATES = {"ESTAB": "established", "LISTEN": "listen", "UNCONN": "unconn", "SYN-SENT": "syn-sent"}
SS_TYPES = {"u_str": "stream", "u_dgr": "dgram", "u_seq": "seqpacket"}
STREAM, DGRAM, SEQPACKET = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET


@dataclass
class UnixMix:
    ns: Netns
    directory: str
    paths: dict[str, str] = field(default_factory=dict)
    inodes: dict[str, int] = field(default_factory=dict)
    passed_to: int = 0  # the process an SCM_RIGHTS socket was passed to


def _unix(ns: Netns, kind: int) -> socket.socket:
    return ns.socket(socket.AF_UNIX, kind)


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _receiver(ns: Netns) -> tuple[int, socket.socket]:
    """A child that receives one fd over a socketpair (SCM_RIGHTS) and keeps it until killed."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            ours.close()
            _msg, _fds, _flags, _addr = socket.recv_fds(theirs, 16, 1)
            theirs.sendall(b"k")
            time.sleep(120)
        finally:
            os._exit(0)
    theirs.close()
    ns.children.append(pid)
    return pid, ours


def build_unix_mix(ns: Netns, directory: str) -> UnixMix:
    mix = UnixMix(ns, directory)
    for name in ("stream", "dgram", "seqpacket"):
        mix.paths[name] = os.path.join(directory, f"{name}.sock")

    # a stream server on a path: an accepted connection, one waiting to be accepted
    server = _unix(ns, STREAM)
    server.bind(mix.paths["stream"])
    server.listen(4)
    client = _unix(ns, STREAM)
    client.connect(mix.paths["stream"])
    accepted, _ = server.accept()
    ns.sockets.append(accepted)
    waiting = _unix(ns, STREAM)
    waiting.connect(mix.paths["stream"])
    mix.inodes.update(server=_inode(server), client=_inode(client), accepted=_inode(accepted))

    # an abstract name with a NUL byte in it, and a connection to it
    abstract = _unix(ns, STREAM)
    abstract.bind(b"\0portscope-test\0abs")
    abstract.listen(1)
    abstract_client = _unix(ns, STREAM)
    abstract_client.connect(b"\0portscope-test\0abs")
    abstract_accepted, _ = abstract.accept()
    ns.sockets.append(abstract_accepted)
    mix.inodes.update(abstract=_inode(abstract), abstract_client=_inode(abstract_client))

    # datagrams: a bound receiver, a sender connected to it, an unbound unconnected one
    receiver = _unix(ns, DGRAM)
    receiver.bind(mix.paths["dgram"])
    sender = _unix(ns, DGRAM)
    sender.connect(mix.paths["dgram"])
    sender.send(b"x" * 100)  # something in the receiver's queue
    _unix(ns, DGRAM)
    mix.inodes.update(receiver=_inode(receiver), sender=_inode(sender))

    # seqpacket server and client
    seq_server = _unix(ns, SEQPACKET)
    seq_server.bind(mix.paths["seqpacket"])
    seq_server.listen(2)
    seq_client = _unix(ns, SEQPACKET)
    seq_client.connect(mix.paths["seqpacket"])
    seq_accepted, _ = seq_server.accept()
    ns.sockets.append(seq_accepted)

    # socketpairs of each type
    for kind in (STREAM, DGRAM, SEQPACKET):
        with ns.inside():
            pair = socket.socketpair(socket.AF_UNIX, kind)
        ns.sockets.extend(pair)

    # a socket passed to another process (SCM_RIGHTS) and closed here: only that process holds it
    with ns.inside():
        passed_a, passed_b = socket.socketpair(socket.AF_UNIX, STREAM)
    ns.sockets.append(passed_b)
    mix.inodes["passed"] = _inode(passed_a)
    mix.passed_to, channel = _receiver(ns)
    socket.send_fds(channel, [b"fd"], [passed_a.fileno()])
    assert channel.recv(1) == b"k"
    passed_a.close()
    channel.close()
    return mix


@pytest.fixture(scope="module")
def unix_mix():
    with new_netns("psunix") as ns, tempfile.TemporaryDirectory(prefix="psunix-") as directory:
        mix = build_unix_mix(ns, directory)
        ns.fork_holder()  # every socket above is shared with a second process
        yield mix


def run(*args: str, codes: tuple[int, ...] = (0,)):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code in codes, (result.exit_code, result.output)
    return result


def ls_json(mix: UnixMix, *args: str) -> list[dict]:
    return json.loads(run("ls", "-x", "-a", "--json", "--netns", mix.ns.name, *args).stdout)


_SS_LINE = re.compile(r"(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s*(.*)")


def ss_unix(ns: Netns) -> dict[int, tuple]:
    """``ss -xapH``: inode -> (type, state, path, peer inode, recv-q, send-q, holder pids)."""
    out = subprocess.run(["ip", "netns", "exec", ns.name, "ss", "-xapH"], capture_output=True, check=True).stdout
    rows = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        match = _SS_LINE.fullmatch(line.strip())
        assert match, line
        netid, state, recv_q, send_q, path, inode, _peer_path, peer, users = match.groups()
        pids = frozenset(int(pid) for pid in re.findall(r"pid=(\d+)", users))
        rows[int(inode)] = (
            SS_TYPES[netid],
            SS_STATES[state],
            None if path == "*" else path,
            None if peer == "0" else int(peer),
            int(recv_q),
            int(send_q),
            pids,
        )
    return rows


def our_rows(rows: list[dict]) -> dict[int, tuple]:
    result = {}
    for row in rows:
        assert row["proto"] == "unix"
        path = row["path"]
        if path is not None and path.startswith("@"):
            path = path.replace("\0", "@")  # ss writes an abstract name's NUL bytes as "@"
        pids = frozenset(p["pid"] for p in row["processes"])
        result[row["inode"]] = (
            row["type"],
            row["state"],
            path,
            row["peer_inode"],
            row["recv_q"],
            row["send_q"],
            pids,
        )
    return result


def test_ls_unix_equals_ss(unix_mix):
    ours = our_rows(ls_json(unix_mix))
    theirs = ss_unix(unix_mix.ns)
    assert ours == theirs
    types = {row[0] for row in ours.values()}
    states = {row[1] for row in ours.values()}
    assert types == {"stream", "dgram", "seqpacket"} and states == {"listen", "established", "unconn"}
    # the socket passed over SCM_RIGHTS is held by the process it went to, and only by it
    assert ours[unix_mix.inodes["passed"]][6] == {unix_mix.passed_to}


def test_peer_processes_name_the_other_end(unix_mix):
    rows = {row["inode"]: row for row in ls_json(unix_mix)}
    inodes = unix_mix.inodes
    client, accepted = rows[inodes["client"]], rows[inodes["accepted"]]
    assert client["peer_inode"] == inodes["accepted"] and accepted["peer_inode"] == inodes["client"]
    assert client["peer_processes"] == accepted["processes"]
    assert accepted["peer_processes"] == client["processes"]
    assert accepted["path"] == unix_mix.paths["stream"] and client["path"] is None  # the listener's name
    assert rows[inodes["abstract"]]["path"] == "@portscope-test\0abs"
    sender = rows[inodes["sender"]]
    assert (
        sender["peer_inode"] == inodes["receiver"] and sender["peer_processes"] == rows[inodes["receiver"]]["processes"]
    )
    for row in rows.values():
        assert (row["peer_inode"] is None) == (row["peer_processes"] == [])
        assert set(row) == {
            "proto", "type", "state", "path", "inode", "peer_inode", "recv_q", "send_q", "netns", "processes",
            "peer_processes",
        }  # fmt: skip


def test_listen_and_ip_sockets_together(unix_mix):
    listening = json.loads(run("ls", "-x", "-l", "--json", "--netns", unix_mix.ns.name).stdout)
    assert {row["state"] for row in listening} == {"listen", "unconn"}
    with unix_mix.ns.inside():
        tcp = socket.create_server(("127.0.0.1", 0))
    try:
        both = json.loads(run("ls", "-x", "-t", "-l", "--json", "--netns", unix_mix.ns.name).stdout)
        plain = json.loads(run("ls", "-l", "--json", "--netns", unix_mix.ns.name).stdout)
    finally:
        tcp.close()
    assert {row["proto"] for row in both} == {"tcp", "unix"}
    assert {row["proto"] for row in plain} == {"tcp"}  # without -x: no UNIX socket, as before
    # a port filter matches no UNIX socket
    assert json.loads(run("ls", "-x", "-a", "--port", "80", "--json", "--netns", unix_mix.ns.name).stdout) == []


def test_proc_fallback_gives_the_same_records(unix_mix):
    netlink = {row["inode"]: row for row in ls_json(unix_mix)}
    proc = {row["inode"]: row for row in ls_json(unix_mix, "--backend", "proc")}
    assert netlink.keys() == proc.keys()
    for inode, row in proc.items():
        expected = dict(netlink[inode])
        if expected["path"] is not None and expected["path"].startswith("@"):
            expected["path"] = expected["path"].replace("\0", "@")  # /proc/net/unix prints NUL bytes as "@"
        # what /proc/net/unix cannot know
        expected.update(peer_inode=None, recv_q=None, send_q=None, peer_processes=[])
        assert row == expected


def test_table_shows_peers_and_processes(unix_mix):
    out = run("ls", "-x", "-a", "--netns", unix_mix.ns.name).stdout
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["Proto", "State"]
    (accepted,) = [
        line for line in lines if line.split()[:2] == ["u_str", "ESTAB"] and line.split()[4].endswith(".sock")
    ]
    (client,) = [line for line in lines if line.split()[:2] == ["u_str", "ESTAB"] and line.split()[5].endswith(".sock")]
    assert accepted.split()[5].startswith(("python", "pytest"))  # the peer column: the client's processes
    assert client.split()[4] == "*"
    assert "@portscope-test\\x00abs" in out  # the NUL byte escaped, never raw
    assert "\0" not in out


@pytest.fixture
def hostile():
    names = {
        "newline": b"evil\nu_str  LISTEN  0  0  fake.sock",
        "escape": b"\x1b[31mred\x1b[0m",
        "invalid": b"caf\xe9-\xff",
    }
    with new_netns("psunixh") as ns, tempfile.TemporaryDirectory(prefix="psunixh-") as directory:
        paths = {}
        for key, name in names.items():
            path = os.fsencode(directory) + b"/" + name
            sock = _unix(ns, STREAM)
            sock.bind(path)
            sock.listen(1)
            paths[key] = path
        abstract = _unix(ns, DGRAM)
        abstract.bind(b"\0\x1b]0;title\x07\n\xff")
        yield ns, paths


def test_hostile_names_are_escaped_and_json_is_utf8(hostile):
    ns, paths = hostile
    for backend in ("netlink", "proc"):
        raw = subprocess.run(
            [sys.executable, "-m", "portscope", "ls", "-x", "-a", "--json", "--backend", backend, "--netns", ns.name],
            capture_output=True,
            check=True,
        ).stdout
        rows = json.loads(raw.decode("utf-8"))  # strict: valid UTF-8
        names = {row["path"] for row in rows}
        assert os.fsdecode(paths["escape"]) in names  # printable-escaped in the text, exact in the value
        assert "\x1b" not in raw.decode() and "\x07" not in raw.decode()
        invalid = os.fsencode(paths["invalid"]).decode("utf-8", "surrogateescape")
        assert invalid.replace("\udce9", "\\xe9").replace("\udcff", "\\xff") in names
        if backend == "netlink":
            assert os.fsdecode(paths["newline"]) in names
            # a name with bytes that are not UTF-8 is given whole in the escaped text form (render/text.py)
            assert "@\\x1b]0;title\\x07\\x0a\\xff" in names
    table = subprocess.run(
        [sys.executable, "-m", "portscope", "ls", "-x", "-a", "--netns", ns.name], capture_output=True, check=True
    ).stdout.decode("utf-8")
    lines = table.splitlines()
    assert len(lines) == 1 + 4  # the header and one line per socket: no newline from a name
    assert "\x1b" not in table and "\x07" not in table
    assert "evil\\x0au_str" in table and "caf\\xe9-\\xff" in table and "\\x1b[31mred" in table


def test_who_path_lists_holders_and_peers(unix_mix):
    document = json.loads(run("who", "--json", "--netns", unix_mix.ns.name, unix_mix.paths["stream"]).stdout)
    assert set(document) == {"query", "sockets", "processes", "peers"}
    inodes = {sock["inode"] for sock in document["sockets"]}
    assert inodes == {unix_mix.inodes["server"], unix_mix.inodes["accepted"]}
    holders = {p["pid"] for p in document["processes"]}
    # this process, and the two children forked after the server was made (they inherited it)
    assert holders == {os.getpid(), *unix_mix.ns.children}
    assert {p["pid"] for p in document["peers"]} == holders  # the client is held by the same processes
    assert all(unix_mix.inodes["client"] in p["inodes"] for p in document["peers"])
    # any path to the same socket file finds it
    relative = os.path.relpath(unix_mix.paths["stream"])
    again = json.loads(run("who", "--json", "--netns", unix_mix.ns.name, "./" + relative).stdout)
    assert {sock["inode"] for sock in again["sockets"]} == inodes
    text = run("who", "--netns", unix_mix.ns.name, unix_mix.paths["stream"]).stdout
    assert "listens" in text and "At the other end" in text


def test_who_abstract_name(unix_mix):
    for name in ("@portscope-test@abs", "@portscope-test\0abs".replace("\0", "@")):
        document = json.loads(run("who", "--json", "--netns", unix_mix.ns.name, name).stdout)
        assert unix_mix.inodes["abstract"] in {sock["inode"] for sock in document["sockets"]}
        assert {p["pid"] for p in document["peers"]}


def test_who_nothing_bound_exits_1(unix_mix):
    missing = os.path.join(unix_mix.directory, "missing.sock")
    result = run("who", "--netns", unix_mix.ns.name, missing, codes=(1,))
    assert "No UNIX socket is bound to" in result.stdout
    run("who", "--netns", unix_mix.ns.name, "@no-such-name", codes=(1,))


def test_who_not_a_socket_is_bad_input(capsys):
    with tempfile.NamedTemporaryFile() as regular:
        assert exit_status(["who", regular.name], debug=False) == 2
    assert "is not a UNIX socket file" in capsys.readouterr().err
    assert exit_status(["who", "@"], debug=False) == 2


def test_who_path_whose_socket_lives_in_another_namespace(unix_mix):
    path = unix_mix.paths["stream"]
    here = run("who", path, codes=(1,))  # this process's namespace holds no socket bound to it
    assert "No UNIX socket is bound to" in here.stdout
    assert "may live in another one (--netns all" in here.stderr
    everywhere = json.loads(run("who", "--json", "--netns", "all", path).stdout)
    assert unix_mix.inodes["server"] in {sock["inode"] for sock in everywhere["sockets"]}
