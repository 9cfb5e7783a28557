"""What each command loads: start-up is most of a command's time on a small host, so nothing heavy may creep
into the import graph of ls, who, a completion request, --help or --version. click, whose import alone costs
more than the interpreter's start-up, is on none of them: they take the fast path (portscope.cli.fast).

The modules are read from the interpreter's own import log (-X importtime), for the whole run of the command
(the imports a command makes inside its function included), in a network namespace made here with one
listener and one connection, so that every step of ls and who runs.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import click
import pytest

import portscope
from netns_util import new_netns

# argv[0] as the console script gets it from the kernel: its full path (a bare name would look the program up in
# PATH, with shutil, for the hints that name it)
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "portscope")
# Without site's .pth files (-S): a hook there (a CA bundle, a distutils shim) may import modules first and
# hide them from this log; site itself is imported without them, and the paths it would add are given here.
_PATHS = [os.path.dirname(os.path.dirname(module.__file__)) for module in (portscope, click)]
_SITE = f"import site, sys; sys.path[:0] = {_PATHS!r}"
RUN = f"{_SITE}; sys.argv[0] = {CONSOLE_SCRIPT!r}; from portscope.entry import run; run()"

# Never on these paths: click (the fast path parses them), other dependencies, and standard modules that cost a
# share of the interpreter's own start-up each (json, subprocess...) or are there for other commands only.
HEAVY = {
    "click",
    "rich",
    "pyroute2",
    "psutil",
    "prometheus_client",
    "subprocess",
    "asyncio",
    "tempfile",
    "traceback",
    "logging",
    "argparse",
    "multiprocessing",
    "concurrent",
    "ctypes",
    "email",
    "http",
    "xml",
    "pathlib",
    "typing",  # 8-10 ms with re: TYPE_CHECKING is a constant of our own (portscope/__init__.py)
}
# Other commands' library code and renderers.
OTHER_COMMANDS = {
    "portscope.commands.can_bind",
    "portscope.commands.stats",
    "portscope.rules",
    "portscope.render.can_bind",
    "portscope.render.bind_words",
    "portscope.render.stats",
    "portscope.sources.bindfacts",
    "portscope.sources.probe",
    "portscope.docs",
}
LIBRARY = {"portscope.commands", "portscope.engine", "portscope.sources", "portscope.render.table"}


@functools.cache
def interpreter_modules() -> frozenset[str]:
    """What the interpreter and site (without .pth files) load before any code of ours."""
    done = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", _SITE], capture_output=True, text=True)
    return frozenset(line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.count("|") == 2)


def imported(argv: list[str], env: dict[str, str] | None = None, netns: str | None = None) -> set[str]:
    """The modules a command loads beyond the interpreter's own start-up."""
    command = [sys.executable, "-S", "-X", "importtime", "-c", RUN, *argv]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60, check=False
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "portscope" in names, done.stderr[-2000:]
    return names - interpreter_modules()


def loaded(names: set[str], packages: set[str]) -> set[str]:
    """The modules of ``names`` that are one of ``packages`` or inside one."""
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in packages)}


@pytest.fixture(scope="module")
def small_host():
    import socket

    with new_netns("psimp") as ns:
        listener = ns.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        client = ns.socket()
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        try:
            yield ns.name, str(listener.getsockname()[1])
        finally:
            for sock in (accepted, client, listener):
                sock.close()


@pytest.mark.parametrize("argv", [["ls"], ["ls", "-l"], ["ls", "-a", "-n"]])
def test_ls_loads_only_its_own_modules(small_host, argv):
    ns, _ = small_host
    names = imported(argv, netns=ns)
    assert not loaded(names, HEAVY | OTHER_COMMANDS)
    assert not loaded(names, {"json", "ipaddress", "socket", "signal"})
    assert not loaded(names, {"portscope.commands.who", "portscope.render.who"})
    assert not loaded(names, {"portscope.sources.lineage", "portscope.sources.unixdiag", "shlex", "textwrap", "shutil"})
    assert not loaded(names, {"portscope.sources.containers", "portscope.sources.forwarders"})  # ls shows no place
    assert not loaded(names, {"inspect", "ast", "dis", "tokenize"})  # dataclasses' import of inspect is deferred
    assert "portscope.engine.snapshot" in names  # (the run did reach the listing)


