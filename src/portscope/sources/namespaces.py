"""Every network namespace on the host, found without any daemon (``--netns all``).

Three places keep a network namespace alive, and each is read here:
- a process inside it: ``/proc/PID/ns/net`` (deduplicated by the nsfs inode);
- an nsfs bind mount: ``ip netns`` names in ``/run/netns``, docker's ``/run/docker/netns/<sandbox>``,
  podman's ``netns-<uuid>``, per-user runtime dirs; every nsfs mount of ``/proc/self/mountinfo``;
- an open file descriptor on one (``readlink`` gives ``net:[INODE]``), e.g. rootlessport's.

What could not be looked at (another user's processes, when not root) is counted, so the caller can say so.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import field

from portscope.model.dataclass_lite import dataclass_lite
from portscope.sources.procinfo import unescape_mountinfo

NET_LINK_PREFIX = "net:["
DOCKER_NETNS_DIR = "/run/docker/netns"
IP_NETNS_DIR = "/run/netns"


@dataclass_lite(frozen=True, slots=True)
class NamespaceRef:
    """One network namespace and a way to enter or read it."""

    inode: int
    path: str  # an nsfs file setns() can open: /proc/PID/ns/net, a mount point, or /proc/PID/fd/N
    pid: int | None = None  # a process inside it: /proc/PID/net can be read without entering
    names: tuple[str, ...] = ()  # ip netns names (mount points under /run/netns)
    mounts: tuple[str, ...] = ()  # every nsfs mount point of it


@dataclass_lite(frozen=True)
class Discovery:
    namespaces: tuple[NamespaceRef, ...]  # the host's namespace (that of PID 1, if readable) first
    host_inode: int | None
    processes_refused: int = 0  # /proc/PID/ns/net not readable (another user's process, when not root)
    refused_uids: frozenset[int] = field(default_factory=frozenset)


def parse_nsfs_mounts(mountinfo: str) -> list[tuple[str, int]]:
    """(mount point, namespace inode) of every network-namespace nsfs mount in a mountinfo text."""
    mounts = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) <= separator + 1 or fields[separator + 1] != "nsfs" or len(fields) < 5:
            continue
        root = fields[3]
        if not (root.startswith(NET_LINK_PREFIX) and root.endswith("]")):
            continue
        inode_text = root[len(NET_LINK_PREFIX) : -1]
        if not inode_text.isascii() or not inode_text.isdigit():
            continue
        mounts.append((unescape_mountinfo(fields[4]), int(inode_text)))
    return mounts


def host_netns_inode(proc_root: str = "/proc") -> int | None:
    """The namespace of PID 1; kthreadd (PID 2) lives there too and answers where PID 1 refuses."""
    for pid in (1, 2):
        try:
            return os.stat(f"{proc_root}/{pid}/ns/net").st_ino
        except OSError:
            continue
    return None


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _fd_namespaces(pid_dir: str, own_mnt: int | None, nsfs_dev: int | None) -> list[tuple[str, int]]:
    """Network namespaces one process holds open: (its /proc/PID/fd/N path, inode)."""
    fd_dir = f"{pid_dir}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return []
    links = []
    for fd in fds:
        try:
            links.append((fd, os.readlink(f"{fd_dir}/{fd}")))
        except OSError:
            continue
    return _open_namespaces(pid_dir, links, own_mnt, nsfs_dev)


def _open_namespaces(
    pid_dir: str, links: list[tuple[str, str]], own_mnt: int | None, nsfs_dev: int | None
) -> list[tuple[str, int]]:
    """Which of one process's fd links, (fd, link), are open on a network namespace: (path, inode).

    An fd opened through /proc/PID/ns/net reads ``net:[INODE]``; one opened through a mount that was
    removed since reads ``/``. Only the second needs a stat(), which follows the link to the file: that
    is done only for processes in our own mount namespace, whose ``/`` is our root, so no user's file
    system (FUSE) is ever asked.
    """
    held = []
    same_root: bool | None = None
    for fd, link in links:
        path = f"{pid_dir}/fd/{fd}"
        if link.startswith(NET_LINK_PREFIX) and link.endswith("]"):
            number = link[len(NET_LINK_PREFIX) : -1]
            if number.isascii() and number.isdigit():
                held.append((path, int(number)))
        elif link == "/":
            if same_root is None:
                same_root = own_mnt is not None and _ns_inode(f"{pid_dir}/ns/mnt") == own_mnt
            if not same_root:
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue
            if info.st_dev == nsfs_dev:
                held.append((path, info.st_ino))
    return held


def _own_mount_and_nsfs(proc_root: str) -> tuple[int | None, int | None]:
    own_mnt = _ns_inode(f"{proc_root}/self/ns/mnt")
    try:
        nsfs_dev: int | None = os.stat(f"{proc_root}/self/ns/net").st_dev
    except OSError:
        nsfs_dev = None
    return own_mnt, nsfs_dev


def held_namespaces(links: list[tuple[int, int, str]], known: set[int], proc_root: str = "/proc") -> list[NamespaceRef]:
    """The namespaces among the fd links a /proc walk saw (``FdScan.netns_links``) that are not ``known``:
    those kept alive only by an open fd, found in the walk that joins processes (no pass of their own)."""
    by_pid: dict[int, list[tuple[str, str]]] = {}
    for pid, fd, link in links:
        by_pid.setdefault(pid, []).append((str(fd), link))
    own_mnt, nsfs_dev = _own_mount_and_nsfs(proc_root)
    found: dict[int, NamespaceRef] = {}
    for pid in sorted(by_pid):
        for path, inode in _open_namespaces(f"{proc_root}/{pid}", by_pid[pid], own_mnt, nsfs_dev):
            if inode not in known and inode not in found:
                found[inode] = NamespaceRef(inode, path)
    return list(found.values())


def discover(proc_root: str = "/proc", *, mountinfo: str | None = None, scan_fds: bool = True) -> Discovery:
    """Every network namespace visible from here, each once; ``scan_fds=False`` leaves out those held
    only by an open fd (the caller's /proc walk finds them: :func:`held_namespaces`)."""
    found: dict[int, dict] = {}

    def note(inode: int, path: str, pid: int | None = None, mount: str | None = None) -> None:
        entry = found.setdefault(inode, {"path": path, "pid": pid, "mounts": []})
        if entry["pid"] is None and pid is not None:
            entry["pid"] = pid
            entry["path"] = path  # a process's own link outlives nothing; prefer it for /proc/PID/net
        if mount is not None:
            entry["mounts"].append(mount)

    refused = 0
    refused_uids: set[int] = set()
    try:
        pid_names = sorted((name for name in os.listdir(proc_root) if name.isdigit()), key=int)
    except OSError:
        pid_names = []
    host_inode = host_netns_inode(proc_root)
    for name in pid_names:
        path = f"{proc_root}/{name}/ns/net"
        try:
            inode = os.stat(path).st_ino
        except PermissionError:
            refused += 1
            with contextlib.suppress(OSError):
                refused_uids.add(os.stat(f"{proc_root}/{name}").st_uid)
            continue
        except OSError:
            continue  # exited, or a kernel thread
        note(inode, path, int(name))

    if mountinfo is None:
        try:
            with open(f"{proc_root}/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
                mountinfo = handle.read()
        except OSError:
            mountinfo = ""
    for mount_point, inode in parse_nsfs_mounts(mountinfo):
        note(inode, mount_point, mount=mount_point)

    if scan_fds:  # without a /proc walk to join processes (held_namespaces reads that walk's links)
        own_mnt, nsfs_dev = _own_mount_and_nsfs(proc_root)
        for name in pid_names:
            for path, inode in _fd_namespaces(f"{proc_root}/{name}", own_mnt, nsfs_dev):
                if inode not in found:
                    note(inode, path)

    def ref(inode: int, entry: dict) -> NamespaceRef:
        mounts = tuple(dict.fromkeys(entry["mounts"]))
        names = tuple(os.path.basename(m) for m in mounts if os.path.dirname(m) == IP_NETNS_DIR)
        return NamespaceRef(inode, entry["path"], entry["pid"], names, mounts)

    refs = [ref(inode, entry) for inode, entry in found.items()]
    refs.sort(key=lambda r: (r.inode != host_inode, r.pid is None, r.pid or 0, r.inode))
    return Discovery(tuple(refs), host_inode, refused, frozenset(refused_uids))
