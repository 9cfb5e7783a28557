"""Container identity from the files the runtimes themselves write: no daemon API, no socket, no exec.

Docker keeps ``<data-root>/containers/<id>/config.v2.json`` (+ ``hostconfig.json``); podman and CRI-O
keep ``<storage>/overlay-containers/containers.json`` and an OCI bundle per container; containerd keeps
a bundle per task under ``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/``; the CNI plugins
cache each attachment (addresses, port mappings) under ``/var/lib/cni/results``. The parsers below take
text or bytes; the readers take their roots as parameters, so tests feed recorded trees.

A file that cannot be read or parsed leaves what is certain (the runtime and the id, which come from
the directory layout) and nothing else: a name is never guessed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
from collections.abc import Iterable, Iterator
from dataclasses import field, replace

from portscope.model.dataclass_lite import dataclass_lite

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass_lite(frozen=True, slots=True)
class PublishedPort:
    protocol: str  # tcp, udp, sctp
    container_port: int
    host_ip: str  # "" when published on every address
    host_port: int


@dataclass_lite(frozen=True, slots=True)
class ContainerInfo:
    runtime: str  # docker, podman, cri-o, containerd, kubernetes, lxc, systemd-nspawn, container
    id: str  # the 64-hex id, or a name where the runtime has no id (lxc, nspawn)
    name: str | None = None
    pod: str | None = None  # Kubernetes pod name (from annotations) or uid (from a cgroup path)
    namespace: str | None = None  # Kubernetes namespace
    compose_project: str | None = None
    compose_service: str | None = None
    image: str | None = None
    ports: tuple[PublishedPort, ...] = ()
    addresses: tuple[str, ...] = ()
    netns_path: str | None = None
    pid: int | None = None  # the container's first process, as the runtime recorded it
    running: bool | None = None  # None: the runtime's files do not say

    @property
    def short_id(self) -> str:
        return self.id[:12] if _HEX64.fullmatch(self.id) else self.id


# ---------------------------------------------------------------------------------------------------
# cgroup paths -> (runtime, id)

_SCOPED_ID = re.compile(r"^(?:(?P<prefix>[a-z][a-z0-9-]*?)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$")
_PREFIX_RUNTIMES = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "nerdctl": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}
_MONITOR_PREFIXES = ("libpod-conmon", "crio-conmon")  # the monitor runs next to the container, not in it
_POD_SEGMENT = re.compile(
    r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$"
)
_CONTAINERD_NAMESPACES = frozenset({"k8s.io", "default", "moby", "buildkit"})


def unescape_unit(text: str) -> str:
    """systemd's unit-name escapes (``\\x2d`` is a literal dash)."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _context_runtime(parents: list[str]) -> str:
    if "docker" in parents:
        return "docker"
    if "libpod_parent" in parents:
        return "podman"
    if any(s.startswith("kubepods") for s in parents):
        return "kubernetes"
    if any(s in _CONTAINERD_NAMESPACES for s in parents):
        return "containerd"
    return "container"


def _pod_uid(parents: list[str]) -> str | None:
    if not any(s.startswith("kubepods") for s in parents):
        return None
    for segment in parents:
        match = _POD_SEGMENT.search(segment)
        if match:
            return match.group("uid").replace("_", "-")
    return None


