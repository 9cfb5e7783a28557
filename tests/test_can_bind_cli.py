"""portscope can-bind through its command line: input forms, exit codes 0/1/2/3, --json, rendering."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import portscope
from bind_scenarios import OTHER_UID, OwnerSpec, build_owner, kernel_bind_table_readable, open_group
from netns_util import new_netns
from portscope.cli import cli
from portscope.commands.can_bind import BindRequest, check_bind
from portscope.commands.names import Names
from portscope.render.can_bind import JSON_KEYS, render_can_bind
from portscope.render.environment import Environment
from test_bind_codes import readme_json_keys

pytestmark = pytest.mark.live

ANSI = re.compile(r"\x1b\[")
LISTEN_PORT, UDP_PORT, TW_PORT, FREE_PORT, CHOWNED_PORT, UDP_PATH_PORT = 7100, 7101, 7102, 7199, 7103, 7104
# the environment of a child `python -m portscope`: this very source tree
ENV = {**os.environ, "PYTHONPATH": str(Path(portscope.__file__).parents[1])}


@pytest.fixture(scope="module")
def bindns():
    with new_netns("psbindcli") as ns:
        group = open_group(ns)
        try:
            assert build_owner(group, OwnerSpec("listen", "0.0.0.0"), LISTEN_PORT)
            assert build_owner(group, OwnerSpec("udp", "::", reuseport=True), UDP_PORT)
            assert build_owner(group, OwnerSpec("tw-server", "127.0.0.1"), TW_PORT)
            # bound by root, then given away: the fast path still knows root
            spec = OwnerSpec("bound", "127.0.0.1", reuseport=True, chown_after=OTHER_UID)
            assert build_owner(group, spec, CHOWNED_PORT)
            # a connected dual-stack UDP socket: an IPv4 127.0.0.6 bind collides with it on one lookup path only
            assert build_owner(group, OwnerSpec("udp-connected", "::", v6only=False), UDP_PATH_PORT)
            time.sleep(0.05)
            yield ns
        finally:
            group.close()


def can_bind(ns, *args: str):
    result = CliRunner().invoke(cli, ["can-bind", "--netns", ns.name, *args], catch_exceptions=False)
    return result


def can_bind_json(ns, *args: str) -> tuple[int, dict]:
    result = can_bind(ns, "--json", *args)
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize(
    ("args", "status", "verdict", "errno", "address", "port"),
    [
        ([f"0.0.0.0:{LISTEN_PORT}"], 1, "no", "EADDRINUSE", "0.0.0.0", LISTEN_PORT),
        ([f"127.0.0.1:{FREE_PORT}"], 0, "yes", None, "127.0.0.1", FREE_PORT),
        ([f"[::]:{LISTEN_PORT}"], 1, "no", "EADDRINUSE", "::", LISTEN_PORT),  # dual-stack covers 0.0.0.0
        ([f"[::]:{LISTEN_PORT}", "--v6only"], 0, "yes", None, "::", LISTEN_PORT),
        ([f":{LISTEN_PORT}"], 1, "no", "EADDRINUSE", "::", LISTEN_PORT),  # the IPv6 wildcard by default
        (["-4", f":{FREE_PORT}"], 0, "yes", None, "0.0.0.0", FREE_PORT),
        ([f"{FREE_PORT}"], 0, "yes", None, "::", FREE_PORT),
        (["-4", f"localhost:{LISTEN_PORT}"], 1, "no", "EADDRINUSE", "127.0.0.1", LISTEN_PORT),
        ([f"127.0.0.1:{TW_PORT}"], 1, "no", "EADDRINUSE", "127.0.0.1", TW_PORT),
        ([f"127.0.0.6:{UDP_PATH_PORT}", "--udp"], 3, "uncertain", "EADDRINUSE", "127.0.0.6", UDP_PATH_PORT),
        ([f"[fe80::1%lo]:{FREE_PORT}"], 1, "no", "EADDRNOTAVAIL", "fe80::1", FREE_PORT),
        ([f"[fe80::1]:{FREE_PORT}"], 1, "no", "EINVAL", "fe80::1", FREE_PORT),
        (["-4", ":http"], 0, "yes", None, "0.0.0.0", 80),
        (["0.0.0.0:ssh"], 0, "yes", None, "0.0.0.0", 22),
        (["127.0.0.1:80", "--user", "nobody"], 1, "no", "EACCES", "127.0.0.1", 80),
        ([f"[::]:{UDP_PORT}", "--udp", "--reuseport"], 0, "yes", None, "::", UDP_PORT),
        ([f"[::]:{UDP_PORT}", "--udp", "--reuseport", "--user", "40001"], 1, "no", "EADDRINUSE", "::", UDP_PORT),
        ([f"0.0.0.0:{UDP_PORT}", "--udp"], 1, "no", "EADDRINUSE", "0.0.0.0", UDP_PORT),
        ([f"0.0.0.0:{LISTEN_PORT}", "--udp"], 0, "yes", None, "0.0.0.0", LISTEN_PORT),
        ([f"192.0.2.1:{FREE_PORT}", "--freebind"], 0, "yes", None, "192.0.2.1", FREE_PORT),
    ],
)
def test_forms_verdicts_and_exit_codes(bindns, args, status, verdict, errno, address, port):
    code, doc = can_bind_json(bindns, *args)
    assert (code, doc["verdict"], doc["errno"]) == (status, verdict, errno)
    assert (doc["request"]["address"], doc["request"]["port"]) == (address, port)
    assert doc["stage"] == ("bind" if errno else None)


def test_json_shape_and_blockers_match_ls(bindns):
    code, doc = can_bind_json(bindns, f"127.0.0.1:{LISTEN_PORT}", "--reuseaddr")
    assert code == 1
    assert list(doc) == list(JSON_KEYS) == readme_json_keys()  # exactly what README documents
    assert doc["model_verdict"] == "no" and doc["probe"] is None and doc["uncertainty"] == []
    assert doc["uncertain_because"] == [] and doc["bsd_note_code"] == "tcp-reuseaddr"
    assert doc["rule"] == "R-TCP-REUSEADDR"
    assert [r["code"] for r in doc["reasons"]] == ["overlap", "listener-needs-reuseport"]
    assert doc["reasons"][0]["socket"]["inode"] == doc["blockers"][0]["inode"]
    assert doc["actions"][0] == {
        "kind": "stop-process",
        "pid": os.getpid(),
        "name": doc["actions"][0]["name"],
        "workers": [],
        "other_pids": [],
    }
    assert doc["actions"][-1] == {"kind": "use-another-port", "at_least": None}
    assert len(doc["fixes"]) == len(doc["actions"]) and all(isinstance(f, str) for f in doc["fixes"])
    assert isinstance(doc["explanation"], str) and isinstance(doc["bsd_note"], str)
    assert doc["request"]["reuseaddr"] is True and doc["request"]["proto"] == "tcp"
    (blocker,) = doc["blockers"]
    listing = json.loads(CliRunner().invoke(cli, ["ls", "-a", "--netns", bindns.name, "--json"]).stdout)
    same = [entry for entry in listing if entry["inode"] == blocker["inode"]]
    assert same == [blocker]  # exactly the ls --json socket object
    assert blocker["processes"][0]["pid"] == os.getpid()
    assert f"stop pid {os.getpid()}" in doc["fixes"][0]


def test_uncertain_json_explains_why(bindns):
    code, doc = can_bind_json(bindns, f"127.0.0.6:{UDP_PATH_PORT}", "--udp")
    assert code == 3 and doc["model_verdict"] == "uncertain"
    assert [doubt["code"] for doubt in doc["uncertain_because"]] == ["udp-path"]
    assert any("hash slot" in reason for reason in doc["uncertainty"])
    assert doc["blockers"][0]["state"] == "established" and doc["blockers"][0]["local_address"] == "::1"


def test_an_owner_changed_after_bind_is_settled_by_the_kernel(bindns):
    """Where the kernel's bind table is readable, its fast-path cache (root's, from bind time) decides."""
    code, doc = can_bind_json(bindns, f"127.0.0.1:{CHOWNED_PORT}", "--reuseport")
    if kernel_bind_table_readable():
        assert (code, doc["rule"], [r["code"] for r in doc["reasons"]]) == (0, "R-FASTPATH", ["fastpath-accepts"])
    else:
        assert [doubt["code"] for doubt in doc["uncertain_because"]] == ["owner-changed", "fastpath"]


def test_time_wait_flags_come_from_the_kernel(bindns):
    """The TIME-WAIT socket's SO_REUSEADDR (off) is read from the kernel's bind table where it can be."""
    code, doc = can_bind_json(bindns, f"127.0.0.1:{TW_PORT}", "--reuseaddr")
    if kernel_bind_table_readable():
        assert (code, doc["verdict"], doc["rule"]) == (1, "no", "R-TCP-REUSEADDR")
        assert [r["code"] for r in doc["reasons"]] == ["overlap", "existing-lacks-reuseaddr"]
    else:
        assert (code, doc["uncertain_because"][0]["why"]) == (3, "time-wait")
    assert doc["blockers"][0]["state"] == "time-wait"


@pytest.mark.parametrize(
    ("args", "status", "errno"),
    [
        ([f"127.0.0.1:{TW_PORT}", "--reuseaddr"], 1, "EADDRINUSE"),
        ([f"127.0.0.1:{CHOWNED_PORT}", "--reuseport"], 0, None),  # the fast path lets root through
        ([f"0.0.0.0:{LISTEN_PORT}"], 1, "EADDRINUSE"),
        ([f"127.0.0.1:{FREE_PORT}"], 0, None),
        (["127.0.0.1:81", "--user", "nobody"], 1, "EACCES"),
    ],
)
def test_probe_settles(bindns, args, status, errno):
    code, doc = can_bind_json(bindns, "--probe", *args)
    assert (code, doc["errno"]) == (status, errno)
    probe = doc["probe"]
    assert set(probe) == {"errno", "stage", "agrees", "error"}
    assert probe["error"] is None and probe["errno"] == errno
    assert probe["agrees"] is (None if doc["model_verdict"] == "uncertain" else True)


def test_human_output_is_verdict_first_and_plain_in_a_pipe(bindns):
    result = can_bind(bindns, f"0.0.0.0:{LISTEN_PORT}")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NO: bind() of tcp 0.0.0.0:7100") and "EADDRINUSE" in lines[0]
    assert lines[1].startswith("rule R-TCP-BASE: ")
    assert "blocking:" in lines and any(f"LISTEN 0.0.0.0:{LISTEN_PORT}" in line for line in lines)
    assert f"  - stop pid {os.getpid()} (" in result.stdout
    assert not ANSI.search(result.stdout)
    yes = can_bind(bindns, f"127.0.0.1:{FREE_PORT}", "--no-listen")
    assert yes.exit_code == 0 and yes.stdout.startswith("YES: bind() of tcp 127.0.0.1:7199")
    dual = can_bind(bindns, f"[::]:{LISTEN_PORT}").stdout
    assert "IPV6_V6ONLY" in dual and "Linux vs BSD:" in dual
    uncertain = can_bind(bindns, f"127.0.0.6:{UDP_PATH_PORT}", "--udp").stdout
    assert uncertain.startswith("UNCERTAIN: ") and "why uncertain:" in uncertain
    probed = can_bind(bindns, f"127.0.0.6:{UDP_PATH_PORT}", "--udp", "--probe").stdout
    assert "probe: the trial bind() " in probed and "; settles it" in probed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1.2.3:80"], "not an IPv4 address"),
        (["[::1]:70000"], "out of range"),
        (["::1:80"], "brackets"),
        (["127.0.0.1"], "missing port"),
        (["127.0.0.1:80", "--device", "nope0"], "unknown interface"),
        (["[fe80::1%nope0]:80"], "unknown interface"),
        (["127.0.0.1:80", "--user", "no-such-user-xyz"], "unknown user"),
        (["127.0.0.1:80", "--netns", "no-such-namespace"], "unknown network namespace"),
        (["-4", "-6", ":80"], "exclude each other"),
        (["-6", "127.0.0.1:80"], "ipv6 was asked for"),
        ([":no-such-service"], "unknown service"),
        ([], "Missing argument"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "portscope", "can-bind", *args], capture_output=True, text=True, timeout=30, env=ENV
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False)])
def test_colour_on_a_terminal_unless_no_color(bindns, monkeypatch, no_color, coloured):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    if no_color:
        monkeypatch.setenv("NO_COLOR", no_color)
    report = check_bind(BindRequest(f"0.0.0.0:{LISTEN_PORT}", netns=bindns.name))
    screen = _Terminal()
    render_can_bind(report, Environment.detect(screen), Names.resolve(), as_json=False)
    text = screen.getvalue()
    assert bool(ANSI.search(text)) is coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", text).startswith("NO: bind() of tcp 0.0.0.0:7100")
