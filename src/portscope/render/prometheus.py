"""Metric families (:mod:`portscope.commands.metrics`) as Prometheus exposition, over HTTP or in a textfile.

The only importer of prometheus_client, and only ``serve`` and ``export`` import this module. The HTTP
server is prometheus_client's: ``/metrics`` in the OpenMetrics or the text format, as the scraper's
``Accept`` header asks, gzip when accepted.

Label values come from outside (process, unit, container and namespace names): prometheus_client
escapes ``\\``, ``"`` and newlines, and here every value that is not printable text (controls, bytes
that are not UTF-8) is first given in the escaped text form of :mod:`portscope.render.text` (``\\xNN``,
backslashes doubled), as JSON does for bytes that are not UTF-8: the exposition is valid UTF-8 always.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from portscope.commands import metrics as m
from portscope.commands.metrics import Exporter, MetricFamily, MetricType, Scrape
from portscope.errors import UsageError
from portscope.model.notation import format_endpoint
from portscope.render.environment import Environment
from portscope.render.text import safe_text

TEXTFILE_NAME = "portscope.prom"

# What each metric answers (README "Monitoring many hosts" says the same at more length).
HELP: dict[str, str] = {
    m.LISTENER_INFO: "A listening socket (UDP: bound and unconnected) and the names of its holders.",
    m.LISTENER_START: "Start time of the oldest process holding the listener, in seconds since the epoch.",
    m.LISTEN_QUEUE: "Connections waiting in the listener's accept queue.",
    m.LISTEN_BACKLOG: "The listener's accept queue limit (its listen() backlog).",
    m.CONNECTIONS: "Sockets on a local port that has a listener, by state (client-side ports are not labels).",
    m.SOCKETS: "Sockets by namespace, protocol and state.",
    m.BOUND_ONLY: "TCP sockets bound to a port but neither listening nor connected (they cause EADDRINUSE).",
    m.HIDDEN_OWNERS: "Sockets whose holding processes could not be inspected.",
    m.EXPECTED_UP: "1 when the port is held by a process, unit or container of the expected name, else 0.",
    m.SCRAPE_DURATION: "Time the last snapshot took, in seconds.",
    m.SCRAPE_ERRORS: "Snapshots that failed (the exporter kept running).",
    m.SERIES_TRUNCATED: "Series left out because a scrape would have exceeded --max-series.",
}


def label_value(text: str) -> str:
    """A label value as exposed: printable text as it is, anything else in portscope's escaped text form."""
    return text if text.isprintable() else safe_text(text)


def metric(family: MetricFamily) -> Metric:
    """One family as a prometheus_client metric family."""
    help_text = HELP[family.name]
    if family.type is MetricType.COUNTER:
        made: Metric = CounterMetricFamily(family.name.removesuffix("_total"), help_text, labels=family.labels)
    else:
        made = GaugeMetricFamily(family.name, help_text, labels=family.labels)
    for labels, value in family.samples:
        made.add_metric([label_value(v) for v in labels], value)
    return made


class ScrapeCollector:
    """A prometheus_client collector that asks ``scrape`` for the families at each collection."""

    def __init__(self, scrape: Callable[[], Scrape], on_scrape: Callable[[Scrape], None] | None = None) -> None:
        self._scrape = scrape
        self._on_scrape = on_scrape

    def describe(self) -> list[Metric]:
        return []  # nothing collected at registration

    def collect(self) -> Iterator[Metric]:
        scrape = self._scrape()
        if self._on_scrape is not None:
            self._on_scrape(scrape)
        for family in scrape.families:
            yield metric(family)


def exposition(scrape: Scrape) -> bytes:
    """The text format (0.0.4) of one scrape: what a textfile holds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(lambda: scrape))
    return generate_latest(registry)


def write_textfile(directory: str, data: bytes, name: str = TEXTFILE_NAME) -> str:
    """``directory/name`` replaced atomically: a temporary file beside it, written, synced, renamed, and the
    directory synced. The temporary name does not end in ``.prom``: node_exporter never reads it half-written."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"no directory '{directory}' for the textfile") from None
    except NotADirectoryError:
        raise UsageError(f"not a directory: '{directory}'") from None
    target = os.path.join(directory, name)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), 0o644)  # node_exporter runs as its own user
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
    return target


# ---------------------------------------------------------------------------------------------------
# HTTP


def _failure_notes(env: Environment) -> Callable[[Scrape], None]:
    """A failed scrape is said once on stderr (for the journal), again only when the reason changes."""
    said: list[str | None] = [None]

    def note(scrape: Scrape) -> None:
        if scrape.error != said[0]:
            said[0] = scrape.error
            env.note(safe_text(f"scrape failed: {scrape.error}") if scrape.error else "scrapes succeed again")

    return note


def start_server(exporter: Exporter, host: str, port: int, env: Environment) -> tuple[Any, threading.Thread]:
    """prometheus_client's threaded HTTP server on ``host:port`` in a daemon thread, with portscope's metrics
    and the exporter process's own (``process_*``: memory, CPU, fds; ``python_gc_*``)."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(exporter.scrape, _failure_notes(env)))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    try:
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            if host != m.EVERY_ADDRESS or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            server, thread = start_http_server(port, addr="0.0.0.0", registry=registry)  # no IPv6 here
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}") from None
    except OSError as exc:
        where = format_endpoint(host, port)
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen on {where}: address in use (portscope who {port} shows by whom)") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES, errno.EAFNOSUPPORT):
            raise UsageError(f"cannot listen on {where}: {exc.strerror}") from None
        raise
    return server, thread


def served_url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{format_endpoint(host, port)}/metrics"
