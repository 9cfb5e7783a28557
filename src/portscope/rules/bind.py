"""The bind() decision as a pure function: (new socket, owners of the port, namespace settings) -> verdict.

This implements ``linux-bind-rules.md`` (Linux 6.18). The address comparisons are the kernel's own
functions (``inet_rcv_saddr_equal``, the bhash2 bucket matching of ``inet_csk_get_port``) transcribed
over a small "kernel view" of each socket, so the v4/v6/v4-mapped/dual-stack corner cases come out as
the kernel computes them rather than from a summary table.

Facts the caller could not see are ``None``. The model then evaluates every possible value ("worlds")
and answers decisively only when all worlds agree; otherwise the verdict is "uncertain" with reasons.
The only other sources of uncertainty are the TCP SO_REUSEPORT fast-path cache (history, spec §4) and,
for UDP, which of its two lookup paths the kernel takes when that changes the answer.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Family, Holder, Proto, Socket, State
from portscope.rules import bind_actions
from portscope.rules.codes import ActionKind, BsdNote, Coded, ReasonCode, UncertaintyCode, action, reason, uncertainty


class Verdict(str, enum.Enum):
    YES = "yes"
    NO = "no"
    UNCERTAIN = "uncertain"


class Stage(str, enum.Enum):
    BIND = "bind"
    LISTEN = "listen"


@dataclass_lite(frozen=True)
class NewSocket:
    """The socket ``can-bind`` asks about, with its options as set before bind()."""

    proto: Proto
    family: Family
    address: str  # as passed to bind(): dotted IPv4, or IPv6 text (v4-mapped allowed)
    port: int
    scope_id: int = 0  # sin6_scope_id (ifindex) from [fe80::1%eth0]
    reuseaddr: bool = False
    reuseport: bool = False
    v6only: bool = False  # IPV6_V6ONLY before bind (the caller applies net.ipv6.bindv6only)
    device: int = 0  # SO_BINDTODEVICE ifindex, 0 = none
    freebind: bool = False
    uid: int = 0  # sk_uid: the owner the REUSEPORT rule compares
    privileged: bool = True  # CAP_NET_BIND_SERVICE in the user namespace owning the netns
    listen: bool = True  # TCP: predict listen() after bind()


@dataclass_lite(frozen=True)
class Owner:
    """An existing socket on the port (same netns, same protocol table). ``None`` = not visible."""

    proto: Proto
    family: Family
    address: str
    port: int
    state: State
    uid: int | None = None
    device: int | None = 0  # bound ifindex, 0 = none
    reuseaddr: bool | None = None
    reuseport: bool | None = None
    v6only: bool | None = None
    timewait: bool = False  # a TIME-WAIT mini socket (also the FIN-WAIT-2 timewait substate)
    # Has the socket's owner been changed (fchown) since socket()? Its inode's ctime says so; then the uid
    # it had at bind()/listen(), which the SO_REUSEPORT fast path remembers, is not visible.
    owner_changed: bool | None = None
    timer_ms: int | None = None
    holders: tuple[Holder, ...] = ()
    socket: Socket | None = None  # the collector's record, carried through for rendering

    @property
    def listening(self) -> bool:
        return self.state is State.LISTEN


@dataclass_lite(frozen=True)
class LocalRoute:
    """A route of the local table (``ip route show table local``)."""

    network: ipaddress.IPv4Network
    kind: str  # local, broadcast, multicast, unicast, ...


@dataclass_lite(frozen=True)
class Ipv6Address:
    address: ipaddress.IPv6Address
    ifindex: int
    scope: str  # global, site, link, host
    tentative: bool = False
    dadfailed: bool = False
    optimistic: bool = False


@dataclass_lite(frozen=True)
class BindBucket:
    """The port's TCP bind bucket (``struct inet_bind_bucket``) as read from the kernel: its fast-path cache.

    bind() and listen() skip the conflict check when ``sk_reuseport_match()`` accepts the new socket:
    SO_REUSEPORT set, ``fastuid`` its owner, and (FASTREUSEPORT_STRICT) its address covered by the one
    recorded; or, for SO_REUSEADDR before listen(), when ``fastreuse`` > 0."""

    fastreuse: int
    fastreuseport: int  # 0 off, 1 FASTREUSEPORT_ANY, 2 FASTREUSEPORT_STRICT
    fastuid: int
    family: Family  # fast_sk_family: of the socket that set the cache
    address6: str  # fast_v6_rcv_saddr
    address4: str  # fast_rcv_saddr
    v6only: bool  # fast_ipv6_only


FASTREUSEPORT_ANY = 1


@dataclass_lite(frozen=True)
class Namespace:
    """The settings of the target network namespace that bind() consults."""

    unprivileged_port_start: int = 1024
    ipv4_nonlocal_bind: bool = False
    ipv6_nonlocal_bind: bool = False
    bindv6only: bool = False
    local_routes: tuple[LocalRoute, ...] = ()
    ipv6_addresses: tuple[Ipv6Address, ...] = ()
    interfaces: tuple[tuple[int, str], ...] = ()  # (ifindex, name)
    udp_slot_sockets: int = 0  # UDP sockets of this netns in the port's primary hash slot
    udp_table_size: int = 16384
    udp_table_shared: bool = True  # other namespaces' sockets may sit in the same UDP hash slots
    local_port_range: tuple[int, int] = (32768, 60999)  # net.ipv4.ip_local_port_range (the kernel's default)
    reserved_ports: frozenset[int] = frozenset()  # net.ipv4.ip_local_reserved_ports
    autobind_reuse: bool = False  # net.ipv4.ip_autobind_reuse
    bound_visible: bool = True  # bound-only TCP sockets can be listed (netlink, Linux 6.8+)
    tcp_bucket: BindBucket | None = None  # the TCP port's bind bucket, where the kernel showed it (per port)

    def interface_name(self, index: int) -> str:
        return dict(self.interfaces).get(index, f"if{index}")


@dataclass_lite(frozen=True)
class BindVerdict:
    """The answer as data (codes in :mod:`portscope.rules.codes`); :mod:`portscope.render.bind_words` words it."""

    verdict: Verdict
    errno: str | None  # for "uncertain": the error if it fails
    stage: Stage | None
    rule: str
    blockers: tuple[Owner, ...]
    reasons: tuple[Coded, ...]  # the deciding reason first
    actions: tuple[Coded, ...] = ()
    bsd_note: BsdNote | None = None
    uncertainty: tuple[Coded, ...] = ()


# ---------------------------------------------------------------------------------------------------
# The kernel's view of a socket address: sk_v6_rcv_saddr, sk_rcv_saddr and sk_ipv6only

LOOPBACK4_IPV6 = int(ipaddress.IPv4Address("127.0.0.6"))  # sk_rcv_saddr of non-mapped AF_INET6 sockets
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@dataclass_lite(frozen=True, slots=True)
class _K:
    v6: bytes | None  # None for AF_INET sockets (inet6_rcv_saddr() returns NULL)
    v4: int
    v6only: bool


def v6_kind(raw: bytes) -> str:
    """ipv6_addr_type() reduced to what the bind paths test: any, mapped, multicast, linklocal, loopback, unicast."""
    if raw[:8] == bytes(8):
        if raw[8:12] == bytes(4):
            if raw[12:] == bytes(4):
                return "any"
            return "loopback" if raw[12:] == b"\0\0\0\1" else "unicast"
        if raw[8:12] == b"\0\0\xff\xff":
            return "mapped"
    if raw[0] == 0xFF:
        return "multicast"
    if raw[0] == 0xFE and raw[1] & 0xC0 == 0x80:
        return "linklocal"
    return "unicast"


def _needs_scope(raw: bytes) -> bool:
    """__ipv6_addr_needs_scope_id(): link-local unicast, interface- or link-local multicast."""
    kind = v6_kind(raw)
    return kind == "linklocal" or (kind == "multicast" and raw[1] & 0x0F in (1, 2))


def _kview(family: Family, address: str, v6only: bool) -> _K:
    if family is Family.IPV4:
        return _K(None, int(ipaddress.IPv4Address(address)), False)
    raw = ipaddress.IPv6Address(address).packed
    kind = v6_kind(raw)
    if kind == "any":
        v4 = 0
    elif kind == "mapped":
        v4 = int.from_bytes(raw[12:], "big")
    else:
        v4 = LOOPBACK4_IPV6
    return _K(raw, v4, v6only)


def _ipv6_rcv_saddr_equal(a6, b6, a4, b4, a_only, b_only, match1, match2) -> bool:
    t1 = v6_kind(a6)
    t2 = v6_kind(b6) if b6 is not None else "mapped"
    if t1 == "mapped" and t2 == "mapped":
        if not b_only:
            if a4 == b4:
                return True
            return (match1 and a4 == 0) or (match2 and b4 == 0)
        return False
    if t1 == "any" and t2 == "any":
        return True
    if t2 == "any" and match2 and not (b_only and t1 == "mapped"):
        return True
    if t1 == "any" and match1 and not (a_only and t2 == "mapped"):
        return True
    return b6 is not None and a6 == b6


def _ipv4_rcv_saddr_equal(a4: int, b4: int, b_only: bool, match1: bool, match2: bool) -> bool:
    if not b_only:
        if a4 == b4:
            return True
        return (match1 and a4 == 0) or (match2 and b4 == 0)
    return False


def rcv_saddr_equal(n: _K, b: _K, match_wildcard: bool = True) -> bool:
    """inet_rcv_saddr_equal(n, b, match_wildcard)."""
    if n.v6 is not None:
        return _ipv6_rcv_saddr_equal(n.v6, b.v6, n.v4, b.v4, n.v6only, b.v6only, match_wildcard, match_wildcard)
    return _ipv4_rcv_saddr_equal(n.v4, b.v4, b.v6only, match_wildcard, match_wildcard)


def _v4ish(k: _K) -> bool:
    return k.v6 is None or v6_kind(k.v6) == "mapped"


def _uses_hash2(k: _K) -> bool:
    """inet_use_hash2_on_bind(): specific addresses look up bhash2 buckets instead of every owner."""
    if k.v6 is not None:
        kind = v6_kind(k.v6)
        if kind == "any":
            return False
        if kind != "mapped":
            return True
    return k.v4 != 0


def _bucket_key(k: _K) -> bytes:
    """The bhash2 bucket address: IPv4 as v4-mapped (one bucket holds a and ::ffff:a)."""
    return k.v6 if k.v6 is not None else _MAPPED_PREFIX + k.v4.to_bytes(4, "big")


_MAPPED_ANY = _MAPPED_PREFIX + bytes(4)


def _tcp_compared(n: _K, b: _K) -> bool:
    """Does inet_csk_get_port() test N against B at all (address-wise)?"""
    if not _uses_hash2(n):
        return rcv_saddr_equal(n, b, True)
    # inet_bhash2_addr_any_conflict() + the exact tb2 bucket; __inet_bhash2_conflict() skips v6-only
    # owners for IPv4 and v4-mapped sockets.
    if b.v6only and _v4ish(n):
        return False
    key = _bucket_key(b)
    if key == _bucket_key(n):
        return True
    if b.v6 is not None and v6_kind(b.v6) == "any":
        return True
    return key == _MAPPED_ANY and _v4ish(n)


def _dev_compatible(n_dev: int, b_dev: int) -> bool:
    return not n_dev or not b_dev or n_dev == b_dev


# ---------------------------------------------------------------------------------------------------
# Worlds: every value a hidden owner fact could take


@dataclass_lite(frozen=True, slots=True)
class _World:
    reuse: bool
    reuseport: bool
    v6only: bool
    device: int


def _worlds(b: Owner, n_device: int, reuseport: bool | None = None) -> Iterator[_World]:
    reuse = (b.reuseaddr,) if b.reuseaddr is not None else (False, True)
    if reuseport is not None:
        ports: tuple[bool, ...] = (reuseport,)
    else:
        ports = (b.reuseport,) if b.reuseport is not None else (False, True)
    if b.family is Family.IPV4:
        only: tuple[bool, ...] = (False,)
    elif b.v6only is not None:
        only = (b.v6only,)
    elif v6_kind(ipaddress.IPv6Address(b.address).packed) == "mapped":
        only = (False,)  # a v6-only socket cannot hold a v4-mapped address
    else:
        only = (False, True)
    if b.device is not None:
        devices: tuple[int, ...] = (b.device,)
    else:
        devices = tuple(dict.fromkeys((0, n_device, -1)))  # -1: some other device
    for r, p, o, d in itertools.product(reuse, ports, only, devices):
        yield _World(r, p, o, d)


def _hidden_why(b: Owner) -> str:
    if b.timewait:
        return "time-wait"
    if not b.holders:
        return "no-holder"
    return "holder-not-inspectable"


def _owner_unknowns(b: Owner) -> list[str]:
    missing = []
    if b.reuseaddr is None:
        missing.append("SO_REUSEADDR")
    if b.reuseport is None:
        missing.append("SO_REUSEPORT")
    if b.family is Family.IPV6 and b.v6only is None:
        missing.append("IPV6_V6ONLY")
    if b.device is None:
        missing.append("bound device")
    if b.owner_changed is None and b.reuseport is not False and b.state in (State.LISTEN, State.BOUND):
        missing.append("owner at bind()")
    return missing


# ---------------------------------------------------------------------------------------------------
# Address validity, privileges


def _ipv4_type(address: ipaddress.IPv4Address, ns: Namespace) -> str:
    """inet_addr_type_table() on the local table: longest-prefix match, with the fixed special cases."""
    value = int(address)
    if value in (0, 0xFFFFFFFF):
        return "broadcast"  # ipv4_is_zeronet (0.0.0.0 only) / ipv4_is_lbcast
    if address.is_multicast:
        return "multicast"
    best: LocalRoute | None = None
    for route in ns.local_routes:
        if address in route.network and (best is None or route.network.prefixlen > best.network.prefixlen):
            best = route
    return best.kind if best is not None else "unicast"


def _ipv4_usable(address: ipaddress.IPv4Address, n: NewSocket, ns: Namespace) -> bool:
    """inet_addr_valid_or_nonlocal()."""
    if ns.ipv4_nonlocal_bind or n.freebind or int(address) == 0:
        return True
    return _ipv4_type(address, ns) in ("local", "multicast", "broadcast")


def _ipv6_present(address: ipaddress.IPv6Address, device: int, ns: Namespace) -> tuple[bool, str | None]:
    """ipv6_chk_addr(): (usable, why not). Tentative and DAD-failed addresses do not count."""
    seen_tentative = seen_elsewhere = False
    for entry in ns.ipv6_addresses:
        if entry.address != address:
            continue
        tentative = (entry.tentative and not entry.optimistic) or entry.dadfailed
        if tentative:
            seen_tentative = True
            continue
        if device and entry.ifindex != device and entry.scope in ("link", "host"):
            seen_elsewhere = True
            continue
        return True, None
    if seen_tentative:
        return False, "tentative"
    if seen_elsewhere:
        return False, "other-device"
    return False, "absent"


def _privileged_port(n: NewSocket, ns: Namespace) -> bool:
    return n.port != 0 and n.port < ns.unprivileged_port_start and not n.privileged


def _no(rule: str, errno: str, why: Coded, *actions: Coded, bsd_note: BsdNote | None = None) -> BindVerdict:
    return BindVerdict(Verdict.NO, errno, Stage.BIND, rule, (), (why,), actions, bsd_note)


def _address_actions(address: str, family: Family) -> tuple[Coded, ...]:
    freebind = "IPV6_FREEBIND" if family is Family.IPV6 else "IP_FREEBIND"
    sysctl = "net.ipv6.ip_nonlocal_bind" if family is Family.IPV6 else "net.ipv4.ip_nonlocal_bind"
    return (
        action(ActionKind.ADD_ADDRESS, address=address, family=family.value),
        action(ActionKind.SET_OPTION, option=freebind, on="new"),
        action(ActionKind.SET_SYSCTL, name=sysctl, value=1),
    )


def _precheck(n: NewSocket, ns: Namespace) -> tuple[BindVerdict | None, _K, int]:
    """Everything before the port table: address checks and R-PRIV in the kernel's order.

    Returns (a failure verdict or None, N's kernel view after bind, N's effective bound device).
    """
    device = n.device
    start = ns.unprivileged_port_start
    priv = _no(
        "R-PRIV",
        "EACCES",
        reason(ReasonCode.PRIVILEGED_PORT, port=n.port, unprivileged_port_start=start),
        action(ActionKind.GRANT_CAPABILITY, capability="CAP_NET_BIND_SERVICE"),
        action(ActionKind.SET_SYSCTL, name="net.ipv4.ip_unprivileged_port_start", value=n.port, current=start),
        action(ActionKind.USE_ANOTHER_PORT, at_least=start),
        bsd_note=BsdNote.PRIVILEGED_PORTS,
    )
    if n.family is Family.IPV4:
        address4 = ipaddress.IPv4Address(n.address)
        if not _ipv4_usable(address4, n, ns):
            return (
                _no(
                    "R-ADDR4",
                    "EADDRNOTAVAIL",
                    reason(ReasonCode.ADDRESS_NOT_LOCAL, address=n.address),
                    *_address_actions(n.address, Family.IPV4),
                    bsd_note=BsdNote.IPV4_LOCAL_ADDRESS,
                ),
                _kview(n.family, n.address, False),
                device,
            )
        if _privileged_port(n, ns):
            return priv, _kview(n.family, n.address, False), device
        return None, _kview(n.family, n.address, False), device

    address6 = ipaddress.IPv6Address(n.address)
    raw = address6.packed
    kind = v6_kind(raw)
    if kind == "multicast" and n.proto is Proto.TCP:
        return (
            _no(
                "R-ADDR6",
                "EINVAL",
                reason(ReasonCode.MULTICAST_ON_TCP, address=n.address),
                action(ActionKind.USE_UNICAST_ADDRESS),
                action(ActionKind.USE_UDP),
            ),
            _kview(n.family, n.address, True),
            device,
        )
    if _privileged_port(n, ns):
        return priv, _kview(n.family, n.address, n.v6only), device
    if kind == "mapped":
        if n.v6only:
            return (
                _no(
                    "R-V6ONLY-MAPPED",
                    "EINVAL",
                    reason(ReasonCode.MAPPED_ON_V6ONLY, address=n.address),
                    action(ActionKind.SET_OPTION, option="IPV6_V6ONLY", on="new", value=False),
                    action(ActionKind.USE_IPV4_SOCKET, address=str(ipaddress.IPv4Address(raw[12:]))),
                ),
                _kview(n.family, n.address, True),
                device,
            )
        embedded = ipaddress.IPv4Address(raw[12:])
        if not _ipv4_usable(embedded, n, ns):
            return (
                _no(
                    "R-ADDR6",
                    "EADDRNOTAVAIL",
                    reason(ReasonCode.MAPPED_ADDRESS_NOT_LOCAL, address=str(embedded)),
                    *_address_actions(str(embedded), Family.IPV4),
                    bsd_note=BsdNote.IPV4_LOCAL_ADDRESS,
                ),
                _kview(n.family, n.address, False),
                device,
            )
        return None, _kview(n.family, n.address, False), device
    if kind == "any":
        return None, _kview(n.family, n.address, n.v6only), device
    if _needs_scope(raw):
        if n.scope_id:
            device = n.scope_id  # the scope id becomes the bound device, overriding SO_BINDTODEVICE
        if not device:
            return (
                _no(
                    "R-ADDR6",
                    "EINVAL",
                    reason(ReasonCode.SCOPE_NEEDED, address=n.address),
                    action(ActionKind.ADD_SCOPE_ID, address=n.address),
                    action(ActionKind.SET_OPTION, option="SO_BINDTODEVICE", on="new"),
                ),
                _kview(n.family, n.address, True),
                device,
            )
    if kind != "multicast" and not (ns.ipv6_nonlocal_bind or n.freebind):
        usable, why = _ipv6_present(address6, device, ns)
        if not usable:
            if why == "tentative":
                why_code = reason(ReasonCode.ADDRESS_TENTATIVE, address=n.address)
                fixes: tuple[Coded, ...] = (
                    action(ActionKind.WAIT, until="dad-finishes"),
                    action(ActionKind.SET_OPTION, option="IPV6_FREEBIND", on="new"),
                )
            elif why == "other-device":
                why_code = reason(
                    ReasonCode.ADDRESS_ON_OTHER_DEVICE, address=n.address, device=ns.interface_name(device)
                )
                fixes = _address_actions(n.address, Family.IPV6)
            else:
                why_code = reason(ReasonCode.ADDRESS_NOT_PRESENT, address=n.address)
                fixes = _address_actions(n.address, Family.IPV6)
            return (
                _no("R-ADDR6", "EADDRNOTAVAIL", why_code, *fixes, bsd_note=BsdNote.IPV6_V6ONLY_DEFAULT),
                _kview(n.family, n.address, True),
                device,
            )
    return None, _kview(n.family, n.address, True), device  # a specific non-mapped bind forces v6only


# ---------------------------------------------------------------------------------------------------
# TCP: the pair rule over the bind bucket

_NONE, _HARD, _SOFT = "none", "hard", "soft"  # no conflict / conflict / conflict the fast path might skip


def _tcp_pair_conflict(n: NewSocket, b: Owner, w: _World) -> bool:
    """inet_bind_conflict() with relax=true, reuseport_ok=true, given the devices are compatible."""
    if n.reuseaddr and w.reuse and not b.listening:
        return False
    return not (n.reuseport and w.reuseport and (b.timewait or n.uid == b.uid))


def fastpath_matches(bucket: BindBucket, n: NewSocket, nk: _K) -> bool:
    """sk_reuseport_match(): does the port's cached SO_REUSEPORT owner and address let N skip the checks?"""
    if bucket.fastreuseport <= 0 or not n.reuseport or bucket.fastuid != n.uid:
        return False
    if bucket.fastreuseport == FASTREUSEPORT_ANY:
        return True
    fast4 = int(ipaddress.IPv4Address(bucket.address4))
    if bucket.family is Family.IPV6:
        fast6 = ipaddress.IPv6Address(bucket.address6).packed
        return _ipv6_rcv_saddr_equal(fast6, nk.v6, fast4, nk.v4, bucket.v6only, nk.v6only, True, False)
    return _ipv4_rcv_saddr_equal(fast4, nk.v4, nk.v6only, True, False)


def _known_bucket(n: NewSocket, ns: Namespace) -> BindBucket | None:
    """The bucket when it settles the fast path. With fastreuse > 0 a SO_REUSEADDR bind() would skip the
    check that listen() then makes (never seen on 6.8+, where the first-owner branch that sets it is
    unreachable): not modelled, so the bucket is not used."""
    bucket = ns.tcp_bucket
    if bucket is None or (bucket.fastreuse > 0 and n.reuseaddr):
        return None
    return bucket


def _fastpath_ruled_out(b: Owner, w: _World) -> bool:
    """Could a cached SO_REUSEPORT fast path (R-FASTPATH) have been set while B blocked N?

    Any socket that set the cache after B bound had to pass the full check against B. That is
    impossible when B has no device (no device split), does not share through SO_REUSEADDR, and either
    has no SO_REUSEPORT or got its port through its own bind()/listen(), which reset the cache to the
    uid B had then: B's uid now only if its owner never changed (fchown after bind keeps the cache on
    the old uid). Accepted children and TIME-WAIT sockets enter the bucket without touching the cache.
    """
    if w.device != 0:
        return False
    if w.reuse and not b.listening:
        return False
    return not w.reuseport or (b.state in (State.LISTEN, State.BOUND) and b.owner_changed is False)


@dataclass_lite(frozen=True)
class _OwnerOutcome:
    owner: Owner
    outcomes: frozenset[str]
    reasons: tuple[str, ...]  # why this owner conflicts, for the rule choice (first world that conflicts)
    owner_doubt: bool = False  # soft only because B's owner may have changed since its bind()


def _tcp_outcome(n: NewSocket, nk: _K, n_dev: int, b: Owner, fastpath_known: bool = False) -> _OwnerOutcome:
    outcomes: set[str] = set()
    reason: tuple[str, ...] = ()
    owner_doubt = False
    settled = replace(b, owner_changed=False)
    for w in _worlds(b, n_dev):
        bk = _kview(b.family, b.address, w.v6only)
        if not _tcp_compared(nk, bk) or not _dev_compatible(n_dev, w.device):
            outcomes.add(_NONE)
            continue
        if not _tcp_pair_conflict(n, b, w):
            outcomes.add(_NONE)
            continue
        if not n.reuseport or fastpath_known or _fastpath_ruled_out(b, w):
            outcomes.add(_HARD)
        else:
            outcomes.add(_SOFT)
            owner_doubt = owner_doubt or _fastpath_ruled_out(settled, w)
        if not reason:
            reason = _tcp_reason(n, nk, b, bk, w)
    return _OwnerOutcome(b, frozenset(outcomes), reason, owner_doubt)


def _dual_stack_overlap(nk: _K, bk: _K) -> bool:
    """The two sockets overlap only because an IPv6 wildcard without IPV6_V6ONLY covers IPv4."""
    n_wild6 = nk.v6 is not None and v6_kind(nk.v6) == "any" and not nk.v6only
    b_wild6 = bk.v6 is not None and v6_kind(bk.v6) == "any" and not bk.v6only
    return (n_wild6 and _v4ish(bk)) or (b_wild6 and _v4ish(nk))


def _tcp_reason(n: NewSocket, nk: _K, b: Owner, bk: _K, w: _World) -> tuple[str, ...]:
    reasons = []
    if _dual_stack_overlap(nk, bk):
        reasons.append("dual-stack")
    if n.reuseport and w.reuseport and not b.timewait and n.uid != b.uid:
        reasons.append("reuseport-uid")
    elif n.reuseaddr and w.reuse and b.listening:
        reasons.append("reuseaddr-listen")
    elif n.reuseaddr and not w.reuse:
        reasons.append("reuseaddr-other")
    elif n.reuseport and not w.reuseport:
        reasons.append("reuseport-other")
    else:
        reasons.append("base")
    return tuple(reasons)


def _tcp_rule(reasons: tuple[str, ...]) -> str:
    if "dual-stack" in reasons:
        return "R-OVERLAP-DUAL"
    if "reuseport-uid" in reasons or "reuseport-other" in reasons:
        return "R-TCP-REUSEPORT"
    if "reuseaddr-listen" in reasons or "reuseaddr-other" in reasons:
        return "R-TCP-REUSEADDR"
    return "R-TCP-BASE"


def _state_word(b: Owner) -> str:
    return "time-wait" if b.timewait else b.state.value


def _tcp_conflict_reasons(n: NewSocket, owner: Owner, tags: Sequence[str], count: int) -> tuple[Coded, ...]:
    reasons = [reason(ReasonCode.OVERLAP, socket=owner, port=n.port)]
    if "dual-stack" in tags:
        reasons.append(reason(ReasonCode.DUAL_STACK_OVERLAP))
    if "reuseport-uid" in tags:
        reasons.append(reason(ReasonCode.REUSEPORT_OWNER_DIFFERS, existing_uid=owner.uid, new_uid=n.uid))
    elif "reuseaddr-listen" in tags:
        reasons.append(reason(ReasonCode.LISTENER_BLOCKS_REUSEADDR))
    elif owner.listening:
        reasons.append(reason(ReasonCode.LISTENER_NEEDS_REUSEPORT))
    elif "reuseaddr-other" in tags:
        reasons.append(reason(ReasonCode.EXISTING_LACKS_REUSEADDR, state=_state_word(owner), timewait=owner.timewait))
    elif "reuseport-other" in tags:
        reasons.append(reason(ReasonCode.EXISTING_LACKS_REUSEPORT))
    else:
        reasons.append(reason(ReasonCode.NO_SHARING_OPTION))
    if count > 1:
        reasons.append(reason(ReasonCode.MORE_BLOCKERS, count=count - 1))
    return tuple(reasons)


def _tcp_bsd_note(rule: str, n: NewSocket) -> BsdNote | None:
    if rule == "R-OVERLAP-DUAL":
        return BsdNote.DUAL_STACK
    if rule == "R-TCP-REUSEADDR":
        return BsdNote.TCP_REUSEADDR
    if rule == "R-TCP-REUSEPORT":
        return BsdNote.TCP_REUSEPORT
    if rule in ("R-TCP-BASE", "R-TCP-PAIR") and n.reuseaddr:
        return BsdNote.REUSEADDR_NO_OVERRIDE
    return None


def _hidden_flags(owners: Iterable[Owner]) -> list[Coded]:
    """One hidden-flags code per kind of invisibility, counting the sockets it covers."""
    groups: dict[tuple[str, tuple[str, ...]], list[Owner]] = {}
    for b in owners:
        unknown = _owner_unknowns(b)
        if unknown:
            groups.setdefault((_hidden_why(b), tuple(unknown)), []).append(b)
    return [
        uncertainty(UncertaintyCode.HIDDEN_FLAGS, socket=group[0], count=len(group), options=options, why=why)
        for (why, options), group in groups.items()
    ]


def _actions(n: NewSocket, blockers: Sequence[Owner], ns: Namespace) -> tuple[Coded, ...]:
    """What would help, each option change checked by re-running the model without those blockers' veto."""
    quiet = replace(ns, bound_visible=True)

    def clears(changed: NewSocket, owners: Sequence[Owner]) -> str:
        failure, nk, n_dev = _precheck(changed, quiet)
        if failure is not None:
            return "no"
        table = _decide_tcp if changed.proto is Proto.TCP else _decide_udp
        outcome = table(changed, nk, n_dev, owners, quiet, plan=False).verdict
        return {Verdict.YES: "yes", Verdict.UNCERTAIN: "maybe", Verdict.NO: "no"}[outcome]

    return bind_actions.plan(n, blockers, clears)


def _decide_tcp(
    n: NewSocket, nk: _K, n_dev: int, owners: Sequence[Owner], ns: Namespace, plan: bool = True
) -> BindVerdict:
    if not owners:
        return _port_free(n, ns)
    bucket = _known_bucket(n, ns)
    if bucket is not None and fastpath_matches(bucket, n, nk):
        # R-FASTPATH: bind() skips every conflict check, and leaves the cache as it was, so listen() matches too
        accepts = reason(
            ReasonCode.FASTPATH_ACCEPTS,
            proto=n.proto.value,
            port=n.port,
            uid=bucket.fastuid,
            address=bucket.address6 if bucket.family is Family.IPV6 else bucket.address4,
            listen=n.listen,
        )
        return BindVerdict(Verdict.YES, None, None, "R-FASTPATH", (), (accepts,))
    results = [_tcp_outcome(n, nk, n_dev, b, bucket is not None) for b in owners]
    certain = [r for r in results if r.outcomes == {_HARD}]
    possible = [r for r in results if r.outcomes - {_NONE}]
    if certain:
        lead = certain[0]
        rule = _tcp_rule(lead.reasons)
        blockers = tuple(r.owner for r in certain)
        return BindVerdict(
            Verdict.NO,
            "EADDRINUSE",
            Stage.BIND,
            rule,
            blockers,
            _tcp_conflict_reasons(n, lead.owner, lead.reasons, len(blockers)),
            actions=_actions(n, blockers, ns) if plan else (),
            bsd_note=_tcp_bsd_note(rule, n),
        )
    if not possible:
        # R-LISTEN-RECHECK: listen() re-runs the same check with N listening. The pair rule looks at the
        # owner's state, not N's, and N's own bind() leaves the SO_REUSEPORT cache matching N, so at one
        # moment listen() agrees with bind(); it fails later only if the owners change (another socket
        # sharing through SO_REUSEADDR starts listening first).
        return _tcp_yes(n, nk, n_dev, owners)
    # Some owner conflicts only in some worlds, or only if the fast path did not let N through.
    rule = "R-TCP-PAIR"
    hidden = [r for r in possible if _NONE in r.outcomes]
    soft = [r for r in possible if _SOFT in r.outcomes]
    changed = [r.owner for r in soft if r.owner_doubt and r.owner.owner_changed]
    unseen = [r for r in soft if r.owner_doubt and r.owner.owner_changed is None and r not in hidden]
    doubts = _hidden_flags(r.owner for r in (*hidden, *unseen))
    if changed:
        doubts.append(uncertainty(UncertaintyCode.OWNER_CHANGED, socket=changed[0], count=len(changed)))
    if soft:
        rule = "R-FASTPATH"
        doubts.append(uncertainty(UncertaintyCode.FASTPATH))
    elif hidden:
        rule = _tcp_rule(hidden[0].reasons)
    blockers = tuple(r.owner for r in possible)
    why = ReasonCode.FASTPATH_MAY_ACCEPT if soft else ReasonCode.DEPENDS_ON_HIDDEN
    return BindVerdict(
        Verdict.UNCERTAIN,
        "EADDRINUSE",
        Stage.BIND,
        rule,
        blockers,
        (reason(why, socket=blockers[0], count=len(blockers)),),
        actions=_actions(n, blockers, ns) if plan else (),
        bsd_note=_tcp_bsd_note(rule, n),
        uncertainty=tuple(doubts),
    )


def _port_free(n: NewSocket, ns: Namespace) -> BindVerdict:
    rule = "R-TCP-PAIR" if n.proto is Proto.TCP else "R-UDP"
    free = reason(ReasonCode.PORT_FREE, proto=n.proto.value, port=n.port, listen=n.listen)
    return BindVerdict(Verdict.YES, None, None, rule, (), (free,))


def _sharing_reason(n: NewSocket, rule: str, owners: int) -> Coded:
    common = {"proto": n.proto.value, "port": n.port, "listen": n.listen}
    if rule == "R-DEV":
        return reason(ReasonCode.PINNED_ELSEWHERE, count=owners, **common)
    if rule in ("R-TCP-REUSEADDR", "R-UDP-REUSEADDR"):
        return reason(ReasonCode.SHARED_REUSEADDR, **common)
    if rule in ("R-TCP-REUSEPORT", "R-UDP-REUSEPORT"):
        return reason(ReasonCode.SHARED_REUSEPORT, **common)
    return reason(ReasonCode.NO_OVERLAP, count=owners, address=n.address, **common)


def _tcp_yes(n: NewSocket, nk: _K, n_dev: int, owners: Sequence[Owner]) -> BindVerdict:
    rule = _sharing_rule(n, nk, n_dev, owners)
    return BindVerdict(Verdict.YES, None, None, rule, (), (_sharing_reason(n, rule, len(owners)),))


def _sharing_rule(n: NewSocket, nk: _K, n_dev: int, owners: Iterable[Owner]) -> str:
    """Why no owner blocks: the most telling rule among the owners that overlap."""
    tcp = n.proto is Proto.TCP
    rule = "R-OVERLAP"
    for b in owners:
        for w in _worlds(b, n_dev):
            bk = _kview(b.family, b.address, w.v6only)
            if not (_tcp_compared(nk, bk) if tcp else rcv_saddr_equal(nk, bk, True)):
                continue
            if not _dev_compatible(n_dev, w.device):
                rule = "R-DEV" if rule == "R-OVERLAP" else rule
            elif n.reuseaddr and w.reuse and not (tcp and b.listening):
                rule = "R-TCP-REUSEADDR" if tcp else "R-UDP-REUSEADDR"
            else:
                rule = "R-TCP-REUSEPORT" if tcp else "R-UDP-REUSEPORT"
    return rule


# ---------------------------------------------------------------------------------------------------
# UDP: any blocking owner among those the kernel scans fails the bind
#
# Measured on 6.18.44 (tests/test_bind_oracle.py U15-U19): a compatible SO_REUSEPORT owner does not end the
# scan early, whatever the chain order, on the primary slot and on the hash2 path alike. The order of the
# chain therefore does not matter; only WHICH owners are scanned does (the hash2 path below).

_SKIP, _OK, _FAIL = "skip", "ok", "fail"


