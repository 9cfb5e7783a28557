"""The vocabulary of a bind verdict: reason codes, action kinds, uncertainty codes and BSD notes.

The model (:mod:`portscope.rules.bind`) decides in these terms; the renderer
(:mod:`portscope.render.bind_words`) turns them into sentences. Each code declares its parameters
here, once: constructing a code with other parameters is an error, and README documents the same
table (a test compares them).

A parameter named ``socket`` holds the model's ``Owner`` (JSON: a short reference to the socket).
"""

from __future__ import annotations

import enum
from typing import Any

from portscope.model.dataclass_lite import dataclass_lite


class ReasonCode(str, enum.Enum):
    """Why the verdict is what it is; the first reason is the deciding one."""

    PRIVILEGED_PORT = "privileged-port"
    ADDRESS_NOT_LOCAL = "address-not-local"
    MAPPED_ADDRESS_NOT_LOCAL = "mapped-address-not-local"
    ADDRESS_NOT_PRESENT = "address-not-present"
    ADDRESS_TENTATIVE = "address-tentative"
    ADDRESS_ON_OTHER_DEVICE = "address-on-other-device"
    MULTICAST_ON_TCP = "multicast-on-tcp"
    MAPPED_ON_V6ONLY = "mapped-on-v6only"
    SCOPE_NEEDED = "scope-needed"
    PORT_FREE = "port-free"
    AUTOBIND = "autobind"
    PORTS_EXHAUSTED = "ports-exhausted"
    PINNED_ELSEWHERE = "pinned-elsewhere"
    SHARED_REUSEADDR = "shared-reuseaddr"
    SHARED_REUSEPORT = "shared-reuseport"
    NO_OVERLAP = "no-overlap"
    OVERLAP = "overlap"
    DUAL_STACK_OVERLAP = "dual-stack-overlap"
    REUSEPORT_OWNER_DIFFERS = "reuseport-owner-differs"
    LISTENER_BLOCKS_REUSEADDR = "listener-blocks-reuseaddr"
    LISTENER_NEEDS_REUSEPORT = "listener-needs-reuseport"
    EXISTING_LACKS_REUSEADDR = "existing-lacks-reuseaddr"
    EXISTING_LACKS_REUSEPORT = "existing-lacks-reuseport"
    NO_SHARING_OPTION = "no-sharing-option"
    UDP_NEEDS_SHARING = "udp-needs-sharing"
    MORE_BLOCKERS = "more-blockers"
    FASTPATH_MAY_ACCEPT = "fastpath-may-accept"
    FASTPATH_ACCEPTS = "fastpath-accepts"
    DEPENDS_ON_HIDDEN = "depends-on-hidden"


class ActionKind(str, enum.Enum):
    """Something that would make the bind work (or, with several blockers, clear some of them)."""

    STOP_PROCESS = "stop-process"
    STOP_UNKNOWN_PROCESS = "stop-unknown-process"
    WAIT = "wait"
    SET_OPTION = "set-option"
    RUN_AS_USER = "run-as-user"
    USE_ANOTHER_PORT = "use-another-port"
    ADD_ADDRESS = "add-address"
    SET_SYSCTL = "set-sysctl"
    GRANT_CAPABILITY = "grant-capability"
    ADD_SCOPE_ID = "add-scope-id"
    USE_UNICAST_ADDRESS = "use-unicast-address"
    USE_UDP = "use-udp"
    USE_IPV4_SOCKET = "use-ipv4-socket"


class UncertaintyCode(str, enum.Enum):
    """Why the model cannot answer decisively (linux-bind-rules.md §4)."""

    FASTPATH = "fastpath"
    UDP_PATH = "udp-path"
    OWNER_CHANGED = "owner-changed"
    HIDDEN_FLAGS = "hidden-flags"
    BOUND_INVISIBLE = "bound-invisible"


class BsdNote(str, enum.Enum):
    """Where Linux differs from the BSD behaviour most advice describes (linux-bind-rules.md §6)."""

    PRIVILEGED_PORTS = "privileged-ports"
    IPV4_LOCAL_ADDRESS = "ipv4-local-address"
    IPV6_V6ONLY_DEFAULT = "ipv6-v6only-default"
    DUAL_STACK = "dual-stack"
    TCP_REUSEADDR = "tcp-reuseaddr"
    TCP_REUSEPORT = "tcp-reuseport"
    REUSEADDR_NO_OVERRIDE = "reuseaddr-no-override"
    UDP_REUSEADDR = "udp-reuseaddr"
    UDP_REUSEPORT = "udp-reuseport"


