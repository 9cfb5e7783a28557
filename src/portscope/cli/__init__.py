"""The command line: thin click commands over the library, one module per command.

Start-up is kept lean. This package itself loads no click: the common command lines (``ls``, ``who``,
``--help``, a completion request) are parsed by :mod:`portscope.cli.fast` from a table generated from the
click declarations, and run the commands' click-free bodies (:mod:`portscope.cli.bodies`); anything else
(errors, unusual forms) goes to the click group (:mod:`portscope.cli.group`), which loads a command's
module only when that command runs. The collectors, rich and pyroute2 are imported inside the commands
that need them.

Exit statuses are decided in :mod:`portscope.cli.runtime`, by category: a command's answer (0, 1, 3), bad
input (2), a system that could not be read (4), anything unexpected (5), Ctrl-C (130). An error never
ends with 0, 1 or 3.
"""

from __future__ import annotations

from portscope.cli.console import main, run

# The commands, by name: "module:attribute". A command's module is imported only when that command runs (or
# help lists them all), so `portscope ls` loads neither can-bind's nor completion's option declarations.
COMMANDS: dict[str, str] = {
    "can-bind": "portscope.cli.can_bind:can_bind",
    "completion": "portscope.cli.completion:completion",
    "export": "portscope.cli.serve:export",
    "kill": "portscope.cli.kill:kill",
    "ls": "portscope.cli.ls:ls",
    "serve": "portscope.cli.serve:serve",
    "stats": "portscope.cli.stats:stats",
    "wait": "portscope.cli.watch:wait",
    "watch": "portscope.cli.watch:watch",
    "who": "portscope.cli.who:who",
}

# What people coming from other tools type for a command (the did-you-mean of unknown commands).
COMMAND_SYNONYMS = {
    "list": "ls",
    "ss": "ls",
    "netstat": "ls",
    "sockets": "ls",
    "ports": "ls",
    "lsof": "who",
    "fuser": "who",
    "port": "who",
    "whois": "who",
    "bind": "can-bind",
    "check": "can-bind",
    "canbind": "can-bind",
    "can_bind": "can-bind",
    "completions": "completion",
    "stat": "stats",
    "summary": "stats",
}

# Names of the click group's module, loaded on first use (``from portscope.cli import cli``).
_GROUP_NAMES = frozenset({"cli", "exit_status", "PortscopeGroup", "CONTEXT_SETTINGS", "unknown_command_message"})


def __getattr__(name: str):
    if name in _GROUP_NAMES:
        from portscope.cli import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMANDS", "COMMAND_SYNONYMS", "main", "run"]
