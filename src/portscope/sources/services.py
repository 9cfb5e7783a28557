"""/etc/services lookups, both ways, with the file as a parameter.

A missing or unreadable file is not an error: lookups then find no names, and name -> port input
says the name is unknown.
"""

from __future__ import annotations

import functools
from dataclasses import field

from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Proto

DEFAULT_SERVICES_PATH = "/etc/services"


@dataclass_lite(frozen=True)
class Services:
    path: str
    available: bool
    by_port: dict[tuple[int, str], str] = field(default_factory=dict)
    by_name: dict[tuple[str, str], int] = field(default_factory=dict)

    def name_of(self, port: int, proto: Proto | str) -> str | None:
        return self.by_port.get((port, proto.value if isinstance(proto, Proto) else proto))

    def port_of(self, text: str, proto: Proto | None = None) -> int:
        """Resolve ``ssh`` or ``http/tcp`` to a port; a name known for both protocols is fine."""
        name, _, proto_text = text.strip().lower().partition("/")
        if proto_text:
            if proto_text not in ("tcp", "udp"):
                raise UsageError(f"unknown protocol '{proto_text}' in '{text}' (use tcp or udp)")
            protos = [proto_text]
        elif proto is not None:
            protos = [proto.value]
        else:
            protos = ["tcp", "udp"]
        for candidate in protos:
            port = self.by_name.get((name, candidate))
            if port is not None:
                return port
        where = self.path if self.available else f"{self.path} (not readable)"
        raise UsageError(f"unknown service '{text}' (looked in {where})")


def parse_services(text: str, path: str = DEFAULT_SERVICES_PATH) -> Services:
    """Parse services(5) text. A line that does not parse (no ``PORT/PROTO``, a port outside 1-65535,
    digits that are not ASCII) is skipped: anyone who can write the file must not break the commands."""
    by_port: dict[tuple[int, str], str] = {}
    by_name: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        port_text, _, proto = fields[1].partition("/")
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) or not proto:
            continue
        port = int(port_text)
        if not 1 <= port <= 65535:
            continue
        proto = proto.lower()
        by_port.setdefault((port, proto), fields[0])
        for name in fields[:1] + fields[2:]:
            by_name.setdefault((name.lower(), proto), port)
    return Services(path=path, available=True, by_port=by_port, by_name=by_name)


@functools.lru_cache(maxsize=4)
def load_services(path: str = DEFAULT_SERVICES_PATH) -> Services:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_services(handle.read(), path)
    except OSError:
        return Services(path=path, available=False)
