"""Network namespaces: naming them, entering them for a dump, and their identity (the nsfs inode)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

from portscope.errors import SourceError, UsageError
from portscope.sources.procinfo import raise_if_out_of_fds

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


@dataclass(frozen=True)
class NetnsTarget:
    path: str  # an nsfs file: /run/netns/NAME or /proc/PID/ns/net
    pid: int | None  # when named by a pid, its /proc/PID/net can be read without entering


def resolve(spec: str) -> NetnsTarget:
    """``NAME`` (ip netns), ``PID``, or a path to an nsfs file."""
    if spec.isdigit():
        path = f"/proc/{spec}/ns/net"
        try:
            os.stat(path)
        except PermissionError:
            raise SourceError(path, f"permission denied: the network namespace of process {spec}") from None
        except OSError:
            raise UsageError(f"no process {spec} to take a network namespace from") from None
        return NetnsTarget(path, int(spec))
    path = spec if "/" in spec else os.path.join(NETNS_RUN_DIR, spec)
    if not os.path.exists(path):
        raise UsageError(f"unknown network namespace {spec!r} (no {path})")
    return NetnsTarget(path, None)


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


def _refusal(exc: OSError, what: str, path: str, needs: str) -> Exception:
    """No privilege (EPERM, EACCES) is a system that cannot be read; anything else, a bad name or path."""
    if exc.errno in (errno.EPERM, errno.EACCES):
        return SourceError(path, f"{what}: {exc.strerror} ({needs})")
    return UsageError(f"{what} {path}: {exc.strerror}")


@contextlib.contextmanager
def entered(target: NetnsTarget | None) -> Iterator[int | None]:
    """Run the body in the target namespace (this thread only); yields the namespace inode."""
    if target is None:
        yield current_inode()
        return
    try:
        target_fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise_if_out_of_fds(exc, target.path)
        raise _refusal(exc, "cannot open network namespace", target.path, "needs root") from None
    own_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(target_fd).st_ino == os.fstat(own_fd).st_ino:
            yield os.fstat(own_fd).st_ino
            return
        try:
            _setns(target_fd)
        except OSError as exc:
            raise _refusal(exc, "cannot enter network namespace", target.path, "needs CAP_SYS_ADMIN") from None
        try:
            yield os.fstat(target_fd).st_ino
        finally:
            _setns(own_fd)
    finally:
        os.close(target_fd)
        os.close(own_fd)
