"""portscope: Linux port and socket inspector, as a library.

    >>> import portscope
    >>> snap = portscope.snapshot(portscope.Query(states=frozenset({portscope.State.LISTEN})))
    >>> [(s.local_port, [h.process.name for h in snap.holders_of(s)]) for s in snap.sockets]  # doctest: +SKIP

The names below are the public interface: records are frozen dataclasses, decisions are enums and codes.
They are loaded on first use, so ``import portscope`` (done by every command) stays cheap.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself (with re, enum...) would double --version's start-up
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
    "who_is_on": "portscope.commands.who",
    "BindReport": "portscope.commands.can_bind",
    "BindRequest": "portscope.commands.can_bind",
    "check_bind": "portscope.commands.can_bind",
    "check_binds": "portscope.commands.can_bind",
    "UnixWhoResult": "portscope.commands.who",
    "StatsReport": "portscope.commands.stats",
    "socket_stats": "portscope.commands.stats",
    "Verdict": "portscope.rules.bind",
    "ReasonCode": "portscope.rules.codes",
    "ActionKind": "portscope.rules.codes",
    "UncertaintyCode": "portscope.rules.codes",
    "Coded": "portscope.rules.codes",
    # how much a call may fork to use a second CPU
    "Parallelism": "portscope.engine.parallel",
    "ALL_NAMESPACES": "portscope.model.query",
    "NetnsInfo": "portscope.model.records",
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
