"""Where output goes: terminal or pipe, colour or not, how wide."""

from __future__ import annotations

import os
import shutil
import sys
from typing import IO


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def color_allowed(stream: IO[str] | None = None) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def terminal_width(stream: IO[str] | None = None) -> int | None:
    """The width to fit on a terminal (COLUMNS wins), or None for a pipe: scripts get whole lines."""
    if not is_terminal(stream):
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return shutil.get_terminal_size((80, 24)).columns


def make_console(stream: IO[str] | None = None, width: int | None = None):
    from rich.console import Console

    stream = stream or sys.stdout
    return Console(
        file=stream,
        width=width,
        no_color=not color_allowed(stream),
        force_terminal=is_terminal(stream) and color_allowed(stream),
        highlight=False,
        soft_wrap=False,
    )


def hidden_owner_advice() -> str:
    """What to do about processes we could not inspect: root sees all, unless something refuses even root."""
    if os.geteuid() != 0:
        return "run as root to see them"
    return "access was refused even to root (a security module or a ptrace restriction)"
