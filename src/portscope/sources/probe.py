"""``--probe``: ask the kernel with a trial bind of a throw-away socket.

The socket gets the same family, protocol and options, is owned by the simulated uid (fchown, which
sets sk_uid), is created in the target namespace, bound, and closed at once. listen() is never
called: on a live port it would accept connections or join a SO_REUSEPORT group.

Side effects, stated in the command's help: the port is held for an instant; for TCP the bind
rewrites the port's SO_REUSEPORT fast-path cache; a UDP probe that joins a SO_REUSEPORT group may
receive (and drop) datagrams sent in that instant.

When the simulated user lacks CAP_NET_BIND_SERVICE and we run as root, the trial runs in a forked
child that has switched to that user, so R-PRIV is reproduced too. The switch cannot fail silently:
the child drops its groups, sets all three uids and gids, empties every capability set itself (the
kernel's implicit drop does not happen under SECBIT_NO_SETUID_FIXUP), keeps no fd of ours but the
result pipe, and checks all of it before bind(); any difference is an error, never a verdict. From
a multi-threaded caller (where fork() is unsafe) that probe is not run, and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import fcntl
import os
import pwd
import socket

from portscope.engine.parallel import single_threaded
from portscope.errors import UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import MAX_UID
from portscope.model.records import Family, Proto
from portscope.rules.bind import NewSocket, Stage
from portscope.sources import netns
from portscope.sources.linux import write_all

SO_BINDTOIFINDEX = 62
IP_FREEBIND = 15
IPV6_FREEBIND = 78
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAPABILITY_SETS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


@dataclass_lite(frozen=True)
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


def _clear_capabilities(libc) -> None:
    """Empty every capability set of this process (the ambient set too), whatever the securebits say.

    The kernel's implicit drop on setresuid() is skipped under SECBIT_NO_SETUID_FIXUP; lowering sets
    with capset() is always allowed. The bounding set is left as it is: nothing is exec'ed here.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 and ctypes.get_errno() != errno_mod.EINVAL:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")  # EINVAL: no ambient set (< 4.3)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)  # version, pid 0 = this thread
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}, all zero
    if libc.capset(header, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def credential_problem(uid: int, gid: int, resuid, resgid, groups, status_text: str) -> str | None:
    """What differs from exactly ``uid``/``gid`` with no groups and no capability; None when nothing does.

    ``status_text`` is /proc/self/status: CapEff, CapPrm, CapInh and CapAmb must all be zero.
    """
    if tuple(resuid) != (uid, uid, uid):
        return f"uids are {tuple(resuid)}, not {uid}"
    if tuple(resgid) != (gid, gid, gid):
        return f"gids are {tuple(resgid)}, not {gid}"
    if list(groups):
        return f"supplementary groups {sorted(groups)} are left"
    sets = {}
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name in _CAPABILITY_SETS:
            try:
                sets[name] = int(value.strip(), 16)
            except ValueError:
                return f"unreadable {name} in /proc/self/status"
    for name in _CAPABILITY_SETS:
        if name not in sets and name != "CapAmb":  # CapAmb: only since Linux 4.3
            return f"no {name} in /proc/self/status"
        if sets.get(name):
            return f"{name} is {sets[name]:016x}, not empty"
    return None


def _switch_user(uid: int, gid: int) -> None:
    """In the probe child: become exactly uid/gid, no groups, no capabilities; then check all of it.

    Everything is loaded first: after the switch the interpreter's own files may be out of reach.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _clear_capabilities(libc)
    status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        status_text = os.read(status_fd, 65536).decode("ascii", "replace")  # no codec lookup: builtin
    finally:
        os.close(status_fd)
    problem = credential_problem(uid, gid, os.getresuid(), os.getresgid(), os.getgroups(), status_text)
    if problem is not None:
        raise _SwitchFailed(problem)


class _SwitchFailed(Exception):
    pass


def _keep_only(keep: int) -> int:
    """Close every fd but ``keep`` (moved above 2) and stdio, which become /dev/null; returns keep's number."""
    kept = fcntl.fcntl(keep, fcntl.F_DUPFD_CLOEXEC, 3)
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    os.closerange(3, kept)
    os.closerange(kept + 1, os.sysconf("SC_OPEN_MAX"))
    return kept


def _attempt_as_user(n: NewSocket, gid: int) -> tuple[str, str]:
    """Run the attempt in a child switched to n.uid and checked; returns (step, errno or message).

    The child keeps none of root's fds (only the result pipe) and binds only after verifying its
    credentials; sk_uid follows its fsuid. Steps: as in :func:`_attempt`, or "switch" with a message.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            out = _keep_only(write_end)
            try:
                _switch_user(n.uid, gid)
            except Exception as exc:  # whatever went wrong, say it: the parent must not guess
                write_all(out, f"switch {exc}".encode())
            else:
                step, err = _attempt(n, None)
                write_all(out, f"{step} {err}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = b""
        while chunk := os.read(read_end, 4096):
            data += chunk
    finally:
        os.close(read_end)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    step, _, detail = data.decode("utf-8", "replace").partition(" ")
    if not step:
        return "switch", "the child ended without an answer"
    return step, detail


def trial_bind(n: NewSocket, target: netns.NetnsTarget | None) -> ProbeResult:
    me = os.geteuid()
    drop = me == 0 and n.uid != 0 and not n.privileged
    if not 0 <= n.uid <= MAX_UID:  # 4294967295 would mean "unchanged" to setresuid, i.e. stay root
        raise UsageError(f"uid {n.uid} out of range (0-{MAX_UID})")
    if n.uid != me and me != 0:
        return ProbeResult(None, None, f"cannot act as uid {n.uid}: giving the socket another owner needs root")
    gid = n.uid
    if drop:
        with contextlib.suppress(KeyError):  # a uid without a passwd entry: its own number as gid
            gid = pwd.getpwuid(n.uid).pw_gid
        if not 0 <= gid <= MAX_UID:
            return ProbeResult(None, None, f"cannot switch to uid {n.uid}: its group {gid} is out of range")
        if not single_threaded():  # fork() beside other threads is unsafe: no probe rather than a wrong one
            return ProbeResult(None, None, f"cannot switch to uid {n.uid} from a multi-threaded process")
    with netns.entered(target):
        if drop:
            step, detail = _attempt_as_user(n, gid)
        else:
            step, code = _attempt(n, n.uid if n.uid != me else None)
            detail = str(code)
    if step == "switch":
        return ProbeResult(None, None, f"could not switch to uid {n.uid}: {detail}")
    err = int(detail) if detail.isascii() and detail.isdigit() else errno_mod.EIO
    if step != "bind":
        what = {"socket": "create the socket", "setup": "set the socket options"}.get(step, step)
        return ProbeResult(None, None, f"could not {what}: {os.strerror(err)}")
    if err == 0:
        return ProbeResult(None, None)
    return ProbeResult(_errno_name(err), Stage.BIND)
