"""``kill PORT`` as a library call: free a port by signalling exactly the processes that hold it.

Two steps that can be taken apart: :func:`plan_kill` lists the targets (one ``who_is_on()`` of the port:
every holder of its listening and bound sockets, with ``include_clients`` the processes holding
connections from it, never one found by a remote port) and decides which may be signalled
(:mod:`portscope.rules.kill`); :func:`execute_plan` opens each target as a pidfd, checks that it is
still the process the listing saw (its start time, and that it still holds one of the sockets) and
that it may be signalled, sends the signal through the pidfd, waits for the exits by polling the
pidfds, escalates to SIGKILL, and looks at the port again. :func:`kill_port` is both, with a
``confirm`` callback between them. :func:`close_connection` aborts one TCP flow (SOCK_DESTROY).

No process-wide state is changed (no signal handler, no GC setting): library users in threads may
call these.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
import signal as signal_module
import time
from collections.abc import Callable
from dataclasses import field, replace

from portscope.commands.places import Places
from portscope.commands.who import (
    BOUND_STATES,
    ProcessOnPort,
    Unheld,
    UnheldSocket,
    WhoResult,
    WhoTarget,
    build_query,
    parse_target,
    socket_matches,
    who_is_on,
)
from portscope.engine.snapshot import snapshot
from portscope.errors import SourceError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.endpoint import parse_endpoint
from portscope.model.query import ALL_NAMESPACES, PortRange, Query
from portscope.model.records import Holder, Process, Proto, Snapshot, Socket, State
from portscope.rules.kill import (
    Caller,
    Candidate,
    ContainerRef,
    Decision,
    KillRole,
    Refusal,
    decide,
    service_unit,
    socket_unit,
)
from portscope.sources import terminate
from portscope.sources.procinfo import _read_bytes

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 86400.0
KILL_WAIT = 3.0  # seconds to wait for SIGKILL to take effect (a process in uninterruptible sleep may lag)
CONTAINER_FORWARDS = frozenset({"docker-proxy", "conmon", "rootlessport", "dockerd"})


class Outcome(str, enum.Enum):
    """What became of one target (the values are the JSON interface)."""

    EXITED = "exited"  # gone after the first signal (or before it: see TargetResult.identity)
    KILLED = "killed"  # gone after SIGKILL
    SURVIVED = "survived"  # still running at the end
    DENIED = "denied"  # not ours to signal (EPERM), or its holder is hidden from us
    REFUSED = "refused"  # a guard said no, or it no longer holds the port
    WOULD_SIGNAL = "would-signal"  # --dry-run


class KillVerdict(str, enum.Enum):
    """The answer of a kill, which the command line turns into an exit status."""

    FREED = "freed"  # every target is gone and nothing listens on the port: 0
    WOULD_SIGNAL = "would-signal"  # dry run, something to signal: 0
    NOTHING = "nothing"  # nothing to kill on the port (or, dry run, nothing that would be signalled): 1
    REFUSED = "refused"  # a guard refused, or the signals were not confirmed: 2
    FAILED = "failed"  # a target survived or could not be signalled, or the port is still held: 5


# ---------------------------------------------------------------------------------------------------
# Signals


def parse_signal(value: int | str) -> signal_module.Signals:
    """``TERM``, ``SIGTERM``, ``term``, ``15``: a signal that can be sent (not 0)."""
    if isinstance(value, signal_module.Signals):
        return value
    text = str(value).strip()
    try:
        if text.isascii() and text.isdigit():
            number = int(text)
            if number not in signal_module.valid_signals() or number == 0:
                raise ValueError
            return signal_module.Signals(number)
        name = text.upper()
        return signal_module.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (ValueError, KeyError):
        raise UsageError(f"unknown signal '{text}' (a name such as TERM, INT, HUP, KILL, or a number)") from None


def signal_name(signum: int) -> str:
    try:
        return signal_module.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


# ---------------------------------------------------------------------------------------------------
# The plan


@dataclass_lite(frozen=True, slots=True)
class KillTarget:
    """One process the kill is about, with the guards' decision."""

    process: Process
    role: KillRole
    unit: str | None  # the systemd unit (service or scope) it runs in
    container: ContainerRef | None  # the container it runs in, or (a forwarder) forwards the port to
    sockets: tuple[tuple[int, int], ...]  # (inode, fd) it held on the port: what the identity check looks for
    decision: Decision


