"""Processes that hold a port on behalf of something else, and what they forward to.

Each recogniser is a pure function over facts about one process (its name, exe, argv, environment,
the nsfs paths of its open fds, the listener it holds) plus, where a container is involved, a
ContainerIndex. ``read_facts`` gathers those facts from /proc for callers that have only a pid.

Recognised: docker-proxy, conmon, rootlessport, dockerd with the userland proxy off, systemd socket
activation (a service that received fds, or PID 1 / systemd-socket-activate holding them), ``ssh -L``
and ``kubectl port-forward``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from portscope.model.dataclass_lite import dataclass_lite
from portscope.sources.containers import ContainerIndex, ContainerInfo, option_value


@dataclass_lite(frozen=True, slots=True)
class Forward:
    kind: str  # docker-proxy, conmon, rootlessport, dockerd, socket-activation, ssh, kubectl
    listen_address: str | None  # the host side, as the forwarder was told (None: not in its argv)
    listen_port: int | None
    target_address: str | None  # where traffic goes (a container address, an ssh/kubectl target)
    target_port: int | None
    container: ContainerInfo | None = None
    netns_inode: int | None = None  # the network namespace it serves, when known
    detail: str | None = None  # fd name, unit, pod or ssh destination
    target_pid: int | None = None  # the process that received an activated socket
    netns_path: str | None = None  # a file that enters the namespace it serves (nsfs mount, /proc/PID/ns/net)


@dataclass_lite(frozen=True, slots=True)
class ProcessFacts:
    pid: int
    name: str  # comm
    exe: str | None
    argv: tuple[str, ...]
    environ: Mapping[str, str]
    netns_fds: tuple[str, ...] = ()  # targets of fds open on nsfs files (/run/netns/netns-…)
    ns_pids: tuple[int, ...] = ()  # its pid in each pid namespace, outermost first (NSpid): LISTEN_PID is the innermost


def _port(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    number = int(text)
    return number if 0 <= number <= 65535 else None


def _base(path: str | None) -> str:
    return os.path.basename(path) if path else ""


def _is(facts: ProcessFacts, program: str) -> bool:
    """The process is ``program`` by its comm (cut to 15 characters), its exe or its argv[0]."""
    return (
        facts.name == program[:15]
        or _base(facts.exe) == program
        or (bool(facts.argv) and _base(facts.argv[0]) == program)
    )


# ---------------------------------------------------------------------------------------------------
# Containers


def docker_proxy(argv: Iterable[str], index: ContainerIndex | None = None) -> Forward | None:
    """``docker-proxy -proto tcp -host-ip H -host-port P -container-ip C -container-port Q``."""
    args = list(argv)
    target = option_value(args, "-container-ip")
    target_port = _port(option_value(args, "-container-port"))
    if target is None and target_port is None:
        return None
    container = index.by_address(target) if index is not None and target else None
    proto = option_value(args, "-proto")
    netns_path = container_netns_path(container) if container is not None else None
    return Forward(
        "docker-proxy",
        option_value(args, "-host-ip"),
        _port(option_value(args, "-host-port")),
        target,
        target_port,
        container,
        netns_inode=_stat_inode(netns_path) if netns_path else None,
        detail=proto,
        netns_path=netns_path,
    )


def container_netns_path(container: ContainerInfo) -> str | None:
    """A file that enters the container's network namespace: its recorded nsfs mount, else its first
    process's ``/proc/PID/ns/net`` (``None`` for a stopped container: never a reused pid's)."""
    if container.netns_path and os.path.exists(container.netns_path):
        return container.netns_path
    if container.pid and container.running is not False:
        return f"/proc/{container.pid}/ns/net"
    return None


def conmon_container(argv: Iterable[str]) -> tuple[str, str | None] | None:
    """(container id, name) from conmon's ``-c <id> -n <name>`` (long forms ``--cid``, ``--name``)."""
    args = list(argv)
    container_id = option_value(args, "-c", "--cid")
    if not container_id:
        return None
    return container_id, option_value(args, "-n", "--name")


def conmon(
    argv: Iterable[str], index: ContainerIndex | None = None, listen: tuple[str, int] | None = None
) -> Forward | None:
    """conmon holds the host ports of a bridge-network podman container; traffic is DNATed to it."""
    found = conmon_container(argv)
    if found is None:
        return None
    container_id, name = found
    container = index.by_id(container_id) if index is not None else None
    if container is None:
        container = ContainerInfo("podman", container_id, name=name)
    return _to_container("conmon", container, listen)