def container_of_cgroup(path: str) -> ContainerInfo | None:
    """The container a cgroup path belongs to: (runtime, id, pod uid), or ``None`` for the host.

    Shapes: cgroupfs drivers (``/docker/ID``, ``/libpod_parent/libpod-ID``, ``/kubepods/…/podUID/ID``,
    containerd's ``/NAMESPACE/ID``), systemd drivers (``docker-ID.scope``, ``libpod-ID.scope``,
    ``cri-containerd-ID.scope``, ``crio-ID.scope`` under ``kubepods-…-podUID.slice``), lxc
    (``/lxc.payload.NAME``, ``/lxc/NAME``) and systemd-nspawn (``machine.slice/machine-NAME.scope``,
    ``machine.slice/systemd-nspawn@NAME.service``). Container monitors (conmon) are not containers.
    """
    segments = [s for s in path.split("/") if s]
    for index in range(len(segments) - 1, -1, -1):
        segment, parents = segments[index], segments[:index]
        match = _SCOPED_ID.match(segment)
        if match:
            prefix = match.group("prefix")
            if prefix in _MONITOR_PREFIXES:
                return None
            runtime = _PREFIX_RUNTIMES.get(prefix, prefix) if prefix else _context_runtime(parents)
            return ContainerInfo(runtime, match.group("id"), pod=_pod_uid(parents))
        if segment.startswith("lxc.monitor."):
            return None
        if segment.startswith("lxc.payload."):
            return ContainerInfo("lxc", segment[len("lxc.payload.") :])
        if parents and parents[-1] in ("lxc", "lxc.payload") and not segment.startswith("lxc."):
            return ContainerInfo("lxc", segment)
        if "machine.slice" in parents:
            if segment.startswith("machine-") and segment.endswith(".scope"):
                return ContainerInfo("systemd-nspawn", unescape_unit(segment[len("machine-") : -len(".scope")]))
            if segment.startswith("systemd-nspawn@") and segment.endswith(".service"):
                name = segment[len("systemd-nspawn@") : -len(".service")]
                return ContainerInfo("systemd-nspawn", unescape_unit(name))
    # a bare id in a place none of the shapes above names (other cgroupfs layouts)
    found = _HEX64.findall(path)
    if found:
        return ContainerInfo(_context_runtime(segments), found[-1], pod=_pod_uid(segments))
    return None


# ---------------------------------------------------------------------------------------------------
# Pure parsers of the runtimes' files