@dataclass_lite(frozen=True)
class KillPlan:
    target: WhoTarget
    netns: str | None
    who: WhoResult  # the port as it was listed
    targets: tuple[KillTarget, ...]  # holders first, then clients (with include_clients)
    hidden: tuple[UnheldSocket, ...]  # listening or bound sockets whose holders we may not see
    clients_left: tuple[Process, ...]  # processes with connections from the port, not targets
    signal: signal_module.Signals
    timeout: float
    escalate: bool
    include_clients: bool
    force: bool
    dry_run: bool

    @property
    def refused(self) -> bool:
        """A holder of the port is refused: nothing is signalled."""
        return any(t.role is KillRole.HOLDER and not t.decision.signal for t in self.targets)

    @property
    def to_signal(self) -> tuple[KillTarget, ...]:
        return tuple(t for t in self.targets if t.decision.signal)

    @property
    def nothing(self) -> bool:
        return not self.targets and not self.hidden


def _caller(proc_root: str) -> Caller:
    lineage = terminate.caller_lineage(proc_root)
    unit = None
    data = _read_bytes(f"{proc_root}/self/cgroup")
    if data:
        from portscope.sources.lineage import pick_cgroup_path

        unit, _ = service_unit(pick_cgroup_path(data.decode("utf-8", "surrogateescape")))
    return Caller(pid=lineage[0], ancestors=frozenset(lineage[1:]), unit=unit)


def _container_ref(info) -> ContainerRef | None:
    if info is None:
        return None
    return ContainerRef(info.runtime, info.id, getattr(info, "name", None), info.pod, getattr(info, "namespace", None))


def _kernel_thread(pid: int, proc_root: str) -> bool:
    data = _read_bytes(f"{proc_root}/{pid}/stat")
    try:
        return bool(data) and terminate.is_kernel_thread(data)
    except SourceError:  # unreadable or vanished: the identity check decides later
        return False


class _Facts:
    """Reads what the guards need, each fact once per run."""

    def __init__(self, proc_root: str) -> None:
        self.proc_root = proc_root
        self.places = Places(proc_root=proc_root)
        self.socket_units: list[str] = []  # .socket units found on this port

    def listener_pairs(self, entry: ProcessOnPort) -> tuple[tuple[int, int], ...]:
        wanted = {listener.socket.inode for listener in entry.listeners}
        pairs = [(inode, fd) for inode, fds in entry.fds if (inode in wanted or not wanted) for fd in fds]
        return tuple(pairs)

    def activation_units(self, entry: ProcessOnPort, unit: str) -> tuple[str, ...]:
        """The .socket units that passed this service process its listeners (systemd socket activation)."""
        from portscope.sources.forwarders import activated_service, read_facts

        facts = read_facts(entry.process.pid, self.proc_root)
        if facts is None:
            return ()
        found = []
        fds = dict(entry.fds)
        for listener in entry.listeners:
            sock = listener.socket
            for fd in fds.get(sock.inode or -1, ()):
                forward = activated_service(facts, fd, (sock.local_address, sock.local_port))
                if forward is not None:
                    found.append(socket_unit(unit, forward.detail))
        return tuple(dict.fromkeys(found))

    def forwards_to(self, entry: ProcessOnPort) -> ContainerRef | None:
        holder = Holder(entry.process, tuple(fd for _, fds in entry.fds for fd in fds))
        for listener in entry.listeners:
            forward = self.places.forward(listener.socket, (holder,))
            if forward is not None and forward.kind in CONTAINER_FORWARDS and forward.container is not None:
                return _container_ref(forward.container)
        return None

    def candidate(self, entry: ProcessOnPort, role: KillRole) -> tuple[Candidate, str | None, ContainerRef | None]:
        process, lineage = entry.process, entry.lineage
        cgroup = lineage.cgroup if lineage else None
        unit, unit_user = service_unit(cgroup)
        container = None
        if lineage is not None and lineage.container is not None and cgroup:
            container = _container_ref(self.places.index.for_cgroup(cgroup))
        forwards_to = self.forwards_to(entry) if role is KillRole.HOLDER else None
        manager = process.name == "systemd"
        socket_units: tuple[str, ...] = ()
        if unit is not None and role is KillRole.HOLDER and container is None:
            socket_units = self.activation_units(entry, unit)
            self.socket_units.extend(socket_units)
        candidate = Candidate(
            pid=process.pid,
            role=role,
            kernel_thread=_kernel_thread(process.pid, self.proc_root),
            service_manager=manager,
            unit=unit,
            unit_user=unit_user,
            socket_units=socket_units,
            container=container,
            forwards_to=forwards_to,
        )
        return candidate, lineage.unit if lineage else None, forwards_to or container


