"""Forwarder recognition from argv/environ/fds (argv recorded from the real daemons here), and socket
activation with a real passed listener read back from /proc."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portscope.sources.containers import ContainerIndex, RuntimeRoots, default_roots
from portscope.sources.forwarders import (
    Forward,
    ProcessFacts,
    activating_manager,
    activation,
    conmon_container,
    docker_proxy,
    kubectl_port_forward,
    parse_environ,
    read_facts,
    recognise,
    rootlessport,
    socket_activate,
    ssh_forwards,
)

FIXTURES = Path(__file__).parent / "fixtures" / "containers"
DOCKER_ID = "80f128f2c5d1a1b0e7c0b4b3c9a7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9"
PODMAN_ID = "4b78bfc72a50133e17dbf3fac57d1d20cac41900bc30e43ea899b5e7d55c7c0e"
DOCKER_PROXY = [
    "/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8080",
    "-container-ip", "172.18.0.2", "-container-port", "8080",
]  # fmt: skip
CONMON = (
    f"/usr/bin/conmon --api-version 1 -c {PODMAN_ID} -u {PODMAN_ID} -r /usr/bin/runc -b "
    f"/var/lib/containers/storage/overlay-containers/{PODMAN_ID}/userdata -n web --exit-dir /run/libpod/exits"
).split()


def facts(name: str, argv: list[str], exe: str | None = None, environ=None, netns_fds=(), pid=100) -> ProcessFacts:
    return ProcessFacts(pid, name, exe, tuple(argv), environ or {}, tuple(netns_fds))


@pytest.fixture
def index(tmp_path: Path) -> ContainerIndex:
    lib = tmp_path / "var/lib"
    docker = lib / f"docker/containers/{DOCKER_ID}"
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_bytes((FIXTURES / "docker-config.v2.json").read_bytes())
    storage = lib / "containers/storage/overlay-containers"
    (storage / PODMAN_ID / "userdata").mkdir(parents=True)
    (storage / "containers.json").write_bytes((FIXTURES / "podman-containers.json").read_bytes())
    (storage / PODMAN_ID / "userdata/config.json").write_bytes((FIXTURES / "podman-bundle-config.json").read_bytes())
    (lib / "cni/results").mkdir(parents=True)
    (lib / f"cni/results/podman-{PODMAN_ID}-eth0").write_bytes((FIXTURES / "cni-result.json").read_bytes())
    return ContainerIndex(default_roots(str(lib), str(tmp_path / "run"), homes={}))


def test_docker_proxy_forwards_to_the_container_address(index):
    forward = recognise(facts("docker-proxy", DOCKER_PROXY, "/usr/sbin/docker-proxy"), ("0.0.0.0", 8080), index=index)
    assert (forward.kind, forward.listen_address, forward.listen_port) == ("docker-proxy", "0.0.0.0", 8080)
    assert (forward.target_address, forward.target_port, forward.detail) == ("172.18.0.2", 8080, "tcp")
    assert (forward.container.name, forward.container.compose_service) == ("app-web-1", "web")


def test_docker_proxy_without_index_or_known_address():
    assert docker_proxy(DOCKER_PROXY).container is None
    assert docker_proxy(["/usr/sbin/docker-proxy", "-proto", "tcp"]) is None


def test_conmon_names_its_container_from_files_and_argv(index):
    forward = recognise(facts("conmon", CONMON, "/usr/bin/conmon"), ("127.0.0.1", 18080), index=index)
    assert (forward.kind, forward.container.id, forward.container.name) == ("conmon", PODMAN_ID, "web")
    assert (forward.target_address, forward.target_port) == ("10.88.0.2", 8080)
    empty = ContainerIndex(RuntimeRoots((), (), (), ()))
    alone = recognise(facts("conmon", CONMON), ("127.0.0.1", 18080), index=empty)
    assert (alone.container.runtime, alone.container.id, alone.container.name) == ("podman", PODMAN_ID, "web")
    assert (alone.target_address, alone.target_port) == (None, None)
    assert conmon_container(["conmon", "--cid", "ab", "--name=x"]) == ("ab", "x")
    assert conmon_container(["conmon", "--api-version", "1"]) is None


def test_rootlessport_uses_its_netns_fd(index):
    path = "/run/netns/netns-3f88c179-28e9-ec8b-ae28-1d9d9b5c3586"
    process = facts("rootlessport", ["rootlessport"], "/usr/lib/podman/rootlessport", netns_fds=[path])
    forward = rootlessport(process, index, ("127.0.0.1", 18080), netns_inode_of=lambda p: 4026532248)
    assert (forward.kind, forward.container.name, forward.netns_inode) == ("rootlessport", "web", 4026532248)
    unknown = facts("rootlessport", ["rootlessport"], netns_fds=["net:[4026530001]"])
    forward = rootlessport(unknown, index, ("127.0.0.1", 1))
    assert (forward.container, forward.netns_inode) == (None, 4026530001)
    assert rootlessport(facts("sshd", ["sshd"]), index) is None


def test_dockerd_with_userland_proxy_off_matches_published_ports(index):
    forward = recognise(facts("dockerd", ["/usr/sbin/dockerd"]), ("0.0.0.0", 8080), index=index)
    assert (forward.kind, forward.container.name, forward.target_address, forward.target_port) == (
        "dockerd",
        "app-web-1",
        "172.18.0.2",
        8080,
    )
    assert recognise(facts("dockerd", ["/usr/sbin/dockerd"]), ("0.0.0.0", 9999), index=index) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("ssh -L 8080:db:5432 host", [(None, 8080, "db", 5432, "host")]),
        ("ssh -L127.0.0.1:8080:db:5432 -N me@host", [("127.0.0.1", 8080, "db", 5432, "me@host")]),
        ("ssh -p 2222 -fNL [::1]:9000:[fe80::1]:90 h", [("::1", 9000, "fe80::1", 90, "h")]),
        ("ssh -L 1/a/2 -L *:3:b:4 h", [(None, 1, "a", 2, "h"), ("*", 3, "b", 4, "h")]),
        (["ssh", "-o", "LocalForward=5000 web:80", "h"], [(None, 5000, "web", 80, "h")]),
        (["ssh", "-oLocalForward 127.0.0.1:5000 web:80", "h"], [("127.0.0.1", 5000, "web", 80, "h")]),
        ("ssh -o Port=22 h", []),
        ("ssh h -L 1:a:2", []),  # after the destination it is the remote command
        ("ssh -L /tmp/s:db:5432 h", []),
        ("sshd -L 1:a:2", []),
    ],
)
def test_ssh_local_forwards(argv, expected):
    found = [
        (f.listen_address, f.listen_port, f.target_address, f.target_port, f.detail)
        for f in ssh_forwards(argv if isinstance(argv, list) else argv.split())
    ]
    assert found == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("kubectl port-forward pod/web 8080:80", [("localhost", 8080, 80, "pod/web")]),
        (
            "kubectl -n shop port-forward --address 0.0.0.0,::1 svc/api :443 9000",
            [("0.0.0.0", None, 443, "shop/svc/api"), ("::1", None, 443, "shop/svc/api"),
             ("0.0.0.0", 9000, 9000, "shop/svc/api"), ("::1", 9000, 9000, "shop/svc/api")],
        ),
        ("kubectl --context prod port-forward web 5000:5000 --namespace=x", [("localhost", 5000, 5000, "x/web")]),
        ("kubectl get pods", []),
        ("kubectl port-forward", []),
    ],
)  # fmt: skip
def test_kubectl_port_forward(argv, expected):
    found = [(f.listen_address, f.listen_port, f.target_port, f.detail) for f in kubectl_port_forward(argv.split())]
    assert found == expected


def test_listen_environment():
    env = parse_environ(b"PATH=/bin\0LISTEN_PID=42\0LISTEN_FDS=2\0LISTEN_FDNAMES=web:admin\0junk\0")
    passed = activation(env)
    assert (passed.listen_pid, passed.fds, passed.names) == (42, 2, ("web", "admin"))
    assert (passed.name_of(3), passed.name_of(4), passed.name_of(5)) == ("web", "admin", None)
    assert activation({"LISTEN_FDS": "x"}) is None and activation({}) is None
    service = facts("httpd", ["httpd"], environ=env, pid=42)
    assert recognise(service, ("0.0.0.0", 80), fd=4) == Forward(
        "socket-activation", "0.0.0.0", 80, None, None, detail="admin", target_pid=42
    )
    assert recognise(service, ("0.0.0.0", 80), fd=7) is None  # not a passed fd
    inherited = facts("child", ["child"], environ=env, pid=43)
    assert recognise(inherited, ("0.0.0.0", 80), fd=3) is None  # LISTEN_PID names another process


def test_systemd_socket_activate_and_manager():
    argv = ["/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:8081", "--fdname=web", "busybox", "httpd", "-i"]
    forward = socket_activate(argv)
    assert (forward.listen_address, forward.listen_port, forward.detail) == ("127.0.0.1", 8081, "web")
    assert socket_activate(["systemd-socket-activate", "-l", "[::1]:99"]).listen_address == "::1"
    manager = facts("systemd", ["/sbin/init"], pid=1)
    service = facts(
        "httpd", ["httpd"], environ={"LISTEN_PID": "77", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}, pid=77
    )
    stray = facts("sh", ["sh"], environ={"LISTEN_PID": "76", "LISTEN_FDS": "1"}, pid=78)
    assert activating_manager(manager, [manager, service, stray]) == (
        Forward("socket-activation", None, None, None, None, detail="web", target_pid=77),
    )


def test_ordinary_process_is_no_forwarder(index):
    assert recognise(facts("nginx", ["nginx", "-g", "daemon off;"]), ("0.0.0.0", 80), fd=6, index=index) is None


def test_activated_service_read_from_proc():
    """A real child that received a listener as fd 3 with LISTEN_* set for its own pid."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = (
        "import os,sys,time\n"
        "os.environ['LISTEN_PID']=str(os.getpid());os.environ['LISTEN_FDS']='1';os.environ['LISTEN_FDNAMES']='web'\n"
        "os.execv(sys.executable,[sys.executable,'-c','import time; time.sleep(30)'])\n"
    )
    os.dup2(listener.fileno(), 100)
    child = subprocess.Popen([sys.executable, "-c", f"import os; os.dup2(100, 3); exec({code!r})"], pass_fds=(100,))
    os.close(100)
    try:
        for _ in range(100):
            process = read_facts(child.pid)
            if process and process.environ.get("LISTEN_FDS"):
                break
            time.sleep(0.05)
        forward = recognise(process, ("127.0.0.1", port), fd=3)
        assert (forward.kind, forward.detail, forward.target_pid) == ("socket-activation", "web", child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)
        with contextlib.suppress(OSError):
            listener.close()


