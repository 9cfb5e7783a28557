"""Hostile names end to end: what other users name their processes, interfaces, cgroups and accounts
never reaches root's terminal raw, and JSON stays valid UTF-8.

A child process running as an unprivileged uid holds sockets in a namespace of ours: its comm set with
prctl(PR_SET_NAME) to an OSC that retitles the terminal plus a screen clear, its argv full of bidi
overrides, invalid UTF-8 and U+2028, its cgroup an lxc container with a hostile name, one socket pinned
to an interface whose name is an escape sequence. portscope runs in a mount namespace where
/etc/passwd and /etc/services give that uid and that port hostile names too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
import uuid
from pathlib import Path

import pytest

from netns_util import REQUIRE_LIVE, new_netns
from portscope.render import jsonout
from portscope.render.text import dollar_quoted, safe_text

ROOT = Path(__file__).resolve().parents[1]
COMM = b"\x1b]0;OWNED\x07\x1b[2J"  # 14 bytes: PR_SET_NAME keeps 15
ARGS = [
    COMM,
    "\u202eevil\u202c".encode(),
    b"bad\xff\xfe",
    "line\u2028sep".encode(),
    b"\xc2\x9b31m",  # C1 CSI
    b"tab\tand\x7fdel",
    b"back\\x1bslash",
]
DEVICE = b"\x1b]0;dev\x07"  # interface names take any bytes but '/', ':', whitespace
DEVICE_PEER = "\u202eveth".encode()
BAD_DEVICE = b"bad\xff\xfe"
BAD_DEVICE_PEER = "sep\u2028x".encode()
USER = "\x1b]0;usr\x07\u202e"
SERVICE = "\x1b[2Jsvc"
CONTAINER = "\x1b]0;box\x07\u202e"
UID = 4242
UNIFIED = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"

HOLDER = r"""
import ctypes, os, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode("utf-8", "surrogateescape"))  # PR_SET_NAME
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[2].encode("utf-8", "surrogateescape"))
udp.bind(("0.0.0.0", tcp.getsockname()[1]))
print(tcp.getsockname()[1], flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def os_name(raw: str | bytes, env_name: str) -> str:
    """A user or interface name as Python reads it from the system: in the file system encoding, which a
    C locale without coercion makes ASCII (the bidi override's UTF-8 bytes are then bytes, not text)."""
    data = raw.encode() if isinstance(raw, str) else raw
    return data.decode("ascii" if env_name == "c-locale" else "utf-8", "surrogateescape")


def strings(value):
    """Every string in a parsed JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def unsafe_characters(text: str) -> set[str]:
    """The characters of output that a terminal acts on or that fool a reader (newline and tab excepted)."""
    return {c for c in text if not c.isprintable() and c not in "\n"}


def require_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            (pytest.fail if REQUIRE_LIVE else pytest.skip)(f"needs {name}")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A namespace with a hostile holder; yields (namespace, port, overlay directory)."""
    require_tools("setpriv", "unshare")
    with new_netns("pshostile") as ns:
        for name, peer in ((DEVICE, DEVICE_PEER), (BAD_DEVICE, BAD_DEVICE_PEER)):
            ns.run("ip", "link", "add", _text(name), "type", "veth", "peer", "name", _text(peer))
        holder = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
             sys.executable, "-c", HOLDER, _text(COMM), _text(DEVICE), *map(_text, ARGS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        cgroup = Path(UNIFIED, f"lxc.payload.{CONTAINER}-{uuid.uuid4().hex[:6]}")
        try:
            port = int(holder.stdout.readline())  # type: ignore[union-attr]
            with contextlib.suppress(OSError):  # no writable cgroup tree: the other names still count
                cgroup.mkdir()
                (cgroup / "cgroup.procs").write_text(str(holder.pid))
            overlay = tmp_path_factory.mktemp("overlay")
            passwd = Path("/etc/passwd").read_text(encoding="utf-8", errors="surrogateescape")
            (overlay / "passwd").write_text(
                passwd + f"{USER}:x:{UID}:{UID}::/nonexistent:/bin/false\n", encoding="utf-8", errors="surrogateescape"
            )
            (overlay / "services").write_text(f"{SERVICE} {port}/tcp\n", encoding="utf-8")
            yield ns, port, overlay, cgroup.is_dir()
        finally:
            holder.kill()
            holder.wait(timeout=10)
            with contextlib.suppress(OSError):
                cgroup.rmdir()


OVERLAY = 'mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/services" /etc/services && shift && exec "$@"'


def portscope_argv(overlay: Path, *args: str) -> list[str]:
    """portscope in a private mount namespace where /etc/passwd and /etc/services are ours."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", OVERLAY, "sh", str(overlay),
            sys.executable, "-m", "portscope", *args]  # fmt: skip


ENVIRONMENTS = {
    "strict-utf8": {"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C"},
    "c-locale": {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"},  # stdout ASCII
}


def run(overlay: Path, env_name: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING"))}
    env |= ENVIRONMENTS[env_name] | {"COLUMNS": "400"}
    done = subprocess.run(portscope_argv(overlay, *args), env=env, capture_output=True, timeout=60)
    stdout, stderr = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")  # strict: raises on bad bytes
    assert "Traceback" not in stderr, stderr
    return done.returncode, stdout, stderr


@pytest.mark.live
@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_text_output_escapes_every_hostile_name(hostile, env_name):
    ns, port, overlay, in_cgroup = hostile
    outputs = {
        "ls": run(overlay, env_name, "ls", "-a", "--netns", ns.name),
        "ls wide": run(overlay, env_name, "ls", "-a", "--netns", ns.name, "--port", str(port)),
        "who": run(overlay, env_name, "who", str(port), "--netns", ns.name),
        "can-bind": run(overlay, env_name, "can-bind", f"127.0.0.1:{port}", "--netns", ns.name),
        "can-bind udp": run(overlay, env_name, "can-bind", "--udp", f"0.0.0.0:{port}", "--netns", ns.name),
        "device error": run(overlay, env_name, "can-bind", "--device", "nosuch", ":80", "--netns", ns.name),
    }
    for what, (_, stdout, stderr) in outputs.items():
        assert not unsafe_characters(stdout + stderr), (what, unsafe_characters(stdout + stderr))
    shown_comm = safe_text(COMM)
    assert shown_comm == "\\x1b]0;OWNED\\x07\\x1b[2J"
    ls_out = outputs["ls"][1]
    assert f"{shown_comm}[" in ls_out  # the process cell, escaped
    assert f"%{safe_text(DEVICE)}:{port}" in ls_out  # the pinned UDP socket's device
    user = safe_text(os_name(USER, env_name))
    assert user in ls_out and safe_text(SERVICE) in ls_out
    status, who_out, _ = outputs["who"]
    assert status == 0 and shown_comm in who_out and user in who_out
    assert dollar_quoted(_text(ARGS[2])) in who_out  # the command line pastes back: $'bad\xff\xfe'
    assert "$'\\u202eevil\\u202c'" in who_out
    if in_cgroup:
        assert safe_text(CONTAINER) in who_out
    status, bind_out, _ = outputs["can-bind"]
    assert status == 1 and bind_out.startswith("NO:") and shown_comm in bind_out
    udp_out = outputs["can-bind udp"][1]
    assert udp_out.startswith(("NO:", "UNCERTAIN:")) and f"%{safe_text(DEVICE)}" in udp_out  # the pinned blocker
    status, _, error = outputs["device error"]
    assert status == 2 and error.count("\n") == 1
    assert safe_text(DEVICE) in error and "bad\\xff\\xfe" in error
    assert safe_text(os_name(DEVICE_PEER, env_name)) in error and safe_text(os_name(BAD_DEVICE_PEER, env_name)) in error


@pytest.mark.live
@pytest.mark.parametrize("env_name", ENVIRONMENTS)
def test_json_output_is_valid_and_escaped(hostile, env_name):
    ns, port, overlay, in_cgroup = hostile
    for args in (
        ("ls", "-a", "--json", "--netns", ns.name),
        ("who", str(port), "--json", "--netns", ns.name),
        ("can-bind", f"127.0.0.1:{port}", "--json", "--netns", ns.name),
    ):
        status, stdout, stderr = run(overlay, env_name, *args)
        assert status in (0, 1), (args, stderr)
        assert not unsafe_characters(stdout + stderr), args
        document = json.loads(stdout)
        names = set(strings(document))
        assert _text(COMM) in names  # valid UTF-8 names parse back to themselves
        assert {"\u202eevil\u202c", "line\u2028sep"} <= names
    sockets = json.loads(run(overlay, env_name, "ls", "-a", "--json", "--netns", ns.name)[1])
    held = [s for s in sockets if s["local_port"] == port]
    process = held[0]["processes"][0]
    user = os_name(USER, env_name)
    assert process["name"] == _text(COMM)
    assert process["user"] == (safe_text(user) if env_name == "c-locale" else user)  # not text there: escaped
    assert process["cmdline"][-7:] == [
        "\x1b]0;OWNED\x07\x1b[2J",
        "\u202eevil\u202c",
        "bad\\xff\\xfe",  # not UTF-8: the escaped text form
        "line\u2028sep",
        "\x9b31m",
        "tab\tand\x7fdel",
        "back\\x1bslash",  # valid: itself
    ]
    assert {s["interface"] for s in held} == {None, _text(DEVICE)}
    who = json.loads(run(overlay, env_name, "who", str(port), "--json", "--netns", ns.name)[1])
    if in_cgroup:
        assert who["processes"][0]["container"]["id"].startswith(CONTAINER)


# ---------------------------------------------------------------------------------------------------
# A real terminal: tmux


def _tmux(server: str, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", server, *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.rstrip("\n")


def _wait_for(server: str, target: str, marker: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = _tmux(server, "capture-pane", "-p", "-J", "-S", "-", "-t", target)
        if marker in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{marker!r} never appeared:\n{screen}")


@contextlib.contextmanager
def tmux_server():
    require_tools("tmux")
    server = f"pstest-{uuid.uuid4().hex[:8]}"
    _tmux(server, "-f", "/dev/null", "new-session", "-d", "-x", "250", "-y", "80", "sleep 600")
    pid = int(_tmux(server, "display", "-p", "#{pid}"))
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@pytest.mark.live
def test_terminal_title_and_screen_survive(hostile, tmp_path):
    """portscope on a real terminal (a tmux pane) listing the hostile process: the pane keeps its title
    and its screen."""
    ns, port, overlay, _ = hostile
    script = tmp_path / "probe.sh"
    lines = ["echo BEFORE-MARK", f"export PYTHONPATH={_sh_quote(os.environ.get('PYTHONPATH', ''))}"]
    for args in (
        ("ls", "-a", "--netns", ns.name),
        ("who", str(port), "--netns", ns.name),
        ("can-bind", f"127.0.0.1:{port}", "--netns", ns.name),
        ("ls", "-a", "--json", "--netns", ns.name),
        ("can-bind", "--device", "nosuch", ":80", "--netns", ns.name),
    ):
        lines.append(" ".join(map(_sh_quote, portscope_argv(overlay, *args))))
    lines += ["echo AFTER-MARK", "sleep 600"]
    script.write_text("\n".join(lines) + "\n")
    with tmux_server() as server:
        # The detector works: a raw OSC retitles a pane, a raw clear wipes it.
        _tmux(server, "new-window", "-d", "-n", "control", "printf 'MARK\\n\\033]0;OWNED\\007\\033[2J'; sleep 600")
        deadline = time.monotonic() + 10
        while _tmux(server, "display", "-p", "-t", ":control", "#{pane_title}") != "OWNED":
            assert time.monotonic() < deadline, "a raw OSC did not retitle the control pane"
            time.sleep(0.1)
        assert "MARK" not in _tmux(server, "capture-pane", "-p", "-t", ":control")
        _tmux(server, "new-window", "-d", "-n", "probe", f"sh {script}")
        _tmux(server, "select-pane", "-t", ":probe", "-T", "untouched")
        screen = _wait_for(server, ":probe", "AFTER-MARK")
        assert _tmux(server, "display", "-p", "-t", ":probe", "#{pane_title}") == "untouched"
        assert "BEFORE-MARK" in screen  # nothing cleared the screen
        assert "\\x1b]0;OWNED\\x07\\x1b[2J" in screen  # the name was shown, escaped
        assert "Proto" in screen and "NO:" in screen


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------------------------------------------
# The escaping itself


def test_escapes_are_unambiguous_and_printable():
    assert safe_text("nginx") == "nginx"
    assert safe_text("x\u202ey") == "x\\u202ey"  # not "\x202e", which reads as "\x20" + "2e"
    assert safe_text("a\\x20") == "a\\\\x20"  # a name's own backslash is not an escape
    assert safe_text(b"\xff\xc3\xa9") == safe_text("\udcff\xe9") == "\\xff\xe9"
    assert safe_text("\x85\xa0\u2028\u2029\u061c\u200e\u2066") == "\\u0085\\u00a0\\u2028\\u2029\\u061c\\u200e\\u2066"
    assert safe_text("\x00\x1b\x7f") == "\\x00\\x1b\\x7f"
    assert safe_text("\U000e0001") == "\\U000e0001"
    assert safe_text("日本語 café") == "日本語 café"
    for code in range(0x110000):
        char = chr(code)
        shown = safe_text(char)
        assert shown.isprintable() and shown.encode("utf-8")
        assert (shown == char) == (char.isprintable() and char != "\\")


def test_command_lines_paste_back_into_bash():
    require_tools("bash")
    words = [_text(a) for a in ARGS] + ["it's", "\U0001f600\u200d", "\\u202e"]
    quoted = " ".join(dollar_quoted(w) for w in words)
    assert quoted.isprintable()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", f"printf '%s\\0' {quoted}"], capture_output=True, timeout=30, env=env)
    assert done.stdout.split(b"\0")[:-1] == [w.encode("utf-8", "surrogateescape") for w in words]


def test_json_strings():
    for text in ("plain", "日本語", 'quote " and \\ and \n', ""):
        assert jsonout.json_string(text) == json.dumps(text, ensure_ascii=False)  # the fast path is json's
    hostile = "\x1b]0;x\x07\x85\x7f\u202e\u2028\u2029\U000e0001é"
    encoded = jsonout.json_string(hostile)
    assert encoded.isprintable() and "é" in encoded and "\\u202e" in encoded and "\\udb40\\udc01" in encoded
    assert json.loads(encoded) == hostile
    assert json.loads(jsonout.json_string("bad\udcff\\")) == "bad\\xff\\\\"  # the escaped text form
    document = {"name": hostile, "list": ["a\udcfe", 1, None], "nested": {"k": "\u2028"}}
    for indent in (None, 2):
        text = jsonout.dumps(document, indent=indent)
        assert not unsafe_characters(text) and text.encode("utf-8")
        assert json.loads(text) == {"name": hostile, "list": ["a\\xfe", 1, None], "nested": {"k": "\u2028"}}
        plain = {"name": "日本語", "list": ["a", 1, None]}
        assert jsonout.dumps(plain, indent=indent) == json.dumps(plain, indent=indent, ensure_ascii=False)


def test_every_character_class_is_escaped_in_json():
    for code in range(0x110000):
        char = chr(code)
        encoded = jsonout.json_string(char)
        assert encoded.isprintable(), hex(code)
        if not 0xD800 <= code < 0xE000:
            assert json.loads(encoded) == char
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            assert encoded.isascii(), hex(code)