def _to_container(kind: str, container: ContainerInfo, listen: tuple[str, int] | None, **extra) -> Forward:
    """A forward from a host listener to the container port it is published as, when the files say."""
    address, port = listen if listen else (None, None)
    published = [p for p in container.ports if listen is None or p.host_port == port]
    target_port = published[0].container_port if len({p.container_port for p in published}) == 1 else None
    target = container.addresses[0] if len(container.addresses) == 1 else None
    if "netns_path" not in extra:
        extra["netns_path"] = container_netns_path(container)
    if "netns_inode" not in extra and extra["netns_path"]:
        extra["netns_inode"] = _stat_inode(extra["netns_path"])
    return Forward(kind, address, port, target, target_port, container, **extra)


def rootlessport(
    facts: ProcessFacts,
    index: ContainerIndex | None = None,
    listen: tuple[str, int] | None = None,
    netns_inode_of=None,
) -> Forward | None:
    """rootlessport keeps an fd on the container's netns (``/run/netns/netns-<uuid>``); that names it.

    ``netns_inode_of`` maps an fd target path to its namespace inode (default: stat it).
    """
    if not _is(facts, "rootlessport"):
        return None
    stat = netns_inode_of or _stat_inode
    for path in facts.netns_fds:
        inode = stat(path)
        container = None
        if index is not None:
            container = index.by_netns_path(path) or (index.by_netns_inode(inode) if inode is not None else None)
        held = None if path.startswith("net:[") else path  # a mount point enters it; "net:[N]" is only a name
        if container is not None:
            return _to_container("rootlessport", container, listen, netns_inode=inode, netns_path=held)
        if inode is not None:
            address, port = listen if listen else (None, None)
            return Forward(
                "rootlessport", address, port, None, None, None, netns_inode=inode, detail=path, netns_path=held
            )
    address, port = listen if listen else (None, None)
    return Forward("rootlessport", address, port, None, None)


def _stat_inode(path: str) -> int | None:
    if path.startswith("net:[") and path.endswith("]") and path[5:-1].isdigit():
        return int(path[5:-1])  # an fd on a namespace that has no mount: its inode is in the link
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def dockerd_published(index: ContainerIndex, listen: tuple[str, int], protocol: str = "tcp") -> Forward | None:
    """dockerd itself holds a published port when the userland proxy is off: match NetworkSettings.Ports."""
    container = index.by_published(listen[0], listen[1], protocol)
    return _to_container("dockerd", container, listen) if container is not None else None


# ---------------------------------------------------------------------------------------------------
# systemd socket activation


@dataclass_lite(frozen=True, slots=True)
class Activation:
    listen_pid: int | None
    fds: int  # LISTEN_FDS: the count, starting at fd 3
    names: tuple[str, ...]  # LISTEN_FDNAMES, one per fd ("unknown" where systemd had none)

    def name_of(self, fd: int) -> str | None:
        index = fd - 3
        return self.names[index] if 0 <= index < len(self.names) else None


def parse_environ(data: bytes) -> dict[str, str]:
    """/proc/PID/environ (NUL-separated ``KEY=VALUE``)."""
    result = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            result[key.decode("utf-8", "backslashreplace")] = value.decode("utf-8", "backslashreplace")
    return result


def activation(environ: Mapping[str, str]) -> Activation | None:
    """The sockets systemd passed to a service, from ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``."""
    count = environ.get("LISTEN_FDS")
    if count is None or not count.isdigit():
        return None
    pid = environ.get("LISTEN_PID")
    names = environ.get("LISTEN_FDNAMES")
    return Activation(int(pid) if pid and pid.isdigit() else None, int(count), tuple(names.split(":")) if names else ())


def activated_service(facts: ProcessFacts, fd: int, listen: tuple[str, int] | None = None) -> Forward | None:
    """A service holding ``fd`` that systemd (or systemd-socket-activate) passed to it."""
    passed = activation(facts.environ)
    if passed is None or not _meant_for(passed, facts):
        return None  # the variables were inherited from an ancestor, not meant for this process
    if not 3 <= fd < 3 + passed.fds:
        return None
    address, port = listen if listen else (None, None)
    return Forward("socket-activation", address, port, None, None, detail=passed.name_of(fd), target_pid=facts.pid)


