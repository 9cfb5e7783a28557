"""portscope stats: socket counts by protocol, family and state (ss -s), and what ss cannot show."""

from __future__ import annotations

from typing import Any

import click

from portscope.cli.options import COMMAND_SETTINGS, Command, json_option, netns_option, numeric_option, run_body


@click.command("stats", cls=Command, context_settings=COMMAND_SETTINGS)
@click.option(
    "--no-processes",
    "processes",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Do not look for the processes of the busiest ports and bound-only sockets (faster).",
)
@numeric_option()
@json_option("One JSON object: summary, counts, sockstat, busiest, bound_only (schema in README).")
@netns_option()
def stats(**params: Any) -> None:
    """Socket counts: ss -s's summary, every socket by protocol, family and state, and more.

    The summary is the kernel's own counters (/proc/net/sockstat and sockstat6), as ss -s shows
    them; the counts by state come from listing the sockets (TCP, UDP, UNIX). Beyond ss -s: the
    listening ports with the most connections, and the bound-only TCP sockets that hold a port.

    \b
    Examples:
      portscope stats                  summary of this network namespace
      portscope stats --json | jq .summary
      portscope stats --netns blue

    \b
    Exit status: 0 the counts were read.
    """
    from portscope.cli.bodies import stats as body

    run_body(body, params)
