"""The key sets of ls --json, who --json and can-bind --json objects are exactly what README documents.

The documented keys are read from README itself (its tables, bullets and the can-bind example object), so
a key added to the output without documentation, or documented without being written, fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from netns_util import new_netns
from portscope.cli import cli
from socket_mix import build_mix
from test_bind_codes import readme_json_keys

pytestmark = pytest.mark.live

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
IDENTIFIER = re.compile(r"`([a-z_][a-z0-9_]*)`")
NOT_KEYS = {"null"}


def section(heading: str) -> str:
    """The text under a README heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#)", README, re.M | re.S)
    assert match, f"README has no section {heading!r}"
    return match.group(1)


def _socket_rows() -> list[str]:
    rows = [line for line in section("JSON (schema version").splitlines() if line.startswith("| `")]
    assert rows
    return rows


ONLY_WITH = re.compile(r"\| only with `(-[a-z])`")


def socket_keys() -> set[str]:
    """The first column of the socket table of ls --json: `key` or `key1`, `key2`; without the keys that
    appear only with an option (their meaning starts "only with `-i`")."""
    return {key for row in _socket_rows() if not ONLY_WITH.search(row) for key in IDENTIFIER.findall(row.split("|")[1])}


def optional_socket_keys() -> dict[str, str]:
    """The keys that appear only with an option: key -> the option."""
    found = {}
    for row in _socket_rows():
        option = ONLY_WITH.search(row)
        if option:
            for key in IDENTIFIER.findall(row.split("|")[1]):
                found[key] = option.group(1)
    return found


def table_keys(heading: str) -> set[str]:
    """The keys in the first column of the table under a heading."""
    rows = [line for line in section(heading).splitlines() if line.startswith("| `")]
    assert rows, heading
    return {key for row in rows for key in IDENTIFIER.findall(row.split("|")[1])}


def process_keys() -> set[str]:
    """The holder object written in the meaning of the `processes` row: {"pid", "name", ...}."""
    (row,) = [line for line in section("JSON (schema version").splitlines() if line.startswith("| `processes`")]
    shape = re.search(r"`(\{.*?\})`", row)
    assert shape, row
    return set(re.findall(r'"([a-z_]+)"', shape.group(1)))


def who_keys() -> tuple[set[str], dict[str, set[str]]]:
    """who --json: the top-level object, then each bullet's keys."""
    return document_keys("`who --json`")


def document_keys(heading: str) -> tuple[set[str], dict[str, set[str]]]:
    """A JSON document's section: the top-level object, then each bullet's keys (backquoted names after its
    colon)."""
    text = section(heading)
    top = re.search(r"`(\{.*?\})`", text)
    assert top
    bullets = {}
    for name, body in re.findall(r"^- `([a-z_]+)`:(.*?)(?=^- |^\s*$)", text, re.M | re.S):
        nested = re.sub(r"`[^`]*[\[{][^`]*`", "", body)  # the shapes of nested values: {"runtime", ...}
        bullets[name] = set(IDENTIFIER.findall(nested)) - NOT_KEYS
    return set(re.findall(r'"([a-z_]+)"', top.group(1))), bullets


def can_bind_keys() -> set[str]:
    """can-bind --json: the keys of the table after "`--json` gives one object"."""
    return set(readme_json_keys())


@pytest.fixture(scope="module")
def mixed():
    with new_netns("pskeys") as ns:
        mix = build_mix(ns)
        ns.fork_holder()
        yield mix


def run_json(*args: str, codes: tuple[int, ...] = (0,)):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code in codes, result.output
    return json.loads(result.stdout)


def test_readme_parsing_finds_the_keys_the_issue_named():
    # a guard on the parsers: these keys must be read from README, not silently missed
    assert {"timer", "timer_ms", "netns", "processes", "local_address", "remote_port"} <= socket_keys()
    assert {"fd", "fds", "cmdline"} <= process_keys()
    top, bullets = who_keys()
    assert top == {"query", "sockets", "processes"}
    assert {"fds", "parents", "uptime_seconds"} <= bullets["processes"] and "runtime" not in bullets["processes"]
    assert {"verdict", "blockers", "request"} <= can_bind_keys()
    assert optional_socket_keys() == {"tcp_info": "-i", "memory": "-m"}
    assert {"rtt_us", "cwnd", "congestion", "bytes_acked"} <= table_keys("`tcp_info` (`ls -i`)")
    assert {"rmem_alloc", "drops"} <= table_keys("`memory` (`ls -m`)")


def test_ls_socket_and_process_keys_are_the_documented_ones(mixed):
    rows = run_json("ls", "-a", "--json", "--netns", mixed.ns.name)
    assert rows and any(r["processes"] for r in rows) and any(r["timer"] for r in rows)
    for row in rows:
        assert set(row) == socket_keys()
        for process in row["processes"]:
            assert set(process) == process_keys()


