"""Container identity from imitated runtime trees (layouts recorded from podman 4.3 / docker 20.10 here,
and shaped after containerd's and CRI-O's sources for what cannot run here)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from portscope.sources.containers import (
    ContainerIndex,
    ContainerInfo,
    PublishedPort,
    RuntimeRoots,
    StorageRoot,
    container_of_cgroup,
    default_roots,
    dockerd_roots,
    parse_bundle_config,
    parse_docker_config,
    parse_libpod_db,
    parse_storage_containers,
    rootless_storage,
    shim_container,
)

FIXTURES = Path(__file__).parent / "fixtures" / "containers"
DOCKER_ID = "80f128f2c5d1a1b0e7c0b4b3c9a7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9"
PODMAN_ID = "4b78bfc72a50133e17dbf3fac57d1d20cac41900bc30e43ea899b5e7d55c7c0e"
SLIRP_ID = "91392e00d3b017a42c0732e30f6642a2407c2287650625b7a6fc804d54709629"
K8S_ID = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CRIO_ID = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def put(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host tree: docker, rootful podman (CNI), a rootless user's podman, containerd CRI, CRI-O."""
    lib, run = tmp_path / "var/lib", tmp_path / "run"
    docker = lib / f"docker/containers/{DOCKER_ID}"
    put(docker / "config.v2.json", fixture("docker-config.v2.json"))
    put(docker / "hostconfig.json", fixture("docker-hostconfig.json"))
    storage = lib / "containers/storage/overlay-containers"
    put(storage / "containers.json", fixture("podman-containers.json"))
    put(storage / f"{PODMAN_ID}/userdata/config.json", fixture("podman-bundle-config.json"))
    put(run / f"containers/storage/overlay-containers/{PODMAN_ID}/userdata/hosts", fixture("podman-hosts"))
    put(run / f"containers/storage/overlay-containers/{PODMAN_ID}/userdata/pidfile", "3030")
    put(lib / f"cni/results/podman-{PODMAN_ID}-eth0", fixture("cni-result.json"))
    put(storage / f"{CRIO_ID}/userdata/config.json", fixture("crio-config.json"))
    put(
        run / f"containerd/io.containerd.runtime.v2.task/k8s.io/{K8S_ID}/config.json",
        fixture("containerd-cri-config.json"),
    )
    put(run / f"containerd/io.containerd.runtime.v2.task/k8s.io/{K8S_ID}/init.pid", "3131")
    # rootless: uid 1000 has a run root now; its storage is in its home
    home = tmp_path / "home/alice"
    rootless_id = "ab" * 32
    put(
        home / ".local/share/containers/storage/overlay-containers/containers.json",
        f'[{{"id":"{rootless_id}","names":["notes"],"metadata":"{{\\"name\\":\\"notes\\"}}"}}]',
    )
    (run / "user/1000/containers").mkdir(parents=True)
    (run / "user/1001").mkdir(parents=True)  # a user without podman
    return tmp_path


def index_of(host: Path) -> ContainerIndex:
    return ContainerIndex(default_roots(f"{host}/var/lib", f"{host}/run", homes={1000: f"{host}/home/alice"}))


def test_docker_config_gives_name_compose_ports_addresses_netns():
    info = parse_docker_config(DOCKER_ID, fixture("docker-config.v2.json"), fixture("docker-hostconfig.json"))
    assert (info.runtime, info.id, info.name, info.short_id) == ("docker", DOCKER_ID, "app-web-1", DOCKER_ID[:12])
    assert (info.compose_project, info.compose_service, info.image) == ("app", "web", "app-web:latest")
    assert info.ports == (PublishedPort("tcp", 8080, "0.0.0.0", 8080), PublishedPort("tcp", 8080, "::", 8080))
    assert (info.addresses, info.netns_path, info.pid, info.running) == (
        ("172.18.0.2",),
        "/var/run/docker/netns/c5f359729667",
        4242,
        True,
    )