def test_activation_among_holders_names_the_manager_not_the_services_workers(tmp_path):
    """PID 1 passed the listener to pid 77 (LISTEN_PID=77), whose worker 78 inherited it with the same
    variables: only PID 1 holds it on the service's behalf."""
    from portscope.commands.places import Places
    from portscope.model.records import Family, Holder, Process, Proto, Socket, State

    environs = {1: b"PATH=/bin\0", 77: b"LISTEN_PID=77\0LISTEN_FDS=1\0LISTEN_FDNAMES=web\0"}
    environs[78] = environs[77]
    for pid, environ in environs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "environ").write_bytes(environ)
        (tmp_path / str(pid) / "status").write_text(f"Name:\tx\nNSpid:\t{pid}\n")
    sock = Socket(
        Proto.TCP, Family.IPV4, State.LISTEN, "0.0.0.0", 80, None, None, 0, 128, 0, 4242, 0, None, None, None, None, 1
    )
    holders = tuple(
        Holder(Process(pid, ppid, name, 0, "root", (name,), None), (fd,))
        for pid, ppid, name, fd in ((1, 0, "systemd", 40), (77, 1, "httpd", 3), (78, 77, "httpd", 3))
    )
    found = Places(proc_root=str(tmp_path)).forwards(sock, holders)
    assert [(holder.process.pid, forward.target_pid, forward.detail) for holder, forward in found] == [(1, 77, "web")]
