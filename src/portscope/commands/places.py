"""Where a socket lives: its network namespace's name, its container, and what a forwarder forwards it to.

Resolved by the command layer from the runtimes' own files and the processes' argv (no daemon is
asked), each fact once per run, and handed to the renderer with the result. On a host without
container runtimes this costs a few failed stats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from portscope.model.records import Holder, Socket, State

if TYPE_CHECKING:
    from portscope.sources.containers import ContainerIndex, ContainerInfo
    from portscope.sources.forwarders import Forward

HOST = "host"  # netns_name of the namespace of PID 1
# processes that hold a port on behalf of something else (sources/forwarders.py recognises them)
FORWARDER_NAMES = frozenset(
    {
        "docker-proxy",
        "conmon",
        "rootlessport",
        "dockerd",
        "systemd-socket-",
        "systemd-socket-activate",
        "ssh",
        "kubectl",
    }
)


@dataclass
class Places:
    proc_root: str = "/proc"
    _index: ContainerIndex | None = field(default=None, repr=False)
    _netns_names: dict[int, str | None] = field(default_factory=dict, repr=False)
    _mounts: dict[int, str] | None = field(default=None, repr=False)
    _host: int | None = field(default=None, repr=False)
    _by_pid: dict[int, ContainerInfo | None] = field(default_factory=dict, repr=False)

    @property
    def index(self) -> ContainerIndex:
        if self._index is None:
            from portscope.sources.containers import host_index

            self._index = host_index(proc_root=self.proc_root)
        return self._index

    def _ip_netns_names(self) -> dict[int, str]:
        if self._mounts is None:
            from portscope.sources.namespaces import IP_NETNS_DIR, parse_nsfs_mounts

            try:
                with open(f"{self.proc_root}/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
                    mounts = parse_nsfs_mounts(handle.read())
            except OSError:
                mounts = []
            self._mounts = {
                inode: os.path.basename(point) for point, inode in mounts if os.path.dirname(point) == IP_NETNS_DIR
            }
            from portscope.sources.namespaces import host_netns_inode

            self._host = host_netns_inode(self.proc_root)
        return self._mounts

    def netns_name(self, inode: int | None) -> str | None:
        """``host`` for PID 1's namespace, the container's name, the ``ip netns`` name, or None."""
        if inode is None:
            return None
        if inode not in self._netns_names:
            mounts = self._ip_netns_names()
            container = self.index.by_netns_inode(inode) if inode != self._host else None
            if inode == self._host:
                name: str | None = HOST
            elif container is not None:  # before its nsfs mount's name (podman's is netns-<uuid>)
                name = container.name or container.short_id
            else:
                name = mounts.get(inode)
            self._netns_names[inode] = name
        return self._netns_names[inode]

    def container(self, sock: Socket, holders: tuple[Holder, ...]) -> ContainerInfo | None:
        """The container whose namespace holds the socket, or whose process holds it on the host network."""
        if sock.netns is not None:
            self._ip_netns_names()
            if sock.netns != self._host:
                found = self.index.by_netns_inode(sock.netns)
                if found is not None:
                    return found
        for holder in holders:
            found = self._container_of_pid(holder.process.pid)
            if found is not None:
                return found
        return None

    def _container_of_pid(self, pid: int) -> ContainerInfo | None:
        if pid not in self._by_pid:
            from portscope.sources.lineage import pick_cgroup_path

            try:
                with open(f"{self.proc_root}/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as handle:
                    path = pick_cgroup_path(handle.read())
            except OSError:
                path = None
            from portscope.sources.containers import container_of_cgroup

            # the cgroup's shape first: the runtimes' files (a scan of /proc for their roots) only for a container
            self._by_pid[pid] = self.index.for_cgroup(path) if path and container_of_cgroup(path) else None
        return self._by_pid[pid]

    def forward(self, sock: Socket, holders: tuple[Holder, ...]) -> Forward | None:
        """Where a forwarder holding this listener sends its traffic (docker-proxy, conmon, rootlessport, ...)."""
        if sock.state not in (State.LISTEN, State.UNCONN) or not holders:
            return None
        from portscope.sources.forwarders import read_facts, recognise

        for holder in holders:
            if holder.process.name not in FORWARDER_NAMES:
                continue
            facts = read_facts(holder.process.pid, self.proc_root)
            if facts is None:
                continue
            fd = holder.fds[0] if holder.fds else None
            found = recognise(facts, (sock.local_address, sock.local_port), fd, self.index, sock.proto.value)
            if found is not None:
                return found
        return None
