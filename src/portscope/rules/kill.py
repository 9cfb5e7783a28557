"""Which processes ``kill PORT`` may signal, as decisions over facts the command layer gathered.

Pure: no system is read here. The guards, in order:

- never PID 1, a kernel thread, portscope itself or one of its ancestors (the shell that runs it),
  nor a service manager (systemd, also ``systemd --user``): not even with ``--force``;
- unless ``--force``: not a process of a systemd service (its manager would restart it: the advice
  is ``systemctl stop UNIT``, with the ``.socket`` unit when the port was passed by socket activation),
  not a container's process, and not a forwarder that holds the port for a container (docker-proxy,
  conmon, rootlessport): the advice is the runtime's own stop command;
- all or nothing: when a process that holds the port (a listener or a bound socket) is refused, the
  port's other holders are not signalled either, since killing them would not free the port.

A unit shared with portscope itself (a login without logind puts shells in ``ssh.service``) is the
caller's own session, not a service: it is not guarded.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence

from portscope.model.dataclass_lite import dataclass_lite


class KillRole(str, enum.Enum):
    HOLDER = "holder"  # holds a listening or bound socket on the port
    CLIENT = "client"  # holds only connections from the port (added with --include-clients)


class Refusal(str, enum.Enum):
    """Why a process is not signalled (the values are the JSON interface)."""

    PID_1 = "pid-1"
    KERNEL_THREAD = "kernel-thread"
    CALLER = "caller"
    CALLER_ANCESTOR = "caller-ancestor"
    SERVICE_MANAGER = "service-manager"
    SYSTEMD_UNIT = "systemd-unit"
    CONTAINER = "container"
    FORWARDER = "forwarder"
    PORT_HELD_BY_REFUSED = "port-held-by-refused"


FORCEABLE = frozenset({Refusal.SYSTEMD_UNIT, Refusal.CONTAINER, Refusal.FORWARDER})


@dataclass_lite(frozen=True, slots=True)
class ContainerRef:
    runtime: str  # docker, podman, containerd, cri-o, kubernetes, lxc, systemd-nspawn, container
    id: str
    name: str | None = None
    pod: str | None = None
    namespace: str | None = None  # Kubernetes namespace


class AdviceKind(str, enum.Enum):
    STOP_UNITS = "stop-units"  # systemctl stop UNITS (as the user manager of user_uid when set)
    STOP_CONTAINER = "stop-container"  # the runtime's own stop command
    FIND_SOCKET_UNIT = "find-socket-unit"  # systemd listens itself: which .socket unit is not known here
    FORCE = "force"  # --force signals it anyway


@dataclass_lite(frozen=True, slots=True)
class Advice:
    kind: AdviceKind
    units: tuple[str, ...] = ()
    user_uid: int | None = None
    container: ContainerRef | None = None


@dataclass_lite(frozen=True, slots=True)
class Candidate:
    """What the guards need to know about one process on the port."""

    pid: int
    role: KillRole
    kernel_thread: bool = False
    service_manager: bool = False  # systemd itself (PID 1 or a user's manager)
    unit: str | None = None  # the systemd .service it runs in
    unit_user: int | None = None  # the uid whose user manager runs that unit (None: a system unit)
    socket_units: tuple[str, ...] = ()  # .socket units that passed the port's socket to it (or, for systemd, on)
    container: ContainerRef | None = None  # the container it runs in
    forwards_to: ContainerRef | None = None  # the container it forwards the port to


@dataclass_lite(frozen=True, slots=True)
class Caller:
    pid: int
    ancestors: frozenset[int]
    unit: str | None = None  # the .service portscope itself runs in


@dataclass_lite(frozen=True, slots=True)
class Decision:
    pid: int
    refusal: Refusal | None
    advice: tuple[Advice, ...] = ()

    @property
    def signal(self) -> bool:
        return self.refusal is None


# ---------------------------------------------------------------------------------------------------
# Facts from names: systemd units in cgroup paths, socket units of services

_USER_MANAGER = re.compile(r"^user@(\d+)\.service$")


def service_unit(cgroup: str | None) -> tuple[str | None, int | None]:
    """The systemd ``.service`` a cgroup path puts a process in, and the uid of the user manager that runs
    it (``user@UID.service/app.slice/foo.service``); (None, None) for a scope (a login session, a transient
    scope, a container) or no unit."""
    if not cgroup:
        return None, None
    segments = [s for s in cgroup.split("/") if s]
    for index in range(len(segments) - 1, -1, -1):
        segment = segments[index]
        if segment.endswith(".scope"):
            return None, None
        if segment.endswith(".service"):
            unit = _unescape(segment)
            user = next((_USER_MANAGER.match(s) for s in reversed(segments[:index]) if _USER_MANAGER.match(s)), None)
            return unit, int(user.group(1)) if user else None
    return None, None


def _unescape(text: str) -> str:
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def socket_unit(service: str, fd_name: str | None) -> str:
    """The .socket unit that activated ``service``: the fd's name when systemd gave the default one (the socket
    unit's name), else the service's own name (``foo@0-1-2.service``, from ``Accept=yes``: ``foo.socket``)."""
    if fd_name and fd_name.endswith(".socket"):
        return fd_name
    base = service.removesuffix(".service")
    return base.split("@", 1)[0] + ".socket"


# ---------------------------------------------------------------------------------------------------
# The decision


def _unit_advice(units: Iterable[str], user: int | None) -> Advice:
    return Advice(AdviceKind.STOP_UNITS, tuple(dict.fromkeys(units)), user_uid=user)


def _manager_advice(candidate: Candidate) -> tuple[Advice, ...]:
    if candidate.container is not None:  # a container's init: the container is what to stop
        return (Advice(AdviceKind.STOP_CONTAINER, container=candidate.container),)
    if candidate.socket_units:
        return (_unit_advice(candidate.socket_units, candidate.unit_user),)
    return (Advice(AdviceKind.FIND_SOCKET_UNIT, user_uid=candidate.unit_user),)


def _decide_one(candidate: Candidate, caller: Caller, force: bool) -> Decision:
    pid = candidate.pid
    if pid == 1:
        return Decision(pid, Refusal.PID_1, _manager_advice(candidate) if candidate.service_manager else ())
    if candidate.kernel_thread:
        return Decision(pid, Refusal.KERNEL_THREAD)
    if pid == caller.pid:
        return Decision(pid, Refusal.CALLER)
    if pid in caller.ancestors:
        return Decision(pid, Refusal.CALLER_ANCESTOR)
    if candidate.service_manager:
        return Decision(pid, Refusal.SERVICE_MANAGER, _manager_advice(candidate))
    if force:
        return Decision(pid, None)
    forced = Advice(AdviceKind.FORCE)
    if candidate.forwards_to is not None:
        stop = Advice(AdviceKind.STOP_CONTAINER, container=candidate.forwards_to)
        return Decision(pid, Refusal.FORWARDER, (stop, forced))
    if candidate.container is not None:
        stop = Advice(AdviceKind.STOP_CONTAINER, container=candidate.container)
        return Decision(pid, Refusal.CONTAINER, (stop, forced))
    if candidate.unit is not None and candidate.unit != caller.unit:
        units = (*candidate.socket_units, candidate.unit)
        return Decision(pid, Refusal.SYSTEMD_UNIT, (_unit_advice(units, candidate.unit_user), forced))
    return Decision(pid, None)


def decide(candidates: Sequence[Candidate], caller: Caller, *, force: bool = False) -> tuple[Decision, ...]:
    """One decision per candidate, in the same order."""
    decisions = [_decide_one(c, caller, force) for c in candidates]
    holders_refused = any(
        d.refusal is not None for c, d in zip(candidates, decisions, strict=True) if c.role is KillRole.HOLDER
    )
    if holders_refused:
        decisions = [
            Decision(d.pid, Refusal.PORT_HELD_BY_REFUSED) if c.role is KillRole.HOLDER and d.signal else d
            for c, d in zip(candidates, decisions, strict=True)
        ]
    return tuple(decisions)
