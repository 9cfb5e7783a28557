"""can-bind as a library call: would bind() (and listen()) of ADDR:PORT succeed here, and if not, why.

:func:`check_bind` turns a :class:`BindRequest` (user-level text) into a :class:`BindReport`: it parses
the target, gathers facts in the target namespace (:mod:`portscope.sources.bindfacts`), runs the pure
model (:mod:`portscope.rules.bind`), and with ``probe`` settles the bind stage with a trial bind
(:mod:`portscope.sources.probe`). The report is data (codes); the renderer makes the words.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import replace

from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.endpoint import Target, parse_target
from portscope.model.query import ALL_NAMESPACES, parse_user
from portscope.model.records import Family, Proto, State
from portscope.rules.bind import BindVerdict, Namespace, NewSocket, Owner, Stage, Verdict, autobind_ports, decide
from portscope.rules.codes import BsdNote, Coded, UncertaintyCode
from portscope.sources.probe import ProbeResult

__all__ = ["BindReport", "BindRequest", "check_bind", "check_binds", "new_socket_for"]


@dataclass_lite(frozen=True)
class BindRequest:
    target: str
    udp: bool = False
    reuseaddr: bool = False
    reuseport: bool = False
    v6only: bool | None = None  # None: net.ipv6.bindv6only of the target namespace
    device: str | None = None
    freebind: bool = False
    user: str | None = None  # name or uid; None: the current user
    listen: bool = True
    probe: bool = False
    netns: str | None = None
    family: Family | None = None  # -4/-6: which wildcard ":PORT" means, which address a name resolves to


@dataclass_lite(frozen=True)
class BindReport:
    request: BindRequest
    new: NewSocket
    resolved_from: str | None  # the host name that was resolved to new.address
    device_name: str | None
    verdict: Verdict  # the settled answer (the probe's, where it ran)
    errno: str | None
    stage: Stage | None
    rule: str
    blockers: tuple[Owner, ...]
    reasons: tuple[Coded, ...]  # codes of portscope.rules.codes; portscope.render.bind_words words them
    actions: tuple[Coded, ...]
    bsd_note: BsdNote | None
    uncertainty: tuple[Coded, ...]
    model: BindVerdict
    probe: ProbeResult | None
    probe_agrees: bool | None  # None: no probe, or the model was uncertain
    netns: int | None
    warnings: tuple[str, ...] = ()


def _resolve_host(target: Target, family: Family | None) -> tuple[Family, str]:
    af = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6, None: socket.AF_UNSPEC}[family]
    try:
        infos = socket.getaddrinfo(target.hostname, None, af, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot resolve '{target.hostname}': {getattr(exc, 'strerror', None) or exc}") from None
    for info_family, _, _, _, sockaddr in infos:
        if info_family == socket.AF_INET:
            return Family.IPV4, sockaddr[0]
        if info_family == socket.AF_INET6:
            return Family.IPV6, sockaddr[0].split("%")[0]
    raise UsageError(f"'{target.hostname}' has no IPv4 or IPv6 address")


def _interface_index(name: str, interfaces: dict[str, int], what: str) -> int:
    if name in interfaces:
        return interfaces[name]
    if name.isascii() and name.isdigit() and int(name) in interfaces.values():
        return int(name)
    known = ", ".join(sorted(interfaces)) or "none"
    raise UsageError(f"unknown interface '{name}' for {what} in the target namespace (known: {known})")


def new_socket_for(request: BindRequest, ns_facts, services=None) -> tuple[NewSocket, str | None]:
    """The NewSocket a request describes, in a namespace described by ``ns_facts``."""
    from portscope.sources.services import load_services

    proto = Proto.UDP if request.udp else Proto.TCP
    target = parse_target(request.target, proto, services if services is not None else load_services())
    family, address, resolved_from = target.family, target.address, None
    if request.family is not None and family is not None and family is not request.family:
        raise UsageError(f"'{request.target}' is an {family.value} address, but {request.family.value} was asked for")
    if target.hostname is not None:
        family, address = _resolve_host(target, request.family)
        resolved_from = target.hostname
    elif address is None:
        family = request.family or (Family.IPV6 if ns_facts.ipv6_enabled else Family.IPV4)
        address = "::" if family is Family.IPV6 else "0.0.0.0"
    if family is Family.IPV4 and request.v6only is not None:
        flag = "--v6only" if request.v6only else "--no-v6only"
        raise UsageError(f"{flag} sets IPV6_V6ONLY, an IPv6 socket option; {address} is IPv4")
    ns = ns_facts.namespace
    device = _interface_index(request.device, ns_facts.interfaces, "--device") if request.device is not None else 0
    scope_id = _interface_index(target.scope, ns_facts.interfaces, "the scope id") if target.scope else 0
    me = os.geteuid()
    uid = parse_user(request.user) if request.user is not None else me
    if uid == me:
        from portscope.sources.bindfacts import CAP_NET_BIND_SERVICE, has_capability

        privileged = has_capability(CAP_NET_BIND_SERVICE)
    else:
        privileged = uid == 0  # another user: root holds every capability, others none (file caps not seen)
    v6only = ns.bindv6only if request.v6only is None else request.v6only
    new = NewSocket(
        proto=proto,
        family=family,
        address=address,
        port=target.port,
        scope_id=scope_id,
        reuseaddr=request.reuseaddr,
        reuseport=request.reuseport,
        v6only=v6only if family is Family.IPV6 else False,
        device=device,
        freebind=request.freebind,
        uid=uid,
        privileged=privileged,
        listen=request.listen and proto is Proto.TCP,
    )
    return new, resolved_from


def _settle(model: BindVerdict, probe: ProbeResult | None, new: NewSocket):
    """The final (verdict, errno, stage, agrees): the kernel's bind() answer wins over the model's."""
    if probe is None or probe.error is not None:
        return model.verdict, model.errno, model.stage, None
    if probe.errno is not None:
        verdict, errno, stage = Verdict.NO, probe.errno, Stage.BIND
    elif model.verdict is Verdict.NO and model.stage is Stage.LISTEN:
        verdict, errno, stage = Verdict.NO, model.errno, Stage.LISTEN  # bind() cannot settle listen()
    else:
        verdict, errno, stage = Verdict.YES, None, None
    if model.verdict is Verdict.UNCERTAIN:
        agrees = None
    else:
        model_bind_errno = model.errno if model.stage is Stage.BIND else None
        agrees = model_bind_errno == probe.errno
    return verdict, errno, stage, agrees


def check_bind(request: BindRequest) -> BindReport:
    """Evaluate one can-bind request (the library entry point of the command)."""
    return check_binds([request])[0]


def check_binds(requests: Sequence[BindRequest]) -> list[BindReport]:
    """Evaluate several requests; facts are gathered once per namespace and protocol, all ports at once.

    Requests should name distinct ports: a probe binds for an instant, and a TCP probe updates the
    port's fast-path cache, which could change the answer for a later request on the same port.
    """
    from portscope.sources import bindfacts as facts
    from portscope.sources import netns
    from portscope.sources.probe import trial_bind

    reports: dict[int, BindReport] = {}
    by_netns: dict[str | None, list[int]] = {}
    for index, request in enumerate(requests):
        by_netns.setdefault(request.netns, []).append(index)
    for netns_spec, indexes in by_netns.items():
        if netns_spec == ALL_NAMESPACES:
            raise UsageError("can-bind judges one network namespace: give its name, a pid or a path")
        target = netns.resolve(netns_spec) if netns_spec else None
        ns_facts = facts.read_namespace(target)
        news = {i: new_socket_for(requests[i], ns_facts) for i in indexes}
        owner_facts = {}
        namespace = ns_facts.namespace
        for proto in {new.proto for new, _ in news.values()}:
            ports = {new.port for new, _ in news.values() if new.proto is proto}
            if 0 in ports:  # port 0: the range's ports, read in full only when none is free at all
                ports.discard(0)
                used = facts.ports_in_use(proto, *namespace.local_port_range, netns_spec)
                for new, _ in news.values():
                    candidates = autobind_ports(new, namespace) if new.proto is proto and new.port == 0 else []
                    if candidates and all(port in used for port in candidates):
                        ports.update(candidates)
            owner_facts[proto] = facts.read_owners(proto, ports, netns_spec, namespace.udp_table_size)
        decided: dict[int, tuple[NewSocket, tuple[Owner, ...], Namespace, BindVerdict]] = {}
        for i in indexes:
            new, resolved_from = news[i]
            found = owner_facts[new.proto]
            namespace = replace(
                ns_facts.namespace,
                udp_slot_sockets=found.slot_sockets.get(new.port, 0),
                bound_visible=found.snapshot.bound_visible is not False,
            )
            if new.port == 0:
                owners: tuple[Owner, ...] = tuple(
                    b for port in autobind_ports(new, namespace) for b in found.owners.get(port, ())
                )
            else:
                owners = found.owners.get(new.port, ())
            decided[i] = (new, owners, namespace, decide(new, owners, namespace))
        _settle_from_kernel(decided, target)
        for i in indexes:
            new, resolved_from = news[i]
            _, _, namespace, model = decided[i]
            probe = trial_bind(new, target) if requests[i].probe else None
            found = owner_facts[new.proto]
            reports[i] = _report(requests[i], new, resolved_from, namespace, model, probe, ns_facts.inode, found)
    return [reports[i] for i in range(len(requests))]


# What the kernel's own copy of the TCP bind table settles (sources/tcpbind.py)
_KERNEL_SETTLES = frozenset({UncertaintyCode.HIDDEN_FLAGS, UncertaintyCode.FASTPATH, UncertaintyCode.OWNER_CHANGED})


def _settle_from_kernel(decided: dict, target) -> None:
    """Re-decide TCP answers with what the kernel holds: the flags of sockets no holder showed (TIME-WAIT,
    orphans; for TIME-WAIT also where they were inferred from a listener) and each port's SO_REUSEPORT
    fast-path cache. Read only when needed (it loads a BPF iterator: root); without it the answers stand."""
    from portscope.sources import bindfacts as facts
    from portscope.sources.tcpbind import read_tcp_bind_state

    doubtful = [
        i
        for i, (new, owners, _, model) in decided.items()
        if new.proto is Proto.TCP
        and new.port
        and (
            (model.verdict is Verdict.UNCERTAIN and any(d.code in _KERNEL_SETTLES for d in model.uncertainty))
            or any(b.timewait and b.reuseaddr is not None for b in owners)  # inferred from a listener
        )
    ]
    if not doubtful:
        return
    bound = [b for i in doubtful for b in decided[i][1] if b.state is State.BOUND and b.socket and b.socket.cookie]
    cookies = frozenset(b.socket.cookie for b in bound if b.socket)
    pids = frozenset(h.process.pid for b in bound for h in b.holders)
    if any(not b.holders for b in bound):
        pids = frozenset()  # a holder not seen: every process's files
    kernel = read_tcp_bind_state(target, {decided[i][0].port for i in doubtful}, cookies, pids)
    if kernel is None:
        return
    for i in doubtful:
        new, owners, namespace, _ = decided[i]
        owners = facts.with_kernel_flags(owners, kernel.sockets)
        namespace = replace(namespace, tcp_bucket=kernel.buckets.get(new.port))
        decided[i] = (new, owners, namespace, decide(new, owners, namespace))


def _report(request, new, resolved_from, namespace, model, probe, inode, found) -> BindReport:
    verdict, errno, stage, agrees = _settle(model, probe, new)
    failed = verdict is not Verdict.YES
    return BindReport(
        request=request,
        new=new,
        resolved_from=resolved_from,
        device_name=namespace.interface_name(new.device) if new.device else None,
        verdict=verdict,
        errno=errno,
        stage=stage,
        rule=model.rule,
        blockers=model.blockers if failed else (),
        reasons=model.reasons,
        actions=model.actions if failed else (),
        bsd_note=model.bsd_note,
        uncertainty=model.uncertainty if verdict is Verdict.UNCERTAIN else (),
        model=model,
        probe=probe,
        probe_agrees=agrees,
        netns=inode,
        warnings=tuple(w for w in found.snapshot.warnings if "process join" not in w),
    )
