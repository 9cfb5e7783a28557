"""The words of a bind verdict: the model's codes (:mod:`portscope.rules.codes`) as sentences.

Pure text (no I/O); the sentences follow ``linux-bind-rules.md`` §3 and §6. Every code has one entry
in the tables below (a test checks that none is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from portscope.model.notation import format_endpoint
from portscope.model.records import Family, State
from portscope.rules.bind import Owner
from portscope.rules.bind_actions import BlockerGroup, stop_action
from portscope.rules.codes import ActionKind, BsdNote, Coded, ReasonCode, UncertaintyCode


def endpoint(family: Family, address: str, port: int) -> str:
    return format_endpoint(address, port, family)


def _endpoint(address: str, port: int) -> str:
    return endpoint(Family.IPV6 if ":" in address else Family.IPV4, address, port)


def state_name(owner: Owner) -> str:
    if owner.timewait:
        return "TIME-WAIT"
    if owner.state is State.BOUND:
        return "BOUND (bound, not listening)"
    return owner.state.value.upper()


def _pid_list(pids: Sequence[int]) -> str:
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(str(pid) for pid in pids)


def _stop_words(stop: Coded, user: str | None = None) -> str:
    """``pid 9947 python3 (user www) and its 3 workers``: the words of one stop-process target."""
    if user is None:  # as an action: "stop pid 812 (nginx)"
        text = f"pid {stop['pid']} ({stop['name']})"
    else:  # as a description: "pid 812 nginx (user www-data)"
        text = f"pid {stop['pid']} {stop['name']}" + (f" (user {user})" if user else "")
    workers, others = stop["workers"], stop["other_pids"]
    if workers:
        text += f" and its {len(workers)} worker" + ("s" if len(workers) > 1 else "")
    if others:
        text += " and " + _pid_list(others)
    return text


def holders_text(processes: Sequence) -> str:
    """The holders of a socket as one target: the parent process, its workers, other pids."""
    stop = stop_action(processes)
    main = next(p for p in processes if p.pid == stop["pid"])
    return _stop_words(stop, main.user or "")


def processes_text(owner: Owner) -> str:
    if owner.holders:
        return holders_text([h.process for h in owner.holders])
    if owner.timewait:
        return "no process: kernel TIME-WAIT state"
    if owner.socket is not None and owner.socket.inode is None:
        return "no process: orphaned connection"
    return "process not visible"


def describe(owner: Owner) -> str:
    """``LISTEN 0.0.0.0:8080 (pid 812 nginx (user www-data))``"""
    where = endpoint(owner.family, owner.address, owner.port)
    return f"{state_name(owner)} {where} ({processes_text(owner)})"


def _flag(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def owner_flags(owner: Owner) -> str:
    parts = [f"SO_REUSEADDR {_flag(owner.reuseaddr)}", f"SO_REUSEPORT {_flag(owner.reuseport)}"]
    if owner.family is Family.IPV6:
        parts.append(f"IPV6_V6ONLY {_flag(owner.v6only)}")
    if owner.uid is not None and not owner.timewait:
        parts.append(f"uid {owner.uid}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------
# Reasons


def _listen_suffix(proto: str, listen: bool) -> str:
    if proto != "tcp":
        return ""
    return " bind() and listen() succeed." if listen else " bind() succeeds."


def _privileged(port: int, unprivileged_port_start: int) -> str:
    start = unprivileged_port_start
    return (
        f"Ports below {start} (net.ipv4.ip_unprivileged_port_start={start} in this network namespace) need "
        f"CAP_NET_BIND_SERVICE in the namespace's owning user namespace; port {port} is below it. "
        "bind() reports EACCES before it looks at who else holds the port."
    )


def _not_local(address: str, mapped: bool = False) -> str:
    what = f"the IPv4 address {address} inside the v4-mapped address" if mapped else f"{address}"
    return (
        f"{what} is not local: Linux accepts an IPv4 address only if it has a local, broadcast or multicast route "
        "(ip route show table local), unless IP_FREEBIND or net.ipv4.ip_nonlocal_bind=1 is set."
    )


def _port_free(proto: str, port: int, listen: bool) -> str:
    text = f"No {proto.upper()} socket in this network namespace uses port {port}."
    return text + (" bind() and listen() succeed." if proto == "tcp" and listen else "")


def _pinned(proto: str, port: int, count: int, listen: bool) -> str:
    return f"The {count} socket(s) on port {port} are pinned to other interfaces (SO_BINDTODEVICE)." + _listen_suffix(
        proto, listen
    )


def _shared_reuseaddr(proto: str, port: int, listen: bool) -> str:
    if proto != "tcp":
        return "Every overlapping UDP socket has SO_REUSEADDR like the new one, so the port is shared."
    return (
        f"The overlapping socket(s) on port {port} have SO_REUSEADDR like the new one and are not listening, so "
        "Linux lets them share." + _listen_suffix(proto, listen) + " A socket sharing this way can no longer "
        "listen() once another one listens."
    )


def _shared_reuseport(proto: str, port: int, listen: bool) -> str:
    if proto != "tcp":
        return "The overlapping UDP socket(s) have SO_REUSEPORT and the same owner, so the port is shared."
    return (
        f"The overlapping socket(s) on port {port} have SO_REUSEPORT and the same owner (or are in TIME-WAIT), "
        "so they share the port." + _listen_suffix(proto, listen)
    )


def _no_overlap(proto: str, port: int, count: int, address: str, listen: bool) -> str:
    return f"The {count} socket(s) on port {port} use addresses that do not overlap {_endpoint(address, port)}." + (
        _listen_suffix(proto, listen)
    )


def _listed(socket: Owner | None, count: int) -> str:
    if socket is None:
        return "the sockets on this port"
    return describe(socket) + (f" and {count - 1:,} more" if count > 1 else "")


def _addr6(address: str, why: str, device: str | None = None) -> str:
    if why == "tentative":
        return (
            f"{address} exists but is still tentative: IPv6 duplicate address detection has not finished, "
            "or it failed. bind() refuses it with EADDRNOTAVAIL."
        )
    if why == "other-device":
        return (
            f"{address} is a link- or host-scope address on another interface than the bound one ({device}); "
            "with a bound device such addresses must be on that device."
        )
    return f"{address} is not an address of this network namespace (ip -6 addr), so bind() returns EADDRNOTAVAIL."


_DUAL_STACK = (
    "An IPv6 [::] socket without IPV6_V6ONLY covers every IPv4 address too (net.ipv6.bindv6only=0 is the "
    "Linux default), so the IPv4 and IPv6 wildcard binds collide."
)

REASONS: dict[ReasonCode, Callable[..., str]] = {
    ReasonCode.PRIVILEGED_PORT: _privileged,
    ReasonCode.ADDRESS_NOT_LOCAL: lambda address: _not_local(address),
    ReasonCode.MAPPED_ADDRESS_NOT_LOCAL: lambda address: _not_local(address, mapped=True),
    ReasonCode.ADDRESS_NOT_PRESENT: lambda address: _addr6(address, "absent"),
    ReasonCode.ADDRESS_TENTATIVE: lambda address: _addr6(address, "tentative"),
    ReasonCode.ADDRESS_ON_OTHER_DEVICE: lambda address, device: _addr6(address, "other-device", device),
    ReasonCode.MULTICAST_ON_TCP: lambda address: (
        "A TCP socket cannot bind an IPv6 multicast address (bind() returns EINVAL)."
    ),
    ReasonCode.MAPPED_ON_V6ONLY: lambda address: (
        "A v4-mapped address (::ffff:a.b.c.d) cannot be bound on an IPV6_V6ONLY socket: the socket would accept "
        "no IPv4 traffic, so bind() returns EINVAL."
    ),
    ReasonCode.SCOPE_NEEDED: lambda address: (
        "A link-local address needs an interface: give a scope id ([fe80::1%eth0]) or SO_BINDTODEVICE, "
        "otherwise bind() returns EINVAL."
    ),
    ReasonCode.PORT_FREE: _port_free,
    ReasonCode.AUTOBIND: lambda proto: (
        "Port 0 asks the kernel to pick a free port from net.ipv4.ip_local_port_range (reserved ports skipped); "
        "it fails only when the range is exhausted."
    ),
    ReasonCode.PORTS_EXHAUSTED: lambda proto, low, high, reserved: (
        f"Port 0 asks the kernel for a free {proto.upper()} port of net.ipv4.ip_local_port_range ({low}-{high}"
        + (f", {reserved:,} reserved in net.ipv4.ip_local_reserved_ports" if reserved else "")
        + "), and every one it would hand out is taken for this address, so bind() fails with EADDRINUSE."
    ),
    ReasonCode.PINNED_ELSEWHERE: _pinned,
    ReasonCode.SHARED_REUSEADDR: _shared_reuseaddr,
    ReasonCode.SHARED_REUSEPORT: _shared_reuseport,
    ReasonCode.NO_OVERLAP: _no_overlap,
    ReasonCode.OVERLAP: lambda socket, port: f"{describe(socket)} holds an overlapping address on port {port}.",
    ReasonCode.DUAL_STACK_OVERLAP: lambda: _DUAL_STACK,
    ReasonCode.REUSEPORT_OWNER_DIFFERS: lambda existing_uid, new_uid: (
        "Both sockets set SO_REUSEPORT, but SO_REUSEPORT shares a port only between sockets of the same owner "
        f"(uid {existing_uid} there, uid {new_uid} here); root gets no exemption."
    ),
    ReasonCode.LISTENER_BLOCKS_REUSEADDR: lambda: (
        "It is LISTENING. On Linux SO_REUSEADDR never lets a second socket bind next to a listener; use "
        "SO_REUSEPORT on both (same user) or a non-overlapping address."
    ),
    ReasonCode.LISTENER_NEEDS_REUSEPORT: lambda: (
        "It is LISTENING, and a listener shares its port only through SO_REUSEPORT on both sockets."
    ),
    ReasonCode.EXISTING_LACKS_REUSEADDR: lambda state, timewait: (
        f"Both sockets must set SO_REUSEADDR; the existing one ({state.upper()}) did not"
        + (" (a TIME-WAIT socket keeps the flag of the socket it came from)." if timewait else ".")
    ),
    ReasonCode.EXISTING_LACKS_REUSEPORT: lambda: (
        "SO_REUSEPORT shares only between sockets that all set it; the existing one did not."
    ),
    ReasonCode.NO_SHARING_OPTION: lambda: "Neither SO_REUSEADDR nor SO_REUSEPORT lets them share.",
    ReasonCode.UDP_NEEDS_SHARING: lambda: (
        "Both UDP sockets need SO_REUSEADDR, or both need SO_REUSEPORT under the same user."
    ),
    ReasonCode.MORE_BLOCKERS: lambda count: f"{count:,} more socket(s) block it too.",
    ReasonCode.FASTPATH_MAY_ACCEPT: lambda socket, count: (
        f"By the rules this fails with EADDRINUSE (blocked by {_listed(socket, count)}). The kernel may still "
        "accept it: when the last SO_REUSEPORT socket of your uid to bind or listen on this port covered your "
        "address, it skips the conflict check. That depends on bind history the tool cannot see."
    ),
    ReasonCode.FASTPATH_ACCEPTS: lambda proto, port, uid, address, listen: (
        f"The port's SO_REUSEPORT fast path lets it through: the last SO_REUSEPORT socket to bind or listen on "
        f"{proto.upper()} port {port} was owned by uid {uid}, as this one is, on {address}, which covers this "
        "address, so the kernel skips the conflict check" + (" (for bind() and then listen())." if listen else ".")
    ),
    ReasonCode.DEPENDS_ON_HIDDEN: lambda socket, count: (
        f"The answer depends on socket options the tool cannot read from {_listed(socket, count)}."
    ),
}


def _say(table: dict, coded: Coded) -> str:
    return table[coded.code](**coded.params)


def reason_text(coded: Coded) -> str:
    return _say(REASONS, coded)


def explanation(reasons: Iterable[Coded]) -> str:
    return " ".join(reason_text(r) for r in reasons)


# ---------------------------------------------------------------------------------------------------
# Actions

_FLAGS = {
    "SO_REUSEADDR": "--reuseaddr",
    "SO_REUSEPORT": "--reuseport",
    "IP_FREEBIND": "--freebind",
    "IPV6_FREEBIND": "--freebind",
    "SO_BINDTODEVICE": "--device IFNAME",
}


def _set_option(option: str, on: str, value: bool, pids: Sequence[int], if_existing_has_it: bool) -> str:
    if option == "IPV6_V6ONLY":
        if not value:
            return "clear IPV6_V6ONLY (--no-v6only)"
        if on == "new":
            return "set IPV6_V6ONLY on the new [::] socket (--v6only) so it leaves IPv4 alone"
        return "set IPV6_V6ONLY on the existing [::] socket" + (f" ({_pid_list(pids)})" if pids else "")
    if option == "SO_BINDTODEVICE":
        return "pin the new socket to an interface (--device IFNAME) that the existing sockets are not pinned to"
    flag = _FLAGS.get(option)
    same_user = ", same user" if option == "SO_REUSEPORT" else ""
    if on == "new":
        text = f"set {option} on the new socket" + (f" ({flag})" if flag else "")
        if if_existing_has_it:
            text += ": it helps only if the old socket (for TIME-WAIT: its listener) had it too"
        return text
    held = f" (the existing one: {_pid_list(pids)})" if pids else ""
    if on == "both":
        return f"set {option} on both sockets{same_user}{held}"
    return f"set {option} on the existing socket{held}"


def _wait(until: str, seconds: int | None) -> str:
    if until == "time-wait-expires":
        if seconds is not None:
            return f"wait {seconds} s for TIME-WAIT to expire"
        return "wait for TIME-WAIT to expire (at most 60 s)"
    if until == "orphan-closes":
        return "wait for the orphaned connection to close"
    return "wait for duplicate address detection to finish (about 1-2 s after the link is up)"


def _set_sysctl(name: str, value: int, current: int | None) -> str:
    if current is not None:
        return f"lower {name} (now {current}) to {value} or less in this namespace"
    return f"set {name}={value} in this namespace"


def _add_address(address: str, family: str) -> str:
    if family == Family.IPV6.value:
        return f"add {address} to an interface (ip -6 addr add {address}/128 dev IFNAME)"
    return f"add {address} to an interface (ip addr add {address}/32 dev lo)"


ACTIONS: dict[ActionKind, Callable[..., str]] = {
    ActionKind.STOP_PROCESS: lambda **stop: "stop " + _stop_words(Coded(ActionKind.STOP_PROCESS, tuple(stop.items()))),
    ActionKind.STOP_UNKNOWN_PROCESS: lambda address, port: (
        f"stop the process holding {_endpoint(address, port)} (run as root to see it)"
    ),
    ActionKind.WAIT: _wait,
    ActionKind.SET_OPTION: _set_option,
    ActionKind.RUN_AS_USER: lambda uid, reuseport: (
        f"run the new socket as uid {uid}"
        + (" with SO_REUSEPORT (--reuseport)" if reuseport else "")
        + ": SO_REUSEPORT needs the same user"
    ),
    ActionKind.USE_ANOTHER_PORT: lambda at_least: (
        f"use a port >= {at_least}" if at_least is not None else "use another port"
    ),
    ActionKind.ADD_ADDRESS: _add_address,
    ActionKind.SET_SYSCTL: _set_sysctl,
    ActionKind.GRANT_CAPABILITY: lambda capability: (
        f"grant {capability} (setcap {capability.lower()}=+ep PROGRAM, or AmbientCapabilities= in systemd)"
    ),
    ActionKind.ADD_SCOPE_ID: lambda address: f"add the interface: [{address}%IFNAME]",
    ActionKind.USE_UNICAST_ADDRESS: lambda: "bind a unicast address",
    ActionKind.USE_UDP: lambda: "use UDP (--udp) for multicast",
    ActionKind.USE_IPV4_SOCKET: lambda address: f"bind {address} on an AF_INET socket",
}

# Removing blockers: each is needed for its own sockets; the other actions are alternatives ("or ...").
_REMOVALS = frozenset({ActionKind.STOP_PROCESS, ActionKind.STOP_UNKNOWN_PROCESS, ActionKind.WAIT})


def action_text(coded: Coded) -> str:
    return _say(ACTIONS, coded)


def fixes(actions: Sequence[Coded]) -> list[str]:
    """The actions as a list of fixes: removals as they are, alternatives after the first with "or"."""
    words = []
    for index, coded in enumerate(actions):
        text = action_text(coded)
        words.append(text if index == 0 or coded.code in _REMOVALS else "or " + text)
    return words


# ---------------------------------------------------------------------------------------------------
# Uncertainty and the BSD notes

_HIDDEN_WHY = {
    "time-wait": "TIME-WAIT sockets have no process to read them from, and the kernel's bind table could not be read",
    "no-holder": "no process holding it could be inspected",
    "holder-not-inspectable": "its holder could not be inspected (needs CAP_SYS_PTRACE or the same user)",
}


def _hidden_flags(socket: Owner, count: int, options: Sequence[str], why: str) -> str:
    more = f" and {count - 1:,} more like it" if count > 1 else ""
    return f"{', '.join(options)} of {describe(socket)}{more} not visible: {_HIDDEN_WHY[why]}"


UNCERTAINTY: dict[UncertaintyCode, Callable[..., str]] = {
    UncertaintyCode.FASTPATH: lambda: (
        "R-FASTPATH: by the rules this fails, but the kernel skips the conflict check when the last SO_REUSEPORT "
        "socket of this uid to bind or listen on the port covered this address; that bind history, kept in the "
        "port's bind bucket, could not be read (it is, as root, through any socket of the port; use --probe to ask "
        "the kernel)"
    ),
    UncertaintyCode.UDP_PATH: lambda: (
        "past 10 sockets in the port's UDP hash slot (counted over every network namespace sharing the table) "
        "the kernel checks only the new address's and the wildcard's secondary slots, which changes the answer "
        "here; the count in other namespaces is not visible (use --probe to ask the kernel)"
    ),
    UncertaintyCode.OWNER_CHANGED: lambda socket, count: (
        f"the owner of {_listed(socket, count)} may have been changed (fchown) since it was made; the kernel's "
        "SO_REUSEPORT fast path compares the owner it had at bind() or listen(), kept in the port's bind bucket, "
        "which could not be read (use --probe to ask the kernel)"
    ),
    UncertaintyCode.HIDDEN_FLAGS: _hidden_flags,
    UncertaintyCode.BOUND_INVISIBLE: lambda: (
        "bound-only TCP sockets cannot be listed here (needs netlink sock_diag on Linux 6.8+); "
        "one of them may hold the port"
    ),
}


def uncertainty_text(coded: Coded) -> str:
    return _say(UNCERTAINTY, coded)


BSD_NOTES: dict[BsdNote, str] = {
    BsdNote.PRIVILEGED_PORTS: (
        "BSD reserves the fixed range below 1024 (IPPORT_RESERVED) for root; Linux uses the per-namespace "
        "net.ipv4.ip_unprivileged_port_start and the CAP_NET_BIND_SERVICE capability, for IPv4, IPv6, TCP and UDP "
        "alike."
    ),
    BsdNote.IPV4_LOCAL_ADDRESS: (
        "BSD requires the address to be configured on an interface; Linux accepts any address with a local route "
        "(all of 127/8, addresses on interfaces that are down, AnyIP prefixes), broadcast and multicast addresses."
    ),
    BsdNote.IPV6_V6ONLY_DEFAULT: (
        "FreeBSD and OpenBSD default to IPV6_V6ONLY=1; OpenBSD has no v4-mapped addresses at all."
    ),
    BsdNote.DUAL_STACK: (
        "FreeBSD and OpenBSD default to IPV6_V6ONLY=1, so 0.0.0.0:P and [::]:P coexist there; on Linux they "
        "collide unless the IPv6 socket sets IPV6_V6ONLY or net.ipv6.bindv6only=1."
    ),
    BsdNote.TCP_REUSEADDR: (
        "On BSD SO_REUSEADDR on the new socket alone lets a specific address bind next to the wildcard, and lets "
        "a restarted server bind over old connections. On Linux both sockets need it, and never next to a "
        "listener; TIME-WAIT sockets keep the flag of the socket they came from."
    ),
    BsdNote.TCP_REUSEPORT: (
        "On BSD SO_REUSEPORT allows duplicate bindings without load balancing; on Linux it needs the same owner "
        "uid on every socket and load-balances listeners."
    ),
    BsdNote.REUSEADDR_NO_OVERRIDE: (
        "SO_REUSEADDR does not override an existing binding on Linux the way BSD posts describe."
    ),
    BsdNote.UDP_REUSEADDR: (
        "BSD treats SO_REUSEADDR like SO_REUSEPORT only for multicast addresses; on Linux SO_REUSEADDR on both "
        "sockets allows duplicate UDP binds to any address."
    ),
    BsdNote.UDP_REUSEPORT: (
        "Linux SO_REUSEPORT needs the same owner uid on every socket and load-balances datagrams between them."
    ),
}


# ---------------------------------------------------------------------------------------------------
# Blockers, grouped by holder

_LISTED_STATES = frozenset({State.LISTEN, State.BOUND, State.UNCONN})  # named one by one; the rest are counted


def _counted(state: str, count: int) -> str:
    if state == "ESTABLISHED":
        return f"{count:,} established connection" + ("s" if count > 1 else "")
    return f"{count:,} {state} socket" + ("s" if count > 1 else "")


def group_text(group: BlockerGroup) -> str:
    """``LISTEN 0.0.0.0:9000 and 6,000 established connections of pid 19100 python3 (user u)``"""
    parts: list[str] = []
    counts: dict[str, list[Owner]] = {}
    for owner in group.owners:
        if owner.state in _LISTED_STATES and not owner.timewait:
            device = owner.socket.interface if owner.socket is not None and owner.socket.interface else ""
            parts.append(
                f"{state_name(owner)} {endpoint(owner.family, owner.address, owner.port)}"
                + (f"%{device}" if device else "")
            )
        else:
            counts.setdefault(state_name(owner), []).append(owner)
    for state, owners in counts.items():
        if len(owners) == 1:
            parts.append(f"{state} {endpoint(owners[0].family, owners[0].address, owners[0].port)}")
        else:
            parts.append(_counted(state, len(owners)))
    what = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if isinstance(group.key, frozenset):
        return f"{what} of {holders_text(group.processes)}"
    return f"{what} ({processes_text(group.owners[0])})"


def group_flags(group: BlockerGroup) -> str:
    """The options of the group's first listener (or first socket): what the sharing rules compare."""
    lead = next((o for o in group.owners if o.listening), group.owners[0])
    return owner_flags(lead)


def json_value(value: Any) -> Any:
    """A code parameter as JSON: sockets as a short reference, tuples as lists."""
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, Owner):
        inode = value.socket.inode if value.socket is not None else None
        return {
            "state": "time-wait" if value.timewait else value.state.value,
            "address": value.address,
            "port": value.port,
            "inode": inode,
            "pids": sorted({h.process.pid for h in value.holders}),
        }
    return value


def coded_object(coded: Coded, key: str) -> dict[str, Any]:
    """``{"code": "overlap", ...params}`` (``key`` is "code" or "kind")."""
    return {key: coded.code.value, **{name: json_value(value) for name, value in coded.args}}


__all__ = [
    "ACTIONS",
    "BSD_NOTES",
    "REASONS",
    "UNCERTAINTY",
    "action_text",
    "coded_object",
    "describe",
    "endpoint",
    "explanation",
    "fixes",
    "group_flags",
    "group_text",
    "holders_text",
    "owner_flags",
    "processes_text",
    "reason_text",
    "state_name",
    "uncertainty_text",
]