def plan_kill(
    target: WhoTarget | str,
    *,
    signal: int | str = signal_module.SIGTERM,
    timeout: float = DEFAULT_TIMEOUT,
    escalate: bool = True,
    include_clients: bool = False,
    force: bool = False,
    dry_run: bool = False,
    netns: str | None = None,
    proc_root: str = "/proc",
) -> KillPlan:
    """Who would be signalled to free the port ``target`` (the forms of ``who``), and who is refused why.

    Nothing is signalled here; :func:`execute_plan` does that, checking each target's identity again.
    """
    signum = parse_signal(signal)
    if not 0 <= timeout <= MAX_TIMEOUT:  # NaN too
        raise UsageError(f"the timeout must be 0 to {MAX_TIMEOUT:g} seconds, not {timeout}")
    if isinstance(target, str):
        target = parse_target(target)
    if target.remote:
        raise UsageError("kill never matches a remote port")
    if netns == ALL_NAMESPACES:  # fuser -k's mistake: every process on that port number, host-wide
        raise UsageError("kill works in one network namespace at a time: give --netns NAME, PID, PATH or CONTAINER")
    who = who_is_on(target, netns=netns, proc_root=proc_root)
    facts = _Facts(proc_root)
    entries: list[tuple[ProcessOnPort, KillRole]] = []
    clients_left: list[Process] = []
    for entry in who.processes:
        if entry.listeners:
            entries.append((entry, KillRole.HOLDER))
        elif include_clients:
            entries.append((entry, KillRole.CLIENT))
        else:
            clients_left.append(entry.process)
    gathered = [facts.candidate(entry, role) for entry, role in entries]
    candidates = [c for c, _, _ in gathered]
    if facts.socket_units:  # systemd itself on the port: the socket units its services were given
        units = tuple(dict.fromkeys(facts.socket_units))
        candidates = [replace(c, socket_units=units) if c.service_manager else c for c in candidates]
    decisions = decide(candidates, _caller(proc_root), force=force)
    targets = []
    for (entry, role), (_, unit, container), decision in zip(entries, gathered, decisions, strict=True):
        pairs = (
            facts.listener_pairs(entry)
            if role is KillRole.HOLDER
            else tuple((inode, fd) for inode, fds in entry.fds for fd in fds)
        )
        targets.append(KillTarget(entry.process, role, unit, container, pairs, decision))
    hidden = tuple(u for u in who.unheld if u.reason is Unheld.HIDDEN and u.socket.state in BOUND_STATES)
    return KillPlan(
        target=target,
        netns=netns,
        who=who,
        targets=tuple(targets),
        hidden=hidden,
        clients_left=tuple(clients_left),
        signal=signum,
        timeout=float(timeout),
        escalate=escalate,
        include_clients=include_clients,
        force=force,
        dry_run=dry_run,
    )


# ---------------------------------------------------------------------------------------------------
# Execution


@dataclass_lite(frozen=True, slots=True)
class TargetResult:
    target: KillTarget | None  # None: a socket whose holder is hidden from us
    outcome: Outcome
    signals: tuple[str, ...] = ()  # as sent, in order: ("SIGTERM", "SIGKILL")
    identity: terminate.Identity | None = None  # when not signalled for what the pid names now
    refusal: Refusal | None = None
    hidden: UnheldSocket | None = None