def _json(data: bytes | str | None) -> object:
    if data is None:
        return None
    import json  # (who loads this module for every holder; json only where a runtime's files exist)

    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _port_number(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= 65535 else None


def _docker_ports(mapping: object) -> tuple[PublishedPort, ...]:
    """``{"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18081"}]}`` (NetworkSettings.Ports, PortBindings)."""
    if not isinstance(mapping, dict):
        return ()
    ports = []
    for key, bindings in mapping.items():
        number, _, protocol = str(key).partition("/")
        container_port = _port_number(number)
        if container_port is None or not isinstance(bindings, list):
            continue
        for binding in bindings:
            if not isinstance(binding, dict):
                continue
            host_port = _port_number(binding.get("HostPort"))
            if host_port is not None:
                host_ip = binding.get("HostIp") or ""
                ports.append(PublishedPort(protocol or "tcp", container_port, str(host_ip), host_port))
    return tuple(ports)


def parse_docker_config(
    container_id: str, config_v2: bytes | str | None, hostconfig: bytes | str | None = None
) -> ContainerInfo:
    """A docker container from its ``config.v2.json`` and ``hostconfig.json`` (either may be missing)."""
    config = _json(config_v2)
    if not isinstance(config, dict):
        return ContainerInfo("docker", container_id)
    inner = config.get("Config") if isinstance(config.get("Config"), dict) else {}
    labels = inner.get("Labels") if isinstance(inner.get("Labels"), dict) else {}
    state = config.get("State") if isinstance(config.get("State"), dict) else {}
    network = config.get("NetworkSettings") if isinstance(config.get("NetworkSettings"), dict) else {}
    networks = network.get("Networks") if isinstance(network.get("Networks"), dict) else {}
    addresses = []
    for attachment in networks.values():
        if isinstance(attachment, dict):
            for key in ("IPAddress", "GlobalIPv6Address"):
                address = _text(attachment.get(key))
                if address and address not in addresses:
                    addresses.append(address)
    ports = _docker_ports(network.get("Ports"))
    if not ports:  # a stopped container keeps its bindings only in hostconfig.json
        host = _json(hostconfig)
        if isinstance(host, dict):
            ports = _docker_ports(host.get("PortBindings"))
    name = _text(config.get("Name"))
    pid = state.get("Pid")
    running = state.get("Running")
    return ContainerInfo(
        "docker",
        _text(config.get("ID")) or container_id,
        name=(name.lstrip("/") or None) if name else None,
        compose_project=_text(labels.get("com.docker.compose.project")),
        compose_service=_text(labels.get("com.docker.compose.service")),
        image=_text(inner.get("Image")),
        ports=ports,
        addresses=tuple(addresses),
        netns_path=_text(network.get("SandboxKey")),
        pid=pid if isinstance(pid, int) and pid > 0 else None,
        running=running if isinstance(running, bool) else None,
    )


def parse_storage_containers(data: bytes | str | None) -> dict[str, tuple[str | None, str | None, dict]]:
    """containers/storage's ``containers.json``: {id: (name, image name, metadata)} (podman, CRI-O)."""
    entries = _json(data)
    result: dict[str, tuple[str | None, str | None, dict]] = {}
    if not isinstance(entries, list):
        return result
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        metadata = _json(entry.get("metadata")) if isinstance(entry.get("metadata"), str) else None
        metadata = metadata if isinstance(metadata, dict) else {}
        names = entry.get("names")
        name = _text(metadata.get("name"))
        if name is None and isinstance(names, list) and names:
            name = _text(names[0])
        result[entry["id"]] = (name, _text(metadata.get("image-name")), metadata)
    return result


@dataclass_lite(frozen=True, slots=True)
class Bundle:
    """What an OCI bundle's ``config.json`` says about its container."""

    runtime: str | None  # podman, cri-o, kubernetes (containerd CRI), or None: no manager annotation
    name: str | None
    pod: str | None
    namespace: str | None
    netns_path: str | None


def parse_bundle_config(data: bytes | str | None) -> Bundle | None:
    """Annotations and the network namespace path of an OCI ``config.json``; ``None`` if unreadable."""
    config = _json(data)
    if not isinstance(config, dict):
        return None
    notes = config.get("annotations") if isinstance(config.get("annotations"), dict) else {}
    linux = config.get("linux") if isinstance(config.get("linux"), dict) else {}
    netns_path = None
    for namespace in linux.get("namespaces") or ():
        if isinstance(namespace, dict) and namespace.get("type") == "network":
            netns_path = _text(namespace.get("path"))
    if "io.kubernetes.cri.container-name" in notes or "io.kubernetes.cri.sandbox-name" in notes:  # containerd
        name = _text(notes.get("io.kubernetes.cri.container-name"))
        pod = _text(notes.get("io.kubernetes.cri.sandbox-name"))
        namespace = _text(notes.get("io.kubernetes.cri.sandbox-namespace"))
        return Bundle("kubernetes", name, pod, namespace, netns_path)
    if "io.kubernetes.pod.name" in notes or "io.kubernetes.container.name" in notes:  # CRI-O
        name = _text(notes.get("io.kubernetes.container.name"))
        pod = _text(notes.get("io.kubernetes.pod.name"))
        namespace = _text(notes.get("io.kubernetes.pod.namespace"))
        return Bundle("cri-o", name, pod, namespace, netns_path)
    runtime = "podman" if notes.get("io.container.manager") == "libpod" else None
    return Bundle(runtime, None, None, None, netns_path)


def parse_hosts_address(data: bytes | str | None, container_id: str, name: str | None) -> tuple[str, ...]:
    """The container's own addresses from the ``hosts`` file podman writes (``10.88.0.2 <short id> <name>``)."""
    if data is None:
        return ()
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    own = {container_id[:12], container_id}
    if name:
        own.add(name)
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and own.intersection(fields[1:]) and fields[0] not in found:
            found.append(fields[0])
    return tuple(found)


def parse_cni_result(data: bytes | str | None) -> tuple[str | None, tuple[str, ...], tuple[PublishedPort, ...]]:
    """(container id, addresses, port mappings) from a CNI cache file (``/var/lib/cni/results/…``)."""
    cache = _json(data)
    if not isinstance(cache, dict):
        return None, (), ()
    result = cache.get("result") if isinstance(cache.get("result"), dict) else {}
    addresses = []
    for entry in result.get("ips") or ():
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            addresses.append(entry["address"].split("/", 1)[0])
    capabilities = cache.get("capabilityArgs") if isinstance(cache.get("capabilityArgs"), dict) else {}
    ports = []
    for mapping in capabilities.get("portMappings") or ():
        if not isinstance(mapping, dict):
            continue
        host_port, container_port = _port_number(mapping.get("hostPort")), _port_number(mapping.get("containerPort"))
        if host_port is not None and container_port is not None:
            host_ip = str(mapping.get("hostIP") or "")
            ports.append(PublishedPort(str(mapping.get("protocol") or "tcp"), container_port, host_ip, host_port))
    return _text(cache.get("containerId")), tuple(addresses), tuple(ports)


LIBPOD_DB = "libpod/bolt_state.db"  # podman's state under a storage root (podman 4; podman 5 may use db.sql)
_LIBPOD_CONFIG = '{"spec":'  # each container's config is one JSON value, stored whole in the database file
PORT_RANGE_LIMIT = 1024  # ports of one published range kept (podman -p 8000-9000:8000-9000)


def _libpod_mappings(config: dict) -> tuple[PublishedPort, ...]:
    """podman 4's ``newPortMappings`` (``host_ip``, ``container_port``, ``host_port``, ``range``,
    ``protocol`` as ``tcp,udp``), or the older ``portMappings`` (``hostIP``, ``containerPort``, ``hostPort``)."""
    ports = []
    for mapping in config.get("newPortMappings") or ():
        if not isinstance(mapping, dict):
            continue
        host_port, container_port = _port_number(mapping.get("host_port")), _port_number(mapping.get("container_port"))
        count = mapping.get("range") if isinstance(mapping.get("range"), int) and mapping.get("range") > 0 else 1
        if host_port is None or container_port is None:
            continue
        host_ip = str(mapping.get("host_ip") or "")
        for protocol in str(mapping.get("protocol") or "tcp").split(","):
            for offset in range(min(count, PORT_RANGE_LIMIT, 65536 - max(host_port, container_port))):
                ports.append(PublishedPort(protocol, container_port + offset, host_ip, host_port + offset))
    for mapping in config.get("portMappings") or ():
        if not isinstance(mapping, dict):
            continue
        host_port, container_port = _port_number(mapping.get("hostPort")), _port_number(mapping.get("containerPort"))
        if host_port is not None and container_port is not None:
            host_ip = str(mapping.get("hostIP") or "")
            ports.append(PublishedPort(str(mapping.get("protocol") or "tcp"), container_port, host_ip, host_port))
    return tuple(ports)


def parse_libpod_db(data: bytes | None) -> dict[str, tuple[PublishedPort, ...]]:
    """{container id: published ports} from podman's ``bolt_state.db``, which is where podman keeps them.

    Not a BoltDB reader: BoltDB stores each value whole (a large one in consecutive overflow pages), and
    libpod's container configs are JSON values starting with ``{"spec":``, so each is decoded where it
    starts. A freed page may still hold an older copy: the configs of one id are merged, never guessed.
    """
    if not data or _LIBPOD_CONFIG.encode() not in data:  # a podman that never published a port: no json import
        return {}
    import json  # only where podman's database holds container configs

    text = data.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    found: dict[str, tuple[PublishedPort, ...]] = {}
    at = text.find(_LIBPOD_CONFIG)
    while at >= 0:
        try:
            config, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            end = at + len(_LIBPOD_CONFIG)
            config = None
        if isinstance(config, dict) and isinstance(config.get("id"), str):
            ports = _libpod_mappings(config)
            if ports:
                found[config["id"]] = tuple(dict.fromkeys((*found.get(config["id"], ()), *ports)))
        at = text.find(_LIBPOD_CONFIG, end)
    return found


def option_value(argv: Iterable[str], *names: str) -> str | None:
    """The value of a command-line option given as ``NAME VALUE`` or ``NAME=VALUE`` (the last one wins)."""
    found = None
    args = list(argv)
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                found = args[index + 1]
            elif arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found


def shim_container(argv: Iterable[str]) -> tuple[str, str] | None:
    """(containerd namespace, container id) from ``containerd-shim-runc-v2 -namespace moby -id <id> …``.

    Namespace ``moby`` is docker's, ``k8s.io`` the CRI plugin's (look the id up in the index).
    """
    args = list(argv)
    container_id = option_value(args, "-id", "--id")
    if not container_id:
        return None
    return option_value(args, "-namespace", "--namespace") or "default", container_id


def dockerd_roots(argv: Iterable[str]) -> tuple[str, str]:
    """(data root, exec root) of a running dockerd from its argv (defaults: /var/lib/docker, /run/docker)."""
    args = list(argv)
    return (
        option_value(args, "--data-root", "-g", "--graph") or "/var/lib/docker",
        option_value(args, "--exec-root") or "/run/docker",
    )


# ---------------------------------------------------------------------------------------------------
# Roots and the index


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _nsfs_inode(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


@dataclass_lite(frozen=True, slots=True)
class StorageRoot:
    """A containers/storage pair: the persistent root and its run root (podman, CRI-O; rootful or a user's)."""

    root: str  # /var/lib/containers/storage, ~/.local/share/containers/storage
    run_root: str  # /run/containers/storage, /run/user/UID/containers


@dataclass_lite(frozen=True, slots=True)
class RuntimeRoots:
    docker: tuple[str, ...] = ("/var/lib/docker",)  # data roots
    storage: tuple[StorageRoot, ...] = (StorageRoot("/var/lib/containers/storage", "/run/containers/storage"),)
    containerd_tasks: tuple[str, ...] = ("/run/containerd/io.containerd.runtime.v2.task",)
    cni_results: tuple[str, ...] = ("/var/lib/cni/results",)


def rootless_storage(run: str = "/run", homes: dict[int, str] | None = None) -> tuple[StorageRoot, ...]:
    """The storage of each user with a podman run root now (``/run/user/UID/containers``).

    ``homes`` maps uids to home directories (default: the password database, for those uids only).
    """
    found = []
    for entry in sorted(_listdir(f"{run}/user")):
        if not entry.isdigit() or not os.path.isdir(f"{run}/user/{entry}/containers"):
            continue
        uid = int(entry)
        home = homes.get(uid) if homes is not None else None
        if homes is None:
            with contextlib.suppress(KeyError):
                home = pwd.getpwuid(uid).pw_dir
        if home:
            found.append(StorageRoot(f"{home}/.local/share/containers/storage", f"{run}/user/{entry}/containers"))
    return tuple(found)


def default_roots(
    var_lib: str = "/var/lib", run: str = "/run", homes: dict[int, str] | None = None, docker: Iterable[str] = ()
) -> RuntimeRoots:
    """Where the runtimes keep their files on a standard install; ``docker`` adds data roots (``dockerd_roots``)."""
    return RuntimeRoots(
        docker=tuple(dict.fromkeys((f"{var_lib}/docker", *docker))),
        storage=(
            StorageRoot(f"{var_lib}/containers/storage", f"{run}/containers/storage"),
            *rootless_storage(run, homes),
        ),
        containerd_tasks=(f"{run}/containerd/io.containerd.runtime.v2.task",),
        cni_results=(f"{var_lib}/cni/results",),
    )


def read_docker(data_root: str) -> Iterator[ContainerInfo]:
    directory = f"{data_root}/containers"
    for entry in sorted(_listdir(directory)):
        if _HEX64.fullmatch(entry):
            yield parse_docker_config(
                entry, _read(f"{directory}/{entry}/config.v2.json"), _read(f"{directory}/{entry}/hostconfig.json")
            )


def _read_pid(path: str) -> int | None:
    data = _read(path)
    try:
        pid = int(data) if data else None
    except ValueError:
        return None
    return pid if pid and pid > 0 else None


def read_storage(
    storage: StorageRoot, cni: dict[str, tuple[tuple[str, ...], tuple[PublishedPort, ...]]]
) -> Iterator[ContainerInfo]:
    """Containers of a containers/storage root: podman's and CRI-O's (told apart by their bundle annotations).

    Each storage driver has its own ``<driver>-containers`` directory (overlay, vfs, btrfs, …).
    """
    entries = sorted(_listdir(storage.root))
    published = parse_libpod_db(_read(f"{storage.root}/{LIBPOD_DB}")) if "libpod" in entries else {}
    for entry in entries:
        if entry.endswith("-containers"):
            yield from _read_driver_dir(storage, entry, cni, published)


def _read_driver_dir(
    storage: StorageRoot,
    driver_dir: str,
    cni: dict[str, tuple[tuple[str, ...], tuple[PublishedPort, ...]]],
    published: dict[str, tuple[PublishedPort, ...]],
) -> Iterator[ContainerInfo]:
    directory = f"{storage.root}/{driver_dir}"
    listed = parse_storage_containers(_read(f"{directory}/containers.json"))
    ids = dict.fromkeys([*listed, *(e for e in sorted(_listdir(directory)) if _HEX64.fullmatch(e))])
    for container_id in ids:
        name, image, metadata = listed.get(container_id, (None, None, {}))
        bundle = parse_bundle_config(_read(f"{directory}/{container_id}/userdata/config.json"))
        run_dir = f"{storage.run_root}/{driver_dir}/{container_id}/userdata"
        runtime = (bundle.runtime if bundle else None) or ("cri-o" if "pod-name" in metadata else "podman")
        addresses, ports = cni.get(container_id, ((), ()))
        ports = ports or published.get(container_id, ())
        if not addresses:
            addresses = parse_hosts_address(_read(f"{run_dir}/hosts"), container_id, name)
        pod = (bundle.pod if bundle else None) or _text(metadata.get("pod-name"))
        yield ContainerInfo(
            runtime,
            container_id,
            name=(bundle.name if bundle and bundle.name else name),
            pod=pod,
            namespace=bundle.namespace if bundle else None,
            image=image,
            ports=ports,
            addresses=addresses,
            netns_path=bundle.netns_path if bundle else None,
            pid=_read_pid(f"{run_dir}/pidfile"),
        )


def read_containerd(task_root: str, skip_namespaces: Iterable[str] = ("moby",)) -> Iterator[ContainerInfo]:
    """containerd tasks (``<root>/<namespace>/<id>/config.json``); docker's own namespace is left to read_docker."""
    skipped = set(skip_namespaces)
    for namespace in sorted(_listdir(task_root)):
        if namespace in skipped:
            continue
        for container_id in sorted(_listdir(f"{task_root}/{namespace}")):
            bundle = parse_bundle_config(_read(f"{task_root}/{namespace}/{container_id}/config.json"))
            pid = _read_pid(f"{task_root}/{namespace}/{container_id}/init.pid")
            if bundle is None:
                yield ContainerInfo("containerd", container_id, pid=pid)
                continue
            yield ContainerInfo(
                bundle.runtime or "containerd",
                container_id,
                name=bundle.name,
                pod=bundle.pod,
                namespace=bundle.namespace,
                netns_path=bundle.netns_path,
                pid=pid,
            )


def read_cni_results(directory: str) -> dict[str, tuple[tuple[str, ...], tuple[PublishedPort, ...]]]:
    found: dict[str, tuple[tuple[str, ...], tuple[PublishedPort, ...]]] = {}
    for entry in sorted(_listdir(directory)):
        container_id, addresses, ports = parse_cni_result(_read(f"{directory}/{entry}"))
        if container_id:
            old_addresses, old_ports = found.get(container_id, ((), ()))
            found[container_id] = (old_addresses + addresses, old_ports + ports)
    return found


@dataclass_lite
class ContainerIndex:
    """Every container the runtimes' files describe, read on the first question and then kept.

    On a host without runtimes the first question costs one failed listdir per root.
    """

    roots: RuntimeRoots = field(default_factory=default_roots)
    _containers: tuple[ContainerInfo, ...] | None = field(default=None, init=False, repr=False)
    _by_netns: dict[int, ContainerInfo] | None = field(default=None, init=False, repr=False)

    @property
    def containers(self) -> tuple[ContainerInfo, ...]:
        if self._containers is None:
            self._containers = tuple(self._load())
        return self._containers

    def _load(self) -> Iterator[ContainerInfo]:
        seen: set[str] = set()
        cni: dict[str, tuple[tuple[str, ...], tuple[PublishedPort, ...]]] = {}
        for directory in self.roots.cni_results:
            cni.update(read_cni_results(directory))
        sources = [
            *(read_docker(root) for root in self.roots.docker),
            *(read_storage(storage, cni) for storage in self.roots.storage),
            *(read_containerd(root) for root in self.roots.containerd_tasks),
        ]
        for source in sources:
            for info in source:
                if info.id not in seen:
                    seen.add(info.id)
                    yield info

    def by_id(self, id_or_prefix: str) -> ContainerInfo | None:
        """The container with this id, or the only one whose id starts with it (``None`` if ambiguous)."""
        key = id_or_prefix.lower()
        if not key:
            return None
        matches = [c for c in self.containers if c.id.startswith(key)]
        exact = [c for c in matches if c.id == key]
        return exact[0] if exact else matches[0] if len(matches) == 1 else None

    def by_name(self, name: str) -> ContainerInfo | None:
        matches = [c for c in self.containers if c.name == name]
        return _prefer_running(matches)

    def by_address(self, address: str) -> ContainerInfo | None:
        return _prefer_running([c for c in self.containers if address in c.addresses])

    def by_published(self, host_ip: str, host_port: int, protocol: str = "tcp") -> ContainerInfo | None:
        """The container that publishes this host address and port (``host_ip`` "" or 0.0.0.0: every address)."""
        wildcard = ("", "0.0.0.0", "::")
        matches = [
            c
            for c in self.containers
            for p in c.ports
            if p.host_port == host_port
            and p.protocol == protocol
            and (p.host_ip == host_ip or p.host_ip in wildcard or host_ip in wildcard)
        ]
        return _prefer_running(list(dict.fromkeys(matches)))

    def by_netns_path(self, path: str) -> ContainerInfo | None:
        return _prefer_running([c for c in self.containers if c.netns_path == path])

    def by_netns_inode(self, inode: int) -> ContainerInfo | None:
        """The container whose recorded network namespace has this inode (stats each netns path once)."""
        if self._by_netns is None:
            self._by_netns = {}
            for info in self.containers:
                found = _nsfs_inode(info.netns_path)
                if found is not None and found not in self._by_netns:
                    self._by_netns[found] = info
        return self._by_netns.get(inode)

    def for_cgroup(self, path: str) -> ContainerInfo | None:
        """The container a cgroup path names, with the runtime's files' details when they have it."""
        shape = container_of_cgroup(path)
        if shape is None:
            return None
        known = self.by_id(shape.id) if _HEX64.fullmatch(shape.id) else None
        if known is None:
            return shape
        return known if shape.pod is None or known.pod else replace(known, pod=shape.pod)


def _prefer_running(matches: list[ContainerInfo]) -> ContainerInfo | None:
    live = [c for c in matches if c.running is not False]
    candidates = live or matches
    return candidates[0] if len(candidates) == 1 else None


# ---------------------------------------------------------------------------------------------------
# The host's index: standard roots plus those the running runtimes were started with


def _exit_command_args(argv: list[str]) -> list[str]:
    """conmon's ``--exit-command-arg X`` values, in order: the podman command line it runs at exit."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--exit-command-arg"]


def running_roots(proc_root: str = "/proc") -> tuple[tuple[str, ...], tuple[StorageRoot, ...]]:
    """Docker data roots of running dockerds and podman storage roots of running conmons (their argv)."""
    docker: dict[str, None] = {}
    storage: dict[StorageRoot, None] = {}
    try:
        pids = [name for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return (), ()
    for pid in pids:
        argv = _read(f"{proc_root}/{pid}/cmdline")
        if not argv:
            continue
        args = [part.decode("utf-8", "surrogateescape") for part in argv.split(b"\0") if part]
        program = os.path.basename(args[0]) if args else ""
        if program == "dockerd":
            docker[dockerd_roots(args)[0]] = None
        elif program == "conmon":
            exit_args = _exit_command_args(args)
            root = option_value(exit_args, "--root")
            if root:
                storage[StorageRoot(root, option_value(exit_args, "--runroot") or "/run/containers/storage")] = None
    return tuple(docker), tuple(storage)


def host_index(var_lib: str = "/var/lib", run: str = "/run", proc_root: str = "/proc") -> ContainerIndex:
    """Every container of this host: the runtimes' standard roots and the roots their running daemons use."""
    docker, storage = running_roots(proc_root)
    roots = default_roots(var_lib, run, docker=docker)
    return ContainerIndex(replace(roots, storage=tuple(dict.fromkeys((*roots.storage, *storage)))))
