"""Network namespaces: naming them, entering them for a dump, and their identity (the nsfs inode)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator

from portscope.errors import PortscopeError, SourceError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.sources.procinfo import raise_if_out_of_fds

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): the CLONE_NEW* kind of an nsfs fd
NETNS_RUN_DIR = "/run/netns"


@dataclass_lite(frozen=True)
class NetnsTarget:
    path: str  # an nsfs file: /run/netns/NAME or /proc/PID/ns/net
    pid: int | None  # when named by a pid, its /proc/PID/net can be read without entering


def resolve(spec: str) -> NetnsTarget:
    """``NAME`` (ip netns), ``PID``, or a path to an nsfs file; checked to be a network namespace at once."""
    if not spec:
        raise UsageError("empty network namespace: give a name (ip netns), a pid or a path")
    if spec.isascii() and spec.isdigit():
        target = NetnsTarget(f"/proc/{spec}/ns/net", int(spec))
    else:
        target = NetnsTarget(spec if "/" in spec else os.path.join(NETNS_RUN_DIR, spec), None)
        if "/" not in spec and not os.path.lexists(target.path):
            target = container_target(spec) or target  # not an ip netns name: a container name or id?
    os.close(open_namespace(target, spec))
    return target


def container_target(spec: str) -> NetnsTarget | None:
    """The network namespace of the running container named ``spec`` (or with that id or id prefix),
    from the runtimes' own files: no daemon is asked."""
    from portscope.sources.containers import host_index

    index = host_index()
    info = index.by_name(spec) or index.by_id(spec)
    if info is None or info.running is False:
        return None
    if info.pid:
        return NetnsTarget(f"/proc/{info.pid}/ns/net", info.pid)
    if info.netns_path:
        return NetnsTarget(info.netns_path, None)
    return None


def _not_a_network_namespace(path: str) -> UsageError:
    return UsageError(f"cannot enter {path}: not a network namespace")


def _open_refusal(exc: OSError, target: NetnsTarget, spec: str) -> PortscopeError:
    raise_if_out_of_fds(exc, target.path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        # what would work: root, or (as root already) CAP_SYS_PTRACE over that process
        hint = "needs CAP_SYS_PTRACE over it" if os.geteuid() == 0 else "it belongs to another user: run as root"
        if target.pid is None:
            return SourceError(target.path, f"permission denied ({hint})")
        return SourceError(target.path, f"permission denied: the network namespace of process {target.pid} ({hint})")
    if exc.errno == errno.ENOENT:
        if target.pid is not None:
            return UsageError(f"no process {target.pid} to take a network namespace from")
        return UsageError(
            f"unknown network namespace '{spec}' (no {target.path}, and no running container of that name or id)"
        )
    return UsageError(f"cannot open network namespace {target.path}: {exc.strerror}")


def open_namespace(target: NetnsTarget, spec: str | None = None) -> int:
    """An fd of the target's network namespace; never blocks, and opens nothing but a namespace file.

    O_PATH reaches the inode without opening it: no FIFO wait, no device opened, no file system asked.
    Only an nsfs inode (the st_dev of our own namespace files) is then opened, through /proc/self/fd,
    i.e. that very inode; NS_GET_NSTYPE tells a network namespace from the other kinds.
    """
    try:
        handle = os.open(target.path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_refusal(exc, target, spec or target.path) from None
    try:
        found = os.fstat(handle)
        if not stat.S_ISREG(found.st_mode) or found.st_dev != os.stat("/proc/self/ns/net").st_dev:
            raise _not_a_network_namespace(target.path)
        try:
            fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise _open_refusal(exc, target, spec or target.path) from None
    finally:
        os.close(handle)
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise _not_a_network_namespace(target.path)
    return fd


def current_inode() -> int | None:
    try:
        return os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return None


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes  # only before Python 3.12, and only when entering a namespace

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _setns_refusal(exc: OSError, path: str) -> PortscopeError:
    """No privilege (EPERM, EACCES) is a system that cannot be read; anything else, a bad namespace."""
    if exc.errno in (errno.EPERM, errno.EACCES):
        return SourceError(path, f"cannot enter network namespace: {exc.strerror} (needs CAP_SYS_ADMIN: run as root)")
    return UsageError(f"cannot enter network namespace {path}: {exc.strerror}")


@contextlib.contextmanager
def entered(target: NetnsTarget | None) -> Iterator[int | None]:
    """Run the body in the target namespace (this thread only); yields the namespace inode."""
    if target is None:
        yield current_inode()
        return
    target_fd = open_namespace(target)
    own_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(target_fd).st_ino == os.fstat(own_fd).st_ino:
            yield os.fstat(own_fd).st_ino
            return
        try:
            _setns(target_fd)
        except OSError as exc:
            raise _setns_refusal(exc, target.path) from None
        try:
            yield os.fstat(target_fd).st_ino
        finally:
            _setns(own_fd)
    finally:
        os.close(target_fd)
        os.close(own_fd)
