"""The stable JSON interface, documented in README.md (schema version 1: keys are added, never changed).

Socket objects are shared by ``ls --json``, ``who --json`` and ``can-bind --json``. Large listings
are written with a template per record instead of ``json.dumps`` of dicts: the keys are fixed and
most values are numbers or addresses, so only names, users and command lines need escaping.

Strings are written as ``json.dumps(..., ensure_ascii=False)`` writes them (letters of every script
stay UTF-8), except that nothing a terminal or a reader acts on is left raw: every character that is
not printable (``str.isprintable()``: C0 and C1 controls, DEL, bidi controls, U+2028/2029, format
characters) is a ``\\uXXXX`` escape, so the parsed value is unchanged. A string holding bytes that are
not UTF-8 (an interface or user name the kernel gave as bytes: lone surrogates in Python) cannot be a
JSON string: it is given in the escaped text form of :mod:`portscope.render.text` (the byte as
``\\xNN``, backslashes doubled), as the text output shows it. The output is valid UTF-8 always.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from portscope.engine.parallel import DEFAULT, Parallelism
from portscope.model.records import Detail, Holder, Snapshot, Socket, State, UnixSocket
from portscope.render.splitwriter import Write, write_in_two
from portscope.render.text import has_surrogates, safe_text
from portscope.sources.services import Services

try:  # the C encoder of ensure_ascii=False (quotes, \\ and C0 escaped), without the json package: its import
    from _json import encode_basestring  # compiles the decoder's patterns (~6M instructions), unused by ls --json
except ImportError:  # pragma: no cover - a Python without the C accelerator
    from json.encoder import encode_basestring

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import IO, Any

    from portscope.commands.places import Places


def _unicode_escape(char: str) -> str:
    if char.isprintable():
        return char
    code = ord(char)
    if code > 0xFFFF:  # JSON escapes are UTF-16 units
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _escape_nonprintable(text: str) -> str:
    """JSON text (no raw newline in it) with every character that is not printable escaped."""
    return text if text.isprintable() else "".join(map(_unicode_escape, text))


def json_string(value: str) -> str:
    """One string as JSON text, escaped as the module docstring says; printable text at C speed."""
    if value.isprintable():
        return encode_basestring(value)
    if has_surrogates(value):
        value = safe_text(value)
    return _escape_nonprintable(encode_basestring(value))


def _valid(value: Any) -> Any:
    """``value`` with each string that holds bytes that are not UTF-8 in its escaped text form."""
    if isinstance(value, str):
        return value if value.isprintable() or not has_surrogates(value) else safe_text(value)
    if isinstance(value, dict):
        return {key: _valid(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_valid(item) for item in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """``json.dumps(value, indent=indent, ensure_ascii=False)``, escaped as the module docstring says."""
    import json  # not for the socket objects of ls --json (written from templates)

    text = json.dumps(_valid(value), indent=indent, ensure_ascii=False)
    # Inside strings a newline is already "\\n": the raw ones are the layout's.
    return "\n".join(map(_escape_nonprintable, text.split("\n")))


def holder_object(holder: Holder) -> dict[str, Any]:
    process = holder.process
    return {
        "pid": process.pid,
        "name": process.name,
        "user": process.user,
        "cmdline": list(process.cmdline),
        "fd": holder.fds[0] if holder.fds else None,
        "fds": list(holder.fds),
        "tid": holder.tid,
    }


def container_object(container) -> dict[str, Any] | None:
    """``{"runtime", "id", "name", "pod", "namespace"}`` of a sources.containers.ContainerInfo."""
    if container is None:
        return None
    return {
        "runtime": container.runtime,
        "id": container.id,
        "name": container.name,
        "pod": container.pod,
        "namespace": container.namespace,
    }


def forward_object(forward) -> dict[str, Any] | None:
    """``{"kind", "container", "address", "port", "netns"}`` of a sources.forwarders.Forward."""
    if forward is None:
        return None
    return {
        "kind": forward.kind,
        "container": container_object(forward.container),
        "address": forward.target_address,
        "port": forward.target_port,
        "netns": forward.netns_inode,
    }


def place_objects(sock: Socket, holders: tuple[Holder, ...], places: Places | None) -> tuple[Any, Any, Any]:
    """(netns_name, container, forwards_to) as JSON values: all null without places."""
    if places is None:
        return None, None, None
    return (
        places.netns_name(sock.netns),
        container_object(places.container(sock, holders)),
        forward_object(places.forward(sock, holders)),
    )


def socket_object(
    sock: Socket,
    holders: Iterable[Holder],
    services: Services | None,
    places: Places | None = None,
    details: Snapshot | None = None,
) -> dict[str, Any]:
    """One socket as the JSON interface describes it (with ``details``, a snapshot that asked for them:
    the ``tcp_info`` and ``memory`` keys of ls -i and -m)."""
    holders = tuple(holders)
    service = services.name_of(sock.local_port, sock.proto) if services is not None else None
    netns_name, container, forwards_to = place_objects(sock, holders, places)
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
        "netns_name": netns_name,
        "container": container,
        "forwards_to": forwards_to,
        "processes": [holder_object(h) for h in holders],
        **(_detail_objects(details, sock) if details is not None and details.details_asked else {}),
    }


def _detail_objects(snap: Snapshot, sock: Socket) -> dict[str, Any]:
    from portscope.render.details import detail_objects  # only when details were asked for

    return detail_objects(snap.details_asked, snap.details_of(sock))


def unix_socket_object(sock: UnixSocket, holders: Iterable[Holder], peer_holders: Iterable[Holder]) -> dict[str, Any]:
    """One UNIX socket as the JSON interface describes it (README: UNIX socket objects)."""
    return {
        "proto": "unix",
        "type": sock.type.value,
        "state": sock.state.value,
        "path": sock.path,
        "inode": sock.inode,
        "peer_inode": sock.peer_inode,
        "recv_q": sock.recv_q,
        "send_q": sock.send_q,
        "netns": sock.netns,
        "processes": [holder_object(h) for h in holders],
        "peer_processes": [holder_object(h) for h in peer_holders],
    }


def _text(value: str | None) -> str:
    return "null" if value is None else json_string(value)


_BOOL = {None: "null", True: "true", False: "false"}
JSON_CHUNK = 256  # socket objects per write(): about 100 KB, under malloc's mmap threshold (no fresh pages per chunk)


def write_sockets(
    out: IO[str],
    snap: Snapshot,
    services: Services | None,
    places: Places | None = None,
    *,
    parallelism: Parallelism = DEFAULT,
) -> None:
    """Write ``ls --json``: a JSON array, one object per socket, equal to :func:`socket_object`.

    Text for json.loads, laid out like ``json.dumps`` of those objects (", " and ": "), one object a line.
    A large listing to a file or pipe is written by two processes where ``parallelism`` allows it
    (:class:`SplitWriter`): the same text.
    """
    _write_objects(out, snap, services, places, parallelism, opening="[\n", between=",\n", closing="\n]\n")


def write_socket_lines(
    out: IO[str],
    snap: Snapshot,
    services: Services | None,
    places: Places | None = None,
    *,
    parallelism: Parallelism = DEFAULT,
) -> None:
    """Write ``ls --jsonl`` (JSON Lines): the objects of ``ls --json``, the same text, one a line."""
    _write_objects(out, snap, services, places, parallelism, opening="", between="\n", closing="\n")


def _write_objects(
    out: IO[str],
    snap: Snapshot,
    services: Services | None,
    places: Places | None,
    parallelism: Parallelism,
    *,
    opening: str,
    between: str,
    closing: str,
) -> None:
    """The socket objects, ``between`` each two, after ``opening`` and before ``closing`` (``opening`` and
    ``closing`` without their line breaks when there is none: ``[]``)."""
    count = len(snap.sockets)
    half = count // 2 if parallelism.split_render(count) else 0
    chunks = socket_text_chunks(snap, services, places, stop=half or None)
    first = next(chunks, None)  # made before a fork: the places' lookups (namespace names...) are then made once
    if first is None:
        out.write(opening.rstrip("\n") + closing.lstrip("\n"))
        return

    def write_part(write: Write, start: int, stop: int) -> None:
        # the first part's objects are those of ``chunks`` (up to ``half``, or all); a second part's run to the
        # end, the UNIX sockets' included
        if start:
            rest = socket_text_chunks(snap, services, places, start=start)
        else:
            write(between.join(first))
            rest = chunks
        for chunk in rest:
            write(between)
            write(between.join(chunk))

    out.write(opening)
    write_in_two(out, half, count, write_part)
    out.write(closing)


def socket_texts(snap: Snapshot, services: Services | None, places: Places | None = None) -> Iterator[str]:
    """Each socket's object as JSON text, equal to ``json.dumps(socket_object(...), ensure_ascii=False)``
    (escaped as the module docstring says), in the snapshot's order."""
    for chunk in socket_text_chunks(snap, services, places):
        yield from chunk


