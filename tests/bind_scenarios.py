"""Bind scenarios built from real sockets in a test namespace, and the kernel oracle that judges them.

A scenario is a list of existing sockets (owners) on one port plus the socket ``can-bind`` asks about.
Owners are real: listeners, bound-only sockets, connected clients, accepted children, TIME-WAIT
sockets of either side, UDP sockets bound or connected; with SO_REUSEADDR / SO_REUSEPORT /
IPV6_V6ONLY / SO_BINDTODEVICE and an owner uid: made by that user (the thread's fsuid at socket(), as a
process running as that user makes it), set with fchown() before bind(), or fchown()ed once bound (the
kernel's SO_REUSEPORT fast path keeps the owner of bind time). Scenarios of one group share a
namespace and use distinct ports: the kernel keeps bind state per (namespace, port), so they do not
interact (ports stay below the ephemeral range and within one UDP hash-table span).

The oracle is a real bind() (and listen() for TCP) of a fresh socket with the same options, run as
the simulated user: fchown() for the socket owner, and a forked child that switched to that uid when
the privileged-port rule is at stake.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netns_util import Netns
from portscope.commands.can_bind import BindReport, BindRequest
from portscope.rules.codes import Coded, UncertaintyCode

PEER_PORT = 45000  # a dual-stack listener clients connect to
OTHER_UID = 40001

SOL_IP = 0
IP_FREEBIND = 15


@dataclass(frozen=True)
class OwnerSpec:
    # listen, bound, client, child, child+listener, tw-server, tw-server+listener, orphan-server, tw-client,
    # orphan-client, ghost (bound, then closed: it only leaves the port's SO_REUSEPORT cache), udp, udp-connected;
    # unaccepted (a connection left in the held listener's accept queue: no process holds it), close-wait (an
    # accepted child whose client closed), autobound and autobound-tw (a client whose port connect() picked,
    # open or then closed into TIME-WAIT: build it before the port's other owners)
    kind: str
    address: str = "127.0.0.1"
    reuseaddr: bool = False
    reuseport: bool = False
    v6only: bool | None = None  # None: the namespace default
    device: str | None = None
    uid: int | None = None  # the owner: made by this user (fsuid at socket()), or fchown()ed before bind()
    uid_via_fchown: bool = False  # set uid with fchown() before bind() (the socket's inode shows a change)
    chown_after: int | None = None  # fchown() to this uid once bound (and listening): the fast path keeps the old
    peer: str | None = None  # child kinds: the address clients connect to (default: loopback of the family)
    port_offset: int = 0  # e.g. 16384: another port in the same UDP hash slot

    @property
    def udp(self) -> bool:
        return self.kind.startswith("udp")

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET


@dataclass(frozen=True)
class NewSpec:
    address: str = "127.0.0.1"
    udp: bool = False
    reuseaddr: bool = False
    reuseport: bool = False
    v6only: bool | None = None
    device: str | None = None
    scope: str | None = None  # [fe80::1%scope]
    uid: int | None = None
    freebind: bool = False
    listen: bool = True

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    def target(self, port: int) -> str:
        if self.family == socket.AF_INET6:
            scope = f"%{self.scope}" if self.scope else ""
            return f"[{self.address}{scope}]:{port}"
        return f"{self.address}:{port}"


@dataclass(frozen=True)
class Scenario:
    name: str
    owners: tuple[OwnerSpec, ...]
    new: NewSpec
    port: int | None = None  # a fixed port (privileged-port cases); default: the group's next port


@dataclass
class Outcome:
    errno: str | None
    stage: str | None


@dataclass
class Group:
    """A namespace holding the owners of many scenarios, one port each."""

    ns: Netns
    base_port: int = 20000
    next_port: int = 20000
    held: list[socket.socket] = field(default_factory=list)
    peer: socket.socket | None = None

    def allocate(self) -> int:
        port = self.next_port
        self.next_port += 1
        return port

    def inside(self):
        return self.ns.inside()

    def close(self) -> None:
        for sock in self.held:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        self.held.clear()


def open_group(ns: Netns, links: bool = False, base_port: int = 20000) -> Group:
    group = Group(ns, base_port, base_port)
    if links:
        ns.run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    with ns.inside():
        peer = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        peer.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        peer.bind(("::", PEER_PORT))
        peer.listen(128)
    group.peer = peer
    group.held.append(peer)
    return group


_WILDCARD_PEERS = {"0.0.0.0": "127.0.0.1", "::": "::1", "::ffff:0.0.0.0": "::ffff:127.0.0.1"}


def _family_loopback(address: str) -> str:
    if address.startswith("::ffff:"):
        return "::ffff:127.0.0.1"
    return "::1" if ":" in address else "127.0.0.1"


def _configure(sock: socket.socket, spec) -> None:
    if spec.reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if spec.reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if spec.v6only is not None and sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(spec.v6only))
    if spec.device:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec.device.encode())
    if getattr(spec, "freebind", False):
        level = socket.IPPROTO_IPV6 if sock.family == socket.AF_INET6 else SOL_IP
        sock.setsockopt(level, 78 if sock.family == socket.AF_INET6 else IP_FREEBIND, 1)


def _new_socket(group: Group, family: int, kind: int, uid: int | None = None) -> socket.socket:
    with group.inside(), made_by(uid):
        return never_chowned(lambda: socket.socket(family, kind))


def never_chowned(make: Callable[[], socket.socket], tries: int = 64) -> socket.socket:
    """A socket whose inode shows no owner change (ctime 0), as a new socket's does.

    The kernel recycles socket inodes, and one may keep the change time an earlier socket's fchown() gave it;
    can-bind then rightly doubts its owner (owner-changed), which a scenario without fchown() does not mean
    to test. The stale ones are held until a clean one comes (closed at once, the same inode would come back).
    """
    stale: list[socket.socket] = []
    try:
        for _ in range(tries):
            sock = make()
            if os.fstat(sock.fileno()).st_ctime_ns == 0:
                return sock
            stale.append(sock)
        return stale.pop()  # none clean: the verdict may be uncertain then, never wrong
    finally:
        for sock in stale:
            sock.close()


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def made_by(uid: int | None):
    """Sockets made inside are owned by ``uid``, as if that user's process had made them: sk_uid is the
    fsuid of the thread calling socket() (setfsuid() changes this thread only, and only the fsuid)."""
    if uid is None:
        yield
        return
    previous = _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(previous)


def _connect_to_peer(group: Group, sock: socket.socket, address: str) -> socket.socket:
    """Connect ``sock`` to the peer listener; returns the peer's accepted end."""
    target = _family_loopback(address) if address in ("0.0.0.0", "::", "::ffff:0.0.0.0") else address
    if sock.family == socket.AF_INET6 and ":" not in target:
        target = "::ffff:" + target
    sock.connect((target, PEER_PORT))
    group.peer.settimeout(1.0)
    accepted, _ = group.peer.accept()
    accepted.settimeout(None)
    return accepted