@dataclass_lite(frozen=True)
class KillResult:
    plan: KillPlan
    results: tuple[TargetResult, ...]
    port_free: bool  # no listening or bound socket is left on the port
    left: tuple[Socket, ...]  # every socket on the port afterwards (with --dry-run: now)
    after: Snapshot  # holders of ``left``
    confirmed: bool = True
    read_at: float = field(default_factory=time.time)

    @property
    def verdict(self) -> KillVerdict:
        plan = self.plan
        outcomes = {r.outcome for r in self.results}
        if plan.dry_run:
            return KillVerdict.WOULD_SIGNAL if Outcome.WOULD_SIGNAL in outcomes else KillVerdict.NOTHING
        if plan.nothing:
            return KillVerdict.NOTHING
        if plan.refused or not self.confirmed:
            return KillVerdict.REFUSED
        if outcomes & {Outcome.SURVIVED, Outcome.DENIED} or not self.port_free:
            return KillVerdict.FAILED
        if any(r.outcome is Outcome.REFUSED and r.identity is None for r in self.results):
            return KillVerdict.REFUSED  # a client the guards kept
        return KillVerdict.FREED

    @property
    def new_holders(self) -> tuple[Process, ...]:
        """Processes that hold the port afterwards and were not targets (a restarted service, a new worker)."""
        known = {t.process.pid for t in self.plan.targets}
        seen: dict[int, Process] = {}
        for sock in self.left:
            if sock.state in BOUND_STATES:
                for holder in self.after.holders_of(sock):
                    if holder.process.pid not in known:
                        seen.setdefault(holder.process.pid, holder.process)
        return tuple(seen.values())


def _look_again(plan: KillPlan, proc_root: str) -> tuple[Snapshot, tuple[Socket, ...]]:
    after = snapshot(build_query(plan.target, plan.netns), proc_root=proc_root)
    return after, tuple(s for s in after.sockets if socket_matches(s, plan.target))


def execute_plan(plan: KillPlan, *, confirmed: bool = True, proc_root: str = "/proc") -> KillResult:
    """Signal the plan's targets (nothing if it is refused, a dry run, or not ``confirmed``) and look again."""
    results = [TargetResult(None, Outcome.DENIED, hidden=h) for h in plan.hidden]
    refused = [t for t in plan.targets if not t.decision.signal]
    results += [TargetResult(t, Outcome.REFUSED, refusal=t.decision.refusal) for t in refused]
    if plan.refused or not confirmed:  # nothing is signalled at all
        results += [TargetResult(t, Outcome.REFUSED) for t in plan.to_signal]
    else:
        results += _signal(plan, proc_root)
    port_free, left, after = _after(plan, proc_root)
    return KillResult(plan, tuple(_ordered(plan, results)), port_free, left, after, confirmed=confirmed)


def _after(plan: KillPlan, proc_root: str) -> tuple[bool, tuple[Socket, ...], Snapshot]:
    if plan.dry_run:
        after, left = plan.who.snapshot, plan.who.sockets
    else:
        after, left = _look_again(plan, proc_root)
    return not any(s.state in BOUND_STATES for s in left), left, after


def _ordered(plan: KillPlan, results: list[TargetResult]) -> list[TargetResult]:
    order = {id(t): index for index, t in enumerate(plan.targets)}
    return sorted(results, key=lambda r: order.get(id(r.target), len(order)))


