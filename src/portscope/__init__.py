"""portscope: Linux port and socket inspector, as a library.

    >>> import portscope
    >>> snap = portscope.snapshot(portscope.Query(states=frozenset({portscope.State.LISTEN})))
    >>> [(s.local_port, [h.process.name for h in snap.holders_of(s)]) for s in snap.sockets]  # doctest: +SKIP

The names below are the public interface: records are frozen dataclasses, decisions are enums and codes.
They are loaded on first use, so ``import portscope`` (done by every command) stays cheap.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing, here and in every module a command loads: type checkers take
# a name so spelled as True, and typing's import (with re) costs 8-10 ms of each start, doubling --version's
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # records and enums
    "Backend": "portscope.model.records",
    "Family": "portscope.model.records",
    "Holder": "portscope.model.records",
    "JoinReport": "portscope.model.records",
    "Process": "portscope.model.records",
    "Proto": "portscope.model.records",
    "ProtoSource": "portscope.model.records",
    "Snapshot": "portscope.model.records",
    "Socket": "portscope.model.records",
    "State": "portscope.model.records",
    "UnixSocket": "portscope.model.records",
    "UnixType": "portscope.model.records",
    # what to ask for
    "PortRange": "portscope.model.query",
    "Query": "portscope.model.query",
    # the calls the commands make
    "snapshot": "portscope.engine.snapshot",
    "LsOptions": "portscope.commands.ls",
    "list_sockets": "portscope.commands.ls",
    "WhoResult": "portscope.commands.who",
    "ProcessGroup": "portscope.commands.who",
    "Forwarding": "portscope.commands.who",
    "who_is_on": "portscope.commands.who",
    # where a socket lives: namespace names, containers, forwarders (no daemon asked)
    "Places": "portscope.commands.places",
    "ContainerInfo": "portscope.sources.containers",
    "Forward": "portscope.sources.forwarders",
    "NamespaceRef": "portscope.sources.namespaces",
    "BindReport": "portscope.commands.can_bind",
    "BindRequest": "portscope.commands.can_bind",
    "check_bind": "portscope.commands.can_bind",
    "check_binds": "portscope.commands.can_bind",
    "UnixWhoResult": "portscope.commands.who",
    "StatsReport": "portscope.commands.stats",
    "socket_stats": "portscope.commands.stats",
    "kill_port": "portscope.commands.kill",
    "plan_kill": "portscope.commands.kill",
    "execute_plan": "portscope.commands.kill",
    "close_connection": "portscope.commands.kill",
    "KillPlan": "portscope.commands.kill",
    "KillTarget": "portscope.commands.kill",
    "KillResult": "portscope.commands.kill",
    "TargetResult": "portscope.commands.kill",
    "Outcome": "portscope.commands.kill",
    "KillVerdict": "portscope.commands.kill",
    "ConnectionResult": "portscope.commands.kill",
    "ConnectionOutcome": "portscope.commands.kill",
    "Refusal": "portscope.rules.kill",
    "KillRole": "portscope.rules.kill",
    # the Prometheus exporter's records (serve, export)
    "Expectation": "portscope.commands.metrics",
    "Exporter": "portscope.commands.metrics",
    "ExporterOptions": "portscope.commands.metrics",
    "MetricFamily": "portscope.commands.metrics",
    "MetricType": "portscope.commands.metrics",
    "Scrape": "portscope.commands.metrics",
    "collect_metrics": "portscope.commands.metrics",
    "parse_expectation": "portscope.commands.metrics",
    "Change": "portscope.commands.watch",
    "Origin": "portscope.commands.watch",
    "Seen": "portscope.commands.watch",
    "SocketDiff": "portscope.commands.watch",
    "WaitResult": "portscope.commands.watch",
    "WatchEvent": "portscope.commands.watch",
    "WatchUpdate": "portscope.commands.watch",
    "Watcher": "portscope.commands.watch",
    "wait_for_port": "portscope.commands.watch",
    "Verdict": "portscope.rules.bind",
    "ReasonCode": "portscope.rules.codes",
    "ActionKind": "portscope.rules.codes",
    "UncertaintyCode": "portscope.rules.codes",
    "Coded": "portscope.rules.codes",
    # how much a call may fork to use a second CPU
    "Parallelism": "portscope.engine.parallel",
    "ALL_NAMESPACES": "portscope.model.query",
    "NetnsInfo": "portscope.model.records",
    # ss filter expressions and socket details (ls EXPRESSION, -e -o -m -i)
    "Filter": "portscope.model.filter",
    "FilterSyntaxError": "portscope.errors",
    "parse_expression": "portscope.commands.ls",
    "Detail": "portscope.model.records",
    "SocketDetails": "portscope.model.details",
    "TcpInfo": "portscope.model.details",
    "MemInfo": "portscope.model.details",
    # errors
    "ExitStatus": "portscope.errors",
    "PortscopeError": "portscope.errors",
    "SourceError": "portscope.errors",
    "UsageError": "portscope.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'portscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
