"""The words of a bind verdict: explanations, fixes, and where Linux differs from the BSD lore.

Pure text over the model's records (no I/O); the sentences follow ``linux-bind-rules.md`` §3 and §6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from portscope.model.notation import format_endpoint
from portscope.model.records import Family, Proto, State

if TYPE_CHECKING:
    from portscope.rules.bind import NewSocket, Owner


def endpoint(family: Family, address: str, port: int) -> str:
    return format_endpoint(address, port, family)


def new_endpoint(n: NewSocket) -> str:
    return endpoint(n.family, n.address, n.port)


def state_name(owner: Owner) -> str:
    if owner.timewait:
        return "TIME-WAIT"
    if owner.state is State.BOUND:
        return "BOUND (bound, not listening)"
    return owner.state.value.upper()


def processes_text(owner: Owner) -> str:
    if owner.holders:
        return ", ".join(
            f"pid {h.process.pid} {h.process.name}" + (f" (user {h.process.user})" if h.process.user else "")
            for h in owner.holders
        )
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


def stop_fixes(owner: Owner) -> list[str]:
    fixes = [f"stop pid {h.process.pid} ({h.process.name})" for h in owner.holders]
    if owner.timewait:
        if owner.timer_ms is not None:
            fixes.append(f"wait {max(1, round(owner.timer_ms / 1000))} s for TIME-WAIT to expire")
        else:
            fixes.append("wait for TIME-WAIT to expire (at most 60 s)")
    elif not owner.holders:
        if owner.socket is not None and owner.socket.inode is None:
            fixes.append("wait for the orphaned connection to close")
        else:
            fixes.append(
                f"stop the process holding {endpoint(owner.family, owner.address, owner.port)} (run as root to see it)"
            )
    return fixes


# ---------------------------------------------------------------------------------------------------
# Address and privilege rules

BSD_PRIV = (
    "BSD reserves the fixed range below 1024 (IPPORT_RESERVED) for root; Linux uses the per-namespace "
    "net.ipv4.ip_unprivileged_port_start and the CAP_NET_BIND_SERVICE capability, for IPv4, IPv6, TCP and UDP alike."
)
BSD_ADDR4 = (
    "BSD requires the address to be configured on an interface; Linux accepts any address with a local route "
    "(all of 127/8, addresses on interfaces that are down, AnyIP prefixes), broadcast and multicast addresses."
)
BSD_ADDR6 = "FreeBSD and OpenBSD default to IPV6_V6ONLY=1; OpenBSD has no v4-mapped addresses at all."


def privileged_text(port: int, start: int) -> str:
    return (
        f"Ports below {start} (net.ipv4.ip_unprivileged_port_start={start} in this network namespace) need "
        f"CAP_NET_BIND_SERVICE in the namespace's owning user namespace; port {port} is below it. "
        "bind() reports EACCES before it looks at who else holds the port."
    )


def privileged_fixes(port: int, start: int) -> tuple[str, ...]:
    return (
        "grant CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep PROGRAM, or AmbientCapabilities= in systemd)",
        f"or lower net.ipv4.ip_unprivileged_port_start (now {start}) to {port} or less in this namespace",
        f"or use a port >= {start}",
    )


def addr4_text(address: str, mapped: bool = False) -> str:
    what = f"the IPv4 address {address} inside the v4-mapped address" if mapped else f"{address}"
    return (
        f"{what} is not local: Linux accepts an IPv4 address only if it has a local, broadcast or multicast route "
        "(ip route show table local), unless IP_FREEBIND or net.ipv4.ip_nonlocal_bind=1 is set."
    )


def addr4_fixes(address: str) -> tuple[str, ...]:
    return (
        f"add {address} to an interface (ip addr add {address}/32 dev lo)",
        "or set IP_FREEBIND on the socket (--freebind)",
        "or set net.ipv4.ip_nonlocal_bind=1 in this namespace",
    )


MCAST_TCP_TEXT = "A TCP socket cannot bind an IPv6 multicast address (bind() returns EINVAL)."
MCAST_TCP_FIXES = ("bind a unicast address, or use UDP (--udp) for multicast",)
MAPPED_V6ONLY_TEXT = (
    "A v4-mapped address (::ffff:a.b.c.d) cannot be bound on an IPV6_V6ONLY socket: the socket would accept "
    "no IPv4 traffic, so bind() returns EINVAL."
)
MAPPED_V6ONLY_FIXES = ("clear IPV6_V6ONLY (--no-v6only)", "or bind the IPv4 address on an AF_INET socket")
SCOPE_TEXT = (
    "A link-local address needs an interface: give a scope id ([fe80::1%eth0]) or SO_BINDTODEVICE, "
    "otherwise bind() returns EINVAL."
)


def scope_fixes(address: str) -> tuple[str, ...]:
    return (f"add the interface: [{address}%IFNAME]", "or pin the socket with --device IFNAME")


def addr6_text(address: str, why: str | None, device: str | None) -> str:
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


def addr6_fixes(address: str, why: str | None) -> tuple[str, ...]:
    if why == "tentative":
        return (
            "wait for duplicate address detection to finish (about 1-2 s after the link is up)",
            "or add the address with nodad, or set IPV6_FREEBIND (--freebind)",
        )
    return (
        f"add {address} to an interface (ip -6 addr add {address}/128 dev IFNAME)",
        "or set IPV6_FREEBIND (--freebind), or net.ipv6.ip_nonlocal_bind=1",
    )


# ---------------------------------------------------------------------------------------------------
# Uncertainty reasons

FASTPATH_REASON = (
    "R-FASTPATH: by the rules this fails, but the kernel skips the conflict check when the last SO_REUSEPORT "
    "socket of this uid to bind or listen on the port covered this address; that bind history is not visible "
    "(use --probe to ask the kernel)"
)
UDP_ORDER_REASON = (
    "R-UDP-FIRSTMATCH: the first matching socket in the kernel's hash chain decides, and the order of IPv4 and "
    "IPv6 sockets in that chain is not visible (use --probe to ask the kernel)"
)
BOUND_INVISIBLE_REASON = (
    "bound-only TCP sockets cannot be listed here (needs netlink sock_diag on Linux 6.8+); "
    "one of them may hold the port"
)


def hidden_flags_reason(owner: Owner, unknown: Sequence[str]) -> str:
    if owner.timewait:
        why = "TIME-WAIT sockets have no process to read them from"
    elif not owner.holders:
        why = "no process holding it could be inspected"
    else:
        why = "its holder could not be inspected (needs CAP_SYS_PTRACE or the same user)"
    return f"{', '.join(unknown)} of {describe(owner)} not visible: {why}"


# ---------------------------------------------------------------------------------------------------
# TCP


def free_text(n: NewSocket, bound_visible: bool) -> str:
    proto = n.proto.value.upper()
    text = f"No {proto} socket in this network namespace uses port {n.port}."
    if n.proto is Proto.TCP and n.listen:
        text += " bind() and listen() succeed."
    return text


def autobind_text(n: NewSocket) -> str:
    return (
        "Port 0 asks the kernel to pick a free port from net.ipv4.ip_local_port_range (reserved ports skipped); "
        "it fails only when the range is exhausted."
    )


def tcp_yes_text(n: NewSocket, rule: str, owners: int) -> str:
    listen = " bind() and listen() succeed." if n.listen else " bind() succeeds."
    if rule == "R-DEV":
        return f"The {owners} socket(s) on port {n.port} are pinned to other interfaces (SO_BINDTODEVICE)." + listen
    if rule == "R-TCP-REUSEADDR":
        return (
            f"The overlapping socket(s) on port {n.port} have SO_REUSEADDR like the new one and are not "
            "listening, so Linux lets them share." + listen + " A socket sharing this way can no longer listen() "
            "once another one listens."
        )
    if rule == "R-TCP-REUSEPORT":
        return (
            f"The overlapping socket(s) on port {n.port} have SO_REUSEPORT and the same owner (or are in TIME-WAIT), "
            "so they share the port." + listen
        )
    return f"The {owners} socket(s) on port {n.port} use addresses that do not overlap {new_endpoint(n)}." + listen


def _overlap_words(n: NewSocket, owner: Owner, reasons: Sequence[str]) -> str:
    if "dual-stack" in reasons:
        return (
            "An IPv6 [::] socket without IPV6_V6ONLY covers every IPv4 address too (net.ipv6.bindv6only=0 is the "
            "Linux default), so the IPv4 and IPv6 wildcard binds collide."
        )
    return ""


def tcp_conflict_text(n: NewSocket, owner: Owner, reasons: Sequence[str], count: int) -> str:
    parts = [f"{describe(owner)} holds an overlapping address on port {n.port}."]
    overlap = _overlap_words(n, owner, reasons)
    if overlap:
        parts.append(overlap)
    if "reuseport-uid" in reasons:
        parts.append(
            f"Both sockets set SO_REUSEPORT, but SO_REUSEPORT shares a port only between sockets of the same owner "
            f"(uid {owner.uid} there, uid {n.uid} here); root gets no exemption."
        )
    elif "reuseaddr-listen" in reasons:
        parts.append(
            "It is LISTENING. On Linux SO_REUSEADDR never lets a second socket bind next to a listener; use "
            "SO_REUSEPORT on both (same user) or a non-overlapping address."
        )
    elif owner.listening:
        parts.append("It is LISTENING, and a listener shares its port only through SO_REUSEPORT on both sockets.")
    elif "reuseaddr-other" in reasons:
        parts.append(
            f"Both sockets must set SO_REUSEADDR; the existing one ({state_name(owner)}) did not"
            + (" (a TIME-WAIT socket keeps the flag of the socket it came from)." if owner.timewait else ".")
        )
    elif "reuseport-other" in reasons:
        parts.append("SO_REUSEPORT shares only between sockets that all set it; the existing one did not.")
    else:
        parts.append("Neither SO_REUSEADDR nor SO_REUSEPORT lets them share.")
    if count > 1:
        parts.append(f"{count - 1} more socket(s) block it too.")
    return " ".join(parts)


def tcp_uncertain_text(n: NewSocket, blockers: Sequence[Owner], fastpath: bool) -> str:
    listed = "; ".join(describe(b) for b in blockers[:3])
    if fastpath:
        return (
            f"By the rules this fails with EADDRINUSE (blocked by {listed}). The kernel may still accept it: when "
            "the last SO_REUSEPORT socket of your uid to bind or listen on this port covered your address, it "
            "skips the conflict check. That depends on bind history the tool cannot see."
        )
    return f"The answer depends on socket options the tool cannot read from {listed}."


def tcp_fixes(n: NewSocket, blockers: Sequence[Owner], reasons: Sequence[Sequence[str]]) -> tuple[str, ...]:
    fixes: list[str] = []
    # Next to a listener, SO_REUSEADDR cannot help with the other blockers: the listener still blocks.
    listener_blocks = any(owner.listening for owner in blockers)
    for owner, why in zip(blockers, reasons, strict=True):
        fixes += stop_fixes(owner)
        if "dual-stack" in why:
            if n.family is Family.IPV6:
                fixes.append("set IPV6_V6ONLY on the new [::] socket (--v6only) so it leaves IPv4 alone")
            else:
                fixes.append(f"set IPV6_V6ONLY on the existing [::] socket ({processes_text(owner)})")
        if owner.timewait:
            if owner.reuseaddr:
                fixes.append("or set SO_REUSEADDR (--reuseaddr): the old socket had it")
            elif owner.reuseaddr is None:
                fixes.append("SO_REUSEADDR (--reuseaddr) helps only if the old socket (its listener) had it too")
            else:
                fixes.append("SO_REUSEADDR would not help: the old socket did not have it")
            if owner.reuseport:
                fixes.append("or set SO_REUSEPORT (--reuseport): the old socket had it")
            continue
        if "reuseport-uid" in why:
            fixes.append(f"run the new socket as uid {owner.uid}: SO_REUSEPORT needs the same user")
        elif owner.listening:
            if owner.reuseport and owner.uid == n.uid:
                fixes.append("set SO_REUSEPORT on the new socket (--reuseport): the listener has it, same user")
            else:
                fixes.append("set SO_REUSEPORT on both sockets, same user")
        elif listener_blocks:
            pass
        elif owner.reuseaddr and not n.reuseaddr:
            fixes.append("set SO_REUSEADDR on the new socket (--reuseaddr): the existing one has it")
        elif owner.reuseaddr is None:
            fixes.append("set SO_REUSEADDR on both sockets (the existing one's setting is not visible)")
        elif not owner.reuseaddr:
            fixes.append(
                "set SO_REUSEADDR on both sockets (the existing one lacks it), or SO_REUSEPORT on both, same user"
            )
        if owner.device and not n.device:
            fixes.append("or pin the new socket to another interface (--device): the existing one is pinned")
    fixes.append("or use another port")
    return tuple(dict.fromkeys(fixes))


def tcp_bsd_note(rule: str, n: NewSocket) -> str | None:
    if rule == "R-OVERLAP-DUAL":
        return (
            "FreeBSD and OpenBSD default to IPV6_V6ONLY=1, so 0.0.0.0:P and [::]:P coexist there; on Linux they "
            "collide unless the IPv6 socket sets IPV6_V6ONLY or net.ipv6.bindv6only=1."
        )
    if rule == "R-TCP-REUSEADDR":
        return (
            "On BSD SO_REUSEADDR on the new socket alone lets a specific address bind next to the wildcard, and lets "
            "a restarted server bind over old connections. On Linux both sockets need it, and never next to a "
            "listener; TIME-WAIT sockets keep the flag of the socket they came from."
        )
    if rule == "R-TCP-REUSEPORT":
        return (
            "On BSD SO_REUSEPORT allows duplicate bindings without load balancing; on Linux it needs the same owner "
            "uid on every socket and load-balances listeners."
        )
    if rule in ("R-TCP-BASE", "R-TCP-PAIR") and n.reuseaddr:
        return "SO_REUSEADDR does not override an existing binding on Linux the way BSD posts describe."
    return None


# ---------------------------------------------------------------------------------------------------
# UDP


def udp_yes_text(n: NewSocket, rule: str, owners: int) -> str:
    if rule == "R-UDP-FIRSTMATCH":
        return (
            "A compatible SO_REUSEPORT socket is found before the blocking one in the kernel's hash chain, so the "
            "kernel will accept this. The outcome depends on socket order."
        )
    if rule == "R-DEV":
        return f"The {owners} socket(s) on port {n.port} are pinned to other interfaces (SO_BINDTODEVICE)."
    if rule == "R-UDP-REUSEADDR":
        return "Every overlapping UDP socket has SO_REUSEADDR like the new one, so the port is shared."
    if rule == "R-UDP-REUSEPORT":
        return "The overlapping UDP socket(s) have SO_REUSEPORT and the same owner, so the port is shared."
    return f"The {owners} socket(s) on port {n.port} use addresses that do not overlap {new_endpoint(n)}."


def udp_conflict_text(n: NewSocket, owner: Owner, rule: str) -> str:
    parts = [f"{describe(owner)} holds an overlapping address on port {n.port}."]
    if rule == "R-OVERLAP-DUAL":
        parts.append(_overlap_words(n, owner, ("dual-stack",)))
    if rule == "R-UDP-REUSEPORT" and owner.reuseport and n.reuseport:
        parts.append(f"Both set SO_REUSEPORT, but the owners differ (uid {owner.uid} there, uid {n.uid} here).")
    else:
        parts.append("Both UDP sockets need SO_REUSEADDR, or both need SO_REUSEPORT under the same user.")
    return " ".join(parts)


def udp_uncertain_text(n: NewSocket, blocking: Sequence[Owner], compatible: Sequence[Owner]) -> str:
    if blocking and compatible:
        return (
            f"{describe(compatible[0])} would let this bind, {describe(blocking[0])} would block it: the kernel "
            "stops at whichever comes first in its hash chain."
        )
    listed = "; ".join(describe(b) for b in blocking[:3]) or "the sockets on this port"
    return f"The answer depends on what the tool cannot see about {listed}."


def udp_fixes(n: NewSocket, blocking: Sequence[Owner]) -> tuple[str, ...]:
    fixes: list[str] = []
    for owner in blocking:
        fixes += stop_fixes(owner)
        if owner.reuseaddr and not n.reuseaddr:
            fixes.append("set SO_REUSEADDR on the new socket (--reuseaddr): the existing one has it")
        elif owner.reuseport and owner.uid == n.uid and not n.reuseport:
            fixes.append("set SO_REUSEPORT on the new socket (--reuseport): the existing one has it, same user")
        elif owner.reuseport and owner.uid != n.uid:
            fixes.append(f"run the new socket as uid {owner.uid}: SO_REUSEPORT needs the same user")
        else:
            fixes.append("set SO_REUSEADDR on both sockets, or SO_REUSEPORT on both under the same user")
    fixes.append("or use another port")
    return tuple(dict.fromkeys(fixes))


def udp_bsd_note(rule: str) -> str | None:
    if rule in ("R-UDP-REUSEADDR", "R-UDP"):
        return (
            "BSD treats SO_REUSEADDR like SO_REUSEPORT only for multicast addresses; on Linux SO_REUSEADDR on both "
            "sockets allows duplicate UDP binds to any address."
        )
    if rule == "R-OVERLAP-DUAL":
        return tcp_bsd_note(rule, None)  # type: ignore[arg-type]
    if rule == "R-UDP-REUSEPORT":
        return "Linux SO_REUSEPORT needs the same owner uid on every socket and load-balances datagrams between them."
    return None