def _signal(plan: KillPlan, proc_root: str) -> list[TargetResult]:
    """Verify every target through its pidfd, then signal, wait, escalate."""
    pidfds: dict[int, int] = {}  # index in to_signal -> pidfd
    stopped: set[int] = set()
    done: dict[int, TargetResult] = {}
    targets = plan.to_signal
    try:
        for index, target in enumerate(targets):
            pidfd = terminate.open_pidfd(target.process.pid)
            if pidfd is None:
                done[index] = TargetResult(target, Outcome.EXITED, identity=terminate.Identity.GONE)
                continue
            pidfds[index] = pidfd
            checked = terminate.check_identity(
                pidfd, target.process.pid, target.process.start_time, target.sockets, proc_root
            )
            if checked.identity is terminate.Identity.RELEASED:
                done[index] = TargetResult(target, Outcome.REFUSED, identity=checked.identity)
            elif checked.identity is not terminate.Identity.SAME:
                done[index] = TargetResult(target, Outcome.EXITED, identity=checked.identity)
            elif checked.kernel_thread:
                done[index] = TargetResult(target, Outcome.REFUSED, refusal=Refusal.KERNEL_THREAD)
            elif terminate.send_signal(pidfd, 0) is terminate.Sent.DENIED:
                done[index] = TargetResult(target, Outcome.DENIED)
            elif checked.stopped:
                stopped.add(index)
        ready = [index for index in range(len(targets)) if index not in done]
        if plan.dry_run:
            for index in ready:
                done[index] = TargetResult(targets[index], Outcome.WOULD_SIGNAL)
            return [done[index] for index in sorted(done)]
        _send_and_wait(plan, targets, ready, pidfds, stopped, done)
        return [done[index] for index in sorted(done)]
    finally:
        terminate.close_all(pidfds.values())


def _send_and_wait(plan, targets, ready, pidfds, stopped, done) -> None:
    first = plan.signal
    sent: dict[int, list[str]] = {}
    for index in ready:
        answer = terminate.send_signal(pidfds[index], first)
        if answer is terminate.Sent.DENIED:
            done[index] = TargetResult(targets[index], Outcome.DENIED)
            continue
        if answer is terminate.Sent.GONE:
            done[index] = TargetResult(targets[index], Outcome.EXITED, identity=terminate.Identity.GONE)
            continue
        sent[index] = [first.name]
        # a stopped process acts on the signal only once continued (systemd sends SIGCONT too)
        wakes = index in stopped and first not in (signal_module.SIGKILL, signal_module.SIGCONT)
        if wakes and terminate.send_signal(pidfds[index], signal_module.SIGCONT) is terminate.Sent.SENT:
            sent[index].append(signal_module.SIGCONT.name)
    first_outcome = Outcome.KILLED if first is signal_module.SIGKILL else Outcome.EXITED
    exited = terminate.wait_for_exits({i: pidfds[i] for i in sent}, plan.timeout)
    for index in exited:
        done[index] = TargetResult(targets[index], first_outcome, tuple(sent[index]))
    survivors = [index for index in sent if index not in exited]
    if survivors and plan.escalate and first is not signal_module.SIGKILL:
        killed = []
        for index in survivors:
            if terminate.send_signal(pidfds[index], signal_module.SIGKILL) is terminate.Sent.SENT:
                sent[index].append(signal_module.SIGKILL.name)
                killed.append(index)
            else:  # it exited between the wait and SIGKILL
                done[index] = TargetResult(targets[index], first_outcome, tuple(sent[index]))
        for index in terminate.wait_for_exits({i: pidfds[i] for i in killed}, KILL_WAIT):
            done[index] = TargetResult(targets[index], Outcome.KILLED, tuple(sent[index]))
    for index in survivors:
        if index not in done:
            done[index] = TargetResult(targets[index], Outcome.SURVIVED, tuple(sent[index]))


def kill_port(
    target: WhoTarget | str,
    *,
    signal: int | str = signal_module.SIGTERM,
    timeout: float = DEFAULT_TIMEOUT,
    escalate: bool = True,
    include_clients: bool = False,
    force: bool = False,
    dry_run: bool = False,
    netns: str | None = None,
    confirm: Callable[[KillPlan], bool] | None = None,
    proc_root: str = "/proc",
) -> KillResult:
    """Free the port ``target``: :func:`plan_kill`, then (if ``confirm`` says yes to a plan with something to
    signal; no ``confirm``: yes) :func:`execute_plan`."""
    plan = plan_kill(
        target,
        signal=signal,
        timeout=timeout,
        escalate=escalate,
        include_clients=include_clients,
        force=force,
        dry_run=dry_run,
        netns=netns,
        proc_root=proc_root,
    )
    confirmed = True
    if confirm is not None and plan.to_signal and not plan.refused and not plan.dry_run:
        confirmed = bool(confirm(plan))
    return execute_plan(plan, confirmed=confirmed, proc_root=proc_root)


