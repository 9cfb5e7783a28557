"""portscope ls through its command line: every option, the JSON schema, rendering, bad input."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from netns_util import new_netns
from portscope.cli import cli
from portscope.commands.names import Names
from portscope.model.records import JoinReport, Snapshot
from portscope.render.environment import Environment
from portscope.render.ls import render_listing
from socket_mix import OTHER_UID, build_mix

ANSI = re.compile(r"\x1b\[")
STATES = {
    "listen",
    "established",
    "syn-sent",
    "syn-recv",
    "fin-wait-1",
    "fin-wait-2",
    "time-wait",
    "close-wait",
    "last-ack",
    "closing",
    "close",
    "bound",
    "unconn",
}


@pytest.fixture(scope="module")
def mixed():
    with new_netns() as ns:
        mix = build_mix(ns)
        mix.child = ns.fork_holder()
        yield mix


def ls_json(mixed, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["ls", "--netns", mixed.ns.name, "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_schema(mixed):
    rows = ls_json(mixed, "-a")
    assert rows
    for row in rows:  # the key sets: test_json_keys.py, against README
        assert row["proto"] in ("tcp", "udp") and row["family"] in ("ipv4", "ipv6")
        assert row["state"] in STATES
        for key in ("local_address", "remote_address"):
            if row[key] is not None:
                assert "[" not in row[key]
                family = socket.AF_INET6 if row["family"] == "ipv6" else socket.AF_INET
                assert socket.inet_ntop(family, socket.inet_pton(family, row[key])) == row[key]  # canonical
        assert (row["remote_address"] is None) == (row["remote_port"] is None)
        assert isinstance(row["local_port"], int) and 0 < row["local_port"] < 65536
        assert row["v6only"] in (True, False, None)
        if row["family"] == "ipv4":
            assert row["v6only"] is None
        for process in row["processes"]:
            assert {"pid", "name", "user", "cmdline", "fd"} <= set(process)
            assert isinstance(process["cmdline"], list) and isinstance(process["fd"], int)
    assert {r["state"] for r in rows} >= {"listen", "established", "time-wait", "bound", "unconn", "close-wait"}


def test_default_hides_time_wait_and_bound(mixed):
    states = {r["state"] for r in ls_json(mixed)}
    assert "time-wait" not in states and "bound" not in states
    assert {"listen", "established", "unconn"} <= states


def test_protocol_and_family_switches(mixed):
    assert {r["proto"] for r in ls_json(mixed, "-a", "-t")} == {"tcp"}
    assert {r["proto"] for r in ls_json(mixed, "-a", "-u")} == {"udp"}
    assert {r["family"] for r in ls_json(mixed, "-a", "-4")} == {"ipv4"}
    assert {r["family"] for r in ls_json(mixed, "-a", "-6")} == {"ipv6"}
    assert len(ls_json(mixed, "-a", "-t", "-u", "-4", "-6")) == len(ls_json(mixed, "-a"))


def test_listening(mixed):
    rows = ls_json(mixed, "-l")
    assert {(r["proto"], r["state"]) for r in rows} == {("tcp", "listen"), ("udp", "unconn")}


def test_state_filters(mixed):
    assert {r["state"] for r in ls_json(mixed, "--state", "time-wait")} == {"time-wait"}
    assert {r["state"] for r in ls_json(mixed, "--state", "listen,bound")} == {"listen", "bound"}
    connected = {r["state"] for r in ls_json(mixed, "--state", "connected")}
    assert "listen" not in connected and {"established", "time-wait", "close-wait", "fin-wait-2"} <= connected
    assert "time-wait" in {r["state"] for r in ls_json(mixed, "-s", "bucket")}


def test_port_filters(mixed):
    assert {r["local_port"] for r in ls_json(mixed, "-a", "--sport", "7001")} == {7001}
    rows = ls_json(mixed, "-a", "--dport", "7001")
    assert rows and {r["remote_port"] for r in rows} == {7001}
    either = ls_json(mixed, "-a", "--port", "7002")
    assert {r["state"] for r in either} == {"listen", "time-wait"}
    ranged = {r["local_port"] for r in ls_json(mixed, "-l", "--sport", "7005-7008,7010")}
    assert ranged == {7005, 7006, 7007, 7008, 7010}


def test_address_filters(mixed):
    rows = ls_json(mixed, "-a", "--src", "::1")
    assert rows and {r["local_address"] for r in rows} == {"::1"}
    rows = ls_json(mixed, "-a", "--src", "127.0.0.0/8", "-6")
    assert rows and all(r["local_address"] == "::ffff:127.0.0.1" for r in rows)  # v4-mapped match v4 CIDRs
    rows = ls_json(mixed, "--dst", "[::1]")
    assert rows and {r["remote_address"] for r in rows} == {"::1"}


def test_process_filters(mixed):
    mine = ls_json(mixed, "-a", "--pid", str(mixed.child))
    assert mine and all(any(p["pid"] == mixed.child for p in r["processes"]) for r in mine)
    assert not [r for r in mine if r["state"] == "time-wait"]
    by_name = ls_json(mixed, "-a", "--process", "pyth")
    assert len(by_name) == len(mine)
    assert ls_json(mixed, "-a", "--process", "no-such-process-name") == []
    other = ls_json(mixed, "-a", "--user", str(OTHER_UID), "--no-processes")
    assert [r["local_port"] for r in other] == [7008]


def test_no_processes_and_numeric(mixed):
    rows = ls_json(mixed, "-l", "--no-processes")
    assert rows and all(r["processes"] == [] for r in rows)
    joined = ls_json(mixed, "-l")
    assert all(len(r["processes"]) == 2 for r in joined)  # the test process and its forked child


def test_services_named_and_numeric():
    with new_netns() as ns:
        sock = ns.socket()
        sock.bind(("127.0.0.1", 22))
        sock.listen()
        named = CliRunner().invoke(cli, ["ls", "-l", "--netns", ns.name, "--json"]).stdout
        numeric = CliRunner().invoke(cli, ["ls", "-l", "-n", "--netns", ns.name, "--json"]).stdout
        text = CliRunner().invoke(cli, ["ls", "-l", "--netns", ns.name]).stdout
    assert json.loads(named)[0]["service"] == "ssh"
    assert json.loads(numeric)[0]["service"] is None
    assert "127.0.0.1:22 (ssh)" in text


def test_backends_agree(mixed):
    def key(r):
        return (r["proto"], r["state"], r["local_address"], r["local_port"], r["remote_address"], r["remote_port"])

    netlink = sorted(map(key, ls_json(mixed, "--backend", "netlink")))
    proc = sorted(map(key, ls_json(mixed, "--backend", "proc")))
    assert netlink == proc


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "bogus"], "unknown state 'bogus'"),
        (["--port", "0"], "out of range"),
        (["--sport", "70000"], "out of range"),
        (["--dport", "90-80"], "backwards"),
        (["--src", "300.1.1.1"], "not an address"),
        (["--dst", "10.0.0.0/40"], "not an address"),
        (["--backend", "nope"], "nope"),
        (["--user", "no-such-user-xyz"], "unknown user"),
        (["--pid", "abc"], "not a pid"),
        (["--port", "no-such-service"], "unknown service"),
        (["--netns", "no-such-namespace"], "unknown network namespace"),
        (["--bogus-option"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "portscope", "ls", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def _run_in_pty(args: list[str], columns: int, env: dict[str, str] | None = None) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR")}
    environment.update(env or {})
    environment["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "portscope", *args], stdin=slave, stdout=slave, stderr=slave, env=environment
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 20)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=20)
    os.close(master)
    assert proc.returncode == 0
    return b"".join(chunks).decode()


@pytest.mark.parametrize("columns", [80, 200, 40])
def test_terminal_rendering_fits_the_width(mixed, columns):
    screen = _run_in_pty(["ls", "-a", "--netns", mixed.ns.name], columns)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)
    lines = [line for line in plain.replace("\r", "").split("\n") if line]
    assert lines[0].split()[:3] == ["Proto", "State", "Recv-Q"] if columns >= 100 else ["Proto", "State", "Local"]
    if columns >= 80:
        assert all(len(line) <= columns for line in lines), max(lines, key=len)
        own_name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
        assert f"{own_name}[" in plain and "127.0.0.1:7001" in plain
        assert "[::ffff:127.0.0.1]:7006" in plain or columns < 200
    assert ANSI.search(screen)  # colour on a terminal
    assert "socket(s); netlink" in plain


def test_no_color_on_a_terminal(mixed):
    screen = _run_in_pty(["ls", "-a", "--netns", mixed.ns.name], 120, {"NO_COLOR": "1"})
    assert not ANSI.search(screen)


def test_pipe_output_is_plain(mixed):
    result = subprocess.run(
        [sys.executable, "-m", "portscope", "ls", "-a", "--netns", mixed.ns.name],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not ANSI.search(result.stdout) and not ANSI.search(result.stderr)
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["Proto", "State", "Recv-Q", "Send-Q", "Local", "Peer", "User", "Process"]
    assert len(rows) == len(ls_json(mixed, "-a"))
    assert result.stderr == ""


def test_closed_pipe_ends_quietly(mixed):
    proc = subprocess.Popen(
        [sys.executable, "-m", "portscope", "ls", "-a", "--json", "--netns", mixed.ns.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first write, as with `| head -0`
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err == b""


@pytest.mark.parametrize(("root", "advice"), [(False, "run as root to see them"), (True, "refused even to root")])
def test_footer_says_when_owners_are_hidden(root, advice):
    snap = Snapshot(
        sockets=(),
        holders={},
        sources=(),
        join=JoinReport(joined=True, processes_denied=5, hidden_inodes=frozenset({1, 2, 3})),
        netns=None,
        bound_visible=True,
    )
    err = io.StringIO()
    names = Names(services=None, caller_is_root=root, lookup_user=str)
    render_listing(snap, Environment.detect(io.StringIO(), err), names, as_json=False)
    err = err.getvalue()
    assert "owners of 3 socket(s) are hidden" in err and advice in err


def test_process_filter_matches_the_command_line_too():
    # python3 -m http.server is found by what it runs, not only by the interpreter's name
    with new_netns() as ns:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "18731"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                found = ls_json(SimpleNamespace(ns=ns), "-l", "--process", "http.server")
                if found:
                    break
                time.sleep(0.05)
            assert [(s["local_port"], [p["pid"] for p in s["processes"]]) for s in found] == [(18731, [server.pid])]
            assert ls_json(SimpleNamespace(ns=ns), "-l", "--process", "no-such-module") == []
        finally:
            server.kill()
            server.wait()