def _close_gracefully(first: socket.socket, second: socket.socket) -> None:
    """The first closes actively (it ends in TIME-WAIT), the second then closes too."""
    first.close()
    time.sleep(0.002)
    second.close()


def build_owner(group: Group, spec: OwnerSpec, port: int) -> bool:
    """Create one owner on ``port``; False if the kernel refused it (the owners conflict)."""
    family = spec.family
    kind = socket.SOCK_DGRAM if spec.udp else socket.SOCK_STREAM
    sock = _new_socket(group, family, kind, None if spec.uid_via_fchown else spec.uid)
    try:
        _configure(sock, spec)
        if spec.uid is not None and spec.uid_via_fchown:
            os.fchown(sock.fileno(), spec.uid, -1)
        if spec.kind not in AUTOBOUND:
            sock.bind((spec.address, port + spec.port_offset))
    except OSError:
        sock.close()
        return False
    try:
        if spec.kind in AUTOBOUND:
            with group.inside(), _local_port_range(port):  # connect() can only pick this port
                accepted = _connect_to_peer(group, sock, spec.address)
            if spec.kind == "autobound":
                group.held += [accepted, sock]
            else:
                _close_gracefully(sock, accepted)
        elif spec.kind == "ghost":
            sock.close()
        elif spec.kind in ("bound", "udp"):
            group.held.append(sock)
            if spec.chown_after is not None:
                os.fchown(sock.fileno(), spec.chown_after, -1)
        elif spec.kind == "listen":
            sock.listen(16)
            group.held.append(sock)
            if spec.chown_after is not None:
                os.fchown(sock.fileno(), spec.chown_after, -1)
        elif spec.kind == "udp-connected":
            sock.connect((_family_loopback(spec.address), 9))
            group.held.append(sock)
        elif spec.kind == "client":
            group.held.append(_connect_to_peer(group, sock, spec.address))
            group.held.append(sock)
        elif spec.kind == "tw-client":
            accepted = _connect_to_peer(group, sock, spec.address)
            _close_gracefully(sock, accepted)
        elif spec.kind == "orphan-client":  # closed, the peer not: FIN-WAIT-2 without a process
            group.held.append(_connect_to_peer(group, sock, spec.address))
            sock.close()
        elif spec.kind == "unaccepted":
            sock.listen(16)
            group.held.append(sock)
            peer = _WILDCARD_PEERS.get(spec.address, spec.address)
            client = _new_socket(group, socket.AF_INET6 if ":" in peer else socket.AF_INET, socket.SOCK_STREAM)
            group.held.append(client)
            client.connect((peer, port))  # the handshake completes in the kernel; nobody calls accept()
        elif spec.kind in ("child", "child+listener", "tw-server", "tw-server+listener", "orphan-server", "close-wait"):
            sock.listen(16)
            peer = spec.peer or _WILDCARD_PEERS.get(spec.address, spec.address)
            client = _new_socket(group, socket.AF_INET6 if ":" in peer else socket.AF_INET, socket.SOCK_STREAM)
            group.held.append(client)  # closed with the group unless closed gracefully below
            client.connect((peer, port))
            sock.settimeout(1.0)  # another listener of the port (a SO_REUSEPORT group) may take the connection
            child, _ = sock.accept()
            child.settimeout(None)
            if spec.kind in ("tw-server", "tw-server+listener"):
                group.held.remove(client)
                _close_gracefully(child, client)
            elif spec.kind == "orphan-server":
                child.close()  # the client stays open: the server's end waits in FIN-WAIT-2
            elif spec.kind == "close-wait":
                group.held.remove(client)
                client.close()  # the child, still held, waits in CLOSE-WAIT
                group.held.append(child)
            else:
                group.held.append(child)
            if spec.kind in ("child+listener", "tw-server+listener", "orphan-server"):
                group.held.append(sock)
            else:
                sock.close()
        else:
            raise ValueError(f"unknown owner kind {spec.kind}")
    except OSError:
        sock.close()
        return False
    return True