def test_ls_json_adds_its_writer_only(small_host):
    ns, _ = small_host
    names = imported(["ls", "-a", "--json"], netns=ns)
    assert "portscope.render.jsonout" in names
    assert not loaded(names, HEAVY | OTHER_COMMANDS | {"ipaddress", "portscope.commands.who"})
    # the objects are written from templates and _json's string encoder: the json package (its decoder's
    # patterns compiled at import) only where a container runtime's files are read
    assert ("json" in names) <= runtime_files(), "json without a container runtime's files"


def test_who_loads_only_its_own_modules(small_host):
    ns, port = small_host
    names = imported(["who", port], netns=ns)
    assert "portscope.commands.who" in names and "portscope.sources.lineage" in names  # a holder was described
    # the holders' details are read from /proc: psutil's import alone (with subprocess, threading, datetime...)
    # took longer than the rest of a small host's who
    assert not loaded(names, HEAVY | OTHER_COMMANDS | {"portscope.render.jsonout"})
    # A socket outside the host's namespace may be a container's: who reads the runtimes' files (JSON), and
    # only where a runtime left some.
    assert ("json" in names) <= runtime_files(), "json without a container runtime's files"


def runtime_files() -> bool:
    roots = ("/var/lib/docker/containers", "/var/lib/containers/storage", "/run/containerd", "/var/lib/cni/results")
    return any(os.path.isdir(root) and os.listdir(root) for root in roots)


WIDE = {"COLUMNS": "100"}  # the stored help pages are click's at 80 columns and more


def test_help_and_completion_load_no_library_code():
    for argv, env in (
        (["--help"], WIDE),
        (["ls", "--help"], WIDE),
        (["who", "-h"], WIDE),
        ([], {"_PORTSCOPE_COMPLETE": "bash_complete", "COMP_WORDS": "portscope l", "COMP_CWORD": "1"}),
        ([], {"_PORTSCOPE_COMPLETE": "bash_complete", "COMP_LINE": "portscope l", "COMP_POINT": "11"}),
        ([], {"_PORTSCOPE_COMPLETE": "zsh_complete", "COMP_WORDS": "portscope ls --st", "COMP_CWORD": "2"}),
        ([], {"_PORTSCOPE_COMPLETE": "fish_complete", "COMP_WORDS": "portscope who -", "COMP_CWORD": "-"}),
    ):
        names = imported(argv, env)
        assert not loaded(names, HEAVY | OTHER_COMMANDS | LIBRARY | {"json", "ipaddress", "socket"}), argv
        assert not loaded(names, {"portscope.cli.group", "portscope.shell.scripts", "portscope.shell.values"}), argv


def test_what_the_fast_path_declines_runs_through_click():
    """The same requests where click's answer differs from the stored one (a narrow terminal), or needs values."""
    for argv, env in (
        (["--help"], {"COLUMNS": "60"}),
        ([], {"_PORTSCOPE_COMPLETE": "zsh_complete", "COMP_WORDS": "portscope ls --state l", "COMP_CWORD": "3"}),
    ):
        names = imported(argv, env)
        assert {"click", "portscope.cli.group"} <= names, argv
        assert not loaded(names, HEAVY - {"click", "typing"} | OTHER_COMMANDS | {"json"}), argv  # click needs typing


def test_version_loads_nothing_beyond_the_interpreter():
    names = imported(["--version"])
    assert names <= {"portscope", "portscope.entry", "__future__", "importlib", "warnings"}
