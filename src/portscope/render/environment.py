"""Where output goes, decided once: the streams, terminal or pipe, colour or not, how wide, which characters.

The CLI builds one :class:`Environment` from the real streams, ``--color`` and the environment variables
(``NO_COLOR``, ``FORCE_COLOR``, ``CLICOLOR_FORCE``, ``TERM=dumb``, ``COLUMNS``) and passes it to every
renderer; renderers ask it, never the system.

Colour: ``--color always|never`` wins; otherwise ``NO_COLOR`` (any non-empty value) turns it off, then
``FORCE_COLOR`` (non-empty) or ``CLICOLOR_FORCE`` (not ``0``) turn it on for a pipe too (``watch -c``,
``less -R``), and else a terminal gets colour unless ``TERM=dumb``. Width: a terminal's own width, or
``COLUMNS`` when set (a pipe too: ``watch`` sets it); a pipe without ``COLUMNS`` gets whole lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Mapping

from portscope.model.dataclass_lite import dataclass_lite

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import IO

COLOR_MODES = ("auto", "always", "never")

# The few styles the renderers use, as SGR parameters, for colour written without rich (into a pipe).
_SGR = {
    "bold": "1",
    "dim": "2",
    "italic": "3",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


@dataclass_lite(frozen=True)
class Environment:
    stdout: IO[str]
    stderr: IO[str] | None  # None: nowhere to say notes (no stderr at all)
    is_tty: bool  # stdout is a terminal: styled output fitted to the width; a pipe gets whole plain lines
    colour: bool
    width: int | None  # columns to fit; None: unlimited (a pipe)
    unicode: bool  # stdout's encoding can write arrows and ellipses
    encoding: str
    program: str = "portscope"  # how to run this program again, for hints (sudo needs the full path)
    height: int | None = None  # lines of the terminal (None: a pipe)

    @classmethod
    def detect(
        cls,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        environ: Mapping[str, str] | None = None,
        color: str = "auto",
    ) -> Environment:
        """The environment of ``stdout`` (default: this process's streams and variables)."""
        stdout = stdout if stdout is not None else sys.stdout
        stderr = stderr if stderr is not None else sys.stderr
        environ = os.environ if environ is None else environ
        tty = _is_terminal(stdout)
        encoding = getattr(stdout, "encoding", None) or "utf-8"
        return cls(
            stdout=stdout,
            stderr=stderr,
            is_tty=tty,
            colour=_colour(color, tty, environ),
            width=_terminal_width(environ) if tty else _columns(environ),
            unicode=_can_encode("←→…", encoding),
            encoding=encoding,
            program=program_path(),
            height=_terminal_height(environ) if tty else None,
        )

    def with_colour(self, color: str) -> Environment:
        """The same environment under ``--color`` given to a command (after the group's own)."""
        return dataclasses.replace(self, colour=_colour(color, self.is_tty, os.environ))

    def paint(self, text: str, style: str | None) -> str:
        """``text`` in a rich-style ``style`` ("bold green") as SGR codes, when colour is on; for the
        writers that do not use rich (pipes)."""
        if not self.colour or not style or not text:
            return text
        codes = [_SGR[word] for word in style.split() if word in _SGR]
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes else text

    def console(self, width: int | None = None):
        """A rich console on stdout (rich is imported only here, for terminal output)."""
        from rich.console import Console

        return Console(
            file=self.stdout,
            width=width if width is not None else self.width,
            no_color=not self.colour,
            force_terminal=self.colour,
            color_system="auto" if self.colour else None,
            highlight=False,
            soft_wrap=False,
            _environ={},  # decided here (NO_COLOR, FORCE_COLOR, COLUMNS): rich must not decide again
        )

    def note(self, text: str) -> None:
        """``portscope: note: ...`` on stderr. A closed stderr loses the note, never the answer."""
        if self.stderr is None:
            return
        with contextlib.suppress(OSError, ValueError):  # closed, or gone (EPIPE)
            self.stderr.write(f"portscope: note: {text}\n")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _colour(mode: str, tty: bool, environ: Mapping[str, str]) -> bool:
    if mode == "always":
        return True
    if mode == "never" or environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR") or environ.get("CLICOLOR_FORCE", "0") != "0":
        return True
    return tty and environ.get("TERM") != "dumb"


def _positive(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 100_000 else None


def _columns(environ: Mapping[str, str]) -> int | None:
    return _positive(environ.get("COLUMNS", ""))


def _terminal_width(environ: Mapping[str, str]) -> int:
    """COLUMNS wins; then the terminal's own size."""
    columns = _columns(environ)
    if columns:
        return columns
    try:  # the terminal's own size (shutil's version costs bz2 and lzma imports at start-up)
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def _terminal_height(environ: Mapping[str, str]) -> int:
    lines = _positive(environ.get("LINES", ""))
    if lines:
        return lines
    try:
        return os.get_terminal_size(sys.stdout.fileno()).lines or 24
    except (OSError, ValueError, AttributeError):
        return 24


def program_path() -> str:
    """This program as a command another user (``sudo``) can run: the full path of the console script
    that was started, found as the shell found it; ``portscope`` when it cannot be told (``python -m``)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0.endswith("__main__.py"):  # python -m portscope
        return f"{sys.executable} -m portscope"
    if not argv0 or argv0.startswith("-") or argv0.endswith(".py"):
        return "portscope"
    if os.sep in argv0:  # a console script started through PATH gets its full path here
        return os.path.abspath(argv0)
    # the shell's search, as shutil.which does it (whose import costs bz2 and lzma on every start)
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, argv0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    return "portscope"


def _can_encode(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
