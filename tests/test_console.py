"""The console script entry: a Ctrl-C at any moment ends quietly with status 130."""

from __future__ import annotations

import subprocess
import sys

from portscope import entry as console
from portscope.errors import ExitStatus

# A real SIGINT, delivered while portscope.cli is being imported (the window before click's handling).
INTERRUPT_DURING_IMPORT = """
import builtins, os, signal
real_import = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "portscope.cli":
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = importing
from portscope.entry import run
run()
"""


def test_ctrl_c_while_the_command_line_loads():
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPT_DURING_IMPORT, "ls"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == ExitStatus.INTERRUPTED == console.INTERRUPTED
    assert "Traceback" not in done.stderr


def test_console_script_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-c", "from portscope.entry import run; run()", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("portscope")


def test_program_path_searches_path_as_shutil_which(tmp_path, monkeypatch):
    import shutil

    from portscope.render.environment import program_path

    plain, runnable = tmp_path / "a", tmp_path / "b"
    plain.mkdir()
    runnable.mkdir()
    (plain / "portscope").write_text("")  # not executable: skipped, as the shell skips it
    (runnable / "portscope").write_text("#!/bin/sh\n")
    (runnable / "portscope").chmod(0o755)
    monkeypatch.setattr("sys.argv", ["portscope", "ls"])
    monkeypatch.setenv("PATH", f"{plain}:{runnable}")
    assert program_path() == shutil.which("portscope") == str(runnable / "portscope")
    monkeypatch.setenv("PATH", str(plain))
    assert program_path() == "portscope" and shutil.which("portscope") is None


DEFERRED = """
import sys
from portscope.entry import defer_imports
defer_imports(("inspect",))
module = sys.modules["inspect"]
import dataclasses, inspect
assert inspect is module and "ast" not in sys.modules, "imported without being executed"

@dataclasses.dataclass
class Point:
    x: int

assert Point.__doc__ == "Point(x: int)" and "ast" in sys.modules  # dataclasses' own use loads it
assert sys.modules["inspect"] is module and type(module) is type(sys)
from inspect import cleandoc, signature
assert cleandoc("  a\\n  b") == "a\\nb" and str(signature(Point)) == "(x: int) -> None"
print("ok")
"""


def test_deferred_modules_are_the_real_ones_on_first_use():
    done = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True, timeout=60)
    assert done.stdout == "ok\n", done.stderr


def test_console_script_defers_inspect_but_click_still_gets_it():
    # a line click parses (an error) still gets every inspect function click calls
    done = subprocess.run(
        [sys.executable, "-c", "from portscope.entry import run; run()", "ls", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == ExitStatus.USAGE and "no such option" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_a_listing_is_kept_until_the_process_leaves(capsys):
    """The console script leaves with os._exit: ls leaves its snapshot in ``kept`` rather than freeing its
    records one by one as it returns."""
    from portscope.cli.fast import answer
    from portscope.model.records import Snapshot

    kept: list = []
    assert answer(["ls", "-a", "-n", "--json", "--no-processes"], kept) == ExitStatus.OK
    assert capsys.readouterr().out.startswith("[")
    assert [type(result) for result in kept] == [Snapshot]