def test_detail_keys_appear_only_when_asked_and_are_the_documented_ones(mixed):
    optional = optional_socket_keys()
    for options in (["-i"], ["-m"], ["-i", "-m"]):
        rows = run_json("ls", "-a", "--json", "--netns", mixed.ns.name, *options)
        asked = {key for key, option in optional.items() if option in options}
        tcp = [row for row in rows if row["proto"] == "tcp" and row["state"] == "established"]
        assert tcp
        for row in rows:
            assert set(row) == socket_keys() | asked
        if "tcp_info" in asked:
            assert all(row["tcp_info"] is not None for row in tcp)
            for row in rows:
                if row["tcp_info"] is not None:
                    assert set(row["tcp_info"]) == table_keys("`tcp_info` (`ls -i`)")
                if row["proto"] == "udp" or row["state"] == "time-wait":
                    assert row["tcp_info"] is None
        if "memory" in asked:
            assert all(row["memory"] is not None for row in tcp)
            for row in rows:
                if row["memory"] is not None:
                    assert set(row["memory"]) == table_keys("`memory` (`ls -m`)")


def test_who_keys_are_the_documented_ones(mixed):
    document = run_json("who", "--json", "--netns", mixed.ns.name, str(mixed.ports["listen4"]))
    top, bullets = who_keys()
    assert set(document) == top
    assert set(document["query"]) == bullets["query"]
    assert document["processes"]
    for process in document["processes"]:
        assert set(process) == bullets["processes"]
    for sock in document["sockets"]:
        assert set(sock) == socket_keys()


def test_can_bind_keys_are_the_documented_ones(mixed):
    target = f"127.0.0.1:{mixed.ports['listen4']}"
    document = run_json("can-bind", "--json", "--netns", mixed.ns.name, target, codes=(1,))
    assert set(document) == can_bind_keys()
    assert document["blockers"]
    for blocker in document["blockers"]:
        assert set(blocker) == socket_keys()


def unix_socket_keys() -> set[str]:
    """The UNIX socket object table, under ls's UNIX sockets section."""
    rows = [line for line in section("UNIX sockets: `-x`").splitlines() if line.startswith("| `")]
    assert rows
    return {key for row in rows for key in IDENTIFIER.findall(row.split("|")[1])}


def stats_keys() -> set[str]:
    rows = [line for line in section("`portscope stats`").splitlines() if line.startswith("| `")]
    assert rows
    return {key for row in rows for key in IDENTIFIER.findall(row.split("|")[1])}


def unix_who_keys() -> tuple[set[str], set[str]]:
    """who PATH --json: the top-level object and the query's keys (backquoted after "`query` holds")."""
    text = section("`who PATH` and `who @NAME`")
    top = re.search(r"`(\{.*?\})`", text)
    query = re.search(r"`query` holds (.*?);", text, re.S)
    assert top and query
    return set(re.findall(r'"([a-z_]+)"', top.group(1))), set(IDENTIFIER.findall(query.group(1))) - NOT_KEYS


@pytest.fixture(scope="module")
def unix_mixed():
    import os
    import socket
    import tempfile

    with new_netns("pskeysx") as ns, tempfile.TemporaryDirectory(prefix="pskeysx-") as directory:
        path = os.path.join(directory, "s.sock")
        server = ns.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        client = ns.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        ns.sockets.append(server.accept()[0])
        with ns.inside():
            tcp = socket.create_server(("127.0.0.1", 0))
        ns.sockets.append(tcp)
        yield ns, path


def test_unix_socket_keys_are_the_documented_ones(unix_mixed):
    ns, _ = unix_mixed
    assert {"proto", "type", "path", "peer_inode", "peer_processes"} <= unix_socket_keys()
    rows = run_json("ls", "-x", "-t", "-a", "--json", "--netns", ns.name)
    assert {row["proto"] for row in rows} == {"tcp", "unix"}
    for row in rows:
        assert set(row) == (unix_socket_keys() if row["proto"] == "unix" else socket_keys())
        for process in row["processes"] + row.get("peer_processes", []):
            assert set(process) == process_keys()


def test_who_path_keys_are_the_documented_ones(unix_mixed):
    ns, path = unix_mixed
    document = run_json("who", "--json", "--netns", ns.name, path)
    top, query = unix_who_keys()
    assert set(document) == top and set(document["query"]) == query
    _, bullets = who_keys()
    assert document["processes"] and document["peers"]
    for process in document["processes"] + document["peers"]:
        assert set(process) == bullets["processes"]
    for sock in document["sockets"]:
        assert set(sock) == unix_socket_keys()


def test_stats_keys_are_the_documented_ones(mixed):
    document = run_json("stats", "--json", "--netns", mixed.ns.name)
    assert set(document) == stats_keys()
    assert set(document["summary"]) == {
        "total", "tcp_total", "tcp_estab", "tcp_closed", "tcp_orphaned", "tcp_timewait", "transport",
    }  # fmt: skip
    for entry in document["busiest"]:
        assert set(entry) == {"port", "connections", "established", "time_wait", "listeners"}
        for sock in entry["listeners"]:
            assert set(sock) == socket_keys()
    for sock in document["bound_only"]:
        assert set(sock) == socket_keys()
