"""ss, lsof and fuser habits, and output that fits every terminal and pipe.

The ss letters are judged against the real ss in a namespace the test makes; refusals, colour, widths,
completion and the man pages through the command line itself.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns_util import new_netns
from portscope.render.environment import Environment
from portscope.render.table import command_text, fit_endpoint, fit_middle, fit_process
from socket_mix import build_mix
from test_completion import values as completion_values
from test_ls_cli import _run_in_pty

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the port of an endpoint as shown (whole host, "]" of IPv6, a shortened "…0.1", "*"); not inside an IPv6
# address, not a time of day (removed first)
ENDPOINT_PORT = re.compile(r"[\w.\]…*](?:%[\w.-]+)?:(\d+)(?![\d\].:])")
TIME_OF_DAY = re.compile(r"\d\d:\d\d:\d\d")
WORKERS = 3  # a listener inherited by this many forked workers besides the test process


def portscope(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    environment |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "portscope", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        **kwargs,
    )


@pytest.fixture(scope="module")
def scene():
    """The socket mix, a dual-stack and a v6only listener, and a listener shared by several processes."""
    with new_netns("pshabit") as ns:
        mix = build_mix(ns)
        dual = ns.socket(socket.AF_INET6)
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        dual.bind(("::", 7101))
        dual.listen(4)
        only6 = ns.socket(socket.AF_INET6)
        only6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        only6.bind(("::", 7102))
        only6.listen(4)
        mix.ports |= {"dual": 7101, "only6": 7102}
        mix.workers = [ns.fork_holder() for _ in range(WORKERS)]
        yield mix


# ---------------------------------------------------------------------------------------------------
# ss letters, against ss itself

SS_PEERS = {"*:*", "0.0.0.0:*", "[::]:*"}


def _endpoint(text: str) -> tuple[str, int | None]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), None if port == "*" else int(port)


def ss_rows(ns, flags: str) -> dict[tuple, set[int]]:
    """``ss FLAGS -nH`` in the namespace: (proto, state, local, peer) -> holder pids. ``*:PORT`` is ss's
    dual-stack [::] (no IPV6_V6ONLY): tcp46 here."""
    rows: dict[tuple, set[int]] = {}
    for line in ns.run("ss", flags, "-nH").stdout.splitlines():
        fields = line.split()
        if fields[0] not in ("tcp", "udp"):  # one protocol asked for: ss leaves its Netid column out
            fields.insert(0, "tcp" if "t" in flags else "udp")
        netid, state, local, peer = fields[0], fields[1], fields[4], fields[5]
        proto = netid
        if local.startswith("*:"):
            proto, local = netid + "46", "[::]" + local[1:]
        elif local.startswith("["):
            proto = netid + "6"
        key = (proto, state, _endpoint(local), None if peer in SS_PEERS else _endpoint(peer))
        rows[key] = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
    return rows


def portscope_rows(ns, flags: str) -> dict[tuple, set[int]]:
    """The same from ``portscope ls FLAGS -H`` (a pipe: whole cells, every holder's pid)."""
    result = portscope("ls", flags, "-H", "--netns", ns.name)
    assert result.returncode == 0, result.stderr
    rows: dict[tuple, set[int]] = {}
    for line in result.stdout.splitlines():
        assert not line.startswith("Proto"), "-H prints no header"
        fields = re.sub(r" \([^)]*\)", "", line).split()  # "127.0.0.1:80 (http)": the service name left out
        proto, state, local, peer = fields[0], fields[1], fields[4], fields[5]
        if state == "BOUND":
            continue  # bound-only TCP sockets: ss 6.1 cannot list them
        pids = {int(pid) for group in re.findall(r"\[([\d,]+)\]", " ".join(fields[7:])) for pid in group.split(",")}
        rows[(proto, state, _endpoint(local), None if peer == "*" else _endpoint(peer))] = pids
    return rows


@pytest.mark.parametrize("flags", ["-tulpn", "-tlnp", "-tanp", "-uap", "-ltn", "-4tl"])
def test_ss_letters_give_what_ss_gives(scene, flags):
    ours, theirs = portscope_rows(scene.ns, flags), ss_rows(scene.ns, flags)
    assert set(ours) == set(theirs)
    assert ours, "the namespace has sockets of every kind asked for"
    if "p" in flags:  # the processes, as ss -p shows them (every holder of a shared socket)
        assert ours == theirs
    else:
        assert all(ours.values())  # -p is always on here


def test_dual_stack_listener_is_marked(scene):
    lines = portscope("ls", "-l", "--netns", scene.ns.name).stdout.splitlines()
    (dual,) = [line for line in lines if "]:7101" in line]
    (only6,) = [line for line in lines if "]:7102" in line]
    assert dual.split()[0] == "tcp46" and only6.split()[0] == "tcp6"


def test_pids_prints_each_holder_once(scene):
    result = portscope("ls", "--pids", "-l", "--port", "7101", "--netns", scene.ns.name)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [str(pid) for pid in sorted([os.getpid(), *scene.workers])]
    short = portscope("ls", "--pids", "-ly", "7101", "--netns", scene.ns.name)
    assert short.stdout == result.stdout


def test_pipe_lists_every_holder_and_columns_fits_it(scene):
    whole = portscope("ls", "-l", "--port", "7101", "--netns", scene.ns.name).stdout
    pids = ",".join(str(pid) for pid in sorted([os.getpid(), *scene.workers]))  # holders by pid (pids wrap)
    assert f"[{pids}]" in whole
    fitted = portscope("ls", "-l", "--port", "7101", "--netns", scene.ns.name, env={"COLUMNS": "60"}).stdout
    assert all(len(line) <= 60 for line in fitted.splitlines())
    assert ",+" in fitted and ":7101" in fitted


# ---------------------------------------------------------------------------------------------------
# Widths: what each output must keep


def _ports_whole(text: str, ports: set[int]) -> None:
    """Every ``:NNN`` in the text is a port that exists: none was cut (``0.0.0.0:80…`` of 8080)."""
    for found in ENDPOINT_PORT.findall(TIME_OF_DAY.sub("", text)):
        assert int(found) in ports, f"port {found} is not one of the sockets' (cut?): {text}"
    assert "…\n" not in text  # nothing ends in the middle of a port


@pytest.mark.parametrize("columns", [40, 60, 80, 120, 200])
def test_widths_keep_what_matters(scene, columns):
    name = scene.ns.name
    sockets = json.loads(portscope("ls", "-a", "--json", "--netns", name).stdout)
    ports = {s["local_port"] for s in sockets} | {s["remote_port"] for s in sockets if s["remote_port"]}

    table = ANSI.sub("", _run_in_pty(["ls", "-a", "--netns", name], columns)).replace("\r", "")
    lines = [line for line in table.split("\n") if line]
    assert lines[0].split()[0] in ("Proto", "State") and "Local" in lines[0]
    assert all(len(line) <= columns for line in lines[:-1]), max(lines, key=len)
    _ports_whole(table, ports | {7101, 7102})
    shown_local = {int(p) for p in ENDPOINT_PORT.findall(table)}
    assert {s["local_port"] for s in sockets if s["state"] == "listen"} <= shown_local
    if columns >= 120:
        assert "Recv-Q" in lines[0] and "User" in lines[0]
    if columns >= 200:
        assert "Command" in lines[0]

    piped = portscope("ls", "-a", "--netns", name, env={"COLUMNS": str(columns)}).stdout
    assert all(len(line) <= columns for line in piped.splitlines()), max(piped.splitlines(), key=len)
    _ports_whole(piped, ports | {7101, 7102})

    listen4 = scene.ports["listen4"]
    page = ANSI.sub("", _run_in_pty(["who", str(listen4), "--netns", name], columns)).replace("\r", "")
    assert page.startswith(f"Port {listen4}")
    assert all(len(line) <= columns for line in page.split("\n"))
    _ports_whole(page, ports)

    screen = _screen(["can-bind", f"127.0.0.1:{listen4}", "--netns", name], columns)
    first = screen.split("\n")[0]
    assert first.startswith("NO: ") and f":{listen4}" in screen.split("\n\n")[0].replace("\n", " ")
    assert len([line for line in screen.split("\n") if line]) <= 50  # the pty is 50 lines high
    assert all(len(line) <= columns for line in screen.split("\n"))


def _screen(args: list[str], columns: int) -> str:
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")} | {"TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "portscope", *args], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while select.select([master], [], [], 20)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=20)
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r", "")


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("127.0.0.1:8443 (pcsync-https)", 16, "127.0.0.1:8443"),
        ("127.0.0.1:8443", 11, "…0.0.1:8443"),
        ("[::ffff:127.0.0.1]:8443", 12, "…0.0.1]:8443"),
        ("0.0.0.0:8080", 6, "…:8080"),
        ("0.0.0.0:8080", 3, "0.0.0.0:8080"),  # never cut the port: the line runs over instead
    ],
)
def test_endpoints_lose_the_host_not_the_port(text, width, expected):
    assert fit_endpoint(text, width) == expected