def socket_text_chunks(
    snap: Snapshot,
    services: Services | None,
    places: Places | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[list[str]]:
    """The texts of :func:`socket_texts`, in lists of up to ``JSON_CHUNK`` (one ``write()`` each); with
    ``start`` and ``stop``, those of ``snap.sockets[start:stop]`` only, then the UNIX sockets unless ``stop``
    is given.

    The hot loop of ``ls --json`` at 100k sockets: what repeats from socket to socket (the keys up to the
    address for each proto, family and state, peer addresses, queue lengths, uids, the end of a socket without
    device, timer, process or service) is made once and looked up; ports and inodes are formatted."""
    holders_get = snap.holders.get if snap.holders else None
    names = services.by_port if services is not None else None
    service_json: dict[str, dict[int, str]] = {"tcp": {}, "udp": {}}  # proto -> port -> text
    process_json: dict[int, str] = {}  # id(Process) -> its object's text up to the fd keys
    plain_tails: dict[tuple[bool | None, str, int | None], str] = {}  # the end of a socket without extras
    heads: dict[tuple, dict[State, str]] = {}  # (proto, family) -> state -> the object's text up to the address
    # texts made once per distinct value of the fields whose values repeat from socket to socket (addresses,
    # queue lengths, uids; not ports, nearly unique on a busy host), each with the key that follows it (fewer
    # pieces to join per socket), looked up with a plain dict subscript; a value not seen yet raises KeyError
    # and is learned. Addresses are inet_ntop's text: nothing to escape.
    local_texts: dict[str, str] = {}  # '"ADDRESS", "local_port": '
    remote_texts: dict[str | None, str] = {}  # ', "remote_address": "ADDRESS", "remote_port": '
    recv_texts: dict[int | None, str] = {}  # ', "recv_q": N, "send_q": '
    send_texts: dict[int | None, str] = {}  # 'N, "uid": '
    uid_texts: dict[int | None, str] = {}  # 'N, "inode": '

    def learn(sock: Socket) -> None:
        address, remote = sock.local_address, sock.remote_address
        recv_q, send_q, uid = sock.recv_q, sock.send_q, sock.uid
        local_texts[address] = f'"{address}", "local_port": '
        remote_text = "null" if remote is None else f'"{remote}"'
        remote_texts[remote] = f', "remote_address": {remote_text}, "remote_port": '
        recv_texts[recv_q] = f', "recv_q": {"null" if recv_q is None else recv_q}, "send_q": '
        send_texts[send_q] = f'{"null" if send_q is None else send_q}, "uid": '
        uid_texts[uid] = f'{"null" if uid is None else uid}, "inode": '

    bools = _BOOL
    extra_text = None
    if snap.details_asked & {Detail.INFO, Detail.MEMORY}:
        from portscope.render.details import detail_json

        asked, details_of = snap.details_asked, snap.details_of

        def extra_text(sock: Socket) -> str:  # the closing brace replaced by the detail keys (ls -i, -m)
            return detail_json(asked, details_of(sock)) + "}"

    def service_text(port: int, proto: str) -> str:
        if names is None:
            return "null"
        by_port = service_json[proto] if proto in service_json else service_json.setdefault(proto, {})
        text = by_port.get(port)
        if text is None:
            text = by_port[port] = _text(names.get((port, proto)))
        return text

    def heads_of(proto, family) -> dict[State, str]:
        table = heads[proto, family] = {
            state: f'{{"proto": "{proto._value_}", "family": "{family._value_}", "state": "{state._value_}", '
            '"local_address": '
            for state in State
        }
        return table

    def processes_text(holders: tuple[Holder, ...]) -> str:
        parts = []
        for holder in holders:
            process = holder.process
            head = process_json.get(id(process))
            if head is None:
                head = process_json[id(process)] = (
                    f'{{"pid": {process.pid}, "name": {json_string(process.name)}, "user": {_text(process.user)}, '
                    f'"cmdline": [{", ".join(map(json_string, process.cmdline))}]'
                )
            fds = holder.fds
            tid = "null" if holder.tid is None else holder.tid
            if len(fds) == 1:
                parts.append(f'{head}, "fd": {fds[0]}, "fds": [{fds[0]}], "tid": {tid}}}')
            elif fds:
                parts.append(f'{head}, "fd": {fds[0]}, "fds": [{", ".join(map(str, fds))}], "tid": {tid}}}')
            else:
                parts.append(f'{head}, "fd": null, "fds": [], "tid": {tid}}}')
        return f"[{', '.join(parts)}]"

    place_texts: dict[tuple, str] = {}  # the same namespace and holders give the same place

    def place_text(sock: Socket, holders: tuple[Holder, ...] | None) -> str:
        pids = tuple(h.process.pid for h in holders) if holders else ()
        # only a listener can be a forwarder's: the others' place is their namespace's and holders'
        listener = sock.state is State.LISTEN or sock.state is State.UNCONN
        key = (sock.netns, pids, (sock.local_address, sock.local_port, sock.proto) if listener else None)
        text = place_texts.get(key)
        if text is None:
            netns_name, container, forwards_to = place_objects(sock, holders or (), places)
            text = place_texts[key] = (
                f'"netns_name": {_text(netns_name)}, '
                f'"container": {"null" if container is None else dumps(container)}, '
                f'"forwards_to": {"null" if forwards_to is None else dumps(forwards_to)}'
            )
        return text

    def tail_text(sock: Socket, service: str, holders: tuple[Holder, ...] | None) -> str:
        interface = sock.interface
        timer_ms = sock.timer_ms
        netns = sock.netns
        return (
            f'"interface": {"null" if interface is None else json_string(interface)}, '
            f'"v6only": {bools[sock.v6only]}, "service": {service}, "timer": {_text(sock.timer)}, '
            f'"timer_ms": {"null" if timer_ms is None else timer_ms}, "netns": {"null" if netns is None else netns}, '
            f'{place_text(sock, holders)}, "processes": {processes_text(holders) if holders else "[]"}}}'
        )

    def plain_tail(sock: Socket, service: str) -> str:
        key = (sock.v6only, service, sock.netns)
        text = plain_tails.get(key)
        if text is None:
            text = plain_tails[key] = tail_text(sock, service, None)
        return text

    last_proto = last_family = head_by_state = None
    last_v6only = last_netns = last_tail = None
    null = "null"
    chunk_size = JSON_CHUNK
    chunk: list[str] = []
    append = chunk.append
    for sock in snap.sockets[start:stop] if start or stop is not None else snap.sockets:
        proto = sock.proto
        family = sock.family
        if proto is not last_proto or family is not last_family:
            head_by_state = heads.get((proto, family)) or heads_of(proto, family)
            last_proto, last_family = proto, family
        port = sock.local_port
        service = null if names is None else service_text(port, proto._value_)
        inode = sock.inode
        holders = holders_get(inode) if holders_get is not None and inode is not None else None
        if holders or sock.interface is not None or sock.timer is not None or sock.timer_ms is not None:
            tail = tail_text(sock, service, holders)
        elif service is null and sock.v6only is last_v6only and sock.netns == last_netns and last_tail is not None:
            tail = last_tail  # most sockets end as the one before: no device, timer, process or service
        else:
            tail = plain_tail(sock, service)
            if service is null:
                last_v6only, last_netns, last_tail = sock.v6only, sock.netns, tail
        remote_port = sock.remote_port
        while True:  # once, or twice when a value is new
            try:
                text = (
                    f"{head_by_state[sock.state]}{local_texts[sock.local_address]}{port}"  # type: ignore[index]
                    f"{remote_texts[sock.remote_address]}{null if remote_port is None else remote_port}"
                    f"{recv_texts[sock.recv_q]}{send_texts[sock.send_q]}{uid_texts[sock.uid]}"
                    f"{null if inode is None else inode}, {tail}"
                )
                break
            except KeyError:
                learn(sock)
        append(text if extra_text is None else text[:-1] + extra_text(sock))
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
            append = chunk.append
    for usock in snap.unix_sockets if stop is None else ():  # after the IP sockets, as unix_socket_object() writes them
        holders = holders_get(usock.inode) if holders_get is not None else None
        peer = usock.peer_inode
        peer_holders = holders_get(peer) if holders_get is not None and peer is not None else None
        recv_q = usock.recv_q
        send_q = usock.send_q
        netns = usock.netns
        append(
            f'{{"proto": "unix", "type": "{usock.type._value_}", "state": "{usock.state._value_}", '
            f'"path": {_text(usock.path)}, "inode": {usock.inode}, '
            f'"peer_inode": {"null" if peer is None else peer}, '
            f'"recv_q": {"null" if recv_q is None else recv_q}, "send_q": {"null" if send_q is None else send_q}, '
            f'"netns": {"null" if netns is None else netns}, '
            f'"processes": {processes_text(holders) if holders else "[]"}, '
            f'"peer_processes": {processes_text(peer_holders) if peer_holders else "[]"}}}'
        )
        if len(chunk) == JSON_CHUNK:
            yield chunk
            chunk = []
            append = chunk.append
    if chunk:
        yield chunk


def dump(value: Any, out: IO[str]) -> None:
    """Small documents (who, can-bind): plain json with stable indentation."""
    out.write(dumps(value, indent=2) + "\n")