AUTOBOUND = ("autobound", "autobound-tw")


@contextlib.contextmanager
def _local_port_range(port: int):
    """net.ipv4.ip_local_port_range of the current namespace narrowed to ``port``, restored after."""
    path = "/proc/sys/net/ipv4/ip_local_port_range"  # follows this thread's network namespace
    with open(path, encoding="ascii") as handle:
        previous = handle.read()
    with open(path, "w", encoding="ascii") as handle:
        handle.write(f"{port} {port}")
    try:
        yield
    finally:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(previous)


def build(group: Group, scenario: Scenario) -> int | None:
    """Create the owners of a scenario on a fresh port; None when the owners cannot coexist."""
    port = scenario.port if scenario.port is not None else group.allocate()
    for owner in scenario.owners:
        if not build_owner(group, owner, port):
            return None
    return port


def request_for(scenario: Scenario, port: int, ns: Netns, probe: bool = True) -> BindRequest:
    new = scenario.new
    return BindRequest(
        target=new.target(port),
        udp=new.udp,
        reuseaddr=new.reuseaddr,
        reuseport=new.reuseport,
        v6only=new.v6only,
        device=new.device,
        freebind=new.freebind,
        user=str(new.uid) if new.uid is not None else None,
        listen=new.listen,
        probe=probe,
        netns=ns.name,
    )


