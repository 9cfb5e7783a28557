"""A command line parsed as click parses it, from the generated table (:mod:`portscope.cli.argtable`), or declined.

The parser follows click's rules for what it accepts: options and arguments interspersed in a command
(not before the command: the group stops at its first argument), ``--opt=value`` and ``--opt value``,
clustered short flags with a value-taking option ending the cluster (``-tls LISTEN``, ``-slisten``), the
last use of a single option winning, repeated options collected in order, exact option names only (click
accepts no abbreviation), ``--color`` alone meaning ``always``. It gives exactly the parameters click
gives the command's body (``tests/test_fastargs.py`` holds the two side by side over generated command
lines), or None: then click parses the line, with its own messages and status 2. It declines everything
else: help and version options, ``--``, unknown commands and options, values click would refuse (a bad
choice, a missing value or argument, extra arguments), a variable click would read (``PORTSCOPE_DEBUG``),
commands whose declarations do more than the table says (callbacks), and option types it does not know.
"""

from __future__ import annotations

import os

from portscope.cli.argtable import ARGUMENT_FIELDS, COMMAND_FIELDS, COMMANDS, OPTION_FIELDS
from portscope.model.dataclass_lite import dataclass_lite

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import Any


@dataclass_lite(frozen=True)
class Parsed:
    """A command line click would run: the command, its body's parameters, the ``--color`` given to the
    group and to the command (None: not given), and the group's ``--debug``."""

    command: str
    params: dict[str, Any]
    group_color: str | None
    command_color: str | None
    debug: bool = False


def _fields(row: tuple[Any, ...], fields: tuple[str, ...]) -> dict[str, Any]:
    """A generated row as a dict (the fields it lacks left out)."""
    absent = row[-1]
    return {field: value for field, value in zip(fields, row[:-1], strict=True) if field not in absent}


def command_spec(name: str) -> dict[str, Any] | None:
    """One command's table (``""``: the group): fast, interspersed, options, arguments, option_items."""
    row = COMMANDS.get(name)
    if row is None:
        return None
    spec = dict(zip(COMMAND_FIELDS, row, strict=True))
    spec["options"] = [_fields(option, OPTION_FIELDS) for option in spec["options"]]
    spec["arguments"] = [_fields(argument, ARGUMENT_FIELDS) for argument in spec["arguments"]]
    return spec


class _Declined(Exception):
    """Not a line for the fast path: click parses it."""


_FLAG_NEEDS_VALUE = object()  # an option whose value may be left out, given without one (--color)


def _split_opt(opt: str) -> tuple[str, str]:
    first = opt[:1]
    if first.isalnum():
        return "", opt
    if opt[1:2] == first:
        return opt[:2], opt[2:]
    return first, opt[1:]


def _index(spec: dict[str, Any]) -> tuple[dict[str, tuple[dict, bool]], dict[str, tuple[dict, bool]]]:
    """Option strings -> (option, given as the secondary ``--no-x`` form), long and short apart (as click:
    ``-x`` is short, everything else long, ``-foo`` too)."""
    long_opts: dict[str, tuple[dict, bool]] = {}
    short_opts: dict[str, tuple[dict, bool]] = {}
    for option in spec["options"]:
        for secondary, names in ((False, option["opts"]), (True, option["secondary"])):
            for name in names:
                prefix, value = _split_opt(name)
                target = short_opts if len(prefix) == 1 and len(value) == 1 else long_opts
                target[name] = (option, secondary)
    return long_opts, short_opts


def _convert(kind: str, choices: tuple[str, ...], value: str) -> Any:
    if kind == "str":
        return value
    if kind == "choice":
        if value not in choices:
            raise _Declined
        return value
    try:
        return int(value) if kind == "int" else float(value) if kind == "float" else _refuse()
    except ValueError:
        raise _Declined from None


def _refuse() -> Any:
    raise _Declined


