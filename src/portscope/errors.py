"""Exceptions and exit statuses shared by the library and the CLI."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1  # who: nothing on the port; can-bind: cannot bind
    USAGE = 2
    UNCERTAIN = 3  # can-bind: the answer depends on what cannot be seen
    UNREADABLE = 4  # the system could not be read (netlink refused, a namespace not enterable, a source unreadable)
    INTERNAL = 5  # an unexpected error inside portscope: never 0, 1 or 3
    INTERRUPTED = 130


class PortscopeError(Exception):
    """An error the user can act on; the CLI prints it on one line."""

    exit_status = ExitStatus.USAGE


class UsageError(PortscopeError):
    """Bad input: an unknown state, a port out of range, a malformed address..."""


class FilterSyntaxError(UsageError):
    """An ``ls`` filter expression that cannot be read; the message names the word and its position (1-based).
    Here rather than in model/filter.py so that catching it loads no parser."""

    def __init__(self, message: str, position: int | None) -> None:
        super().__init__(message)
        self.position = position


class SourceError(PortscopeError):
    """A data source (a /proc file, a netlink dump, a namespace) could not be read or parsed."""

    exit_status = ExitStatus.UNREADABLE

    exit_status = ExitStatus.UNREADABLE

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem
