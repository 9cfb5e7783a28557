"""The local addresses of a network namespace, read from /proc text (no netlink, no pyroute2).

* IPv4: the routes of the local table from ``net/fib_trie`` (``local`` for each address and for
  127.0.0.0/8, ``broadcast``, ...): what ``bind()`` consults to decide whether an address is local.
* IPv6: ``net/if_inet6``: address, interface, scope and the DAD flags.

The parsers are pure (text in, records out) and skip what they cannot parse line by line, so one odd
line never hides the rest. :func:`read_local_addresses` takes the ``net`` directory as a parameter;
``/proc/thread-self/net`` follows the reading thread's network namespace (see :mod:`.netns`).
"""

from __future__ import annotations

import ipaddress
import os
import re

from portscope.errors import SourceError
from portscope.model.dataclass_lite import dataclass_lite

DEFAULT_NET_DIR = "/proc/thread-self/net"

IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
# if_inet6 prints the kernel's address scope bits (IFA_HOST, IFA_LINK, IFA_SITE); tested in this order,
# as rt_scope() does when it reports them over netlink
_SCOPE_BITS = ((0x10, "host"), (0x20, "link"), (0x40, "site"))

_LEAF = re.compile(r"\|-- ([0-9]{1,3}(?:\.[0-9]{1,3}){3})")
_ALIAS = re.compile(r"/([0-9]{1,2}) [a-z]+ (?:type )?([A-Za-z0-9_]+)\b")
_IF_INET6 = re.compile(r"([0-9a-f]{32}) ([0-9a-f]{1,8}) ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2,8}) +(\S{1,64})")


@dataclass_lite(frozen=True, slots=True)
class Ipv4Route:
    """A route of the local table (``ip route show table local``)."""

    network: ipaddress.IPv4Network
    kind: str  # local, broadcast, multicast, anycast, ... (lower case; a number for a type without a name)


@dataclass_lite(frozen=True, slots=True)
class Ipv6Entry:
    """One line of ``if_inet6``."""

    address: ipaddress.IPv6Address
    ifindex: int
    prefixlen: int
    scope: str  # global, site, link, host
    flags: int  # IFA_F_* (the low byte the file shows)
    interface: str

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dadfailed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)

    @property
    def optimistic(self) -> bool:
        return bool(self.flags & IFA_F_OPTIMISTIC)


@dataclass_lite(frozen=True, slots=True)
class LocalAddresses:
    ipv4_routes: tuple[Ipv4Route, ...]
    ipv6: tuple[Ipv6Entry, ...]

    @property
    def ipv4_addresses(self) -> tuple[ipaddress.IPv4Address, ...]:
        """The host's own IPv4 addresses: the ``/32 local`` routes, in file order, once each."""
        found = dict.fromkeys(
            r.network.network_address for r in self.ipv4_routes if r.kind == "local" and r.network.prefixlen == 32
        )
        return tuple(found)


def parse_fib_trie(text: str) -> tuple[Ipv4Route, ...]:
    """The local table's routes in ``/proc/net/fib_trie`` text.

    The file prints each table under a heading (``Main:``, ``Local:``); while no policy rules exist the
    kernel keeps both tables in one trie and prints main's routes under ``Local:`` too, so unicast
    routes are left out: an address without a local-table route is unicast anyway.
    """
    routes: dict[Ipv4Route, None] = {}
    in_local = "Local:" not in text  # no headings (an old kernel): a single table
    key: str | None = None
    for line in text.splitlines():
        if line[:1] not in ("", " "):  # a table heading
            in_local = line.strip() == "Local:"
            key = None
            continue
        if not in_local:
            continue
        stripped = line.strip()
        leaf = _LEAF.fullmatch(stripped)
        if leaf:
            key = leaf.group(1)
            continue
        alias = _ALIAS.match(stripped)
        if alias is None or key is None:
            continue
        kind = alias.group(2).lower()
        if kind == "unicast":
            continue
        try:
            network = ipaddress.IPv4Network(f"{key}/{alias.group(1)}", strict=False)
        except ValueError:  # an octet or prefix length out of range: skip the line
            continue
        routes[Ipv4Route(network, kind)] = None
    return tuple(routes)


def parse_if_inet6(text: str) -> tuple[Ipv6Entry, ...]:
    """``/proc/net/if_inet6``: address, ifindex, prefix length, scope, flags, interface (hex but the name)."""
    found = []
    for line in text.splitlines():
        match = _IF_INET6.fullmatch(line.strip())
        if match is None:
            continue  # one odd line must not hide the others
        hex_address, index_hex, prefix_hex, scope_hex, flags_hex, name = match.groups()
        prefixlen = int(prefix_hex, 16)
        if prefixlen > 128:
            continue
        scope_bits = int(scope_hex, 16)
        scope = next((word for bit, word in _SCOPE_BITS if scope_bits & bit), "global")
        address = ipaddress.IPv6Address(bytes.fromhex(hex_address))
        found.append(Ipv6Entry(address, int(index_hex, 16), prefixlen, scope, int(flags_hex, 16), name))
    return tuple(found)


def read_local_addresses(net_dir: str = DEFAULT_NET_DIR) -> LocalAddresses:
    """The local table and IPv6 addresses of the namespace ``net_dir`` belongs to.

    Raises :class:`SourceError` when ``fib_trie`` cannot be read (every answer about IPv4 addresses
    would be wrong); a missing ``if_inet6`` means IPv6 is off: no IPv6 addresses.
    """
    path = os.path.join(net_dir, "fib_trie")
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            routes = parse_fib_trie(handle.read())
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from None
    try:
        with open(os.path.join(net_dir, "if_inet6"), encoding="ascii", errors="replace") as handle:
            ipv6 = parse_if_inet6(handle.read())
    except OSError:
        ipv6 = ()
    return LocalAddresses(routes, ipv6)