def test_stopped_docker_container_keeps_its_bindings_from_hostconfig():
    config = fixture("docker-config.v2.json").replace(b'"Running":true', b'"Running":false')
    config = config.replace(b'"Ports":{', b'"Ports":{},"Old":{')
    info = parse_docker_config(DOCKER_ID, config, fixture("docker-hostconfig.json"))
    assert info.running is False
    assert info.ports == (PublishedPort("tcp", 8080, "", 8080),)


@pytest.mark.parametrize("data", [None, b"", b"{", b"[]", b'{"Name": 5, "State": "x", "Config": []}', b"\xff\xfe"])
def test_unreadable_or_malformed_docker_config_leaves_only_the_id(data):
    info = parse_docker_config(DOCKER_ID, data, b"{not json")
    assert (info.runtime, info.id, info.name, info.ports, info.addresses) == ("docker", DOCKER_ID, None, (), ())


def test_storage_containers_json_names_and_images():
    listed = parse_storage_containers(fixture("podman-containers.json"))
    assert {cid: entry[:2] for cid, entry in listed.items()} == {
        PODMAN_ID: ("web", "localhost/bb:1"),
        SLIRP_ID: ("slirp", "localhost/bb:1"),
    }
    assert parse_storage_containers(b'[{"id": 3}, "x", {"id": "aa", "metadata": "{bad"}]') == {"aa": (None, None, {})}


def test_bundle_annotations_for_podman_containerd_crio():
    assert parse_bundle_config(fixture("podman-bundle-config.json")) == parse_bundle_config(
        fixture("podman-bundle-config.json").decode()
    )
    podman = parse_bundle_config(fixture("podman-bundle-config.json"))
    assert (podman.runtime, podman.name, podman.netns_path) == (
        "podman",
        None,  # podman's annotations do not carry the name: containers.json does
        "/run/netns/netns-3f88c179-28e9-ec8b-ae28-1d9d9b5c3586",
    )
    cri = parse_bundle_config(fixture("containerd-cri-config.json"))
    assert (cri.runtime, cri.name, cri.pod, cri.namespace) == ("kubernetes", "nginx", "web-7d4b9c8f6d-x2k9q", "shop")
    crio = parse_bundle_config(fixture("crio-config.json"))
    assert (crio.runtime, crio.name, crio.pod, crio.namespace) == ("cri-o", "redis", "cache-0", "data")
    assert parse_bundle_config(b"{oops") is None


def test_index_reads_every_runtime_of_the_host(host):
    index = index_of(host)
    docker = index.by_id(DOCKER_ID[:12])
    assert (docker.runtime, docker.name, docker.compose_project) == ("docker", "app-web-1", "app")
    web = index.by_name("web")
    assert (web.runtime, web.id, web.image, web.pid) == ("podman", PODMAN_ID, "localhost/bb:1", 3030)
    assert web.addresses == ("10.88.0.2",)  # from the CNI cache
    assert web.ports == (PublishedPort("tcp", 8080, "127.0.0.1", 18080),)
    slirp = index.by_id(SLIRP_ID)
    assert (slirp.name, slirp.netns_path, slirp.addresses) == ("slirp", None, ())  # no bundle: the id and name only
    k8s = index.by_id(K8S_ID)
    assert (k8s.runtime, k8s.name, k8s.pod, k8s.namespace, k8s.pid) == (
        "kubernetes",
        "nginx",
        "web-7d4b9c8f6d-x2k9q",
        "shop",
        3131,
    )
    crio = index.by_id(CRIO_ID)
    assert (crio.runtime, crio.name, crio.pod) == ("cri-o", "redis", "cache-0")
    notes = index.by_name("notes")
    assert (notes.runtime, notes.id) == ("podman", "ab" * 32)
    assert index.by_address("172.18.0.2") is docker
    assert index.by_published("127.0.0.1", 8080) is docker  # published on 0.0.0.0
    assert index.by_published("127.0.0.1", 18080) is web
    assert index.by_published("10.0.0.1", 18080) is None  # web is published on 127.0.0.1 only
    assert index.by_netns_path("/run/netns/netns-3f88c179-28e9-ec8b-ae28-1d9d9b5c3586") is web
    assert index.by_id("nope") is None