def _udp_results(n: NewSocket, nk: _K, n_dev: int, b: Owner) -> frozenset[str]:
    """udp_lib_lport_inuse() for one owner in every world: skipped, compatible, or blocking."""
    results = set()
    for w in _worlds(b, n_dev):
        bk = _kview(b.family, b.address, w.v6only)
        if (n.reuseaddr and w.reuse) or not _dev_compatible(n_dev, w.device) or not rcv_saddr_equal(nk, bk, True):
            results.add(_SKIP)
        elif n.reuseport and w.reuseport and b.uid is not None and n.uid == b.uid:
            results.add(_OK)
        else:
            results.add(_FAIL)
    return frozenset(results)


def _hash2_key(k: _K) -> bytes:
    """udp_portaddr_hash() input: mapped and IPv4 addresses hash alike, as do the three wildcards."""
    if k.v6 is None:
        return k.v4.to_bytes(4, "big")
    kind = v6_kind(k.v6)
    if kind == "any":
        return bytes(4)
    if kind == "mapped":
        return k.v6[12:]
    return k.v6


def _hash2_scanned(nk: _K, b: Owner) -> bool:
    """udp_lib_lport_inuse2() looks at N's exact-address hash2 slot and the wildcard slot only."""
    key = _hash2_key(_kview(b.family, b.address, bool(b.v6only)))
    return key in (_hash2_key(nk), bytes(4))


def _udp_scans(nk: _K, owners: Sequence[Owner], ns: Namespace) -> list[list[Owner]]:
    """The owner sets the kernel may scan: one when the lookup path is known, else both candidates.

    A specific bind with more than 10 sockets in the port's primary slot scans N's exact-address hash2
    slot and the wildcard slot instead of the primary chain. The difference shows only for sockets that
    overlap without sharing those slots (an IPv4 127.0.0.6 bind against connected dual-stack IPv6
    sockets). The slot count holds the sockets of every namespace sharing the table: past 10 here it is
    certainly past 10; below, other namespaces may still push it over, unless the table is this
    namespace's own (a positive udp_hash_entries in a namespace other than the initial one).
    """
    if not _uses_hash2(nk):
        return [list(owners)]
    hash2 = [b for b in owners if _hash2_scanned(nk, b)]
    if ns.udp_slot_sockets > 10:
        return [hash2]
    if not ns.udp_table_shared:
        return [list(owners)]
    return [list(owners), hash2]


def _udp_conflict_reasons(n: NewSocket, owner: Owner, rule: str) -> tuple[Coded, ...]:
    reasons = [reason(ReasonCode.OVERLAP, socket=owner, port=n.port)]
    if rule == "R-OVERLAP-DUAL":
        reasons.append(reason(ReasonCode.DUAL_STACK_OVERLAP))
    if rule == "R-UDP-REUSEPORT" and owner.reuseport and n.reuseport:
        reasons.append(reason(ReasonCode.REUSEPORT_OWNER_DIFFERS, existing_uid=owner.uid, new_uid=n.uid))
    else:
        reasons.append(reason(ReasonCode.UDP_NEEDS_SHARING))
    return tuple(reasons)


def _udp_bsd_note(rule: str) -> BsdNote | None:
    return {
        "R-UDP-REUSEADDR": BsdNote.UDP_REUSEADDR,
        "R-UDP": BsdNote.UDP_REUSEADDR,
        "R-OVERLAP-DUAL": BsdNote.DUAL_STACK,
        "R-UDP-REUSEPORT": BsdNote.UDP_REUSEPORT,
    }.get(rule)


def _decide_udp(
    n: NewSocket, nk: _K, n_dev: int, owners: Sequence[Owner], ns: Namespace, plan: bool = True
) -> BindVerdict:
    if not owners:
        return _port_free(n, ns)
    results = {id(b): _udp_results(n, nk, n_dev, b) for b in owners}
    scans = _udp_scans(nk, owners, ns)
    certain = [[b for b in scan if results[id(b)] == {_FAIL}] for scan in scans]
    possible = [[b for b in scan if _FAIL in results[id(b)]] for scan in scans]
    if all(certain):
        blockers = certain[-1]  # the smallest scan: these block on every path
        rule = _udp_rule(n, nk, n_dev, blockers[0])
        return BindVerdict(
            Verdict.NO,
            "EADDRINUSE",
            Stage.BIND,
            rule,
            tuple(blockers),
            _udp_conflict_reasons(n, blockers[0], rule),
            actions=_actions(n, blockers, ns) if plan else (),
            bsd_note=_udp_bsd_note(rule),
        )
    if not any(possible):
        rule = _sharing_rule(n, nk, n_dev, owners)
        return BindVerdict(Verdict.YES, None, None, rule, (), (_sharing_reason(n, rule, len(owners)),))
    blockers = possible[0]  # the widest scan
    doubts = _hidden_flags(b for b in blockers if len(results[id(b)]) > 1)
    if len({(bool(c), bool(p)) for c, p in zip(certain, possible, strict=True)}) > 1:
        doubts.append(uncertainty(UncertaintyCode.UDP_PATH))
    rule = _udp_rule(n, nk, n_dev, blockers[0])
    return BindVerdict(
        Verdict.UNCERTAIN,
        "EADDRINUSE",
        Stage.BIND,
        rule,
        tuple(blockers),
        (reason(ReasonCode.DEPENDS_ON_HIDDEN, socket=blockers[0], count=len(blockers)),),
        actions=_actions(n, blockers, ns) if plan else (),
        bsd_note=_udp_bsd_note(rule),
        uncertainty=tuple(dict.fromkeys(doubts)),
    )


def _udp_rule(n: NewSocket, nk: _K, n_dev: int, b: Owner) -> str:
    bk = _kview(b.family, b.address, bool(b.v6only))
    if _dual_stack_overlap(nk, bk):
        return "R-OVERLAP-DUAL"
    if n.reuseport and b.reuseport is not False:
        return "R-UDP-REUSEPORT"
    if n.reuseaddr or b.reuseaddr:
        return "R-UDP-REUSEADDR"
    return "R-UDP"


# ---------------------------------------------------------------------------------------------------
# Port 0: the kernel picks a port from ip_local_port_range


DEFAULT_PORT_RANGE = (32768, 60999)