def _meant_for(passed: Activation, facts: ProcessFacts) -> bool:
    """LISTEN_PID names this process: its pid here, or in its own pid namespace (a manager inside a
    container or a pid namespace sets the pid it sees)."""
    return passed.listen_pid is None or passed.listen_pid == facts.pid or passed.listen_pid in facts.ns_pids[-1:]


def socket_activate(argv: Iterable[str]) -> Forward | None:
    """``systemd-socket-activate -l [ADDR:]PORT [--fdname=NAME] CMD…`` before the first connection."""
    args = list(argv)
    if not args or _base(args[0]) != "systemd-socket-activate":
        return None
    listen = option_value(args, "-l", "--listen")
    if listen is None:
        return None
    address, _, port = listen.rpartition(":")
    return Forward(
        "socket-activation",
        address.strip("[]") or None,
        _port(port),
        None,
        None,
        detail=option_value(args, "--fdname"),
    )


def activating_manager(facts: ProcessFacts, services: Iterable[ProcessFacts]) -> tuple[Forward, ...]:
    """PID 1 (or any manager) holding a listener: the service processes it passed sockets to.

    ``services`` are candidate processes (e.g. the others that hold the same socket); the ones whose
    ``LISTEN_PID`` is their own pid received it. Returns a Forward per service.
    """
    found = []
    for service in services:
        if service.pid == facts.pid:
            continue
        passed = activation(service.environ)
        if passed is not None and _meant_for(passed, service):
            names = ",".join(n for n in passed.names if n) or None
            found.append(Forward("socket-activation", None, None, None, None, detail=names, target_pid=service.pid))
    return tuple(found)


# ---------------------------------------------------------------------------------------------------
# ssh -L and kubectl port-forward

_SSH_ARG_OPTIONS = set("BbcDEeFIiJLlmOoPpQRSWw")


def _split_host_port(spec: str) -> list[str]:
    """``a:b:c`` with ``[v6]`` brackets and the ``/`` separator ssh also accepts."""
    parts, current, depth = [], "", 0
    for char in spec:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char in ":/" and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p.strip("[]") for p in parts]


def ssh_forwards(argv: Iterable[str]) -> tuple[Forward, ...]:
    """Each ``-L [bind:]port:host:hostport`` of an ssh command line (options stop at the destination)."""
    args = list(argv)
    if not args or _base(args[0]) != "ssh":
        return ()
    specs, destination = [], None
    index = 1
    while index < len(args):
        arg = args[index]
        if arg == "--":
            destination = args[index + 1] if index + 1 < len(args) else None
            break
        if not arg.startswith("-") or arg == "-":
            destination = arg
            break
        # a cluster of flags; the first one that takes a value takes the rest or the next argument
        for position in range(1, len(arg)):
            flag = arg[position]
            if flag in _SSH_ARG_OPTIONS:
                value = arg[position + 1 :]
                if not value:
                    index += 1
                    value = args[index] if index < len(args) else ""
                if flag == "L":
                    specs.append(value)
                elif flag == "o":
                    key, _, rest = value.replace("=", " ", 1).partition(" ")
                    if key.lower() == "localforward":
                        specs.append(":".join(rest.split()))  # "[bind:]port host:hostport"
                break
        index += 1
    forwards = []
    for spec in specs:
        parts = _split_host_port(spec)
        if len(parts) == 3:
            bind, port, host, host_port = None, parts[0], parts[1], parts[2]
        elif len(parts) == 4:
            bind, port, host, host_port = parts
        else:
            continue  # unix-socket forwards or a malformed spec
        if _port(port) is None:
            continue
        forwards.append(Forward("ssh", bind or None, _port(port), host, _port(host_port), detail=destination))
    return tuple(forwards)


_KUBECTL_VALUE_FLAGS = {
    "-n", "--namespace", "--context", "--kubeconfig", "--cluster", "--user", "-s", "--server", "--token",
    "--address", "--pod-running-timeout", "--as", "--as-group", "--request-timeout", "-v", "--v",
    "--certificate-authority", "--client-certificate", "--client-key", "--tls-server-name", "--cache-dir",
}  # fmt: skip


