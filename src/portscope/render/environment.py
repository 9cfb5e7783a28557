"""Where output goes, decided once: the streams, terminal or pipe, colour or not, how wide, which characters.

The CLI builds one :class:`Environment` from the real streams and the environment variables (``NO_COLOR``,
``TERM=dumb``, ``COLUMNS``) and passes it to every renderer; renderers ask it, never the system.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class Environment:
    stdout: IO[str]
    stderr: IO[str] | None  # None: nowhere to say notes (no stderr at all)
    is_tty: bool  # stdout is a terminal: styled output fitted to the width; a pipe gets whole plain lines
    colour: bool
    width: int | None  # columns to fit; None: unlimited (a pipe)
    unicode: bool  # stdout's encoding can write arrows and ellipses
    encoding: str

    @classmethod
    def detect(
        cls, stdout: IO[str] | None = None, stderr: IO[str] | None = None, environ: Mapping[str, str] | None = None
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
            colour=tty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb",
            width=_terminal_width(environ) if tty else None,
            unicode=_can_encode("←→…", encoding),
            encoding=encoding,
        )

    def console(self, width: int | None = None):
        """A rich console on stdout (rich is imported only here, for terminal output)."""
        from rich.console import Console

        return Console(
            file=self.stdout,
            width=width if width is not None else self.width,
            no_color=not self.colour,
            force_terminal=self.is_tty and self.colour,
            highlight=False,
            soft_wrap=False,
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


def _terminal_width(environ: Mapping[str, str]) -> int:
    """COLUMNS wins; then the terminal's own size."""
    columns = environ.get("COLUMNS", "")
    if columns.isascii() and columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:  # the terminal's own size (shutil's version costs bz2 and lzma imports at start-up)
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def _can_encode(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