def autobind_ports(n: NewSocket, ns: Namespace) -> list[int]:
    """The ports bind(port 0) can hand out, in no particular order (the kernel starts at a random one).

    TCP (inet_csk_find_open_port) scans [low, high] as an even number of ports, and with SO_REUSEADDR
    as two halves each rounded down to an even count, so the last port of an odd span is never
    picked; UDP (udp_lib_get_port) takes every port of the range. Reserved ports are skipped.
    """
    low, high = ns.local_port_range
    if high < low:
        return []
    spans = [(low, high + 1)]
    if n.proto is Proto.TCP:
        end = high + 1
        if n.reuseaddr and end - low >= 4:
            half = low + (((end - low) >> 2) << 1)
            spans = [(low, half), (half, end)]
        spans = [(start, start + ((stop - start) & ~1 if stop - start > 1 else stop - start)) for start, stop in spans]
    reserved = ns.reserved_ports
    return [port for start, stop in spans for port in range(start, stop) if port not in reserved]


def _autobind_conflicts(n: NewSocket, nk: _K, n_dev: int, b: Owner, relax: bool) -> frozenset[bool]:
    """Does owner B make its port unusable for N's port-0 bind, in each world B may be in?"""
    if n.proto is Proto.UDP:
        # udp_lib_lport_inuse() with a bitmap: every port of a blocking owner is marked
        return frozenset(r == _FAIL for r in _udp_results(n, nk, n_dev, b))
    results = set()
    for w in _worlds(b, n_dev):
        bk = _kview(b.family, b.address, w.v6only)
        if not _tcp_compared(nk, bk) or not _dev_compatible(n_dev, w.device):
            results.add(False)
        elif not relax:
            results.add(True)  # inet_bind_conflict(relax=false): no option shares a port picked for us
        else:
            # the relaxed pass of ip_autobind_reuse: only SO_REUSEADDR on both, B not listening, and not a
            # socket N could join through SO_REUSEPORT
            shares = n.reuseaddr and w.reuse and not b.listening
            joins = n.reuseport and w.reuseport and (b.timewait or n.uid == b.uid)
            results.add(not shares or joins)
    return frozenset(results)


def _autobind(n: NewSocket, nk: _K, n_dev: int, owners: Sequence[Owner], ns: Namespace) -> BindVerdict:
    """R-AUTOBIND / R-AUTOBIND-UDP: is any port of the range left for N's address and protocol?"""
    rule = "R-AUTOBIND" if n.proto is Proto.TCP else "R-AUTOBIND-UDP"
    ports = autobind_ports(n, ns)
    by_port: dict[int, list[Owner]] = {}
    for b in owners:
        if b.proto is n.proto and b.state is not State.SYN_RECV:
            by_port.setdefault(b.port, []).append(b)
    if any(port not in by_port for port in ports):  # the usual case: a port nobody holds
        return BindVerdict(Verdict.YES, None, None, rule, (), (reason(ReasonCode.AUTOBIND, proto=n.proto.value),))
    passes = [False, True] if n.proto is Proto.TCP and ns.autobind_reuse else [False]
    maybe: list[Owner] = []
    for relax in passes:
        for port in ports:
            verdicts = [_autobind_conflicts(n, nk, n_dev, b, relax) for b in by_port[port]]
            if all(v == {False} for v in verdicts):
                return BindVerdict(
                    Verdict.YES, None, None, rule, (), (reason(ReasonCode.AUTOBIND, proto=n.proto.value),)
                )
            if not any(v == {True} for v in verdicts):
                maybe += [b for b, v in zip(by_port[port], verdicts, strict=True) if True in v]
    low, high = ns.local_port_range
    exhausted = reason(
        ReasonCode.PORTS_EXHAUSTED, proto=n.proto.value, low=low, high=high, reserved=len(ns.reserved_ports)
    )
    wider = (min(low, DEFAULT_PORT_RANGE[0]), max(high, DEFAULT_PORT_RANGE[1]))
    fixes = (action(ActionKind.USE_ANOTHER_PORT, at_least=None),)
    if wider != (low, high):
        fixes = (action(ActionKind.SET_SYSCTL, name="net.ipv4.ip_local_port_range", value=f"{wider[0]} {wider[1]}"),)
        fixes += (action(ActionKind.USE_ANOTHER_PORT, at_least=None),)
    if maybe:
        return BindVerdict(
            Verdict.UNCERTAIN,
            "EADDRINUSE",
            Stage.BIND,
            rule,
            tuple(maybe),
            (reason(ReasonCode.DEPENDS_ON_HIDDEN, socket=maybe[0], count=len(maybe)), exhausted),
            uncertainty=tuple(_hidden_flags(maybe)),
        )
    blockers = tuple(b for port in ports for b in by_port[port])
    return BindVerdict(Verdict.NO, "EADDRINUSE", Stage.BIND, rule, blockers, (exhausted,), fixes)


# ---------------------------------------------------------------------------------------------------
# The entry point


def decide(n: NewSocket, owners: Sequence[Owner], ns: Namespace) -> BindVerdict:
    """Would bind() (and, for TCP, listen()) of ``n`` succeed next to ``owners`` in namespace ``ns``?"""
    failure, nk, n_dev = _precheck(n, ns)
    if failure is not None:
        return failure
    if n.port == 0:
        verdict = _autobind(n, nk, n_dev, owners, ns)
    else:
        owners = [b for b in owners if b.proto is n.proto and b.port == n.port and b.state is not State.SYN_RECV]
        decide_table = _decide_tcp if n.proto is Proto.TCP else _decide_udp
        verdict = decide_table(n, nk, n_dev, owners, ns)
    if verdict.verdict is Verdict.YES and not ns.bound_visible and n.proto is Proto.TCP:
        return replace(
            verdict,
            verdict=Verdict.UNCERTAIN,
            errno="EADDRINUSE",
            stage=Stage.BIND,
            uncertainty=(*verdict.uncertainty, uncertainty(UncertaintyCode.BOUND_INVISIBLE)),
        )
    return verdict


__all__ = [
    "BindBucket",
    "BindVerdict",
    "Ipv6Address",
    "LocalRoute",
    "Namespace",
    "NewSocket",
    "Owner",
    "Stage",
    "Verdict",
    "autobind_ports",
    "decide",
    "fastpath_matches",
    "rcv_saddr_equal",
]
