"""``--probe``: ask the kernel with a trial bind of a throw-away socket.

The socket gets the same family, protocol and options, is owned by the simulated uid (fchown, which
sets sk_uid), is created in the target namespace, bound, and closed at once. listen() is never
called: on a live port it would accept connections or join a SO_REUSEPORT group.

Side effects, stated in the command's help: the port is held for an instant; for TCP the bind
rewrites the port's SO_REUSEPORT fast-path cache; a UDP probe that joins a SO_REUSEPORT group may
receive (and drop) datagrams sent in that instant.

When the simulated user lacks CAP_NET_BIND_SERVICE and we run as root, the trial runs in a forked
child that has switched to that user (which drops every capability), so R-PRIV is reproduced too.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import pwd
import socket
from dataclasses import dataclass

from portscope.model.records import Family, Proto
from portscope.rules.bind import NewSocket, Stage
from portscope.sources import netns

SO_BINDTOIFINDEX = 62
IP_FREEBIND = 15
IPV6_FREEBIND = 78


@dataclass(frozen=True)
class ProbeResult:
    errno: str | None  # None: bind() succeeded
    stage: Stage | None
    error: str | None = None  # the probe could not run (then errno/stage are None)


def _errno_name(code: int) -> str:
    return errno_mod.errorcode.get(code, str(code))


def _attempt(n: NewSocket, chown_to: int | None) -> tuple[str, int]:
    """Create, configure and bind; returns (step, errno) with errno 0 on success."""
    family = socket.AF_INET if n.family is Family.IPV4 else socket.AF_INET6
    kind = socket.SOCK_STREAM if n.proto is Proto.TCP else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        return "socket", exc.errno or 0
    try:
        try:
            if n.reuseaddr:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if n.reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(n.v6only))
            if n.freebind:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            if n.device:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX, n.device)
            if chown_to is not None:
                os.fchown(sock.fileno(), chown_to, -1)
        except OSError as exc:
            return "setup", exc.errno or 0
        address = (n.address, n.port) if family == socket.AF_INET else (n.address, n.port, 0, n.scope_id)
        try:
            sock.bind(address)
        except OSError as exc:
            return "bind", exc.errno or 0
        return "bind", 0
    finally:
        sock.close()


def _attempt_as_user(n: NewSocket) -> tuple[str, int]:
    """Run the attempt in a child that switched to n.uid (no capabilities left); sk_uid follows fsuid."""
    try:
        gid = pwd.getpwuid(n.uid).pw_gid
    except KeyError:
        gid = n.uid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(n.uid, n.uid, n.uid)
            step, err = _attempt(n, None)
            os.write(write_end, f"{step} {err}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        data = b""
        while chunk := os.read(read_end, 64):
            data += chunk
    finally:
        os.close(read_end)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if not data:
        return "fork", errno_mod.EPERM
    step, err = data.decode().split()
    return step, int(err)


def trial_bind(n: NewSocket, target: netns.NetnsTarget | None) -> ProbeResult:
    me = os.geteuid()
    drop = me == 0 and n.uid != 0 and not n.privileged
    if n.uid != me and me != 0:
        return ProbeResult(None, None, f"cannot act as uid {n.uid}: giving the socket another owner needs root")
    with netns.entered(target):
        if drop:
            step, err = _attempt_as_user(n)
        else:
            step, err = _attempt(n, n.uid if n.uid != me else None)
    if step != "bind":
        what = {"socket": "create the socket", "setup": "set the socket options", "fork": "switch user"}[step]
        return ProbeResult(None, None, f"could not {what}: {os.strerror(err)}")
    if err == 0:
        return ProbeResult(None, None)
    return ProbeResult(_errno_name(err), Stage.BIND)