def test_holders_and_commands_shorten_where_it_costs_least():
    assert fit_process("python3[9947,10073,+2]", 17) == "python3[9947,+3]"
    assert fit_process("postgres[812]", 10) == "post…[812]"
    assert fit_middle("python3 /srv/app/current/server.py --port 8080", 30) == "python3 …server.py --port 8080"


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["/usr/bin/python3", "-u", "-m", "http.server", "8080"], "python3 -m http.server 8080"),
        (["/usr/local/bin/python3.12", "-X", "dev", "/srv/app.py"], "python3.12 /srv/app.py"),
        (["/usr/bin/node", "--inspect", "-r", "dotenv/config", "server.js"], "node server.js"),
        (["/usr/lib/jvm/bin/java", "-Xmx2g", "-cp", "lib/*", "-jar", "app.jar"], "java -jar app.jar"),
        (["java", "-Dx=y", "com.example.Main", "--port", "80"], "java com.example.Main --port 80"),
        (["/usr/sbin/nginx", "-g", "daemon off;"], "nginx -g daemon off;"),
        (["nginx: worker process"], "nginx: worker process"),
    ],
)
def test_command_column_shows_what_an_interpreter_runs(argv, shown):
    assert command_text(argv, "x") == shown


def test_command_column_live():
    with new_netns("pshttp") as ns:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "18732"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if "18732" in ns.run("ss", "-ltnH").stdout:
                    break
                time.sleep(0.02)
            out = portscope("ls", "-l", "--netns", ns.name, env={"COLUMNS": "220"}).stdout
            python = Path(sys.executable).name
            assert f"{python} -m http.server --bind 127.0.0.1 18732" in out
            narrow = portscope("ls", "-l", "--netns", ns.name, env={"COLUMNS": "100"}).stdout
            assert "127.0.0.1:18732" in narrow
        finally:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------------
