"""Real podman and docker containers: the index and the forwarder recognisers name them from the
runtimes' own files, the processes' argv and cgroups, with `ss` (who holds the port) and the runtimes'
`inspect` (names, ids, addresses) as oracles."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from containers_util import require, runtimes
from portscope.sources.containers import ContainerIndex, RuntimeRoots, StorageRoot, dockerd_roots, shim_container
from portscope.sources.forwarders import dockerd_published, read_facts, recognise
from portscope.sources.lineage import pick_cgroup_path

PORTSCOPE = (sys.executable, "-m", "portscope")  # this checkout's, not whichever is first on PATH
pytestmark = pytest.mark.containers
NO_WIDTH = {**os.environ, "COLUMNS": ""}  # a pipe: whole lines


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def holder_of(port: int) -> int:
    """The pid ss names for the TCP listener on ``port`` (exactly one)."""
    out = subprocess.run(
        ["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    pids = set(re.findall(r"pid=(\d+)", out))
    assert len(pids) == 1, f"ss shows {out!r} for port {port}"
    return int(pids.pop())


def wait_holder(port: int) -> int:
    for _ in range(50):
        try:
            return holder_of(port)
        except AssertionError:
            time.sleep(0.1)
    return holder_of(port)


class Live:
    """The containers this module starts, once."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.ports: dict[str, int] = {}
        self.ids: dict[str, str] = {}
        suffix = os.urandom(3).hex()
        if rt.podman is not None:
            for key, options in (
                ("podman-bridge", ("--network", rt.podman.networks[0])),
                ("podman-slirp", ("--network", "slirp4netns")),
            ):
                self.ports[key] = _free_port()
                self.ids[key] = rt.podman.run(f"ps-{key}-{suffix}", *options, "-p", f"127.0.0.1:{self.ports[key]}:8080")
            self.ports["podman-host"] = _free_port()
            self.ids["podman-host"] = rt.podman.run(
                f"ps-podman-host-{suffix}", "--network", "host", port=self.ports["podman-host"]
            )
        if rt.docker is not None:
            self.ports["docker-bridge"] = _free_port()
            self.ids["docker-bridge"] = rt.docker.run(
                f"ps-docker-bridge-{suffix}",
                "-p", f"127.0.0.1:{self.ports['docker-bridge']}:8080",
                "-l", "com.docker.compose.project=psapp",
                "-l", "com.docker.compose.service=web",
            )  # fmt: skip
            self.ports["docker-host"] = _free_port()
            self.ids["docker-host"] = rt.docker.run(
                f"ps-docker-host-{suffix}", "--network", "host", port=self.ports["docker-host"]
            )
            port = self.ports["docker-wrongport"] = _free_port()  # published to 8080, where nothing listens
            self.ids["docker-wrongport"] = rt.docker.run(
                f"ps-docker-wrongport-{suffix}", "-p", f"127.0.0.1:{port}:8080", port=9090
            )
            port = self.ports["docker-sameport"] = _free_port()  # the same port outside and inside
            self.ids["docker-sameport"] = rt.docker.run(
                f"ps-docker-sameport-{suffix}", "-p", f"127.0.0.1:{port}:{port}", port=port
            )
        if rt.docker_without_proxy is not None:
            self.ports["docker-noproxy"] = _free_port()
            self.ids["docker-noproxy"] = rt.docker_without_proxy.run(
                f"ps-docker-noproxy-{suffix}", "-p", f"127.0.0.1:{self.ports['docker-noproxy']}:8080"
            )
        self.names = {key: f"ps-{key}-{suffix}" for key in self.ids}

    def index(self) -> ContainerIndex:
        """A fresh index over this session's private roots (docker's found from the daemon's argv)."""
        docker = ()
        if self.rt.docker is not None:
            argv = read_facts(self.rt.docker.daemon.pid).argv
            docker = (dockerd_roots(argv)[0],)
        storage = ()
        if self.rt.podman is not None:
            storage = (StorageRoot(self.rt.podman.storage_root, self.rt.podman.run_root),)
        return ContainerIndex(RuntimeRoots(docker, storage, (), ("/var/lib/cni/results",)))

    def inspect(self, key: str, template: str) -> str:
        runtime = self.rt.podman if key.startswith("podman") else self.rt.docker
        if key == "docker-noproxy":
            runtime = self.rt.docker_without_proxy
        return runtime("inspect", "--format", template, self.ids[key])