def kubectl_port_forward(argv: Iterable[str]) -> tuple[Forward, ...]:
    """``kubectl port-forward [-n NS] [--address A] TYPE/NAME [LOCAL:]REMOTE…``: one Forward per port."""
    args = list(argv)
    if not args or _base(args[0]) not in ("kubectl", "oc", "microk8s.kubectl"):
        return ()
    positional, index = [], 1
    while index < len(args):
        arg = args[index]
        if arg in _KUBECTL_VALUE_FLAGS:
            index += 2
            continue
        if not arg.startswith("-"):
            positional.append(arg)
        index += 1
    if "port-forward" not in positional:
        return ()
    positional = positional[positional.index("port-forward") + 1 :]
    if not positional:
        return ()
    target, ports = positional[0], positional[1:]
    namespace = option_value(args, "-n", "--namespace")
    addresses = (option_value(args, "--address") or "localhost").split(",")
    detail = f"{namespace}/{target}" if namespace else target
    forwards = []
    for spec in ports:
        local, sep, remote = spec.partition(":")
        local_port, remote_port = (_port(local), _port(remote)) if sep else (_port(spec), _port(spec))
        if remote_port is None:
            continue
        for address in addresses:
            forwards.append(Forward("kubectl", address, local_port, target, remote_port, detail=detail))
    return tuple(forwards)


# ---------------------------------------------------------------------------------------------------
# One entry point


def recognise(
    facts: ProcessFacts,
    listen: tuple[str, int] | None = None,
    fd: int | None = None,
    index: ContainerIndex | None = None,
    protocol: str = "tcp",
) -> Forward | None:
    """The forward a process implements for the listener it holds (``listen``, on fd ``fd``), if any."""
    if _is(facts, "docker-proxy"):
        return docker_proxy(facts.argv, index)
    if _is(facts, "conmon"):
        return conmon(facts.argv, index, listen)
    if _is(facts, "rootlessport"):
        return rootlessport(facts, index, listen)
    if _is(facts, "dockerd") and index is not None and listen is not None:
        return dockerd_published(index, listen, protocol)
    if _is(facts, "systemd-socket-activate"):
        return socket_activate(facts.argv) or (activated_service(facts, fd, listen) if fd is not None else None)
    if fd is not None:
        found = activated_service(facts, fd, listen)
        if found is not None:
            return found
    for forward in (*ssh_forwards(facts.argv), *kubectl_port_forward(facts.argv)):
        if listen is None or forward.listen_port == listen[1]:
            return forward
    return None


def read_facts(pid: int, proc_root: str = "/proc") -> ProcessFacts | None:
    """The facts ``recognise`` needs, read from /proc; ``None`` if the process vanished."""
    base = f"{proc_root}/{pid}"
    try:
        with open(f"{base}/comm", "rb") as handle:
            name = handle.read().rstrip(b"\n").decode("utf-8", "backslashreplace")
    except OSError:
        return None
    argv = _read_nul(f"{base}/cmdline")
    try:
        exe: str | None = os.readlink(f"{base}/exe")
    except OSError:
        exe = None
    environ = {}
    try:
        with open(f"{base}/environ", "rb") as handle:
            environ = parse_environ(handle.read())
    except OSError:
        pass
    netns_fds = []
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        fds = []
    for entry in fds:
        try:
            target = os.readlink(f"{base}/fd/{entry}")
        except OSError:
            continue
        if "/netns/" in target or target.startswith("net:["):
            netns_fds.append(target)
    return ProcessFacts(pid, name, exe, argv, environ, tuple(netns_fds), read_ns_pids(pid, proc_root))


def read_ns_pids(pid: int, proc_root: str = "/proc") -> tuple[int, ...]:
    """The NSpid line of /proc/PID/status: the pid in each pid namespace, outermost first."""
    try:
        with open(f"{proc_root}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"NSpid:"):
                    return tuple(int(part) for part in line.split()[1:] if part.isdigit())
    except OSError:
        pass
    return ()


def read_activation_facts(pid: int, proc_root: str = "/proc") -> ProcessFacts | None:
    """What socket activation needs of a process (its environment and pids), without its argv or fds."""
    try:
        with open(f"{proc_root}/{pid}/environ", "rb") as handle:
            environ = parse_environ(handle.read())
    except OSError:
        return None
    if "LISTEN_FDS" not in environ:
        return ProcessFacts(pid, "", None, (), environ)
    return ProcessFacts(pid, "", None, (), environ, (), read_ns_pids(pid, proc_root))


def _read_nul(path: str) -> tuple[str, ...]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return ()
    return tuple(part.decode("utf-8", "backslashreplace") for part in data.split(b"\0") if part)