# Colour


@pytest.mark.parametrize(
    ("tty", "mode", "environ", "colour"),
    [
        (True, "auto", {}, True),
        (False, "auto", {}, False),
        (True, "auto", {"NO_COLOR": "1"}, False),
        (True, "auto", {"TERM": "dumb"}, False),
        (False, "auto", {"FORCE_COLOR": "1"}, True),
        (False, "auto", {"CLICOLOR_FORCE": "1"}, True),
        (False, "auto", {"CLICOLOR_FORCE": "0"}, False),
        (False, "auto", {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
        (False, "always", {"NO_COLOR": "1"}, True),
        (True, "never", {"FORCE_COLOR": "1"}, False),
    ],
)
def test_colour_is_decided_once(tty, mode, environ, colour):
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert Environment.detect(Stream(), io.StringIO(), environ, color=mode).colour is colour


def test_colour_through_the_command_line(scene):
    name = scene.ns.name
    assert ANSI.search(portscope("ls", "-l", "--color=always", "--netns", name).stdout)
    assert ANSI.search(portscope("--color", "always", "who", "7001", "--netns", name).stdout)
    assert ANSI.search(portscope("ls", "-l", "--netns", name, env={"FORCE_COLOR": "1"}).stdout)
    assert not ANSI.search(portscope("ls", "-l", "--netns", name).stdout)
    screen = _screen(["ls", "-l", "--color=never", "--netns", name], 100)
    assert "LISTEN" in screen
    assert not ANSI.search(_run_in_pty(["ls", "-l", "--color", "never", "--netns", name], 100))


# ---------------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["can-bind", ":8080", "--v6only", "-4"], "-4 asks for IPv4"),
        (["can-bind", "0.0.0.0:8080", "--no-v6only"], "0.0.0.0 is IPv4"),
        (["can-bind", ":8080", "--v6only", "--no-v6only"], "--v6only and --no-v6only exclude each other"),
        (["ls", "-l", "-s", "established"], "exclude each other"),
        (["ls", "-p", "--no-processes"], "-p and --no-processes exclude each other"),
        (["ls", "--pids", "--json"], "--pids and --json exclude each other"),
        (["ls", "-H", "--json"], "--no-header and --json exclude each other"),
        (["ls", "-a", "-l"], "exclude each other"),
        (["ls", "--state", "timewait"], "did you mean 'time-wait'"),
        (["lss"], "did you mean 'ls'"),
        (["list"], "did you mean 'ls'"),
        (["bind", ":80"], "did you mean 'can-bind'"),
        (["ls", "--port", "-5"], "port -5 is out of range (1-65535)"),
        (["ls", "-y", "8x"], "not a port number: '8x'"),
        (["who", "-5"], "port -5 is out of range (1-65535)"),
        (["who", "99999"], "port 99999 is out of range"),
        (["ls", "-p", "80"], "the port filter is -y/--port"),
    ],
)
def test_refusals_are_one_line_and_status_2(args, says):
    result = portscope(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr, result.stderr
    assert "unknown service" not in result.stderr


# nobody, with no capability but the one that lets it reach this interpreter (installed under /root here)
AS_NOBODY = [
    "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=-all,+dac_read_search", "--bounding-set=-all,+dac_read_search",
]  # fmt: skip


def test_another_users_namespace_says_permission_denied_and_what_works():
    holder = subprocess.Popen(["sleep", "30"])  # root's process, as seen by nobody
    console_script = Path(sys.executable).with_name("portscope")
    try:
        for argv, program in (
            ([sys.executable, "-m", "portscope"], f"{sys.executable} -m portscope"),
            ([str(console_script)], str(console_script)),
        ):
            result = subprocess.run(
                [*AS_NOBODY, *argv, "ls", "--netns", str(holder.pid)],
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
            )
            assert result.returncode == 4, result.stderr
            assert "permission denied" in result.stderr and "no process" not in result.stderr
            assert f"sudo {program} ls --netns {holder.pid}" in result.stderr
            assert len(result.stderr.splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "command", [[], ["ls"], ["who"], ["can-bind"], ["completion"], ["stats"], ["kill"], ["serve"], ["export"]]
)
@pytest.mark.parametrize("columns", [None, "200"])
def test_help_fits_80_columns(command, columns):
    result = portscope(*command, "--help", env={"COLUMNS": columns} if columns else None)
    assert result.returncode == 0
    assert max(map(len, result.stdout.splitlines())) <= 80


# ---------------------------------------------------------------------------------------------------
# Completion and man pages


def test_completion_never_offers_a_value_twice():
    offered = completion_values("bash", "portscope ls --state listen,")
    assert offered and not any(value.count("listen,") > 0 and value.endswith(",listen") for value in offered)
    assert "listen,listen" not in offered and "listen,established" in offered
    again = completion_values("bash", "portscope ls --state listen --state ")
    assert "listen" not in again and "established" in again
    for line in ("portscope ls --user ", "portscope who ", "portscope ls --state "):
        values = completion_values("bash", line)
        assert len(values) == len(set(values))


def test_man_pages_carry_the_json_schema():
    from test_bind_codes import readme_json_keys, readme_table
    from test_json_keys import socket_keys, who_keys

    pages = {name: (ROOT / "man" / f"{name}.1").read_text() for name in ("portscope-ls", "portscope-who")}
    pages["portscope-can-bind"] = (ROOT / "man" / "portscope-can-bind.1").read_text()
    for page in pages.values():
        assert '.SH "JSON OUTPUT"' in page and "schema in README" not in page

    def documented(page: str, key: str) -> bool:
        return f"\\fB{key.replace('-', chr(92) + '-')}\\fR" in page

    assert all(documented(pages["portscope-ls"], key) for key in socket_keys())
    top, bullets = who_keys()
    assert all(documented(pages["portscope-who"], key) for key in top | set(bullets))
    assert all(documented(pages["portscope-can-bind"], key) for key in readme_json_keys())
    for title in ("Reason codes", "Action kinds", "Uncertainty codes"):
        assert all(documented(pages["portscope-can-bind"], code) for code in readme_table(title))
