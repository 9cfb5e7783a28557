"""portscope serve and portscope export: the Prometheus exporter, over HTTP or as a node_exporter textfile."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, TypeVar

import click

from portscope.cli.options import COMMAND_SETTINGS, Command, invocation, netns_option

F = TypeVar("F", bound=Callable[..., Any])
NETNS_HELP = "Read another network namespace, or every one on the host (all)."


def exporter_options(function: F) -> F:
    """--netns, --expect, --expect-file and --max-series: what serve and export both take."""
    for option in reversed(
        (
            netns_option(NETNS_HELP),
            click.option(
                "--expect",
                "expect",
                multiple=True,
                metavar="PORT/PROTO=NAME",
                help="Expect PORT to be held by a process, systemd unit or container named NAME "
                "(repeatable): portscope_expected_listener_up is 1 while it is, else 0.",
            ),
            click.option(
                "--expect-file",
                type=click.Path(dir_okay=False),
                metavar="FILE",
                help="Read expectations from FILE: one PORT/PROTO=NAME a line, # comments.",
            ),
            click.option(
                "--max-series",
                type=click.IntRange(min=1),
                default=10000,
                show_default=True,
                metavar="N",
                help="At most N series per scrape; per-listener and per-port series past it are left out "
                "and counted in portscope_series_truncated_total.",
            ),
        )
    ):
        function = option(function)
    return function


def _options(netns: str | None, expect: tuple[str, ...], expect_file: str | None, max_series: int, interval=0.0):
    from portscope.commands.metrics import ExporterOptions, parse_expectation, read_expectations

    expectations = tuple(parse_expectation(text) for text in expect)
    if expect_file is not None:
        expectations += read_expectations(expect_file)
    return ExporterOptions(netns=netns, expectations=expectations, max_series=max_series, interval=interval)


@click.command("serve", cls=Command, context_settings=COMMAND_SETTINGS)
@click.option(
    "--listen",
    default="127.0.0.1:9717",
    show_default=True,
    metavar="ADDR:PORT",
    help="Serve /metrics here. Loopback only by default: to let Prometheus reach it from elsewhere, name an "
    "address deliberately (--listen 192.0.2.10:9717, or :9717 for every address) and limit who may connect "
    "(a firewall rule, or a TLS reverse proxy).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="Take at most one snapshot per SECONDS; scrapes in between get the last metrics (default 0: a "
    "snapshot per scrape).",
)
@exporter_options
def serve(listen: str, interval: float, netns: str | None, expect, expect_file, max_series: int) -> None:
    """Serve Prometheus metrics over HTTP: every listener with its process, unit and container.

    Each scrape of /metrics takes a snapshot (or, with --interval, reuses one that is fresh enough): listeners,
    connection counts per listening port and state, socket totals, accept queues, bound-only sockets and
    the expected listeners, in the OpenMetrics or the text format as the scraper asks. Runs until stopped;
    a failed snapshot is counted in portscope_scrape_errors_total and said on standard error, never fatal.
    Metric names and labels are in README, "Monitoring many hosts".

    \b
    Examples:
      portscope serve                           http://127.0.0.1:9717/metrics
      portscope serve --netns all --interval 10
      portscope serve --expect 443/tcp=nginx --expect 5432/tcp=postgres
      portscope serve --listen 192.0.2.10:9717  reachable on that address

    \b
    Exit status: 2 bad input (--listen, --expect, an address in use), 4 the first
    snapshot could not be read.
    """
    from portscope.commands.metrics import Exporter, parse_listen

    host, port = parse_listen(listen)
    exporter = Exporter(_options(netns, expect, expect_file, max_series, interval))
    exporter.collect()  # a first snapshot: a namespace that cannot be read fails now, not at every scrape

    from portscope.render.prometheus import served_url, start_server

    env = invocation().env
    was_enabled = gc.isenabled()
    gc.enable()  # the console script turns the collector off for short commands; this one runs for days
    try:
        server, thread = start_server(exporter, host, port, env)
        env.note(f"serving metrics on {served_url(server)}")
        try:
            while thread.is_alive():
                thread.join(3600)
        finally:
            server.server_close()
    finally:
        if not was_enabled:
            gc.disable()


@click.command("export", cls=Command, context_settings=COMMAND_SETTINGS)
@click.option(
    "--textfile",
    "directory",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write DIR/portscope.prom atomically, for node_exporter's textfile collector "
    "(--collector.textfile.directory=DIR); without it, the metrics go to standard output.",
)
@exporter_options
def export(directory: str | None, netns: str | None, expect, expect_file, max_series: int) -> None:
    """Write the Prometheus metrics of one snapshot: the textfile route, from a systemd timer or cron.

    The same metrics as serve (README, "Monitoring many hosts"), in the text format. The file is replaced
    atomically (written beside it, synced, renamed), so node_exporter never reads half of it.

    \b
    Examples:
      portscope export --textfile /var/lib/prometheus/node-exporter
      portscope export --expect 22/tcp=sshd --textfile /var/lib/node_exporter
      portscope export | promtool check metrics

    \b
    Exit status: 0 the metrics were written.
    """
    from portscope.commands.metrics import collect_metrics

    scrape = collect_metrics(_options(netns, expect, expect_file, max_series))

    from portscope.render.prometheus import exposition, write_textfile

    data = exposition(scrape)
    if directory is None:
        out = invocation().env.stdout
        out.write(data.decode("utf-8"))
        return
    write_textfile(directory, data)