def _attempt(new: NewSpec, port: int, chown: bool) -> tuple[str | None, int]:
    """(failing stage or None, errno) of socket()+options+bind()+listen(), in the current namespace."""
    kind = socket.SOCK_DGRAM if new.udp else socket.SOCK_STREAM
    sock = socket.socket(new.family, kind)
    try:
        _configure(sock, new)
        if chown and new.uid is not None:
            os.fchown(sock.fileno(), new.uid, -1)
        if new.family == socket.AF_INET6:
            scope = socket.if_nametoindex(new.scope) if new.scope else 0
            address = (new.address, port, 0, scope)
        else:
            address = (new.address, port)
        try:
            sock.bind(address)
        except OSError as exc:
            return "bind", exc.errno or 0
        if not new.udp and new.listen:
            try:
                sock.listen(16)
            except OSError as exc:
                return "listen", exc.errno or 0
        return None, 0
    finally:
        sock.close()


def kernel_oracle(group: Group, new: NewSpec, port: int, as_user: bool = False) -> Outcome:
    """The real bind() (+ listen()) of the new socket, as its user."""
    if as_user and new.uid not in (None, 0):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(read_end)
                with group.inside():
                    os.setgroups([])
                    os.setresgid(new.uid, new.uid, new.uid)
                    os.setresuid(new.uid, new.uid, new.uid)
                    stage, err = _attempt(new, port, chown=False)
                    os.write(write_end, f"{stage} {err}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        data = os.read(read_end, 64).decode().split()
        os.close(read_end)
        os.waitpid(pid, 0)
        stage, err = (None if data[0] == "None" else data[0]), int(data[1])
    else:
        with group.inside():
            stage, err = _attempt(new, port, chown=True)
    return Outcome(errno_mod.errorcode[err] if stage else None, stage)


@functools.cache
def kernel_bind_table_readable() -> bool:
    """Can can-bind read the kernel's TCP bind table here (a BPF iterator: root, BTF)? Asked of the kernel."""
    from portscope.sources.tcpbind import read_tcp_bind_state

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        state = read_tcp_bind_state(None, {sock.getsockname()[1]})
    return state is not None and len(state.buckets) == 1


# The sources of uncertainty: the fast path (spec §4), the UDP lookup path, flags of sockets without a process.
ALLOWED_UNCERTAINTY = {UncertaintyCode.FASTPATH, UncertaintyCode.UDP_PATH, UncertaintyCode.OWNER_CHANGED}
ALLOWED_HIDDEN = {"time-wait", "no-holder"}


def _allowed(doubt: Coded) -> bool:
    if doubt.code is UncertaintyCode.HIDDEN_FLAGS:
        return doubt["why"] in ALLOWED_HIDDEN
    return doubt.code in ALLOWED_UNCERTAINTY


def judge(report: BindReport, kernel: Outcome) -> str | None:
    """None when the report is consistent with the kernel, else what is wrong."""
    model = report.model
    if model.verdict.value == "uncertain":
        if not model.uncertainty or not all(_allowed(doubt) for doubt in model.uncertainty):
            return f"uncertain without an allowed reason: {[d.params | {'code': d.code} for d in model.uncertainty]}"
    else:
        predicted = (model.errno, model.stage.value if model.stage else None)
        if predicted != (kernel.errno, kernel.stage):
            return f"model says {model.verdict.value} {predicted}, kernel says {(kernel.errno, kernel.stage)}"
    if report.probe is not None:
        if report.probe.error:
            return f"probe did not run: {report.probe.error}"
        settled = (report.errno, report.stage.value if report.stage else None)
        if settled != (kernel.errno, kernel.stage):
            return f"settled {settled} but kernel says {(kernel.errno, kernel.stage)}"
    return None
