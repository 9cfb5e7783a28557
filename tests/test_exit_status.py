"""Exit statuses by category, through the console script: an answer (0, 1, 3) never comes from an error.

Each case runs ``portscope.entry.run`` in a child, the way the installed command starts, with its
standard fds as a user's shell could leave them (closed, a reader that went away).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import portscope
from netns_util import new_netns
from portscope.errors import ExitStatus

ENV = {**os.environ, "PYTHONPATH": str(Path(portscope.__file__).parents[1])}
ENV.pop("PORTSCOPE_DEBUG", None)
ENTRY = "from portscope.entry import run; run()"
LISTEN_PORT = 7301
FREE_PORT = 7302


@pytest.fixture(scope="module")
def ns():
    with new_netns("psexit") as ns:
        listener = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", LISTEN_PORT))
        listener.listen(4)
        yield ns


def portscope_run(*args: str, before: str = "", redirect: str = "") -> subprocess.CompletedProcess:
    """``portscope ARGS`` from a shell with ``redirect`` (``2>&-``: stderr closed), after the Python ``before``."""
    script = f"{before}\n{ENTRY}"
    command = f'exec "$0" -c "$1" "${{@:2}}" {redirect}'
    return subprocess.run(
        ["bash", "-c", command, sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


def one_error_line(stderr: str, prefix: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), stderr
    assert "Traceback" not in stderr
    return lines[0]


def failing(exception: str) -> str:
    """Python run before the command line: ls's library call raises ``exception``."""
    return (
        f"import portscope.commands.ls as ls\ndef fail(options, **keywords):\n    raise {exception}\n"
        "ls.list_sockets = fail"
    )


def test_a_closed_stderr_does_not_change_the_answer(ns):
    free = portscope_run("can-bind", "--netns", ns.name, f"127.0.0.1:{FREE_PORT}", redirect="2>&-")
    assert (free.returncode, free.stdout.split(":")[0]) == (ExitStatus.OK, "YES")
    held = portscope_run("can-bind", "--netns", ns.name, f"127.0.0.1:{LISTEN_PORT}", redirect="2>&-")
    assert (held.returncode, held.stdout.split(":")[0]) == (ExitStatus.NOT_FOUND, "NO")
    found = portscope_run("who", "--netns", ns.name, str(LISTEN_PORT), redirect="2>&-")
    assert found.returncode == ExitStatus.OK and f"127.0.0.1:{LISTEN_PORT}" in found.stdout


@pytest.mark.parametrize("redirect", [">&-", "<&- >&- 2>&-"])
def test_closed_standard_fds_are_reopened_on_dev_null(redirect):
    # what fd 1 is once the console script has started: never the next file the command opens
    before = (
        "import os, portscope.entry as e\n"
        "e.reopen_closed_standard_fds()\n"
        "os.write(3, os.readlink('/proc/self/fd/1').encode())"
    )
    done = subprocess.run(
        ["bash", "-c", f'exec "$0" -c "$1" 3>&1 {redirect}', sys.executable, before],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert done.returncode == 0 and done.stdout == os.devnull, done


def test_a_closed_stdout_is_no_error(ns):
    done = portscope_run("ls", "-a", "--netns", ns.name, redirect=">&-")
    assert done.returncode == ExitStatus.OK and done.stderr == ""
    done = portscope_run("who", "--netns", ns.name, str(FREE_PORT), redirect=">&-")
    assert done.returncode == ExitStatus.NOT_FOUND and done.stderr == ""


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["who", str(LISTEN_PORT)], ExitStatus.OK),
        (["who", str(FREE_PORT)], ExitStatus.NOT_FOUND),
        (["can-bind", f"127.0.0.1:{LISTEN_PORT}"], ExitStatus.NOT_FOUND),
        (["can-bind", f"127.0.0.1:{FREE_PORT}", "--json"], ExitStatus.OK),
        (["ls", "-a", "--json"], ExitStatus.OK),
    ],
)
def test_a_reader_that_stops_early_keeps_the_answer(ns, args, status):
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, args[0], "--netns", ns.name, *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    proc.stdout.close()  # gone before the first write, as with `| head -0`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status and err == b""


def test_an_unexpected_error_is_one_line_and_status_5():
    done = portscope_run("ls", before=failing("RuntimeError('boom')"))
    line = one_error_line(done.stderr, "portscope: internal error: ")
    assert "RuntimeError: boom" in line and "--debug" in line
    assert done.returncode == ExitStatus.INTERNAL and done.stdout == ""


def test_debug_shows_the_traceback_and_keeps_the_status():
    done = portscope_run("--debug", "ls", before=failing("RuntimeError('boom')"))
    assert done.returncode == ExitStatus.INTERNAL
    assert "Traceback" in done.stderr and done.stderr.rstrip().splitlines()[-1].startswith("portscope: internal error:")


@pytest.mark.parametrize(
    ("exception", "status", "words"),
    [
        ("MemoryError()", ExitStatus.UNREADABLE, "out of memory"),
        ("OSError(24, 'Too many open files')", ExitStatus.UNREADABLE, "ulimit -n"),
        ("__import__('portscope.errors').errors.SourceError('/proc/net/tcp', 'unreadable')", ExitStatus.UNREADABLE,
         "/proc/net/tcp: unreadable"),
        ("__import__('portscope.errors').errors.UsageError('bad')", ExitStatus.USAGE, "bad"),
    ],
)  # fmt: skip
def test_errors_by_category(exception, status, words):
    done = portscope_run("ls", before=failing(exception))
    assert words in one_error_line(done.stderr, "portscope: error: ")
    assert done.returncode == status


def test_ctrl_c_during_a_command():
    done = portscope_run("ls", before=failing("KeyboardInterrupt"))
    assert done.returncode == ExitStatus.INTERRUPTED
    assert done.stderr.strip() == "portscope: interrupted"


@pytest.mark.parametrize("args", [[], ["completion"], ["completion", "tcsh"], ["ls", "--bogus"]])
def test_bad_invocations_are_one_line_and_status_2(args):
    done = portscope_run(*args)
    one_error_line(done.stderr, "portscope")
    assert done.returncode == ExitStatus.USAGE and done.stdout == ""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["who", "--help"], ["completion", "zsh"]])
def test_help_and_version_to_a_reader_that_stopped(args):
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitStatus.OK and err == b""