def test_id_prefix_must_be_unique(host):
    shared = "4b"  # two containers' ids start with it
    put(host / f"var/lib/docker/containers/{'4b' + '0' * 62}/config.v2.json", b"")
    index = index_of(host)
    assert index.by_id(shared) is None
    assert index.by_id(PODMAN_ID[:5]).id == PODMAN_ID
    assert index.by_id("4b" + "0" * 62).name is None  # an empty config: the id, no name


def test_malformed_storage_file_leaves_the_ids_from_the_directory(host):
    storage = host / "var/lib/containers/storage/overlay-containers"
    (storage / "containers.json").write_bytes(b"\x00garbage")
    index = index_of(host)
    web = index.by_id(PODMAN_ID)
    assert (web.runtime, web.name) == ("podman", None)
    assert index.by_name("web") is None


def test_index_loads_once_and_is_cheap_without_runtimes(tmp_path, monkeypatch):
    index = ContainerIndex(default_roots(f"{tmp_path}/var/lib", f"{tmp_path}/run", homes={}))
    calls = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: calls.append(path) or real_listdir(path))
    assert index.containers == ()
    first = len(calls)
    assert index.by_name("x") is None and index.by_address("1.2.3.4") is None
    assert len(calls) == first <= 6  # one look per root, and never again


def test_rootless_storage_only_for_users_with_a_run_root(host):
    found = rootless_storage(f"{host}/run", homes={1000: f"{host}/home/alice", 1001: f"{host}/home/bob"})
    assert found == (
        StorageRoot(f"{host}/home/alice/.local/share/containers/storage", f"{host}/run/user/1000/containers"),
    )


def test_vfs_driver_directory_is_read_too(tmp_path):
    put(tmp_path / "storage/vfs-containers/containers.json", f'[{{"id":"{"cd" * 32}","names":["v"]}}]')
    index = ContainerIndex(RuntimeRoots((), (StorageRoot(f"{tmp_path}/storage", f"{tmp_path}/run"),), (), ()))
    assert index.by_name("v").id == "cd" * 32


def test_dockerd_roots_from_argv():
    assert dockerd_roots(["/usr/sbin/dockerd", "-H", "fd://"]) == ("/var/lib/docker", "/run/docker")
    assert dockerd_roots(["dockerd", "--data-root=/srv/docker", "--exec-root", "/run/d2"]) == ("/srv/docker", "/run/d2")


# ---------------------------------------------------------------------------------------------------
# cgroup shapes

HEX = "0123456789abcdef" * 4
POD = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
CGROUP_CASES = [
    (f"/docker/{HEX}", ("docker", HEX, None)),
    (f"/system.slice/docker-{HEX}.scope", ("docker", HEX, None)),
    (f"/libpod_parent/libpod-{HEX}", ("podman", HEX, None)),
    (f"/machine.slice/libpod-{HEX}.scope", ("podman", HEX, None)),
    (f"/machine.slice/libpod-{HEX}.scope/container", ("podman", HEX, None)),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{HEX}.scope", ("podman", HEX, None)),
    (f"/machine.slice/machine-libpod_pod_{'9' * 64}.slice/libpod-{HEX}.scope", ("podman", HEX, None)),
    (f"/machine.slice/libpod-conmon-{HEX}.scope", None),
    (f"/system.slice/crio-conmon-{HEX}.scope", None),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/"
        f"cri-containerd-{HEX}.scope",
        ("containerd", HEX, POD),
    ),
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD.replace('-', '_')}.slice/"
        f"crio-{HEX}.scope",
        ("cri-o", HEX, POD),
    ),
    (f"/kubepods/burstable/pod{POD}/{HEX}", ("kubernetes", HEX, POD)),
    (f"/kubepods/pod{POD}/{HEX}", ("kubernetes", HEX, POD)),
    (f"/k8s.io/{HEX}", ("containerd", HEX, None)),
    (f"/default/{HEX}", ("containerd", HEX, None)),
    ("/lxc.payload.web1", ("lxc", "web1", None)),
    ("/lxc.payload.web1/init.scope", ("lxc", "web1", None)),
    ("/lxc/web2", ("lxc", "web2", None)),
    ("/lxc.monitor.web1", None),
    ("/machine.slice/machine-debian\\x2dbox.scope", ("systemd-nspawn", "debian-box", None)),
    ("/machine.slice/systemd-nspawn@arch.service/payload", ("systemd-nspawn", "arch", None)),
    ("/system.slice/nginx.service", None),
    ("/user.slice/user-1000.slice/session-3.scope", None),
    ("/", None),
    ("/process_api/b799b6a08dbfa75d9c2d6b87fa99214c", None),
]


