"""Zone ids (``[fe80::1%eth0]``) checked against the interfaces of the namespace they are used in."""

from __future__ import annotations

import socket

from portscope.errors import UsageError
from portscope.sources import netns


def check_zone(zone: str, netns_spec: str | None) -> None:
    """A zone id must name an interface (or its index) of the namespace: exit 2 otherwise, where bind()
    would say ENODEV. ``netns_spec``: as given to ``--netns`` (None: this namespace)."""
    target = netns.resolve(netns_spec) if netns_spec else None
    with netns.entered(target):
        interfaces = socket.if_nameindex()
    if not any(zone == name or (zone.isdigit() and int(zone) == index) for index, name in interfaces):
        known = ", ".join(sorted(name for _, name in interfaces)) or "none"
        raise UsageError(f"unknown interface {zone!r} in the zone id (known: {known})")