# ---------------------------------------------------------------------------------------------------
# One TCP flow: SOCK_DESTROY


class ConnectionOutcome(str, enum.Enum):
    CLOSED = "closed"
    WOULD_CLOSE = "would-close"  # --dry-run
    NOT_FOUND = "not-found"  # no such connection (or it ended before it could be closed)
    UNSUPPORTED = "unsupported"  # the kernel has no SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY)
    DENIED = "denied"  # CAP_NET_ADMIN is missing
    REFUSED = "refused"  # not confirmed


@dataclass_lite(frozen=True)
class ConnectionResult:
    local: str  # as typed
    remote: str
    netns: str | None
    connection: Socket | None  # the socket found (None: none)
    snapshot: Snapshot | None  # its holders
    outcome: ConnectionOutcome
    errno: int | None = None  # the kernel's answer when it was not closed


def _exact_endpoint(text: str, what: str):
    endpoint = parse_endpoint(text, None, proto=Proto.TCP)
    if endpoint.proto is Proto.UDP:
        raise UsageError(f"--connection closes TCP connections; '{text.strip()}' names udp")
    if endpoint.address is None:
        raise UsageError(f"--connection needs the {what} address and port exactly: '{text.strip()}' has no address")
    address = endpoint.address
    return getattr(address, "ipv4_mapped", None) or address, endpoint.ports.low


def _plain(address: str | None):
    if address is None:
        return None
    parsed = ipaddress.ip_address(address)
    return getattr(parsed, "ipv4_mapped", None) or parsed


def close_connection(
    local: str,
    remote: str,
    *,
    netns: str | None = None,
    dry_run: bool = False,
    confirm: Callable[[Socket, Snapshot], bool] | None = None,
) -> ConnectionResult:
    """Abort the TCP connection from ``local`` (ADDR:PORT of this host) to ``remote`` with SOCK_DESTROY, as
    ``ss -K`` does: both ends get an error (ECONNABORTED here, a reset there); no process is signalled."""
    local_address, local_port = _exact_endpoint(local, "local")
    remote_address, remote_port = _exact_endpoint(remote, "remote")
    query = Query(protocols=frozenset({Proto.TCP}), local_ports=(PortRange(local_port, local_port),), netns=netns)

    def find() -> tuple[Snapshot, Socket | None]:
        snap = snapshot(query)
        for sock in snap.sockets:
            if (
                sock.remote_port == remote_port
                and sock.state not in (State.LISTEN, State.BOUND)
                and _plain(sock.local_address) == local_address
                and _plain(sock.remote_address) == remote_address
            ):
                return snap, sock
        return snap, None

    snap, sock = find()
    result = ConnectionResult(local.strip(), remote.strip(), netns, sock, snap, ConnectionOutcome.NOT_FOUND)
    if sock is None:
        return result
    if dry_run:
        return replace(result, outcome=ConnectionOutcome.WOULD_CLOSE)
    if confirm is not None and not confirm(sock, snap):
        return replace(result, outcome=ConnectionOutcome.REFUSED)
    from portscope.sources import netns as netns_module

    target = netns_module.resolve(netns) if netns else None
    with netns_module.entered(target):
        code = terminate.destroy_socket(sock)
    if code == 0:
        return replace(result, outcome=ConnectionOutcome.CLOSED)
    outcome = {
        errno.EOPNOTSUPP: ConnectionOutcome.UNSUPPORTED,
        errno.EPERM: ConnectionOutcome.DENIED,
        errno.EACCES: ConnectionOutcome.DENIED,
        errno.ENOENT: ConnectionOutcome.NOT_FOUND,
    }.get(code)
    if outcome is None:
        raise OSError(code, f"SOCK_DESTROY: {os.strerror(code)}")
    return replace(result, outcome=outcome, errno=code)