@pytest.fixture(scope="module")
def live():
    with runtimes(without_proxy=True) as rt:
        yield Live(rt)


def _podman(live: Live) -> None:
    require(live.rt.podman_problem)


def _docker(live: Live) -> None:
    require(live.rt.docker_problem)


def test_conmon_holds_a_bridge_port_and_names_its_container(live):
    _podman(live)
    port, key = live.ports["podman-bridge"], "podman-bridge"
    facts = read_facts(wait_holder(port))
    assert facts.name == "conmon"
    forward = recognise(facts, listen=("127.0.0.1", port), index=live.index())
    assert forward.kind == "conmon"
    assert (forward.container.runtime, forward.container.id, forward.container.name) == (
        "podman",
        live.ids[key],
        live.names[key],
    )
    assert forward.target_address == live.inspect(key, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    assert forward.target_port == 8080
    pid = int(live.inspect(key, "{{.State.Pid}}"))
    assert forward.netns_inode == os.stat(f"/proc/{pid}/ns/net").st_ino


def test_conmon_without_readable_files_keeps_its_argv_identity(live, tmp_path):
    _podman(live)
    key = "podman-bridge"
    facts = read_facts(wait_holder(live.ports[key]))
    empty = ContainerIndex(RuntimeRoots((), (StorageRoot(str(tmp_path), str(tmp_path)),), (), ()))
    forward = recognise(facts, index=empty)
    assert (forward.container.id, forward.container.name) == (live.ids[key], live.names[key])
    assert forward.container.addresses == ()


def test_rootlessport_names_the_slirp_container_by_its_netns(live):
    _podman(live)
    port, key = live.ports["podman-slirp"], "podman-slirp"
    facts = read_facts(wait_holder(port))
    assert facts.name == "rootlessport"
    forward = recognise(facts, listen=("127.0.0.1", port), index=live.index())
    assert forward.kind == "rootlessport"
    assert (forward.container.runtime, forward.container.id, forward.container.name) == (
        "podman",
        live.ids[key],
        live.names[key],
    )
    pid = int(live.inspect(key, "{{.State.Pid}}"))
    assert forward.netns_inode == os.stat(f"/proc/{pid}/ns/net").st_ino


@pytest.mark.parametrize("key", ["podman-host", "docker-host"])
def test_host_network_container_process_is_named_from_its_cgroup(live, key):
    require(live.rt.podman_problem if key.startswith("podman") else live.rt.docker_problem)
    pid = wait_holder(live.ports[key])
    assert recognise(read_facts(pid), listen=("0.0.0.0", live.ports[key]), index=live.index()) is None
    with open(f"/proc/{pid}/cgroup") as handle:
        path = pick_cgroup_path(handle.read())
    found = live.index().for_cgroup(path)
    runtime = key.split("-")[0]
    assert (found.runtime, found.id, found.name) == (runtime, live.ids[key], live.names[key])


def test_docker_proxy_names_the_container_and_its_compose_labels(live):
    _docker(live)
    port, key = live.ports["docker-bridge"], "docker-bridge"
    facts = read_facts(wait_holder(port))
    assert facts.name == "docker-proxy"
    forward = recognise(facts, listen=("127.0.0.1", port), index=live.index())
    assert (forward.kind, forward.listen_address, forward.listen_port) == ("docker-proxy", "127.0.0.1", port)
    address = live.inspect(key, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    assert (forward.target_address, forward.target_port) == (address, 8080)
    container = forward.container
    assert (container.runtime, container.id, container.name) == ("docker", live.ids[key], live.names[key])
    assert (container.compose_project, container.compose_service) == ("psapp", "web")
    assert container.running is True
    with open(f"/proc/{container.pid}/stat") as handle:
        shim = int(handle.read().rsplit(")", 1)[1].split()[1])  # the container's parent is its shim
    assert shim_container(read_facts(shim).argv) == ("moby", live.ids[key])


def test_dockerd_published_port_matches_network_settings(live):
    _docker(live)
    port, key = live.ports["docker-bridge"], "docker-bridge"
    forward = dockerd_published(live.index(), ("127.0.0.1", port))
    assert (forward.kind, forward.container.id, forward.target_port) == ("dockerd", live.ids[key], 8080)
    assert dockerd_published(live.index(), ("127.0.0.1", _free_port())) is None


@pytest.mark.parametrize("key", ["podman-bridge", "podman-slirp", "docker-bridge"])
def test_container_netns_inode_and_short_id_find_the_container(live, key):
    require(live.rt.podman_problem if key.startswith("podman") else live.rt.docker_problem)
    index = live.index()
    pid = int(live.inspect(key, "{{.State.Pid}}"))
    by_netns = index.by_netns_inode(os.stat(f"/proc/{pid}/ns/net").st_ino)
    assert by_netns is not None and by_netns.id == live.ids[key]
    assert index.by_id(live.ids[key][:12]).name == live.names[key]
    assert index.by_name(live.names[key]).id == live.ids[key]
    assert index.by_id(live.ids[key]).pid == pid


@pytest.mark.parametrize("key", ["podman-bridge", "docker-bridge"])
@pytest.mark.parametrize("by", ["name", "id"])
def test_netns_takes_a_container_name_or_id_for_every_command(live, key, by):
    (_podman if key.startswith("podman") else _docker)(live)
    spec = live.names[key] if by == "name" else live.ids[key][:12]
    listing = subprocess.run(
        [*PORTSCOPE, "ls", "-l", "-t", "--netns", spec, "--json"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    inside = json.loads(listing.stdout)
    assert [(s["local_port"], [p["name"] for p in s["processes"]]) for s in inside] == [(8080, ["busybox"])]
    pid = int(live.inspect(key, "{{.State.Pid}}"))
    assert {s["netns"] for s in inside} == {os.stat(f"/proc/{pid}/ns/net").st_ino}
    who = subprocess.run([*PORTSCOPE, "who", "8080", "--netns", spec], capture_output=True, text=True, timeout=60)
    assert who.returncode == 0 and f"pid {pid}" in who.stdout, who.stdout + who.stderr
    verdict = subprocess.run(
        [*PORTSCOPE, "can-bind", "0.0.0.0:8080", "--netns", spec], capture_output=True, text=True, timeout=60
    )
    assert verdict.returncode == 1 and verdict.stdout.startswith("NO"), verdict.stdout + verdict.stderr


@pytest.mark.parametrize("key", ["podman-bridge", "docker-bridge"])
def test_ls_json_names_the_container_behind_a_forwarder_and_inside_its_namespace(live, key):
    (_podman if key.startswith("podman") else _docker)(live)
    port = live.ports[key]
    listing = subprocess.run(
        [*PORTSCOPE, "ls", "-l", "-t", "--netns", "all", "--json"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode in (0,), listing.stderr
    sockets = json.loads(listing.stdout)
    [published] = [s for s in sockets if s["local_port"] == port and s["netns_name"] == "host"]
    forward = published["forwards_to"]
    assert forward is not None, published
    assert forward["port"] == 8080 and forward["container"]["name"] == live.names[key]
    assert forward["container"]["id"] == live.ids[key]
    pid = int(live.inspect(key, "{{.State.Pid}}"))
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    assert forward["kind"] == {"podman-bridge": "conmon", "docker-bridge": "docker-proxy"}[key]
    assert forward["netns"] == inode  # docker-proxy's too: from the container's recorded namespace
    inside = [s for s in sockets if s["netns"] == inode and s["local_port"] == 8080]
    assert inside and all(s["netns_name"] == live.names[key] for s in inside), inside
    assert all(s["container"]["id"] == live.ids[key] for s in inside)


@pytest.mark.parametrize(("key", "forwarder"), [("podman-bridge", "conmon"), ("docker-bridge", "docker-proxy")])
def test_who_names_the_container_a_forwarder_serves(live, key, forwarder):
    (_podman if key.startswith("podman") else _docker)(live)
    who = subprocess.run(
        [*PORTSCOPE, "who", str(live.ports[key])], capture_output=True, text=True, timeout=60, env=NO_WIDTH
    )
    assert who.returncode == 0, who.stderr
    assert f"to container {live.names[key]} " in who.stdout and f"via {forwarder}" in who.stdout, who.stdout
    address = live.inspect(key, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").strip()
    if address:  # docker always, podman with CNI: the container's address and port
        assert f"{address}:8080" in who.stdout, who.stdout


@pytest.mark.parametrize("key", ["podman-host", "docker-host"])
def test_who_names_a_host_network_container_by_name(live, key):
    (_podman if key.startswith("podman") else _docker)(live)
    who = subprocess.run(
        [*PORTSCOPE, "who", str(live.ports[key])], capture_output=True, text=True, timeout=60, env=NO_WIDTH
    )
    assert who.returncode == 0, who.stderr
    assert re.search(rf"container\s+{re.escape(live.names[key])}\s", who.stdout), who.stdout


def _listener_inode(port: int) -> int:
    out = subprocess.run(
        ["ss", "-Htlne", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    (inode,) = set(re.findall(r"ino:(\d+)", out))
    return int(inode)


@pytest.mark.parametrize(
    ("key", "forwarder"),
    [
        ("podman-bridge", "conmon"),
        ("podman-slirp", "rootlessport"),
        ("docker-bridge", "docker-proxy"),
        ("docker-noproxy", "dockerd"),  # --userland-proxy=false: dockerd itself holds the published port
    ],
)
def test_who_puts_the_container_process_next_to_its_forwarder(live, key, forwarder):
    """who PORT answers with the container, the process listening inside its namespace and the forwarder
    on the host; ss inside the container's namespace and on the host are the oracles."""
    (_podman if key.startswith("podman") else _docker)(live)
    port = live.ports[key]
    forwarder_pid = wait_holder(port)
    inner_pid = int(live.inspect(key, "{{.State.Pid}}"))
    netns = os.stat(f"/proc/{inner_pid}/ns/net").st_ino
    inside = subprocess.run(
        ["nsenter", "-t", str(inner_pid), "-n", "ss", "-Htlnpe", "sport = :8080"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    inner_inodes = {int(i) for i in re.findall(r"ino:(\d+)", inside)}
    assert inner_inodes and {int(p) for p in re.findall(r"pid=(\d+)", inside)} == {inner_pid}

    result = subprocess.run([*PORTSCOPE, "who", "--json", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    first, second = document["processes"][:2]
    assert (first["pid"], second["pid"]) == (inner_pid, forwarder_pid)
    assert (first["container"]["id"], first["container"]["name"]) == (live.ids[key], live.names[key])
    assert first["reached_through"] == [
        {
            "pid": forwarder_pid,
            "name": second["name"],
            "kind": forwarder,
            "address": "127.0.0.1",
            "port": port,
            "inode": _listener_inode(port),
        }
    ]
    assert second["reached_through"] == []
    behind = [s for s in document["sockets"] if s["netns"] == netns]
    assert {s["inode"] for s in behind} == inner_inodes == set(first["inodes"])
    assert all(s["netns_name"] == live.names[key] and s["local_port"] == 8080 for s in behind)
    assert all([p["pid"] for p in s["processes"]] == [inner_pid] for s in behind)

    text = subprocess.run([*PORTSCOPE, "who", str(port)], capture_output=True, text=True, timeout=60, env=NO_WIDTH)
    assert text.returncode == 0, text.stderr
    runtime = key.split("-")[0]
    heading = f"container {live.names[key]} ({runtime}, id {live.ids[key][:12]}"
    if key == "docker-bridge":
        heading += ", compose psapp/web)"
    assert heading in text.stdout, text.stdout
    summary = (
        rf"process busybox\[{inner_pid}\] listening on \S+:8080 in its namespace, "
        rf"reached through {re.escape(second['name'])}\[{forwarder_pid}\] on 127\.0\.0\.1:{port}\n"
    )
    assert re.search(summary, text.stdout), text.stdout
    # the inside process's block comes first, right after the heading, then the forwarder's
    blocks = text.stdout.split(heading, 1)[1]
    assert blocks.index(f"pid {inner_pid}") < blocks.index(f"pid {forwarder_pid}")


def test_who_says_nothing_listens_where_the_forwarder_leads(live):
    _docker(live)
    port = live.ports["docker-wrongport"]
    proxy = wait_holder(port)
    result = subprocess.run([*PORTSCOPE, "who", "--json", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [p["pid"] for p in document["processes"]] == [proxy]  # only the forwarder: nothing behind it
    assert document["processes"][0]["reached_through"] == []
    text = subprocess.run([*PORTSCOPE, "who", str(port)], capture_output=True, text=True, timeout=60, env=NO_WIDTH)
    name = live.names["docker-wrongport"]
    assert f"to container {name} " in text.stdout and ":8080, where nothing listens  via docker-proxy" in text.stdout
    assert re.search(
        rf"docker-proxy\[{proxy}\] on 127\.0\.0\.1:{port} forwards to \S+:8080, where nothing listens", text.stdout
    )


def test_who_netns_all_lists_the_container_listener_once(live):
    """With --netns all the container's namespace is already read on the port: used, not read again."""
    _docker(live)
    port = live.ports["docker-sameport"]
    proxy = wait_holder(port)
    inner = int(live.inspect("docker-sameport", "{{.State.Pid}}"))
    result = subprocess.run(
        [*PORTSCOPE, "who", "--json", "--netns", "all", str(port)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    inodes = [s["inode"] for s in document["sockets"]]
    assert len(inodes) == len(set(inodes))
    assert [p["pid"] for p in document["processes"][:2]] == [inner, proxy]
    assert [r["pid"] for r in document["processes"][0]["reached_through"]] == [proxy]
    netns = os.stat(f"/proc/{inner}/ns/net").st_ino
    assert [s["netns_name"] for s in document["sockets"] if s["netns"] == netns] == [live.names["docker-sameport"]]


def test_exporter_labels_listeners_with_their_containers(live):
    """export --netns all: a host-network container's listener, a container's own listener in its
    namespace, and a published port's forwarder all carry the container's name."""
    metrics = subprocess.run(
        [*PORTSCOPE, "export", "--netns", "all"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    infos = [line for line in metrics.splitlines() if line.startswith("portscope_listener_info{")]

    def labelled(**labels: str) -> list[str]:
        return [line for line in infos if all(f'{key}="{value}"' in line for key, value in labels.items())]

    for key in [k for k in ("podman-host", "docker-host", "podman-bridge", "docker-bridge") if k in live.ids]:
        name = live.names[key]
        published = labelled(port=str(live.ports[key]), netns="host")
        assert published and all(f'container="{name}"' in line for line in published), (key, published)
        if key.endswith("-bridge"):  # its own listener, inside its namespace
            assert labelled(port="8080", netns=name, container=name), (key, infos)
