"""``ADDR:PORT`` and ``ADDR[/LEN]`` as people type them, parsed once for every command.

:func:`parse_endpoint` takes the forms both ``who`` and ``can-bind`` accept: ``8080``, ``:8080``,
``*:8080``, ``127.0.0.1:8080``, ``[::1]:8080``, ``[fe80::1%eth0]:80``, a service name (``ssh``,
``:http``), a ``/tcp`` or ``/udp`` suffix, and (where allowed) ranges, host names, port 0 and zone ids.
What a command makes of the result is a thin layer: :func:`parse_target` here for can-bind,
:func:`portscope.commands.who.parse_target` for who. :func:`parse_network` reads ``ls --src/--dst``
with the same address grammar (brackets, zone ids on link-local addresses) and a prefix length.
Pure: the services table is a parameter and host names are only checked for shape (can-bind
resolves them later).
"""

from __future__ import annotations

import _socket as socket  # the C module (see sources/netlink.py)
import re

from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import PortRange, parse_port_range
from portscope.model.records import Family, Proto

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:  # ipaddress is loaded where an address is parsed (7M instructions: who 8080 and ls need none)
    import ipaddress

    from portscope.sources.services import Services

    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
_NUMBER_OR_RANGE = re.compile(r"[0-9]+(-[0-9]+)?")
_IPV4_LIKE = re.compile(r"[0-9]*(\.[0-9]*){3}")  # "127.0.0.1" alone: an address that lacks its port


@dataclass_lite(frozen=True, slots=True)
class Endpoint:
    """A parsed ``ADDR:PORT``, before a command gives it meaning."""

    address: IPAddress | None  # a literal address; None: any address (":80", "*:80", "80") or a host name
    hostname: str | None  # a name to resolve (only where host names are allowed)
    zone: str | None  # the zone id after '%' in [fe80::1%eth0] (only where zone ids are allowed)
    ports: PortRange  # one port unless ranges are allowed
    proto: Proto | None  # a /tcp or /udp suffix
    service: str | None  # the service name the port came from (lower case), None for numbers


def _needs_zone(address: ipaddress.IPv6Address) -> bool:
    """Does the kernel use sin6_scope_id for this address (link-local unicast, link/interface-local multicast)?"""
    return address.is_link_local or (address.is_multicast and address.packed[1] & 0x0F in (1, 2))


def _ipv6_with_zone(inner: str, raw: str, zone_ids: bool, rest: str = "") -> tuple[ipaddress.IPv6Address, str | None]:
    """``IPv6`` or ``IPv6%zone`` (the inside of brackets): (address, zone)."""
    import ipaddress

    address_text, percent, zone = inner.partition("%")
    try:
        address = ipaddress.IPv6Address(address_text)
    except ValueError:
        raise UsageError(
            f"not an IPv6 address: '{address_text}' in '{raw}' (brackets are for IPv6 addresses)"
        ) from None
    if percent:
        if not zone:
            raise UsageError(f"empty scope after '%' in '{raw}'")
        if not zone_ids:
            raise UsageError(f"a zone id ('%{zone}') is not used here: give [{address_text}]{rest}")
        if not _needs_zone(address):
            raise UsageError(f"a zone id ('%{zone}') applies only to link-local addresses, not to {address_text}")
        if "/" in zone or not zone.isprintable():
            raise UsageError(f"not an interface name or index: '{zone}' in '{raw}'")
    return address, zone or None


def _bracketed(body: str, raw: str, zone_ids: bool) -> tuple[IPAddress, str | None, str]:
    """``[IPv6]:PORT`` or ``[IPv6%zone]:PORT``: (address, zone, port text)."""
    inner, closed, rest = body[1:].partition("]")
    if not closed:
        raise UsageError(f"malformed address '{raw}': missing ']'")
    if not rest.startswith(":"):
        raise UsageError(f"malformed address '{raw}': missing port after '{body[: len(inner) + 2]}' (use [IPv6]:PORT)")
    address, zone = _ipv6_with_zone(inner, raw, zone_ids, rest)
    return address, zone, rest[1:]


def _host(host: str, raw: str, hostnames: bool) -> tuple[IPAddress | None, str | None]:
    """An unbracketed host: (address, host name); both None for the wildcard."""
    import ipaddress

    if host in ("", "*"):
        return None, None
    if "%" in host:
        raise UsageError(f"a zone id belongs to an IPv6 link-local address in brackets ([fe80::1%eth0]:80): '{raw}'")
    try:
        return ipaddress.IPv4Address(host), None
    except ValueError:
        pass
    if not hostnames:
        raise UsageError(f"malformed address '{host}' in '{raw}' (an IP address; names are not looked up)")
    if host.replace(".", "").isdigit() or not _HOSTNAME.match(host):
        raise UsageError(f"not an IPv4 address or host name: '{host}'")
    return None, host


