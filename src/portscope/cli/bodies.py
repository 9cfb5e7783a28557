"""The bodies of the commands, without click: what a command does once its arguments are parsed.

Each body takes this run's :class:`~portscope.cli.runtime.Invocation` and the command's parameters by
name, exactly as click passes them to the command's declaration (``cli/ls.py``...), which only calls the
body. The fast path (:mod:`portscope.cli.fast`) calls the same bodies with the same parameters parsed
from the generated table, so that ``portscope ls`` need not load click. A body says bad input with

:class:`~portscope.errors.UsageError` (``portscope: error: ...``) or
:class:`~portscope.cli.runtime.CommandUsageError` (``portscope ls: error: ...``, as click's own errors).
"""

from __future__ import annotations

from portscope.cli.runtime import CommandUsageError, Invocation
from portscope.errors import ExitStatus

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import Any


def ls(
    run: Invocation,
    as_json: bool,
    as_jsonl: bool,
    numeric: bool,
    show_processes: bool,
    no_header: bool,
    pids_only: bool,
    **options: Any,
) -> None:
    from portscope.commands.ls import LsOptions, list_sockets
    from portscope.commands.names import Names
    from portscope.errors import FilterSyntaxError, UsageError

    clashes = (
        ("--json", as_json, "--jsonl", as_jsonl),
        ("-p", show_processes, "--no-processes", not options["join_processes"]),
        ("--pids", pids_only, "--no-processes", not options["join_processes"]),
        ("--pids", pids_only, "--json", as_json),
        ("--pids", pids_only, "--jsonl", as_jsonl),
        ("--no-header", no_header, "--json", as_json),
        ("--no-header", no_header, "--jsonl", as_jsonl),
    )
    for first, first_on, second, second_on in clashes:
        if first_on and second_on:
            raise UsageError(f"{first} and {second} exclude each other")
    names = Names.resolve(numeric=numeric)
    env = run.env
    prepared = None
    if not (as_json or as_jsonl or pids_only):
        from portscope.render.ls import TablePrep

        prepared = TablePrep(names, widths=env.width is None and not env.colour)
    try:
        # the other parameters are LsOptions' fields, by name; one Places for the filter and the output
        snap = list_sockets(LsOptions(**options), places=names.places, meanwhile=prepared)
    except FilterSyntaxError as exc:
        raise CommandUsageError(str(exc)) from None
    run.keep(snap)
    names.places.learn(snap.namespaces)
    if as_jsonl:
        from portscope.render.jsonout import write_socket_lines
        from portscope.render.ls import footer_lines

        write_socket_lines(env.stdout, snap, names.services, names.places)
        for line in footer_lines(snap, names):
            env.note(line)
        return

    from portscope.render.ls import render_listing, render_pids

    if pids_only:
        render_pids(snap, env)
        return
    render_listing(snap, env, names, as_json=as_json, header=not no_header, prepared=prepared)


def who(run: Invocation, port: str, remote: bool, numeric: bool, as_json: bool, netns: str | None) -> None:
    from portscope.commands.names import Names
    from portscope.commands.who import who_is_on

    names = Names.resolve(numeric=numeric)
    result = who_is_on(port, remote=remote, netns=netns, places=names.places)
    run.answer = ExitStatus.OK if result.found else ExitStatus.NOT_FOUND

    from portscope.render.who import render_who

    render_who(result, run.env, names, as_json=as_json)


def stats(run: Invocation, processes: bool, numeric: bool, as_json: bool, netns: str | None) -> None:
    from portscope.commands.names import Names
    from portscope.commands.stats import socket_stats

    report = socket_stats(netns=netns, processes=processes)

    from portscope.render.stats import render_stats

    render_stats(report, run.env, Names.resolve(numeric=numeric), as_json=as_json)


# The commands the fast path may run, by name (each body's parameters are its click declaration's).
BODIES = {"ls": ls, "who": who, "stats": stats}
