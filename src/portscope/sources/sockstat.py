"""The kernel's socket counters: ``/proc/net/sockstat``, ``/proc/net/sockstat6`` and ``Tcp: CurrEstab`` of
``/proc/net/snmp``, read in the current thread's network namespace.

Which counters are per namespace and which are host-wide is the kernel's choice (Linux 6.x): ``sockets:
used``, every ``inuse``, ``tw`` and ``CurrEstab`` count this namespace; TCP ``orphan`` and ``alloc`` and
every ``mem`` count the whole host.
"""

from __future__ import annotations

import itertools
import os

from portscope.errors import SourceError

Counters = dict[str, dict[str, int]]  # "TCP" -> {"inuse": 2, "orphan": 0, ...}; "sockets" -> {"used": 18}
HOST_WIDE = frozenset({("TCP", "orphan"), ("TCP", "alloc"), ("TCP", "mem"), ("UDP", "mem"), ("FRAG", "memory")})


def parse_sockstat(text: str, source: str) -> Counters:
    """``NAME: key value key value ...`` lines; the trailing colon is dropped from the name."""
    counters: Counters = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if not words[0].endswith(":") or len(words) % 2 != 1:
            raise SourceError(source, f"line {number}: cannot parse {line[:60]!r}")
        values = {}
        for key, value in zip(words[1::2], words[2::2], strict=True):
            if not (value.isascii() and value.isdigit()):
                raise SourceError(source, f"line {number}: not a number: {value[:20]!r}")
            values[key] = int(value)
        counters[words[0][:-1]] = values
    return counters


def parse_snmp_value(text: str, group: str, name: str) -> int | None:
    """One value of ``/proc/net/snmp`` (a header line of names, then a line of values, per group)."""
    lines = text.splitlines()
    for header, values in itertools.pairwise(lines):
        names = header.split()
        numbers = values.split()
        if names[:1] == [f"{group}:"] and numbers[:1] == [f"{group}:"] and name in names:
            value = numbers[names.index(name)] if len(numbers) == len(names) else ""
            return int(value) if value.lstrip("-").isdigit() else None
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from None


def read_counters(net_dir: str = "/proc/thread-self/net") -> tuple[Counters, int | None]:
    """The sockstat and sockstat6 counters of this namespace, and TCP's CurrEstab (None if unreadable).

    sockstat6 is missing when IPv6 is off: its counters are then absent, not zero.
    """
    path = os.path.join(net_dir, "sockstat")
    text = _read(path)
    if text is None:
        raise SourceError(path, "not found")
    counters = parse_sockstat(text, path)
    path6 = os.path.join(net_dir, "sockstat6")
    text6 = _read(path6)
    if text6 is not None:
        counters.update(parse_sockstat(text6, path6))
    snmp = _read(os.path.join(net_dir, "snmp"))
    return counters, parse_snmp_value(snmp, "Tcp", "CurrEstab") if snmp is not None else None