@pytest.mark.parametrize(("path", "expected"), CGROUP_CASES)
def test_cgroup_shapes(path, expected):
    found = container_of_cgroup(path)
    assert (found and (found.runtime, found.id, found.pod)) == (expected or None)


def test_for_cgroup_adds_the_runtime_files_details(host):
    index = index_of(host)
    found = index.for_cgroup(f"/libpod_parent/libpod-{PODMAN_ID}")
    assert (found.name, found.addresses) == ("web", ("10.88.0.2",))
    k8s = index.for_cgroup(f"/kubepods/besteffort/pod{POD}/{K8S_ID}")
    assert (k8s.name, k8s.pod) == ("nginx", "web-7d4b9c8f6d-x2k9q")
    unknown = index.for_cgroup(f"/docker/{HEX}")
    assert unknown == ContainerInfo("docker", HEX)  # not on disk: the id, never a guessed name
    assert index.for_cgroup("/system.slice/sshd.service") is None


def test_missing_config_keeps_the_id(host):
    shutil.rmtree(host / f"var/lib/docker/containers/{DOCKER_ID}")
    (host / f"var/lib/docker/containers/{DOCKER_ID}").mkdir()
    info = index_of(host).by_id(DOCKER_ID)
    assert (info.runtime, info.id, info.name) == ("docker", DOCKER_ID, None)


def test_shim_argv_names_namespace_and_id():
    argv = f"/usr/bin/containerd-shim-runc-v2 -namespace moby -id {HEX} -address /run/containerd/containerd.sock"
    assert shim_container(argv.split()) == ("moby", HEX)
    assert shim_container(["containerd-shim-runc-v2", "-id", "x"]) == ("default", "x")
    assert shim_container(["containerd-shim-runc-v2", "-address", "/a"]) is None


def test_libpod_db_ports_from_the_config_values_in_the_file():
    """podman keeps published ports only in its state database: each config is a JSON value stored whole."""
    config = {
        "spec": {"ociVersion": "1.0.2-dev", "process": {"args": ["httpd", "-p", "8080"]}},
        "id": PODMAN_ID,
        "name": "web",
        "newPortMappings": [
            {"host_ip": "127.0.0.1", "container_port": 8080, "host_port": 18080, "range": 1, "protocol": "tcp"},
            {"host_ip": "", "container_port": 53, "host_port": 5353, "range": 2, "protocol": "tcp,udp"},
        ],
    }
    old = {
        "spec": {},
        "id": HEX,
        "portMappings": [{"hostPort": 80, "containerPort": 8000, "hostIP": "", "protocol": "tcp"}],
    }
    page = b"\x00\x02\x10config" + json.dumps(config).encode() + b'\x00\xff\xfe junk {"spec": [unterminated \x00'
    page += b"config" + json.dumps(old).encode() + b"\x00" * 64
    found = parse_libpod_db(page)
    assert found[PODMAN_ID] == (
        PublishedPort("tcp", 8080, "127.0.0.1", 18080),
        PublishedPort("tcp", 53, "", 5353),
        PublishedPort("tcp", 54, "", 5354),
        PublishedPort("udp", 53, "", 5353),
        PublishedPort("udp", 54, "", 5354),
    )
    assert found[HEX] == (PublishedPort("tcp", 8000, "", 80),)
    assert parse_libpod_db(b"") == {} and parse_libpod_db(b'{"spec": {"id": 5}}') == {}