def parse_endpoint(
    text: str,
    services: Services | None,
    *,
    proto: Proto | None = None,
    ranges: bool = False,
    hostnames: bool = False,
    allow_zero: bool = False,
    zone_ids: bool = False,
) -> Endpoint:
    """Split and check ``[ADDR:]PORT[/PROTO]``.

    ``proto``: the protocol service names are looked up for when there is no suffix (None: either);
    ``ranges``: ``8000-8100``; ``hostnames``: a name instead of an address; ``allow_zero``: port 0;
    ``zone_ids``: ``[fe80::1%eth0]`` (refused otherwise, never ignored).
    """
    raw = text.strip()
    if not raw:
        raise UsageError("empty address (use ADDR:PORT, e.g. 0.0.0.0:8080, [::]:8080 or :8080)")
    body, suffix = raw, None
    if "/" in raw:
        body, _, proto_text = raw.rpartition("/")
        try:
            suffix = Proto(proto_text.lower())
        except ValueError:
            raise UsageError(f"unknown protocol '{proto_text}' in '{raw}' (use tcp or udp)") from None
        if "/" in body:
            raise UsageError(f"malformed address '{raw}': one /PROTO at most")
    address: IPAddress | None = None
    hostname = zone = None
    if body.startswith("["):
        address, zone, port_text = _bracketed(body, raw, zone_ids)
    elif ":" not in body:
        if _IPV4_LIKE.fullmatch(body):
            raise UsageError(f"missing port in '{raw}' (use ADDR:PORT, e.g. {body}:8080)")
        port_text = body  # a bare port or service: any address, like ":8080"
    elif body.count(":") == 1:
        host, _, port_text = body.partition(":")
        address, hostname = _host(host, raw, hostnames)
    else:
        host, _, port_text = body.rpartition(":")
        raise UsageError(f"malformed address '{raw}': put IPv6 addresses in brackets, as in [{host}]:{port_text}")
    if not port_text:
        raise UsageError(f"missing port in '{raw}' (no port after ':')")
    ports = parse_port_range(port_text, services=services, proto=suffix or proto, ranges=ranges, allow_zero=allow_zero)
    service = None if _NUMBER_OR_RANGE.fullmatch(port_text) else port_text.lower()
    return Endpoint(address, hostname, zone, ports, suffix, service)


# ---------------------------------------------------------------------------------------------------
# Address filters: ls --src / --dst


@dataclass_lite(frozen=True, slots=True)
class ScopedNetwork:
    """A link-local network on one interface: ``[fe80::1%eth0]``, ``fe80::/64%eth0``."""

    network: ipaddress.IPv6Network
    zone: str  # an interface name, or its index in decimal

    def __str__(self) -> str:
        return f"{self.network}%{self.zone}"


def parse_network(text: str) -> IPNetwork | ScopedNetwork:
    """``ADDR[/LEN]``: ``10.0.0.0/8``, ``127.0.0.1``, ``::1``, ``[::1]``, ``[::1]/128``, ``[fe80::1%eth0]``,
    ``fe80::1%eth0``, ``fe80::%eth0/64``: the address forms of :func:`parse_endpoint`, without a port.
    A zone id narrows a link-local address to the sockets on that interface.
    """
    import ipaddress

    raw = text.strip()
    body, slash, length = raw, "", ""
    if raw.startswith("["):
        inner, closed, rest = raw[1:].partition("]")
        if not closed or (rest and not rest.startswith("/")):
            raise UsageError(f"not an address or CIDR: '{text}' (use ADDR, ADDR/LEN or [IPv6]/LEN)")
        body, slash, length = inner, rest[:1], rest[1:]
        if "%" not in inner and not _is_ipv6(inner):
            raise UsageError(f"not an IPv6 address: '{inner}' in '{text}' (brackets are for IPv6 addresses)")
    else:
        body, slash, length = raw.partition("/")
    address_text, percent, _ = body.partition("%")
    zone = None
    if percent:
        if ":" not in address_text:
            raise UsageError(f"a zone id belongs to an IPv6 link-local address ([fe80::1%eth0]): '{text}'")
        _, zone = _ipv6_with_zone(body, raw, zone_ids=True)
    try:
        network = ipaddress.ip_network(address_text + (f"/{length}" if slash else ""), strict=False)
    except ValueError:
        raise UsageError(f"not an address or CIDR: '{text}'") from None
    if zone is None:
        return network
    assert isinstance(network, ipaddress.IPv6Network)
    if not _needs_zone(network.network_address):
        raise UsageError(f"a zone id ('%{zone}') applies only to link-local addresses, not to {network}")
    return ScopedNetwork(network, zone)


def _is_ipv6(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def on_interface(zone: str, ifindex: int | None, interface: str | None) -> bool | None:
    """Is a socket bound to device ``ifindex`` (named ``interface``) on the interface a zone id names?

    None when the source cannot tell the socket's device (``/proc``).
    """
    if ifindex is None:
        return None
    if zone.isdigit():
        return ifindex == int(zone)
    return interface == zone


# ---------------------------------------------------------------------------------------------------
# can-bind's reading


@dataclass_lite(frozen=True)
class Target:
    port: int
    family: Family | None  # None: a wildcard of the chosen family, or a name to resolve
    address: str | None  # a literal address, None for ":PORT" or a host name
    hostname: str | None = None
    scope: str | None = None  # the text after % in [fe80::1%eth0]


def parse_target(text: str, proto: Proto, services: Services | None) -> Target:
    """can-bind's ``ADDR:PORT``: one port (0 too), host names resolved later, zone ids used."""
    endpoint = parse_endpoint(text, services, proto=proto, hostnames=True, allow_zero=True, zone_ids=True)
    if endpoint.proto is not None and endpoint.proto is not proto:
        raise UsageError(
            f"'{text.strip()}' names {endpoint.proto.value}, but the new socket is {proto.value} (see --udp)"
        )
    port = endpoint.ports.low
    address = endpoint.address
    if address is None:
        return Target(port, None, None, hostname=endpoint.hostname)
    if address.version == 4:
        return Target(port, Family.IPV4, str(address))
    text6 = socket.inet_ntop(socket.AF_INET6, address.packed)  # as the kernel and ss print it (::ffff:a.b.c.d)
    return Target(port, Family.IPV6, text6, scope=endpoint.zone)
