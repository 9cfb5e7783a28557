"""can-bind on a busy port: blockers grouped by holder, one screen on a terminal, every socket in --json.

A pre-fork server in a test namespace: one listener held by this process and 3 forked workers,
thousands of accepted connections, and TIME-WAIT sockets of server-side closes; beside it, a
SO_REUSEPORT listener of another user. `ss` counts the sockets the JSON must list.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from click.testing import CliRunner

from bind_scenarios import made_by, never_chowned
from netns_util import new_netns, ss_sockets
from portscope.cli import cli
from portscope.commands.can_bind import BindRequest, check_bind
from portscope.render.can_bind import text_lines

pytestmark = pytest.mark.live

BUSY_PORT, OTHER_USER_PORT = 9000, 9001
CONNECTIONS, TIME_WAITS, WORKERS = 3000, 40, 3
OTHER_UID = 40001


@pytest.fixture(scope="module")
def busy():
    with new_netns("psbindsum") as ns:
        listener = ns.socket()
        listener.bind(("0.0.0.0", BUSY_PORT))
        listener.listen(CONNECTIONS)
        pairs = []
        for _ in range(CONNECTIONS):
            client = ns.socket()
            client.connect(("127.0.0.1", BUSY_PORT))
            accepted, _ = listener.accept()
            ns.sockets.append(accepted)
            pairs.append((client, accepted))
        for client, accepted in pairs[:TIME_WAITS]:  # the server closes first: TIME-WAIT on the busy port
            accepted.close()
            time.sleep(0.002)
            client.close()
        with made_by(OTHER_UID):  # as that user's server would: its owner at bind() is its owner now
            other = never_chowned(lambda: ns.socket(socket.AF_INET6))
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("::", OTHER_USER_PORT))
        other.listen(8)
        workers = [ns.fork_holder() for _ in range(WORKERS)]  # they inherit every socket, as pre-fork workers do
        yield ns, workers


def on_port(ns, port: int) -> int:
    return sum(1 for s in ss_sockets(ns, "-t") if s.local_port == port)


def test_thousands_of_connections_fit_one_screen(busy):
    ns, workers = busy
    report = check_bind(BindRequest(f"0.0.0.0:{BUSY_PORT}", netns=ns.name))
    assert report.verdict.value == "no"
    lines = [text for text, _ in text_lines(report, width=80, height=30)]
    assert len(lines) <= 30 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("NO: bind() of tcp 0.0.0.0:9000")
    text = "\n".join(lines)
    established = CONNECTIONS - TIME_WAITS
    unwrapped = " ".join(text.split())
    assert f"LISTEN 0.0.0.0:{BUSY_PORT} and {established:,} established connections of pid {os.getpid()}" in unwrapped
    assert f"{TIME_WAITS} TIME-WAIT sockets" in text
    # one stop for the server and its workers, one wait, nothing the listener rules out
    stops = [a for a in report.actions if a.code.value == "stop-process"]
    assert [(a["pid"], sorted(a["workers"])) for a in stops] == [(os.getpid(), sorted(workers))]
    assert f"stop pid {os.getpid()} (" in text and f"and its {WORKERS} workers" in text
    waits = [a for a in report.actions if a.code.value == "wait"]
    assert len(waits) == 1 and 0 < waits[0]["seconds"] <= 60
    assert not any(
        a.code.value == "set-option" and a["option"] == "SO_REUSEADDR" and a["on"] == "both" for a in report.actions
    )  # SO_REUSEADDR never helps next to a listener


def test_a_pipe_gets_groups_and_json_gets_every_blocker(busy):
    ns, _ = busy
    piped = CliRunner().invoke(cli, ["can-bind", "--netns", ns.name, f"0.0.0.0:{BUSY_PORT}"])
    assert piped.exit_code == 1
    assert len(piped.stdout.splitlines()) < 20  # grouped, not one line per socket
    result = CliRunner().invoke(cli, ["can-bind", "--netns", ns.name, "--json", f"0.0.0.0:{BUSY_PORT}"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert len(doc["blockers"]) == on_port(ns, BUSY_PORT)  # ss is the oracle: every socket on the port
    assert len(doc["actions"]) == len(doc["fixes"]) < 10


def test_a_short_terminal_counts_the_rest(busy):
    ns, _ = busy
    report = check_bind(BindRequest(f"0.0.0.0:{BUSY_PORT}", netns=ns.name))
    whole = text_lines(report, width=60)
    lines = [text for text, _ in text_lines(report, width=60, height=12)]
    assert lines[0].startswith("NO: ")
    assert len(lines) <= len(whole)  # too short for even the summary: the rest is counted, down to a floor
    assert f"... and {TIME_WAITS} more socket(s) of 1 other holder(s) (--json lists all)" in " ".join(
        " ".join(lines).split()
    )
    assert any("LISTEN 0.0.0.0:9000" in line for line in lines)  # the first group is never dropped
    shown = min(3, len(report.actions))
    assert sum(line.startswith("  - ") for line in lines) == shown  # nor the first three actions
    rest = [line for line in lines if re.fullmatch(r"  \.\.\. and \d+ more \(--json lists all\)", line)]
    assert rest == ([f"  ... and {len(report.actions) - 3} more (--json lists all)"] if len(report.actions) > 3 else [])


def test_no_reuseport_advice_the_owners_rule_out(busy):
    ns, _ = busy
    report = check_bind(BindRequest(f"[::]:{OTHER_USER_PORT}", reuseport=True, netns=ns.name))
    assert report.verdict.value == "no" and report.rule == "R-TCP-REUSEPORT"
    kinds = [(a.code.value, a.params.get("option")) for a in report.actions]
    assert ("set-option", "SO_REUSEPORT") not in kinds
    assert ("run-as-user", None) in kinds
    (run_as,) = [a for a in report.actions if a.code.value == "run-as-user"]
    assert run_as["uid"] == OTHER_UID
    assert report.reasons[1].params == {"existing_uid": OTHER_UID, "new_uid": os.geteuid()}


def test_a_change_is_offered_only_if_it_passes_every_group():
    """A listener shared by a worker, and connections only that worker holds: two groups of blockers.
    SO_REUSEADDR on the new socket would pass the connections but never the listener, so it is not
    offered; SO_REUSEPORT on both is offered once, for every pid holding the port."""
    with new_netns("psbindgrp") as ns:
        listener = ns.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", BUSY_PORT))
        listener.listen(8)
        clients = [ns.socket() for _ in range(2)]
        for client in clients:
            client.connect(("127.0.0.1", BUSY_PORT))
        accepted = [listener.accept()[0] for _ in clients]
        worker = ns.fork_holder()  # holds the listener and the accepted connections
        for sock in accepted:  # ... which only the worker holds from now on
            sock.close()
        report = check_bind(BindRequest(f"127.0.0.1:{BUSY_PORT}", netns=ns.name))
        assert report.verdict.value == "no"
        changes = [a for a in report.actions if a.code.value in ("set-option", "run-as-user")]
        assert [(a["option"], a["on"]) for a in changes] == [("SO_REUSEPORT", "both")], report.actions
        assert set(changes[0]["pids"]) == {os.getpid(), worker}
