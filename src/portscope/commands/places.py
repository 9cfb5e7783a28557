"""Where a socket lives: its network namespace's name, its container, and what a forwarder forwards it to.

Resolved by the command layer from the runtimes' own files and the processes' argv (no daemon is
asked), each fact once per run, and handed to the renderer with the result. On a host without
container runtimes this costs a few failed stats.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import field

from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Holder, NetnsInfo, Socket, State

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from portscope.sources.containers import ContainerIndex, ContainerInfo
    from portscope.sources.forwarders import Forward, ProcessFacts

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


@dataclass_lite
class Places:
    proc_root: str = "/proc"
    _index: ContainerIndex | None = field(default=None, repr=False)
    _netns_names: dict[int, str | None] = field(default_factory=dict, repr=False)
    _mounts: dict[int, str] | None = field(default=None, repr=False)
    _host: int | None = field(default=None, repr=False)
    _by_pid: dict[int, ContainerInfo | None] = field(default_factory=dict, repr=False)
    _forwards: dict[tuple, tuple[tuple[Holder, Forward], ...]] = field(default_factory=dict, repr=False)
    _activation: dict[int, ProcessFacts | None] = field(default_factory=dict, repr=False)  # by pid

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

    def learn(self, namespaces: Iterable[NetnsInfo]) -> None:
        """Take the ``ip netns`` names and the host's namespace from a ``--netns all`` snapshot, which read
        the mount table already: every namespace on the host is among them, so it is not read again."""
        infos = tuple(namespaces)
        if not infos or self._mounts is not None:
            return
        self._mounts = {info.inode: info.names[0] for info in infos if info.names}
        self._host = next((info.inode for info in infos if info.host), None)

    @property
    def host_inode(self) -> int | None:
        """The inode of PID 1's network namespace (``None`` if it cannot be seen)."""
        self._ip_netns_names()
        return self._host

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
        found = self.forwards(sock, holders)
        return found[0][1] if found else None

    def forwards(self, sock: Socket, holders: tuple[Holder, ...]) -> tuple[tuple[Holder, Forward], ...]:
        """Each holder of this listener that holds it for something else, with what it forwards to.

        Forwarders are recognised by name first (docker-proxy, conmon, ...). A listener shared by several
        processes may be a socket-activated one: a holder whose ``LISTEN_PID``/``LISTEN_FDS`` say it
        received it is the service, and the others (PID 1, a pid namespace's init) hold it for it.
        """
        if sock.state not in (State.LISTEN, State.UNCONN) or not holders:
            return ()
        key = (sock.inode, sock.local_address, sock.local_port, tuple(h.process.pid for h in holders))
        cached = self._forwards.get(key)
        if cached is not None:
            return cached
        from portscope.sources.forwarders import read_facts, recognise

        listen = (sock.local_address, sock.local_port)
        found: list[tuple[Holder, Forward]] = []
        for holder in holders:
            if holder.process.name not in FORWARDER_NAMES:
                continue
            facts = read_facts(holder.process.pid, self.proc_root)
            if facts is None:
                continue
            fd = holder.fds[0] if holder.fds else None
            forward = recognise(facts, listen, fd, self.index, sock.proto.value)
            if forward is not None:
                found.append((holder, forward))
        if not found and len(holders) > 1:
            found = self._activations(sock, holders)
        self._forwards[key] = result = tuple(found)
        return result

    def _activations(self, sock: Socket, holders: tuple[Holder, ...]) -> list[tuple[Holder, Forward]]:
        """The holders that passed this listener to a service by socket activation, and to which service."""
        from portscope.sources.forwarders import activated_service, read_activation_facts

        services: list[Forward] = []
        for holder in holders:
            pid = holder.process.pid
            if pid not in self._activation:  # a pre-forking server's workers share many listeners: once each
                self._activation[pid] = read_activation_facts(pid, self.proc_root)
            facts = self._activation[pid]
            if facts is None or "LISTEN_FDS" not in facts.environ:
                continue
            for fd in holder.fds:
                forward = activated_service(facts, fd, (sock.local_address, sock.local_port))
                if forward is not None:
                    services.append(forward)
                    break
        if not services:
            return []
        receivers = {forward.target_pid for forward in services}
        parents = {holder.process.pid: holder.process.ppid for holder in holders}

        def passed_it_on(pid: int) -> bool:
            """Not a receiver, nor a child that inherited it from one (a worker of the service)."""
            seen = set()
            while pid in parents and pid not in seen:
                if pid in receivers:
                    return False
                seen.add(pid)
                pid = parents[pid]  # type: ignore[assignment]
            return True

        return [(holder, forward) for holder in holders if passed_it_on(holder.process.pid) for forward in services]

    def netns_path(self, forward: Forward, forwarder_pid: int | None = None) -> str | None:
        """A file that enters the namespace a forward leads to: the forward's own, else an fd the forwarder
        holds on that namespace (rootlessport keeps one)."""
        if forward.netns_path:
            return forward.netns_path
        if forward.netns_inode is None or forwarder_pid is None:
            return None
        fd_dir = f"{self.proc_root}/{forwarder_pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return None
        wanted = f"net:[{forward.netns_inode}]"
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == wanted:
                    return f"{fd_dir}/{name}"
            except OSError:
                continue
        return None