class _Level:
    """The options of one command (or the group) being read off the front of ``rargs``."""

    def __init__(self, spec: dict[str, Any], rargs: list[str]) -> None:
        for option in spec["options"]:
            envvars = option["envvar"]
            for name in (envvars,) if isinstance(envvars, str) else envvars:
                if name in os.environ:  # click would read it
                    raise _Declined
        self.spec = spec
        self.long_opts, self.short_opts = _index(spec)
        self.rargs = rargs
        self.largs: list[str] = []
        self.given: dict[str, list[Any]] = {}
        self.color: str | None = None

    def parse(self) -> None:
        interspersed = self.spec["interspersed"]
        while self.rargs:
            arg = self.rargs.pop(0)
            if arg == "--":
                raise _Declined
            if arg[:1] == "-" and len(arg) > 1:
                self._option(arg)
            elif interspersed:
                self.largs.append(arg)
            else:
                self.rargs.insert(0, arg)
                return

    def _option(self, arg: str) -> None:
        name, equals, explicit = arg.partition("=")
        if name in self.long_opts:
            option, secondary = self.long_opts[name]
            if option["needs_value"]:
                if equals:
                    self.rargs.insert(0, explicit)
                self._store(option, secondary, self._value(option))
            elif equals:
                raise _Declined  # a flag given a value
            else:
                self._store(option, secondary, None)
        elif arg[:2] == "--":
            raise _Declined  # an unknown long option
        else:
            self._cluster(arg)

    def _cluster(self, arg: str) -> None:
        for i, letter in enumerate(arg[1:], start=2):
            found = self.short_opts.get("-" + letter)
            if found is None:
                raise _Declined
            option, secondary = found
            if not option["needs_value"]:
                self._store(option, secondary, None)
                continue
            if i < len(arg):  # the rest of the cluster is the value
                self.rargs.insert(0, arg[i:])
            self._store(option, secondary, self._value(option))
            return

    def _value(self, option: dict[str, Any]) -> Any:
        if not self.rargs:
            if option["flag_needs_value"]:
                return _FLAG_NEEDS_VALUE
            raise _Declined
        following = self.rargs[0]
        if option["flag_needs_value"] and following[:1] == "-" and len(following) > 1:
            return _FLAG_NEEDS_VALUE
        return self.rargs.pop(0)

    def _store(self, option: dict[str, Any], secondary: bool, value: Any) -> None:
        role = option["role"]
        if role == "color":
            self.color = (
                option["flag_value"] if value is _FLAG_NEEDS_VALUE else _convert("choice", option["choices"], value)
            )
            return
        if role != "param" or value is _FLAG_NEEDS_VALUE or "default" not in option:
            raise _Declined  # help, version, an option of a kind the table does not run
        if option["kind"] == "flag":
            value = option["secondary_const"] if secondary else option["const"]
        else:
            value = _convert(option["kind"], option["choices"], value)
        self.given.setdefault(option["name"], []).append(value)

    def params(self) -> dict[str, Any]:
        params = {}
        for option in self.spec["options"]:
            if option["role"] not in ("param", "refuse") or "default" not in option:
                continue  # help, version, --color: not the body's
            values = self.given.get(option["name"])
            if values is None:
                params[option["name"]] = option["default"]
            else:
                params[option["name"]] = tuple(values) if option["multiple"] else values[-1]
        positional = self.largs + self.rargs
        for argument in self.spec["arguments"]:
            kind, choices = argument["kind"], argument["choices"]
            if argument["nargs"] == 1:
                if positional:
                    params[argument["name"]] = _convert(kind, choices, positional.pop(0))
                elif argument["required"]:
                    raise _Declined
                else:
                    params[argument["name"]] = argument["default"]
            else:  # takes the rest
                if not positional:
                    if argument["required"]:
                        raise _Declined
                    params[argument["name"]] = argument["default"]
                else:
                    params[argument["name"]] = tuple(_convert(kind, choices, value) for value in positional)
                    positional = []
        if positional:
            raise _Declined  # extra arguments
        return params


def parse(args: list[str]) -> Parsed | None:
    """``args`` (after the program name) as click would give them to a command's body, or None."""
    try:
        group = _Level(command_spec(""), list(args))
        group.parse()  # (its --debug is read from the whole line by the caller, as for click)
        if not group.rargs:
            return None  # no command: click says so
        name = group.rargs[0]
        spec = command_spec(name) if name else None
        if spec is None or not spec["fast"]:
            return None
        level = _Level(spec, group.rargs[1:])
        level.parse()
        return Parsed(name, level.params(), group.color, level.color, bool(group.given.get("debug")))
    except _Declined:
        return None
