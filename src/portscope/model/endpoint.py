"""Parsing ``ADDR:PORT`` for can-bind: ``0.0.0.0:21``, ``[::]:8080``, ``[fe80::1%eth0]:80``, ``:8080``,
``localhost:8080``, ``:http``. Pure: the services table is a parameter; names are resolved later."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from portscope.errors import UsageError
from portscope.model.query import parse_port_number
from portscope.model.records import Family, Proto
from portscope.sources.services import Services

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


@dataclass(frozen=True)
class Target:
    port: int
    family: Family | None  # None: a wildcard of the chosen family, or a name to resolve
    address: str | None  # a literal address, None for ":PORT" or a host name
    hostname: str | None = None
    scope: str | None = None  # the text after % in [fe80::1%eth0]


def _port(text: str, proto: Proto, services: Services | None) -> int:
    text = text.strip()
    if not text:
        raise UsageError("missing port (use ADDR:PORT, e.g. 0.0.0.0:8080 or [::]:8080)")
    if text.isdigit():
        return parse_port_number(text, allow_zero=True)
    if text.lstrip("-").isdigit():
        raise UsageError(f"port {text} is out of range (0-65535)")
    if services is None or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(/(tcp|udp))?", text):
        raise UsageError(f"not a port number or service name: {text!r}")
    return services.port_of(text, proto)


def parse_target(text: str, proto: Proto, services: Services | None) -> Target:
    text = text.strip()
    if not text:
        raise UsageError("empty address (use ADDR:PORT, e.g. 0.0.0.0:8080, [::]:8080 or :8080)")
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise UsageError(f"missing ']' in {text!r}")
        if not rest.startswith(":"):
            raise UsageError(f"missing port after {text[: len(inner) + 2]!r} (use [ADDR]:PORT)")
        address, _, scope = inner.partition("%")
        try:
            parsed = ipaddress.IPv6Address(address)
        except ValueError:
            raise UsageError(f"not an IPv6 address: {address!r}") from None
        if "%" in inner and not scope:
            raise UsageError(f"empty scope after '%' in {text!r}")
        text6 = socket.inet_ntop(socket.AF_INET6, parsed.packed)  # as the kernel and ss print it (::ffff:a.b.c.d)
        return Target(_port(rest[1:], proto, services), Family.IPV6, text6, scope=scope or None)
    if ":" not in text:
        if not text.isdigit() and (text.count(".") == 3 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+/-]*", text)):
            raise UsageError(f"missing port in {text!r} (use ADDR:PORT, e.g. {text}:8080)")
        # a bare port or service: the wildcard, like ":8080"
        return Target(_port(text, proto, services), None, None)
    host, _, port_text = text.rpartition(":")
    if ":" in host:
        raise UsageError(f"put IPv6 addresses in brackets: [{host}]:{port_text}")
    port = _port(port_text, proto, services)
    if not host or host == "*":
        return Target(port, None, None)
    try:
        return Target(port, Family.IPV4, str(ipaddress.IPv4Address(host)))
    except ValueError:
        pass
    if host.replace(".", "").isdigit() or not _HOSTNAME.match(host):
        raise UsageError(f"not an IPv4 address or host name: {host!r}")
    return Target(port, None, None, hostname=host)