# The parameters of each code, in the order JSON shows them.
PARAMETERS: dict[enum.Enum, tuple[str, ...]] = {
    ReasonCode.PRIVILEGED_PORT: ("port", "unprivileged_port_start"),
    ReasonCode.ADDRESS_NOT_LOCAL: ("address",),
    ReasonCode.MAPPED_ADDRESS_NOT_LOCAL: ("address",),
    ReasonCode.ADDRESS_NOT_PRESENT: ("address",),
    ReasonCode.ADDRESS_TENTATIVE: ("address",),
    ReasonCode.ADDRESS_ON_OTHER_DEVICE: ("address", "device"),
    ReasonCode.MULTICAST_ON_TCP: ("address",),
    ReasonCode.MAPPED_ON_V6ONLY: ("address",),
    ReasonCode.SCOPE_NEEDED: ("address",),
    ReasonCode.PORT_FREE: ("proto", "port", "listen"),
    ReasonCode.AUTOBIND: ("proto",),
    ReasonCode.PORTS_EXHAUSTED: ("proto", "low", "high", "reserved"),
    ReasonCode.PINNED_ELSEWHERE: ("proto", "port", "count", "listen"),
    ReasonCode.SHARED_REUSEADDR: ("proto", "port", "listen"),
    ReasonCode.SHARED_REUSEPORT: ("proto", "port", "listen"),
    ReasonCode.NO_OVERLAP: ("proto", "port", "count", "address", "listen"),
    ReasonCode.OVERLAP: ("socket", "port"),
    ReasonCode.DUAL_STACK_OVERLAP: (),
    ReasonCode.REUSEPORT_OWNER_DIFFERS: ("existing_uid", "new_uid"),
    ReasonCode.LISTENER_BLOCKS_REUSEADDR: (),
    ReasonCode.LISTENER_NEEDS_REUSEPORT: (),
    ReasonCode.EXISTING_LACKS_REUSEADDR: ("state", "timewait"),
    ReasonCode.EXISTING_LACKS_REUSEPORT: (),
    ReasonCode.NO_SHARING_OPTION: (),
    ReasonCode.UDP_NEEDS_SHARING: (),
    ReasonCode.MORE_BLOCKERS: ("count",),
    ReasonCode.FASTPATH_MAY_ACCEPT: ("socket", "count"),
    ReasonCode.FASTPATH_ACCEPTS: ("proto", "port", "uid", "address", "listen"),
    ReasonCode.DEPENDS_ON_HIDDEN: ("socket", "count"),
    ActionKind.STOP_PROCESS: ("pid", "name", "workers", "other_pids"),
    ActionKind.STOP_UNKNOWN_PROCESS: ("address", "port"),
    ActionKind.WAIT: ("until", "seconds"),
    ActionKind.SET_OPTION: ("option", "on", "value", "pids", "if_existing_has_it"),
    ActionKind.RUN_AS_USER: ("uid", "reuseport"),
    ActionKind.USE_ANOTHER_PORT: ("at_least",),
    ActionKind.ADD_ADDRESS: ("address", "family"),
    ActionKind.SET_SYSCTL: ("name", "value", "current"),
    ActionKind.GRANT_CAPABILITY: ("capability",),
    ActionKind.ADD_SCOPE_ID: ("address",),
    ActionKind.USE_UNICAST_ADDRESS: (),
    ActionKind.USE_UDP: (),
    ActionKind.USE_IPV4_SOCKET: ("address",),
    UncertaintyCode.FASTPATH: (),
    UncertaintyCode.UDP_PATH: (),
    UncertaintyCode.OWNER_CHANGED: ("socket", "count"),
    UncertaintyCode.HIDDEN_FLAGS: ("socket", "count", "options", "why"),
    UncertaintyCode.BOUND_INVISIBLE: (),
}

# Values a parameter may leave out (everything else is required).
_DEFAULTS: dict[str, Any] = {
    "workers": (),
    "other_pids": (),
    "pids": (),
    "value": True,
    "if_existing_has_it": False,
    "reuseport": False,
    "at_least": None,
    "seconds": None,
    "current": None,
    "count": 1,
}


@dataclass_lite(frozen=True)
class Coded:
    """One code with its parameters (hashable: list-like values are tuples)."""

    code: ReasonCode | ActionKind | UncertaintyCode
    args: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, name: str) -> Any:
        for key, value in self.args:
            if key == name:
                return value
        raise KeyError(name)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.args)


def _make(code: ReasonCode | ActionKind | UncertaintyCode, params: dict[str, Any]) -> Coded:
    names = PARAMETERS[code]
    unknown = set(params) - set(names)
    if unknown:
        raise TypeError(f"{code.value} takes no parameter {', '.join(sorted(unknown))}")
    args = []
    for name in names:
        if name in params:
            value = params[name]
        elif name in _DEFAULTS:
            value = _DEFAULTS[name]
        else:
            raise TypeError(f"{code.value} needs the parameter {name}")
        args.append((name, tuple(value) if isinstance(value, list) else value))
    return Coded(code, tuple(args))


def reason(code: ReasonCode, **params: Any) -> Coded:
    return _make(code, params)


def action(kind: ActionKind, **params: Any) -> Coded:
    return _make(kind, params)


def uncertainty(code: UncertaintyCode, **params: Any) -> Coded:
    return _make(code, params)


__all__ = [
    "PARAMETERS",
    "ActionKind",
    "BsdNote",
    "Coded",
    "ReasonCode",
    "UncertaintyCode",
    "action",
    "reason",
    "uncertainty",
]
