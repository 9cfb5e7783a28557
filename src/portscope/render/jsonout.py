"""The stable JSON interface (schema version in :data:`SCHEMA_VERSION`, documented in README.md).

Socket objects are shared by ``ls --json``, ``who --json`` and ``can-bind --json``. Large listings
are written with a template per record instead of ``json.dumps`` of dicts: the keys are fixed and
most values are numbers or addresses, so only names, users and command lines need escaping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any

from portscope.records import Holder, Snapshot, Socket
from portscope.services import Services

SCHEMA_VERSION = 1

_dumps = json.JSONEncoder(ensure_ascii=False).encode


def holder_object(holder: Holder) -> dict[str, Any]:
    process = holder.process
    return {
        "pid": process.pid,
        "name": process.name,
        "user": process.user,
        "cmdline": list(process.cmdline),
        "fd": holder.fds[0] if holder.fds else None,
        "fds": list(holder.fds),
    }


def socket_object(sock: Socket, holders: Iterable[Holder], services: Services | None) -> dict[str, Any]:
    """One socket as the JSON interface describes it."""
    service = services.name_of(sock.local_port, sock.proto) if services is not None else None
    return {
        "proto": sock.proto.value,
        "family": sock.family.value,
        "state": sock.state.value,
        "local_address": sock.local_address,
        "local_port": sock.local_port,
        "remote_address": sock.remote_address,
        "remote_port": sock.remote_port,
        "recv_q": sock.recv_q,
        "send_q": sock.send_q,
        "uid": sock.uid,
        "inode": sock.inode,
        "interface": sock.interface,
        "v6only": sock.v6only,
        "service": service,
        "timer": sock.timer,
        "timer_ms": sock.timer_ms,
        "netns": sock.netns,
        "processes": [holder_object(h) for h in holders],
    }


def _number(value: int | None) -> str:
    return "null" if value is None else str(value)


def _text(value: str | None) -> str:
    return "null" if value is None else _dumps(value)


_BOOL = {None: "null", True: "true", False: "false"}


def write_sockets(out: IO[str], snap: Snapshot, services: Services | None) -> None:
    """Write ``ls --json``: a JSON array, one object per socket, equal to :func:`socket_object`."""
    holders_of = snap.holders.get
    names = services.by_port if services is not None else {}
    service_json: dict[tuple[int, str], str] = {}
    write = out.write
    write("[")
    first = True
    for sock in snap.sockets:
        proto = sock.proto.value
        key = (sock.local_port, proto)
        service = service_json.get(key)
        if service is None:
            service = service_json[key] = _text(names.get(key))
        processes = "[]"
        if sock.inode is not None:
            holders = holders_of(sock.inode)
            if holders:
                processes = _dumps([holder_object(h) for h in holders])
        remote = sock.remote_address
        write(
            f'{"" if first else ","}\n{{"proto": "{proto}", "family": "{sock.family.value}", '
            f'"state": "{sock.state.value}", "local_address": "{sock.local_address}", '
            f'"local_port": {sock.local_port}, '
            f'"remote_address": {"null" if remote is None else chr(34) + remote + chr(34)}, '
            f'"remote_port": {_number(sock.remote_port)}, "recv_q": {_number(sock.recv_q)}, '
            f'"send_q": {_number(sock.send_q)}, "uid": {_number(sock.uid)}, '
            f'"inode": {_number(sock.inode)}, "interface": {_text(sock.interface)}, '
            f'"v6only": {_BOOL[sock.v6only]}, "service": {service}, "timer": {_text(sock.timer)}, '
            f'"timer_ms": {_number(sock.timer_ms)}, "netns": {_number(sock.netns)}, '
            f'"processes": {processes}}}'
        )
        first = False
    write("\n]\n" if not first else "]\n")


def dump(value: Any, out: IO[str]) -> None:
    """Small documents (who, can-bind): plain json with stable indentation."""
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")
